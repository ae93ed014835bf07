//! The config's cgroup filesystem, mounted by our own code as runc 1.1 binds it: each host
//! hierarchy at the container's own cgroup, read-only when the config says `ro`.
//!
//! libcontainer 0.7.0 cannot be given a cgroup mount: on cgroup v1 it binds each hierarchy at
//! the runtime's cgroup read-write whatever the options (`name=systemd` at the host's hierarchy
//! root, `release_agent` in view), and names the comount links by plain joins before
//! `pivot_root` (an image's `/sys` symlink would plant them on the host); on cgroup v2 it mounts
//! a fresh cgroup2 showing the whole host hierarchy. So the spec it gets has a tmpfs placeholder
//! at the destination instead (it makes the mount point inside the root, on handles), and once
//! it has created the container — its init waiting for `start`, nothing of the container run,
//! the policy's host mounts not attached yet — we make the placeholder private and bind, in the
//! container's mount namespace:
//! - on cgroup v1 (and hybrid): a fresh tmpfs with a directory per hierarchy, each the
//!   container's cgroup there (from `/proc/<init>/cgroup`), comounted names linked as runc
//!   links them, the tmpfs then sealed read-only;
//! - on cgroup v2: the container's cgroup itself.
//!
//! A hierarchy where the container has no cgroup of its own (`name=systemd` and the hybrid
//! `unified`, where libcgroups makes none, so the init is in the runtime's cgroup) is bound
//! read-only whatever the config says. With `ro` everything is read-only, submounts too.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libcgroups::common::DEFAULT_CGROUP_ROOT;
use libcontainer::oci_spec::runtime::{Mount, Spec};
use nix::unistd::Pid;

use super::host_mounts::{self, InMountNamespace};
use super::mountinfo::MountTable;

/// A cgroup mount the config asked for, taken out of libcontainer's spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CgroupMount {
    /// Where, inside the container (as libcontainer placed its placeholder).
    pub destination: PathBuf,
    /// The config said `ro`.
    pub read_only: bool,
}

/// Replaces every `cgroup`/`cgroup2` mount of `spec` by a tmpfs placeholder at the same
/// destination, and returns what to mount there.
pub(crate) fn split(spec: &mut Spec) -> Vec<CgroupMount> {
    let mut taken = Vec::new();
    for mount in spec.mounts_mut().iter_mut().flatten() {
        if !matches!(mount.typ().as_deref(), Some("cgroup" | "cgroup2")) {
            continue;
        }
        let read_only = mount.options().iter().flatten().any(|o| o == "ro");
        taken.push(CgroupMount {
            destination: mount.destination().clone(),
            read_only,
        });
        *mount = placeholder(mount.destination());
    }
    taken
}

fn placeholder(destination: &Path) -> Mount {
    let mut mount = Mount::default();
    mount
        .set_destination(destination.to_path_buf())
        .set_typ(Some("tmpfs".into()))
        .set_source(Some("tmpfs".into()))
        .set_options(Some(
            ["nosuid", "nodev", "noexec", "mode=755", "size=64k"]
                .map(String::from)
                .to_vec(),
        ));
    mount
}

/// One hierarchy as the init sees it.
struct Hierarchy {
    /// Its name in the container's /sys/fs/cgroup: the host's mount point's name.
    name: String,
    /// The init's cgroup in it, on the host.
    source: PathBuf,
    /// The init is in the container's own cgroup there.
    own: bool,
}

/// Mounts each of `mounts` in the created container whose init is `pid`; `owned` is the
/// container's cgroup relative to each hierarchy's root.
pub(crate) fn attach(pid: Pid, mounts: &[CgroupMount], owned: &Path) -> Result<()> {
    if mounts.is_empty() {
        return Ok(());
    }
    let table = MountTable::read()?;
    let hierarchies = hierarchies(pid, &table, owned)?;
    for mount in mounts {
        attach_one(pid, mount, &hierarchies).with_context(|| {
            format!(
                "mounting the container's cgroups at {}",
                mount.destination.display()
            )
        })?;
    }
    Ok(())
}

fn attach_one(pid: Pid, mount: &CgroupMount, hierarchies: &[Hierarchy]) -> Result<()> {
    // Clones are taken in the host's namespace.
    let trees = hierarchies
        .iter()
        .map(|h| host_mounts::clone_path(&h.source, mount.read_only || !h.own))
        .collect::<Result<Vec<OwnedFd>>>()?;
    // libcontainer's placeholder tmpfs, where it placed it inside the root.
    let top = host_mounts::in_container_root(pid, &mount.destination)?;
    let _inside = InMountNamespace::enter(pid)?;
    // Nothing attached here propagates: should the image's symlinks and a later mount have
    // put a bind shared with the host on top of the placeholder, our binds stay inside.
    host_mounts::make_private(top.as_raw_fd())?;
    if let [Hierarchy { name, .. }] = hierarchies {
        if name.is_empty() {
            // cgroup v2: the container's cgroup over the placeholder.
            return host_mounts::move_mount(&trees[0], &top);
        }
    }
    let dirs = pathrs::RootRef::from_fd(top.as_fd())
        .with_resolver_flags(pathrs::flags::ResolverFlags::NO_SYMLINKS);
    for (hierarchy, tree) in hierarchies.iter().zip(&trees) {
        let name = hierarchy.name.as_str();
        mkdir(&top, name)?;
        let dir = dirs
            .resolve(name)
            .with_context(|| format!("opening the mount point {name}"))?;
        host_mounts::move_mount(tree, dir.as_fd())?;
        // cpu,cpuacct is also reachable as cpu and cpuacct, as runc links them.
        if name.contains(',') {
            for alias in name.split(',') {
                nix::unistd::symlinkat(name, Some(top.as_raw_fd()), alias)
                    .with_context(|| format!("linking {alias} to {name}"))?;
            }
        }
    }
    let submounts = if mount.read_only {
        libc::AT_RECURSIVE as libc::c_uint
    } else {
        0
    };
    host_mounts::set_read_only(top.as_raw_fd(), submounts)
}

fn mkdir(dir: &OwnedFd, name: &str) -> Result<()> {
    nix::sys::stat::mkdirat(
        Some(dir.as_raw_fd()),
        name,
        nix::sys::stat::Mode::from_bits_truncate(0o755),
    )
    .with_context(|| format!("creating the mount point {name}"))
}

/// The init's cgroup in each hierarchy mounted on the host under `/sys/fs/cgroup` (v1
/// controllers, named hierarchies, the hybrid cgroup2), or the single cgroup2 hierarchy (with
/// an empty name) on a unified host.
fn hierarchies(pid: Pid, table: &MountTable, owned: &Path) -> Result<Vec<Hierarchy>> {
    let cgroups = procfs::process::Process::new(pid.as_raw())
        .and_then(|process| process.cgroups())
        .with_context(|| format!("reading /proc/{pid}/cgroup"))?;
    // controllers ("cpu,cpuacct", "name=systemd", "" for cgroup2) -> the init's cgroup
    let of_init: HashMap<String, PathBuf> = cgroups
        .into_iter()
        .map(|cgroup| {
            let path = PathBuf::from(cgroup.pathname.trim_start_matches('/'));
            (cgroup.controllers.join(","), path)
        })
        .collect();
    let root = Path::new(DEFAULT_CGROUP_ROOT);
    let mut hierarchies = Vec::new();
    for entry in table.0.iter().filter(|m| m.point.starts_with(root)) {
        let cgroup = of_init.iter().find_map(|(controllers, cgroup)| {
            let matches = match entry.fs_type.as_str() {
                "cgroup2" => controllers.is_empty(),
                "cgroup" => {
                    !controllers.is_empty()
                        && controllers
                            .split(',')
                            .all(|c| entry.cgroup_options.iter().any(|o| o == c))
                }
                _ => false,
            };
            matches.then_some(cgroup)
        });
        let Some(cgroup) = cgroup else {
            continue;
        };
        let name = if entry.point == root {
            String::new()
        } else {
            entry
                .point
                .strip_prefix(root)?
                .to_string_lossy()
                .into_owned()
        };
        if name.contains('/') {
            continue; // not a hierarchy of its own
        }
        hierarchies.push(Hierarchy {
            source: entry.point.join(cgroup),
            own: cgroup.as_path() == owned,
            name,
        });
    }
    if hierarchies.is_empty() {
        bail!("no cgroup hierarchy of the container's init is mounted under /sys/fs/cgroup");
    }
    Ok(hierarchies)
}
