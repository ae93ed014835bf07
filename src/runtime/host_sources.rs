//! The host sources of the policy's mounts: which of Bottlerocket's optional mounts this host
//! has, and the shared mounts made ready.
//!
//! The policy (policy/mod.rs) is pure: it always asks for `/lib/modules`, `/usr/src/kernels`,
//! `/sys/kernel/debug` and the certificates, and for every shared directory. Here, against the
//! host: [`present`] drops the optional mounts whose source the host lacks and gives the rest
//! their real path; [`prepare_shared`] creates missing shared directories and makes sure each
//! shared source propagates, since a container's mount only reaches the host through a shared
//! mount on the host side.

use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libcontainer::oci_spec::runtime::Spec;
use nix::mount::MsFlags;
use pathrs::flags::ResolverFlags;
use pathrs::{error::ErrorKind, InodeType, Root};
use std::os::unix::fs::PermissionsExt;

use super::host_mounts::HostMount;
use super::mountinfo::MountTable;
use crate::locks;
use crate::policy::{DEBUGFS_DIR, MOUNT_AREA_TARGET, WHEN_PRESENT};

/// Drops the policy's optional mounts (`WHEN_PRESENT`) whose source is missing under
/// `host_root`, the debugfs bind unless debugfs is the top mount there, and any whose mount
/// point the container's root lacks and cannot get (a read-only rootfs: libcontainer could not
/// make it); gives the others their source as resolved inside `host_root` (a host's `/lib` is
/// often a symlink to `usr/lib`). Errors: a source that exists but is no directory, or cannot
/// be resolved. `table` is the host's mount table.
pub(crate) fn present(spec: &mut Spec, host_root: &Path, table: &MountTable) -> Result<()> {
    let rootfs = spec.root().as_ref().map(|r| r.path().clone());
    let Some(mounts) = spec.mounts_mut() else {
        return Ok(());
    };
    let root = Root::open(host_root)
        .with_context(|| format!("opening the host root {}", host_root.display()))?;
    let mut kept = Vec::with_capacity(mounts.len());
    for mut mount in mounts.drain(..) {
        let destination = mount.destination().clone();
        if !WHEN_PRESENT.iter().any(|dir| destination == Path::new(dir)) {
            kept.push(mount);
            continue;
        }
        let source = mount.source().clone().unwrap_or_default();
        let what = || format!("{} for {}", source.display(), destination.display());
        let inside = source.strip_prefix(host_root).unwrap_or(&source);
        let handle = match root.resolve(inside) {
            Ok(handle) => handle,
            Err(err) if err.kind() == ErrorKind::OsError(Some(libc::ENOENT)) => {
                log::debug!("no host {}: not mounted", what());
                continue;
            }
            Err(err) => return Err(err).with_context(|| format!("resolving host {}", what())),
        };
        let real = std::fs::read_link(fd_path(&handle))
            .with_context(|| format!("reading the real path of host {}", what()))?;
        if !real.is_dir() {
            bail!("host {} is not a directory", what());
        }
        if destination == Path::new(DEBUGFS_DIR)
            && table.top_at(&real).is_none_or(|m| m.fs_type != "debugfs")
        {
            log::debug!("no debugfs mounted at host {}: not mounted", real.display());
            continue;
        }
        // A mount point in the policy's own tmpfs is ours to make; others are the rootfs's.
        let in_rootfs = !destination.starts_with(crate::policy::BOTTLEROCKET_DIR);
        if in_rootfs
            && rootfs
                .as_ref()
                .is_some_and(|r| !mount_point_possible(r, &destination))
        {
            log::info!(
                "the container's read-only root has no {}: the host's is not mounted",
                destination.display()
            );
            continue;
        }
        mount.set_source(Some(real));
        kept.push(mount);
    }
    *mounts = kept;
    Ok(())
}

fn fd_path(fd: &impl AsFd) -> String {
    format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd())
}

/// Whether `destination` exists in `rootfs` (symlinks followed inside it, as libcontainer
/// does), or its deepest existing ancestor is on a writable filesystem.
fn mount_point_possible(rootfs: &Path, destination: &Path) -> bool {
    let Ok(root) = Root::open(rootfs) else {
        return true; // libcontainer's own error is the better one
    };
    let mut path = destination.to_path_buf();
    loop {
        if let Ok(handle) = root.resolve(&path) {
            if path == destination {
                return true;
            }
            return nix::sys::statvfs::statvfs(fd_path(&handle).as_str())
                .is_ok_and(|fs| !fs.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
        }
        if !path.pop() {
            return true;
        }
    }
}

/// Makes every shared host mount in `mounts` ready: the mount area as before (a shared mount
/// point of its own), and each shared directory created if missing (root, 0711, as Bottlerocket
/// ships them; no symlink followed under `host_root`) and propagating. A refusal comes before
/// anything changes. Each source is locked (`flock` on the directory itself) while it is
/// decided and changed, so creates from any state root, containerd's included, agree. `table`
/// is the host's mount table as `create` read it; under the locks it is read again.
pub(crate) fn prepare_shared(
    mounts: &[HostMount],
    host_root: &Path,
    table: &MountTable,
) -> Result<()> {
    let mut shared: Vec<(&Path, bool)> = mounts
        .iter()
        .filter(|m| m.shared)
        .map(|m| (m.source.as_path(), m.target == Path::new(MOUNT_AREA_TARGET)))
        .collect();
    shared.sort();
    let table = shared_points(table);
    let mut missing = Vec::new();
    let mut all_ready = true;
    for &(path, area) in &shared {
        if !area && !shared_dir_exists(path, host_root)? {
            missing.push(path);
        }
        match sharing(&table, path, area) {
            Sharing::Refuse(submount) => return Err(live_tree(path, &submount)),
            Sharing::Ready => {}
            _ => all_ready = false,
        }
    }
    // Every create after the first, and every create on a systemd host: nothing to change,
    // so no locks and no second read of mountinfo.
    if all_ready && missing.is_empty() {
        return Ok(());
    }
    for path in missing {
        create_shared_dir(path, host_root)?;
    }
    let _locks = shared
        .iter()
        .map(|(path, _)| lock_dir(path))
        .collect::<Result<Vec<_>>>()?;
    // Decided again under the locks: another create may have shared a source meanwhile.
    let table = shared_points(&MountTable::read()?);
    for (path, area) in shared {
        let what = if area {
            "host mount area"
        } else {
            "shared directory"
        };
        match sharing(&table, path, area) {
            Sharing::Ready => continue,
            Sharing::Refuse(submount) => return Err(live_tree(path, &submount)),
            Sharing::BindAndShare => nix::mount::mount(
                Some(path),
                path,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .with_context(|| format!("bind-mounting the {what} {} onto itself", path.display()))?,
            Sharing::MakeShared => {}
        }
        nix::mount::mount(
            None::<&str>,
            path,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
        .with_context(|| format!("making the {what} {} a shared mount", path.display()))?;
        log::info!(
            "made the {what} {} a shared mount point so mounts made in bootstrap containers reach the host",
            path.display()
        );
    }
    Ok(())
}

fn live_tree(path: &Path, submount: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "the shared directory {} is on a private mount and has mounts under it ({}); binding a \
         live tree onto itself is not safe, so make it shared on the host first (`mount \
         --make-rshared /` as systemd does, or a shared bind made before anything is mounted \
         under it), or leave it out of shared-dirs",
        path.display(),
        submount.display()
    )
}

/// An exclusive `flock` on the directory `path`, held until it is dropped.
fn lock_dir(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    locks::flock(
        path,
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY),
        nix::fcntl::FlockArg::LockExclusive,
    )
}

/// The host root, resolving with no symlink allowed.
fn shared_dir_root(host_root: &Path) -> Result<Root> {
    Ok(Root::open(host_root)
        .with_context(|| format!("opening the host root {}", host_root.display()))?
        .with_resolver_flags(ResolverFlags::NO_SYMLINKS))
}

fn refused(source: &Path) -> impl Fn(pathrs::error::Error) -> anyhow::Error + '_ {
    move |err| {
        let why = if err.kind() == ErrorKind::OsError(Some(libc::ELOOP)) {
            "a symlink on its path (none is followed under the host root): name the real \
             directory in shared-dirs, or leave it out"
        } else {
            "cannot be used"
        };
        anyhow::Error::new(err).context(format!("shared directory {}: {why}", source.display()))
    }
}

/// Whether the shared directory exists; an error if it is reached through a symlink or is no
/// directory.
fn shared_dir_exists(source: &Path, host_root: &Path) -> Result<bool> {
    let inside = source.strip_prefix(host_root).unwrap_or(source);
    match shared_dir_root(host_root)?.resolve(inside) {
        Ok(handle) => {
            let meta = nix::sys::stat::fstat(handle.as_fd().as_raw_fd())
                .with_context(|| format!("stat {}", source.display()))?;
            if meta.st_mode & libc::S_IFMT != libc::S_IFDIR {
                bail!("shared directory {} is not a directory", source.display());
            }
            Ok(true)
        }
        Err(err) if err.kind() == ErrorKind::OsError(Some(libc::ENOENT)) => Ok(false),
        Err(err) => Err(refused(source)(err)),
    }
}

fn create_shared_dir(source: &Path, host_root: &Path) -> Result<()> {
    let inside = source.strip_prefix(host_root).unwrap_or(source);
    let root = shared_dir_root(host_root)?;
    if let Some(parent) = inside.parent().filter(|p| !p.as_os_str().is_empty()) {
        root.mkdir_all(parent, &std::fs::Permissions::from_mode(0o755))
            .map_err(refused(source))?;
    }
    match root.create(
        inside,
        &InodeType::Directory(std::fs::Permissions::from_mode(0o711)),
    ) {
        Ok(()) => {
            // Not narrowed by the caller's umask.
            let made = root.resolve(inside).map_err(refused(source))?;
            std::fs::set_permissions(fd_path(&made), std::fs::Permissions::from_mode(0o711))
                .with_context(|| format!("chmod 0711 {}", source.display()))?;
            log::info!("created the shared directory {} (0711)", source.display());
            Ok(())
        }
        Err(err) if err.kind() == ErrorKind::OsError(Some(libc::EEXIST)) => Ok(()),
        Err(err) => Err(refused(source)(err)),
    }
}

/// (mount point, shared?) of each mount, in mountinfo order.
fn shared_points(table: &MountTable) -> Vec<(PathBuf, bool)> {
    table
        .0
        .iter()
        .map(|m| (m.point.clone(), m.shared))
        .collect()
}

/// What a shared source needs on the host for a container's mounts to reach it.
#[derive(Debug, PartialEq, Eq)]
enum Sharing {
    /// It propagates as it is.
    Ready,
    /// It is a mount point, private: make it shared.
    MakeShared,
    /// Bind it onto itself and make that shared.
    BindAndShare,
    /// A shared directory on a private mount with this mount under it: never self-bind a live
    /// tree (its pod volumes and overlays would be copied and pinned).
    Refuse(PathBuf),
}

/// Decides over `mounts` ((mount point, shared?) in mountinfo order, later ones on top). The
/// mount area must be a shared mount point of its own, as Bottlerocket's `/mnt` is; a shared
/// directory may also lie inside a shared mount (systemd makes `/` shared).
fn sharing(mounts: &[(PathBuf, bool)], path: &Path, mount_area: bool) -> Sharing {
    if let Some((_, shared)) = mounts.iter().rev().find(|(point, _)| point == path) {
        return if *shared {
            Sharing::Ready
        } else {
            Sharing::MakeShared
        };
    }
    if mount_area {
        return Sharing::BindAndShare;
    }
    let containing = mounts
        .iter()
        .enumerate()
        .filter(|(_, (point, _))| path.starts_with(point))
        .max_by_key(|(i, (point, _))| (point.components().count(), *i));
    if containing.is_some_and(|(_, (_, shared))| *shared) {
        return Sharing::Ready;
    }
    match mounts.iter().find(|(point, _)| point.starts_with(path)) {
        Some((submount, _)) => Sharing::Refuse(submount.clone()),
        None => Sharing::BindAndShare,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, bool)]) -> Vec<(PathBuf, bool)> {
        entries
            .iter()
            .map(|(p, s)| (PathBuf::from(p), *s))
            .collect()
    }

    #[test]
    fn mount_area_must_be_a_shared_mount_point() {
        let mounts = table(&[
            ("/", true),
            ("/mnt", false),
            ("/mnt", true),
            ("/srv", false),
        ]);
        assert_eq!(sharing(&mounts, Path::new("/mnt"), true), Sharing::Ready);
        assert_eq!(
            sharing(&mounts, Path::new("/srv"), true),
            Sharing::MakeShared
        );
        // Inside a shared `/` is not enough for the mount area: it gets a mount point of its own.
        assert_eq!(
            sharing(&mounts, Path::new("/data"), true),
            Sharing::BindAndShare
        );
    }

    #[test]
    fn shared_dirs_use_a_shared_mount_as_it_is() {
        let shared_root = table(&[("/", true), ("/var/lib/kubelet/pods/x", false)]);
        assert_eq!(
            sharing(&shared_root, Path::new("/var/lib/kubelet"), false),
            Sharing::Ready
        );
        let private_root = table(&[("/", false), ("/var", true), ("/var/lib/docker", false)]);
        assert_eq!(
            sharing(&private_root, Path::new("/var/lib/containerd"), false),
            Sharing::Ready,
            "the deepest mount holding it decides"
        );
        assert_eq!(
            sharing(&private_root, Path::new("/var/lib/docker"), false),
            Sharing::MakeShared
        );
    }

    #[test]
    fn a_live_private_tree_is_never_bound_onto_itself() {
        let mounts = table(&[("/", false), ("/var/lib/kubelet/pods/x/volume", false)]);
        assert_eq!(
            sharing(&mounts, Path::new("/var/lib/kubelet"), false),
            Sharing::Refuse("/var/lib/kubelet/pods/x/volume".into())
        );
        assert_eq!(
            sharing(&mounts, Path::new("/var/lib/containerd"), false),
            Sharing::BindAndShare
        );
    }
}
