//! The policy's host mounts, attached by our own code.
//!
//! libcontainer 0.7.0 ignores per-mount propagation, and its `rootfsPropagation=shared` leaks
//! the host-root bind onto the host. So libcontainer never sees these mounts: after it created
//! the container (init waiting for `start`), we clone the host trees in the host's mount
//! namespace with `open_tree`, set read-only and propagation on the detached copies with
//! `mount_setattr`, and `move_mount` them into the container's namespace. A clone of a shared
//! mount joins its peer group, so the mount area propagates both ways; the host root copy is
//! made a slave, so nothing mounted there inside the container reaches the host.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use libcontainer::oci_spec::runtime::Spec;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::unistd::Pid;

use crate::policy::{BOTTLEROCKET_DIR, HOST_ROOT_TARGET};

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTR_RDONLY: u64 = 0x1;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A host tree to attach inside the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostMount {
    pub source: PathBuf,
    /// Absolute path inside the container, under `/.bottlerocket`.
    pub target: PathBuf,
    pub read_only: bool,
    pub shared: bool,
}

/// Takes the mounts at or under `/.bottlerocket/rootfs` (only the policy puts any there) out of
/// the spec handed to libcontainer.
pub fn split(mut spec: Spec) -> (Spec, Vec<HostMount>) {
    let mounts = spec.mounts_mut().take().unwrap_or_default();
    let (ours, theirs): (Vec<_>, Vec<_>) = mounts
        .into_iter()
        .partition(|m| m.destination().starts_with(HOST_ROOT_TARGET));
    spec.set_mounts(Some(theirs));
    let host_mounts = ours
        .into_iter()
        .map(|m| {
            let has = |option: &str| m.options().iter().flatten().any(|o| o == option);
            HostMount {
                source: m.source().clone().unwrap_or_default(),
                target: m.destination().clone(),
                read_only: has("rro"),
                shared: has("rshared"),
            }
        })
        .collect();
    (spec, host_mounts)
}

/// Makes `path` a shared mount point on the host if it is not one, so that mounts made in the
/// container's copy propagate back. Returns whether anything changed.
pub fn ensure_shared(path: &Path) -> Result<bool> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    match mount_point_propagation(&mountinfo, path) {
        Some(true) => return Ok(false),
        Some(false) => {}
        None => nix::mount::mount(
            Some(path),
            path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .with_context(|| format!("bind-mounting {} onto itself", path.display()))?,
    }
    nix::mount::mount(
        None::<&str>,
        path,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .with_context(|| format!("making {} a shared mount", path.display()))?;
    log::info!(
        "made the host mount area {} a shared mount point so mounts made in bootstrap containers reach the host",
        path.display()
    );
    Ok(true)
}

/// For the top-most mount at `path`: `Some(shared?)`, or `None` if `path` is no mount point.
fn mount_point_propagation(mountinfo: &str, path: &Path) -> Option<bool> {
    mountinfo
        .lines()
        .rev()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mount_point = unescape_mountinfo(fields.get(4)?);
            let separator = fields.iter().position(|f| *f == "-")?;
            let shared = fields[6..separator]
                .iter()
                .any(|f| f.starts_with("shared:"));
            (Path::new(&mount_point) == path).then_some(shared)
        })
        .next()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let octal = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("0");
            out.push(u8::from_str_radix(octal, 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Attaches `mounts` inside the mount namespace of the container whose init is `pid`.
pub fn attach(pid: Pid, mounts: &[HostMount]) -> Result<()> {
    // Clones are taken in the host's namespace: that is what ties the mount area to the host.
    let trees = mounts
        .iter()
        .map(clone_tree)
        .collect::<Result<Vec<OwnedFd>>>()?;
    let bottlerocket_path = format!("/proc/{pid}/root{BOTTLEROCKET_DIR}");
    let bottlerocket = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(&bottlerocket_path)
        .with_context(|| format!("opening {bottlerocket_path}"))?;
    let relative: Vec<PathBuf> = mounts
        .iter()
        .map(|m| {
            m.target
                .strip_prefix(BOTTLEROCKET_DIR)
                .map(Path::to_path_buf)
        })
        .collect::<std::result::Result<_, _>>()
        .context("host mount outside /.bottlerocket")?;
    // Mount points directly in the policy's tmpfs are ours to create; deeper ones (the mount
    // area's `mnt`) must exist in the host root.
    for target in relative.iter().filter(|t| t.components().count() == 1) {
        match nix::sys::stat::mkdirat(
            Some(bottlerocket.as_raw_fd()),
            target.as_path(),
            nix::sys::stat::Mode::from_bits_truncate(0o755),
        ) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(err) => {
                return Err(err).with_context(|| {
                    format!(
                        "creating mount point {BOTTLEROCKET_DIR}/{}",
                        target.display()
                    )
                })
            }
        }
    }

    let _inside = InMountNamespace::enter(pid)?;
    for ((mount, tree), target) in mounts.iter().zip(&trees).zip(&relative) {
        move_mount(tree.as_raw_fd(), bottlerocket.as_raw_fd(), target).with_context(|| {
            format!(
                "mounting host {} at {} in the container",
                mount.source.display(),
                mount.target.display()
            )
        })?;
    }
    // The policy's tmpfs gets no more mount points: seal it.
    mount_setattr(bottlerocket.as_raw_fd(), 0, MOUNT_ATTR_RDONLY, 0)
        .with_context(|| format!("making {BOTTLEROCKET_DIR} read-only"))?;
    Ok(())
}

fn clone_tree(mount: &HostMount) -> Result<OwnedFd> {
    let source = CString::new(mount.source.as_os_str().as_bytes())?;
    let flags =
        OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_RECURSIVE as libc::c_uint;
    // SAFETY: plain syscall with a valid NUL-terminated path.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, source.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cloning host mount tree {}", mount.source.display()));
    }
    // SAFETY: the kernel just returned this fd to us.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let propagation = if mount.shared {
        MsFlags::MS_SHARED
    } else {
        MsFlags::MS_SLAVE
    };
    let read_only = if mount.read_only {
        MOUNT_ATTR_RDONLY
    } else {
        0
    };
    mount_setattr(
        tree.as_raw_fd(),
        libc::AT_RECURSIVE as libc::c_uint,
        read_only,
        propagation.bits(),
    )
    .with_context(|| {
        format!(
            "setting attributes on the clone of {}",
            mount.source.display()
        )
    })?;
    Ok(tree)
}

fn mount_setattr(
    fd: RawFd,
    extra_flags: libc::c_uint,
    attr_set: u64,
    propagation: u64,
) -> Result<()> {
    let attr = MountAttr {
        attr_set,
        attr_clr: 0,
        propagation,
        userns_fd: 0,
    };
    let empty = c"";
    // SAFETY: valid fd, empty path with AT_EMPTY_PATH, attr outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd,
            empty.as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint | extra_flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

fn move_mount(tree: RawFd, dir: RawFd, target: &Path) -> Result<()> {
    let target = CString::new(target.as_os_str().as_bytes())?;
    let empty = c"";
    // SAFETY: valid fds and NUL-terminated paths.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree,
            empty.as_ptr(),
            dir,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

/// While alive, this process is in the container's mount namespace (move_mount only attaches
/// to mounts of the caller's namespace). Dropping it returns to the original namespace and
/// working directory; if that fails the process must not go on, so it aborts.
struct InMountNamespace {
    home: File,
    cwd: File,
}

impl InMountNamespace {
    fn enter(pid: Pid) -> Result<Self> {
        let open_path = |path: &str| {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(path)
                .with_context(|| format!("opening {path}"))
        };
        let home = open_path("/proc/self/ns/mnt")?;
        let cwd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(".")
            .context("opening the working directory")?;
        let target = open_path(&format!("/proc/{pid}/ns/mnt"))?;
        nix::sched::setns(&target, CloneFlags::CLONE_NEWNS)
            .context("entering the container's mount namespace")?;
        Ok(InMountNamespace { home, cwd })
    }
}

impl Drop for InMountNamespace {
    fn drop(&mut self) {
        if let Err(err) = nix::sched::setns(&self.home, CloneFlags::CLONE_NEWNS) {
            log::error!("cannot return to the host mount namespace: {err}");
            std::process::abort();
        }
        let _ = nix::unistd::fchdir(self.cwd.as_raw_fd());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 27 0:40 / /mnt rw,relatime - tmpfs tmpfs rw
41 40 0:41 / /mnt rw,relatime shared:7 master:2 - tmpfs tmpfs rw
42 27 0:42 / /with\\040space rw - tmpfs tmpfs rw
";

    #[test]
    fn finds_the_top_most_mount_and_its_propagation() {
        assert_eq!(
            mount_point_propagation(MOUNTINFO, Path::new("/")),
            Some(true)
        );
        assert_eq!(
            mount_point_propagation(MOUNTINFO, Path::new("/proc")),
            Some(false)
        );
        assert_eq!(
            mount_point_propagation(MOUNTINFO, Path::new("/mnt")),
            Some(true)
        );
        assert_eq!(
            mount_point_propagation(MOUNTINFO, Path::new("/with space")),
            Some(false)
        );
        assert_eq!(mount_point_propagation(MOUNTINFO, Path::new("/srv")), None);
    }

    #[test]
    fn split_takes_out_only_the_host_mounts() {
        let spec = crate::policy::apply(
            {
                let mut spec = Spec::default();
                spec.set_root(Some(Default::default()));
                spec
            },
            &crate::policy::Policy::default(),
            Path::new("/b"),
        )
        .unwrap();
        let (spec, host) = split(spec);
        assert_eq!(
            host,
            [
                HostMount {
                    source: "/".into(),
                    target: "/.bottlerocket/rootfs".into(),
                    read_only: true,
                    shared: false
                },
                HostMount {
                    source: "/mnt".into(),
                    target: "/.bottlerocket/rootfs/mnt".into(),
                    read_only: false,
                    shared: true
                },
            ]
        );
        assert!(spec
            .mounts()
            .iter()
            .flatten()
            .all(|m| !m.destination().starts_with(HOST_ROOT_TARGET)));
        assert!(spec
            .mounts()
            .iter()
            .flatten()
            .any(|m| m.destination() == Path::new(BOTTLEROCKET_DIR)));
    }
}
