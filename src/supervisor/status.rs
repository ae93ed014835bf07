//! What `status` and `logs` show of a recorded boot (see [`super::boots`]).
//!
//! `status` exit codes: 0 every essential container succeeded, 1 one did not, 2 that boot's
//! run stopped on invalid settings, 3 nothing ran in that boot (no record, or no container
//! enabled), 4 a run is in progress (what is known so far is shown), 5 the record could not
//! be read. A run that did not finish (the supervisor killed or crashed) counts as 1.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::boots::{self, Recorded, Which};
use super::report::printable;

/// `status`: every essential container succeeded.
pub(crate) const SUCCEEDED: i32 = 0;
/// `status`: an essential container did not succeed.
pub(crate) const FAILED: i32 = 1;
/// `status`: the run stopped on invalid settings.
pub(crate) const INVALID_SETTINGS: i32 = 2;
/// `status`: nothing ran in that boot.
pub(crate) const NOTHING_RAN: i32 = 3;
/// `status`: a run is in progress.
pub(crate) const IN_PROGRESS: i32 = 4;
/// `status`: the record could not be read (missing, corrupt, another schema version).
pub(crate) const UNREADABLE: i32 = 5;

/// How `status` prints a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
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
pub(crate) fn show(state_dir: &Path, which: &Which, format: Format) -> Result<i32> {
    let (id, dir) = find_boot(state_dir, which)?;
    let running = boots::in_progress(&dir);
    let recorded = boots::read(&dir)?;
    let (code, report) = match &recorded {
        Recorded::Unfinished(r) | Recorded::Finished(r) if running => (IN_PROGRESS, Some(r)),
        Recorded::Nothing if running => (IN_PROGRESS, None),
        Recorded::Nothing => (NOTHING_RAN, None),
        // Killed or crashed: nothing says the boot may go on.
        Recorded::Unfinished(r) => (FAILED, Some(r)),
        Recorded::Finished(r) if r.error.is_some() || r.exit_code == INVALID_SETTINGS => {
            (INVALID_SETTINGS, Some(r))
        }
        Recorded::Finished(r) if r.containers.is_empty() => (NOTHING_RAN, Some(r)),
        Recorded::Finished(r) if r.exit_code == 0 => (SUCCEEDED, Some(r)),
        Recorded::Finished(r) => (FAILED, Some(r)),
    };
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
        Format::Table => write!(out, "{}", table(&id, running, &recorded))?,
    }
    if matches!(recorded, Recorded::Nothing) && !running {
        eprintln!(
            "bootstrap-supervisor: nothing ran in boot {id} (no record in {})",
            dir.display()
        );
    }
    Ok(code)
}

fn table(id: &str, running: bool, recorded: &Recorded) -> String {
    let mut text = format!("boot {id}");
    let (report, state) = match recorded {
        Recorded::Nothing if running => {
            return text + ": in progress, no container has ended yet\n";
        }
        Recorded::Nothing => return text + ": nothing ran\n",
        Recorded::Unfinished(r) | Recorded::Finished(r) if running => {
            (r, "in progress, so far".to_string())
        }
        Recorded::Unfinished(r) => (
            r,
            "did not finish (the supervisor was killed or crashed), what ended".to_string(),
        ),
        Recorded::Finished(r) => (
            r,
            format!("finished {}, exit code {}", r.finished_at, r.exit_code),
        ),
    };
    text.push_str(&format!(
        ": started {}, {state}, settings {}\n",
        report.started_at, report.settings
    ));
    if let Some(error) = &report.error {
        text.push_str(&format!(
            "stopped on invalid settings: {}\n",
            printable(error)
        ));
    } else if report.containers.is_empty() && matches!(recorded, Recorded::Finished(_)) {
        text.push_str("no container was enabled\n");
    } else {
        text.push_str(&report.status_table());
    }
    text
}

/// Prints a container's output in a boot. A container with no output recorded in that boot
/// (it did not run there) is an error naming both.
pub(crate) fn logs(state_dir: &Path, which: &Which, name: &str) -> Result<i32> {
    crate::supervisor::settings::check_name(name)
        .map_err(|reason| anyhow::anyhow!("invalid container name {name:?}: {reason}"))?;
    let (id, dir) = find_boot(state_dir, which)?;
    let path = boots::log_path(&dir, name);
    let mut file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!(
                "container {name} has no output recorded in boot {id}: it did not run in that boot"
            )
        }
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    std::io::copy(&mut file, &mut std::io::stdout().lock())
        .with_context(|| format!("printing {}", path.display()))?;
    Ok(0)
}
