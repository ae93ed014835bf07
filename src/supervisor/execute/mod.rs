//! Running a plan: every ready container at once, each through the runtime's own `run`, as
//! `bootstrap-runc run` does it (so the policy lives in one place), in a process the launcher
//! forks. [`scheduler`] decides what starts and records outcomes, [`container`] runs one
//! container, [`launcher`] forks its runtime process, [`runtime`] holds the boot's state root
//! and the policy's flags, and stops and deletes containers through the runtime library.

mod container;
pub(crate) mod launcher;
pub(crate) mod runtime;
mod scheduler;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use runtime::Runtime;

use super::boots::Record;
use super::plan::Step;
use super::report::{Outcome, Status};
use crate::image::Images;

/// What a boot runs with; cloned into each container's thread.
#[derive(Clone)]
pub(crate) struct Executor {
    /// The settings file: `once` containers are turned `off` in it.
    pub settings: PathBuf,
    pub runtime: Runtime,
    /// Forks each container's runtime process.
    pub launcher: Arc<launcher::Launcher>,
    /// Persistent state: bundles, per-container data and logs.
    pub state_dir: PathBuf,
    /// Shared by the containers' threads, so each image is pulled once.
    pub images: Arc<Images>,
    /// On cgroup v2, the supervisor's cgroup: the containers' cgroups go under it (cgroup.rs).
    pub cgroup_parent: Option<PathBuf>,
    /// Between SIGTERM and SIGKILL when a container is stopped (timeout or interrupt).
    pub stop_grace: Duration,
    /// This boot's record: each container's log, the report as outcomes come in.
    pub record: Arc<Record>,
    /// The size of an image's or source-less container's writable layer, in bytes
    /// (`--writable-layer-size`).
    pub writable_layer: u64,
}

pub(super) fn blank_outcome(step: &Step, status: Status) -> Outcome {
    Outcome {
        name: step.name.clone(),
        mode: step.container.mode,
        essential: step.container.essential,
        source: step.container.source.to_string(),
        status,
        exit_code: None,
        signal: None,
        started_at: None,
        finished_at: None,
        prepare_ms: 0,
        run_ms: 0,
        image: None,
        error: None,
    }
}

pub(super) fn describe(outcome: &Outcome) -> String {
    let mut text = outcome.status.name().to_string();
    if let Some(code) = outcome.exit_code {
        text.push_str(&format!(" (exit code {code})"));
    }
    if let Some(signal) = outcome.signal {
        text.push_str(&format!(" (signal {signal})"));
    }
    if let Some(error) = &outcome.error {
        text.push_str(&format!(": {error}"));
    }
    text
}
