//! `kill`: any signal the kernel accepts, as runc's `kill` takes it (a number — real-time
//! signals and 0 included — or a name), sent by us rather than through libcontainer, whose
//! `kill` knows only signals 1–31 and marks the container stopped whatever happened.
//!
//! On a created container a signal whose default action ends a process ends the waiting init
//! (runtime-spec PR #875): as PID 1 of its namespace, with no handler yet, it would ignore the
//! signal, so it gets SIGKILL, and the container is `stopped` — never `running` before
//! `start`, and a plain `delete` then works.

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libcgroups::common::{CgroupManager, FreezerState};
use libcontainer::container::{Container, ContainerStatus};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::Runtime;

/// A signal as runc reads one: a number from 0 to SIGRTMAX, a name with or without `SIG` (any
/// case), or `RTMIN+n` / `RTMAX-n`.
pub(crate) fn parse_signal(text: &str) -> Result<i32> {
    let max = libc::SIGRTMAX();
    let unknown = || format!("unknown signal {text:?}");
    if let Ok(number) = text.parse::<i32>() {
        if (0..=max).contains(&number) {
            return Ok(number);
        }
        bail!("{}: signals are 0 to {max}", unknown());
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let realtime = |base: i32, offset: Option<&str>, sign: i32| -> Option<i32> {
        let offset = offset.map_or(Some(0), |n| n.parse::<i32>().ok())?;
        let number = base + sign * offset;
        (libc::SIGRTMIN()..=max).contains(&number).then_some(number)
    };
    let number = match name.split_once(['+', '-']) {
        _ if name == "RTMIN" => realtime(libc::SIGRTMIN(), None, 1),
        _ if name == "RTMAX" => realtime(max, None, 1),
        Some(("RTMIN", n)) if name.contains('+') => realtime(libc::SIGRTMIN(), Some(n), 1),
        Some(("RTMAX", n)) if name.contains('-') => realtime(max, Some(n), -1),
        _ => Signal::from_str(&format!("SIG{name}"))
            .ok()
            .map(|s| s as i32),
    };
    number.with_context(unknown)
}

/// Whether the signal's default action ends the process (terminate or core dump).
fn terminates(signal: i32) -> bool {
    const IGNORED_OR_STOPPING: [Signal; 8] = [
        Signal::SIGCHLD,
        Signal::SIGCONT,
        Signal::SIGSTOP,
        Signal::SIGTSTP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGURG,
        Signal::SIGWINCH,
    ];
    signal != 0 && !IGNORED_OR_STOPPING.iter().any(|s| *s as i32 == signal)
}

impl Runtime {
    /// Sends `signal` (a number from [`parse_signal`]) to the container's init, or with `all`
    /// to every process in its cgroup (also once it is stopped: processes may outlive the init).
    pub(crate) fn kill(&self, id: &str, signal: i32, all: bool) -> Result<()> {
        let _lock = self.lock(id)?;
        let (mut container, init) = self.load_with_init(id)?;
        let status = container.status();
        match status {
            ContainerStatus::Created | ContainerStatus::Running | ContainerStatus::Paused => {}
            ContainerStatus::Stopped if all => {}
            ContainerStatus::Stopped => {
                bail!("cannot kill container {id:?}: container not running")
            }
            other => bail!("cannot kill container {id:?} in status {other}"),
        }
        let ends_created = status == ContainerStatus::Created && terminates(signal);
        let signal = if ends_created { libc::SIGKILL } else { signal };
        if all {
            self.signal_cgroup(&container, id, signal, status == ContainerStatus::Paused)?;
        } else {
            let init = init
                .as_ref()
                .with_context(|| format!("container {id:?} has no init process"))?;
            init.signal(signal)
                .with_context(|| format!("signalling container {id:?} (pid {})", init.pid))?;
        }
        if ends_created {
            if let Some(init) = &init {
                wait_gone(init.pid);
            }
            container
                .set_status(ContainerStatus::Stopped)
                .save()
                .with_context(|| format!("saving the state of container {id:?}"))?;
        } else if status == ContainerStatus::Paused && signal == libc::SIGKILL {
            // A frozen process does not die until thawed (cgroup v1), as runc does.
            let _ = container.resume();
        }
        Ok(())
    }

    /// Signals every process of the container's own cgroup, frozen meanwhile so none forks
    /// past the list (a paused container stays frozen).
    fn signal_cgroup(
        &self,
        container: &Container,
        id: &str,
        signal: i32,
        paused: bool,
    ) -> Result<()> {
        let manager = self.cgroup_manager(container, id)?;
        if !paused {
            if let Err(err) = manager.freeze(FreezerState::Frozen) {
                log::warn!("freezing container {id:?} before signalling it: {err}");
            }
        }
        let pids = manager.get_all_pids();
        if let Ok(pids) = &pids {
            for pid in pids {
                // SAFETY: kill(2) with a plain number (nix's enum stops at 31); the cgroup is
                // frozen, so the pids cannot be reused meanwhile.
                unsafe { libc::kill(pid.as_raw(), signal) };
            }
        }
        if !paused {
            let _ = manager.freeze(FreezerState::Thawed);
        }
        pids.map(|_| ())
            .with_context(|| format!("listing the processes of container {id:?}"))
    }
}

/// Waits (at most a second) until `pid` is gone or a zombie, so `state` right after says
/// `stopped`.
fn wait_gone(pid: Pid) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if super::init::running_since(pid).is_none() {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_as_runc_reads_them() {
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("0").unwrap(), 0);
        assert_eq!(parse_signal("40").unwrap(), 40);
        assert_eq!(parse_signal("TERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("sigkill").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), libc::SIGUSR1);
        assert_eq!(parse_signal("RTMIN+2").unwrap(), libc::SIGRTMIN() + 2);
        assert_eq!(parse_signal("SIGRTMAX-1").unwrap(), libc::SIGRTMAX() - 1);
        for bad in ["-1", "65", "BOGUS", "RTMIN+99", ""] {
            assert!(parse_signal(bad).is_err(), "{bad:?}");
        }
        assert!(terminates(libc::SIGTERM) && terminates(40));
        assert!(!terminates(0) && !terminates(libc::SIGCHLD) && !terminates(libc::SIGSTOP));
    }
}
