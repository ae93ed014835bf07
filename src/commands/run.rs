use anyhow::Result;

use crate::runtime::foreground::SignalForwarder;
use crate::runtime::Runtime;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub create: super::create::Args,
    /// Return after starting the container instead of waiting for it
    #[arg(short, long)]
    pub detach: bool,
}

pub fn run(args: &Args, runtime: &Runtime) -> Result<i32> {
    let id = &args.create.container_id;
    let forwarder = (!args.detach).then(SignalForwarder::install).transpose()?;
    let pid = runtime.create(&args.create.request(args.detach))?;
    let started = runtime.start(id);
    let Some(forwarder) = forwarder else {
        started?;
        return Ok(0);
    };
    let code = started.and_then(|()| forwarder.wait(pid));
    // The container's exit code is what callers act on; a cleanup failure after it ran is
    // worth a warning, not a different exit code.
    if let Err(err) = runtime.delete_after_run(id) {
        log::warn!("deleting container {id:?} after it ran: {err:#}");
    }
    code
}
