//! One image pulled through `oci-client`: the platform manifest resolved (mirrors first, then
//! the registry), and blobs downloaded to files, each verified against its digest before it is
//! renamed into place, so a partial download is never mistaken for a blob.

use std::collections::HashMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{Context, Result};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use tokio::io::AsyncWrite;

use super::super::budget::{Charge, Refused};
use super::config::RegistryConfig;
use super::credentials;
use super::progress::Progress;
use super::watch::{Stalled, Watch};
use crate::locks;

pub(crate) struct Puller {
    config: RegistryConfig,
    clients: Mutex<HashMap<String, Arc<(Client, RegistryAuth)>>>,
}

/// A reference resolved to its platform manifest, at the host that answered.
pub(crate) struct Resolved {
    pub reference: Reference,
    pub manifest: OciImageManifest,
    pub digest: String,
}

impl Puller {
    pub(crate) fn new(config: RegistryConfig) -> Puller {
        Puller {
            config,
            clients: Mutex::default(),
        }
    }

    /// The client for `host` (its protocol and CA) with its credentials, made once.
    fn client(&self, host: &str) -> Result<Arc<(Client, RegistryAuth)>> {
        let mut clients = locks::lock(&self.clients);
        if let Some(client) = clients.get(host) {
            return Ok(client.clone());
        }
        let registry = self.config.registry(host);
        let mut config = ClientConfig {
            protocol: if registry.insecure {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            connect_timeout: Some(Duration::from_secs(30)),
            // The pull's Watch detects stalls, with the container's pull-progress-timeout.
            read_timeout: None,
            user_agent: concat!("bootstrap-supervisor/", env!("CARGO_PKG_VERSION")),
            https_proxy: proxy_variable("HTTPS_PROXY"),
            http_proxy: proxy_variable("HTTP_PROXY"),
            no_proxy: proxy_variable("NO_PROXY"),
            ..ClientConfig::default()
        };
        if let Some(ca_file) = &registry.ca_file {
            config.extra_root_certificates = certificates(ca_file)?;
        }
        let auth = match &registry.auth_file {
            Some(file) => credentials::lookup(file, host)?,
            None => RegistryAuth::Anonymous,
        };
        let client = Arc::new((Client::new(config), auth));
        clients.insert(host.to_owned(), client.clone());
        Ok(client)
    }

    /// The platform manifest of `reference` (an index resolves to the host's platform),
    /// asking the registry's mirrors first; a host that sends nothing for the progress timeout
    /// counts as failed.
    pub(crate) async fn resolve(&self, reference: &Reference, watch: &Watch) -> Result<Resolved> {
        let origin = reference.registry().to_owned();
        let mut last_error = None;
        for mirror in &self.config.registry(&origin).mirrors {
            let mut via_mirror = reference.clone();
            via_mirror.set_mirror_registry(mirror.clone());
            match self.resolve_at(&via_mirror, mirror, watch).await {
                Ok(resolved) => return Ok(resolved),
                Err(err) => {
                    log::warn!("{reference}: mirror {mirror} failed ({err:#}); trying the next");
                    last_error = Some(err);
                }
            }
        }
        self.resolve_at(reference, &origin, watch)
            .await
            .map_err(|err| match last_error {
                Some(_) => err.context("the mirrors failed too"),
                None => err,
            })
    }

    async fn resolve_at(
        &self,
        reference: &Reference,
        host: &str,
        watch: &Watch,
    ) -> Result<Resolved> {
        let client = self.client(host)?;
        let (client, auth) = &*client;
        let limit = watch.stall();
        let (manifest, digest) =
            tokio::time::timeout(limit, client.pull_image_manifest(reference, auth))
                .await
                .map_err(|_| Stalled::Manifest {
                    limit,
                    host: host.to_owned(),
                })?
                .with_context(|| format!("fetching the manifest from {host}"))?;
        Ok(Resolved {
            reference: reference.clone(),
            manifest,
            digest,
        })
    }

    /// Downloads `blob` to `dest`, verified (oci-client checks the digest as it streams),
    /// telling `charge` what it writes before writing it and `watch` what arrives; nothing is
    /// at `dest` unless the whole blob arrived intact.
    pub(crate) async fn fetch(
        &self,
        resolved: &Resolved,
        blob: &OciDescriptor,
        dest: &Path,
        progress: &Progress,
        charge: &Charge,
        watch: &Watch,
    ) -> Result<()> {
        if dest.exists() {
            progress.add(blob.size.max(0) as u64);
            return Ok(()); // an earlier attempt got it
        }
        let host = resolved.reference.resolve_registry();
        let client = self.client(host)?;
        let partial = dest.with_extension("partial");
        charge
            .entry()
            .with_context(|| format!("downloading blob {}", blob.digest))?;
        let file = tokio::fs::File::create(&partial)
            .await
            .with_context(|| format!("creating {}", partial.display()))?;
        watch.blob_started(&blob.digest, blob.size.max(0) as u64);
        let result = client
            .0
            .pull_blob(
                &resolved.reference,
                blob,
                Counting {
                    inner: file,
                    progress,
                    charge,
                    watch,
                    digest: &blob.digest,
                },
            )
            .await
            // A refusal reaches us wrapped in oci-client's I/O error: report it plainly.
            .map_err(|err| charge.refused().map_or(err.into(), anyhow::Error::new))
            .with_context(|| format!("downloading blob {} from {host}", blob.digest));
        watch.blob_ended(&blob.digest);
        if let Err(err) = result {
            let _ = std::fs::remove_file(&partial);
            return Err(err);
        }
        std::fs::rename(&partial, dest).with_context(|| format!("renaming {}", partial.display()))
    }
}

fn proxy_variable(name: &str) -> Option<String> {
    std::env::var(name)
        .or_else(|_| std::env::var(name.to_lowercase()))
        .ok()
        .filter(|v| !v.is_empty())
}

/// Every certificate in a PEM bundle (reqwest takes one per `Certificate`).
fn certificates(path: &Path) -> Result<Vec<Certificate>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading CA file {}", path.display()))?;
    const END: &str = "-----END CERTIFICATE-----";
    let certificates: Vec<Certificate> = text
        .split_inclusive(END)
        .filter(|block| block.contains("-----BEGIN CERTIFICATE-----"))
        .map(|block| Certificate {
            encoding: CertificateEncoding::Pem,
            data: block.trim().as_bytes().to_vec(),
        })
        .collect();
    if certificates.is_empty() {
        anyhow::bail!("CA file {} holds no PEM certificate", path.display());
    }
    Ok(certificates)
}

/// Failures no retry can fix: the image or the credentials are wrong, or the image would not
/// fit.
pub(crate) fn is_permanent(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.is::<Refused>()
            || matches!(
            cause.downcast_ref::<OciDistributionError>(),
            Some(
                OciDistributionError::AuthenticationFailure(_)
                    | OciDistributionError::UnauthorizedError { .. }
                    | OciDistributionError::ImageManifestNotFoundError(_)
                    | OciDistributionError::UnsupportedMediaTypeError(_)
                    | OciDistributionError::UnsupportedSchemaVersionError(_)
                    | OciDistributionError::ImageIndexParsingNoPlatformResolverError
            )
        ) || matches!(
            cause.downcast_ref::<OciDistributionError>(),
            Some(OciDistributionError::ServerError { code, .. })
                if (400..500).contains(code) && *code != 408 && *code != 429
        ) || matches!(
            cause.downcast_ref::<OciDistributionError>(),
            Some(OciDistributionError::RegistryError { envelope, .. })
                if envelope.errors.iter().any(|e| !matches!(e.code, oci_client::errors::OciErrorCode::Toomanyrequests))
        )
    })
}

/// Failures that say the registry cannot be reached, on which `always-or-cached` runs the cached
/// image: a connection refused, reset or timed out, a name that does not resolve, a stall
/// (`pull-progress-timeout`), a 5xx or 429
/// answer (after the retries, from the registry and every mirror). Never a failure no retry
/// fixes ([`is_permanent`]: 401, 403, 404, ...), a TLS verification failure or a digest
/// mismatch: those say the registry answered, and what it said must not be overridden.
pub(crate) fn is_unreachable(err: &anyhow::Error) -> bool {
    use std::io::ErrorKind;
    // native-tls reports a failed verification only as text ("certificate verify failed").
    let tls = |cause: &(dyn std::error::Error + 'static)| {
        cause.to_string().to_lowercase().contains("certificate")
    };
    if is_permanent(err) || err.chain().any(tls) {
        return false;
    }
    err.chain().any(|cause| {
        if cause.is::<Stalled>() {
            return true;
        }
        if let Some(failure) = cause.downcast_ref::<OciDistributionError>() {
            return match failure {
                OciDistributionError::RequestError(request) => {
                    request.is_connect() || request.is_timeout()
                }
                OciDistributionError::ServerError { code, .. } => *code >= 500 || *code == 429,
                _ => false,
            };
        }
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::NotConnected
                    | ErrorKind::TimedOut
                    | ErrorKind::UnexpectedEof
            )
        })
    })
}

/// Counts what is written of blob `digest`, for progress and the pull's watch, and charges it
/// before writing it.
struct Counting<'a, W> {
    inner: W,
    progress: &'a Progress,
    charge: &'a Charge,
    watch: &'a Watch,
    digest: &'a str,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counting<'_, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let offered = buf.len() as u64;
        if let Err(refused) = self.charge.data(offered) {
            return Poll::Ready(Err(std::io::Error::other(refused)));
        }
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        let written = match poll {
            Poll::Ready(Ok(n)) => n as u64,
            _ => 0,
        };
        self.charge.refund(offered - written);
        self.progress.add(written);
        self.watch.received_bytes(self.digest, written);
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
