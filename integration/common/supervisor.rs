//! The supervisor driven on a fake host: settings, state and run dirs of its own per test.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{Fixture, Ran};

pub const SUPERVISOR: &str = env!("CARGO_BIN_EXE_bootstrap-supervisor");

/// A fake host (from the runtime fixture) plus the supervisor's settings, state and run dirs.
pub struct Boot {
    pub f: Fixture,
    pub tag: String,
    pub settings: PathBuf,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    /// Passed as --registry-config, so no test reads the host's.
    pub registry_config: PathBuf,
}

impl Boot {
    pub fn new(name: &str) -> Boot {
        let f = Fixture::new(name);
        let d = f.dir.path().to_path_buf();
        Boot {
            // Container ids (boot.<name>) share the host's cgroup namespace across parallel tests.
            tag: format!("{name}{}", std::process::id()),
            settings: d.join("settings.toml"),
            state_dir: d.join("state-dir"),
            run_dir: d.join("run-dir"),
            registry_config: d.join("registries.toml"),
            f,
        }
    }

    /// A container name unique to this test.
    pub fn name(&self, short: &str) -> String {
        format!("{}-{short}", self.tag)
    }

    pub fn bundle(&self, short: &str, script: &str) -> String {
        self.f
            .bundle(short, &["sh", "-c", script])
            .display()
            .to_string()
    }

    /// Settings with a `mode = "always"` container for each `(short name, source)`.
    pub fn always(&self, containers: &[(&str, &str)]) -> String {
        containers
            .iter()
            .map(|(short, source)| container(&self.name(short), source, "mode = \"always\""))
            .collect()
    }

    /// What container `short` wrote in this boot (empty if nothing): its log in the boot's
    /// record, `<state-dir>/boots/<boot_id>/logs/<name>.log`.
    pub fn container_log(&self, short: &str) -> String {
        let log = self
            .state_dir
            .join("boots")
            .join(boot_id())
            .join("logs")
            .join(format!("{}.log", self.name(short)));
        std::fs::read_to_string(log).unwrap_or_default()
    }

    pub fn write_settings(&self, text: &str) {
        std::fs::write(&self.settings, text).unwrap();
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(SUPERVISOR);
        cmd.arg("run")
            .arg("--settings")
            .arg(&self.settings)
            .arg("--runtime")
            .arg(super::BIN)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--run-dir")
            .arg(&self.run_dir)
            .arg("--host-root")
            .arg(&self.f.host_root)
            .arg("--host-mount-area")
            .arg(&self.f.mount_area)
            .arg("--registry-config")
            .arg(&self.registry_config)
            // Pull retries wait milliseconds, not seconds.
            .env("BOOTSTRAP_SUPERVISOR_BACKOFF_SCALE", "0.01")
            // A short stop grace (host-ctr's 20 s would slow every timeout test).
            .env("BOOTSTRAP_STOP_GRACE", "2s")
            .env("BOOTSTRAP_RUNC_POLICY", &self.f.policy_file)
            .stdin(Stdio::null());
        cmd
    }

    /// Spawns `run` (a [`Boot::command`], perhaps with more flags), waits until each of `ups`
    /// exists in the mount area (the containers are running), then SIGTERMs the supervisor as
    /// systemd stops its unit; returns its output and how long stopping took.
    pub fn stop_once_up(&self, run: Command, ups: &[&str]) -> (Output, Duration) {
        let child = self.start_until_up(run, ups);
        let stopped = Instant::now();
        let out = stop(child);
        (out, stopped.elapsed())
    }

    /// Spawns `run` (output discarded) and waits until each of `ups` exists in the mount area.
    pub fn start_until_up(&self, mut run: Command, ups: &[&str]) -> Child {
        let child = run
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        for up in ups {
            while !self.f.mount_area.join(up).exists() {
                assert!(Instant::now() < deadline, "{up}: container did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        child
    }

    pub fn run(&self) -> Ran {
        let out = self.command().output().unwrap();
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// A run as after a reboot: this boot's markers (the run dir is a tmpfs) are gone.
    pub fn run_next_boot(&self) -> Ran {
        let _ = std::fs::remove_dir_all(&self.run_dir);
        self.run()
    }

    pub fn report(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.run_dir.join("report.json")).unwrap()).unwrap()
    }

    pub fn outcome(&self, short: &str) -> serde_json::Value {
        let name = self.name(short);
        self.report()["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} not in the report"))
            .clone()
    }

    /// Nothing of the containers is left: runtime state, cgroups, mounts.
    pub fn assert_clean(&self) {
        let runtime_root = self.run_dir.join("runtime");
        if let Ok(entries) = std::fs::read_dir(&runtime_root) {
            let names: Vec<_> = entries
                .flatten()
                .map(|e| e.file_name())
                .filter(|n| !n.to_string_lossy().starts_with('.'))
                .collect();
            assert!(names.is_empty(), "runtime state left: {names:?}");
        }
        let cgroups = super::cgroup_dirs(&format!("boot.{}", self.tag));
        assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
        let mounts = self.f.unexpected_mounts();
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    }
}

/// SIGTERMs the supervisor, as systemd stops its unit, and waits for it.
pub fn stop(supervisor: Child) -> Output {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(supervisor.id() as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    supervisor.wait_with_output().unwrap()
}

/// One container's settings table.
pub fn container(name: &str, source: &str, extra: &str) -> String {
    format!("[settings.bootstrap-containers.{name}]\nsource = {source:?}\n{extra}\n")
}

/// This boot's id, as the supervisor records it.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_string()
}
