//! Seccomp filters compiled once per state root instead of once per container.
//!
//! libcontainer 0.7.0 compiles `linux.seccomp` with libseccomp inside every container's init:
//! for the default profile (~370 rules over three x86 ABIs) the largest single cost of
//! `create` (docs/policy.md, "The container's environment"). The compiled program depends only on
//! the profile, the libseccomp library and the kernel, so `create` takes the profile out of the
//! config libcontainer reads and hands the init the compiled program instead, through our
//! [`Executor`], whose `validate` libcontainer calls right after its own seccomp step and
//! before the init reports ready: the filter is in force from the same point on.
//!
//! The program is compiled by libcontainer's own `initialize_seccomp` in a forked child that
//! we trace, and read back with `PTRACE_SECCOMP_GET_FILTER`: it is exactly what libcontainer
//! would have loaded. Programs are kept in the runtime's cache, `<root>/.seccomp/<key>` (the
//! supervisor's runtime processes use `<state-dir>/seccomp/<key>`, kept across boots), the
//! key a sha256 of the profile, the libseccomp version, the kernel release and our version.
//! Every file ends with a sha256 of its contents; one that does not check out is compiled
//! again. Where a profile cannot be compiled this way (a notify action, no ptrace, a profile
//! libseccomp refuses), it stays in the config and libcontainer applies it as before, errors
//! included.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use libcontainer::oci_spec::runtime::{LinuxSeccomp, LinuxSeccompFilterFlag, Spec};
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{ExecutorError, ExecutorValidationError};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{self, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use sha2::{Digest, Sha256};

use crate::atomic_file;
use crate::locks;

/// `PTRACE_SECCOMP_GET_FILTER` (linux/ptrace.h; needs CONFIG_CHECKPOINT_RESTORE).
const PTRACE_SECCOMP_GET_FILTER: libc::c_uint = 0x420c;
/// `BPF_MAXINSNS` (linux/bpf_common.h): the kernel refuses longer classic programs.
const MAX_INSTRUCTIONS: usize = 4096;
const INSTRUCTION_BYTES: usize = std::mem::size_of::<libc::sock_filter>();
const DIGEST_BYTES: usize = 32;

/// A compiled seccomp program and the `seccomp(2)` flags to load it with.
#[derive(Clone)]
pub(crate) struct Filter {
    program: Vec<libc::sock_filter>,
    /// `SECCOMP_FILTER_FLAG_*`.
    flags: u32,
}

impl PartialEq for Filter {
    fn eq(&self, other: &Self) -> bool {
        self.to_bytes() == other.to_bytes()
    }
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Filter({} instructions, flags {:#x})",
            self.program.len(),
            self.flags
        )
    }
}

impl Filter {
    /// Takes the profile out of `spec` and returns it compiled, from `cache_dir` or compiled
    /// now and kept there; `None`, with `spec` unchanged, when libcontainer must apply it.
    /// The caller is single-threaded (as libcontainer's clone without exec requires too).
    pub(crate) fn take(spec: &mut Spec, cache_dir: &Path) -> Result<Option<Filter>> {
        let Some(seccomp) = spec.linux().as_ref().and_then(|l| l.seccomp().clone()) else {
            return Ok(None);
        };
        let Some(flags) = load_flags(&seccomp) else {
            return Ok(None);
        };
        let key = cache_key(&seccomp)?;
        let path = cache_dir.join(&key);
        let filter = match Filter::read(&path) {
            Ok(filter) => filter,
            Err(_) => {
                // Containers started together wait for one compile instead of each running
                // their own.
                let _lock = lock(&cache_dir.join(format!("{key}.lock")))?;
                match Filter::read(&path) {
                    Ok(filter) => filter,
                    Err(err) => {
                        if path.exists() {
                            log::warn!("compiling the seccomp profile again: {err:#}");
                        }
                        match compile(&seccomp) {
                            Ok(program) => {
                                let filter = Filter { program, flags };
                                filter.write(&path)?;
                                filter
                            }
                            Err(err) => {
                                log::debug!(
                                    "libcontainer compiles this seccomp profile itself: {err:#}"
                                );
                                return Ok(None);
                            }
                        }
                    }
                }
            }
        };
        if let Some(linux) = spec.linux_mut() {
            linux.set_seccomp(None);
        }
        Ok(Some(filter))
    }

    /// Reads a program written by [`Filter::write`], refusing one whose digest, length or
    /// shape is wrong (a torn or tampered file is never loaded).
    pub(crate) fn read(path: &Path) -> Result<Filter> {
        let mut bytes = Vec::new();
        File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .and_then(|file| {
                file.take(((MAX_INSTRUCTIONS * INSTRUCTION_BYTES + 4 + DIGEST_BYTES) + 1) as u64)
                    .read_to_end(&mut bytes)
            })
            .with_context(|| format!("reading seccomp filter {}", path.display()))?;
        Filter::from_bytes(&bytes)
            .with_context(|| format!("seccomp filter {} is not valid", path.display()))
    }

    /// Writes the program atomically (mode 0600), followed by its digest.
    pub(crate) fn write(&self, path: &Path) -> Result<()> {
        let mut bytes = self.to_bytes();
        bytes.extend_from_slice(&Sha256::digest(&bytes));
        atomic_file::replace(path, &bytes, 0o600)
            .with_context(|| format!("writing seccomp filter {}", path.display()))
    }

    /// Flags, then the instructions, native-endian as the kernel takes them.
    fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = self.flags.to_ne_bytes().to_vec();
        for insn in &self.program {
            bytes.extend_from_slice(&insn.code.to_ne_bytes());
            bytes.extend_from_slice(&[insn.jt, insn.jf]);
            bytes.extend_from_slice(&insn.k.to_ne_bytes());
        }
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> Result<Filter> {
        let Some((body, digest)) = bytes.split_last_chunk::<DIGEST_BYTES>() else {
            bail!("it is {} bytes long", bytes.len());
        };
        ensure!(
            Sha256::digest(body).as_slice() == digest,
            "its digest does not match"
        );
        let (flags, program) = body.split_first_chunk::<4>().context("it has no flags")?;
        ensure!(
            !program.is_empty()
                && program.len() % INSTRUCTION_BYTES == 0
                && program.len() / INSTRUCTION_BYTES <= MAX_INSTRUCTIONS,
            "its program is {} bytes long",
            program.len()
        );
        let program = program
            .chunks_exact(INSTRUCTION_BYTES)
            .map(|i| libc::sock_filter {
                code: u16::from_ne_bytes([i[0], i[1]]),
                jt: i[2],
                jf: i[3],
                k: u32::from_ne_bytes([i[4], i[5], i[6], i[7]]),
            })
            .collect();
        Ok(Filter {
            program,
            flags: u32::from_ne_bytes(*flags),
        })
    }

    /// Installs the filter on the calling thread (the container's process, which has
    /// `no_new_privs` set by the policy, or CAP_SYS_ADMIN).
    fn load(&self) -> std::io::Result<()> {
        let prog = libc::sock_fprog {
            len: self.program.len() as libc::c_ushort,
            filter: self.program.as_ptr().cast_mut(),
        };
        // Raw: rustix has no seccomp(SECCOMP_SET_MODE_FILTER).
        // SAFETY: `prog` points at `len` valid instructions that outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags as libc::c_ulong,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// An exclusive lock on `path`, released on drop (before libcontainer clones: an flock is
/// shared by every process that inherits its file).
fn lock(path: &Path) -> Result<Flock<File>> {
    locks::flock(
        path,
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW),
        FlockArg::LockExclusive,
    )
}

/// The `seccomp(2)` flags libseccomp would load the profile with; `None` for a profile whose
/// load needs more than the program (a notify listener).
fn load_flags(seccomp: &LinuxSeccomp) -> Option<u32> {
    if libcontainer::seccomp::is_notify(seccomp) {
        return None;
    }
    let mut flags = 0;
    for flag in seccomp.flags().iter().flatten() {
        flags |= match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW
            }
            // Only meaningful with a listener.
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => return None,
        } as u32;
    }
    Some(flags)
}

/// What the compiled program depends on, hashed: the profile, the libseccomp that compiles it,
/// the kernel (libseccomp adapts to its API level) and this build.
fn cache_key(seccomp: &LinuxSeccomp) -> Result<String> {
    let libseccomp = libseccomp::ScmpVersion::current().context("reading libseccomp's version")?;
    let kernel = nix::sys::utsname::uname().context("reading the kernel release")?;
    let mut hash = Sha256::new();
    hash.update(serde_json::to_vec(seccomp).context("serialising the seccomp profile")?);
    hash.update(format!(
        "\0{}.{}.{}\0",
        libseccomp.major, libseccomp.minor, libseccomp.micro
    ));
    hash.update(kernel.release().as_encoded_bytes());
    hash.update(concat!("\0", env!("CARGO_PKG_VERSION")));
    Ok(hex(&hash.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compiles the profile with libcontainer in a child that loads it, stops, and has its filter
/// read by us through ptrace; the child is killed whatever happens.
fn compile(seccomp: &LinuxSeccomp) -> Result<Vec<libc::sock_filter>> {
    // SAFETY: the caller is single-threaded; the child only compiles, loads and stops.
    match unsafe { nix::unistd::fork() }.context("forking to compile the seccomp profile")? {
        ForkResult::Child => {
            // SAFETY: PTRACE_TRACEME takes no pointers.
            let traced = unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) } == 0;
            let code = if !traced {
                1
            } else if libcontainer::seccomp::initialize_seccomp(seccomp).is_err() {
                2
            } else {
                // A ptrace stop; never returns unless the profile denies kill(2).
                let _ = signal::raise(Signal::SIGSTOP);
                3
            };
            // SAFETY: leaves without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            let read = read_filter(child);
            let _ = signal::kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
            read
        }
    }
}

fn read_filter(child: Pid) -> Result<Vec<libc::sock_filter>> {
    match waitpid(child, None).context("waiting for the seccomp compiler")? {
        WaitStatus::Stopped(_, Signal::SIGSTOP) => {}
        other => bail!("the seccomp compiler ended with {other:?}"),
    }
    let get = |buffer: *mut libc::sock_filter| {
        // SAFETY: the child is in a ptrace stop; `buffer` is null or holds the count returned.
        let rc = unsafe {
            libc::ptrace(
                PTRACE_SECCOMP_GET_FILTER,
                child.as_raw(),
                0 as libc::c_long,
                buffer,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error()).context("PTRACE_SECCOMP_GET_FILTER");
        }
        Ok(rc as usize)
    };
    let count = get(std::ptr::null_mut())?;
    ensure!(
        (1..=MAX_INSTRUCTIONS).contains(&count),
        "the filter has {count} instructions"
    );
    let mut program = vec![
        libc::sock_filter {
            code: 0,
            jt: 0,
            jf: 0,
            k: 0
        };
        count
    ];
    ensure!(
        get(program.as_mut_ptr())? == count,
        "the filter changed size"
    );
    Ok(program)
}

/// libcontainer's default executor, loading our compiled filter first (see the module doc),
/// and giving the container's process SIGPIPE's default action, as runc's processes have:
/// Rust's runtime ignores SIGPIPE in the runtime, and an ignored signal stays ignored across
/// clone and exec (a `cat | head` in the container would see EPIPE instead of dying quietly).
#[derive(Clone, Default)]
pub(crate) struct Executor {
    pub filter: Option<Filter>,
}

impl libcontainer::workload::Executor for Executor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        // SAFETY: restoring a default disposition installs no handler.
        unsafe { signal::signal(Signal::SIGPIPE, signal::SigHandler::SigDfl) }
            .map_err(|err| ExecutorError::Other(format!("resetting SIGPIPE: {err}")))?;
        let executed = DefaultExecutor {}.exec(spec);
        if let Err(err) = &executed {
            report_exec_failure(spec, err);
        }
        executed
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)?;
        if let Some(filter) = &self.filter {
            filter.load().map_err(|err| {
                ExecutorValidationError::ArgValidationError(format!(
                    "loading the seccomp filter: {err}"
                ))
            })?;
        }
        Ok(())
    }
}

/// Prints on the init's stderr why the container's process could not start. After `start`,
/// libcontainer's init reports this only to the log and exits 255; runc prints why (E2BIG's
/// "argument list too long", a missing binary). The init's stderr is the container's: the
/// caller of `run` sees it, containerd logs it.
fn report_exec_failure(spec: &Spec, err: &ExecutorError) {
    let program = spec
        .process()
        .as_ref()
        .and_then(|p| p.args().as_ref())
        .and_then(|args| args.first().cloned())
        .unwrap_or_default();
    let mut reason = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        reason = format!("{reason}: {cause}");
        source = cause.source();
    }
    // libcontainer's reason quotes every argument: a huge one need not be shown whole.
    const SHOWN: usize = 4096;
    if reason.len() > SHOWN {
        let cut = (0..=SHOWN)
            .rev()
            .find(|&i| reason.is_char_boundary(i))
            .unwrap_or(0);
        reason = format!("{}...", &reason[..cut]);
    }
    let _ = writeln!(
        std::io::stderr(),
        "bootstrap-runc: starting the container process {program:?}: {reason}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Filter {
        Filter {
            program: vec![libc::sock_filter {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ALLOW,
            }],
            flags: libc::SECCOMP_FILTER_FLAG_LOG as u32,
        }
    }

    #[test]
    fn a_written_filter_reads_back_and_a_changed_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        sample().write(&path).unwrap();
        assert_eq!(Filter::read(&path).unwrap(), sample());

        let good = std::fs::read(&path).unwrap();
        for (what, bytes) in [
            ("truncated", good[..good.len() - 1].to_vec()),
            ("a flipped bit", {
                let mut b = good.clone();
                b[5] ^= 1;
                b
            }),
            ("empty", Vec::new()),
            ("digest only", good[good.len() - DIGEST_BYTES..].to_vec()),
        ] {
            std::fs::write(&path, &bytes).unwrap();
            assert!(Filter::read(&path).is_err(), "{what} was trusted");
        }
    }
}
