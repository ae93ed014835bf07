//! bootstrap-supervisor's CLI: one file per subcommand, each parsing and delegating.

pub(crate) mod get;
pub(crate) mod logs;
pub(crate) mod plan;
pub(crate) mod report_node;
pub(crate) mod run;
pub(crate) mod set;
pub(crate) mod status;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use super::settings::{self, Settings};
use crate::cli;

/// Exit code for invalid settings or usage (clap uses it for usage errors too).
pub const INVALID: i32 = 2;

/// Runs Bottlerocket-style bootstrap containers at boot through bootstrap-runc, and decides
/// whether the boot goes on. `run` exits 0 if every essential container succeeded, 1 if one did
/// not, 2 for invalid settings or usage (the boot halts on both); `status` has its own codes.
#[derive(Debug, Parser)]
#[command(name = "bootstrap-supervisor", version, max_term_width = 100)]
pub struct Cli {
    /// Log debug output
    #[arg(long, global = true)]
    pub debug: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run every enabled bootstrap container (the boot-time job)
    Run(Box<run::Args>),
    /// Validate the settings and show what would run (no root needed)
    Plan(plan::Args),
    /// Print settings as apiclient does, nested JSON: bootstrap-containers[.NAME[.FIELD]]
    Get(get::Args),
    /// Change settings (one edit, created if missing): bootstrap-containers.NAME.FIELD=VALUE...
    Set(set::Args),
    /// What happened in a boot: exit 0 all essential succeeded, 1 one did not, 2 invalid
    /// settings, 3 nothing ran, 4 in progress, 5 its record unreadable
    Status(status::Args),
    /// Print a container's output in a boot
    Logs(logs::Args),
    /// Write this boot's outcome to the Node as the condition BootstrapContainersSucceeded (and
    /// an Event per failed container), with the node's credentials
    ReportNode(report_node::Args),
}

#[derive(Debug, clap::Args)]
pub struct StateDirArg {
    /// The supervisor's persistent state (boot records under boots/)
    #[arg(long, default_value = "/var/lib/bootstrap-containers", value_parser = cli::absolute)]
    pub state_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct SettingsArg {
    /// Settings file: TOML, or JSON when it ends in .json
    #[arg(long, default_value = settings::DEFAULT_PATH, value_parser = cli::absolute)]
    pub settings: PathBuf,
}

impl Cli {
    pub fn execute(self) -> Result<i32> {
        match &self.command {
            Command::Run(args) => run::run(args),
            Command::Plan(args) => plan::run(args),
            Command::Get(args) => get::run(args),
            Command::Set(args) => set::run(args),
            Command::Status(args) => status::run(args),
            Command::ReportNode(args) => report_node::run(args),
            Command::Logs(args) => logs::run(args),
        }
    }
}

/// Loads the settings; a file that cannot be read, parsed or validated is reported whole and
/// means exit code 2.
fn load(path: &std::path::Path) -> Result<std::result::Result<Settings, i32>> {
    match settings::load(path) {
        Ok(settings) => Ok(Ok(settings)),
        Err(err) => {
            eprintln!("bootstrap-supervisor: {err:#}");
            Ok(Err(INVALID))
        }
    }
}
