//! Per-boot records: `<state-dir>/boots/<boot_id>/` keeps each boot's report and every
//! container's output, so `status` and `logs` can answer for this boot and the ones before it.
//!
//! A boot is identified as systemd identifies it: the kernel's random `boot_id`
//! (`/proc/sys/kernel/random/boot_id`, the `_BOOT_ID` of the journal). A boot's directory holds
//! `sequence` (the boots' order: one more than the newest before it; not the clock, which may
//! be unset or jump before time sync), `progress.json` (the report's schema, rewritten as
//! containers end, once for those that end together; removed when the run ends: left behind,
//! the run did not finish), `report.json` (the report of the last run that finished),
//! `logs/<name>.log` (each container's output, each run's appended) and `lock` (flock'ed by a
//! running supervisor: `status` reads a held lock as "in progress"). The last [`KEEP`] boots
//! are kept.
//!
//! Containers' output may hold secrets: `boots/` is root's alone (0700), logs are 0600.

use std::fs::{File, Permissions};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};

use super::report::{Outcome, Report, REPORT_VERSION};
use crate::atomic_file;
use crate::locks;
use crate::logging::now_rfc3339;

/// How many boots' records are kept (the current one included).
pub(crate) const KEEP: usize = 5;

/// Where the kernel gives this boot's id.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// Overrides the boot id, for tests that play several boots in one (not for operators).
const BOOT_ID_ENV: &str = "BOOTSTRAP_SUPERVISOR_BOOT_ID";

/// This boot's id: `$BOOTSTRAP_SUPERVISOR_BOOT_ID` (tests) or the kernel's.
pub(crate) fn current_boot_id() -> Result<String> {
    let id = match std::env::var(BOOT_ID_ENV) {
        Ok(id) => {
            log::warn!("{BOOT_ID_ENV} is set: recording boot {id:?}, not the kernel's boot id");
            id
        }
        Err(_) => std::fs::read_to_string(BOOT_ID).with_context(|| format!("reading {BOOT_ID}"))?,
    };
    let id = id.trim().to_string();
    check_id(&id)?;
    Ok(id)
}

/// A boot id is a UUID's hex digits and dashes: never a path.
fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        bail!("invalid boot id {id:?}: a boot id is hex digits and dashes (as in /proc/sys/kernel/random/boot_id)");
    }
    Ok(())
}

/// The boots directory of a state dir.
pub(crate) fn boots_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("boots")
}

/// Which boot to show: `current`, `previous` (the latest recorded boot before the current
/// one) or a boot id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Which {
    Current,
    Previous,
    Id(String),
}

/// Parses `--boot`.
pub(crate) fn parse_which(text: &str) -> Result<Which, String> {
    match text {
        "current" => Ok(Which::Current),
        "previous" => Ok(Which::Previous),
        id => check_id(id)
            .map(|()| Which::Id(id.to_string()))
            .map_err(|err| format!("{err:#}")),
    }
}

/// The recorded boots, oldest first (by their `sequence`, then id).
pub(crate) fn list(state_dir: &Path) -> Result<Vec<String>> {
    let dir = boots_dir(state_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", dir.display())),
    };
    let mut boots: Vec<(u64, String)> = entries
        .flatten()
        .filter_map(|e| {
            let id = e.file_name().to_str()?.to_string();
            check_id(&id).ok()?;
            Some((sequence(&e.path()), id))
        })
        .collect();
    boots.sort();
    Ok(boots.into_iter().map(|(_, id)| id).collect())
}

/// The id `which` names. `previous` with no earlier boot recorded is an error saying so.
pub(crate) fn resolve(state_dir: &Path, which: &Which) -> Result<String> {
    let current = current_boot_id()?;
    match which {
        Which::Current => Ok(current),
        Which::Id(id) => Ok(id.clone()),
        Which::Previous => list(state_dir)?
            .into_iter()
            .rev()
            .find(|id| *id != current)
            .with_context(|| {
                format!(
                    "no boot before the current one ({current}) is recorded in {}",
                    boots_dir(state_dir).display()
                )
            }),
    }
}

/// A boot's place in the order; 0 when unreadable (such a boot sorts first, pruned first).
fn sequence(boot_dir: &Path) -> u64 {
    std::fs::read_to_string(boot_dir.join(SEQUENCE))
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

/// The file of a boot's place in the order.
const SEQUENCE: &str = "sequence";
/// The report of a run going on, or of one that did not finish.
const PROGRESS: &str = "progress.json";
/// The report of the last run that finished.
const REPORT: &str = "report.json";

/// The directory of one recorded boot.
pub(crate) fn boot_dir(state_dir: &Path, id: &str) -> PathBuf {
    boots_dir(state_dir).join(id)
}

/// The log of a container in a boot's directory.
pub(crate) fn log_path(boot_dir: &Path, name: &str) -> PathBuf {
    boot_dir.join("logs").join(format!("{name}.log"))
}

/// Whether a supervisor is running in that boot (it holds the boot's lock).
pub(crate) fn in_progress(boot_dir: &Path) -> bool {
    locks::held(&boot_dir.join("lock"))
}

/// This boot's record, held by the running supervisor: created (with its `logs/`), locked,
/// older boots pruned to [`KEEP`].
pub(crate) struct Record {
    pub dir: PathBuf,
    /// The settings file and start of this run, for the report.
    settings: String,
    started_at: String,
    /// Held for the run: `status` sees it as in progress.
    _lock: Flock<File>,
}

impl Record {
    /// Opens (creating if needed) this boot's record under `state_dir` and prunes old boots.
    pub(crate) fn open(state_dir: &Path, settings: &Path, started_at: &str) -> Result<Record> {
        let id = current_boot_id()?;
        let boots = boots_dir(state_dir);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&boots)
            .and_then(|()| std::fs::set_permissions(&boots, Permissions::from_mode(0o700)))
            .with_context(|| format!("creating {}", boots.display()))?;
        let dir = boot_dir(state_dir, &id);
        std::fs::create_dir_all(dir.join("logs"))
            .with_context(|| format!("creating {}", dir.join("logs").display()))?;
        let sequence_path = dir.join(SEQUENCE);
        if !sequence_path.exists() {
            let next = list(state_dir)?
                .iter()
                .map(|other| sequence(&boot_dir(state_dir, other)))
                .max()
                .unwrap_or(0)
                + 1;
            atomic_file::write(&sequence_path, next.to_string().as_bytes(), 0o600)?;
        }
        let lock_path = dir.join("lock");
        // A second supervisor in the same boot waits: the markers already keep it from
        // running a container twice.
        let lock = locks::flock(
            &lock_path,
            File::options().create(true).truncate(false).write(true),
            FlockArg::LockExclusive,
        )?;
        let record = Record {
            dir,
            settings: settings.display().to_string(),
            started_at: started_at.to_string(),
            _lock: lock,
        };
        prune(state_dir, &id);
        // From now on the boot shows a run that has not finished, until `finish`.
        record.progress(std::iter::empty());
        Ok(record)
    }

    /// The report of this run so far or at its end: `containers` in any order are put in
    /// the order given; `exit_code` the supervisor's (so far: its verdict on what ended).
    pub(crate) fn report(
        &self,
        containers: Vec<Outcome>,
        exit_code: i32,
        error: Option<String>,
    ) -> Report {
        Report {
            version: REPORT_VERSION,
            settings: self.settings.clone(),
            started_at: self.started_at.clone(),
            finished_at: now_rfc3339(),
            exit_code,
            containers,
            error,
        }
    }

    /// Writes the run's final report (atomically, durable) and removes its progress: the
    /// run finished. A failure is logged, not fatal: the boot matters more than its record.
    pub(crate) fn finish(&self, report: &Report) {
        let result = report
            .write(&self.dir.join(REPORT))
            .and_then(|()| remove_if_present(&self.dir.join(PROGRESS)));
        if let Err(err) = result {
            log::warn!("recording this boot's report: {err:#}");
        }
    }

    /// Rewrites the progress report with the outcomes so far (logged, not fatal, on failure).
    pub(crate) fn progress<'a>(&self, outcomes: impl Iterator<Item = &'a Outcome>) {
        let containers: Vec<Outcome> = outcomes.cloned().collect();
        let exit_code = Report::verdict(&containers);
        let report = self.report(containers, exit_code, None);
        // Not synced: it is rewritten as containers end, and the final report is synced.
        if let Err(err) = report.replace(&self.dir.join(PROGRESS)) {
            log::warn!("recording this boot's progress: {err:#}");
        }
    }
}

/// Removes all but the newest [`KEEP`] boots, never `current`; what cannot be removed is
/// logged and the rest still pruned.
fn prune(state_dir: &Path, current: &str) {
    let boots = match list(state_dir) {
        Ok(boots) => boots,
        Err(err) => return log::warn!("removing old boot records: {err:#}"),
    };
    let others: Vec<&String> = boots.iter().filter(|id| *id != current).collect();
    let excess = others.len().saturating_sub(KEEP - 1);
    for id in &others[..excess] {
        let dir = boot_dir(state_dir, id);
        if let Err(err) = std::fs::remove_dir_all(&dir) {
            log::warn!("removing old boot record {}: {err}", dir.display());
        }
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(err).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// What a boot's record says of its last run.
pub(crate) enum Recorded {
    /// No run recorded.
    Nothing,
    /// A run that has not finished: going on when the boot's lock is held, else it ended
    /// without finishing (the supervisor was killed or crashed); what ended so far.
    Unfinished(Report),
    /// The last run that finished.
    Finished(Report),
}

/// Reads what a boot's record says. A report that does not parse, or of another schema
/// version, is an error naming it: never trusted.
pub(crate) fn read(boot_dir: &Path) -> Result<Recorded> {
    if let Some(report) = read_report(&boot_dir.join(PROGRESS))? {
        return Ok(Recorded::Unfinished(report));
    }
    Ok(read_report(&boot_dir.join(REPORT))?.map_or(Recorded::Nothing, Recorded::Finished))
}

fn read_report(path: &Path) -> Result<Option<Report>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    let report: Report =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    if report.version != REPORT_VERSION {
        bail!(
            "{} is of report version {}, not {REPORT_VERSION}: refusing to read it",
            path.display(),
            report.version
        );
    }
    Ok(Some(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_ids_are_never_paths() {
        assert!(parse_which("../etc").is_err());
        assert!(parse_which("").is_err());
        assert_eq!(parse_which("0f3c-9a"), Ok(Which::Id("0f3c-9a".to_string())));
        assert_eq!(parse_which("previous"), Ok(Which::Previous));
    }
}
