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
//!   write while libcontainer walks the root), and it lies inside the bundle (libcontainer
//!   makes mount points, files and device nodes in it, so a config naming `/etc` would write
//!   there);
//! - its `/dev` is a directory or absent, never a symlink or anything else (libcontainer makes
//!   a missing one a directory);
//! - every mount destination is resolved here in the image as libcontainer will resolve it
//!   ([`land`]), and libcontainer gets the result: none may land on the root itself (it would
//!   replace the checked root before the joins), reach `/proc` or `/.bottlerocket` through a
//!   symlink, or lie under a bind (nor may a `linux.devices` node). The policy refuses a mount
//!   at `/` by name.
//!
//! What runs after `pivot_root` (the working directory, masked and read-only paths) cannot
//! name a host path. Cgroup mounts never reach libcontainer (cgroup_mounts.rs).

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::fcntl::AtFlags;
use nix::sys::stat::{fstat, fstatat};
use pathrs::error::ErrorKind;
use pathrs::flags::ResolverFlags;
use pathrs::{Root, RootRef};

use super::reach::{Lineage, Relation};
use crate::policy;

/// Where other writers are: `(what, lineage)` pairs the root must stay apart from.
pub(crate) type Apart<'a> = &'a [(&'a str, Lineage)];

/// Checks the container's root at `root` (absolute, canonical) against what libcontainer will
/// do with it by path; returns it, opened. `within` are the directories it may lie inside (the
/// bundle, and the directory a caller vouches for, as the supervisor for an operator's
/// bundle): libcontainer makes mount points, empty files and the config's device nodes in the
/// root before anything is read-only, so a config naming a host directory (`/etc`) as its root
/// would write there. `host_roots` are the host's `/` and the policy's host root; `apart`
/// names what the root must neither be, hold, nor lie inside.
pub(crate) fn check(
    root: &Path,
    within: &[Lineage],
    host_roots: &[Lineage],
    apart: Apart,
) -> Result<OwnedFd> {
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
        if lineage.relation(host_root) == Some(Relation::Is) {
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
    if !within
        .iter()
        .any(|dir| lineage.relation(dir) == Some(Relation::Inside))
    {
        let dirs: Vec<String> = within
            .iter()
            .map(|d| d.path.display().to_string())
            .collect();
        return Err(refusing(format!(
            "it must lie inside the bundle ({}); libcontainer makes mount points, files and device nodes in the root before it is read-only",
            dirs.join(" or ")
        )));
    }
    check_dev(root, &handle)?;
    Ok(handle)
}

/// The kernel's limit of symlinks in one resolution (`MAXSYMLINKS`, path_resolution(7)).
const MAX_LINKS: usize = 40;

/// A mount as libcontainer will place it: where the config puts it, and whether it is a bind.
/// Nothing may be placed under a bind: its source is a host directory others may change (the
/// mount area, a bundle, a read-only host directory any host user writes), and libcontainer
/// walks it by path when it makes mount points and device nodes there; other filesystems are
/// fresh, taken as holding no symlink.
pub(crate) struct Layer<'a> {
    pub destination: &'a Path,
    pub bind: bool,
}

/// Where each mount of `layers` (in mount order) lands in the root `handle` (from [`check`]):
/// its destination resolved as libcontainer 0.7.0 will resolve it, in the root with the
/// earlier mounts in place, symlinks followed and clamped to the root (pathrs, as runc's
/// securejoin), here on handles. The landings hold no symlink: handed to libcontainer in place
/// of the destinations, they are where it mounts, and a dangling symlink at a destination (an
/// image's `/etc/resolv.conf -> ../run/systemd/resolve/stub-resolv.conf`) is created inside the
/// root, never outside it. Refused, naming the mount: one landing on the root itself (it would
/// replace root.path after the checks, before libcontainer's /dev joins), one reaching `/proc`
/// or `/.bottlerocket` through a symlink (the policy's rules there go by name), and one under
/// an earlier bind (see [`Layer`]).
pub(crate) fn land(handle: &OwnedFd, layers: &[Layer]) -> Result<Vec<PathBuf>> {
    let mut landings: Vec<PathBuf> = Vec::with_capacity(layers.len());
    for layer in layers {
        let below = below(layers, &landings);
        let landing = landing(handle.as_fd(), &below, layer.destination, "mount")?;
        let refusing = |rule: &str| {
            anyhow::anyhow!(
                "the bootstrap policy refuses the mount at {}: {rule}",
                layer.destination.display()
            )
        };
        if landing == Path::new("/") {
            return Err(refusing(
                "through symlinks in the image it leads to the container's root, and a mount there would replace root.path after the runtime checked it",
            ));
        }
        let named = policy::clean(layer.destination);
        for special in ["/proc", policy::BOTTLEROCKET_DIR] {
            if landing != named && landing.starts_with(special) {
                return Err(refusing(&format!(
                    "through symlinks it lands at {}, and mounts under {special} are judged by their names, so none may reach there through a symlink",
                    landing.display()
                )));
            }
        }
        landings.push(landing);
    }
    Ok(landings)
}

/// Refuses a device of the config (`linux.devices`, `devices` their paths) that lies under a
/// bind once the mounts (`layers`, at `landings` from [`land`]) are in place: libcontainer
/// 0.7.0 resolves a device's path once and then makes its directories and the node by path
/// (`device.rs`), so a writer of the bind's source could turn it onto the host.
pub(crate) fn check_devices(
    handle: &OwnedFd,
    layers: &[Layer],
    landings: &[PathBuf],
    devices: &[&Path],
) -> Result<()> {
    let below = below(layers, landings);
    for device in devices {
        landing(handle.as_fd(), &below, device, "device")?;
    }
    Ok(())
}

/// The mounts in place so far: their landings, and whether each is a bind.
fn below<'a>(layers: &[Layer], landings: &'a [PathBuf]) -> Vec<(&'a Path, bool)> {
    landings
        .iter()
        .zip(layers)
        .map(|(at, layer)| (at.as_path(), layer.bind))
        .collect()
}

/// `destination` (of a `what`, for messages) resolved in the root `root` with the mounts
/// `below` (their landings, and whether each is a bind) in place: an absolute path with no
/// symlink, `..` taken on the resolved path.
fn landing(
    root: BorrowedFd,
    below: &[(&Path, bool)],
    destination: &Path,
    what: &str,
) -> Result<PathBuf> {
    let mut pending: Vec<OsString> = Vec::new();
    let push = |pending: &mut Vec<OsString>, path: &Path| {
        // Last component first: `pop` takes them in order.
        for part in path.components().rev() {
            match part {
                Component::Normal(name) => pending.push(name.to_os_string()),
                Component::ParentDir => pending.push("..".into()),
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
    };
    push(&mut pending, destination);
    let mut at = PathBuf::from("/");
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            at.pop();
            continue;
        }
        let next = at.join(&name);
        if let Some((bind, _)) = below
            .iter()
            .rev()
            .find(|(at, _)| next.starts_with(at))
            .filter(|(at, bind)| *bind && next != *at)
        {
            bail!(
                "the bootstrap policy refuses the {what} at {}: it lies under the bind at {}, whose source others may change while libcontainer makes mount points and device nodes in it by path; place it elsewhere",
                destination.display(),
                bind.display()
            );
        }
        match link_at(root, below, &next)? {
            Some(target) => {
                links += 1;
                if links > MAX_LINKS {
                    bail!(
                        "the bootstrap policy refuses the {what} at {}: more than {MAX_LINKS} symlinks on the way",
                        destination.display()
                    );
                }
                if target.is_absolute() {
                    at = PathBuf::from("/");
                }
                push(&mut pending, &target);
            }
            None => at = next,
        }
    }
    Ok(at)
}

/// The target of the symlink at `path` (absolute in the root, every parent already resolved,
/// nothing under a bind), looked up in the image unless a mount of `below` is there (a fresh
/// filesystem, or a bind's own root: no symlink). `None` for anything else, a missing entry
/// (libcontainer makes it a directory) included.
fn link_at(root: BorrowedFd, below: &[(&Path, bool)], path: &Path) -> Result<Option<PathBuf>> {
    if below.iter().any(|(at, _)| path.starts_with(at)) {
        return Ok(None);
    }
    let rest = path.strip_prefix("/").unwrap_or(path);
    let inside = RootRef::from_fd(root).with_resolver_flags(ResolverFlags::NO_SYMLINKS);
    let reading = || {
        format!(
            "resolving the mount destination {} in the container's root",
            path.display()
        )
    };
    let handle = match inside.resolve_nofollow(rest) {
        Ok(handle) => handle,
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::OsError(Some(libc::ENOENT | libc::ENOTDIR))
            ) =>
        {
            return Ok(None)
        }
        Err(err) => return Err(err).with_context(reading),
    };
    let mode = fstat(handle.as_fd().as_raw_fd())
        .with_context(reading)?
        .st_mode;
    if mode & libc::S_IFMT != libc::S_IFLNK {
        return Ok(None);
    }
    inside.readlink(rest).map(Some).with_context(reading)
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
