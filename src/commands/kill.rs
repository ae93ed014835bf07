use anyhow::Result;

use crate::runtime::kill::parse_signal;
use crate::runtime::Runtime;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Send the signal to every process of the container
    #[arg(short, long)]
    pub all: bool,
    pub container_id: String,
    /// Signal number or name (KILL, SIGKILL, 9, 40, RTMIN+6, 0)
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
}

pub(crate) fn run(args: &Args, runtime: &Runtime) -> Result<i32> {
    let signal = parse_signal(&args.signal)?;
    runtime.kill(&args.container_id, signal, args.all)?;
    Ok(0)
}
