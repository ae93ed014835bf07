//! `oci-layout:` sources: an image in an OCI image layout directory (as umoci and skopeo
//! write them), found by tag and unpacked into a root filesystem.
//!
//! Every blob is checked against its digest before use; layers are applied in order by
//! [`unpack`], which refuses any entry that would land outside the rootfs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::budget::Charge;
use super::config::ImageConfig;
use super::digest::{digest_hex, verify};
use super::unpack::{self, Compression};

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: Option<String>,
    digest: String,
    #[serde(default)]
    annotations: std::collections::HashMap<String, String>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Unpacks image `tag` of the layout at `layout` into `rootfs` (which must not exist), held to
/// `charge`, and returns its config. On error `rootfs` is removed.
pub(crate) fn unpack_layout(
    layout: &Path,
    tag: &str,
    rootfs: &Path,
    charge: &Charge,
) -> Result<ImageConfig> {
    std::fs::create_dir_all(rootfs).with_context(|| format!("creating {}", rootfs.display()))?;
    let result = unpack_into(layout, tag, rootfs, charge);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(rootfs);
    }
    result.with_context(|| format!("unpacking image {}:{tag}", layout.display()))
}

fn unpack_into(layout: &Path, tag: &str, rootfs: &Path, charge: &Charge) -> Result<ImageConfig> {
    let index: Index = read_json(&layout.join("index.json"))?;
    let descriptor = index
        .manifests
        .iter()
        .find(|m| m.annotations.get(REF_NAME).map(String::as_str) == Some(tag))
        .with_context(|| format!("no image tagged {tag:?} in the layout"))?;
    if descriptor.media_type.as_deref() == Some("application/vnd.oci.image.index.v1+json") {
        bail!(
            "tag {tag:?} names an image index; only single-platform manifests are supported here"
        );
    }
    let manifest: Manifest = serde_json::from_slice(&read_blob(layout, &descriptor.digest)?)
        .context("parsing the image manifest")?;
    let config = ImageConfig::from_config_blob(&read_blob(layout, &manifest.config.digest)?)?;
    for layer in &manifest.layers {
        apply_layer(layout, layer, rootfs, charge)
            .with_context(|| format!("applying layer {}", layer.digest))?;
    }
    Ok(config)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

fn blob_path(layout: &Path, digest: &str) -> Result<PathBuf> {
    Ok(layout.join("blobs/sha256").join(digest_hex(digest)?))
}

/// A small blob, read whole and verified.
fn read_blob(layout: &Path, digest: &str) -> Result<Vec<u8>> {
    let path = blob_path(layout, digest)?;
    let data = std::fs::read(&path).with_context(|| format!("reading blob {digest}"))?;
    verify(digest, &Sha256::digest(&data))?;
    Ok(data)
}

fn apply_layer(layout: &Path, layer: &Descriptor, rootfs: &Path, charge: &Charge) -> Result<()> {
    let compression = Compression::of_media_type(layer.media_type.as_deref().unwrap_or_default())?;
    unpack::apply_blob(
        &blob_path(layout, &layer.digest)?,
        &layer.digest,
        compression,
        rootfs,
        charge,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_paths_are_digests() {
        assert!(blob_path(Path::new("/l"), "sha256:../../etc").is_err());
    }
}
