//! `bootstrap-supervisor status`: what happened in a boot, from its record.

use anyhow::Result;

use super::StateDirArg;
use crate::supervisor::boots::{self, Which};
use crate::supervisor::status::{self, Format};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub state_dir: StateDirArg,
    /// table, or json (the report's schema)
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// current, previous, or a boot id (as journalctl --list-boots shows, without dashes too)
    #[arg(long, default_value = "current", value_parser = boots::parse_which)]
    pub boot: Which,
}

pub(crate) fn run(args: &Args) -> Result<i32> {
    // Its own exit code: 1 and 2 already say what happened in the boot.
    status::show(&args.state_dir.state_dir, &args.boot, args.format).or_else(|err| {
        eprintln!("bootstrap-supervisor: {err:#}");
        Ok(status::UNREADABLE)
    })
}
