//! `bootstrap-supervisor logs NAME`: a container's output in a boot, from its record.

use anyhow::Result;

use super::StateDirArg;
use crate::supervisor::boots::{self, Which};
use crate::supervisor::status;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub state_dir: StateDirArg,
    /// current, previous, or a boot id
    #[arg(long, default_value = "current", value_parser = boots::parse_which)]
    pub boot: Which,
    /// The container's name
    pub name: String,
}

pub(crate) fn run(args: &Args) -> Result<i32> {
    status::logs(&args.state_dir.state_dir, &args.boot, &args.name)
}
