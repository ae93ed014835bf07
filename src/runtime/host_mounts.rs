//! The policy's host mounts, attached by our own code.
//!
//! libcontainer 0.7.0 ignores per-mount propagation, and its `rootfsPropagation=shared` leaks
//! the host-root bind onto the host. So libcontainer never sees these mounts: after it created
//! the container (init waiting for `start`), we clone the host trees in the host's mount
//! namespace with `open_tree`, set read-only and propagation on the detached copies with
//! `mount_setattr`, and `move_mount` them into the container's namespace. A clone of a shared
//! mount joins its peer group, so the mount area propagates both ways; the host root copy is
//! made a slave, so nothing mounted there inside the container reaches the host. In the
//! Bottlerocket mode only the host root's top mount is made read-only, then, once attached, the
//! host's procfs, sysfs and cgroupfs in it (the kernel changes a detached tree's submounts only
//! after it is attached), and the state the policy keeps read-only is bound over itself. The shared
//! directories propagate as the mount area does; the certificates are a read-only slave copy.
//! Making the shared sources propagate on the host side is host_sources.rs's part.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libcontainer::oci_spec::runtime::Spec;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::stat::fstat;
use nix::sys::statfs::{fstatfs, TMPFS_MAGIC};
use nix::unistd::Pid;
use pathrs::error::ErrorKind;
use pathrs::flags::ResolverFlags;
use pathrs::{Root, RootRef};

use rustix::mount::{self, MountAttrFlags, MoveMountFlags, OpenTreeFlags};

use super::mountinfo::MountTable;
use crate::policy::{BOTTLEROCKET_DIR, CERTS_TARGET, HOST_ROOT_TARGET};

const MOUNT_ATTR_RDONLY: u64 = MountAttrFlags::MOUNT_ATTR_RDONLY.bits() as u64;

/// `mount_setattr(2)`'s argument: rustix has no `mount_setattr`, so it is called raw.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A host tree to attach inside the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HostMount {
    pub source: PathBuf,
    /// Absolute path inside the container, under `/.bottlerocket`.
    pub target: PathBuf,
    pub read_only: ReadOnly,
    pub shared: bool,
    /// Receives no mount from the host after it is attached (`rprivate`): the state kept
    /// read-only, under which the supervisor mounts other containers' roots.
    pub private: bool,
}

/// Which mounts of a host tree are read-only in the container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadOnly {
    /// None: the mount area, the shared directories.
    No,
    /// The top mount, and the host's procfs, sysfs and cgroupfs under it (Bottlerocket's
    /// `rbind,ro` host root; `ro` without `rro`): the host's other filesystems keep their own
    /// flags.
    Top,
    /// Every mount (`rro`).
    All,
}

/// The kernel's own filesystems: writable, they would hand a container the host's sysctls,
/// devices and cgroups. Read-only in every host tree.
const KERNEL_FILESYSTEMS: [&str; 4] = ["proc", "sysfs", "cgroup", "cgroup2"];

/// Takes the mounts at or under `/.bottlerocket/rootfs` and at `/.bottlerocket/certs` (only the
/// policy puts any there) out of the spec handed to libcontainer.
pub(crate) fn split(mut spec: Spec) -> (Spec, Vec<HostMount>) {
    let mounts = spec.mounts_mut().take().unwrap_or_default();
    let (ours, theirs): (Vec<_>, Vec<_>) = mounts.into_iter().partition(|m| {
        m.destination().starts_with(HOST_ROOT_TARGET) || m.destination() == Path::new(CERTS_TARGET)
    });
    spec.set_mounts(Some(theirs));
    let host_mounts = ours
        .into_iter()
        .map(|m| {
            let has = |option: &str| m.options().iter().flatten().any(|o| o == option);
            HostMount {
                source: m.source().clone().unwrap_or_default(),
                target: m.destination().clone(),
                read_only: match (has("rro"), has("ro")) {
                    (true, _) => ReadOnly::All,
                    (false, true) => ReadOnly::Top,
                    (false, false) => ReadOnly::No,
                },
                shared: has("rshared"),
                private: has("rprivate"),
            }
        })
        .collect();
    (spec, host_mounts)
}

/// The state bound read-only over itself ([`crate::policy::kept_read_only`]) is reachable by
/// other paths too, through any other mount of its filesystem whose root holds it (a bind of
/// `/run`, `/var` bound from `/local`): adds the same read-only, private bind at each such
/// path the host root shows ([`MountTable::aliases`]).
pub(crate) fn with_aliases(mounts: &mut Vec<HostMount>, host_root: &Path, table: &MountTable) {
    let kept: Vec<HostMount> = mounts
        .iter()
        .filter(|m| m.private && m.read_only == ReadOnly::All)
        .cloned()
        .collect();
    for mount in kept {
        for alias in table.aliases(&mount.source) {
            let Ok(inside) = alias.strip_prefix(host_root) else {
                continue;
            };
            let target = Path::new(HOST_ROOT_TARGET).join(inside);
            // Where the container sees the mount area or a shared directory instead, a bind
            // would propagate to the host; nor is the state there.
            let elsewhere = mounts
                .iter()
                .any(|m| m.target == target || (m.shared && target.starts_with(&m.target)));
            if !elsewhere {
                mounts.push(HostMount {
                    source: alias.clone(),
                    target,
                    ..mount.clone()
                });
            }
        }
    }
}

/// Attaches `mounts` inside the mount namespace of the container whose init is `pid`. Sources
/// and targets are opened with no symlink followed, and the syscalls act on those very objects:
/// nothing swapped on a path in between (host side or image side) redirects a mount.
/// `table` is the host's mount table, for the kernel filesystems under a [`ReadOnly::Top`] tree.
pub(crate) fn attach(pid: Pid, mounts: &[HostMount], table: &MountTable) -> Result<()> {
    // Clones are taken in the host's namespace: that is what ties the mount area to the host.
    let host = Root::open("/")
        .context("opening / for the host mounts")?
        .with_resolver_flags(ResolverFlags::NO_SYMLINKS);
    let trees = mounts
        .iter()
        .map(|mount| clone_tree(&host, mount))
        .collect::<Result<Vec<OwnedFd>>>()?;
    let bottlerocket = policy_dir(pid)?;
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
    // area's `mnt`, the shared directories) must exist in the host root.
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
    let inside =
        RootRef::from_fd(bottlerocket.as_fd()).with_resolver_flags(ResolverFlags::NO_SYMLINKS);
    for ((mount, tree), target) in mounts.iter().zip(&trees).zip(&relative) {
        let attaching = || {
            format!(
                "mounting host {} at {} in the container",
                mount.source.display(),
                mount.target.display()
            )
        };
        // Resolved after the mounts before it: deeper targets lie in the host root's copy.
        let point = inside.resolve(target).with_context(attaching)?;
        move_mount(tree, point.as_fd()).with_context(attaching)?;
        if mount.read_only == ReadOnly::Top {
            kernel_filesystems_read_only(&inside, target, mount, table)?;
        }
    }
    // The policy's tmpfs gets no more mount points: seal it.
    mount_setattr(bottlerocket.as_raw_fd(), 0, MOUNT_ATTR_RDONLY, 0)
        .with_context(|| format!("making {BOTTLEROCKET_DIR} read-only"))?;
    Ok(())
}

/// The policy's tmpfs at `/.bottlerocket` in the container whose init is `pid`, resolved inside
/// the container's root with no symlink followed: an image whose `/.bottlerocket` is a symlink
/// would otherwise lead our mkdir and mounts anywhere (libcontainer mounted the tmpfs where the
/// link points, inside the rootfs).
fn policy_dir(pid: Pid) -> Result<OwnedFd> {
    let root = container_root(pid)?;
    let handle = RootRef::from_fd(root.as_fd())
        .resolve_nofollow(BOTTLEROCKET_DIR)
        .with_context(|| format!("opening the container's {BOTTLEROCKET_DIR}"))?;
    let fd: OwnedFd = handle.into();
    let is_dir = fstat(fd.as_raw_fd())
        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
        .unwrap_or(false);
    let on_tmpfs = fstatfs(&fd).is_ok_and(|fs| fs.filesystem_type() == TMPFS_MAGIC);
    if !is_dir || !on_tmpfs {
        bail!(
            "the container's {BOTTLEROCKET_DIR} is not the policy's directory (the image has a \
             symlink or something else there); refusing the container"
        );
    }
    Ok(fd)
}

fn clone_tree(host: &Root, mount: &HostMount) -> Result<OwnedFd> {
    let source = host
        .resolve(&mount.source)
        .with_context(|| format!("cloning host mount tree {}", mount.source.display()))?;
    let propagation = if mount.shared {
        MsFlags::MS_SHARED
    } else if mount.private {
        MsFlags::MS_PRIVATE
    } else {
        MsFlags::MS_SLAVE
    };
    let tree = clone(
        &source,
        &mount.source,
        mount.read_only == ReadOnly::All,
        propagation,
        true,
    )?;
    if mount.read_only == ReadOnly::Top {
        mount_setattr(tree.as_raw_fd(), 0, MOUNT_ATTR_RDONLY, 0)
            .with_context(|| format!("making the clone of {} read-only", mount.source.display()))?;
    }
    Ok(tree)
}

/// Makes the host's procfs, sysfs and cgroupfs in the attached clone of `mount` read-only,
/// with everything mounted under them: the outermost such mounts under its source in `table`,
/// each found at `target` (relative to `inside`, the container's `/.bottlerocket`) with no
/// symlink followed. In the container's mount namespace: the kernel changes a submount's
/// attributes only there, never in a detached tree.
fn kernel_filesystems_read_only(
    inside: &RootRef<'_>,
    target: &Path,
    mount: &HostMount,
    table: &MountTable,
) -> Result<()> {
    let mut points: Vec<&Path> = table
        .0
        .iter()
        .filter(|m| KERNEL_FILESYSTEMS.contains(&m.fs_type.as_str()))
        .filter_map(|m| m.point.strip_prefix(&mount.source).ok())
        .filter(|relative| !relative.as_os_str().is_empty())
        .collect();
    points.sort();
    points.dedup();
    let mut done: Vec<&Path> = Vec::new();
    for relative in points {
        if done.iter().any(|outer| relative.starts_with(outer)) {
            continue;
        }
        let shown = || format!("{}", mount.target.join(relative).display());
        let point = match inside.resolve_nofollow(target.join(relative)) {
            Ok(point) => point,
            // Under a later mount on the host: hidden there too, so no path writes it.
            Err(err) if err.kind() == ErrorKind::OsError(Some(libc::ENOENT)) => continue,
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("opening the host's {} in the container", shown()))
            }
        };
        match set_read_only(
            point.as_fd().as_raw_fd(),
            libc::AT_RECURSIVE as libc::c_uint,
        ) {
            Ok(()) => {}
            // Not a mount point here: hidden under a later mount's directory of the same name.
            Err(err) if errno(&err) == Some(libc::EINVAL) => continue,
            Err(err) => {
                return Err(err).with_context(|| format!("making the host's {} read-only", shown()))
            }
        }
        done.push(relative);
    }
    Ok(())
}

/// A detached copy of the mount at `path` (no symlink followed), read-only or not, a slave of
/// the host's: what cgroup_mounts.rs binds into a container.
pub(super) fn clone_path(path: &Path, read_only: bool) -> Result<OwnedFd> {
    let host = Root::open("/")
        .context("opening /")?
        .with_resolver_flags(ResolverFlags::NO_SYMLINKS);
    let source = host
        .resolve(path)
        .with_context(|| format!("opening {}", path.display()))?;
    clone(&source, path, read_only, MsFlags::MS_SLAVE, false)
}

/// A detached copy of what `handle` (opened by `path`, named in errors) is, a slave of it, with
/// its submounts when `recursive`: a judged bind source for bind_sources.rs to stage.
pub(super) fn clone_handle(handle: &impl AsFd, path: &Path, recursive: bool) -> Result<OwnedFd> {
    clone(handle, path, false, MsFlags::MS_SLAVE, recursive)
}

/// `open_tree(OPEN_TREE_CLONE)` of `source` (named `path` in errors), then its attributes.
fn clone(
    source: &impl AsFd,
    path: &Path,
    read_only: bool,
    propagation: MsFlags,
    recursive: bool,
) -> Result<OwnedFd> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE
        | OpenTreeFlags::OPEN_TREE_CLOEXEC
        | OpenTreeFlags::AT_EMPTY_PATH;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    let tree = mount::open_tree(source.as_fd(), "", flags)
        .with_context(|| format!("cloning host mount tree {}", path.display()))?;
    let read_only = if read_only { MOUNT_ATTR_RDONLY } else { 0 };
    mount_setattr(
        tree.as_raw_fd(),
        libc::AT_RECURSIVE as libc::c_uint,
        read_only,
        propagation.bits(),
    )
    .with_context(|| format!("setting attributes on the clone of {}", path.display()))?;
    Ok(tree)
}

/// Makes the mount `fd` is the root of private: mounts attached on it reach no peer.
pub(super) fn make_private(fd: RawFd) -> Result<()> {
    mount_setattr(fd, 0, 0, MsFlags::MS_PRIVATE.bits())
        .context("making the cgroup mount point private")
}

/// Makes the mount `fd` is the root of read-only (with `AT_RECURSIVE` in `flags`, its
/// submounts too).
pub(super) fn set_read_only(fd: RawFd, flags: libc::c_uint) -> Result<()> {
    mount_setattr(fd, flags, MOUNT_ATTR_RDONLY, 0)
}

/// `path` in the container whose init is `pid`, symlinks followed inside its root (as
/// libcontainer placed its mounts): an `O_PATH` handle to what is on top there.
pub(super) fn in_container_root(pid: Pid, path: &Path) -> Result<OwnedFd> {
    let root = container_root(pid)?;
    let handle = RootRef::from_fd(root.as_fd())
        .resolve(path)
        .with_context(|| format!("opening the container's {}", path.display()))?;
    Ok(handle.into())
}

/// The root directory of the container whose init is `pid`, as an `O_PATH` handle to resolve
/// inside (pathrs' `RootRef`).
pub(super) fn container_root(pid: Pid) -> Result<File> {
    let path = format!("/proc/{pid}/root");
    // A magic link to the container's root: followed, which pathrs' Root::open refuses.
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(&path)
        .with_context(|| format!("opening {path}"))
}

/// The errno of a failed [`mount_setattr`], if that is what failed.
fn errno(err: &anyhow::Error) -> Option<i32> {
    err.downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::raw_os_error)
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

/// Attaches the detached `tree` onto the directory `point`.
pub(super) fn move_mount(tree: impl AsFd, point: impl AsFd) -> Result<()> {
    mount::move_mount(
        tree,
        "",
        point,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )?;
    Ok(())
}

/// While alive, this process is in the container's mount namespace (move_mount only attaches
/// to mounts of the caller's namespace). Dropping it returns to the original namespace and
/// working directory; if that fails the process must not go on, so it aborts.
pub(super) struct InMountNamespace {
    home: File,
    cwd: File,
}

impl InMountNamespace {
    pub(super) fn enter(pid: Pid) -> Result<Self> {
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
        let kept = |dir: &str| HostMount {
            source: dir.into(),
            target: format!("/.bottlerocket/rootfs{dir}").into(),
            read_only: ReadOnly::All,
            shared: false,
            private: true,
        };
        let shared_dir = |dir: &str| HostMount {
            source: dir.into(),
            target: format!("/.bottlerocket/rootfs{dir}").into(),
            read_only: ReadOnly::No,
            shared: true,
            private: false,
        };
        assert_eq!(
            host,
            [
                HostMount {
                    source: "/".into(),
                    target: "/.bottlerocket/rootfs".into(),
                    read_only: ReadOnly::All,
                    shared: false,
                    private: false
                },
                HostMount {
                    source: "/mnt".into(),
                    target: "/.bottlerocket/rootfs/mnt".into(),
                    read_only: ReadOnly::No,
                    shared: true,
                    private: false
                },
                shared_dir("/var/lib/containerd"),
                shared_dir("/var/lib/docker"),
                shared_dir("/var/lib/kubelet"),
                kept("/var/lib/bootstrap-containers"),
                kept("/run/bootstrap-containers"),
                kept("/run/containerd"),
                HostMount {
                    source: "/etc/ssl/certs".into(),
                    target: CERTS_TARGET.into(),
                    read_only: ReadOnly::All,
                    shared: false,
                    private: false
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
