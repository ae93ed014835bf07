//! Whether a process of a container's `create` still runs. libcontainer forks an intermediate
//! and an init from the `create` process; when `create` is SIGKILLed midway they run on until
//! their sync socket fails, and the intermediate may be making the container's cgroup in the
//! meantime: a `delete --force` that removed the cgroup before then leaves it behind, and the
//! id cannot be created again.
//!
//! `create` takes an `flock` on `<derived dir>/creating` before libcontainer forks. An flock
//! belongs to the open file, which every forked process shares and the init closes when it
//! execs the container's program (`O_CLOEXEC`): the lock is free exactly when no process of
//! the create is left, whoever was killed.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::locks;
use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

const FILE: &str = "creating";

/// How long `delete` waits for an orphaned intermediate or init to end once its `create` is
/// gone: each ends at its next sync-socket call, within milliseconds on an idle host.
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

/// Waits until no process of the create that made `derived_dir` is left; false when none was
/// there to wait for (no lock file: the create never got as far as libcontainer). An error,
/// naming the lock, when one still runs after [`WAIT`].
pub(crate) fn wait_ended(derived_dir: &Path) -> Result<bool> {
    let path = derived_dir.join(FILE);
    let mut file = match File::options()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(err).with_context(|| format!("opening lock {}", path.display())),
    };
    let deadline = Instant::now() + WAIT;
    let mut waited = false;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(_) => return Ok(waited),
            Err((back, Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                file = back;
                waited = true;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((_, Errno::EWOULDBLOCK)) => bail!(
                "a process of the create that made {} still runs after {} s (it holds the lock {})",
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
