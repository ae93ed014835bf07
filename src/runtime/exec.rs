//! `exec`: a new process in a running container, confined by the policy the container was
//! created under.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::oci_spec::runtime::{Capability, Process};
use libcontainer::syscall::syscall::SyscallType;
use nix::unistd::Pid;

use super::{derived_bundle, libcontainer_error, seccomp_filter, Runtime};
use crate::atomic_file;
use crate::policy;

/// What `exec` runs: a complete process, either read from `--process` or built from flags on
/// top of the container's own process (as runc does).
pub(crate) enum ExecProcess<'a> {
    File(&'a Path),
    Flags(ExecFlags),
}

#[derive(Default)]
pub(crate) struct ExecFlags {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub user: Option<(u32, Option<u32>)>,
    pub additional_gids: Vec<u32>,
    pub capabilities: Vec<Capability>,
    pub tty: bool,
}

pub(crate) struct ExecRequest<'a> {
    pub id: &'a str,
    pub process: ExecProcess<'a>,
    pub console_socket: Option<&'a Path>,
    pub pid_file: Option<&'a Path>,
    pub detach: bool,
    pub preserve_fds: i32,
}

impl Runtime {
    /// Starts the process; returns its host pid.
    pub(crate) fn exec(&self, request: &ExecRequest) -> Result<Pid> {
        let id = request.id;
        let lock = self.lock(id)?;
        let (container, init) = self.load_with_init(id)?;
        if container.status() == libcontainer::container::ContainerStatus::Paused {
            bail!("cannot exec in a paused container {id:?}");
        }
        if !container.can_exec() {
            bail!("cannot exec in container {id:?}: container not running");
        }
        let derived_dir = self.root.derived_dir(id);
        check_state_file(
            self.root.container_dir(id),
            &derived_dir,
            init.map(|i| i.pid),
            id,
        )?;
        let meta = derived_bundle::read_meta(&derived_dir)?;
        let process = match &request.process {
            ExecProcess::File(path) => read_process(path)?,
            ExecProcess::Flags(flags) => {
                let spec = derived_bundle::read_spec(&derived_dir)?;
                from_flags(spec.process().clone().unwrap_or_default(), flags)
            }
        };
        let process = policy::apply_to_process(process, &meta.policy)?;
        let filter = meta.seccomp_filter(&derived_dir)?;
        let process_file = derived_dir.join(format!("exec-{}.json", std::process::id()));
        atomic_file::replace(&process_file, &serde_json::to_vec(&process)?, 0o600)?;
        drop(lock);
        let built = ContainerBuilder::new(id.to_string(), SyscallType::default())
            .with_root_path(self.root.path())
            .and_then(|b| {
                b.with_console_socket(request.console_socket)
                    .with_preserved_fds(request.preserve_fds)
                    .with_executor(seccomp_filter::Executor { filter })
                    .as_tenant()
                    .with_detach(request.detach)
                    .with_process(Some(&process_file))
                    .build()
            });
        let _ = std::fs::remove_file(&process_file);
        let pid = built
            .map_err(libcontainer_error)
            .with_context(|| format!("exec in container {id:?}"))?;
        if let Some(pid_file) = request.pid_file {
            super::create::write_pid_file(pid_file, pid)?;
        }
        Ok(pid)
    }
}

/// libcontainer's exec reads `state.json` again and joins the namespaces of the pid there,
/// with the config of the bundle there: both must be what the runtime recorded.
fn check_state_file(
    container_dir: PathBuf,
    derived_dir: &Path,
    init: Option<Pid>,
    id: &str,
) -> Result<()> {
    let on_disk = libcontainer::container::Container::load(container_dir)
        .with_context(|| format!("reading the state of container {id:?}"))?;
    if on_disk.pid() != init || on_disk.bundle() != derived_dir {
        bail!(
            "cannot exec in container {id:?}: its state.json (pid {:?}, bundle {}) is not what the runtime recorded (pid {init:?}, bundle {}); delete --force removes it",
            on_disk.pid(),
            on_disk.bundle().display(),
            derived_dir.display()
        );
    }
    Ok(())
}

fn read_process(path: &Path) -> Result<Process> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

fn from_flags(mut process: Process, flags: &ExecFlags) -> Process {
    process.set_args(Some(flags.args.clone()));
    process.set_terminal(Some(flags.tty));
    let mut env = process.env().clone().unwrap_or_default();
    env.extend(flags.env.iter().cloned());
    process.set_env(Some(env));
    if let Some(cwd) = &flags.cwd {
        process.set_cwd(cwd.clone());
    }
    let mut user = process.user().clone();
    if let Some((uid, gid)) = flags.user {
        user.set_uid(uid);
        if let Some(gid) = gid {
            user.set_gid(gid);
        }
    }
    if !flags.additional_gids.is_empty() {
        user.set_additional_gids(Some(flags.additional_gids.clone()));
    }
    process.set_user(user);
    if !flags.capabilities.is_empty() {
        let mut caps = process.capabilities().clone().unwrap_or_default();
        let add = |set: &Option<libcontainer::oci_spec::runtime::Capabilities>| {
            let mut set = set.clone().unwrap_or_default();
            set.extend(flags.capabilities.iter().copied());
            Some(set)
        };
        let (bounding, effective, permitted) = (
            add(caps.bounding()),
            add(caps.effective()),
            add(caps.permitted()),
        );
        caps.set_bounding(bounding)
            .set_effective(effective)
            .set_permitted(permitted);
        process.set_capabilities(Some(caps));
    }
    process
}
