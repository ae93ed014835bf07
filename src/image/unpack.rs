//! Image layers applied to a root filesystem: OCI whiteouts and opaque directories, hard links,
//! symlinks, permissions, ownership and xattrs. No entry may land outside the rootfs: `..` and
//! absolute paths are refused, and so is any entry whose existing parents include a symlink
//! (planted by an earlier layer, it could point anywhere on the host).
//!
//! Device nodes and setuid files are unpacked as containerd would: a bootstrap container is
//! trusted root code, and only escapes are errors.

use std::cell::Cell;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::budget::Charge;
use super::digest::verify;

/// How a layer blob is compressed, from its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// OCI (`...tar`, `...tar+gzip`, `...tar+zstd`) and Docker (`...tar.gzip`) layer types.
    pub(crate) fn of_media_type(media_type: &str) -> Result<Compression> {
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

/// Applies the layer blob at `blob`, which must hash to `digest`, to `rootfs`, telling `charge`
/// what it writes before writing it. Entries are unpacked while streaming; the caller throws
/// the rootfs away if this fails. Reading, hashing and decompressing run on a thread of their
/// own, so they overlap the filesystem work.
pub(crate) fn apply_blob(
    blob: &Path,
    digest: &str,
    compression: Compression,
    rootfs: &Path,
    charge: &Charge,
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
        charge,
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

/// Applies one uncompressed tar layer to `rootfs`. Every entry unpacked is an inode for
/// `charge`, and the file data it reads from the archive (what is written: not a sparse file's
/// holes, nor a size its header merely claims) is charged before it reaches the file.
pub fn apply_tar(reader: impl Read, rootfs: &Path, charge: &Charge) -> Result<()> {
    let metering = Cell::new(false);
    let mut archive = tar::Archive::new(Metered {
        inner: reader,
        charge,
        metering: &metering,
    });
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    for entry in archive.entries().context("reading the layer")? {
        let mut entry = entry.context("reading a layer entry")?;
        let path = entry.path().context("entry path")?.into_owned();
        apply_entry(&mut entry, &path, rootfs, charge, &metering)
            // A refusal reaches us wrapped in the tar crate's I/O error: report it plainly.
            .map_err(|err| charge.refused().map_or(err, anyhow::Error::new))
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

/// Charges what is read while `metering` says so: an entry's data, on its way to the file.
struct Metered<'a, R> {
    inner: R,
    charge: &'a Charge,
    metering: &'a Cell<bool>,
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.metering.get() {
            self.charge.data(n as u64).map_err(std::io::Error::other)?;
        }
        Ok(n)
    }
}

fn apply_entry<R: Read>(
    entry: &mut tar::Entry<R>,
    path: &Path,
    rootfs: &Path,
    charge: &Charge,
    metering: &Cell<bool>,
) -> Result<()> {
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
    charge.entry()?;
    metering.set(true);
    let unpacked = entry.unpack_in(rootfs);
    metering.set(false);
    if !unpacked.context("unpacking")? {
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
    use super::super::budget::{Budget, Limits};
    use super::*;

    /// A charge held to the reserve of `dir`'s filesystem only.
    fn unlimited(dir: &Path) -> Charge {
        Budget::new(Limits::new(u64::MAX)).image(dir).unwrap()
    }

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
        assert!(apply_tar(file(".wh..").as_slice(), &rootfs, &unlimited(&rootfs)).is_err());
        assert!(apply_tar(file(".wh.").as_slice(), &rootfs, &unlimited(&rootfs)).is_err());
        assert!(dir.path().join("precious").exists() && rootfs.exists());
        apply_tar(file(".wh.gone").as_slice(), &rootfs, &unlimited(&rootfs)).unwrap();
        assert!(!rootfs.join("gone").exists());
        assert!(apply_tar(file("../escape").as_slice(), &rootfs, &unlimited(&rootfs)).is_err());
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
            &unlimited(dir.path()),
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
        let err = apply_tar(planted.as_slice(), &rootfs, &unlimited(&rootfs)).unwrap_err();
        assert!(format!("{err:#}").contains("is a symlink"), "{err:#}");
        assert!(!outside.join("pwned").exists());
        // A hard link whose target lies behind the planted symlink is refused too.
        let linked = layer(&[("copy", tar::EntryType::Link, "evil/secret")]);
        assert!(apply_tar(linked.as_slice(), &rootfs, &unlimited(&rootfs)).is_err());
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
            &unlimited(dir.path()),
        )
        .unwrap();
        use std::os::unix::fs::MetadataExt;
        let a = dir.path().join("a").metadata().unwrap();
        assert_eq!(a.ino(), dir.path().join("b").metadata().unwrap().ino());
    }

    /// A layer of one regular file `name` holding `size` bytes of `byte`.
    fn big_file(name: &str, size: u64, byte: u8) -> Vec<u8> {
        let mut layer = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        layer
            .append_data(&mut header, name, std::io::repeat(byte).take(size))
            .unwrap();
        layer.into_inner().unwrap()
    }

    #[test]
    fn the_image_limit_stops_a_file_before_it_is_written_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Budget::new(Limits {
            max_image_bytes: 1 << 20,
            max_image_bytes_name: "--max-image-size 1MiB".into(),
        });
        let charge = budget.image(dir.path()).unwrap();
        apply_tar(
            big_file("small", 1000, b'a').as_slice(),
            dir.path(),
            &charge,
        )
        .unwrap();
        let err = apply_tar(
            big_file("big", 4 << 20, b'b').as_slice(),
            dir.path(),
            &charge,
        )
        .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "entry big: the image's unpacked size passed --max-image-size 1MiB"
        );
        let written = dir.path().join("big").metadata().unwrap().len();
        assert!(written + 1000 <= 1 << 20, "{written} bytes written");
        assert_eq!(charge.written(), 1000 + written);
    }

    /// A GNU sparse file of `real` bytes whose only data is its last `data` bytes.
    fn sparse_file(name: &str, real: u64, data: u64) -> Vec<u8> {
        let mut header = tar::Header::new_gnu();
        header.set_path(name).unwrap();
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::GNUSparse);
        header.set_size(data);
        let gnu = header.as_gnu_mut().unwrap();
        gnu.set_real_size(real);
        gnu.sparse[0].set_offset(real - data);
        gnu.sparse[0].set_length(data);
        header.set_cksum();
        let mut layer = tar::Builder::new(Vec::new());
        layer
            .append(&header, std::io::repeat(b'x').take(data))
            .unwrap();
        layer.into_inner().unwrap()
    }

    #[test]
    fn a_sparse_file_counts_the_data_written_not_its_apparent_size() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let budget = Budget::new(Limits::new(1 << 20));
        let charge = budget.image(dir.path()).unwrap();
        // 64 GiB apparent: more than the limit and than the filesystem.
        let real = 64 << 30;
        apply_tar(
            sparse_file("holes", real, 4096).as_slice(),
            dir.path(),
            &charge,
        )
        .unwrap();
        let unpacked = dir.path().join("holes").metadata().unwrap();
        assert_eq!(unpacked.len(), real);
        assert!(
            unpacked.blocks() * 512 < 1 << 20,
            "{} blocks",
            unpacked.blocks()
        );
        assert_eq!(charge.written(), 4096);
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
