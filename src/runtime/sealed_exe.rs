//! Protection of the runtime binary against being overwritten from inside a container
//! (CVE-2019-5736): before a command creates container processes, the runtime re-executes
//! itself from a sealed in-memory copy, so `/proc/<pid>/exe` of every runtime process that
//! enters a container is an immutable memfd, never the binary on disk.
//!
//! We chose the sealed copy over runc 1.2's read-only overlayfs because it also rules out
//! page-cache poisoning of the on-disk binary (runc issue #5272); its cost is one in-kernel copy
//! of the binary (`sendfile`), which a small stripped binary keeps low (see README).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;

use anyhow::{Context, Result};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::MemFdCreateFlag;

const SEALS: SealFlag = SealFlag::F_SEAL_SEAL
    .union(SealFlag::F_SEAL_SHRINK)
    .union(SealFlag::F_SEAL_GROW)
    .union(SealFlag::F_SEAL_WRITE);
/// `MFD_EXEC`: needed where `vm.memfd_noexec` is set; older kernels reject it.
const MFD_EXEC: libc::c_uint = 0x10;

/// Returns if this process already runs from a sealed copy; otherwise re-executes from one
/// and does not return.
pub fn ensure_sealed() -> Result<()> {
    let exe = File::open("/proc/self/exe").context("opening /proc/self/exe")?;
    if is_sealed(&exe) {
        return Ok(());
    }
    let copy = memfd()?;
    let size = exe.metadata().context("reading /proc/self/exe")?.len() as usize;
    let mut copied = 0;
    while copied < size {
        let n = nix::sys::sendfile::sendfile(copy.as_fd(), exe.as_fd(), None, size - copied)
            .context("copying the runtime binary into memory")?;
        if n == 0 {
            break;
        }
        copied += n;
    }
    fcntl(copy.as_raw_fd(), FcntlArg::F_ADD_SEALS(SEALS)).context("sealing the runtime copy")?;
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.into_vec()))
        .collect::<Result<_, _>>()
        .context("argument with a NUL byte")?;
    let env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut pair = k.into_vec();
            pair.push(b'=');
            pair.extend(v.into_vec());
            CString::new(pair)
        })
        .collect::<Result<_, _>>()
        .context("environment with a NUL byte")?;
    let err = nix::unistd::fexecve(copy.as_raw_fd(), &args, &env).unwrap_err();
    Err(err).context("re-executing the runtime from its sealed copy")
}

fn is_sealed(exe: &File) -> bool {
    fcntl(exe.as_raw_fd(), FcntlArg::F_GET_SEALS)
        .map(|seals| SealFlag::from_bits_truncate(seals).contains(SEALS))
        .unwrap_or(false)
}

fn memfd() -> Result<OwnedFd> {
    let name = c"bootstrap-runc";
    let flags = MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING;
    // SAFETY: valid name; the kernel returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags.bits() | MFD_EXEC) };
    if fd >= 0 {
        // SAFETY: fresh fd from the kernel.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    nix::sys::memfd::memfd_create(name, flags).context("creating a memfd for the runtime copy")
}
