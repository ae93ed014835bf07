//! On cgroup v2, the containers' cgroups go under the supervisor's own cgroup, so that they die
//! with its systemd unit.
//!
//! Without `linux.cgroupsPath` libcontainer names a container's cgroup `:youki:<id>`; with the
//! cgroupfs driver (the supervisor never passes `--systemd-cgroup`) that is a child of the root,
//! `/sys/fs/cgroup/:youki:boot.<name>`, outside `bootstrap-containers.service`: when the
//! supervisor was killed, systemd neither killed the containers with the unit (KillMode=mixed
//! SIGKILLs what is left in the unit's cgroup tree) nor waited for them, and they ran on. (On a
//! hybrid host it worked by accident: libcgroups' v1 hierarchies leave the processes in the
//! unit's cgroup in the unified hierarchy, the one systemd tracks units by. We change nothing
//! there.)
//!
//! So on v2, when the supervisor is alone in its cgroup (its unit's, `Delegate=yes`), it moves
//! itself into the leaf `<own>/supervisor` and each container gets `<own>/boot.<name>`. The
//! move is needed because a cgroup holding processes cannot enable controllers for its children
//! (the no-internal-processes rule): libcgroups' attempt would fail and a container's limits
//! with it. At exit the supervisor moves back and removes the leaf and the controllers it led
//! libcgroups to enable, leaving the cgroup as it found it; if it is killed, systemd removes the
//! unit's whole (delegated) tree. Sharing its cgroup (run by hand from a shell: the shell's
//! session scope) it changes nothing and the containers get libcontainer's default, as before.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use libcgroups::common::{CgroupSetup, DEFAULT_CGROUP_ROOT};

const LEAF: &str = "supervisor";

/// The supervisor's cgroup, taken over for the containers; given back when dropped.
pub(crate) struct Delegated {
    /// The cgroup's path in the hierarchy, as `/proc/self/cgroup` gives it.
    own: PathBuf,
    /// Controllers already enabled for its children when we took it.
    initial_controllers: Vec<String>,
}

impl Delegated {
    /// Takes over this process's cgroup on a cgroup v2 host, if it is alone in it and not at
    /// the root; None (and the containers keep libcontainer's default) otherwise.
    pub(crate) fn take() -> Option<Delegated> {
        if !matches!(
            libcgroups::common::get_cgroup_setup(),
            Ok(CgroupSetup::Unified)
        ) {
            return None;
        }
        let own = own_cgroup()?;
        if own == Path::new("/") {
            // The root takes processes and children alike; there is no unit to die with.
            return None;
        }
        let dir = fs_path(&own);
        let me = std::process::id().to_string();
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).ok()?;
        if procs.lines().any(|pid| pid != me) {
            log::debug!(
                "cgroup {} holds other processes: containers get libcontainer's default cgroup",
                own.display()
            );
            return None;
        }
        let initial_controllers = controllers(&dir);
        let leaf = dir.join(LEAF);
        match move_into(&leaf) {
            Ok(()) => Some(Delegated {
                own,
                initial_controllers,
            }),
            Err(err) => {
                log::warn!(
                    "moving into {}: {err:#}; containers get libcontainer's default cgroup",
                    leaf.display()
                );
                let _ = std::fs::remove_dir(&leaf);
                None
            }
        }
    }

    /// The cgroup the containers' cgroups go in (their `linux.cgroupsPath` is `<parent>/<id>`).
    pub(crate) fn parent(&self) -> &Path {
        &self.own
    }
}

impl Drop for Delegated {
    fn drop(&mut self) {
        let dir = fs_path(&self.own);
        let others: Vec<_> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()) && e.file_name() != LEAF)
            .map(|e| e.file_name())
            .collect();
        if !others.is_empty() {
            // Disabling controllers would strip them from a cgroup still in use.
            log::warn!(
                "cgroups left under {}: {others:?}; staying in {LEAF}",
                dir.display()
            );
            return;
        }
        let result = (|| -> Result<()> {
            for controller in controllers(&dir) {
                if !self.initial_controllers.contains(&controller) {
                    write(
                        &dir.join("cgroup.subtree_control"),
                        &format!("-{controller}"),
                    )?;
                }
            }
            write(&dir.join("cgroup.procs"), &std::process::id().to_string())?;
            let leaf = dir.join(LEAF);
            std::fs::remove_dir(&leaf).with_context(|| format!("removing {}", leaf.display()))
        })();
        if let Err(err) = result {
            log::warn!("giving back cgroup {}: {err:#}", self.own.display());
        }
    }
}

/// This process's cgroup v2 path (`0::<path>` in /proc/self/cgroup).
fn own_cgroup() -> Option<PathBuf> {
    let cgroups = procfs::process::Process::myself()
        .and_then(|process| process.cgroups())
        .ok()?;
    cgroups
        .into_iter()
        .find(|cgroup| cgroup.hierarchy == 0 && cgroup.controllers.is_empty())
        .map(|cgroup| PathBuf::from(cgroup.pathname))
}

fn fs_path(cgroup: &Path) -> PathBuf {
    Path::new(DEFAULT_CGROUP_ROOT).join(cgroup.strip_prefix("/").unwrap_or(cgroup))
}

fn controllers(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("cgroup.subtree_control"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn move_into(leaf: &Path) -> Result<()> {
    if !leaf.exists() {
        std::fs::create_dir(leaf).with_context(|| format!("creating {}", leaf.display()))?;
    }
    write(&leaf.join("cgroup.procs"), &std::process::id().to_string())
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}
