//! Protection of the runtime binary against being overwritten from inside a container
//! (CVE-2019-5736: a container makes the runtime execute `/proc/self/exe` inside it, then writes
//! to that file through `/proc/<pid>/exe`).
//!
//! Before a command creates container processes, the runtime re-executes itself through a
//! private, detached, read-only overlayfs whose lower layer is the binary's directory (runc
//! 1.2's approach): every runtime process that enters a container then has an `exe` on which
//! any write fails with EROFS, and no path leads to that mount. Where overlayfs is missing, it
//! falls back to a sealed memfd copy of the binary. The overlay costs a mount and an exec; the
//! copy costs ~6 ms more with our binary size (docs/security.md, "Binary protection"). A runtime
//! that already runs from such an overlay skips the re-exec (4–6 ms of CPU each): installed
//! read-only by `hack/install.sh`'s mount unit. `bootstrap-supervisor run` protects itself the
//! same way, once per boot: its launcher's runtime processes are forks of it
//! (supervisor/execute/launcher.rs).

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use anyhow::{Context, Result};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use rustix::fs::MemfdFlags;
use rustix::mount::{self, FsMountFlags, FsOpenFlags, MountAttrFlags};

const SEALS: SealFlag = SealFlag::F_SEAL_SEAL
    .union(SealFlag::F_SEAL_SHRINK)
    .union(SealFlag::F_SEAL_GROW)
    .union(SealFlag::F_SEAL_WRITE);
const OVERLAYFS_SUPER_MAGIC: libc::c_long = 0x794c_7630;

/// Set in the environment of our own re-exec (and removed by [`take_reexec_mark`]).
const REEXEC_MARK: &str = "_BOOTSTRAP_RUNC_REEXECUTED";

/// Returns if this process already runs from a protected binary; otherwise re-executes from
/// one and does not return. `empty_dir` is an empty directory owned by the runtime (overlayfs
/// without an upper layer needs two lower layers).
pub(crate) fn ensure_sealed(empty_dir: &Path) -> Result<()> {
    let exe = File::open("/proc/self/exe").context("opening /proc/self/exe")?;
    if is_protected(&exe) {
        return Ok(());
    }
    let exe_path = std::fs::read_link("/proc/self/exe").context("reading /proc/self/exe")?;
    let protected = match read_only_overlay_copy(&exe_path, empty_dir) {
        Ok(fd) => fd,
        Err(err) => {
            log::debug!(
                "no overlayfs for the runtime binary ({err:#}); copying it into a sealed memfd"
            );
            sealed_memfd_copy(&exe)?
        }
    };
    let mut env = c_env()?;
    env.push(CString::new(format!("{REEXEC_MARK}=1"))?);
    let err = nix::unistd::fexecve(protected.as_raw_fd(), &c_args()?, &env).unwrap_err();
    Err(err).context("re-executing the runtime from its protected copy")
}

/// Whether [`ensure_sealed`] re-executed this process; the mark is removed from the
/// environment, so that nothing this process starts inherits it. Call it while the process is
/// single-threaded.
pub(crate) fn take_reexec_mark() -> bool {
    let marked = std::env::var_os(REEXEC_MARK).is_some();
    std::env::remove_var(REEXEC_MARK);
    marked
}

/// Names this process after its `argv[0]` (`bootstrap-runc`, or `runc` as the shim calls it)
/// when it was executed by the path `/proc/self/fd/N` (the supervisor's protected copy; older
/// kernels name an `fexecve`, our re-exec, the same way), which the kernel names `N`: `ps`,
/// `top` and the journal's `_COMM` then show the runtime, not a number. Best effort; any other
/// name is kept.
pub fn restore_name() {
    // Not nix's get_name: it hands the kernel an immutable buffer, which the optimizer may
    // then read as still zeroed.
    let mut comm = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes, NUL included, into the buffer.
    if unsafe { libc::prctl(libc::PR_GET_NAME, comm.as_mut_ptr()) } != 0 {
        return;
    }
    let len = comm.iter().position(|b| *b == 0).unwrap_or(comm.len());
    if len == 0 || !comm[..len].iter().all(u8::is_ascii_digit) {
        return;
    }
    let Some(arg0) = std::env::args_os().next() else {
        return;
    };
    let Some(base) = Path::new(&arg0).file_name() else {
        return;
    };
    // The kernel keeps 15 bytes.
    let name: Vec<u8> = base.as_bytes().iter().copied().take(15).collect();
    if let Ok(name) = CString::new(name) {
        let _ = nix::sys::prctl::set_name(&name);
    }
}

/// `exe` cannot be written through any mount: a sealed memfd, or a file on an overlayfs
/// without an upper layer (the kernel keeps its superblock read-only and refuses to remount it
/// read-write), such as `hack/install.sh`'s mount unit makes of `lib/bootstrap-runc/` and
/// [`ensure_sealed`] makes detached. A read-only mount of a writable
/// filesystem, an overlay with an upper layer included, is not protected: another mount of
/// the same superblock, or a remount, writes the file.
fn is_protected(exe: &File) -> bool {
    if fcntl(exe.as_raw_fd(), FcntlArg::F_GET_SEALS)
        .is_ok_and(|seals| SealFlag::from_bits_truncate(seals).contains(SEALS))
    {
        return true;
    }
    let on_overlay = nix::sys::statfs::fstatfs(exe)
        .is_ok_and(|fs| fs.filesystem_type().0 as libc::c_long == OVERLAYFS_SUPER_MAGIC);
    on_overlay && lower_layers_only(exe).unwrap_or(false)
}

/// Whether the overlay mount holding `file` has no `upperdir`: its mount id from
/// `/proc/self/fdinfo`, its super options from that line of `/proc/self/mountinfo`. A mount
/// missing there is detached (a re-exec of ours, the runtime's or the supervisor's): only a process with
/// CAP_SYS_ADMIN could make it and hand it over, and ours have no upper layer, so it counts
/// when read-only.
fn lower_layers_only(file: &File) -> Result<bool> {
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", file.as_raw_fd()))?;
    let id = fdinfo
        .lines()
        .find_map(|line| line.strip_prefix("mnt_id:"))
        .context("no mnt_id in fdinfo")?
        .trim();
    // Lossily: a mount point that is not UTF-8 (any container can make one in the mount area)
    // must not fail the check.
    let mountinfo = String::from_utf8_lossy(&std::fs::read("/proc/self/mountinfo")?).into_owned();
    match mountinfo
        .lines()
        .find(|line| line.split(' ').next() == Some(id))
    {
        Some(line) => {
            let mount = procfs::process::MountInfo::from_line(line)?;
            Ok(mount.fs_type == "overlay" && !mount.super_options.contains_key("upperdir"))
        }
        None => Ok(nix::sys::statvfs::fstatvfs(file)
            .is_ok_and(|vfs| vfs.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))),
    }
}

/// An `O_PATH` fd of `binary`, seen through a new detached read-only overlay mount.
fn read_only_overlay_copy(binary: &Path, empty_dir: &Path) -> Result<OwnedFd> {
    let dir = binary.parent().context("binary has no directory")?;
    let name = binary.file_name().context("binary has no name")?;
    let fs = mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).context("fsopen overlay")?;
    let lower = [
        dir.as_os_str().as_bytes(),
        b":",
        empty_dir.as_os_str().as_bytes(),
    ]
    .concat();
    mount::fsconfig_set_string(&fs, "lowerdir", OsStr::from_bytes(&lower))
        .context("overlay lowerdir")?;
    mount::fsconfig_create(&fs).context("creating the overlay")?;
    let attrs = MountAttrFlags::MOUNT_ATTR_RDONLY
        | MountAttrFlags::MOUNT_ATTR_NOSUID
        | MountAttrFlags::MOUNT_ATTR_NODEV;
    let mount =
        mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs).context("fsmount overlay")?;
    rustix::fs::openat(
        &mount,
        name,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .context("opening the binary in the overlay")
}

fn sealed_memfd_copy(exe: &File) -> Result<OwnedFd> {
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    // MFD_EXEC is needed where `vm.memfd_noexec` is set; older kernels reject it.
    let copy = rustix::fs::memfd_create("bootstrap-runc", flags | MemfdFlags::EXEC)
        .or_else(|_| rustix::fs::memfd_create("bootstrap-runc", flags))
        .context("creating a memfd for the runtime copy")?;
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
    Ok(copy)
}

fn c_args() -> Result<Vec<CString>> {
    std::env::args_os()
        .map(|a| CString::new(a.into_vec()))
        .collect::<Result<_, _>>()
        .context("argument with a NUL byte")
}

fn c_env() -> Result<Vec<CString>> {
    std::env::vars_os()
        .map(|(k, v)| CString::new([k.as_bytes(), b"=", v.as_bytes()].concat()))
        .collect::<Result<_, _>>()
        .context("environment with a NUL byte")
}
