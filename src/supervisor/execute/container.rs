//! One container's run: its bundle prepared, its runtime process (the launcher's fork doing
//! what `bootstrap-runc run` does) with its output streamed and
//! logged, its stop on timeout or on the supervisor's stop request (its stop signal — the
//! image's `StopSignal`, SIGTERM by default — the stop grace, SIGKILL to every process), and
//! the outcome classified.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::launcher::Launched;
use super::{blank_outcome, Executor};
use crate::logging::now_rfc3339;
use crate::stop;
use crate::supervisor::boots;
use crate::supervisor::bundle::{self, Prepared};
use crate::supervisor::journal::ContainerJournal;
use crate::supervisor::plan::Step;
use crate::supervisor::report::{ImageOutcome, Outcome, Status};
use crate::supervisor::settings;

/// Why the supervisor ended a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    TimedOut,
    Interrupted,
}

impl Executor {
    pub(super) fn run_step(&self, step: &Step) -> Outcome {
        let mut outcome = blank_outcome(step, Status::RuntimeError);
        outcome.started_at = Some(now_rfc3339());
        self.prepare_and_run(step, &mut outcome);
        outcome.finished_at = Some(now_rfc3339());
        outcome
    }

    fn prepare_and_run(&self, step: &Step, outcome: &mut Outcome) {
        let preparing = Instant::now();
        let prepared = self.runtime.host_root().and_then(|host_root| {
            bundle::prepare(
                step,
                &self.state_dir,
                &host_root,
                &self.images,
                self.cgroup_parent.as_deref(),
                self.writable_layer,
            )
        });
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(err) => {
                if stop::requested() {
                    outcome.status = Status::Interrupted;
                }
                outcome.error = Some(format!("{err:#}"));
                return;
            }
        };
        outcome.prepare_ms = preparing.elapsed().as_millis() as u64;
        outcome.image = prepared
            .rootfs
            .as_ref()
            .and_then(|rootfs| rootfs.pulled.clone())
            .map(|pulled| ImageOutcome {
                digest: pulled.digest,
                pull_ms: pulled.pull_ms,
                unpack_ms: pulled.unpack_ms,
                from_cache: pulled.from_cache,
            });
        if stop::requested() {
            // Asked to stop while preparing: start nothing more.
            outcome.status = Status::Interrupted;
            return;
        }
        let running = Instant::now();
        let result = self.run_container(step, &prepared);
        outcome.run_ms = running.elapsed().as_millis() as u64;
        match result {
            Ok((status, ending)) => self.classify(step, status, ending, outcome),
            Err(err) => outcome.error = Some(format!("{err:#}")),
        }
        let layer_full = prepared.rootfs.as_ref().is_some_and(|r| r.layer_full());
        if outcome.status == Status::Failed && layer_full {
            outcome.error = Some(format!(
                "its writable layer was full: it holds {} (--writable-layer-size)",
                settings::format_size(self.writable_layer)
            ));
        }
    }

    /// Runs the container to its end, or stops it with its stop signal on its timeout or the
    /// supervisor's stop request; returns the runtime's exit status and why it was stopped, if
    /// it was.
    fn run_container(
        &self,
        step: &Step,
        prepared: &Prepared,
    ) -> Result<(ExitStatus, Option<Ending>)> {
        let _ = std::fs::remove_file(self.runtime.log(&step.name));
        let log = open_log(&boots::log_path(&self.record.dir, &step.name))?;
        let (stdout, stdout_write) = pipe().context("creating the container's stdout pipe")?;
        let (stderr, stderr_write) = pipe().context("creating the container's stderr pipe")?;
        let rx = self.launcher.run(
            &step.id,
            &prepared.dir,
            prepared.root_area.as_deref(),
            &self.runtime.log(&step.name),
            stdout_write,
            stderr_write,
        )?;
        let journal = ContainerJournal::open(&step.name).map(std::sync::Arc::new);
        let streams = [
            stream(
                File::from(stdout),
                &step.name,
                log.try_clone()?,
                journal.clone(),
            ),
            stream(File::from(stderr), &step.name, log, journal),
        ];
        let deadline = step
            .container
            .timeout
            // A timeout past the clock's end ("18446744073709551615s") is no bound, never a panic.
            .and_then(|timeout| Instant::now().checked_add(timeout));
        let mut ending = None;
        let status = loop {
            let wait = deadline.map_or(stop::POLL, |deadline| {
                deadline
                    .saturating_duration_since(Instant::now())
                    .min(stop::POLL)
            });
            match rx.recv_timeout(wait) {
                Ok(status) => break status,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Nobody would see the container end, nor stop it on its timeout.
                    self.runtime.kill(&step.name, &step.id, "KILL", true);
                    bail!("the launcher ended before the runtime process")
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            ending = if stop::requested() {
                Some(Ending::Interrupted)
            } else if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                Some(Ending::TimedOut)
            } else {
                None
            };
            if let Some(ending) = ending {
                break self.stop(step, ending, &prepared.stop_signal, &rx)?;
            }
        }
        .context("running bootstrap-runc")?;
        for stream in streams {
            let _ = stream.join();
        }
        Ok((status, ending))
    }

    /// host-ctr's stop: `stop_signal` to the container's init, then, after the grace, SIGKILL
    /// to every process in it. Returns how the runtime ended.
    fn stop(
        &self,
        step: &Step,
        ending: Ending,
        stop_signal: &str,
        rx: &mpsc::Receiver<Launched>,
    ) -> Result<Launched> {
        let grace = self.stop_grace;
        let why = match ending {
            Ending::TimedOut => format!(
                "timed out after {}",
                settings::format_duration(step.container.timeout.unwrap_or_default())
            ),
            Ending::Interrupted => "the supervisor is stopping".to_string(),
        };
        log::warn!(
            "{}: {why}; sending {stop_signal}, SIGKILL to all its processes in {}",
            step.name,
            settings::format_duration(grace)
        );
        self.runtime.kill(&step.name, &step.id, stop_signal, false);
        match rx.recv_timeout(grace) {
            Ok(status) => Ok(status),
            Err(_) => {
                log::warn!(
                    "{}: still running after {}; killing all its processes",
                    step.name,
                    settings::format_duration(grace)
                );
                self.runtime.kill(&step.name, &step.id, "KILL", true);
                rx.recv()
                    .context("the launcher ended before the runtime process")
            }
        }
    }

    /// Tells a container that failed from a runtime that did: the runtime writes every error
    /// of its own to its JSON log; a container's exit code never does.
    fn classify(
        &self,
        step: &Step,
        status: ExitStatus,
        ending: Option<Ending>,
        outcome: &mut Outcome,
    ) {
        use std::os::unix::process::ExitStatusExt;
        let code = status.code();
        let runtime_error = runtime_error(&self.runtime.log(&step.name));
        outcome.status = match (code, &runtime_error) {
            _ if ending == Some(Ending::TimedOut) => Status::TimedOut,
            _ if ending == Some(Ending::Interrupted) => Status::Interrupted,
            (Some(0), _) => Status::Succeeded,
            (Some(_), Some(_)) | (None, _) => Status::RuntimeError,
            (Some(_), None) => Status::Failed,
        };
        match (code, status.signal()) {
            (Some(code), _) if code > 128 && outcome.status != Status::RuntimeError => {
                outcome.signal = Some(code - 128)
            }
            (Some(code), _) => outcome.exit_code = Some(code),
            (None, Some(signal)) => {
                outcome.error = Some(format!("the runtime was killed by signal {signal}"));
            }
            (None, None) => {}
        }
        if outcome.status == Status::RuntimeError && outcome.error.is_none() {
            outcome.error = runtime_error;
        }
        match ending {
            Some(Ending::TimedOut) => {
                outcome.error = Some(format!(
                    "timed out after {}",
                    settings::format_duration(step.container.timeout.unwrap_or_default())
                ))
            }
            Some(Ending::Interrupted) => {
                outcome.error = Some("the supervisor was stopped".to_string())
            }
            None => {}
        }
    }
}

/// A pipe, both ends close-on-exec: only the runtime process gets the write end.
fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// Copies a child's output to the container's log file, and to the journal under the
/// container's identifier when our output is the journal, else (or if journald refuses a line)
/// to our stdout, each line prefixed with the container's name.
fn stream(
    source: File,
    name: &str,
    mut log: std::fs::File,
    journal: Option<std::sync::Arc<ContainerJournal>>,
) -> std::thread::JoinHandle<()> {
    let name = name.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(source).split(b'\n').map_while(Result::ok) {
            let text = String::from_utf8_lossy(&line);
            let _ = writeln!(log, "{text}");
            if !journal.as_ref().is_some_and(|j| j.line(&text)) {
                let _ = writeln!(std::io::stdout().lock(), "{name}: {text}");
            }
        }
    })
}

/// What the runtime said went wrong: the last `"level":"error"` message of its JSON log; or,
/// when the log cannot be read, that: a runtime process opens its log (the supervisor removed
/// the last run's) before it does anything about the container, so it failed before that.
fn runtime_error(path: &Path) -> Option<String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) => return Some(format!("the runtime's log {}: {err}", path.display())),
    };
    String::from_utf8_lossy(&bytes)
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| v["level"] == "error")
        .find_map(|v| v["msg"].as_str().map(String::from))
}

/// A container's log in this boot's record: 0600 (its output may hold secrets), never through
/// a symlink, appended to, so a second run in the same boot keeps the first one's output, after
/// a line saying when the new run began.
fn open_log(path: &Path) -> Result<File> {
    let mut log = File::options()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let earlier = log.metadata().map(|meta| meta.len() > 0).unwrap_or(false);
    if earlier {
        writeln!(log, "--- run again at {} ---", now_rfc3339())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(log)
}
