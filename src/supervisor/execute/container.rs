//! One container's run: its bundle prepared, `bootstrap-runc run` with its output streamed and
//! logged, the timeout (the container's stop signal — its image's `StopSignal`, SIGTERM by
//! default — a grace, SIGKILL to every process), and the outcome classified.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::stop::stop_requested;
use super::{blank_outcome, Executor};
use crate::logging::now_rfc3339;
use crate::supervisor::bundle;
use crate::supervisor::plan::Step;
use crate::supervisor::report::{ImageOutcome, Outcome, Status};
use crate::supervisor::settings;

/// After the stop signal on timeout, how long a container has before everything in it is SIGKILLed.
const GRACE: Duration = Duration::from_secs(10);

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
        let host_root = self
            .runtime
            .host_root
            .clone()
            .unwrap_or_else(|| PathBuf::from("/"));
        let prepared = match bundle::prepare(
            step,
            &self.state_dir,
            &host_root,
            &self.images,
            self.cgroup_parent.as_deref(),
        ) {
            Ok(prepared) => prepared,
            Err(err) => {
                if stop_requested() {
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
            });
        if stop_requested() {
            // Asked to stop while preparing: start nothing more.
            outcome.status = Status::Interrupted;
            return;
        }
        let running = Instant::now();
        let result = self.run_container(step, &prepared.dir, &prepared.stop_signal);
        outcome.run_ms = running.elapsed().as_millis() as u64;
        match result {
            Ok((status, timed_out)) => self.classify(step, status, timed_out, outcome),
            Err(err) => outcome.error = Some(format!("{err:#}")),
        }
    }

    /// Runs the container to its end (or its timeout, when it gets `stop_signal` first);
    /// returns the runtime's exit status.
    fn run_container(
        &self,
        step: &Step,
        bundle: &Path,
        stop_signal: &str,
    ) -> Result<(ExitStatus, bool)> {
        let _ = std::fs::remove_file(self.runtime.log(&step.name));
        let log_path = self
            .state_dir
            .join("logs")
            .join(format!("{}.log", step.name));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut child = self
            .runtime
            .command(&step.name)
            .arg("run")
            .arg("--bundle")
            .arg(bundle)
            .arg(&step.id)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.runtime.binary.display()))?;
        let streams = [
            stream(child.stdout.take(), &step.name, log.try_clone()?),
            stream(child.stderr.take(), &step.name, log),
        ];
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let mut timed_out = false;
        let status = match step.container.timeout {
            None => rx.recv()?,
            Some(timeout) => match rx.recv_timeout(timeout) {
                Ok(status) => status,
                Err(_) => {
                    timed_out = true;
                    log::warn!(
                        "{}: timed out after {timeout:?}; sending {stop_signal}",
                        step.name
                    );
                    self.runtime
                        .try_run(&step.name, &["kill", &step.id, stop_signal]);
                    match rx.recv_timeout(GRACE) {
                        Ok(status) => status,
                        Err(_) => {
                            log::warn!(
                                "{}: still running after {GRACE:?}; killing all its processes",
                                step.name
                            );
                            self.runtime
                                .try_run(&step.name, &["kill", "--all", &step.id, "KILL"]);
                            rx.recv()?
                        }
                    }
                }
            },
        }
        .context("waiting for the runtime")?;
        for stream in streams {
            let _ = stream.join();
        }
        Ok((status, timed_out))
    }

    /// Tells a container that failed from a runtime that did: the runtime writes every error
    /// of its own to its JSON log; a container's exit code never does.
    fn classify(&self, step: &Step, status: ExitStatus, timed_out: bool, outcome: &mut Outcome) {
        use std::os::unix::process::ExitStatusExt;
        let code = status.code();
        let runtime_error = last_error(&self.runtime.log(&step.name));
        outcome.status = match (code, &runtime_error) {
            _ if timed_out => Status::TimedOut,
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
        if timed_out {
            outcome.error = Some(format!(
                "timed out after {}",
                settings::format_duration(step.container.timeout.unwrap_or_default())
            ));
        }
    }
}

/// Copies a child's output to our stdout, each line prefixed with the container's name, and to
/// the container's log file.
fn stream<R: Read + Send + 'static>(
    source: Option<R>,
    name: &str,
    mut log: std::fs::File,
) -> std::thread::JoinHandle<()> {
    let name = name.to_string();
    std::thread::spawn(move || {
        let Some(source) = source else { return };
        for line in BufReader::new(source).split(b'\n').map_while(Result::ok) {
            let text = String::from_utf8_lossy(&line);
            let _ = writeln!(log, "{text}");
            let _ = writeln!(std::io::stdout().lock(), "{name}: {text}");
        }
    })
}

/// The last `"level":"error"` message of a runtime JSON log.
fn last_error(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|v| v["level"] == "error")
        .find_map(|v| v["msg"].as_str().map(String::from))
}
