//! The supervisor's stop request: SIGTERM or SIGINT (systemd stopping the unit, or Ctrl-C) asks
//! it to stop; the scheduler, each container's thread and pulls poll for it every [`POLL`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// How often waiting work looks for the stop request: a stop is acted on within this.
pub(crate) const POLL: Duration = Duration::from_millis(100);

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: libc::c_int) {
    STOP_REQUESTED.store(true, Ordering::Relaxed);
}

/// SIGTERM or SIGINT ask the supervisor to stop; the scheduler polls for it.
pub(crate) struct StopRequest;

impl StopRequest {
    pub(crate) fn install() -> Result<StopRequest> {
        let action = SigAction::new(
            SigHandler::Handler(request_stop),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        for sig in [Signal::SIGTERM, Signal::SIGINT] {
            // SAFETY: the handler only stores to an atomic.
            unsafe { signal::sigaction(sig, &action) }
                .with_context(|| format!("handling {sig}"))?;
        }
        Ok(StopRequest)
    }

    pub(crate) fn requested(&self) -> bool {
        requested()
    }
}

/// Whether SIGTERM/SIGINT arrived: long work (pulls) gives up when it did.
pub(crate) fn requested() -> bool {
    STOP_REQUESTED.load(Ordering::Relaxed)
}
