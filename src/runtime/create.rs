//! `create`: the policy applied to the bundle, the cgroup claimed, libcontainer's container,
//! its bind mounts checked against what the policy judged, then our host mounts.
//! Any failure removes everything the attempt made.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::unistd::Pid;

use super::cgroup::Owned;
use super::host_mounts::{HostMount, ReadOnly};
use super::mountinfo::MountTable;
use super::reach::{self, Lineage};
use super::{
    bind_sources, cgroup_mounts, creating, derived_bundle, host_mounts, host_sources, init,
    libcontainer_error, rootfs, seccomp_filter, Runtime,
};
use crate::atomic_file;
use crate::policy::Policy;

pub(crate) struct CreateRequest<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub pid_file: Option<&'a Path>,
    pub console_socket: Option<&'a Path>,
    pub no_pivot: bool,
    pub preserve_fds: i32,
    /// False for `run` in the foreground.
    pub detach: bool,
    /// A directory besides the bundle the root may lie inside: the supervisor's operator
    /// bundle, whose config it rewrote into a bundle of its own.
    pub root_area: Option<&'a Path>,
}

impl Runtime {
    /// Creates the container; returns the pid of its init, waiting for `start`.
    pub(crate) fn create(&self, request: &CreateRequest) -> Result<Pid> {
        let id = request.id;
        let _lock = self.lock(id)?;
        let container_dir = self.root.container_dir(id);
        let derived_dir = self.root.derived_dir(id);
        if container_dir.exists() || derived_dir.exists() {
            bail!("container {id:?} already exists");
        }
        let bundle = request
            .bundle
            .canonicalize()
            .with_context(|| format!("bundle {}", request.bundle.display()))?;
        let policy = self.policy()?;
        std::fs::create_dir(&derived_dir)
            .with_context(|| format!("creating {}", derived_dir.display()))?;
        let created = self.create_in(request, &bundle, &derived_dir, &policy);
        if created.is_err() {
            if let Err(cleanup) = self.remove_leftovers(id) {
                log::warn!("cleaning up after the failed create of {id:?}: {cleanup:#}");
            }
        }
        created
    }

    fn create_in(
        &self,
        request: &CreateRequest,
        bundle: &Path,
        derived_dir: &Path,
        policy: &Policy,
    ) -> Result<Pid> {
        let table = MountTable::read()?;
        let protected = reach::protected(&policy.protected_dirs)?;
        let mut derived = derived_bundle::write(
            derived_dir,
            bundle,
            policy,
            &self.seccomp_cache,
            &table,
            &protected,
        )?;
        check_host_mounts(&derived.host_mounts, &protected)?;
        let mut within = vec![bundle];
        within.extend(request.root_area);
        let root = check_root(&derived.root, &within, policy, &protected)?;
        derived_bundle::place(derived_dir, &mut derived, &root)?;
        let mut owned = Owned::claim(
            derived.cgroups_path.clone(),
            request.id,
            self.systemd_cgroup,
            derived_dir,
            &table,
        )?;
        host_sources::prepare_shared(&derived.host_mounts, &policy.host_root, &table)?;
        let filter = derived.seccomp_filter;
        // Held across libcontainer's forks, dropped here when create_in returns.
        let _creating = creating::Creating::hold(derived_dir)?;
        let container = bind_sources::staged(derived_dir, &derived.binds, || {
            ContainerBuilder::new(request.id.to_string(), SyscallType::default())
                .with_root_path(self.root.path())?
                .with_console_socket(request.console_socket)
                .with_preserved_fds(request.preserve_fds)
                .with_executor(seccomp_filter::Executor { filter })
                .as_init(derived_dir)
                .with_systemd(self.systemd_cgroup)
                .with_detach(request.detach)
                .with_no_pivot(request.no_pivot)
                .build()
                .map_err(libcontainer_error)
                .context("creating the container")
        })?;
        let pid = container
            .pid()
            .context("libcontainer reported no pid for the new container")?;
        init::record(derived_dir, pid)?;
        owned.record_made(derived_dir, &table)?;
        bind_sources::verify(pid, &derived.binds)?;
        // Before the host mounts: a destination the image aims (by symlinks) into where they
        // go then leads to libcontainer's placeholder, never to a clone shared with the host.
        cgroup_mounts::attach(pid, &derived.cgroup_mounts, &owned.relative()?)?;
        host_mounts::with_aliases(&mut derived.host_mounts, &policy.host_root, &table);
        host_mounts::attach(pid, &derived.host_mounts, &table)?;
        if let Some(pid_file) = request.pid_file {
            write_pid_file(pid_file, pid)?;
        }
        Ok(pid)
    }
}

/// The policy's writable host mounts (the mount area, the shared directories) must stay apart
/// from the runtime's and supervisor's state.
fn check_host_mounts(mounts: &[HostMount], protected: &[Lineage]) -> Result<()> {
    for mount in mounts.iter().filter(|m| m.read_only == ReadOnly::No) {
        let Some(lineage) = Lineage::open(&mount.source)? else {
            continue; // a shared directory not made yet: host_sources.rs creates it, empty
        };
        if let Some((state, relation)) = lineage.reaching(protected, true) {
            bail!(
                "the bootstrap policy refuses the writable host mount of {} at {}: it {} {}, the runtime's own state, which no container may reach",
                mount.source.display(),
                mount.target.display(),
                relation.verb(),
                state.path.display()
            );
        }
    }
    Ok(())
}

/// rootfs.rs's check, with what the root must lie inside (`within`: the bundle, and the
/// caller's root area) and stay apart from (the protected state, and what other containers can
/// write); returns the root, opened.
fn check_root(
    root: &Path,
    within: &[&Path],
    policy: &Policy,
    protected: &[Lineage],
) -> Result<OwnedFd> {
    // Symlinks followed: the operator may name its bundle through one.
    let within: Vec<Lineage> = within
        .iter()
        .map(|p| {
            p.canonicalize()
                .with_context(|| format!("resolving {}", p.display()))
        })
        .filter_map(|p| p.and_then(|p| Lineage::open(&p)).transpose())
        .collect::<Result<_>>()?;
    let host_roots: Vec<Lineage> = [Path::new("/"), &policy.host_root]
        .into_iter()
        .filter_map(|p| Lineage::open(p).transpose())
        .collect::<Result<_>>()?;
    let mut apart: Vec<(&str, Lineage)> = protected
        .iter()
        .map(|l| ("the runtime's own state", l.clone()))
        .collect();
    let writers = std::iter::once(("the host mount area", policy.host_mount_area.clone()))
        .chain(policy.shared_dirs.iter().map(|d| {
            (
                "the shared directory",
                crate::policy::under(&policy.host_root, d),
            )
        }))
        .chain(
            policy
                .writable_binds
                .iter()
                .map(|d| ("the writable-binds source", d.clone())),
        );
    for (what, path) in writers {
        // Symlinks followed: a source the operator named by a symlink is still that source.
        let Ok(real) = path.canonicalize() else {
            continue;
        };
        if let Some(lineage) = Lineage::open(&real)? {
            apart.push((what, lineage));
        }
    }
    rootfs::check(root, &within, &host_roots, &apart)
}

/// runc's pid file: the decimal pid, no newline, replaced atomically.
pub(super) fn write_pid_file(path: &Path, pid: Pid) -> Result<()> {
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    atomic_file::replace(&path, pid.to_string().as_bytes(), 0o644)
        .with_context(|| format!("writing pid file {}", PathBuf::from(&path).display()))
}
