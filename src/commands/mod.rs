//! The CLI: one file per subcommand, each only parsing its flags and delegating to the runtime.

pub(crate) mod create;
pub(crate) mod delete;
pub(crate) mod exec;
pub(crate) mod features;
pub(crate) mod kill;
pub(crate) mod list;
pub(crate) mod pause;
pub(crate) mod ps;
pub(crate) mod resume;
pub(crate) mod run;
pub(crate) mod spec;
pub(crate) mod start;
pub(crate) mod state;
pub(crate) mod update;

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

use crate::cli;
use crate::logging::LogFormat;
use crate::policy::{self, file::Overrides};
use crate::runtime::state_root::{StateRoot, DEFAULT_ROOT};
use crate::runtime::Runtime;
use crate::runtime::{attach_wait, sealed_exe};

/// A runc-compatible OCI runtime that runs every container as a Bottlerocket bootstrap
/// container: CAP_SYS_ADMIN, the host root read-only at /.bottlerocket/rootfs, the host's
/// mount area rshared at /.bottlerocket/rootfs/mnt, a read-only root, and nothing more.
#[derive(Debug, Parser)]
#[command(name = "bootstrap-runc", version, max_term_width = 100)]
pub struct Cli {
    /// Directory for the containers' state (a tmpfs)
    #[arg(long, global = true, default_value = DEFAULT_ROOT, value_name = "DIR", value_parser = cli::absolute)]
    pub(crate) root: PathBuf,
    /// Write logs (and errors) to this file instead of stderr
    #[arg(long, global = true, value_name = "FILE", value_parser = cli::absolute)]
    pub log: Option<PathBuf>,
    /// Log line format
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log debug output, libcontainer's included
    #[arg(long, global = true)]
    pub debug: bool,
    /// Manage cgroups through systemd
    #[arg(long, global = true)]
    pub(crate) systemd_cgroup: bool,
    #[command(flatten)]
    pub(crate) policy_flags: policy::file::PolicyFlags,
    /// Host directories no container may reach, comma-separated, besides --root and its
    /// seccomp cache (bootstrap-supervisor passes its own state)
    #[arg(long, global = true, value_name = "LIST", value_parser = policy::file::parse_dir_list)]
    pub(crate) protected_dirs: Option<policy::file::DirList>,
    /// runc's rootless mode: `false` or `auto` (bootstrap containers run as root; `true` is
    /// refused)
    #[arg(long, global = true, value_name = "true|false|auto", value_parser = ["false", "auto", "true"])]
    pub(crate) rootless: Option<String>,
    /// runc's CRIU binary: accepted and ignored (no checkpoint/restore here)
    #[arg(long, global = true, value_name = "PATH", hide = true)]
    pub(crate) criu: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create a container from a bundle, waiting for start
    Create(create::Args),
    /// Start a created container
    Start(start::Args),
    /// Print a container's state as JSON
    State(state::Args),
    /// Send a signal to a container's init (or to all its processes)
    Kill(kill::Args),
    /// Delete a container and everything it left
    Delete(delete::Args),
    /// Create, start and wait for a container; exit with its status
    Run(run::Args),
    /// List containers
    List(list::Args),
    /// List the processes of a container
    Ps(ps::Args),
    /// Run a new process in a running container
    Exec(exec::Args),
    /// Suspend all processes of a container
    Pause(pause::Args),
    /// Resume a paused container
    Resume(resume::Args),
    /// Change a container's cgroup resources (runc's flags, or JSON with --resources)
    Update(update::Args),
    /// Print the runtime's features as JSON
    Features(features::Args),
    /// Write a starter config.json
    Spec(spec::Args),
}

impl Cli {
    pub(crate) fn runtime(&self) -> Result<Runtime> {
        let root = StateRoot::open(&self.root)?;
        // Commands that put runtime processes into a container run from a protected binary.
        if matches!(
            self.command,
            Command::Create(_) | Command::Run(_) | Command::Exec(_)
        ) {
            // Once per command, in the process it starts with (before the re-exec, if there
            // is one): the wait then passes during the re-exec and the bundle's preparation.
            if !sealed_exe::take_reexec_mark() {
                attach_wait::start();
            }
            sealed_exe::ensure_sealed(&root.empty_dir())?;
        }
        Ok(Runtime {
            seccomp_cache: root.seccomp_dir(),
            root,
            systemd_cgroup: self.systemd_cgroup,
            policy_overrides: Overrides {
                systemd_cgroup: self.systemd_cgroup,
                ..self.policy_flags.overrides(
                    self.protected_dirs
                        .clone()
                        .map(|list| list.0)
                        .unwrap_or_default(),
                    Vec::new(),
                )
            },
        })
    }

    /// Runs the command; returns the process exit code.
    pub fn execute(self) -> Result<i32> {
        if self.rootless.as_deref() == Some("true") {
            bail!("--rootless true is not supported: bootstrap containers run as root");
        }
        if let Some(criu) = &self.criu {
            log::debug!("--criu {} ignored: no checkpoint/restore", criu.display());
        }
        match &self.command {
            Command::Create(args) => create::run(args, &self.runtime()?),
            Command::Start(args) => start::run(args, &self.runtime()?),
            Command::State(args) => state::run(args, &self.runtime()?),
            Command::Kill(args) => kill::run(args, &self.runtime()?),
            Command::Delete(args) => delete::run(args, &self.runtime()?),
            Command::Run(args) => run::run(args, &self.runtime()?),
            Command::List(args) => list::run(args, &self.runtime()?),
            Command::Ps(args) => ps::run(args, &self.runtime()?),
            Command::Exec(args) => exec::run(args, &self.runtime()?),
            Command::Pause(args) => pause::run(args, &self.runtime()?),
            Command::Resume(args) => resume::run(args, &self.runtime()?),
            Command::Update(args) => update::run(args, &self.runtime()?),
            Command::Features(args) => features::run(args),
            Command::Spec(args) => spec::run(args),
        }
    }
}

/// Prints JSON on stdout (state and ps output is read whole by containerd).
fn print_json(value: &impl serde::Serialize) -> Result<i32> {
    println!("{}", serde_json::to_string(value)?);
    Ok(0)
}
