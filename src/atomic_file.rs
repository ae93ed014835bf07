//! File replacement by rename: a reader sees the old file or the new one, never a torn one.
//! `write` also survives a crash (fsync); `replace` is for files regenerated at every boot, on
//! the hot path, where the fsyncs would cost boot time for nothing.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// Writes `contents` to a temporary file beside `path`, syncs it, renames it over `path` and
/// syncs the directory, so the rename itself survives a crash.
pub(crate) fn write(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    swap_in(path, contents, mode, true)
}

/// As `write`, without the fsyncs: atomic for readers, not durable across a crash.
pub(crate) fn replace(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    swap_in(path, contents, mode, false)
}

fn swap_in(path: &Path, contents: &[u8], mode: u32, durable: bool) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let (tmp, mut file) = create_temp(dir, &name.to_string_lossy(), mode)?;
    let result = (|| {
        // The mode exactly, whatever the umask.
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .and_then(|()| file.write_all(contents))
            .and_then(|()| if durable { file.sync_all() } else { Ok(()) })
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        if !durable {
            return Ok(());
        }
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing directory {}", dir.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A new temporary file beside the target, never opened through a symlink: the directory may
/// be writable by others (a pid file's), and threads of one process write side by side.
fn create_temp(dir: &Path, name: &str, mode: u32) -> Result<(PathBuf, File)> {
    loop {
        let tmp = dir.join(format!(
            ".{name}.tmp-{}-{}",
            std::process::id(),
            UNIQUE.fetch_add(1, Ordering::Relaxed)
        ));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(mode)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(err).with_context(|| format!("creating {}", tmp.display())),
        }
    }
}

/// The JSON record at `path`, as [`replace`] writes it: `None` when there is none. Errors: it
/// cannot be read or parsed (never trusted half-read).
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(text) => serde_json::from_slice(&text)
            .map(Some)
            .with_context(|| format!("parsing {}", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write(&path, b"old", 0o600).unwrap();
        write(&path, b"new contents", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new contents");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn never_writes_through_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        for n in 0..2000 {
            let planted = dir
                .path()
                .join(format!(".f.tmp-{}-{n}", std::process::id()));
            let _ = std::os::unix::fs::symlink(&victim, planted);
        }
        write(&dir.path().join("f"), b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), b"new");
    }

    #[test]
    fn failure_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write(&dir.path().join("missing/f"), b"x", 0o600).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
