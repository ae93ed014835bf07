//! Registry images, pulled once and kept unpacked under the state dir by platform-manifest
//! digest:
//!
//! ```text
//! <state-dir>/images/sha256/<hex>/rootfs       the unpacked image (never written once here)
//! <state-dir>/images/sha256/<hex>/image.json   its config; written last, before the rename
//! <state-dir>/images/refs.json                 reference → digest, from the last resolution
//! <state-dir>/images/tmp/                      downloads and unpacks in progress
//! ```
//! An image appears under `sha256/` only by a rename of a complete unpack, so a crash leaves
//! at most litter in `tmp/`, which the next run removes. Containers of the same image within a
//! run share one pull; each gets its own overlay over the cached rootfs ([`super::overlay`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use futures_util::future::{select, try_join_all, Either};
use oci_client::Reference;
use sha2::{Digest, Sha256};

use super::image::ImageConfig;
use super::registry::backoff;
use super::registry::config::RegistryConfig;
use super::registry::progress::Progress;
use super::registry::pull::{is_permanent, Puller, Resolved};
use super::settings::PullPolicy;
use super::unpack::{self, digest_hex, Compression};
use crate::atomic_file;

/// An image ready in the cache.
#[derive(Clone, Debug)]
pub struct CachedImage {
    pub digest: String,
    pub rootfs: PathBuf,
    pub config: ImageConfig,
    /// Time spent getting it this run: zero for a cache hit.
    pub pull_ms: u64,
    pub unpack_ms: u64,
}

/// Reference → platform-manifest digest, as last resolved.
type Refs = BTreeMap<String, String>;

const STOP_POLL: Duration = Duration::from_millis(100);

type Shared = Arc<OnceLock<Result<CachedImage, String>>>;

pub struct ImageCache {
    dir: PathBuf,
    puller: Puller,
    /// Polled during pulls: when it says so, the pull is abandoned.
    stop_requested: fn() -> bool,
    in_flight: Mutex<HashMap<String, Shared>>,
    refs: Mutex<()>,
}

impl ImageCache {
    /// Opens the cache under `state_dir`, removing what an interrupted run left in `tmp/`.
    pub fn open(
        state_dir: &Path,
        registries: RegistryConfig,
        stop_requested: fn() -> bool,
    ) -> Result<ImageCache> {
        let dir = state_dir.join("images");
        let tmp = dir.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
        }
        for path in [dir.join("sha256"), tmp] {
            std::fs::create_dir_all(&path)
                .with_context(|| format!("creating {}", path.display()))?;
        }
        Ok(ImageCache {
            dir,
            puller: Puller::new(registries),
            stop_requested,
            in_flight: Mutex::default(),
            refs: Mutex::default(),
        })
    }

    /// The image `reference` names, pulled unless the cache may answer: a digest-pinned
    /// reference already cached, or `if-not-present` with any cached resolution. Concurrent
    /// callers for the same reference wait for one pull.
    pub fn obtain(&self, reference: &str, policy: PullPolicy) -> Result<CachedImage> {
        let shared: Shared = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(format!("{reference} {}", policy.name()))
            .or_default()
            .clone();
        let first = std::cell::Cell::new(false);
        let result = shared.get_or_init(|| {
            first.set(true);
            self.obtain_now(reference, policy)
                .map_err(|err| format!("{err:#}"))
        });
        match result {
            // Only the container that pulled is charged with the pull's time.
            Ok(image) if !first.get() => Ok(CachedImage {
                pull_ms: 0,
                unpack_ms: 0,
                ..image.clone()
            }),
            Ok(image) => Ok(image.clone()),
            Err(err) => Err(anyhow!("{err}")),
        }
    }

    fn obtain_now(&self, text: &str, policy: PullPolicy) -> Result<CachedImage> {
        let reference: Reference = text
            .parse()
            .with_context(|| format!("{text:?} is not an image reference"))?;
        if reference.digest().is_some() || policy == PullPolicy::IfNotPresent {
            if let Some(image) = self.read_refs().get(text).and_then(|d| self.cached(d)) {
                log::info!("{text}: using the cached image {}", image.digest);
                return Ok(image);
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the pull's I/O runtime")?;
        // One staging dir per reference and run: a retry keeps the blobs that arrived whole,
        // and a failed pull leaves nothing.
        let staging = self.dir.join("tmp").join(format!(
            "{}.{}",
            unpack::hex(&Sha256::digest(text.as_bytes())),
            std::process::id()
        ));
        let pulling = Instant::now();
        let pulled = runtime.block_on(async {
            let pull = std::pin::pin!(self.pull_with_retries(&reference, text, &staging));
            let stop = std::pin::pin!(self.until_stop_requested());
            match select(pull, stop).await {
                Either::Left((pulled, _)) => pulled,
                Either::Right(_) => Err(anyhow!(
                    "pulling {text}: abandoned, the supervisor was stopped"
                )),
            }
        });
        let (resolved, downloaded) = match pulled {
            Ok(pulled) => pulled,
            Err(err) => {
                let _ = std::fs::remove_dir_all(&staging);
                if policy == PullPolicy::Always && self.read_refs().contains_key(text) {
                    return Err(err.context(format!("an earlier pull of {text} is cached; pull-policy = \"if-not-present\" would use it")));
                }
                return Err(err);
            }
        };
        let pull_ms = pulling.elapsed().as_millis() as u64;
        let image = if downloaded {
            let unpacking = Instant::now();
            let result = self.unpack(&resolved, &staging);
            let _ = std::fs::remove_dir_all(&staging);
            let mut image = result.with_context(|| format!("unpacking {text}"))?;
            image.pull_ms = pull_ms;
            image.unpack_ms = unpacking.elapsed().as_millis() as u64;
            log::info!(
                "{text}: pulled in {:.1} s, unpacked in {:.1} s ({})",
                pull_ms as f64 / 1000.0,
                image.unpack_ms as f64 / 1000.0,
                image.digest
            );
            image
        } else {
            self.cached(&resolved.digest)
                .context("the cached image vanished")?
        };
        self.remember(text, &image.digest)?;
        Ok(image)
    }

    async fn until_stop_requested(&self) {
        while !(self.stop_requested)() {
            tokio::time::sleep(STOP_POLL).await;
        }
    }

    /// Resolves and downloads into `staging`, retrying on Bottlerocket's schedule; `false`
    /// when the resolved image is already cached (nothing downloaded).
    async fn pull_with_retries(
        &self,
        reference: &Reference,
        text: &str,
        staging: &Path,
    ) -> Result<(Resolved, bool)> {
        let scale = backoff::scale();
        let mut retry = 0;
        loop {
            match self.pull_once(reference, text, staging).await {
                Ok(pulled) => return Ok(pulled),
                Err(err) if is_permanent(&err) => {
                    return Err(err.context(format!("pulling {text} (not retried)")))
                }
                Err(err) if retry == backoff::RETRIES => {
                    return Err(err.context(format!(
                        "pulling {text}: retries exhausted after {} attempts",
                        retry + 1
                    )))
                }
                Err(err) => {
                    let wait = backoff::delay(retry, backoff::jitter(), scale);
                    log::warn!(
                        "{text}: pull attempt {} failed: {err:#}; retrying in {:.1} s",
                        retry + 1,
                        wait.as_secs_f64()
                    );
                    tokio::time::sleep(wait).await;
                    retry += 1;
                }
            }
        }
    }

    async fn pull_once(
        &self,
        reference: &Reference,
        text: &str,
        staging: &Path,
    ) -> Result<(Resolved, bool)> {
        let resolved = self.puller.resolve(reference).await?;
        if self.cached(&resolved.digest).is_some() {
            log::info!("{text}: {} is already cached", resolved.digest);
            return Ok((resolved, false));
        }
        let blobs = staging.join("blobs");
        std::fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
        let manifest = &resolved.manifest;
        let total = manifest.config.size.max(0) as u64
            + manifest
                .layers
                .iter()
                .map(|l| l.size.max(0) as u64)
                .sum::<u64>();
        let progress = Progress::new(text, manifest.layers.len(), total);
        let downloads = std::iter::once(&manifest.config)
            .chain(&manifest.layers)
            .map(|blob| {
                let progress = &progress;
                let resolved = &resolved;
                let blobs = &blobs;
                async move {
                    let dest = blobs.join(digest_hex(&blob.digest)?);
                    self.puller.fetch(resolved, blob, &dest, progress).await?;
                    if blob.digest != resolved.manifest.config.digest {
                        progress.layer_done();
                    }
                    anyhow::Ok(())
                }
            });
        try_join_all(downloads).await?;
        Ok((resolved, true))
    }

    /// Applies the downloaded layers in order and renames the result into the cache.
    fn unpack(&self, resolved: &Resolved, staging: &Path) -> Result<CachedImage> {
        let blobs = staging.join("blobs");
        let manifest = &resolved.manifest;
        let config_blob = std::fs::read(blobs.join(digest_hex(&manifest.config.digest)?))
            .context("reading the image config")?;
        unpack::verify(&manifest.config.digest, &Sha256::digest(&config_blob))?;
        let config = ImageConfig::from_config_blob(&config_blob)?;
        let image = staging.join("image");
        let rootfs = image.join("rootfs");
        std::fs::create_dir_all(&rootfs)
            .with_context(|| format!("creating {}", rootfs.display()))?;
        for layer in &manifest.layers {
            unpack::apply_blob(
                &blobs.join(digest_hex(&layer.digest)?),
                &layer.digest,
                Compression::of_media_type(&layer.media_type)?,
                &rootfs,
            )
            .with_context(|| format!("applying layer {}", layer.digest))?;
        }
        atomic_file::write(
            &image.join("image.json"),
            &serde_json::to_vec(&config)?,
            0o644,
        )?;
        let target = self.image_dir(&resolved.digest)?;
        if let Err(err) = std::fs::rename(&image, &target) {
            // Another reference to the same digest finished first: use that one.
            if self.cached(&resolved.digest).is_none() {
                return Err(err).with_context(|| format!("renaming into {}", target.display()));
            }
        }
        self.cached(&resolved.digest)
            .context("the unpacked image is not in the cache")
    }

    fn image_dir(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.dir.join("sha256").join(digest_hex(digest)?))
    }

    /// The cached image of `digest`, if complete.
    fn cached(&self, digest: &str) -> Option<CachedImage> {
        let dir = self.image_dir(digest).ok()?;
        let text = std::fs::read(dir.join("image.json")).ok()?;
        match serde_json::from_slice(&text) {
            Ok(config) => Some(CachedImage {
                digest: digest.to_owned(),
                rootfs: dir.join("rootfs"),
                config,
                pull_ms: 0,
                unpack_ms: 0,
            }),
            Err(err) => {
                log::warn!(
                    "{}: unreadable ({err}); it will be pulled again",
                    dir.display()
                );
                None
            }
        }
    }

    fn refs_path(&self) -> PathBuf {
        self.dir.join("refs.json")
    }

    fn read_refs(&self) -> Refs {
        match std::fs::read(self.refs_path()) {
            Ok(text) => serde_json::from_slice(&text).unwrap_or_else(|err| {
                log::warn!(
                    "{}: unreadable ({err}); ignoring it",
                    self.refs_path().display()
                );
                Refs::default()
            }),
            Err(_) => Refs::default(),
        }
    }

    fn write_refs(&self, refs: &Refs) -> Result<()> {
        atomic_file::write(&self.refs_path(), &serde_json::to_vec_pretty(refs)?, 0o644)
    }

    fn remember(&self, reference: &str, digest: &str) -> Result<()> {
        let _guard = self.refs.lock().unwrap_or_else(|e| e.into_inner());
        let mut refs = self.read_refs();
        if refs.get(reference).map(String::as_str) == Some(digest) {
            return Ok(());
        }
        refs.insert(reference.to_owned(), digest.to_owned());
        self.write_refs(&refs)
    }

    /// Forgets references no setting names any more and removes the images nothing refers
    /// to. Call it when no container runs.
    pub fn collect_garbage(&self, in_use: &BTreeSet<String>) -> Result<()> {
        let _guard = self.refs.lock().unwrap_or_else(|e| e.into_inner());
        let mut refs = self.read_refs();
        let before = refs.len();
        refs.retain(|reference, _| in_use.contains(reference));
        if refs.len() != before {
            self.write_refs(&refs)?;
        }
        let live: BTreeSet<String> = refs
            .values()
            .filter_map(|d| digest_hex(d).ok().map(str::to_owned))
            .collect();
        let images = self.dir.join("sha256");
        for entry in
            std::fs::read_dir(&images).with_context(|| format!("reading {}", images.display()))?
        {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !live.contains(&name) {
                log::info!("removing the unused image sha256:{name}");
                std::fs::remove_dir_all(entry.path())
                    .with_context(|| format!("removing {}", entry.path().display()))?;
            }
        }
        Ok(())
    }
}
