//! Per-boot records: `<state-dir>/boots/<boot_id>/` keeps each boot's report and every
//! container's output, so `status` and `logs` can answer for this boot and the ones before it.
//!
//! A boot is identified as systemd identifies it: the kernel's random `boot_id`
//! (`/proc/sys/kernel/random/boot_id`, the `_BOOT_ID` of the journal). A boot's directory holds
//! `started` (RFC 3339, UTC: when the first run of that boot began; boots are ordered by it),
//! `report.json` (the report's schema, rewritten as each container ends and at the end of the
//! run), `logs/<name>.log` (each container's output), and `lock` (flock'ed by a running
//! supervisor: `status` reads a held lock as "in progress"). The last [`KEEP`] boots are kept.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::execute::verdict;
use super::report::{Outcome, Report, REPORT_VERSION};
use crate::atomic_file;
use crate::logging::now_rfc3339;

/// How many boots' records are kept (the current one included).
pub const KEEP: usize = 5;

/// Where the kernel gives this boot's id.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// Overrides the boot id, for tests that play several boots in one (not for operators).
const BOOT_ID_ENV: &str = "BOOTSTRAP_SUPERVISOR_BOOT_ID";

/// This boot's id: `$BOOTSTRAP_SUPERVISOR_BOOT_ID` (tests) or the kernel's.
pub fn current_boot_id() -> Result<String> {
    let id = match std::env::var(BOOT_ID_ENV) {
        Ok(id) => id,
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
pub fn boots_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("boots")
}

/// Which boot to show: `current`, `previous` (the latest recorded boot before the current
/// one) or a boot id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Which {
    Current,
    Previous,
    Id(String),
}

/// Parses `--boot`.
pub fn parse_which(text: &str) -> Result<Which, String> {
    match text {
        "current" => Ok(Which::Current),
        "previous" => Ok(Which::Previous),
        id => check_id(id)
            .map(|()| Which::Id(id.to_string()))
            .map_err(|err| format!("{err:#}")),
    }
}

/// The recorded boots, oldest first (by their `started` time, then id).
pub fn list(state_dir: &Path) -> Result<Vec<String>> {
    let dir = boots_dir(state_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", dir.display())),
    };
    let mut boots: Vec<(String, String)> = entries
        .flatten()
        .filter_map(|e| {
            let id = e.file_name().to_str()?.to_string();
            check_id(&id).ok()?;
            let started = std::fs::read_to_string(e.path().join("started")).unwrap_or_default();
            Some((started.trim().to_string(), id))
        })
        .collect();
    boots.sort();
    Ok(boots.into_iter().map(|(_, id)| id).collect())
}

/// The id `which` names. `previous` with no earlier boot recorded is an error saying so.
pub fn resolve(state_dir: &Path, which: &Which) -> Result<String> {
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

/// The directory of one recorded boot.
pub fn boot_dir(state_dir: &Path, id: &str) -> PathBuf {
    boots_dir(state_dir).join(id)
}

/// The log of a container in a boot's directory.
pub fn log_path(boot_dir: &Path, name: &str) -> PathBuf {
    boot_dir.join("logs").join(format!("{name}.log"))
}

/// Whether a supervisor is running in that boot (it holds the boot's lock).
pub fn in_progress(boot_dir: &Path) -> bool {
    let Ok(file) = File::open(boot_dir.join("lock")) else {
        return false;
    };
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    rc != 0
}

/// This boot's record, held by the running supervisor: created (with its `logs/`), locked,
/// older boots pruned to [`KEEP`].
pub struct Record {
    pub dir: PathBuf,
    /// The settings file and start of this run, for the report.
    settings: String,
    started_at: String,
    /// Held for the run: `status` sees it as in progress.
    _lock: File,
}

impl Record {
    /// Opens (creating if needed) this boot's record under `state_dir` and prunes old boots.
    pub fn open(state_dir: &Path, settings: &Path, started_at: &str) -> Result<Record> {
        let id = current_boot_id()?;
        let dir = boot_dir(state_dir, &id);
        std::fs::create_dir_all(dir.join("logs"))
            .with_context(|| format!("creating {}", dir.join("logs").display()))?;
        let started = dir.join("started");
        if !started.exists() {
            atomic_file::write(&started, now_rfc3339().as_bytes(), 0o644)?;
        }
        let lock_path = dir.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        // SAFETY: flock on a descriptor we own. A second supervisor in the same boot waits:
        // the markers already keep it from running a container twice.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("locking {}", lock_path.display()));
        }
        let record = Record {
            dir,
            settings: settings.display().to_string(),
            started_at: started_at.to_string(),
            _lock: lock,
        };
        if let Err(err) = prune(state_dir, &id) {
            log::warn!("removing old boot records: {err:#}");
        }
        Ok(record)
    }

    /// The report of this run so far or at its end: `containers` in any order are put in
    /// the order given; `exit_code` the supervisor's (so far: its verdict on what ended).
    pub fn report(
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

    /// Writes this boot's report (atomically, durable: it is what `status` shows after a crash).
    pub fn write_report(&self, report: &Report) -> Result<()> {
        report.write(&self.dir.join("report.json"))
    }

    /// Rewrites the report with the outcomes so far (while the run goes on; a failure to write
    /// it is logged, not fatal: the run matters more than its record).
    pub fn progress<'a>(&self, outcomes: impl Iterator<Item = &'a Outcome>) {
        let containers: Vec<Outcome> = outcomes.cloned().collect();
        let exit_code = verdict(&containers);
        if let Err(err) = self.write_report(&self.report(containers, exit_code, None)) {
            log::warn!("recording this boot's progress: {err:#}");
        }
    }
}

/// Removes all but the newest [`KEEP`] boots; never `current`.
fn prune(state_dir: &Path, current: &str) -> Result<()> {
    let boots = list(state_dir)?;
    let others: Vec<&String> = boots.iter().filter(|id| *id != current).collect();
    let excess = others.len().saturating_sub(KEEP - 1);
    for id in &others[..excess] {
        let dir = boot_dir(state_dir, id);
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

/// Reads a boot's report, if it has one.
pub fn read_report(boot_dir: &Path) -> Result<Option<Report>> {
    let path = boot_dir.join("report.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("parsing {}", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
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
