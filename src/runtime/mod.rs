//! The runtime: container lifecycle on top of libcontainer, with the policy applied on create.

pub(crate) mod attach_wait;
pub(crate) mod bind_sources;
pub(crate) mod cgroup;
pub(crate) mod cgroup_mounts;
pub(crate) mod cleanup;
pub(crate) mod create;
pub(crate) mod creating;
pub(crate) mod derived_bundle;
pub(crate) mod exec;
pub(crate) mod foreground;
pub(crate) mod host_mounts;
pub(crate) mod host_sources;
pub(crate) mod init;
pub(crate) mod kill;
pub(crate) mod mountinfo;
pub(crate) mod oci_state;
pub(crate) mod reach;
pub(crate) mod rootfs;
pub(crate) mod run;
pub mod sealed_exe;
pub(crate) mod seccomp_filter;
pub(crate) mod state_root;
pub(crate) mod update;

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use libcgroups::common::CgroupManager;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::error::LibcontainerError;

use crate::container_id;
use crate::policy::{self, file::Overrides, Policy};
use cgroup::Owned;
use init::Init;
use state_root::{ContainerLock, StateRoot};

/// What every command needs: where state lives and how cgroups and the policy are set up.
pub(crate) struct Runtime {
    pub root: StateRoot,
    pub systemd_cgroup: bool,
    pub policy_overrides: Overrides,
    /// Where compiled seccomp filters are kept (seccomp_filter.rs): the state root's
    /// `.seccomp`, or the supervisor's `<state-dir>/seccomp`, which outlives the boot.
    pub seccomp_cache: PathBuf,
}

impl Runtime {
    /// The effective policy: flags, then the policy file, then defaults; host paths resolved;
    /// the state root and seccomp cache protected.
    pub(crate) fn policy(&self) -> Result<Policy> {
        let file = policy::file::path();
        let mut policy = policy::file::load(&file, &self.policy_overrides)?;
        policy
            .protected_dirs
            .extend([self.root.path().to_path_buf(), self.seccomp_cache.clone()]);
        let flags = &self.policy_overrides;
        for (what, flag, given, path) in [
            (
                "host root",
                "--host-root",
                flags.host_root.is_some(),
                &mut policy.host_root,
            ),
            (
                "host mount area",
                "--host-mount-area",
                flags.host_mount_area.is_some(),
                &mut policy.host_mount_area,
            ),
        ] {
            // Name where the value came from: the flag, else the file or its default.
            let source = if given {
                format!("{what} from {flag}")
            } else {
                format!(
                    "{what} from policy file {} (or its default)",
                    file.display()
                )
            };
            *path = path
                .canonicalize()
                .with_context(|| format!("{source}: {}", path.display()))?;
        }
        // Compared by name with sources and the host root: symlinks resolved. A missing one
        // holds nothing to protect (reach.rs skips it too).
        for dirs in [&mut policy.protected_dirs, &mut policy.state_dirs] {
            let mut resolved = Vec::with_capacity(dirs.len());
            for dir in dirs.iter() {
                match dir.canonicalize() {
                    Ok(real) => resolved.push(real),
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => {
                        return Err(err).with_context(|| format!("resolving {}", dir.display()))
                    }
                }
            }
            *dirs = resolved;
        }
        Ok(policy)
    }

    /// Validates the id and takes the container's lock.
    pub(crate) fn lock(&self, id: &str) -> Result<ContainerLock> {
        container_id::validate(id)?;
        self.root.lock(id)
    }

    /// Loads a container's state. The caller holds its lock.
    pub(crate) fn load(&self, id: &str) -> Result<Container> {
        self.load_with_init(id).map(|(container, _)| container)
    }

    /// Loads a container's state with its init as recorded at create (init.rs), which takes
    /// the place of `state.json`'s pid: libcontainer then acts on that process alone, and a
    /// container whose init is gone is stopped.
    pub(crate) fn load_with_init(&self, id: &str) -> Result<(Container, Option<Init>)> {
        let dir = self.root.container_dir(id);
        if !dir.exists() {
            bail!("container {id:?} does not exist");
        }
        let unreadable =
            || format!("container {id:?} has unreadable state (delete --force removes it)");
        let mut container = Container::load(dir).with_context(unreadable)?;
        let derived_dir = self.root.derived_dir(id);
        let owned = Owned::recorded(&derived_dir).with_context(unreadable)?;
        let init = Init::find(&derived_dir, owned.as_ref()).with_context(unreadable)?;
        if init.is_none() && !init::recorded(&derived_dir) {
            // A create cut short: state.json's init (if any) is what libcontainer made, and
            // `delete --force` must kill it.
            return Ok((container, None));
        }
        let pid = init.as_ref().map(|init| init.pid);
        if container.pid() != pid && container.status() != ContainerStatus::Stopped {
            log::warn!(
                "container {id:?}: state.json names pid {:?}, the runtime recorded {pid:?}; acting on the recorded one",
                container.pid()
            );
        }
        container.state.pid = pid.map(|p| p.as_raw());
        container.refresh_status().with_context(unreadable)?;
        Ok((container, init))
    }

    pub(crate) fn start(&self, id: &str) -> Result<()> {
        let _lock = self.lock(id)?;
        let mut container = self.load(id)?;
        container
            .start()
            .map_err(|err| status_error(err, id, "start"))
    }

    pub(crate) fn pause(&self, id: &str) -> Result<()> {
        let _lock = self.lock(id)?;
        self.load(id)?
            .pause()
            .map_err(|err| status_error(err, id, "pause"))
    }

    pub(crate) fn resume(&self, id: &str) -> Result<()> {
        let _lock = self.lock(id)?;
        self.load(id)?
            .resume()
            .map_err(|err| status_error(err, id, "resume"))
    }

    /// Host pids of every process in the container's cgroup.
    pub(crate) fn pids(&self, id: &str) -> Result<Vec<i32>> {
        let _lock = self.lock(id)?;
        let container = self.load(id)?;
        let manager = self.cgroup_manager(&container, id)?;
        let mut pids: Vec<i32> = manager
            .get_all_pids()
            .context("listing the container's processes")?
            .into_iter()
            .map(|p| p.as_raw())
            .collect();
        pids.sort_unstable();
        Ok(pids)
    }
}

impl Runtime {
    /// The manager of the container's own cgroup: the path recorded at create, which
    /// runtime/cgroup.rs checked was new (never the one libcontainer's state names).
    fn cgroup_manager(
        &self,
        container: &Container,
        id: &str,
    ) -> Result<libcgroups::common::AnyCgroupManager> {
        let owned = Owned::recorded(&self.root.derived_dir(id))?
            .with_context(|| format!("container {id:?} has no recorded cgroup"))?;
        libcgroups::common::create_cgroup_manager(libcgroups::common::CgroupConfig {
            cgroup_path: owned.path,
            systemd_cgroup: container.systemd(),
            container_name: id.to_string(),
        })
        .context("opening the container's cgroup")
    }
}

/// libcontainer's error, in runc's words where libcontainer's name youki (the class of
/// messages that would point a user at another program).
fn libcontainer_error(err: LibcontainerError) -> anyhow::Error {
    use libcontainer::error::ErrInvalidSpec;
    match err {
        LibcontainerError::InvalidSpec(ErrInvalidSpec::ConsoleSocketRequired) => anyhow!(
            "cannot allocate tty if bootstrap-runc will detach without setting console socket"
        ),
        LibcontainerError::InvalidSpec(ErrInvalidSpec::InvalidConsoleSocket) => {
            anyhow!("cannot use console socket if bootstrap-runc will not detach or allocate tty")
        }
        other => anyhow::Error::new(other),
    }
}

/// runc's wording for lifecycle errors, which containerd matches on ("not running").
fn status_error(err: LibcontainerError, id: &str, action: &str) -> anyhow::Error {
    match err {
        LibcontainerError::IncorrectStatus(ContainerStatus::Stopped) => {
            anyhow!("cannot {action} container {id:?}: container not running")
        }
        LibcontainerError::IncorrectStatus(status) => {
            anyhow!("cannot {action} container {id:?} in status {status}")
        }
        other => anyhow::Error::new(other).context(format!("{action} container {id:?}")),
    }
}
