//! The stop request: SIGTERM or SIGINT (systemd stopping the unit, or Ctrl-C) asks the
//! supervisor to stop; the scheduler and pulls poll for it.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};

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
        stop_requested()
    }
}

/// Whether SIGTERM/SIGINT arrived: long work (pulls) gives up when it did.
pub(crate) fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::Relaxed)
}
