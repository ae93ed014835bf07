//! Pulling images from OCI registries: per-registry settings (`registries.toml`), credentials,
//! the client, Bottlerocket's retry schedule and progress lines. [`Download`] brings one
//! image's blobs into a staging directory; unpacking them is the store's job.

pub(crate) mod backoff;
pub(crate) mod client;
pub(crate) mod config;
pub(crate) mod credentials;
pub(crate) mod progress;
pub(crate) mod watch;

use std::path::Path;

use anyhow::{Context, Result};
use futures_util::future::{select, try_join_all, Either};
use oci_client::Reference;

use super::budget::Charge;
use super::digest::digest_hex;
use client::{is_permanent, is_unreachable, Puller, Resolved};
use progress::Progress;
use watch::Watch;

/// One image's download into a staging directory: its config and layers go to
/// `<staging>/blobs/<hex>`, held to `charge`.
pub(crate) struct Download<'a> {
    pub puller: &'a Puller,
    pub reference: &'a Reference,
    /// The reference as the settings spell it, for messages.
    pub text: &'a str,
    pub staging: &'a Path,
    /// Whether an image digest is stored already: then nothing is downloaded.
    pub stored: &'a (dyn Fn(&str) -> bool + Sync),
    pub charge: &'a Charge,
    /// The pull's bounds, and what it received.
    pub watch: &'a Watch,
}

impl Download<'_> {
    /// Resolves the reference and downloads the image, retrying on Bottlerocket's schedule; a
    /// failure no retry can fix fails at once, and an attempt that receives nothing for the
    /// progress timeout is abandoned and retried. Returns `false` when the resolved image is
    /// stored already (nothing downloaded).
    pub(crate) async fn run(&self) -> Result<(Resolved, bool)> {
        let text = self.text;
        let scale = backoff::scale();
        let mut retry = 0;
        loop {
            self.watch.begin_attempt();
            // In a block of its own: an abandoned attempt's sockets and files are closed
            // before the backoff.
            let result = {
                let attempt = std::pin::pin!(self.once());
                let stalled = std::pin::pin!(self.watch.stalled());
                match select(attempt, stalled).await {
                    Either::Left((result, _)) => result,
                    Either::Right((stalled, _)) => Err(anyhow::Error::new(stalled)),
                }
            };
            if !result.as_ref().is_err_and(is_unreachable) {
                self.watch.reached();
            }
            match result {
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

    /// One attempt; blobs that arrived whole in an earlier attempt are kept.
    async fn once(&self) -> Result<(Resolved, bool)> {
        let Download {
            puller,
            reference,
            text,
            staging,
            stored,
            charge,
            watch,
        } = *self;
        let resolved = puller.resolve(reference, watch).await?;
        if stored(&resolved.digest) {
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
                    puller
                        .fetch(resolved, blob, &dest, progress, charge, watch)
                        .await?;
                    if blob.digest != resolved.manifest.config.digest {
                        progress.layer_done();
                    }
                    anyhow::Ok(())
                }
            });
        try_join_all(downloads).await?;
        Ok((resolved, true))
    }
}
