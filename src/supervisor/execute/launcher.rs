//! The launcher: `bootstrap-runc run` for each of the supervisor's containers, without
//! executing a binary per container (the exec, the dynamic loader and the argument parsing
//! were ~2.5–3 ms of CPU per container; docs/performance.md, "Run and the supervisor against
//! runc").
//!
//! libcontainer clones its container processes without exec. A clone of a multi-threaded
//! process can copy a lock that another thread holds (malloc's, stdio's, the logger's) into a
//! child that never sees it released, so the supervisor forks the launcher while it is still
//! single-threaded, and the launcher, single-threaded for its life, forks one runtime process
//! per container. A runtime process does what `bootstrap-runc --root <run-dir>/runtime --log
//! <run-dir>/logs/<name>.runtime.json --log-format json run --bundle <bundle> <id>` does, by the
//! same library call: the same policy, the same state root (`bootstrap-runc` sees, kills and
//! deletes its containers), the same JSON log (where the supervisor tells a runtime error from
//! a failed container), the same exit code. Its stdin is /dev/null; its stdout and stderr are
//! the pipes the supervisor streams to the container's log.
//!
//! Runtime processes enter containers, so the supervisor's executable is the one to protect
//! (CVE-2019-5736): `bootstrap-supervisor run` runs from a protected binary before it forks the
//! launcher (runtime/sealed_exe.rs).
//!
//! Protocol, over a `SOCK_SEQPACKET` pair: the supervisor sends one [`Request`] per container
//! (JSON, with the write ends of its stdout and stderr pipes as `SCM_RIGHTS`); the launcher
//! answers with a [`Response`] when that runtime process ends. When the supervisor closes its
//! end (or dies) the launcher exits; runtime processes still running go on, as executed
//! runtimes would.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    recvmsg, sendmsg, shutdown, socketpair, AddressFamily, ControlMessage, ControlMessageOwned,
    MsgFlags, Shutdown, SockFlag, SockType,
};
use nix::unistd::{dup2, fork, ForkResult, Pid};
use serde::{Deserialize, Serialize};

use crate::cli;
use crate::locks::lock;
use crate::logging::{self, LogFormat};
use crate::policy::file::Overrides;
use crate::runtime::create::CreateRequest;
use crate::runtime::state_root::StateRoot;
use crate::runtime::{attach_wait, Runtime};

/// The largest message either side sends (a request carries two paths and an id).
const MAX_MESSAGE: usize = 64 * 1024;

/// Signals that end or stop the supervisor's process group from a terminal: the launcher
/// ignores them (the supervisor decides when it ends); runtime processes get the defaults back.
const IGNORED: [Signal; 4] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
];

/// What every runtime process of this boot runs with: `bootstrap-runc`'s global flags.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// `--root`: `<run-dir>/runtime`.
    pub root: PathBuf,
    /// `--host-root`, `--host-mount-area`, `--shared-dirs`.
    pub overrides: Overrides,
    /// Compiled seccomp filters: `<state-dir>/seccomp`, so that a boot does not compile the
    /// profile again (runtime/seccomp_filter.rs), where `bootstrap-runc` would use its root's.
    pub seccomp_cache: PathBuf,
}

impl Config {
    /// The runtime library on this state root, as `bootstrap-runc` with these flags has it.
    pub(crate) fn runtime(&self) -> Result<Runtime> {
        Ok(Runtime {
            root: StateRoot::open(&self.root)?,
            systemd_cgroup: false,
            policy_overrides: self.overrides.clone(),
            seccomp_cache: self.seccomp_cache.clone(),
        })
    }
}

/// One container to run: `run --bundle <bundle> <id>`, logging to `log`.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    token: u64,
    id: String,
    bundle: PathBuf,
    /// bootstrap-runc's `root_area`: the operator's bundle, for a bundle source.
    root_area: Option<PathBuf>,
    log: PathBuf,
}

/// How a request ended: the runtime process's wait status (as waitpid(2) gives it), or why it
/// could not be started.
#[derive(Debug, Serialize, Deserialize)]
struct Response {
    token: u64,
    status: Option<i32>,
    error: Option<String>,
}

/// How a runtime process ended (its wait status), or why it did not start.
pub(crate) type Launched = Result<ExitStatus, NotStarted>;

/// Why the launcher started no runtime process for a request: its own words, which reach the
/// supervisor over the socket as text.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct NotStarted(String);

/// The supervisor's end: sends requests, and a reader thread hands each response to its waiter.
pub(crate) struct Launcher {
    socket: OwnedFd,
    pid: Mutex<Option<Pid>>,
    next_token: AtomicU64,
    waiting: Arc<Mutex<HashMap<u64, mpsc::Sender<Launched>>>>,
    reader: Mutex<Option<JoinHandle<()>>>,
}

impl Launcher {
    /// Forks the launcher. Errors: this process has more than one thread (the launcher must be
    /// forked first), or the socket pair or the fork failed.
    pub(crate) fn start(config: Config) -> Result<Launcher> {
        let threads = procfs::process::Process::myself()
            .and_then(|me| me.stat())
            .map(|stat| stat.num_threads)
            .context("counting the supervisor's threads")?;
        if threads != 1 {
            bail!("the launcher must be forked before any thread starts ({threads} running)");
        }
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .context("creating the launcher's socket pair")?;
        // Nothing buffered may be written twice, by both processes.
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        let supervisor = nix::unistd::getpid();
        // SAFETY: this process is single-threaded (checked above).
        match unsafe { fork() }.context("forking the launcher")? {
            ForkResult::Child => {
                drop(ours);
                // Dies with the supervisor, without starting what it had asked for: its runtime
                // processes go on, as executed runtimes would.
                // SAFETY: PR_SET_PDEATHSIG with a signal number.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
                if nix::unistd::getppid() != supervisor {
                    // SAFETY: the supervisor is gone already.
                    unsafe { libc::_exit(0) }
                }
                serve(theirs, &config)
            }
            ForkResult::Parent { child } => {
                drop(theirs);
                let waiting = Arc::new(Mutex::new(HashMap::new()));
                let reader = {
                    let socket = ours.try_clone().context("sharing the launcher's socket")?;
                    let waiting = waiting.clone();
                    std::thread::spawn(move || read_responses(&socket, &waiting))
                };
                Ok(Launcher {
                    socket: ours,
                    pid: Mutex::new(Some(child)),
                    next_token: AtomicU64::new(1),
                    waiting,
                    reader: Mutex::new(Some(reader)),
                })
            }
        }
    }

    /// Starts container `id` from `bundle` in a new runtime process, its runtime log at `log`,
    /// its stdout and stderr to `stdout` and `stderr`. Returns where the runtime process's exit
    /// status arrives: `Err` with the reason when it could not be started, a closed channel when
    /// the launcher ended first.
    pub(crate) fn run(
        &self,
        id: &str,
        bundle: &Path,
        root_area: Option<&Path>,
        log: &Path,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> Result<mpsc::Receiver<Launched>> {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let request = serde_json::to_vec(&Request {
            token,
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            root_area: root_area.map(Path::to_path_buf),
            log: log.to_path_buf(),
        })?;
        let (tx, rx) = mpsc::channel();
        lock(&self.waiting).insert(token, tx);
        let fds = [stdout.as_raw_fd(), stderr.as_raw_fd()];
        let sent = sendmsg::<()>(
            self.socket.as_raw_fd(),
            &[IoSlice::new(&request)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        );
        if let Err(err) = sent {
            lock(&self.waiting).remove(&token);
            return Err(err).context("asking the launcher to run the container");
        }
        Ok(rx)
    }

    /// Ends the launcher: it exits once it has read every request, and is reaped here. Runtime
    /// processes still running are not waited for.
    pub(crate) fn stop(&self) {
        let Some(pid) = lock(&self.pid).take() else {
            return;
        };
        let _ = shutdown(self.socket.as_raw_fd(), Shutdown::Write);
        let _ = nix::sys::wait::waitpid(pid, None);
        if let Some(reader) = lock(&self.reader).take() {
            let _ = reader.join();
        }
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The supervisor's reader: each response to its waiter, until the launcher ends (then every
/// waiter's channel closes).
fn read_responses(socket: &OwnedFd, waiting: &Mutex<HashMap<u64, mpsc::Sender<Launched>>>) {
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let n = match nix::sys::socket::recv(socket.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let Ok(response) = serde_json::from_slice::<Response>(&buf[..n]) else {
            log::warn!("the launcher sent an unreadable response");
            continue;
        };
        if let Some(tx) = lock(waiting).remove(&response.token) {
            let _ = tx.send(match (response.status, response.error) {
                (Some(status), _) => Ok(ExitStatus::from_raw(status)),
                (None, error) => Err(NotStarted(error.unwrap_or_default())),
            });
        }
    }
    lock(waiting).clear();
}

/// The launcher's life: requests in, runtime processes forked, their ends reported.
fn serve(socket: OwnedFd, config: &Config) -> ! {
    let code = match serve_requests(&socket, config) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("bootstrap-supervisor: launcher: {err:#}");
            1
        }
    };
    // SAFETY: ends the launcher without the supervisor's exit handlers.
    unsafe { libc::_exit(code) }
}

fn serve_requests(socket: &OwnedFd, config: &Config) -> Result<()> {
    close_fds_except(&[socket.as_raw_fd()]);
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    for sig in IGNORED {
        // SAFETY: ignoring a signal installs no handler.
        unsafe { signal::sigaction(sig, &ignore) }.with_context(|| format!("ignoring {sig}"))?;
    }
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    chld.thread_block().context("blocking SIGCHLD")?;
    let children = SignalFd::with_flags(&chld, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("creating a signalfd for SIGCHLD")?;
    let mut running: HashMap<Pid, u64> = HashMap::new();
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let mut fds = [
            PollFd::new(children.as_fd(), PollFlags::POLLIN),
            PollFd::new(socket.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(err) => return Err(err).context("waiting for requests"),
        }
        let requested = fds[1].any().unwrap_or(false);
        while let Ok(Some(_)) = children.read_signal() {}
        reap(socket, &mut running);
        // When the supervisor has closed its end, nobody reads responses any more: runtime
        // processes still running go on alone.
        if requested && !accept(socket, config, &mut running, &mut buf)? {
            return Ok(());
        }
    }
}

/// Reports every runtime process that ended.
fn reap(socket: &OwnedFd, running: &mut HashMap<Pid, u64>) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid(2) with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        if let Some(token) = running.remove(&Pid::from_raw(pid)) {
            respond(
                socket,
                &Response {
                    token,
                    status: Some(status),
                    error: None,
                },
            );
        }
    }
}

fn respond(socket: &OwnedFd, response: &Response) {
    if let Ok(bytes) = serde_json::to_vec(response) {
        let _ = nix::sys::socket::send(socket.as_raw_fd(), &bytes, MsgFlags::empty());
    }
}

/// Reads one request into `buf` (at least [`MAX_MESSAGE`] bytes) and forks its runtime process;
/// false when the supervisor closed its end.
/// A request that cannot be carried out is answered with the reason; only a broken socket
/// ends the launcher.
fn accept(
    socket: &OwnedFd,
    config: &Config,
    running: &mut HashMap<Pid, u64>,
    buf: &mut [u8],
) -> Result<bool> {
    let mut cmsg = nix::cmsg_space!([RawFd; 2]);
    let (n, fds) = {
        let mut iov = [IoSliceMut::new(buf)];
        let msg = match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => msg,
            Err(nix::errno::Errno::EINTR) => return Ok(true),
            Err(err) => return Err(err).context("reading a request"),
        };
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs().into_iter().flatten() {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                // SAFETY: the kernel just installed these descriptors for us.
                fds.extend(
                    received
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        (msg.bytes, fds)
    };
    if n == 0 {
        return Ok(false);
    }
    let request: Request = match serde_json::from_slice(&buf[..n]) {
        Ok(request) => request,
        Err(err) => {
            // Without its token nobody can be answered; the supervisor never sends one.
            eprintln!("bootstrap-supervisor: launcher: an unreadable request: {err}");
            return Ok(true);
        }
    };
    let refuse = |error: String| {
        respond(
            socket,
            &Response {
                token: request.token,
                status: None,
                error: Some(error),
            },
        )
    };
    let Ok([stdout, stderr]) = <[OwnedFd; 2]>::try_from(fds) else {
        refuse("the request did not carry stdout and stderr".to_string());
        return Ok(true);
    };
    if running.is_empty() {
        // The first of a wave of containers: its cgroup attach would wait for an RCU grace
        // period (runtime/attach_wait.rs), the others' attaches follow it closely enough not
        // to. One early wait for all, not two forks per container.
        attach_wait::start();
    }
    // SAFETY: the launcher is single-threaded.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => runtime_process(config, &request, stdout, stderr),
        Ok(ForkResult::Parent { child }) => {
            running.insert(child, request.token);
        }
        Err(err) => refuse(format!("forking a runtime process: {err}")),
    }
    Ok(true)
}

/// A runtime process: `bootstrap-runc run` of the request, then its exit code.
fn runtime_process(config: &Config, request: &Request, stdout: OwnedFd, stderr: OwnedFd) -> ! {
    let code = match become_runtime(stdout, stderr, &request.log) {
        Ok(()) => {
            let result = config.runtime().and_then(|runtime| {
                runtime.run(&CreateRequest {
                    id: &request.id,
                    bundle: &request.bundle,
                    pid_file: None,
                    console_socket: None,
                    no_pivot: false,
                    preserve_fds: 0,
                    detach: false,
                    root_area: request.root_area.as_deref(),
                })
            });
            cli::finish(result, true)
        }
        // Into its JSON log if that opens now, for the supervisor to read a runtime error with
        // its reason (container.rs reads an unreadable log as one too); else on stderr only
        // (the logger inherited from the supervisor would say it there a second time).
        Err(err) => match logging::init(Some(&request.log), LogFormat::Json, false) {
            Ok(()) => cli::finish(Err(err), true),
            Err(_) => {
                let _ = writeln!(std::io::stderr(), "bootstrap-runc: {err:#}");
                1
            }
        },
    };
    log::logger().flush();
    let _ = std::io::stdout().flush();
    // SAFETY: ends the runtime process without the supervisor's exit handlers.
    unsafe { libc::_exit(i32::from(code)) }
}

/// Turns a fresh fork of the launcher into a runtime process as the supervisor used to execute
/// one: stdio, signal dispositions and mask, no other descriptor, its name, its log.
fn become_runtime(stdout: OwnedFd, stderr: OwnedFd, log: &Path) -> Result<()> {
    let null = std::fs::File::open("/dev/null").context("opening /dev/null")?;
    for (fd, target) in [
        (null.as_raw_fd(), 0),
        (stdout.as_raw_fd(), 1),
        (stderr.as_raw_fd(), 2),
    ] {
        dup2(fd, target).context("setting up stdio")?;
    }
    drop((null, stdout, stderr));
    close_fds_except(&[]);
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in IGNORED {
        // SAFETY: restoring a default disposition.
        unsafe { signal::sigaction(sig, &default) }.with_context(|| format!("resetting {sig}"))?;
    }
    signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .context("unblocking signals")?;
    // ps, top and the journal's _COMM name it for what it does.
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"bootstrap-runc".as_ptr()) };
    logging::init(Some(log), LogFormat::Json, false)
}

/// Closes every descriptor from 3 on but `keep`: a fork has copies of all of its parent's,
/// and one of them could hold a lock (flock) or a pipe's write end open. `close_range(2)` over
/// the gaps between the kept ones; where it is refused (a kernel before 5.9, a seccomp filter
/// that does not know it), each descriptor /proc lists.
fn close_fds_except(keep: &[RawFd]) {
    let mut kept: Vec<libc::c_uint> = keep
        .iter()
        .filter_map(|&fd| libc::c_uint::try_from(fd).ok())
        .filter(|&fd| fd > 2)
        .collect();
    kept.sort_unstable();
    let mut first: libc::c_uint = 3;
    for fd in kept.into_iter().chain([libc::c_uint::MAX]) {
        if fd > first {
            // Raw: rustix has no close_range.
            // SAFETY: closes descriptors nothing in this freshly forked process uses.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_close_range,
                    libc::c_long::from(first),
                    libc::c_long::from(fd - 1),
                    0 as libc::c_long,
                )
            };
            if rc != 0 {
                return close_listed_fds_except(keep);
            }
        }
        first = fd.saturating_add(1);
    }
}

fn close_listed_fds_except(keep: &[RawFd]) {
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect();
    for fd in open {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: closing a descriptor nothing in this process uses any more (the directory's
            // own was closed with its iterator; closing it again fails harmlessly).
            unsafe { libc::close(fd) };
        }
    }
}
