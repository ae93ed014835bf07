//! The journal, as on Bottlerocket: when the supervisor runs under systemd with its output in
//! the journal (`$JOURNAL_STREAM` names our stderr, systemd.exec(5)), each container's output is
//! sent to journald natively with `SYSLOG_IDENTIFIER=bootstrap-containers@<name>` (the
//! identifier of Bottlerocket's per-container unit), so
//! `journalctl -t bootstrap-containers@NAME` shows one container. Each container's outcome is
//! sent the same way with structured fields for `journalctl -o json`:
//!
//! | field | value |
//! |---|---|
//! | `BOOTSTRAP_CONTAINER` | the container's name |
//! | `STATUS` | `succeeded`, `failed`, `runtime-error`, `timed-out`, `skipped`, `interrupted` |
//! | `EXIT_CODE` or `EXIT_SIGNAL` | the exit code, or the signal number that ended it |
//! | `PREPARE_MS`, `RUN_MS` | milliseconds preparing (bundle, image) and running |
//! | `PULL_MS`, `UNPACK_MS`, `IMAGE_DIGEST` | for images |
//!
//! Messages go through the `systemd-journal-logger` crate (journald's native protocol).
//! Outside the journal nothing is sent: the output stays on stdout, prefixed by the name.

use log::{Level, Record};
use systemd_journal_logger::JournalLog;

use super::report::Outcome;

/// Bottlerocket's identifier of a bootstrap container's messages.
pub(crate) fn identifier(name: &str) -> String {
    format!("bootstrap-containers@{name}")
}

/// Whether our output goes to the journal (`$JOURNAL_STREAM` matches stderr).
pub(crate) fn connected() -> bool {
    systemd_journal_logger::connected_to_journal()
}

/// One container's journal: its messages carry its identifier. `None` outside the journal, or
/// when journald's socket cannot be opened (the output then stays on stdout).
pub(crate) struct ContainerJournal {
    log: JournalLog,
}

impl ContainerJournal {
    /// The journal of container `name`, if our output is the journal.
    pub(crate) fn open(name: &str) -> Option<ContainerJournal> {
        if !connected() {
            return None;
        }
        match JournalLog::empty() {
            Ok(log) => Some(ContainerJournal {
                log: log.with_syslog_identifier(identifier(name)),
            }),
            Err(err) => {
                log::warn!("{name}: cannot reach journald ({err}); its output goes to stdout");
                None
            }
        }
    }

    /// Sends one line of the container's output (priority info). False if journald refused it.
    pub(crate) fn line(&self, text: &str) -> bool {
        send(&self.log, Level::Info, text)
    }
}

fn send(log: &JournalLog, level: Level, text: &str) -> bool {
    log.journal_send(
        &Record::builder()
            .args(format_args!("{text}"))
            .level(level)
            .target("bootstrap-supervisor")
            .build(),
    )
    .is_ok()
}

/// The structured fields of an outcome, in the order sent.
pub(crate) fn outcome_fields(outcome: &Outcome) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("BOOTSTRAP_CONTAINER", outcome.name.clone()),
        ("STATUS", outcome.status.name().to_string()),
    ];
    if let Some(code) = outcome.exit_code {
        fields.push(("EXIT_CODE", code.to_string()));
    }
    if let Some(signal) = outcome.signal {
        fields.push(("EXIT_SIGNAL", signal.to_string()));
    }
    fields.push(("PREPARE_MS", outcome.prepare_ms.to_string()));
    fields.push(("RUN_MS", outcome.run_ms.to_string()));
    if let Some(image) = &outcome.image {
        fields.push(("PULL_MS", image.pull_ms.to_string()));
        fields.push(("UNPACK_MS", image.unpack_ms.to_string()));
        fields.push(("IMAGE_DIGEST", image.digest.clone()));
        if image.from_cache {
            fields.push(("IMAGE_FROM_CACHE", "1".to_string()));
        }
    }
    fields
}

/// Sends a container's outcome line (`message`) to the journal under its identifier with the
/// outcome's fields, at priority info when it succeeded or was skipped, else error. Does nothing
/// outside the journal.
pub(crate) fn outcome(outcome: &Outcome, message: &str) {
    if !connected() {
        return;
    }
    let Ok(log) = JournalLog::empty() else { return };
    let log = log
        .with_syslog_identifier(identifier(&outcome.name))
        .with_extra_fields(outcome_fields(outcome));
    use super::report::Status;
    let level = match outcome.status {
        Status::Succeeded | Status::Skipped => Level::Info,
        _ => Level::Error,
    };
    send(&log, level, message);
}
