//! Waiting for a container process in the foreground (`run`, `exec` without `--detach`):
//! signals we receive go to the process, and its end becomes our exit code the way runc reports
//! it (the exit code, or 128+N when killed by signal N).
//!
//! Signals are caught by a handler that writes to a pipe rather than blocked: a blocked mask is
//! inherited by the container's init through clone and exec, a handler is reset by exec. The
//! handler is installed before the container exists, so no SIGCHLD can be missed.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

const FORWARDED: [Signal; 9] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGCONT,
    Signal::SIGWINCH,
];

static PIPE_WRITE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn record_signal(number: libc::c_int) {
    let fd = PIPE_WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = number as u8;
        // SAFETY: write(2) is async-signal-safe; a full pipe just drops the byte.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
}

pub(crate) struct SignalForwarder {
    read: OwnedFd,
    _write: OwnedFd,
}

impl SignalForwarder {
    pub(crate) fn install() -> Result<Self> {
        let (read, write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .context("creating the signal pipe")?;
        PIPE_WRITE_FD.store(write.as_raw_fd(), Ordering::Relaxed);
        let action = SigAction::new(
            SigHandler::Handler(record_signal),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        for sig in FORWARDED.iter().chain([&Signal::SIGCHLD]) {
            // SAFETY: the handler only calls write(2).
            unsafe { signal::sigaction(*sig, &action) }
                .with_context(|| format!("installing a handler for {sig}"))?;
        }
        Ok(SignalForwarder {
            read,
            _write: write,
        })
    }

    /// Forwards signals to `pid` until it ends; returns runc's exit code for it.
    pub(crate) fn wait(&self, pid: Pid) -> Result<i32> {
        loop {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
                Ok(_) => {}
                Err(Errno::ECHILD) => anyhow::bail!("process {pid} is not our child"),
                Err(err) => return Err(err).context("waiting for the container process"),
            }
            let mut fds = [PollFd::new(self.read.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(err) => return Err(err).context("waiting for signals"),
            }
            let mut buf = [0u8; 64];
            while let Ok(n @ 1..) = nix::unistd::read(self.read.as_raw_fd(), &mut buf) {
                for number in &buf[..n] {
                    match Signal::try_from(i32::from(*number)) {
                        Ok(Signal::SIGCHLD) | Err(_) => {}
                        Ok(sig) => {
                            log::debug!("forwarding {sig} to {pid}");
                            let _ = signal::kill(pid, sig);
                        }
                    }
                }
            }
        }
    }
}

impl Drop for SignalForwarder {
    fn drop(&mut self) {
        PIPE_WRITE_FD.store(-1, Ordering::Relaxed);
        let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
        for sig in FORWARDED.iter().chain([&Signal::SIGCHLD]) {
            // SAFETY: restoring the default disposition.
            let _ = unsafe { signal::sigaction(*sig, &default) };
        }
    }
}
