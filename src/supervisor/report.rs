//! What happened at boot: one outcome per container, the versioned JSON report, a short table.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::settings::Mode;
use crate::atomic_file;

pub(crate) const REPORT_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Status {
    Succeeded,
    /// The container ran and exited non-zero or was killed.
    Failed,
    /// The container never ran: bad source, refused by the policy, runtime failure.
    RuntimeError,
    TimedOut,
    /// A dependency did not succeed.
    Skipped,
    /// The supervisor was stopped while the container ran.
    Interrupted,
}

impl Status {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::RuntimeError => "runtime-error",
            Status::TimedOut => "timed-out",
            Status::Skipped => "skipped",
            Status::Interrupted => "interrupted",
        }
    }
}

/// One container's outcome. Never holds user-data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Outcome {
    pub name: String,
    pub mode: Mode,
    pub essential: bool,
    pub source: String,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    pub prepare_ms: u64,
    pub run_ms: u64,
    /// For registry images: which image ran, and what getting it cost this run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ImageOutcome {
    /// The platform manifest's digest.
    pub digest: String,
    /// Resolving and downloading (0: from the cache, or pulled for another container).
    pub pull_ms: u64,
    pub unpack_ms: u64,
    /// `always-or-cached` ran the cached image because the registry could not be reached.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_cache: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Report {
    pub version: u32,
    pub settings: String,
    pub started_at: String,
    pub finished_at: String,
    /// The supervisor's exit code: 0 boot goes on, 1 an essential container did not succeed.
    pub exit_code: i32,
    pub containers: Vec<Outcome>,
    /// Why the run stopped before running anything (invalid settings: exit code 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Report {
    /// Writes the report at `path` (its directory created if missing), atomically and durably.
    pub(crate) fn write(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        atomic_file::write(path, &serde_json::to_vec_pretty(self)?, 0o644)
    }

    /// As [`Report::write`], atomic but not synced: for a report rewritten as containers end,
    /// on the boot's path, which the final one replaces.
    pub(crate) fn replace(&self, path: &Path) -> Result<()> {
        atomic_file::replace(path, &serde_json::to_vec_pretty(self)?, 0o644)
    }

    /// Essential containers that did not succeed: any of them halts the boot.
    pub(crate) fn essential_failures(containers: &[Outcome]) -> Vec<&Outcome> {
        containers
            .iter()
            .filter(|o| o.essential && o.status != Status::Succeeded)
            .collect()
    }

    /// The supervisor's verdict on `containers`, its exit code: 0 lets the boot go on, 1
    /// halts it.
    pub(crate) fn verdict(containers: &[Outcome]) -> i32 {
        if Report::essential_failures(containers).is_empty() {
            0
        } else {
            1
        }
    }

    pub(crate) fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<24} {:<9} {:<14} {:>6} {:>9}  ERROR",
            "NAME", "ESSENTIAL", "STATUS", "EXIT", "RUN"
        );
        for o in &self.containers {
            let exit = exit_text(o);
            let _ = writeln!(
                out,
                "{:<24} {:<9} {:<14} {:>6} {:>7}ms  {}",
                o.name,
                if o.essential { "yes" } else { "no" },
                o.status.name(),
                exit,
                o.run_ms,
                printable(o.error.as_deref().unwrap_or(""))
            );
        }
        out
    }
}

/// The EXIT column: the exit code, `sigN` for a signal, `-` for neither.
fn exit_text(o: &Outcome) -> String {
    match (o.exit_code, o.signal) {
        (_, Some(signal)) => format!("sig{signal}"),
        (Some(code), None) => code.to_string(),
        (None, None) => "-".to_string(),
    }
}

/// Milliseconds as seconds with one decimal, `-` for none.
fn seconds(ms: Option<u64>) -> String {
    ms.map_or_else(
        || "-".to_string(),
        |ms| format!("{:.1}s", ms as f64 / 1000.0),
    )
}

impl Report {
    /// `status`'s table: per container its status, exit code or signal, start time, the
    /// durations of pull, unpack and run (seconds), the image digest and the error.
    pub(crate) fn status_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<24} {:<9} {:<14} {:>6}  {:<20} {:>7} {:>7} {:>7}  {:<19}  ERROR",
            "NAME", "ESSENTIAL", "STATUS", "EXIT", "STARTED", "PULL", "UNPACK", "RUN", "DIGEST"
        );
        for o in &self.containers {
            let exit = exit_text(o);
            // Seconds precision is enough to read; the JSON has the full time.
            let started = o.started_at.as_deref().map_or("-".to_string(), |t| {
                t.chars().take(19).collect::<String>() + "Z"
            });
            let digest = o.image.as_ref().map_or("-".to_string(), |i| {
                let short: String = i.digest.chars().take(19).collect();
                if i.from_cache {
                    short + " (cache: registry unreachable)"
                } else {
                    short
                }
            });
            let _ = writeln!(
                out,
                "{:<24} {:<9} {:<14} {:>6}  {:<20} {:>7} {:>7} {:>7}  {:<19}  {}",
                o.name,
                if o.essential { "yes" } else { "no" },
                o.status.name(),
                exit,
                started,
                seconds(o.image.as_ref().map(|i| i.pull_ms)),
                seconds(o.image.as_ref().map(|i| i.unpack_ms)),
                seconds(o.started_at.as_ref().map(|_| o.run_ms)),
                digest,
                printable(o.error.as_deref().unwrap_or(""))
            );
        }
        out
    }
}

/// `text` with control characters escaped, so a message carrying an image's or a file's text
/// cannot drive the terminal.
pub(crate) fn printable(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_are_shown_escaped_and_lines_kept() {
        assert_eq!(
            printable("ok\x1b]0;pwn\x07\tend\nnext é"),
            "ok\\u{1b}]0;pwn\\u{7}\\tend\nnext é"
        );
    }
}
