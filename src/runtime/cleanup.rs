//! `delete`, and removal of whatever a container left behind, from its id alone: what a failed
//! create, a SIGKILLed runtime or a corrupt state file leaves is removed the same way.

use std::path::Path;

use anyhow::{bail, Context, Result};
use libcgroups::common::CgroupManager;
use libcontainer::container::{Container, ContainerStatus};

use super::cgroup::Owned;
use super::creating;
use super::init::{self, Init};
use super::{status_error, Runtime};

impl Runtime {
    pub(crate) fn delete(&self, id: &str, force: bool) -> Result<()> {
        let _lock = self.lock(id)?;
        self.delete_locked(id, force)
    }

    /// `delete` with the container's lock held.
    fn delete_locked(&self, id: &str, force: bool) -> Result<()> {
        let container_dir = self.root.container_dir(id);
        let derived_dir = self.root.derived_dir(id);
        if !container_dir.exists() && !derived_dir.exists() {
            if force {
                return Ok(());
            }
            bail!("container {id:?} does not exist");
        }
        match self.load_with_init(id) {
            Ok((mut container, _)) => {
                // Children first: libcgroups removes only the container's own directory.
                // libcontainer's delete goes by path: it would kill in, and remove, a
                // directory made again there by someone else. Ours are gone by then.
                let stopped = container.status() == ContainerStatus::Stopped;
                if (force || stopped) && self.remove_cgroup_tree(id)? {
                    return self.remove_state(id);
                }
                match container.delete(force) {
                Ok(()) => {
                    if derived_dir.exists() {
                        std::fs::remove_dir_all(&derived_dir)
                            .with_context(|| format!("removing {}", derived_dir.display()))?;
                    }
                }
                // A create killed midway leaves a state "creating" with no pid, whose runtime
                // processes libcontainer does not kill: its cgroup cannot be removed. (Found by
                // integration/faults.rs: SIGKILL at the init's first sync-socket call.)
                Err(err) if force => {
                    log::warn!("deleting container {id:?} ({err}); removing what it left");
                    self.remove_leftovers(id)?;
                }
                Err(err) => return Err(status_error(err, id, "delete")),
                }
            }
            Err(err) if force => {
                log::warn!("container {id:?} has no readable state ({err}); removing what it left");
                self.remove_leftovers(id)?;
            }
            Err(_) => bail!(
                "container {id:?} was not completely created or its state is unreadable; delete --force removes it"
            ),
        }
        Ok(())
    }

    /// `run`'s delete, once the init it waited for has exited: `run` knows what it made, so
    /// the cgroup's directories are removed after one read of mountinfo, where libcontainer's
    /// general delete has libcgroups v1 read it once per controller (~3 ms of a 35 ms `run`).
    /// Anything else (a process left in the cgroup, systemd's cgroups, Intel RDT) takes the
    /// general path, `delete --force`. Only the instance `made` is deleted: once it ended,
    /// someone (a supervisor run again after its runtime was killed) may have deleted it and
    /// made the id again, and that container is left alone.
    pub(crate) fn delete_after_run(&self, id: &str, made: &init::Record) -> Result<()> {
        let _lock = self.lock(id)?;
        if init::instance(&self.root.derived_dir(id))?.as_ref() != Some(made) {
            log::info!("container {id:?} was deleted, or made again, while it ran: left alone");
            return Ok(());
        }
        match self.remove_exited(id) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(err) => log::debug!("deleting {id:?} the general way: {err:#}"),
        }
        self.delete_locked(id, true)
    }

    /// Removes an exited container's cgroup and state when nothing but its empty cgroup
    /// directories is left; false, with the state untouched, otherwise.
    fn remove_exited(&self, id: &str) -> Result<bool> {
        let derived_dir = self.root.derived_dir(id);
        let container = self.load(id)?;
        let owned = match Owned::recorded(&derived_dir)? {
            Some(owned) if !owned.systemd && container.intel_rdt_dir().is_none() => owned,
            _ => return Ok(false),
        };
        if container.pid().is_some() {
            return Ok(false); // the init still lives
        }
        for dir in owned.directories()? {
            if !owned.is_made(&dir) {
                return Ok(false); // someone else's now: the general path leaves it alone
            }
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                // EBUSY: a process is left in it; the general path kills it.
                Err(_) => return Ok(false),
            }
        }
        for dir in [self.root.container_dir(id), derived_dir] {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        Ok(true)
    }

    /// The container's cgroup tree killed and removed, when it is on cgroupfs (systemd's
    /// units are libcontainer's `delete` to stop); whether a directory at its path was left
    /// alone as someone else's ([`Owned::remove_tree`]).
    fn remove_cgroup_tree(&self, id: &str) -> Result<bool> {
        let derived_dir = self.root.derived_dir(id);
        match Owned::recorded(&derived_dir)? {
            Some(owned) if !owned.systemd => remove_cgroup_settled(&owned, id, &derived_dir),
            _ => Ok(false),
        }
    }

    /// Removes libcontainer's directory of the container and ours.
    fn remove_state(&self, id: &str) -> Result<()> {
        for dir in [self.root.container_dir(id), self.root.derived_dir(id)] {
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
            }
        }
        Ok(())
    }

    /// Kills the container's processes and removes its cgroup, libcontainer's directory and
    /// ours. Safe to call on a container that is partly or entirely gone.
    pub(super) fn remove_leftovers(&self, id: &str) -> Result<()> {
        let derived_dir = self.root.derived_dir(id);
        let container_dir = self.root.container_dir(id);
        // The init may not be in the cgroup yet when create was interrupted: the one recorded,
        // or, when create was cut short before recording it (nothing of the container ran),
        // the one libcontainer wrote into state.json.
        if init::recorded(&derived_dir) {
            if let Ok(Some(init)) = Init::find(&derived_dir, None) {
                let _ = init.signal(libc::SIGKILL);
            }
        } else if let Some(pid) = Container::load(container_dir.clone())
            .ok()
            .and_then(|c| c.pid())
        {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        // Only the cgroup this runtime claimed: with no record, create never got as far as
        // making one, and whatever is at the path belongs to someone else.
        let cgroup = match Owned::recorded(&derived_dir) {
            Ok(Some(owned)) => remove_cgroup_settled(&owned, id, &derived_dir).map(drop),
            Ok(None) => Ok(()),
            Err(err) => Err(err.context(format!(
                "container {id:?}: its cgroup record is unreadable; leaving the cgroup alone"
            ))),
        };
        self.remove_state(id)?;
        cgroup
    }
}

/// [`remove_cgroup`] once no process of the container's create is left: killing what is in
/// the cgroup ends an init waiting for `start`, but an intermediate or init orphaned by a
/// killed `create` may be outside it, and may make the cgroup again until it ends
/// (creating.rs): those are killed, and then the cgroup is removed again.
fn remove_cgroup_settled(owned: &Owned, id: &str, derived_dir: &Path) -> Result<bool> {
    let removed = remove_cgroup(owned, id);
    if creating::end_leftovers(derived_dir)
        .with_context(|| format!("removing the cgroups of container {id:?}"))?
    {
        return remove_cgroup(owned, id);
    }
    removed
}

/// Kills what is in the container's own cgroup (and, on cgroupfs, the cgroups under it) and
/// removes it; whether a directory at its path was left alone as someone else's.
fn remove_cgroup(owned: &Owned, id: &str) -> Result<bool> {
    if !owned.systemd {
        return owned
            .remove_tree()
            .with_context(|| format!("removing the cgroups of container {id:?}"));
    }
    let manager = libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
        cgroup_path: owned.path.clone(),
        systemd_cgroup: owned.systemd,
        container_name: id.to_string(),
    })
    .context("opening the container's cgroup")?;
    kill_all(&manager);
    manager
        .remove()
        .with_context(|| format!("removing the cgroup of container {id:?}"))?;
    Ok(false)
}

/// SIGKILLs every process in the cgroup until it is empty (for at most a second). libcgroups'
/// `remove` kills only the processes listed when it starts: a runtime process of an
/// interrupted create that is still cloning adds a child after that, and the cgroup stays busy.
fn kill_all(manager: &libcgroups::common::AnyCgroupManager) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while let Ok(pids) = manager.get_all_pids() {
        if pids.is_empty() || std::time::Instant::now() > deadline {
            return;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
