//! What is left of a container's `create`. libcontainer forks an intermediate and an init from
//! the `create` process; when `create` is SIGKILLed midway they run on as orphans: the
//! intermediate may be making the container's cgroup meanwhile (a `delete --force` that
//! removed it before then leaves it behind, and the id cannot be created again), and an init
//! not yet in the cgroup can wait on its sync socket for ever (libcontainer sets no parent
//! death signal), out of reach of the cgroup kill.
//!
//! `create` takes an `flock` on `<derived dir>/creating` before libcontainer forks. An flock
//! belongs to the open file, which every forked process shares and the init closes when it
//! execs the container's program (`O_CLOEXEC`): the lock is free exactly when no process of
//! the create is left, whoever was killed, and the processes that hold the file are those.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use rustix::process::{PidfdFlags, Signal};

use crate::locks;

const FILE: &str = "creating";

/// How long `delete` waits for the processes it killed to end.
const WAIT: Duration = Duration::from_secs(5);

/// `create`'s hold on the lock; the forked processes keep theirs after it is dropped.
pub(crate) struct Creating {
    _lock: Flock<File>,
}

impl Creating {
    /// Takes the lock in `derived_dir`, which `create` has just made (so nothing else holds it).
    /// Its descriptor is close-on-exec, so the container's program never holds it, even when it
    /// falls in the range runc's `--preserve-fds` keeps (libcontainer only adds close-on-exec
    /// past that range, it never clears it).
    pub(crate) fn hold(derived_dir: &Path) -> Result<Creating> {
        let lock = locks::flock(
            &derived_dir.join(FILE),
            File::options()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW),
            FlockArg::LockExclusiveNonblock,
        )?;
        Ok(Creating { _lock: lock })
    }
}

/// Ends what is left of the create that made `derived_dir`: every process still holding its
/// lock file is killed (through a pidfd, once it is seen to hold the file) and waited for.
/// False when none was left (no lock file: the create never got as far as libcontainer). An
/// error names the lock when one still runs after [`WAIT`].
pub(crate) fn end_leftovers(derived_dir: &Path) -> Result<bool> {
    let path = derived_dir.join(FILE);
    let mut file = match File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err).with_context(|| format!("opening lock {}", path.display())),
    };
    let deadline = Instant::now() + WAIT;
    let mut killed = false;
    // From 0.1 ms, doubling to 5 ms: a killed process, or an init between `start` and its
    // exec, lets go within a millisecond, and `delete` right after `start` is common.
    let mut pause = Duration::from_micros(100);
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(_) => return Ok(killed),
            Err((back, Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                file = back;
                if !killed {
                    kill_holders(&file);
                    killed = true;
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(5));
            }
            Err((_, Errno::EWOULDBLOCK)) => bail!(
                "a process of the create that made {} still runs {} s after SIGKILL (it holds {})",
                derived_dir.display(),
                WAIT.as_secs(),
                path.display()
            ),
            Err((_, errno)) => {
                return Err(errno).with_context(|| format!("locking {}", path.display()))
            }
        }
    }
}

/// SIGKILL to every process with `lock` open. The file is 0600 in the runtime's own state and
/// never reaches a container's program (close-on-exec), so whoever holds it is a process of
/// the create. Each is checked to hold it after its pidfd is open: a reused pid is left alone.
fn kill_holders(lock: &File) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = lock.metadata() else {
        return;
    };
    let holds = |pid: &str| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| {
                std::fs::metadata(fd.path())
                    .is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino())
            })
    };
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return;
    };
    let me = std::process::id().to_string();
    for entry in processes.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if pid == me || !holds(pid) {
            continue;
        }
        let Some(pidfd) = pid
            .parse()
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .and_then(|raw| rustix::process::pidfd_open(raw, PidfdFlags::empty()).ok())
        else {
            continue;
        };
        if holds(pid) {
            log::warn!("pid {pid} is left of a killed create: killing it");
            let _ = rustix::process::pidfd_send_signal(&pidfd, Signal::KILL);
        }
    }
}
