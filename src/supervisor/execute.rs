//! Running a plan: every ready container at once, each through `bootstrap-runc run` (so the
//! policy lives in one place), with dependencies, timeouts, same-boot markers, the once → off
//! write-back and the report.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};

use super::bundle;
use super::edit;
use super::image_cache::ImageCache;
use super::markers::{Marker, Markers};
use super::plan::{self, Plan, Step};
use super::report::{ImageOutcome, Outcome, Report, Status};
use super::settings::Mode;
use crate::logging::now_rfc3339;

/// After SIGTERM on timeout, how long a container has before everything in it is SIGKILLed.
const GRACE: Duration = Duration::from_secs(10);
/// How often the scheduler looks for a stop request while containers run.
const STOP_POLL: Duration = Duration::from_millis(100);

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: libc::c_int) {
    STOP_REQUESTED.store(true, Ordering::Relaxed);
}

/// SIGTERM or SIGINT ask the supervisor to stop; the scheduler polls for it.
struct StopRequest;

impl StopRequest {
    fn install() -> Result<StopRequest> {
        let action = SigAction::new(
            SigHandler::Handler(request_stop),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        for sig in [Signal::SIGTERM, Signal::SIGINT] {
            // SAFETY: the handler only stores to an atomic.
            unsafe { signal::sigaction(sig, &action) }
                .with_context(|| format!("handling {sig}"))?;
        }
        Ok(StopRequest)
    }

    fn requested(&self) -> bool {
        stop_requested()
    }
}

/// Whether SIGTERM/SIGINT arrived: long work (pulls) gives up when it did.
pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::Relaxed)
}

pub struct Executor {
    pub settings: PathBuf,
    pub runtime: PathBuf,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub host_root: Option<PathBuf>,
    pub host_mount_area: Option<PathBuf>,
    /// Shared by the containers' threads, so each image is pulled once.
    pub images: Arc<ImageCache>,
    /// On cgroup v2, the supervisor's cgroup: the containers' cgroups go under it (cgroup.rs).
    pub cgroup_parent: Option<PathBuf>,
}

impl Executor {
    fn runtime_root(&self) -> PathBuf {
        self.run_dir.join("runtime")
    }

    fn runtime_command(&self, name: &str) -> Command {
        let mut cmd = Command::new(&self.runtime);
        cmd.arg("--root").arg(self.runtime_root());
        cmd.arg("--log")
            .arg(self.runtime_log(name))
            .args(["--log-format", "json"]);
        if let Some(root) = &self.host_root {
            cmd.arg("--host-root").arg(root);
        }
        if let Some(area) = &self.host_mount_area {
            cmd.arg("--host-mount-area").arg(area);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    fn runtime_log(&self, name: &str) -> PathBuf {
        self.run_dir
            .join("logs")
            .join(format!("{name}.runtime.json"))
    }

    /// Runs the plan; returns every container's outcome, in plan order.
    pub fn execute(&self, plan: &Plan) -> Result<Vec<Outcome>> {
        for dir in [self.run_dir.join("logs"), self.state_dir.join("logs")] {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let markers = Markers::open(&self.run_dir)?;
        let mut outcomes: BTreeMap<String, Outcome> = BTreeMap::new();
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
                    let _ = self
                        .runtime_command(&step.name)
                        .args(["delete", "--force", &step.id])
                        .status();
                }
                None => {}
            }
        }

        let (done_tx, done_rx) = mpsc::channel::<Outcome>();
        let mut started: BTreeSet<String> = outcomes.keys().cloned().collect();
        let mut running: BTreeSet<String> = BTreeSet::new();
        let stop = StopRequest::install()?;
        loop {
            if stop.requested() {
                break;
            }
            let progress: BTreeMap<String, plan::Outcome> = outcomes
                .iter()
                .map(|(name, o)| (name.clone(), plan_outcome(o.status)))
                .collect();
            let next = plan.next(&progress);
            for step in next.skip {
                let failed: Vec<&str> = step
                    .depends_on
                    .iter()
                    .filter(|d| {
                        progress
                            .get(*d)
                            .is_some_and(|o| *o != plan::Outcome::Succeeded)
                    })
                    .map(String::as_str)
                    .collect();
                let mut outcome = blank_outcome(step, Status::Skipped);
                outcome.error = Some(format!("dependency did not succeed: {}", failed.join(", ")));
                self.finish(&markers, outcome, &mut outcomes);
            }
            for step in next.ready {
                if started.insert(step.name.clone()) {
                    markers.set(&step.name, &Marker::Started)?;
                    running.insert(step.name.clone());
                    let tx = done_tx.clone();
                    let step = step.clone();
                    let executor = self.clone_paths();
                    std::thread::spawn(move || {
                        let _ = tx.send(executor.run_step(&step));
                    });
                }
            }
            if running.is_empty() {
                break;
            }
            match done_rx.recv_timeout(STOP_POLL) {
                Ok(outcome) => {
                    running.remove(&outcome.name);
                    if outcome.status == Status::Interrupted {
                        // No marker: a later run this boot runs it again.
                        outcomes.insert(outcome.name.clone(), outcome);
                    } else {
                        self.finish(&markers, outcome, &mut outcomes);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!("a container thread vanished"),
            }
        }
        if stop.requested() {
            self.interrupt(plan, &running, &done_rx, &mut outcomes);
        }
        Ok(plan
            .steps
            .iter()
            .filter_map(|s| outcomes.remove(&s.name))
            .collect())
    }

    /// The supervisor was asked to stop (the unit is being stopped): kill what runs, start
    /// nothing more, and leave no `finished` marker, so a later run this boot runs them again.
    fn interrupt(
        &self,
        plan: &Plan,
        running: &BTreeSet<String>,
        done_rx: &mpsc::Receiver<Outcome>,
        outcomes: &mut BTreeMap<String, Outcome>,
    ) {
        log::warn!(
            "stopping: killing {} running bootstrap container(s)",
            running.len()
        );
        for step in plan.steps.iter().filter(|s| running.contains(&s.name)) {
            let _ = self
                .runtime_command(&step.name)
                .args(["kill", "--all", &step.id, "KILL"])
                .status();
        }
        for _ in running {
            if let Ok(mut outcome) = done_rx.recv() {
                outcome.status = Status::Interrupted;
                outcome.error = Some("the supervisor was stopped".to_string());
                outcomes.insert(outcome.name.clone(), outcome);
            }
        }
        for step in &plan.steps {
            outcomes.entry(step.name.clone()).or_insert_with(|| {
                let mut outcome = blank_outcome(step, Status::Interrupted);
                outcome.error = Some("not started: the supervisor was stopped".to_string());
                outcome
            });
        }
    }

    fn clone_paths(&self) -> Executor {
        Executor {
            settings: self.settings.clone(),
            runtime: self.runtime.clone(),
            state_dir: self.state_dir.clone(),
            run_dir: self.run_dir.clone(),
            host_root: self.host_root.clone(),
            host_mount_area: self.host_mount_area.clone(),
            images: self.images.clone(),
            cgroup_parent: self.cgroup_parent.clone(),
        }
    }

    /// Records an outcome: marker, and once → off after a success.
    fn finish(
        &self,
        markers: &Markers,
        mut outcome: Outcome,
        outcomes: &mut BTreeMap<String, Outcome>,
    ) {
        if outcome.status == Status::Succeeded && outcome.mode == Mode::Once.name() {
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
        log::info!("{}: {}", outcome.name, describe(&outcome));
        outcomes.insert(outcome.name.clone(), outcome);
    }

    fn run_step(&self, step: &Step) -> Outcome {
        let mut outcome = blank_outcome(step, Status::RuntimeError);
        outcome.started_at = Some(now_rfc3339());
        self.prepare_and_run(step, &mut outcome);
        if let Err(err) = bundle::release(&bundle::dir(&self.state_dir, &step.name)) {
            log::warn!("{}: {err:#}", step.name);
        }
        outcome.finished_at = Some(now_rfc3339());
        outcome
    }

    fn prepare_and_run(&self, step: &Step, outcome: &mut Outcome) {
        let preparing = Instant::now();
        let host_root = self.host_root.clone().unwrap_or_else(|| PathBuf::from("/"));
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
        outcome.image = prepared.image.map(|image| ImageOutcome {
            digest: image.digest,
            pull_ms: image.pull_ms,
            unpack_ms: image.unpack_ms,
        });
        if stop_requested() {
            // Asked to stop while preparing: start nothing more.
            outcome.status = Status::Interrupted;
            return;
        }
        let running = Instant::now();
        let result = self.run_container(step, &prepared.dir);
        outcome.run_ms = running.elapsed().as_millis() as u64;
        match result {
            Ok((status, timed_out)) => self.classify(step, status, timed_out, outcome),
            Err(err) => outcome.error = Some(format!("{err:#}")),
        }
    }

    /// Runs the container to its end (or its timeout); returns the runtime's exit status.
    fn run_container(&self, step: &Step, bundle: &Path) -> Result<(ExitStatus, bool)> {
        let _ = std::fs::remove_file(self.runtime_log(&step.name));
        let log_path = self
            .state_dir
            .join("logs")
            .join(format!("{}.log", step.name));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut child = self
            .runtime_command(&step.name)
            .arg("run")
            .arg("--bundle")
            .arg(bundle)
            .arg(&step.id)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.runtime.display()))?;
        let streams = [
            stream(child.stdout.take(), &step.name, log.try_clone()?),
            stream(child.stderr.take(), &step.name, log),
        ];
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let mut timed_out = false;
        let status = match step.timeout {
            None => rx.recv()?,
            Some(timeout) => match rx.recv_timeout(timeout) {
                Ok(status) => status,
                Err(_) => {
                    timed_out = true;
                    log::warn!(
                        "{}: timed out after {timeout:?}; sending SIGTERM",
                        step.name
                    );
                    let _ = self
                        .runtime_command(&step.name)
                        .args(["kill", &step.id, "TERM"])
                        .status();
                    match rx.recv_timeout(GRACE) {
                        Ok(status) => status,
                        Err(_) => {
                            log::warn!(
                                "{}: still running after {GRACE:?}; killing all its processes",
                                step.name
                            );
                            let _ = self
                                .runtime_command(&step.name)
                                .args(["kill", "--all", &step.id, "KILL"])
                                .status();
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
        let runtime_error = last_error(&self.runtime_log(&step.name));
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
                super::settings::format_duration(step.timeout.unwrap_or_default())
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

fn plan_outcome(status: Status) -> plan::Outcome {
    match status {
        Status::Succeeded => plan::Outcome::Succeeded,
        Status::Skipped => plan::Outcome::Skipped,
        _ => plan::Outcome::Failed,
    }
}

fn blank_outcome(step: &Step, status: Status) -> Outcome {
    Outcome {
        name: step.name.clone(),
        mode: step.mode.name().to_string(),
        essential: step.essential,
        source: step.source.to_string(),
        status,
        exit_code: None,
        signal: None,
        started_at: None,
        finished_at: None,
        prepare_ms: 0,
        run_ms: 0,
        image: None,
        error: None,
    }
}

fn describe(outcome: &Outcome) -> String {
    let mut text = outcome.status.name().to_string();
    if let Some(code) = outcome.exit_code {
        text.push_str(&format!(" (exit code {code})"));
    }
    if let Some(signal) = outcome.signal {
        text.push_str(&format!(" (signal {signal})"));
    }
    if let Some(error) = &outcome.error {
        text.push_str(&format!(": {error}"));
    }
    text
}

/// The supervisor's verdict: 0 lets the boot go on, 1 halts it.
pub fn verdict(outcomes: &[Outcome]) -> i32 {
    if Report::essential_failures(outcomes).is_empty() {
        0
    } else {
        1
    }
}
