//! The scheduler: every ready container at once, each on a thread of its own; dependencies,
//! same-boot markers, the once → off write-back, and the stop request.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;

use anyhow::{anyhow, Context, Result};

use super::{blank_outcome, describe, Executor};
use crate::stop;
use crate::supervisor::journal;
use crate::supervisor::markers::{Marker, Markers};
use crate::supervisor::plan::{self, Plan, Step};
use crate::supervisor::report::{Outcome, Status};
use crate::supervisor::settings::{edit, Mode};

impl Executor {
    /// Runs the plan; returns every container's outcome, in plan order.
    pub(crate) fn execute(&self, plan: &Plan) -> Result<Vec<Outcome>> {
        let dir = self.runtime.run_dir().join("logs");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let markers = Markers::open(self.runtime.run_dir())?;
        let mut outcomes = self.earlier_runs(plan, &markers);

        let (done_tx, done_rx) = mpsc::channel::<Outcome>();
        let mut started: BTreeSet<String> = outcomes.keys().cloned().collect();
        let mut running: BTreeSet<String> = BTreeSet::new();
        let stop = stop::StopRequest::install()?;
        // Outcomes recorded since the progress report was last rewritten.
        let mut unrecorded = false;
        let scheduled: Result<()> = 'schedule: loop {
            if stop.requested() {
                break Ok(());
            }
            let progress: BTreeMap<String, plan::Ended> = outcomes
                .iter()
                .map(|(name, o)| (name.clone(), plan_ended(o.status)))
                .collect();
            let next = plan.next(&progress);
            for step in next.skip {
                self.finish(&markers, skipped(step, &progress), &mut outcomes);
                unrecorded = true;
            }
            for step in next.ready {
                if started.insert(step.name.clone()) {
                    if let Err(err) = markers.set(&step.name, &Marker::Started) {
                        break 'schedule Err(err);
                    }
                    running.insert(step.name.clone());
                    self.start(step, &done_tx);
                }
            }
            // After the dependents of what just ended have started, and once for all the
            // containers that ended together: the report is rewritten whole each time.
            if unrecorded {
                self.record.progress(outcomes.values());
                unrecorded = false;
            }
            if running.is_empty() {
                break Ok(());
            }
            match done_rx.recv_timeout(stop::POLL) {
                Ok(first) => {
                    for outcome in std::iter::once(first).chain(done_rx.try_iter()) {
                        running.remove(&outcome.name);
                        if outcome.status == Status::Interrupted {
                            // No marker: a later run this boot runs it again.
                            outcomes.insert(outcome.name.clone(), outcome);
                        } else {
                            self.finish(&markers, outcome, &mut outcomes);
                            unrecorded = true;
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break Err(anyhow!("a container thread vanished"));
                }
            }
        };
        // However the loop ended, what it recorded reaches the progress report.
        if unrecorded {
            self.record.progress(outcomes.values());
        }
        scheduled?;
        if stop.requested() {
            self.interrupt(plan, &running, &done_rx, &mut outcomes);
        }
        Ok(plan
            .steps
            .iter()
            .filter_map(|s| outcomes.remove(&s.name))
            .collect())
    }

    /// What earlier runs this boot left: the outcomes of containers that finished (not run
    /// again), and whatever an interrupted run left of the others, removed.
    fn earlier_runs(&self, plan: &Plan, markers: &Markers) -> BTreeMap<String, Outcome> {
        let mut outcomes = BTreeMap::new();
        for step in &plan.steps {
            match markers.get(&step.name) {
                Some(Marker::Finished { outcome }) => {
                    log::info!(
                        "{}: already ran this boot ({}); not running it again",
                        step.name,
                        outcome.status.name()
                    );
                    outcomes.insert(step.name.clone(), *outcome);
                }
                Some(Marker::Started) => {
                    log::warn!("{}: an earlier run was interrupted; removing what it left and running it again", step.name);
                    self.runtime.delete(&step.name, &step.id);
                }
                None => {}
            }
        }
        outcomes
    }

    /// Runs `step` in a thread of its own, its outcome sent to `done`.
    fn start(&self, step: &Step, done: &mpsc::Sender<Outcome>) {
        let done = done.clone();
        let step = step.clone();
        let executor = self.clone();
        std::thread::spawn(move || {
            let _ = done.send(executor.run_step(&step));
        });
    }

    /// The supervisor was asked to stop (the unit is being stopped): start nothing more, wait
    /// for the running containers (each thread stops its own: SIGTERM, the stop grace,
    /// SIGKILL), and leave no `finished` marker, so a later run this boot runs them again.
    fn interrupt(
        &self,
        plan: &Plan,
        running: &BTreeSet<String>,
        done_rx: &mpsc::Receiver<Outcome>,
        outcomes: &mut BTreeMap<String, Outcome>,
    ) {
        log::warn!(
            "stopping: stopping {} running bootstrap container(s)",
            running.len()
        );
        for _ in running {
            if let Ok(mut outcome) = done_rx.recv() {
                outcome.status = Status::Interrupted;
                outcome.error = Some("the supervisor was stopped".to_string());
                announce(&outcome);
                outcomes.insert(outcome.name.clone(), outcome);
            }
        }
        for step in &plan.steps {
            outcomes.entry(step.name.clone()).or_insert_with(|| {
                let mut outcome = blank_outcome(step, Status::Interrupted);
                outcome.error = Some("not started: the supervisor was stopped".to_string());
                announce(&outcome);
                outcome
            });
        }
    }

    /// Records an outcome: marker, and once → off after a success. The caller rewrites the
    /// progress report.
    fn finish(
        &self,
        markers: &Markers,
        mut outcome: Outcome,
        outcomes: &mut BTreeMap<String, Outcome>,
    ) {
        if outcome.status == Status::Succeeded && outcome.mode == Mode::Once {
            if let Err(err) = edit::set_mode_off(&self.settings, &outcome.name) {
                log::error!(
                    "{}: succeeded, but setting its mode to off failed: {err:#}",
                    outcome.name
                );
                outcome.error = Some(format!("mode once could not be turned off: {err:#}"));
            }
        }
        if let Err(err) = markers.set(
            &outcome.name,
            &Marker::Finished {
                outcome: Box::new(outcome.clone()),
            },
        ) {
            log::error!("{err:#}");
        }
        announce(&outcome);
        outcomes.insert(outcome.name.clone(), outcome);
    }
}

/// Tells an outcome: to the journal under the container's identifier with its fields, and on
/// our own output (the console under the unit), so every outcome is seen in both.
fn announce(outcome: &Outcome) {
    let line = format!("{}: {}", outcome.name, describe(outcome));
    journal::outcome(outcome, &line);
    log::info!("{line}");
}

fn plan_ended(status: Status) -> plan::Ended {
    match status {
        Status::Succeeded => plan::Ended::Succeeded,
        Status::Skipped => plan::Ended::Skipped,
        _ => plan::Ended::Failed,
    }
}

/// The outcome of a step that never starts: the dependencies that did not succeed, named.
fn skipped(step: &Step, progress: &BTreeMap<String, plan::Ended>) -> Outcome {
    let failed: Vec<&str> = step
        .container
        .depends_on
        .iter()
        .filter(|d| {
            progress
                .get(*d)
                .is_some_and(|o| *o != plan::Ended::Succeeded)
        })
        .map(String::as_str)
        .collect();
    let mut outcome = blank_outcome(step, Status::Skipped);
    outcome.error = Some(format!("dependency did not succeed: {}", failed.join(", ")));
    outcome
}
