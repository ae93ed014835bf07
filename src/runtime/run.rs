//! runc's `run`: create, start and, in the foreground, wait for the container's init
//! (forwarding our signals to it), then delete the container.

use anyhow::{Context, Result};

use super::create::CreateRequest;
use super::foreground::SignalForwarder;
use super::init;
use super::Runtime;

impl Runtime {
    /// Runs the container of `request`. Returns runc's exit code: 0 once started with
    /// `request.detach`; else the init's exit code, or 128+N when signal N ended it. Errors: the
    /// create or the start failed (everything the attempt made is removed).
    pub(crate) fn run(&self, request: &CreateRequest) -> Result<i32> {
        let id = request.id;
        let forwarder = (!request.detach)
            .then(SignalForwarder::install)
            .transpose()?;
        let pid = self.create(request)?;
        let made = init::instance(&self.root.derived_dir(id));
        let started = self.start(id);
        let Some(forwarder) = forwarder else {
            started?;
            return Ok(0);
        };
        let code = started.and_then(|()| forwarder.wait(pid));
        // The container's exit code is what callers act on; a cleanup failure after it ran is
        // worth a warning, not a different exit code.
        let deleted = made.and_then(|made| {
            let made = made.context("the container's init record is missing after create")?;
            self.delete_after_run(id, &made)
        });
        if let Err(err) = deleted {
            log::warn!("deleting container {id:?} after it ran: {err:#}");
        }
        code
    }
}
