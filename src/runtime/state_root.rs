//! Layout of the state root (`--root`).
//!
//! ```text
//! <root>/<id>/               libcontainer's container directory (state.json, ...)
//! <root>/.bootstrap/<id>/    ours: the derived config.json and bootstrap.json
//! <root>/.locks/<id>         per-container lock, held by every command that reads or writes state;
//!                            unlinked, still held, by the last command when the container has no
//!                            state (a waiter that then gets the lock sees its file is no longer
//!                            the path's, and locks the path afresh)
//! <root>/.empty/             always empty (see sealed_exe)
//! <root>/.seccomp/<key>      compiled seccomp filters, shared by containers (see seccomp_filter)
//! ```
//! Names starting with `.` can never be container ids, so ours never collide with libcontainer's.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use anyhow::{Context, Result};
use nix::fcntl::{fcntl, FcntlArg};

use crate::locks::lock;
use crate::private_file;

pub(crate) const DEFAULT_ROOT: &str = "/run/bootstrap-runc";

#[derive(Clone, Debug)]
pub(crate) struct StateRoot {
    path: PathBuf,
}

/// Held for as long as a command works on one container. A POSIX record lock, not flock(2):
/// libcontainer clones the container's processes from ours without exec, and they would
/// inherit an flock (it belongs to the open file) and hold it for the container's lifetime;
/// record locks belong to the process. So threads of one process (the supervisor's kills and
/// deletes) are kept apart by [`HELD`] first: a record lock would let them all in, and the
/// first to close its copy of the file would release it for all.
pub(crate) struct ContainerLock {
    /// The locked file, closed (the lock released) by `drop`; none until it is locked.
    file: Option<File>,
    path: PathBuf,
    /// The container's state directories: with neither there, the lock file goes on release.
    state: [PathBuf; 2],
}

/// Lock files some thread of this process holds (or is taking), and the wait for one to go.
static HELD: (Mutex<Vec<PathBuf>>, Condvar) = (Mutex::new(Vec::new()), Condvar::new());

impl Drop for ContainerLock {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            if !self.state.iter().any(|dir| dir.exists()) {
                // Still holding the lock: nobody can be between its lock and its check.
                let _ = std::fs::remove_file(&self.path);
            }
            drop(file);
        }
        let (held, gone) = &HELD;
        lock(held).retain(|path| path != &self.path);
        gone.notify_all();
    }
}

/// Waits until no other thread of this process holds `path`'s lock, and marks it this one's.
fn hold_in_process(path: &Path) {
    let (held, gone) = &HELD;
    let mut guard = lock(held);
    while guard.iter().any(|held| held == path) {
        guard = gone
            .wait(guard)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
    }
    guard.push(path.to_path_buf());
}

impl StateRoot {
    /// Opens the state root, creating it (mode 0700) on first use as runc does.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir()
                .context("reading the working directory")?
                .join(path)
        };
        for dir in [
            path.clone(),
            path.join(".bootstrap"),
            path.join(".locks"),
            path.join(".empty"),
            path.join(".seccomp"),
        ] {
            private_file::create_dir(&dir)?;
        }
        Ok(StateRoot { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// An empty directory that stays empty (the binary protection's second overlay layer).
    pub(crate) fn empty_dir(&self) -> PathBuf {
        self.path.join(".empty")
    }

    /// Compiled seccomp filters, by key.
    pub(crate) fn seccomp_dir(&self) -> PathBuf {
        self.path.join(".seccomp")
    }

    /// libcontainer's directory for the container.
    pub(crate) fn container_dir(&self, id: &str) -> PathBuf {
        self.path.join(id)
    }

    /// Our directory for the container: the derived bundle and its metadata.
    pub(crate) fn derived_dir(&self, id: &str) -> PathBuf {
        self.path.join(".bootstrap").join(id)
    }

    /// Takes the container's lock, waiting for other commands on the same container.
    pub(crate) fn lock(&self, id: &str) -> Result<ContainerLock> {
        let path = self.path.join(".locks").join(id);
        hold_in_process(&path);
        // Released (for this process's threads) on every return, by the lock or by this.
        let mut taken = ContainerLock {
            file: None,
            path,
            state: [self.container_dir(id), self.derived_dir(id)],
        };
        let path = taken.path.clone();
        loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .with_context(|| format!("opening lock {}", path.display()))?;
            let whole_file = libc::flock {
                l_type: libc::F_WRLCK as libc::c_short,
                l_whence: libc::SEEK_SET as libc::c_short,
                l_start: 0,
                l_len: 0,
                l_pid: 0,
            };
            fcntl(file.as_raw_fd(), FcntlArg::F_SETLKW(&whole_file))
                .with_context(|| format!("locking {}", path.display()))?;
            // The holder before us may have unlinked the file: then ours locks nothing.
            let held = file
                .metadata()
                .with_context(|| format!("reading lock {}", path.display()))?;
            let current = std::fs::metadata(&path).ok();
            if current.is_some_and(|c| c.dev() == held.dev() && c.ino() == held.ino()) {
                taken.file = Some(file);
                return Ok(taken);
            }
        }
    }

    /// Ids of every container with state here, created or half-created.
    pub(crate) fn ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for dir in [self.path.clone(), self.path.join(".bootstrap")] {
            for entry in std::fs::read_dir(&dir)
                .with_context(|| format!("reading state root {}", dir.display()))?
            {
                let name = entry?.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') && !ids.contains(&name) {
                    ids.push(name);
                }
            }
        }
        ids.sort();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn threads_of_one_process_take_a_containers_lock_in_turn() {
        let dir = tempfile::tempdir().unwrap();
        let root = StateRoot::open(dir.path()).unwrap();
        let first = root.lock("one").unwrap();
        let second_has_it = AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let _second = root.lock("one").unwrap();
                second_has_it.store(true, Ordering::SeqCst);
            });
            std::thread::sleep(Duration::from_millis(100));
            assert!(
                !second_has_it.load(Ordering::SeqCst),
                "a record lock alone lets every thread of its process in"
            );
            // Another container's lock is not held up.
            drop(root.lock("two").unwrap());
            drop(first);
        });
        assert!(second_has_it.load(Ordering::SeqCst));
        // Released for good: the last holder of a container with no state took the file away.
        assert!(!dir.path().join(".locks/one").exists());
    }

    #[test]
    fn a_failed_lock_is_released_in_process() {
        let dir = tempfile::tempdir().unwrap();
        let root = StateRoot::open(dir.path()).unwrap();
        // A lock that cannot be taken: its file cannot be opened for writing.
        std::fs::create_dir(dir.path().join(".locks/bad")).unwrap();
        assert!(root.lock("bad").is_err());
        std::fs::remove_dir(dir.path().join(".locks/bad")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(root.lock("bad").map(drop).is_ok()));
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(true));
    }
}
