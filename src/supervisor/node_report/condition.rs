//! What a boot's record says as a Kubernetes node condition and events: a pure function of
//! the record, so that every surface (status, the node) tells the same story.
//!
//! Kubernetes' conventions (api-conventions.md, "Typical status properties"): `status` is
//! `True`, `False` or `Unknown`; `reason` is one CamelCase word a machine matches on; `message`
//! is for people.

use crate::supervisor::boots::Recorded;
use crate::supervisor::report::{Outcome, Status};

/// The condition's `type` on the Node.
pub(crate) const TYPE: &str = "BootstrapContainersSucceeded";

/// The condition's value: `status` (`True`, `False`, `Unknown`), `reason`, `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Condition {
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// One Event for a container that failed or timed out: `reason` (CamelCase), `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FailureEvent {
    pub container: String,
    pub reason: &'static str,
    pub message: String,
}

/// The condition for a boot's record: `True` when the run finished and every enabled
/// container succeeded; `False` naming each container that did not (its exit code or failure
/// class), also for invalid settings and a run that did not finish; `Unknown` when nothing is
/// recorded yet or the run goes on.
pub(crate) fn condition(recorded: &Recorded, running: bool) -> Condition {
    let report = match recorded {
        Recorded::Nothing if running => {
            return unknown("RunInProgress", "no container has ended yet")
        }
        Recorded::Nothing => return unknown("NoRecord", "no bootstrap container ran in this boot"),
        Recorded::Unfinished(_) | Recorded::Finished(_) if running => {
            return unknown(
                "RunInProgress",
                "the bootstrap containers are still running",
            );
        }
        Recorded::Unfinished(report) => {
            return Condition {
                status: "False",
                reason: "RunDidNotFinish",
                message: with_failures(
                    "the supervisor was killed or crashed before it finished",
                    &report.containers,
                ),
            };
        }
        Recorded::Finished(report) => report,
    };
    if let Some(error) = &report.error {
        return Condition {
            status: "False",
            reason: "InvalidSettings",
            message: format!("invalid settings, nothing ran: {error}"),
        };
    }
    let failed: Vec<&Outcome> = report
        .containers
        .iter()
        .filter(|o| o.status != Status::Succeeded)
        .collect();
    if failed.is_empty() {
        return Condition {
            status: "True",
            reason: "AllSucceeded",
            message: format!(
                "every bootstrap container succeeded ({})",
                report.containers.len()
            ),
        };
    }
    let essential = failed.iter().any(|o| o.essential);
    Condition {
        status: "False",
        reason: if essential {
            "EssentialFailed"
        } else {
            "ContainersFailed"
        },
        message: with_failures(
            if essential {
                "an essential bootstrap container did not succeed: the boot stopped"
            } else {
                "a bootstrap container did not succeed"
            },
            &report.containers,
        ),
    }
}

/// An Event for each container of the record that failed, timed out, or never ran.
pub(crate) fn failure_events(recorded: &Recorded) -> Vec<FailureEvent> {
    let (Recorded::Unfinished(report) | Recorded::Finished(report)) = recorded else {
        return Vec::new();
    };
    report
        .containers
        .iter()
        .filter_map(|o| {
            let reason = match o.status {
                Status::Failed => "BootstrapContainerFailed",
                Status::TimedOut => "BootstrapContainerTimedOut",
                Status::RuntimeError => "BootstrapContainerNotRun",
                Status::Succeeded | Status::Skipped | Status::Interrupted => return None,
            };
            Some(FailureEvent {
                container: o.name.clone(),
                reason,
                message: format!(
                    "bootstrap container {}{}: {}",
                    o.name,
                    if o.essential { " (essential)" } else { "" },
                    describe(o)
                ),
            })
        })
        .collect()
}

fn unknown(reason: &'static str, message: &str) -> Condition {
    Condition {
        status: "Unknown",
        reason,
        message: message.to_string(),
    }
}

/// `lead`, then each container that did not succeed: `name: failed (exit code 3)`.
fn with_failures(lead: &str, containers: &[Outcome]) -> String {
    let failed: Vec<String> = containers
        .iter()
        .filter(|o| o.status != Status::Succeeded)
        .map(|o| format!("{}: {}", o.name, describe(o)))
        .collect();
    if failed.is_empty() {
        lead.to_string()
    } else {
        format!("{lead}; {}", failed.join("; "))
    }
}

/// An outcome in words: `failed (exit code 3)`, `failed (signal 9)`, `timed-out`, ...
fn describe(o: &Outcome) -> String {
    match (o.exit_code, o.signal) {
        (Some(code), _) => format!("{} (exit code {code})", o.status.name()),
        (None, Some(signal)) => format!("{} (signal {signal})", o.status.name()),
        (None, None) => o.status.name().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::report::Report;

    fn report(containers: serde_json::Value, error: Option<&str>) -> Report {
        serde_json::from_value(serde_json::json!({
            "version": 1, "settings": "/etc/bootstrap-containers/settings.toml",
            "started_at": "2026-12-06T10:00:00Z", "finished_at": "2026-12-06T10:00:05Z",
            "exit_code": 0, "containers": containers, "error": error,
        }))
        .unwrap()
    }

    fn outcome(
        name: &str,
        status: &str,
        essential: bool,
        exit_code: Option<i32>,
    ) -> serde_json::Value {
        serde_json::json!({
            "name": name, "mode": "always", "essential": essential, "source": "/b",
            "status": status, "exit_code": exit_code, "prepare_ms": 1, "run_ms": 2,
        })
    }

    #[test]
    fn every_success_is_true_and_any_failure_is_false_naming_it() {
        let ok = report(
            serde_json::json!([outcome("a", "succeeded", true, Some(0))]),
            None,
        );
        let c = condition(&Recorded::Finished(ok), false);
        assert_eq!((c.status, c.reason), ("True", "AllSucceeded"));

        let mixed = Recorded::Finished(report(
            serde_json::json!([
                outcome("a", "succeeded", true, Some(0)),
                outcome("disk", "failed", false, Some(3)),
                outcome("slow", "timed-out", false, None),
            ]),
            None,
        ));
        let c = condition(&mixed, false);
        assert_eq!((c.status, c.reason), ("False", "ContainersFailed"));
        assert!(
            c.message.contains("disk: failed (exit code 3)"),
            "{}",
            c.message
        );
        assert!(c.message.contains("slow: timed-out"), "{}", c.message);
        assert!(!c.message.contains("a: "), "{}", c.message);
        let events = failure_events(&mixed);
        assert_eq!(
            events
                .iter()
                .map(|e| (e.container.as_str(), e.reason))
                .collect::<Vec<_>>(),
            [
                ("disk", "BootstrapContainerFailed"),
                ("slow", "BootstrapContainerTimedOut")
            ]
        );
    }

    #[test]
    fn no_record_or_a_run_going_on_is_unknown_and_a_broken_run_is_false() {
        assert_eq!(condition(&Recorded::Nothing, false).status, "Unknown");
        let empty = || report(serde_json::json!([]), None);
        assert_eq!(
            condition(&Recorded::Finished(empty()), true).status,
            "Unknown"
        );
        let c = condition(&Recorded::Unfinished(empty()), false);
        assert_eq!((c.status, c.reason), ("False", "RunDidNotFinish"));
        let invalid = report(
            serde_json::json!([]),
            Some("bootstrap-containers.x.mode: bad"),
        );
        let c = condition(&Recorded::Finished(invalid), false);
        assert_eq!((c.status, c.reason), ("False", "InvalidSettings"));
        let essential = report(
            serde_json::json!([outcome("a", "runtime-error", true, None)]),
            None,
        );
        let c = condition(&Recorded::Finished(essential), false);
        assert_eq!((c.status, c.reason), ("False", "EssentialFailed"));
    }
}
