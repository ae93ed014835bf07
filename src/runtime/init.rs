//! The container's init as this runtime recorded it at create: its pid and its start time, in
//! `init.json` beside the derived config (ours, never libcontainer's `state.json`, which a
//! container able to write it could point at a host process: `kill`, `delete --force` and
//! `exec` act on the pid there).
//!
//! Before `exec`, `kill`, `delete`, `ps`, `pause`, `resume` or `update` acts on the init it is
//! found again: a pidfd is opened on the recorded pid first, then the process's start time and
//! its membership of the container's recorded cgroup are checked. A pid reused by then fails the
//! check, and from the pidfd on a signal cannot reach another process. An init that fails it is
//! gone: the container is stopped, whatever `state.json` says.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use anyhow::{Context, Result};
use nix::unistd::Pid;
use rustix::process::PidfdFlags;
use serde::{Deserialize, Serialize};

use super::cgroup::Owned;
use crate::atomic_file;

const RECORD: &str = "init.json";

/// One instance of a container: its init's pid and start time. A container deleted and made
/// again under the same id is another instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    pid: i32,
    /// `/proc/<pid>/stat`'s starttime: clock ticks after boot.
    start_time: u64,
}

/// Records the freshly created init `pid` in `dir` (the derived bundle), atomically.
pub(crate) fn record(dir: &Path, pid: Pid) -> Result<()> {
    let start_time = running_since(pid)
        .with_context(|| format!("the container's init {pid} ended while it was created"))?;
    let record = Record {
        pid: pid.as_raw(),
        start_time,
    };
    atomic_file::replace(&dir.join(RECORD), &serde_json::to_vec(&record)?, 0o600)
}

/// Whether `dir` holds an init record: without one, the create was cut short before the
/// container could run anything, and `state.json`'s pid is still libcontainer's own.
pub(crate) fn recorded(dir: &Path) -> bool {
    dir.join(RECORD).exists()
}

/// The instance recorded in `dir`: `None` when there is no record (no container, or a create
/// cut short). Errors: the record is unreadable.
pub(crate) fn instance(dir: &Path) -> Result<Option<Record>> {
    atomic_file::read_json(&dir.join(RECORD))
}

/// The container's init, found again and held by a pidfd.
#[derive(Debug)]
pub(crate) struct Init {
    pub pid: Pid,
    pidfd: OwnedFd,
}

impl Init {
    /// The init recorded in `dir`, if it still lives and is what was recorded: same start
    /// time, in the container's cgroup `owned`. `None` when no init was recorded (a create cut
    /// short) or it is gone; an unreadable record is an error, never trusted.
    pub(crate) fn find(dir: &Path, owned: Option<&Owned>) -> Result<Option<Init>> {
        let Some(record) = instance(dir)? else {
            return Ok(None);
        };
        let pid = Pid::from_raw(record.pid);
        let Some(pidfd) = rustix::process::Pid::from_raw(record.pid)
            .and_then(|pid| rustix::process::pidfd_open(pid, PidfdFlags::empty()).ok())
        else {
            return Ok(None); // ESRCH: gone (reaped)
        };
        // Checked after the pidfd: if these match now, the pidfd holds the recorded process.
        let same_process = running_since(pid) == Some(record.start_time);
        let in_cgroup = owned.is_none_or(|owned| owned.holds(pid));
        if !same_process || !in_cgroup {
            log::warn!(
                "pid {pid} is no longer the container's init (start time or cgroup differ): the init is gone"
            );
            return Ok(None);
        }
        Ok(Some(Init { pid, pidfd }))
    }

    /// Sends `signal` (any number the kernel takes, 0 included) to the init through its pidfd.
    pub(crate) fn signal(&self, signal: i32) -> std::io::Result<()> {
        // Raw: rustix's pidfd_send_signal takes no signal 0 (the liveness probe).
        // SAFETY: a pidfd we own; a null siginfo is allowed.
        let sent = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if sent < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The start time of `pid` (`/proc/<pid>/stat`'s starttime) while it runs; `None` once it is
/// gone or a zombie.
pub(super) fn running_since(pid: Pid) -> Option<u64> {
    let stat = procfs::process::Process::new(pid.as_raw())
        .and_then(|p| p.stat())
        .ok()?;
    (!matches!(stat.state, 'Z' | 'X')).then_some(stat.starttime)
}
