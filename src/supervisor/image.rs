//! OCI image layouts (as umoci and skopeo write them) unpacked into a root filesystem.
//!
//! Every blob is checked against its digest before use; layers are applied in order with OCI
//! whiteouts; no entry may land outside the rootfs (the tar crate refuses `..` and absolute
//! paths, and every parent is checked not to be a symlink planted by an earlier layer).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The parts of an image config that shape the container.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

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

#[derive(Deserialize)]
struct ConfigBlob {
    #[serde(default)]
    config: ImageConfig,
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Unpacks image `tag` of the layout at `layout` into `rootfs` (which must not exist) and
/// returns its config. On error `rootfs` is removed.
pub fn unpack_layout(layout: &Path, tag: &str, rootfs: &Path) -> Result<ImageConfig> {
    std::fs::create_dir_all(rootfs).with_context(|| format!("creating {}", rootfs.display()))?;
    let result = unpack_into(layout, tag, rootfs);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(rootfs);
    }
    result.with_context(|| format!("unpacking image {}:{tag}", layout.display()))
}

fn unpack_into(layout: &Path, tag: &str, rootfs: &Path) -> Result<ImageConfig> {
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
    let config: ConfigBlob = serde_json::from_slice(&read_blob(layout, &manifest.config.digest)?)
        .context("parsing the image config")?;
    for layer in &manifest.layers {
        apply_layer(layout, layer, rootfs)
            .with_context(|| format!("applying layer {}", layer.digest))?;
    }
    Ok(config.config)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

fn blob_path(layout: &Path, digest: &str) -> Result<PathBuf> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .with_context(|| format!("unsupported digest {digest:?}"))?;
    Ok(layout.join("blobs/sha256").join(hex))
}

/// A small blob, read whole and verified.
fn read_blob(layout: &Path, digest: &str) -> Result<Vec<u8>> {
    let path = blob_path(layout, digest)?;
    let data = std::fs::read(&path).with_context(|| format!("reading blob {digest}"))?;
    verify(digest, &Sha256::digest(&data))?;
    Ok(data)
}

fn verify(digest: &str, actual: &[u8]) -> Result<()> {
    let actual = format!("sha256:{}", hex(actual));
    if actual != digest {
        bail!("blob {digest} is corrupt: its content hashes to {actual}");
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hashes whatever is read through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn apply_layer(layout: &Path, layer: &Descriptor, rootfs: &Path) -> Result<()> {
    // The digest covers the compressed blob: verify it before the layer counts as applied.
    // Entries are unpacked while streaming; a corrupt blob fails the whole unpack, and the
    // caller removes the rootfs.
    let file = File::open(blob_path(layout, &layer.digest)?).context("opening layer blob")?;
    let mut hashing = Hashing {
        inner: BufReader::new(file),
        hasher: Sha256::new(),
    };
    {
        let media_type = layer.media_type.as_deref().unwrap_or_default();
        let reader: Box<dyn Read + '_> =
            if media_type.ends_with("+gzip") || media_type.ends_with(".gzip") {
                Box::new(flate2::read::GzDecoder::new(&mut hashing))
            } else if media_type.ends_with(".tar") || media_type.is_empty() {
                Box::new(&mut hashing)
            } else {
                bail!("unsupported layer media type {media_type:?}");
            };
        let mut archive = tar::Archive::new(reader);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(true);
        archive.set_unpack_xattrs(true);
        archive.set_overwrite(true);
        for entry in archive.entries().context("reading the layer")? {
            let mut entry = entry.context("reading a layer entry")?;
            let path = entry.path().context("entry path")?.into_owned();
            apply_entry(&mut entry, &path, rootfs)
                .with_context(|| format!("entry {}", path.display()))?;
        }
    }
    // Drain what the decompressor did not read (tar padding) so the hash covers the blob.
    std::io::copy(&mut hashing, &mut std::io::sink()).context("reading the layer")?;
    verify(&layer.digest, &hashing.hasher.finalize())
}

fn apply_entry<R: Read>(entry: &mut tar::Entry<R>, path: &Path, rootfs: &Path) -> Result<()> {
    let relative = confined(path)?;
    let Some(name) = relative.file_name().and_then(|n| n.to_str()) else {
        return Ok(()); // the root directory itself
    };
    let parent = relative.parent().unwrap_or(Path::new(""));
    ensure_no_symlink_parents(rootfs, parent)?;
    if name == ".wh..wh..opq" {
        // Opaque directory: hide everything the lower layers put there.
        let dir = rootfs.join(parent);
        if let Ok(children) = std::fs::read_dir(&dir) {
            for child in children.flatten() {
                remove_any(&child.path())?;
            }
        }
        return Ok(());
    }
    if let Some(hidden) = name.strip_prefix(".wh.") {
        if matches!(hidden, "" | "." | "..") {
            bail!("refused: the whiteout {name:?} names no file");
        }
        return remove_any(&rootfs.join(parent).join(hidden));
    }
    if entry.header().entry_type().is_hard_link() {
        let target = entry
            .link_name()
            .context("hard link target")?
            .context("hard link without target")?;
        ensure_no_symlink_parents(rootfs, confined(&target)?.parent().unwrap_or(Path::new("")))?;
    }
    // A directory replaces nothing; anything else replaces what a lower layer had there.
    if !entry.header().entry_type().is_dir() {
        let existing = rootfs.join(&relative);
        if existing
            .symlink_metadata()
            .is_ok_and(|m| m.is_dir() && !m.file_type().is_symlink())
        {
            remove_any(&existing)?;
        }
    }
    if !entry.unpack_in(rootfs).context("unpacking")? {
        bail!("refused: it would be written outside the root filesystem");
    }
    Ok(())
}

/// The entry's path relative to the rootfs; `..` or an absolute path is an escape attempt.
fn confined(path: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                bail!(
                    "refused: the path {} leaves the root filesystem",
                    path.display()
                )
            }
        }
    }
    Ok(out)
}

/// Refuses a path whose existing parents include a symlink: writing through it could land
/// anywhere on the host.
fn ensure_no_symlink_parents(rootfs: &Path, parent: &Path) -> Result<()> {
    let mut current = rootfs.to_path_buf();
    for component in parent.components() {
        current.push(component);
        match current.symlink_metadata() {
            Ok(meta) if meta.file_type().is_symlink() => bail!(
                "refused: {} is a symlink, and writing through it could leave the root filesystem",
                current.strip_prefix(rootfs).unwrap_or(&current).display()
            ),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

fn remove_any(path: &Path) -> Result<()> {
    match path.symlink_metadata() {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => return Ok(()),
    }
    .with_context(|| format!("removing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confined_refuses_escapes() {
        assert_eq!(confined(Path::new("./a/b")).unwrap(), Path::new("a/b"));
        assert!(confined(Path::new("../x")).is_err());
        assert!(confined(Path::new("a/../../x")).is_err());
        assert!(confined(Path::new("/etc/passwd")).is_err());
    }

    #[test]
    fn symlinked_parents_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("link")).unwrap();
        assert!(ensure_no_symlink_parents(dir.path(), Path::new("real/x")).is_ok());
        assert!(ensure_no_symlink_parents(dir.path(), Path::new("link/x")).is_err());
    }

    /// Applies a one-entry layer (a regular file named `name`) to `rootfs`.
    fn apply_file_named(name: &str, rootfs: &Path) -> Result<()> {
        let mut layer = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // set_path refuses `..`, which is the point of the test: write the raw name.
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        layer.append(&header, std::io::empty()).unwrap();
        let bytes = layer.into_inner().unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
        let path = entry.path().unwrap().into_owned();
        apply_entry(&mut entry, &path, rootfs)
    }

    #[test]
    fn whiteouts_cannot_name_the_parent() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        std::fs::write(dir.path().join("precious"), b"x").unwrap();
        std::fs::write(rootfs.join("gone"), b"x").unwrap();
        assert!(apply_file_named(".wh..", &rootfs).is_err());
        assert!(apply_file_named(".wh.", &rootfs).is_err());
        assert!(dir.path().join("precious").exists() && rootfs.exists());
        apply_file_named(".wh.gone", &rootfs).unwrap();
        assert!(!rootfs.join("gone").exists());
        assert!(apply_file_named("../escape", &rootfs).is_err());
        assert!(!dir.path().join("escape").exists());
    }

    #[test]
    fn digests_are_checked() {
        assert!(verify(
            &format!("sha256:{}", hex(&Sha256::digest(b"abc"))),
            &Sha256::digest(b"abc")
        )
        .is_ok());
        assert!(verify(
            &format!("sha256:{}", hex(&Sha256::digest(b"abc"))),
            &Sha256::digest(b"abd")
        )
        .is_err());
        assert!(blob_path(Path::new("/l"), "sha256:../../etc").is_err());
    }
}
