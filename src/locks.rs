//! Locks: a mutex taken whatever an earlier holder did, and `flock`s on files, which serialise
//! processes (runtimes on one root, supervisors in one boot, settings edits).

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};

/// `mutex`, locked even when a thread panicked holding it: a panic in the binaries aborts the
/// process (`cli::abort_on_panic`), and every value kept under these mutexes is whole after each
/// statement, so the poison says nothing about the data.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The file `path` opened with `options` and locked as `how` (blocking unless `how` says
/// otherwise), held until dropped. An flock belongs to the open file, so a forked process
/// holds it too until it closes the file. Errors name the path.
pub(crate) fn flock(path: &Path, options: &OpenOptions, how: FlockArg) -> Result<Flock<File>> {
    let file = options
        .open(path)
        .with_context(|| format!("opening lock {}", path.display()))?;
    Flock::lock(file, how)
        .map_err(|(_, errno)| errno)
        .with_context(|| format!("locking {}", path.display()))
}

/// Whether another open file holds an exclusive lock on `path`; false when there is no file.
pub(crate) fn held(path: &Path) -> bool {
    File::open(path).is_ok_and(|file| Flock::lock(file, FlockArg::LockSharedNonblock).is_err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_is_seen_held_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        assert!(!held(&path), "no file, no lock");
        let mut options = OpenOptions::new();
        options.create(true).truncate(false).write(true);
        let lock = flock(&path, &options, FlockArg::LockExclusive).unwrap();
        assert!(held(&path));
        drop(lock);
        assert!(!held(&path));
    }

    #[test]
    fn errors_name_the_lock() {
        let err = flock(
            Path::new("/nonexistent/lock"),
            OpenOptions::new().read(true),
            FlockArg::LockExclusive,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/lock"), "{err:#}");
    }
}
