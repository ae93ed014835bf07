use anyhow::Result;

use crate::runtime::Runtime;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub create: super::create::Args,
    /// Return after starting the container instead of waiting for it
    #[arg(short, long)]
    pub detach: bool,
}

pub(crate) fn run(args: &Args, runtime: &Runtime) -> Result<i32> {
    runtime.run(&args.create.request(args.detach))
}
