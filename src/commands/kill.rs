use anyhow::{Context, Result};
use libcontainer::signal::Signal;

use crate::runtime::Runtime;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Send the signal to every process of the container
    #[arg(short, long)]
    pub all: bool,
    pub container_id: String,
    /// Signal number or name (KILL, SIGKILL, 9)
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
}

pub fn run(args: &Args, runtime: &Runtime) -> Result<i32> {
    let signal = Signal::try_from(args.signal.as_str())
        .with_context(|| format!("unknown signal {:?}", args.signal))?;
    runtime.kill(&args.container_id, signal, args.all)?;
    Ok(0)
}
