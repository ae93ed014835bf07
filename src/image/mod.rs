//! OCI images, apart from any boot: organised as containerd separates its concerns —
//! [`digest`] (blobs named and checked by digest), [`refs`] (references resolved to digests),
//! [`store`] (unpacked root filesystems by digest, containerd's snapshots) — with the
//! [`registry`] client, [`layout`] sources, the [`unpack`]er and the per-container
//! [`overlay`]; an image's [`config`], and its `User` [`user`]-resolved as containerd does.
//!
//! # The interface
//! The supervisor uses [`Images`] and nothing else of this module:
//!
//! - **in**: a [`Source`] — a registry reference with its [`PullPolicy`] and [`PullLimits`]
//!   (a stall is abandoned and retried; the pull ends at the container's deadline), or an OCI layout
//!   directory and tag; the registry config ([`registry::config::RegistryConfig`]) and the
//!   [`Limits`] (both given to [`Images::open`]); a stop request to poll (a pull in progress
//!   is abandoned within 100 ms of it saying so); and the directory that holds the container's
//!   root filesystem, with the size of its writable layer in bytes.
//! - **out**: a [`Rootfs`] — the path of the container's root filesystem, an overlay which the
//!   runtime (mountpoints) and, in the Bottlerocket mode, the container may write up to that
//!   size without touching the image, and whose lifetime owns the overlay (unmounted on drop); the image's [`ImageConfig`]; for a registry
//!   image, [`Pulled`] (the digest, `pull_ms` and `unpack_ms`). Progress is logged, a line per
//!   image every 2 s.
//! - **limits** ([`budget`]): a download or unpack fails, before it writes, when the free space
//!   or inodes of the filesystem it writes to would fall below a reserve of 5 % of it (space:
//!   at most 1 GiB), counting what concurrent pulls have reserved, or when an image's unpacked
//!   file data would pass [`Limits::max_image_bytes`]. Bytes count as written (a sparse
//!   file's holes are free), blobs staged under `images/tmp` as well as unpacked files. The
//!   error ([`Refused`]) names the limit, and nothing of the image is left or cached.
//! - after a run, [`Images::collect_garbage`] with every reference the settings still name.

pub mod budget;
pub(crate) mod config;
pub mod digest;
pub(crate) mod layout;
pub(crate) mod overlay;
pub(crate) mod refs;
pub(crate) mod registry;
pub(crate) mod store;
pub mod unpack;
pub(crate) mod user;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use futures_util::future::{select, Either};
use oci_client::Reference;

use crate::locks;
use crate::stop;
use budget::Budget;
pub use budget::Limits;
pub(crate) use config::ImageConfig;
use refs::Refs;
use registry::client::{is_unreachable, Puller, Resolved};
use registry::config::RegistryConfig;
pub(crate) use registry::watch::PullLimits;
use registry::watch::{Deadline, PullTimedOut, Watch};
use store::{Store, StoredImage};

/// When a registry is asked, as Kubernetes' `imagePullPolicy` names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Resolve the reference every time (a digest-pinned reference already stored excepted);
    /// nothing is downloaded when the resolved digest is stored. Bottlerocket's behaviour.
    #[default]
    Always,
    /// Use the stored resolution of the reference if there is one.
    IfNotPresent,
    /// As `Always`, but when the registry cannot be reached (connection refused or reset, DNS,
    /// timeouts, 5xx or 429 after the retries: [`registry::client::is_unreachable`]), run the
    /// image the reference resolved to last, if it is stored: a node can boot offline
    /// (bottlerocket #2567). Never on 401/403, 404, a TLS or a digest failure.
    AlwaysOrCached,
}

impl PullPolicy {
    pub(crate) const ALL: [PullPolicy; 3] = [
        PullPolicy::Always,
        PullPolicy::IfNotPresent,
        PullPolicy::AlwaysOrCached,
    ];

    /// The policy's name in settings: `always`, `if-not-present`, `always-or-cached`.
    pub fn name(self) -> &'static str {
        match self {
            PullPolicy::Always => "always",
            PullPolicy::IfNotPresent => "if-not-present",
            PullPolicy::AlwaysOrCached => "always-or-cached",
        }
    }
}

impl fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a container's image comes from.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Source<'a> {
    /// A registry reference (`host[:port]/repo:tag` or `...@sha256:...`).
    Registry {
        reference: &'a str,
        policy: PullPolicy,
        limits: PullLimits,
    },
    /// Image `tag` of the OCI image layout at `path`, unpacked afresh each time.
    Layout { path: &'a Path, tag: &'a str },
}

/// What getting a registry image cost this run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pulled {
    /// The platform manifest's digest, `sha256:<hex>`.
    pub digest: String,
    /// Resolving and downloading, in milliseconds: 0 for an image already stored, or pulled
    /// for another container of the same run.
    pub pull_ms: u64,
    /// Unpacking into the store, in milliseconds (0 likewise).
    pub unpack_ms: u64,
    /// The registry could not be reached and `always-or-cached` took the stored image the
    /// reference resolved to last.
    pub from_cache: bool,
}

/// A container's root filesystem, at `<dir>/rootfs`. Dropping it unmounts the overlay; a
/// layout's private unpack under it stays until the next [`Images::rootfs`] of the same
/// directory.
pub(crate) struct Rootfs {
    pub path: PathBuf,
    pub config: ImageConfig,
    /// For a registry image; `None` for a layout.
    pub pulled: Option<Pulled>,
    /// The directory holding the overlay, unmounted on drop.
    overlay: PathBuf,
}

impl Drop for Rootfs {
    fn drop(&mut self) {
        if let Err(err) = overlay::unmount(&self.overlay) {
            log::warn!("{err:#}");
        }
    }
}

impl Rootfs {
    /// A root filesystem over a directory that is no image — the host root, for a source-less
    /// container: an overlay at `<dir>/rootfs` whose only lower layer is `lower`'s top
    /// filesystem (overlayfs does not cross mounts, so `lower`'s submounts are not in it) and
    /// whose upper is a tmpfs, as for a registry image. An empty config; unmounted on drop.
    pub(crate) fn over(lower: &Path, dir: &Path, layer_bytes: u64) -> Result<Rootfs> {
        let path = overlay::mount_over(lower, dir, layer_bytes)?;
        Ok(Rootfs {
            path,
            config: ImageConfig::default(),
            pulled: None,
            overlay: dir.to_path_buf(),
        })
    }

    /// Whether the container's writable layer (the overlay's tmpfs) is full.
    pub(crate) fn layer_full(&self) -> bool {
        overlay::is_full(&self.overlay)
    }
}

/// Removes what an earlier run, killed before its [`Rootfs`] was dropped, left mounted in
/// `dir`.
pub fn clear(dir: &Path) -> Result<()> {
    overlay::unmount(dir)
}

/// A pull shared by every container of a run that asks for the same reference and policy. It
/// runs in a thread of its own, to the latest deadline of the containers it serves, so that
/// each of them can give up at its own.
struct SharedPull {
    watch: Watch,
    outcome: Mutex<Option<Result<(StoredImage, Pulled), SharedFailure>>>,
    done: Condvar,
    /// Whether a container has been charged with the pull's time: the first to get the image.
    charged: AtomicBool,
}

impl SharedPull {
    fn new(limits: &PullLimits, deadline: Option<Deadline>) -> SharedPull {
        SharedPull {
            watch: Watch::new(limits, deadline),
            outcome: Mutex::new(None),
            done: Condvar::new(),
            charged: AtomicBool::new(false),
        }
    }

    /// Whether the pull ended at its deadline: a container that asks later pulls again, to
    /// its own.
    fn timed_out(&self) -> bool {
        matches!(&*locks::lock(&self.outcome), Some(Err(failure)) if is_timeout(&failure.0))
    }

    /// Gives the pull's outcome to every container waiting on it.
    fn finish(&self, outcome: Result<(StoredImage, Pulled)>) {
        *locks::lock(&self.outcome) = Some(outcome.map_err(|err| SharedFailure(Arc::new(err))));
        self.done.notify_all();
    }

    /// The pull's outcome, once it has one or `deadline` passed (`None`).
    fn wait(
        &self,
        deadline: Option<Deadline>,
    ) -> Option<Result<(StoredImage, Pulled), SharedFailure>> {
        let outcome = locks::lock(&self.outcome);
        let outcome = match deadline {
            None => self
                .done
                .wait_while(outcome, |o| o.is_none())
                .unwrap_or_else(PoisonError::into_inner),
            Some(deadline) => {
                let wait = deadline.at.saturating_duration_since(Instant::now());
                self.done
                    .wait_timeout_while(outcome, wait, |o| o.is_none())
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
        };
        outcome.clone()
    }
}

/// A pull's failure as every container that waited on it gets it (anyhow's errors are not
/// `Clone`): it reads, and chains its sources, as the failure itself.
#[derive(Clone, Debug)]
struct SharedFailure(Arc<anyhow::Error>);

impl fmt::Display for SharedFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl std::error::Error for SharedFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// The images of one supervisor run: the store under `<state-dir>/images`, its `refs.json`,
/// and the registry client.
pub(crate) struct Images {
    store: Store,
    /// What downloads and unpacks may write, shared by concurrent pulls.
    budget: Budget,
    refs: Refs,
    puller: Puller,
    /// Polled during pulls: when it says so, the pull is abandoned.
    stop_requested: fn() -> bool,
    in_flight: Mutex<HashMap<String, Arc<SharedPull>>>,
    /// The pulls' threads, joined before the store is collected.
    pulls: Mutex<Vec<JoinHandle<()>>>,
}

impl Images {
    /// Opens the store under `state_dir` (removing what an interrupted run left in `tmp/`);
    /// every image is held to `limits`.
    pub(crate) fn open(
        state_dir: &Path,
        registries: RegistryConfig,
        limits: Limits,
        stop_requested: fn() -> bool,
    ) -> Result<Images> {
        let store = Store::open(state_dir.join("images"))?;
        let refs = Refs::at(store.dir().join("refs.json"));
        Ok(Images {
            store,
            budget: Budget::new(limits),
            refs,
            puller: Puller::new(registries),
            stop_requested,
            in_flight: Mutex::default(),
            pulls: Mutex::default(),
        })
    }

    /// The root filesystem of `source` for the container whose directory is `dir`, an overlay
    /// at `<dir>/rootfs` whose writable layer is a tmpfs of `layer_bytes` in `<dir>/scratch`,
    /// over: a registry image, pulled unless the store may answer (a digest-pinned reference
    /// already stored, or `if-not-present` with a stored resolution); a layout, unpacked afresh
    /// into `<dir>/image`. Concurrent callers for the same reference wait for one pull, each
    /// until its own `pull-timeout`.
    pub(crate) fn rootfs(
        self: &Arc<Self>,
        source: &Source<'_>,
        dir: &Path,
        layer_bytes: u64,
    ) -> Result<Rootfs> {
        let (lower, config, pulled) = match *source {
            Source::Layout { path, tag } => {
                let image = dir.join("image");
                if image.exists() {
                    std::fs::remove_dir_all(&image)
                        .with_context(|| format!("removing the previous {}", image.display()))?;
                }
                let charge = self.budget.image(dir)?;
                let config = layout::unpack_layout(path, tag, &image, &charge)?;
                (image, config, None)
            }
            Source::Registry {
                reference,
                policy,
                limits,
            } => {
                let (image, pulled) = self.obtain(reference, policy, limits)?;
                (image.rootfs, image.config, Some(pulled))
            }
        };
        let path = overlay::mount_over(&lower, dir, layer_bytes)?;
        Ok(Rootfs {
            path,
            config,
            pulled,
            overlay: dir.to_path_buf(),
        })
    }

    /// Forgets references not in `in_use` (every reference the settings name, whatever the
    /// container's mode) and removes the images nothing refers to. Call it when no container
    /// runs: it waits for pulls that no container waits on any more (each ends at its
    /// deadline, or when the supervisor is stopped).
    pub(crate) fn collect_garbage(&self, in_use: &BTreeSet<String>) -> Result<()> {
        // Taken first: the lock is not held while the pulls are joined.
        let pulls = std::mem::take(&mut *locks::lock(&self.pulls));
        for pull in pulls {
            let _ = pull.join();
        }
        let live = self.refs.retain(in_use)?;
        self.store.remove_except(&live)
    }

    /// The image of `reference`, from the pull of it in progress or done in this run, or from a
    /// pull started now, waited on until `limits.timeout` passes. A pull that ended at its
    /// deadline before this container's is started again.
    fn obtain(
        self: &Arc<Self>,
        reference: &str,
        policy: PullPolicy,
        limits: PullLimits,
    ) -> Result<(StoredImage, Pulled)> {
        let asked = Instant::now();
        let deadline = limits.deadline();
        let own_deadline_passed = || deadline.is_some_and(|d| Instant::now() >= d.at);
        loop {
            let shared = self.join_pull(reference, policy, &limits, deadline);
            let result = match shared.wait(deadline) {
                Some(Err(failure)) if is_timeout(&failure.0) && !own_deadline_passed() => {
                    continue; // its deadline was another container's
                }
                Some(result) => result.map_err(anyhow::Error::new),
                None => {
                    let limit = deadline.map_or_else(Default::default, |d| d.limit);
                    Err(anyhow::Error::new(shared.watch.timed_out(limit)))
                        .with_context(|| format!("pulling {reference}"))
                }
            };
            return match result {
                // Only the first container to get the image is charged with the pull's time.
                Ok((image, pulled)) if shared.charged.swap(true, Ordering::Relaxed) => Ok((
                    image,
                    Pulled {
                        pull_ms: 0,
                        unpack_ms: 0,
                        ..pulled
                    },
                )),
                Ok(obtained) => Ok(obtained),
                Err(err) => self
                    .cached_instead(reference, policy, &shared.watch, &err, asked)
                    .ok_or(err),
            };
        }
    }

    /// The pull of `reference` under `policy` in progress or done, joined with `limits`, or
    /// one started now (also when the last one ended at its deadline).
    fn join_pull(
        self: &Arc<Self>,
        reference: &str,
        policy: PullPolicy,
        limits: &PullLimits,
        deadline: Option<Deadline>,
    ) -> Arc<SharedPull> {
        let key = format!("{reference} {}", policy.name());
        let mut in_flight = locks::lock(&self.in_flight);
        if let Some(shared) = in_flight.get(&key).filter(|shared| !shared.timed_out()) {
            shared.watch.join(limits, deadline);
            return shared.clone();
        }
        let shared = Arc::new(SharedPull::new(limits, deadline));
        in_flight.insert(key, shared.clone());
        drop(in_flight);
        self.start_pull(reference, policy, &shared);
        shared
    }

    /// With `always-or-cached`, the stored image `text` resolved to last, when `err` says the
    /// registry cannot be reached ([`is_unreachable`], or a deadline that passed before any
    /// attempt reached it).
    fn cached_instead(
        &self,
        text: &str,
        policy: PullPolicy,
        watch: &Watch,
        err: &anyhow::Error,
        asked: Instant,
    ) -> Option<(StoredImage, Pulled)> {
        let unreached = is_unreachable(err) || (is_timeout(err) && watch.never_reached());
        if policy != PullPolicy::AlwaysOrCached || !unreached {
            return None;
        }
        let image = self.refs.get(text).and_then(|d| self.store.get(&d))?;
        log::warn!(
            "{text}: the registry cannot be reached ({err:#}); running {}, the image it resolved to last, from the cache",
            image.digest
        );
        let pulled = Pulled {
            digest: image.digest.clone(),
            pull_ms: asked.elapsed().as_millis() as u64,
            unpack_ms: 0,
            from_cache: true,
        };
        Some((image, pulled))
    }

    /// Starts `shared`'s pull in a thread of its own; a thread that cannot start is the pull's
    /// failure.
    fn start_pull(self: &Arc<Self>, reference: &str, policy: PullPolicy, shared: &Arc<SharedPull>) {
        let images = self.clone();
        let pulling = shared.clone();
        let text = reference.to_owned();
        let pull = std::thread::Builder::new()
            .name("pull".into())
            .spawn(move || pulling.finish(images.obtain_now(&text, policy, &pulling.watch)));
        match pull {
            Ok(pull) => locks::lock(&self.pulls).push(pull),
            Err(err) => shared.finish(
                Err(err).with_context(|| format!("pulling {reference}: starting its thread")),
            ),
        }
    }

    fn obtain_now(
        &self,
        text: &str,
        policy: PullPolicy,
        watch: &Watch,
    ) -> Result<(StoredImage, Pulled)> {
        let reference: Reference = text
            .parse()
            .with_context(|| format!("{text:?} is not an image reference"))?;
        let stored = |image: StoredImage| {
            let digest = image.digest.clone();
            (
                image,
                Pulled {
                    digest,
                    pull_ms: 0,
                    unpack_ms: 0,
                    from_cache: false,
                },
            )
        };
        if reference.digest().is_some() || policy == PullPolicy::IfNotPresent {
            if let Some(image) = self.refs.get(text).and_then(|d| self.store.get(&d)) {
                log::info!("{text}: using the cached image {}", image.digest);
                return Ok(stored(image));
            }
        }
        // One staging dir per reference, policy and run (as the pulls are shared): a retry
        // keeps the blobs that arrived whole, and a failed pull leaves nothing.
        let staging = self.store.staging(&format!("{text} {policy}"));
        let pulling = Instant::now();
        let (resolved, downloaded) = match self.download(&reference, text, &staging, watch) {
            Ok(downloaded) => downloaded,
            Err(err) => {
                let _ = std::fs::remove_dir_all(&staging);
                if let Some(cached) = self.cached_instead(text, policy, watch, &err, pulling) {
                    return Ok(cached);
                }
                let cached = self.refs.get(text).and_then(|d| self.store.get(&d));
                return Err(match (policy, cached) {
                    (PullPolicy::Always, Some(_)) => err.context(format!("an earlier pull of {text} is cached; pull-policy = \"always-or-cached\" would run it when the registry cannot be reached, \"if-not-present\" always")),
                    _ => err,
                });
            }
        };
        let pull_ms = pulling.elapsed().as_millis() as u64;
        let obtained = if downloaded {
            let result = self.unpack(text, &resolved, &staging, pull_ms);
            let _ = std::fs::remove_dir_all(&staging);
            result?
        } else {
            stored(
                self.store
                    .get(&resolved.digest)
                    .context("the cached image vanished")?,
            )
        };
        self.refs.remember(text, &obtained.0.digest)?;
        Ok(obtained)
    }

    /// Resolves `reference` and downloads what the store lacks of it into `staging`, until
    /// done, the latest deadline of `watch` passes or the supervisor is stopped. Returns the
    /// resolved manifest and whether anything was downloaded (nothing: the store has the
    /// image).
    fn download(
        &self,
        reference: &Reference,
        text: &str,
        staging: &Path,
        watch: &Watch,
    ) -> Result<(Resolved, bool)> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the pull's I/O runtime")?;
        let is_stored = |digest: &str| self.store.get(digest).is_some();
        let downloads = self.budget.downloads(self.store.dir())?;
        runtime.block_on(async {
            let download = registry::Download {
                puller: &self.puller,
                reference,
                text,
                staging,
                stored: &is_stored,
                charge: &downloads,
                watch,
            };
            let pull = std::pin::pin!(download.run());
            let stop = std::pin::pin!(self.until_stop_requested());
            let deadline = std::pin::pin!(watch.deadline_passed());
            let ended = select(stop, deadline);
            match select(pull, ended).await {
                Either::Left((pulled, _)) => pulled,
                Either::Right((Either::Left(_), _)) => Err(anyhow!(
                    "pulling {text}: abandoned, the supervisor was stopped"
                )),
                Either::Right((Either::Right((timed_out, _)), _)) => {
                    Err(anyhow::Error::new(timed_out).context(format!("pulling {text}")))
                }
            }
        })
        // `downloads` is dropped here: what it reserved and did not write is free for the unpack.
    }

    /// Unpacks the downloaded image in `staging` into the store; `pull_ms` is how long its
    /// download took.
    fn unpack(
        &self,
        text: &str,
        resolved: &Resolved,
        staging: &Path,
        pull_ms: u64,
    ) -> Result<(StoredImage, Pulled)> {
        let unpacking = Instant::now();
        let image = self
            .budget
            .image(self.store.dir())
            .and_then(|charge| {
                self.store.unpack(
                    &resolved.digest,
                    &resolved.manifest,
                    &staging.join("blobs"),
                    staging,
                    &charge,
                )
            })
            .with_context(|| format!("unpacking {text}"))?;
        let pulled = Pulled {
            digest: image.digest.clone(),
            pull_ms,
            unpack_ms: unpacking.elapsed().as_millis() as u64,
            from_cache: false,
        };
        log::info!(
            "{text}: pulled in {:.1} s, unpacked in {:.1} s ({})",
            pull_ms as f64 / 1000.0,
            pulled.unpack_ms as f64 / 1000.0,
            image.digest
        );
        Ok((image, pulled))
    }

    async fn until_stop_requested(&self) {
        while !(self.stop_requested)() {
            tokio::time::sleep(stop::POLL).await;
        }
    }
}

/// Whether `err` is a pull's deadline passing.
fn is_timeout(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| cause.is::<PullTimedOut>())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every container sharing a failed pull gets the failure as the puller got it.
    #[test]
    fn a_shared_failure_reads_as_the_failure() {
        let failure = || {
            Err::<(), _>(std::io::Error::other("connection refused"))
                .context("fetching blob sha256:ab")
                .context("pulling registry.test/a:1")
                .unwrap_err()
        };
        let shared: anyhow::Error = SharedFailure(Arc::new(failure())).into();
        assert_eq!(format!("{shared:#}"), format!("{:#}", failure()));
        assert_eq!(format!("{shared}"), format!("{}", failure()));
        assert_eq!(shared.chain().count(), failure().chain().count());
    }
}
