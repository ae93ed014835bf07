//! Unpacked root filesystems by platform-manifest digest, as containerd's snapshots keep them
//! (one committed snapshot per image here, never written once committed):
//!
//! ```text
//! <state-dir>/images/sha256/<hex>/rootfs       the unpacked image
//! <state-dir>/images/sha256/<hex>/image.json   its config; written last, before the rename
//! <state-dir>/images/tmp/                      downloads and unpacks in progress
//! ```
//! An image appears under `sha256/` only by a rename of a complete unpack, so a crash leaves
//! at most litter in `tmp/`, which [`Store::open`] removes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use oci_client::manifest::OciImageManifest;
use sha2::{Digest, Sha256};

use super::budget::Charge;
use super::config::ImageConfig;
use super::digest::{digest_hex, verify};
use super::unpack::{self, Compression};
use crate::atomic_file;

/// An image committed to the store.
#[derive(Clone, Debug)]
pub(crate) struct StoredImage {
    /// The platform manifest's digest, `sha256:<hex>`.
    pub digest: String,
    /// Its unpacked root filesystem: shared, so only ever a read-only lower layer.
    pub rootfs: PathBuf,
    pub config: ImageConfig,
}

pub(crate) struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens the store at `dir` (`<state-dir>/images`), removing what an interrupted run left
    /// in `tmp/`.
    pub(crate) fn open(dir: PathBuf) -> Result<Store> {
        let tmp = dir.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
        }
        for path in [dir.join("sha256"), tmp] {
            std::fs::create_dir_all(&path)
                .with_context(|| format!("creating {}", path.display()))?;
        }
        Ok(Store { dir })
    }

    /// The store's directory; `refs.json` lives in it too.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// A staging directory for one pull: `tmp/<sha256 of key>.<pid>`. The caller removes it.
    pub(crate) fn staging(&self, key: &str) -> PathBuf {
        self.dir.join("tmp").join(format!(
            "{}.{}",
            super::digest::hex(&Sha256::digest(key.as_bytes())),
            std::process::id()
        ))
    }

    /// The committed image of `digest`, if complete.
    pub(crate) fn get(&self, digest: &str) -> Option<StoredImage> {
        let dir = self.image_dir(digest).ok()?;
        let text = std::fs::read(dir.join("image.json")).ok()?;
        match serde_json::from_slice(&text) {
            Ok(config) => Some(StoredImage {
                digest: digest.to_owned(),
                rootfs: dir.join("rootfs"),
                config,
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

    /// Applies the layers of `manifest` (blobs named by their hex digest in `blobs`) in order
    /// under `staging`, held to `charge`, and commits the result as `digest` by a rename. The
    /// caller removes `staging`, whatever the outcome.
    pub(crate) fn unpack(
        &self,
        digest: &str,
        manifest: &OciImageManifest,
        blobs: &Path,
        staging: &Path,
        charge: &Charge,
    ) -> Result<StoredImage> {
        let config_blob = std::fs::read(blobs.join(digest_hex(&manifest.config.digest)?))
            .context("reading the image config")?;
        verify(&manifest.config.digest, &Sha256::digest(&config_blob))?;
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
                charge,
            )
            .with_context(|| format!("applying layer {}", layer.digest))?;
        }
        atomic_file::write(
            &image.join("image.json"),
            &serde_json::to_vec(&config)?,
            0o644,
        )?;
        let target = self.image_dir(digest)?;
        if let Err(err) = std::fs::rename(&image, &target) {
            // Another reference to the same digest finished first: use that one.
            if self.get(digest).is_none() {
                return Err(err).with_context(|| format!("renaming into {}", target.display()));
            }
        }
        self.get(digest)
            .context("the unpacked image is not in the store")
    }

    /// Removes every image whose digest is not in `live`.
    pub(crate) fn remove_except(&self, live: &BTreeSet<String>) -> Result<()> {
        let live: BTreeSet<&str> = live.iter().filter_map(|d| digest_hex(d).ok()).collect();
        let images = self.dir.join("sha256");
        for entry in
            std::fs::read_dir(&images).with_context(|| format!("reading {}", images.display()))?
        {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !live.contains(name.as_str()) {
                log::info!("removing the unused image sha256:{name}");
                std::fs::remove_dir_all(entry.path())
                    .with_context(|| format!("removing {}", entry.path().display()))?;
            }
        }
        Ok(())
    }

    fn image_dir(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.dir.join("sha256").join(digest_hex(digest)?))
    }
}
