//! What `status` and `logs` show of a recorded boot (see [`super::boots`]).
//!
//! `status` exit codes: 0 every essential container succeeded, 1 one did not, 2 that boot's
//! run stopped on invalid settings, 3 nothing ran in that boot (no record, or no container
//! enabled), 4 a run is in progress (what is known so far is shown).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::boots::{self, Which};
use super::report::Report;

/// `status`: every essential container succeeded.
pub const SUCCEEDED: i32 = 0;
/// `status`: an essential container did not succeed.
pub const FAILED: i32 = 1;
/// `status`: the run stopped on invalid settings.
pub const INVALID_SETTINGS: i32 = 2;
/// `status`: nothing ran in that boot.
pub const NOTHING_RAN: i32 = 3;
/// `status`: a run is in progress.
pub const IN_PROGRESS: i32 = 4;

/// How `status` prints a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A header and one line per container.
    Table,
    /// The report as the supervisor wrote it (schema version 1).
    Json,
}

/// The directory of the boot `which` names; an id may be given with or without dashes (as
/// `journalctl --list-boots` shows it).
fn find_boot(state_dir: &Path, which: &Which) -> Result<(String, PathBuf)> {
    let mut id = boots::resolve(state_dir, which)?;
    if let Which::Id(wanted) = which {
        let bare = wanted.replace('-', "");
        if let Some(found) = boots::list(state_dir)?
            .into_iter()
            .find(|known| known.replace('-', "") == bare)
        {
            id = found;
        }
    }
    let dir = boots::boot_dir(state_dir, &id);
    Ok((id, dir))
}

/// Prints a boot's status; returns `status`'s exit code.
pub fn show(state_dir: &Path, which: &Which, format: Format) -> Result<i32> {
    let (id, dir) = find_boot(state_dir, which)?;
    let running = boots::in_progress(&dir);
    let report = boots::read_report(&dir)?;
    let code = match &report {
        _ if running => IN_PROGRESS,
        None => NOTHING_RAN,
        Some(r) if r.error.is_some() || r.exit_code == INVALID_SETTINGS => INVALID_SETTINGS,
        Some(r) if r.containers.is_empty() => NOTHING_RAN,
        Some(r) if r.exit_code == 0 => SUCCEEDED,
        Some(_) => FAILED,
    };
    let mut out = std::io::stdout().lock();
    match (format, &report) {
        (Format::Json, Some(report)) => {
            writeln!(out, "{}", serde_json::to_string_pretty(report)?)?;
        }
        (Format::Json, None) => {}
        (Format::Table, _) => write!(out, "{}", table(&id, running, report.as_ref()))?,
    }
    if report.is_none() && !running {
        eprintln!(
            "bootstrap-supervisor: nothing ran in boot {id} (no record in {})",
            dir.display()
        );
    }
    Ok(code)
}

fn table(id: &str, running: bool, report: Option<&Report>) -> String {
    let mut text = format!("boot {id}");
    match report {
        None if running => text.push_str(": in progress, no container has ended yet\n"),
        None => text.push_str(": nothing ran\n"),
        Some(r) => {
            let state = if running {
                "in progress, so far".to_string()
            } else {
                format!("finished {}, exit code {}", r.finished_at, r.exit_code)
            };
            text.push_str(&format!(
                ": started {}, {state}, settings {}\n",
                r.started_at, r.settings
            ));
            if let Some(error) = &r.error {
                text.push_str(&format!("stopped on invalid settings: {error}\n"));
            } else if r.containers.is_empty() && !running {
                text.push_str("no container was enabled\n");
            } else {
                text.push_str(&r.status_table());
            }
        }
    }
    text
}

/// Prints a container's output in a boot. A container with no log in that boot is an error
/// naming both.
pub fn logs(state_dir: &Path, which: &Which, name: &str) -> Result<i32> {
    let (id, dir) = find_boot(state_dir, which)?;
    let path = boots::log_path(&dir, name);
    if name.contains('/') || name.starts_with('.') {
        anyhow::bail!("invalid container name {name:?}");
    }
    let mut file = std::fs::File::open(&path).with_context(|| {
        format!(
            "no output of container {name} in boot {id} ({} cannot be read)",
            path.display()
        )
    })?;
    std::io::copy(&mut file, &mut std::io::stdout().lock())
        .with_context(|| format!("printing {}", path.display()))?;
    Ok(0)
}
