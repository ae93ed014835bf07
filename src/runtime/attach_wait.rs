//! The wait of the first cgroup attach, started early.
//!
//! A write to a `cgroup.procs` file takes the kernel's `cgroup_threadgroup_rwsem` for writing,
//! and the first writer after a quiet spell waits for an RCU grace period (`rcu_sync_enter`;
//! not where cgroup2 is mounted with `favordynmods`): 8–16 ms on our 2-core machine, a third of
//! a `run`. A writer within a grace period of the previous one, or while one is under way,
//! waits for no new one. libcontainer's intermediate process makes that write when it attaches
//! itself to the container's cgroup, ~9 ms after the runtime starts; runc pays the same wait.
//!
//! [`start`] has a grandchild make a no-op write as the runtime starts — moving itself into the
//! cgroup it is already in — so that the grace period passes while the runtime re-executes and
//! prepares the bundle. Nothing depends on it: when no cgroup of ours is found or the write
//! fails, libcontainer's write simply waits as it would have.

use libcgroups::common::DEFAULT_CGROUP_ROOT;
use std::ffi::CString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use nix::sys::statfs::{statfs, FsType, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult};

/// Starts, in the background, the grace period that the next cgroup attach would wait for;
/// returns after two forks (~0.3 ms). The caller must be single-threaded (fork).
pub(crate) fn start() {
    let Some(procs) = procfs::process::Process::myself()
        .ok()
        .and_then(|me| cgroup_procs(&me))
        .and_then(|procs| CString::new(procs.into_os_string().into_vec()).ok())
    else {
        return;
    };
    // SAFETY: the caller is single-threaded; the children make only raw syscalls, then _exit.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => {
            let _ = waitpid(child, None);
        }
        Ok(ForkResult::Child) => {
            // The grandchild is an orphan at once: no runtime process must reap it later (`run`
            // lives as long as its container).
            // SAFETY: as above, a single-threaded process.
            if let Ok(ForkResult::Child) = unsafe { fork() } {
                write_self(&procs);
            }
            // SAFETY: _exit ends this child without running the parent's exit handlers.
            unsafe { libc::_exit(0) }
        }
        Err(err) => log::debug!("not starting the cgroup attach's wait early: fork: {err}"),
    }
}

/// Writes "0" (the writing process) to `procs`, a `cgroup.procs` of the cgroup it is in.
fn write_self(procs: &CString) {
    // SAFETY: a NUL-terminated path; the fd is ours to close.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd >= 0 {
            libc::write(fd, c"0".as_ptr().cast(), 1);
            libc::close(fd);
        }
    }
}

/// The `cgroup.procs` of `process`'s cgroup, in the unified hierarchy if it is mounted, else
/// in the first cgroup v1 hierarchy found at systemd's layout (`/sys/fs/cgroup/<controllers>`).
fn cgroup_procs(process: &procfs::process::Process) -> Option<PathBuf> {
    let mut cgroups = process.cgroups().ok()?.0;
    cgroups.sort_by_key(|cgroup| cgroup.hierarchy);
    let root = Path::new(DEFAULT_CGROUP_ROOT);
    cgroups.iter().find_map(|cgroup| {
        let relative = Path::new(&cgroup.pathname).strip_prefix("/").ok()?;
        let (mounts, magic): (Vec<PathBuf>, FsType) = if cgroup.hierarchy == 0 {
            (
                vec![root.join("unified"), root.to_path_buf()],
                CGROUP2_SUPER_MAGIC,
            )
        } else {
            let name = cgroup.controllers.join(",");
            let name = name.strip_prefix("name=").unwrap_or(&name);
            (vec![root.join(name)], CGROUP_SUPER_MAGIC)
        };
        mounts.into_iter().find_map(|mount| {
            let dir = mount.join(relative);
            let on_cgroupfs = statfs(&dir).is_ok_and(|fs| fs.filesystem_type() == magic);
            let procs = dir.join("cgroup.procs");
            (on_cgroupfs && procs.exists()).then_some(procs)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use procfs::process::Process;

    /// A process in a cgroup of its own, both removed on drop.
    struct Confined {
        sleeper: std::process::Child,
        cgroup: PathBuf,
    }

    impl Drop for Confined {
        fn drop(&mut self) {
            let _ = self.sleeper.kill();
            let _ = self.sleeper.wait();
            let _ = std::fs::remove_dir(&self.cgroup);
        }
    }

    /// The write must leave the writer where it is: the file found is that of the cgroup the
    /// process is in (here a new child of ours, so that the hierarchy's root would not do).
    #[test]
    fn the_cgroup_found_is_the_process_own() {
        let ours = cgroup_procs(&Process::myself().unwrap()).expect("our cgroup.procs");
        let cgroup = ours
            .parent()
            .unwrap()
            .join(format!("attach-wait-test-{}", std::process::id()));
        let confined = Confined {
            sleeper: std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap(),
            cgroup,
        };
        std::fs::create_dir(&confined.cgroup).unwrap();
        let pid = confined.sleeper.id();
        std::fs::write(confined.cgroup.join("cgroup.procs"), pid.to_string()).unwrap();
        let found = cgroup_procs(&Process::new(pid as i32).unwrap());
        assert_eq!(found, Some(confined.cgroup.join("cgroup.procs")));
    }
}
