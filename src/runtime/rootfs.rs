//! The container's root as libcontainer 0.7.0 uses it before `pivot_root`, checked on handles
//! before libcontainer runs.
//!
//! libcontainer's init prepares the root while its own root directory is still the host's.
//! Mount destinations it resolves inside the root (pathrs), but `rootfs/symlink.rs` joins
//! `dev/ptmx`, `dev/fd`, `dev/stdin`, `dev/stdout`, `dev/stderr` and `dev/kcore` to the root as
//! plain paths and unlinks and plants there: an image whose `/dev` is a symlink (absolute, or
//! with `..` enough) would have it delete and create files on the host (runc
//! GHSA-xjvp-4fhw-gc47, crun #111). The root itself is bound onto itself and pivoted into by
//! path, and devices are made at paths resolved once and walked again. So, before libcontainer:
//! - the root is a directory reached with no symlink, not the host's `/` nor the policy's host
//!   root, and it neither is, holds nor lies inside the runtime's or supervisor's state, the
//!   mount area, a shared directory or a `writable-binds` source (anything another container can
//!   write while libcontainer walks the root);
//! - its `/dev` is a directory or absent, never a symlink or anything else (libcontainer makes
//!   a missing one a directory).
//!
//! The policy refuses a mount at `/`, which would replace the checked root before the joins,
//! and here a mount whose destination leads to the root through the image's symlinks.
//! What runs after `pivot_root` (the working directory, masked and read-only paths) cannot
//! name a host path. Cgroup mounts never reach libcontainer (cgroup_mounts.rs).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::fcntl::AtFlags;
use nix::sys::stat::{fstat, fstatat};
use pathrs::flags::ResolverFlags;
use pathrs::Root;

use super::reach::Lineage;

/// Where other writers are: `(what, lineage)` pairs the root must stay apart from.
pub(crate) type Apart<'a> = &'a [(&'a str, Lineage)];

/// Checks the container's root at `root` (absolute, canonical) against what libcontainer will
/// do with it by path. `host_roots` are the host's `/` and the policy's host root; `apart`
/// names what the root must neither be, hold, nor lie inside.
pub(crate) fn check(
    root: &Path,
    destinations: &[&Path],
    host_roots: &[Lineage],
    apart: Apart,
) -> Result<()> {
    let refusing = |rule: String| -> anyhow::Error {
        anyhow::anyhow!(
            "the bootstrap policy refuses root.path {}: {rule}",
            root.display()
        )
    };
    let host = Root::open("/")
        .context("opening / for the container's root")?
        .with_resolver_flags(ResolverFlags::NO_SYMLINKS);
    let handle: OwnedFd = host
        .resolve(root)
        .map_err(|err| {
            refusing(format!(
                "it must be a directory reached with no symlink ({err})"
            ))
        })?
        .into();
    let lineage = Lineage::of(root, &handle)?;
    for host_root in host_roots {
        if lineage.relation(host_root) == Some(super::reach::Relation::Is) {
            return Err(refusing(format!(
                "it is the host's root {}; libcontainer would make devices and links in it",
                host_root.path.display()
            )));
        }
    }
    for (what, other) in apart {
        if let Some(relation) = lineage.relation(other) {
            return Err(refusing(format!(
                "it {} {what} {}, where something else can write while the root is prepared",
                relation.verb(),
                other.path.display()
            )));
        }
    }
    check_dev(root, &handle)?;
    check_destinations(root, &handle, destinations)
}

/// No mount lands on the root itself through a symlink of the image (`/x -> /`, a mount at
/// `/x`): libcontainer places mounts with symlinks followed inside the root, and one stacked
/// on the root would replace what was checked before the joins. (The policy refuses `/` by
/// name.)
fn check_destinations(root: &Path, handle: &OwnedFd, destinations: &[&Path]) -> Result<()> {
    let identity = |fd: &OwnedFd| fstat(fd.as_raw_fd()).map(|st| (st.st_dev, st.st_ino));
    let own = identity(handle).with_context(|| format!("reading {}", root.display()))?;
    let inside = pathrs::RootRef::from_fd(std::os::fd::AsFd::as_fd(handle));
    for destination in destinations {
        let Ok(target) = inside.resolve(destination) else {
            continue; // missing: libcontainer creates it, a directory of the root
        };
        let target: OwnedFd = target.into();
        if identity(&target).ok() == Some(own) {
            bail!(
                "the bootstrap policy refuses the mount at {}: in the image it leads to the container's root (a symlink), and a mount there would replace root.path after the runtime checked it",
                destination.display()
            );
        }
    }
    Ok(())
}

/// `/dev` in the root: absent, or a directory.
fn check_dev(root: &Path, handle: &OwnedFd) -> Result<()> {
    let stat = match fstatat(
        Some(handle.as_raw_fd()),
        "dev",
        AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(stat) => stat,
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(err) => {
            return Err(err).with_context(|| format!("reading {}/dev", root.display()));
        }
    };
    match stat.st_mode & libc::S_IFMT {
        libc::S_IFDIR => Ok(()),
        libc::S_IFLNK => {
            let target = nix::fcntl::readlinkat(Some(handle.as_raw_fd()), "dev")
                .map(PathBuf::from)
                .unwrap_or_default();
            bail!(
                "the bootstrap policy refuses the container's root {}: its /dev is a symlink (to {}); libcontainer 0.7.0 creates /dev/ptmx, /dev/fd and /dev/std* by path before pivot_root and would follow it on the host",
                root.display(),
                target.display()
            )
        }
        _ => bail!(
            "the bootstrap policy refuses the container's root {}: its /dev is not a directory",
            root.display()
        ),
    }
}
