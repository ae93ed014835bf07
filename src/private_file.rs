//! Files that decide what runs as root or what is trusted (settings, `registries.toml`,
//! credentials): only root may have written them, as Bottlerocket's own settings are root's.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Refuses `path`'s file unless it belongs to root (or to this process's user, so tests and
/// `plan` run unprivileged) and no group or other may write it. Errors name the file, its
/// owner or its mode.
pub(crate) fn check(path: &Path, meta: &Metadata) -> Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        bail!(
            "{} is owned by uid {}: it must belong to root",
            path.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "{} is writable by group or others (mode {:o}): refusing to trust it",
            path.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

/// Creates `dir` and its missing parents, each new one root's alone (0700): state, data and
/// caches that containers are made from. An existing directory is left as it is. Errors name
/// the directory.
pub(crate) fn create_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// [`check`] on the file at `path`, symlinks followed.
pub(crate) fn check_path(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    check(path, &meta)
}

/// Reads the text of the file at `path` (symlinks followed) after [`check`] on the opened file,
/// so what is read is what was checked; `None` when there is no such file. Returns the text and
/// the file's metadata. Errors: a symlink to nothing (a file meant to be there is missing), not
/// a regular file (a FIFO is refused, never waited on), refused by [`check`], unreadable, not
/// UTF-8.
pub(crate) fn read(path: &Path) -> Result<Option<(String, Metadata)>> {
    // O_NONBLOCK: opening a FIFO would otherwise wait for a writer; it changes nothing for the
    // regular files read here.
    let opened = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
    let mut file = match opened {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            if std::fs::symlink_metadata(path).is_ok() {
                bail!(
                    "{} is a symlink to a file that does not exist",
                    path.display()
                );
            }
            return Ok(None);
        }
        Err(err) => return Err(err).with_context(|| format!("opening {}", path.display())),
    };
    let meta = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    check(path, &meta)?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(Some((text, meta)))
}
