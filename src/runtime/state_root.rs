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
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use std::os::fd::AsRawFd;

use nix::fcntl::{fcntl, FcntlArg};

use crate::private_file;

pub(crate) const DEFAULT_ROOT: &str = "/run/bootstrap-runc";

#[derive(Clone, Debug)]
pub(crate) struct StateRoot {
    path: PathBuf,
}

/// Held for as long as a command works on one container. A POSIX record lock, not flock(2):
/// libcontainer clones the container's processes from ours without exec, and they would
/// inherit an flock (it belongs to the open file) and hold it for the container's lifetime;
/// record locks belong to the process.
pub(crate) struct ContainerLock {
    /// Closed (the lock released) after `drop` ran.
    _file: File,
    path: PathBuf,
    /// The container's state directories: with neither there, the lock file goes on release.
    state: [PathBuf; 2],
}

impl Drop for ContainerLock {
    fn drop(&mut self) {
        if !self.state.iter().any(|dir| dir.exists()) {
            // Still holding the lock: nobody can be between its lock and its check.
            let _ = std::fs::remove_file(&self.path);
        }
    }
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
                return Ok(ContainerLock {
                    _file: file,
                    path,
                    state: [self.container_dir(id), self.derived_dir(id)],
                });
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
