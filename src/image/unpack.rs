//! Image layers applied to a root filesystem: OCI whiteouts and opaque directories, hard links,
//! symlinks, permissions, ownership and xattrs. No entry may land outside the rootfs: `..` and
//! absolute paths are refused, and so is any entry whose existing parents include a symlink
//! (planted by an earlier layer, it could point anywhere on the host).
//!
//! Device nodes and setuid files are unpacked as containerd would: a bootstrap container is
//! trusted root code, and only escapes are errors.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::content::verify;

/// How a layer blob is compressed, from its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// OCI (`...tar`, `...tar+gzip`, `...tar+zstd`) and Docker (`...tar.gzip`) layer types.
    pub fn of_media_type(media_type: &str) -> Result<Compression> {
        if media_type.ends_with("+gzip") || media_type.ends_with(".gzip") {
            Ok(Compression::Gzip)
        } else if media_type.ends_with("+zstd") {
            Ok(Compression::Zstd)
        } else if media_type.ends_with(".tar") || media_type.is_empty() {
            Ok(Compression::None)
        } else {
            bail!("unsupported layer media type {media_type:?}")
        }
    }
}

/// Applies the layer blob at `blob`, which must hash to `digest`, to `rootfs`. Entries are
/// unpacked while streaming; the caller throws the rootfs away if this fails. Reading, hashing
/// and decompressing run on a thread of their own, so they overlap the filesystem work.
pub fn apply_blob(
    blob: &Path,
    digest: &str,
    compression: Compression,
    rootfs: &Path,
) -> Result<()> {
    let file = File::open(blob).with_context(|| format!("opening layer blob {digest}"))?;
    let (chunks, received) = mpsc::sync_channel(CHUNKS_IN_FLIGHT);
    let expected = digest.to_owned();
    let decoder = std::thread::spawn(move || decode(file, compression, &expected, chunks));
    let applied = apply_tar(
        ChannelReader {
            chunks: received,
            current: Vec::new(),
            offset: 0,
        },
        rootfs,
    );
    let decoded = decoder
        .join()
        .map_err(|_| anyhow::anyhow!("the layer decompressor panicked"))?;
    // A corrupt blob makes the tar stream fail too: its digest is the error worth reporting.
    decoded.and(applied)
}

const CHUNK: usize = 256 << 10;
const CHUNKS_IN_FLIGHT: usize = 16;

/// Sends the decompressed blob in chunks; hashes all of it, even after the receiver stopped
/// reading (tar padding), and verifies the digest.
fn decode(
    file: File,
    compression: Compression,
    digest: &str,
    chunks: mpsc::SyncSender<std::io::Result<Vec<u8>>>,
) -> Result<()> {
    let mut hashing = Hashing {
        inner: BufReader::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
    };
    let decoded = {
        let mut reader: Box<dyn Read + '_> = match compression {
            Compression::None => Box::new(&mut hashing),
            Compression::Gzip => Box::new(flate2::read::GzDecoder::new(&mut hashing)),
            Compression::Zstd => {
                Box::new(zstd::stream::read::Decoder::new(&mut hashing).context("starting zstd")?)
            }
        };
        loop {
            let mut chunk = vec![0; CHUNK];
            match read_up_to(&mut reader, &mut chunk) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    chunk.truncate(n);
                    if chunks.send(Ok(chunk)).is_err() {
                        break Ok(()); // the tar reader is done
                    }
                }
                Err(err) => {
                    let message = format!("decompressing the layer: {err}");
                    let _ = chunks.send(Err(std::io::Error::other(message.clone())));
                    break Err(message);
                }
            }
        }
    };
    // Hash the rest too (tar padding, or what follows a decoding error): a corrupt blob is
    // reported by its digest.
    let drained = std::io::copy(&mut hashing, &mut std::io::sink());
    verify(digest, &hashing.hasher.finalize())?;
    drained.context("reading the layer")?;
    decoded.map_err(anyhow::Error::msg)
}

/// Fills `buf` unless the stream ends first.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// Reads what the decoder thread sends.
struct ChannelReader {
    chunks: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    current: Vec<u8>,
    offset: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.offset == self.current.len() {
            match self.chunks.recv() {
                Ok(chunk) => {
                    self.current = chunk?;
                    self.offset = 0;
                }
                Err(mpsc::RecvError) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.offset);
        buf[..n].copy_from_slice(&self.current[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

/// Applies one uncompressed tar layer to `rootfs`.
pub fn apply_tar(reader: impl Read, rootfs: &Path) -> Result<()> {
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
    Ok(())
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

    /// A layer of raw entries `(name, type, link target)`: raw, because `set_path` refuses
    /// the `..` names these tests are about.
    fn layer(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut layer = tar::Builder::new(Vec::new());
        for (name, kind, link) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(0);
            header.set_mode(0o755);
            header.set_uid(0);
            header.set_gid(0);
            header.set_entry_type(*kind);
            header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            header.set_cksum();
            layer.append(&header, std::io::empty()).unwrap();
        }
        layer.into_inner().unwrap()
    }

    fn file(name: &str) -> Vec<u8> {
        layer(&[(name, tar::EntryType::Regular, "")])
    }

    #[test]
    fn whiteouts_cannot_name_the_parent() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        std::fs::write(dir.path().join("precious"), b"x").unwrap();
        std::fs::write(rootfs.join("gone"), b"x").unwrap();
        assert!(apply_tar(file(".wh..").as_slice(), &rootfs).is_err());
        assert!(apply_tar(file(".wh.").as_slice(), &rootfs).is_err());
        assert!(dir.path().join("precious").exists() && rootfs.exists());
        apply_tar(file(".wh.gone").as_slice(), &rootfs).unwrap();
        assert!(!rootfs.join("gone").exists());
        assert!(apply_tar(file("../escape").as_slice(), &rootfs).is_err());
        assert!(!dir.path().join("escape").exists());
    }

    #[test]
    fn opaque_directories_hide_lower_layers() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc/sub")).unwrap();
        std::fs::write(dir.path().join("etc/old"), b"x").unwrap();
        std::fs::write(dir.path().join("keep"), b"x").unwrap();
        apply_tar(
            layer(&[
                ("etc/.wh..wh..opq", tar::EntryType::Regular, ""),
                ("etc/new", tar::EntryType::Regular, ""),
            ])
            .as_slice(),
            dir.path(),
        )
        .unwrap();
        assert!(!dir.path().join("etc/old").exists() && !dir.path().join("etc/sub").exists());
        assert!(dir.path().join("etc/new").exists() && dir.path().join("keep").exists());
    }

    #[test]
    fn writes_through_planted_symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let planted = layer(&[
            ("evil", tar::EntryType::Symlink, outside.to_str().unwrap()),
            ("evil/pwned", tar::EntryType::Regular, ""),
        ]);
        let err = apply_tar(planted.as_slice(), &rootfs).unwrap_err();
        assert!(format!("{err:#}").contains("is a symlink"), "{err:#}");
        assert!(!outside.join("pwned").exists());
        // A hard link whose target lies behind the planted symlink is refused too.
        let linked = layer(&[("copy", tar::EntryType::Link, "evil/secret")]);
        assert!(apply_tar(linked.as_slice(), &rootfs).is_err());
    }

    #[test]
    fn hard_links_within_the_rootfs_work() {
        let dir = tempfile::tempdir().unwrap();
        apply_tar(
            layer(&[
                ("a", tar::EntryType::Regular, ""),
                ("b", tar::EntryType::Link, "a"),
            ])
            .as_slice(),
            dir.path(),
        )
        .unwrap();
        use std::os::unix::fs::MetadataExt;
        let a = dir.path().join("a").metadata().unwrap();
        assert_eq!(a.ino(), dir.path().join("b").metadata().unwrap().ino());
    }

    #[test]
    fn media_types() {
        use Compression::*;
        let of = |t| Compression::of_media_type(t).unwrap();
        assert_eq!(of("application/vnd.oci.image.layer.v1.tar+gzip"), Gzip);
        assert_eq!(of("application/vnd.oci.image.layer.v1.tar+zstd"), Zstd);
        assert_eq!(
            of("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Gzip
        );
        assert_eq!(of("application/vnd.oci.image.layer.v1.tar"), None);
        assert!(Compression::of_media_type("application/x-rar").is_err());
    }
}
