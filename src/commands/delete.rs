use anyhow::Result;

use crate::runtime::Runtime;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Kill the container if it runs, and succeed if it is already gone
    #[arg(short, long)]
    pub force: bool,
    pub container_id: String,
}

pub(crate) fn run(args: &Args, runtime: &Runtime) -> Result<i32> {
    runtime.delete(&args.container_id, args.force)?;
    Ok(0)
}
