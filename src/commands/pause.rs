use anyhow::Result;

use crate::runtime::Runtime;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    pub container_id: String,
}

pub(crate) fn run(args: &Args, runtime: &Runtime) -> Result<i32> {
    runtime.pause(&args.container_id)?;
    Ok(0)
}
