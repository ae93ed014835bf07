//! The boot, with a real systemd as PID 1: `systemd-nspawn --boot` boots an overlay of the
//! Debian root that `hack/boot-root.sh build` caches, with our binaries and units installed,
//! a stand-in orchestrator (`kubelet.service`, ordered by our kubelet drop-in) and the test's
//! bootstrap-container settings. When the boot is over a harness unit records the system state
//! and powers off; the outcome is read from the guest's journal and the files it leaves.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::supervisor::{container, SUPERVISOR};

const RUNTIME: &str = env!("CARGO_BIN_EXE_bootstrap-runc");
const BOOT_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/hack/boot-root.sh");
const MAKE_BUNDLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/hack/make-bundle.sh");
/// Every boot is killed after this long (a boot here takes 1–2 s plus what the containers do).
const BOOT_LIMIT: Duration = Duration::from_secs(120);
const SETTINGS: &str = "etc/bootstrap-containers/settings.toml";
const DROPIN: &str = "etc/bootstrap-containers/settings.d/50-setup.toml";
const SUPERVISOR_ENV: &str = "etc/bootstrap-containers/supervisor.env";
/// The stop grace the guests' supervisor gets (host-ctr's 20 s would slow every timeout test).
const STOP_GRACE: &str = "2s";

/// One guest: an overlay of the cached root (lower) with a private upper layer, booted as
/// often as a test wants. Dropping it kills whatever it left running, unmounts the overlay and
/// removes its cgroups.
pub(crate) struct Guest {
    machine: String,
    /// Boot the guest with only the unified cgroup hierarchy (cgroup v2, as Debian 12 and most
    /// current hosts), instead of this host's hybrid layout.
    unified: bool,
    dir: tempfile::TempDir,
    root: PathBuf,
    journal: PathBuf,
    /// This guest's cgroup in every host hierarchy: nspawn runs in them, so that concurrent
    /// guests never share a cgroup and everything a guest started can be found and killed.
    cgroups: Vec<PathBuf>,
    boots: usize,
}

/// What one boot left.
pub(crate) struct Boot {
    /// `systemctl is-system-running` when the boot was over: running, degraded, ...
    state: String,
    /// Units that had failed by then.
    failed: Vec<String>,
    /// The stand-in orchestrator's record, if it started in this boot.
    orchestrator: Option<Orchestrator>,
    /// This boot's journal.
    pub(crate) journal: Vec<Entry>,
    /// The guest's boot id (no dashes, as journalctl shows it).
    id: String,
    /// From spawning systemd-nspawn to its exit after the poweroff.
    wall: Duration,
}

struct Orchestrator {
    /// From systemd's start to the orchestrator unit's start.
    boot_time: Duration,
    /// The supervisor unit as the orchestrator found it: ActiveState/SubState/ExecMainStatus.
    supervisor: String,
}

pub(crate) struct Entry {
    pub(crate) identifier: String,
    pub(crate) unit: String,
    pub(crate) message: String,
    /// Every field, as `journalctl -o json` prints it.
    pub(crate) fields: serde_json::Value,
}

impl Guest {
    fn new(test: &str) -> Guest {
        Guest::with_cgroups(test, false)
    }

    fn with_cgroups(test: &str, unified: bool) -> Guest {
        Guest::make(test, unified, "install")
    }

    /// A guest with the test harness alone: none of our files, for a package to install.
    pub(crate) fn bare(test: &str) -> Guest {
        Guest::make(test, false, "harness")
    }

    /// `hack/boot-root.sh <what>` (install or harness) prepares the overlay.
    fn make(test: &str, unified: bool, what: &str) -> Guest {
        let lower = boot_root();
        let dir = common::scratch_dir(&format!("brt-boot-{test}-"));
        // The journal's directory name.
        let machine_id = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
            .unwrap()
            .trim()
            .replace('-', "");
        let root = dir.path().join("root");
        for sub in ["upper", "work", "root"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            dir.path().join("upper").display(),
            dir.path().join("work").display()
        );
        nix::mount::mount(
            Some("overlay"),
            &root,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .unwrap_or_else(|err| panic!("mounting the overlay of {}: {err}", lower.display()));
        let mut guest = Guest {
            machine: format!("brt-{test}-{}", std::process::id()),
            unified,
            journal: root.join("var/log/journal").join(&machine_id),
            root,
            dir,
            cgroups: Vec::new(),
            boots: 0,
        };
        for parent in own_cgroups() {
            let cgroup = make_cgroup(&parent, &guest.machine);
            guest.cgroups.push(cgroup);
        }
        std::fs::write(guest.root.join("etc/machine-id"), format!("{machine_id}\n")).unwrap();
        let bin_dir = Path::new(RUNTIME).parent().unwrap();
        let out = Command::new(BOOT_ROOT)
            .arg(what)
            .arg(&guest.root)
            .env("BIN_DIR", bin_dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "boot-root.sh {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Through the unit's EnvironmentFile, as an operator sets it.
        std::fs::create_dir_all(guest.path("etc/bootstrap-containers")).unwrap();
        std::fs::write(
            guest.path(SUPERVISOR_ENV),
            format!("BOOTSTRAP_STOP_GRACE={STOP_GRACE}\n"),
        )
        .unwrap();
        guest
    }

    /// Runs `script` (`sh -c`) in the guest's root without booting it (systemd-nspawn with
    /// /proc, /dev and /run of its own, as a package manager runs in an image build); panics
    /// with its output when it fails. Returns its stdout.
    pub(crate) fn run_in(&self, script: &str) -> String {
        let out = Command::new("systemd-nspawn")
            .arg(format!("--directory={}", self.root.display()))
            .args([
                "--quiet",
                "--register=no",
                "--keep-unit",
                "--private-network",
                "--link-journal=no",
                "--resolv-conf=off",
                "--timezone=off",
                "--",
                "/bin/sh",
                "-c",
                script,
            ])
            .env_remove("SYSTEMD_NSPAWN_USE_CGNS")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "in the guest: {script}: {}\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    pub(crate) fn path(&self, guest_path: &str) -> PathBuf {
        self.root.join(guest_path.trim_start_matches('/'))
    }

    /// A busybox bundle running `sh -c script`; returns its path in the guest.
    pub(crate) fn bundle(&self, name: &str, script: &str) -> String {
        let path = format!("/var/lib/bundles/{name}");
        let status = Command::new(MAKE_BUNDLE)
            .arg(self.path(&path))
            .args(["sh", "-c", script])
            .status()
            .unwrap();
        assert!(status.success(), "make-bundle.sh failed");
        path
    }

    pub(crate) fn write_settings(&self, text: &str) {
        let path = self.path(SETTINGS);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn settings(&self) -> String {
        std::fs::read_to_string(self.path(SETTINGS)).unwrap()
    }

    /// Installs and enables (wanted by multi-user.target) an extra unit for this guest.
    fn add_unit(&self, name: &str, text: &str) {
        let units = self.path("etc/systemd/system");
        std::fs::write(units.join(name), text).unwrap();
        std::os::unix::fs::symlink(
            format!("/etc/systemd/system/{name}"),
            units.join("multi-user.target.wants").join(name),
        )
        .unwrap();
    }

    fn remove_unit(&self, name: &str) {
        let units = self.path("etc/systemd/system");
        std::fs::remove_file(units.join("multi-user.target.wants").join(name)).unwrap();
        std::fs::remove_file(units.join(name)).unwrap();
    }

    /// Boots the guest until its harness unit powers it off (or the time limit kills it) and
    /// returns what the boot left.
    pub(crate) fn boot(&mut self) -> Boot {
        self.boots += 1;
        let console = self.dir.path().join(format!("console-{}.log", self.boots));
        let before = lines(&self.path("var/lib/boot-test/boots")).len();
        let started = Instant::now();
        let mut child = self.spawn(&console);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > BOOT_LIMIT {
                self.kill_all();
                let _ = child.wait();
                panic!(
                    "{}: boot {} not over after {BOOT_LIMIT:?}; console:\n{}",
                    self.machine,
                    self.boots,
                    tail(&console)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let wall = started.elapsed();
        // Nothing may outlive the guest; a leftover would skew the next boot.
        self.kill_all();
        let boots = lines(&self.path("var/lib/boot-test/boots"));
        assert!(
            status.success() && boots.len() == before + 1,
            "{}: boot {} did not finish ({status}); console:\n{}",
            self.machine,
            self.boots,
            tail(&console)
        );
        let mut fields = boots[before].split_whitespace();
        let boot_id = fields.next().unwrap().replace('-', "");
        let state = fields.next().unwrap_or_default().to_string();
        let failed = fields.map(str::to_string).collect();
        let orchestrator = lines(&self.path("var/lib/boot-test/orchestrator"))
            .iter()
            .find(|line| line.replace('-', "").starts_with(&boot_id))
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let us = |i: usize| fields[i].parse::<u64>().unwrap();
                Orchestrator {
                    boot_time: Duration::from_micros(us(2) - us(1)),
                    supervisor: fields[3].to_string(),
                }
            });
        Boot {
            state,
            failed,
            orchestrator,
            journal: self.read_journal(&boot_id),
            id: boot_id.clone(),
            wall,
        }
    }

    /// systemd-nspawn in this guest's cgroups: a shell moves itself in, then execs nspawn.
    fn spawn(&self, console: &Path) -> Child {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"while [ "$1" != -- ]; do echo $$ >"$1" || exit 125; shift; done; shift; exec systemd-nspawn "$@""#)
            .arg("sh");
        for cgroup in &self.cgroups {
            cmd.arg(cgroup.join("cgroup.procs"));
        }
        cmd.arg("--")
            .arg(format!("--directory={}", self.root.display()))
            .arg(format!("--machine={}", self.machine))
            .args([
                "--boot",
                // No systemd on the host to register with or to make a scope.
                "--register=no",
                "--keep-unit",
                // Bootstrap containers get CAP_SYS_MODULE and CAP_NET_ADMIN, which nspawn drops.
                "--capability=all",
                "--private-network",
                // Leave the host's /var/log/journal, resolv.conf and timezone alone.
                "--link-journal=no",
                "--resolv-conf=off",
                "--timezone=off",
                "--console=read-only",
            ])
            .env_remove("SYSTEMD_NSPAWN_USE_CGNS");
        if self.unified {
            cmd.env("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", "1");
        } else {
            // nspawn's default on this host: hybrid, like the host (=0 would be legacy-only,
            // where systemd in a container never learns that a cgroup emptied).
            cmd.env_remove("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY");
        }
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(console).unwrap())
            .stderr(std::fs::File::create(console.with_extension("err")).unwrap());
        cmd.spawn().unwrap_or_else(|err| {
            panic!("starting systemd-nspawn (apt-get install systemd-container): {err}")
        })
    }

    fn read_journal(&self, boot_id: &str) -> Vec<Entry> {
        let out = Command::new("journalctl")
            .arg(format!("--directory={}", self.journal.display()))
            .args(["--no-pager", "--output=json"])
            .arg(format!("_BOOT_ID={boot_id}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "journalctl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .map(|entry| {
                let field = |name: &str| match &entry[name] {
                    serde_json::Value::String(text) => text.clone(),
                    // journalctl prints a field that is not valid UTF-8 as an array of bytes.
                    serde_json::Value::Array(bytes) => String::from_utf8_lossy(
                        &bytes
                            .iter()
                            .filter_map(|b| b.as_u64().map(|b| b as u8))
                            .collect::<Vec<u8>>(),
                    )
                    .into_owned(),
                    _ => String::new(),
                };
                Entry {
                    identifier: field("SYSLOG_IDENTIFIER"),
                    // systemd's own messages about a unit name it in UNIT.
                    unit: if entry["UNIT"].is_string() {
                        field("UNIT")
                    } else {
                        field("_SYSTEMD_UNIT")
                    },
                    message: field("MESSAGE"),
                    fields: entry.clone(),
                }
            })
            .collect()
    }

    /// SIGKILL to every process in this guest's cgroups, until none is left.
    fn kill_all(&self) {
        for _ in 0..100 {
            let pids: Vec<i32> = self
                .cgroups
                .iter()
                .flat_map(|cgroup| cgroup_tree(cgroup))
                .flat_map(|dir| lines(&dir.join("cgroup.procs")))
                .filter_map(|pid| pid.parse().ok())
                .collect();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.kill_all();
        for cgroup in &self.cgroups {
            let mut dirs = cgroup_tree(cgroup);
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for dir in dirs {
                // A cgroup is busy for a moment after its last process was reaped.
                for _ in 0..50 {
                    if std::fs::remove_dir(&dir).is_ok() || !dir.exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        common::unmount_all_under(self.dir.path());
    }
}

impl Boot {
    /// Messages of the supervisor (the unit's SyslogIdentifier), containers' output included.
    pub(crate) fn supervisor(&self) -> Vec<&str> {
        self.journal
            .iter()
            .filter(|e| e.identifier == "bootstrap-containers")
            .map(|e| e.message.as_str())
            .collect()
    }

    /// What the supervisor logged about a container: `succeeded (exit code 0)`, ...
    pub(crate) fn outcomes(&self, name: &str) -> Vec<String> {
        let prefix = format!("level=info msg=\"{name}: ");
        self.supervisor()
            .iter()
            .filter_map(|message| {
                let rest = &message[message.find(&prefix)? + prefix.len()..];
                Some(rest.trim_end_matches('"').to_string())
            })
            .collect()
    }

    /// A container's journal: what `journalctl -t bootstrap-containers@NAME` shows.
    fn container(&self, name: &str) -> Vec<&Entry> {
        let identifier = format!("bootstrap-containers@{name}");
        self.journal
            .iter()
            .filter(|e| e.identifier == identifier)
            .collect()
    }

    /// Whether systemd logged `wanted` about `unit`.
    fn systemd_said(&self, unit: &str, wanted: &str) -> bool {
        self.journal
            .iter()
            .any(|e| e.identifier == "systemd" && e.unit == unit && e.message.contains(wanted))
    }

    /// The journal lines that matter, for assertion messages.
    pub(crate) fn summary(&self) -> String {
        let interesting = ["bootstrap-containers", "kubelet", "boot-test"];
        let mut text = format!(
            "state {}, failed {:?}, orchestrator {:?}\n",
            self.state,
            self.failed,
            self.orchestrator.as_ref().map(|o| &o.supervisor)
        );
        for e in &self.journal {
            if e.identifier == "bootstrap-containers"
                || interesting.iter().any(|name| e.unit.starts_with(name))
            {
                text.push_str(&format!("  {}: {}\n", e.identifier, e.message));
            }
        }
        text
    }

    /// The orchestrator started, and only after the supervisor had exited with 0: the
    /// drop-in's After= and the units' oneshot semantics held.
    pub(crate) fn assert_orchestrator_started(&self) {
        let orchestrator = self
            .orchestrator
            .as_ref()
            .unwrap_or_else(|| panic!("the orchestrator did not start:\n{}", self.summary()));
        assert_eq!(
            orchestrator.supervisor,
            "active/exited/0",
            "the orchestrator started before the supervisor was done:\n{}",
            self.summary()
        );
    }

    /// The orchestrator was in the boot's transaction and its start was refused because the
    /// bootstrap containers' target failed.
    pub(crate) fn assert_orchestrator_never_started(&self) {
        assert!(
            self.orchestrator.is_none(),
            "the orchestrator started:\n{}",
            self.summary()
        );
        assert!(
            self.systemd_said("kubelet.service", "Dependency failed"),
            "no dependency failure for kubelet.service:\n{}",
            self.summary()
        );
        assert_eq!(self.state, "degraded", "{}", self.summary());
        assert!(
            self.failed
                .iter()
                .any(|u| u == "bootstrap-containers.service"),
            "{}",
            self.summary()
        );
    }
}

/// The cached root, or a failure telling how to build it.
fn boot_root() -> PathBuf {
    let out = Command::new(BOOT_ROOT).arg("path").output().unwrap();
    assert!(out.status.success(), "hack/boot-root.sh path failed");
    let root = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(
        root.join(".complete").exists(),
        "the boot tests' Debian root is not built ({} is missing): run `sudo hack/boot-root.sh \
         build` (about a minute; hack/test.sh does it)",
        root.display()
    );
    root
}

fn lines(path: &Path) -> Vec<String> {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default())
        .lines()
        .map(str::to_string)
        .collect()
}

fn tail(path: &Path) -> String {
    let mut text = lines(path);
    text.extend(lines(&path.with_extension("err")));
    let start = text.len().saturating_sub(60);
    text[start..].join("\n")
}

/// This process's cgroup directory in every mounted hierarchy (v1 controllers, name=systemd,
/// the unified one).
fn own_cgroups() -> Vec<PathBuf> {
    let memberships: Vec<(Vec<String>, String)> = lines(Path::new("/proc/self/cgroup"))
        .iter()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?.to_string();
            let controllers = controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            Some((controllers, path))
        })
        .collect();
    let mut dirs = Vec::new();
    for line in lines(Path::new("/proc/self/mountinfo")) {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(point), Some(fstype), Some(options)) =
            (left.get(3), left.get(4), right.first(), right.get(2))
        else {
            continue;
        };
        let options: Vec<&str> = options.split(',').collect();
        let membership = memberships.iter().find(|(controllers, _)| match *fstype {
            "cgroup2" => controllers.is_empty(),
            "cgroup" => {
                !controllers.is_empty() && controllers.iter().all(|c| options.contains(&c.as_str()))
            }
            _ => false,
        });
        if let Some((_, path)) = membership {
            let relative = Path::new(path).strip_prefix(root).unwrap_or(Path::new(""));
            dirs.push(Path::new(point).join(relative));
        }
    }
    assert!(!dirs.is_empty(), "no cgroup hierarchy mounted");
    dirs
}

fn make_cgroup(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(format!("brt-boot-{name}"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display()));
    // A v1 cpuset cgroup takes no process until it has CPUs and memory nodes.
    for file in ["cpuset.cpus", "cpuset.mems"] {
        if let Ok(value) = std::fs::read_to_string(parent.join(file)) {
            std::fs::write(dir.join(file), value).unwrap();
        }
    }
    dir
}

/// A cgroup and every cgroup below it.
fn cgroup_tree(top: &Path) -> Vec<PathBuf> {
    let mut found = vec![];
    let mut stack = vec![top.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(entry.path());
                }
            }
            found.push(dir);
        }
    }
    found
}

#[test]
fn every_container_succeeds_and_the_orchestrator_starts_after_them() {
    every_container_succeeds(Guest::new("ok"));
}

#[test]
fn every_container_succeeds_on_cgroup_v2() {
    every_container_succeeds(Guest::with_cgroups("ok2", true));
}

fn every_container_succeeds(mut g: Guest) {
    // The sleep makes an orchestrator ordered wrongly start while the supervisor still runs.
    let slow = g.bundle("slow", "echo hello from slow; sleep 1");
    let quick = g.bundle("quick", "echo hello from quick");
    g.write_settings(
        &(container("slow", &slow, "mode = \"always\"\nessential = true")
            + &container("quick", &quick, "mode = \"always\"")),
    );
    let boot = g.boot();
    boot.assert_orchestrator_started();
    assert_eq!(boot.state, "running", "{}", boot.summary());
    // hack/install.sh's mount unit makes bootstrap-runc's directory read-only before the
    // supervisor starts: the supervisor, installed there too, runs containers without a re-exec.
    assert!(
        boot.systemd_said("usr-local-lib-bootstrap\\x2drunc.mount", "Mounted"),
        "{}",
        boot.summary()
    );
    assert!(
        boot.supervisor().iter().any(|m| m
            .contains("/usr/local/lib/bootstrap-runc/bootstrap-supervisor is installed read-only")),
        "{}",
        boot.summary()
    );
    for name in ["slow", "quick"] {
        assert_eq!(
            boot.outcomes(name),
            ["succeeded (exit code 0)"],
            "{}",
            boot.summary()
        );
        // The output is the container's own, natively in the journal, and not repeated
        // under the supervisor's identifier.
        let journal = boot.container(name);
        let output = format!("hello from {name}");
        assert_eq!(journal[0].message, output, "{}", boot.summary());
        assert!(
            !boot.supervisor().iter().any(|m| m.contains(&output)),
            "{}",
            boot.summary()
        );
        // The outcome, with its fields for `journalctl -o json`.
        let outcome = &journal.last().unwrap().fields;
        assert_eq!(
            outcome["MESSAGE"],
            format!("{name}: succeeded (exit code 0)")
        );
        assert_eq!(outcome["BOOTSTRAP_CONTAINER"], name);
        assert_eq!(outcome["STATUS"], "succeeded");
        assert_eq!(outcome["EXIT_CODE"], "0");
        assert!(outcome["RUN_MS"].as_str().unwrap().parse::<u64>().is_ok());
    }
    // What an operator types, on the guest's journal.
    let shown = Command::new("journalctl")
        .arg(format!("--directory={}", g.journal.display()))
        .args([
            "--no-pager",
            "-o",
            "cat",
            "-b",
            "-t",
            "bootstrap-containers@slow",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&shown.stdout),
        "hello from slow\nslow: succeeded (exit code 0)\n"
    );
    // And the boot's record, as `status` shows it.
    let status = Command::new(SUPERVISOR)
        .args(["status", "--boot", &boot.id, "--state-dir"])
        .arg(g.path("var/lib/bootstrap-containers"))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(0), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("slow ") && l.contains("succeeded")),
        "{table}"
    );
}

#[test]
fn an_essential_failure_halts_the_boot() {
    an_essential_failure(Guest::new("essential"));
}

#[test]
fn an_essential_failure_halts_the_boot_on_cgroup_v2() {
    an_essential_failure(Guest::with_cgroups("essential2", true));
}

fn an_essential_failure(mut g: Guest) {
    let failing = g.bundle("disk-setup", "echo formatting; sleep 1; exit 3");
    let fine = g.bundle("fine", "true");
    g.write_settings(
        &(container(
            "disk-setup",
            &failing,
            "mode = \"always\"\nessential = true",
        ) + &container("fine", &fine, "mode = \"always\"")),
    );
    let boot = g.boot();
    boot.assert_orchestrator_never_started();
    assert_eq!(
        boot.outcomes("disk-setup"),
        ["failed (exit code 3)"],
        "{}",
        boot.summary()
    );
    assert_eq!(
        boot.outcomes("fine"),
        ["succeeded (exit code 0)"],
        "{}",
        boot.summary()
    );
    assert!(
        boot.supervisor().iter().any(|m| m.contains(
            "essential bootstrap container disk-setup did not succeed (failed): the boot must not go on"
        )),
        "{}",
        boot.summary()
    );
    assert!(
        boot.systemd_said(
            "bootstrap-containers.service",
            "Main process exited, code=exited, status=1/FAILURE"
        ),
        "{}",
        boot.summary()
    );
}

#[test]
fn a_non_essential_failure_does_not_halt_the_boot() {
    let mut g = Guest::new("nonessential");
    let failing = g.bundle("optional", "exit 4");
    let fine = g.bundle("needed", "sleep 1");
    g.write_settings(
        &(container("optional", &failing, "mode = \"always\"\nessential = false")
            + &container("needed", &fine, "mode = \"always\"\nessential = true")),
    );
    let boot = g.boot();
    boot.assert_orchestrator_started();
    assert_eq!(boot.state, "running", "{}", boot.summary());
    assert_eq!(
        boot.outcomes("optional"),
        ["failed (exit code 4)"],
        "{}",
        boot.summary()
    );
    assert_eq!(
        boot.outcomes("needed"),
        ["succeeded (exit code 0)"],
        "{}",
        boot.summary()
    );
}

#[test]
fn invalid_settings_halt_the_boot() {
    let mut g = Guest::new("invalid");
    let fine = g.bundle("fine", "true");
    g.write_settings(&container(
        "fine",
        &fine,
        "mode = \"sometimes\"\nessential = true",
    ));
    let boot = g.boot();
    boot.assert_orchestrator_never_started();
    assert!(
        boot.systemd_said(
            "bootstrap-containers.service",
            "Main process exited, code=exited, status=2/INVALIDARGUMENT"
        ),
        "{}",
        boot.summary()
    );
    assert!(boot.outcomes("fine").is_empty(), "{}", boot.summary());
}

#[test]
fn a_once_container_runs_on_the_first_boot_only() {
    let mut g = Guest::new("once");
    // The mount area (/mnt) is the host's, and the guest's /mnt persists across its boots.
    let setup = g.bundle("setup", "echo ran >>/.bottlerocket/rootfs/mnt/setup-runs");
    // A drop-in alone, as cloud-init's write_files leaves it: the unit runs for it, and the
    // write-back edits it.
    let dropin = g.path(DROPIN);
    std::fs::create_dir_all(dropin.parent().unwrap()).unwrap();
    std::fs::write(
        &dropin,
        format!(
            "# kept across the write-back\n{}",
            container("setup", &setup, "mode = \"once\"\nessential = true")
        ),
    )
    .unwrap();
    assert!(!g.path(SETTINGS).exists());

    let first = g.boot();
    first.assert_orchestrator_started();
    assert_eq!(
        first.outcomes("setup"),
        ["succeeded (exit code 0)"],
        "{}",
        first.summary()
    );
    let settings = std::fs::read_to_string(&dropin).unwrap();
    assert!(
        settings.contains("mode = \"off\"") && settings.starts_with("# kept across the write-back"),
        "after the first boot:\n{settings}"
    );
    assert!(!g.path(SETTINGS).exists());
    assert_eq!(lines(&g.path("mnt/setup-runs")), ["ran"]);

    let second = g.boot();
    second.assert_orchestrator_started();
    assert_eq!(second.state, "running", "{}", second.summary());
    assert!(second.outcomes("setup").is_empty(), "{}", second.summary());
    assert_eq!(lines(&g.path("mnt/setup-runs")), ["ran"], "ran again");
    assert_eq!(lines(&g.path("var/lib/boot-test/orchestrator")).len(), 2);
}

#[test]
fn a_hanging_container_is_killed_at_its_timeout_and_the_boot_goes_on() {
    let mut g = Guest::new("hang");
    // sleep as the container's PID 1 ignores SIGTERM: the supervisor must SIGKILL it.
    let hang = g.bundle("hang", "exec sleep 1000");
    let fine = g.bundle("fine", "true");
    g.write_settings(
        &(container(
            "hang",
            &hang,
            "mode = \"always\"\nessential = false\ntimeout = \"1s\"",
        ) + &container("fine", &fine, "mode = \"always\"\nessential = true")),
    );
    let boot = g.boot();
    boot.assert_orchestrator_started();
    assert_eq!(boot.state, "running", "{}", boot.summary());
    let outcomes = boot.outcomes("hang");
    assert!(
        outcomes.len() == 1 && outcomes[0].starts_with("timed-out"),
        "{}",
        boot.summary()
    );
    // The grace came from the unit's EnvironmentFile.
    let grace = format!("SIGKILL to all its processes in {STOP_GRACE}");
    assert!(
        boot.supervisor().iter().any(|m| m.contains(&grace)),
        "{}",
        boot.summary()
    );
}

#[test]
fn an_essential_container_timing_out_halts_the_boot() {
    let mut g = Guest::new("hangess");
    let hang = g.bundle("hang", "trap 'exit 143' TERM; sleep 1000 & wait");
    g.write_settings(&container(
        "hang",
        &hang,
        "mode = \"always\"\nessential = true\ntimeout = \"1s\"",
    ));
    let boot = g.boot();
    boot.assert_orchestrator_never_started();
    let outcomes = boot.outcomes("hang");
    assert!(
        outcomes.len() == 1 && outcomes[0].starts_with("timed-out"),
        "{}",
        boot.summary()
    );
}

#[test]
fn after_the_supervisor_is_killed_mid_boot_the_next_boot_completes() {
    supervisor_killed_mid_boot(Guest::new("killed"));
}

#[test]
fn after_the_supervisor_is_killed_mid_boot_on_cgroup_v2_no_container_is_left() {
    supervisor_killed_mid_boot(Guest::with_cgroups("killed2", true));
}

/// Kills the supervisor alone (as a crash would) while a `once` container runs: that boot
/// halts with nothing of the container left, and the next boot runs it and completes.
fn supervisor_killed_mid_boot(mut g: Guest) {
    // First run: say so, then hang until the supervisor is killed. Second run: succeed.
    let setup = g.bundle(
        "setup",
        "mark=/.bottlerocket/rootfs/mnt/setup-started
         if [ -e $mark ]; then echo second run; exit 0; fi
         touch $mark; exec sleep 1000",
    );
    g.write_settings(&container(
        "setup",
        &setup,
        "mode = \"once\"\nessential = true",
    ));
    // When systemd is done with the unit, record the container's processes still alive.
    std::fs::write(
        g.path("usr/local/lib/boot-test/kill-supervisor.sh"),
        r#"#!/bin/sh
until [ -e /mnt/setup-started ]; do sleep 0.05; done
systemctl kill --kill-who=main --signal=SIGKILL bootstrap-containers.service
while [ "$(systemctl show -P ActiveState bootstrap-containers.service)" != failed ]; do
  sleep 0.05
done
for cgroup in /proc/[0-9]*/cgroup; do
  if grep -q 'boot\.setup' "$cgroup" 2>/dev/null; then
    echo "${cgroup%/cgroup} $(tr '\n' ' ' <"$cgroup")"
  fi
done >/var/lib/boot-test/leftovers
"#,
    )
    .unwrap();
    std::fs::set_permissions(
        g.path("usr/local/lib/boot-test/kill-supervisor.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    g.add_unit(
        "boot-test-kill-supervisor.service",
        "[Service]\nType=exec\nExecStart=/usr/local/lib/boot-test/kill-supervisor.sh\n",
    );

    let first = g.boot();
    assert!(
        first.systemd_said(
            "bootstrap-containers.service",
            "Main process exited, code=killed, status=9/KILL"
        ),
        "the supervisor was not killed:\n{}",
        first.summary()
    );
    first.assert_orchestrator_never_started();
    // The container left behind (its PID 1 ignores SIGTERM) is killed at once, not after
    // systemd's stop timeout (90 s) with the boot waiting.
    assert!(
        !first.systemd_said("bootstrap-containers.service", "timed out. Killing"),
        "{}",
        first.summary()
    );
    let leftovers = std::fs::read_to_string(g.path("var/lib/boot-test/leftovers"))
        .expect("the killer unit did not see the supervisor unit fail");
    assert!(
        leftovers.is_empty(),
        "the container outlived the supervisor unit (pid, cgroups):\n{leftovers}"
    );
    assert!(g.settings().contains("mode = \"once\""), "{}", g.settings());

    g.remove_unit("boot-test-kill-supervisor.service");
    let second = g.boot();
    second.assert_orchestrator_started();
    assert_eq!(second.state, "running", "{}", second.summary());
    assert_eq!(
        second.outcomes("setup"),
        ["succeeded (exit code 0)"],
        "{}",
        second.summary()
    );
    assert!(
        second
            .container("setup")
            .iter()
            .any(|entry| entry.message == "second run"),
        "{}",
        second.summary()
    );
    assert!(g.settings().contains("mode = \"off\""), "{}", g.settings());
}

/// Boot time to the orchestrator with no settings (the unit is skipped) and with 0, 1 and 8
/// bootstrap containers of `true`; printed, never asserted (`hack/bench-boot.sh` shows them).
#[test]
fn boot_time_to_the_orchestrator() {
    let mut report = String::new();
    for count in [None, Some(0), Some(1), Some(8)] {
        let label = count.map_or("none".to_string(), |n| n.to_string());
        let mut g = Guest::new(&format!("time{label}"));
        if let Some(count) = count {
            let source = g.bundle("true", "true");
            let settings: String = (0..count)
                .map(|i| {
                    container(
                        &format!("c{i}"),
                        &source,
                        "mode = \"always\"\nessential = true",
                    )
                })
                .collect();
            g.write_settings(&settings);
        }
        let boot = g.boot();
        let orchestrator = boot
            .orchestrator
            .as_ref()
            .unwrap_or_else(|| panic!("the orchestrator did not start:\n{}", boot.summary()));
        if count.is_some() {
            boot.assert_orchestrator_started();
        }
        let what = count.map_or("no settings (unit skipped)".to_string(), |n| {
            format!("{n} bootstrap containers")
        });
        report.push_str(&format!(
            "boot time to the orchestrator, {what:<26}: {:>4} ms (whole boot and poweroff {:.2} s)\n",
            orchestrator.boot_time.as_millis(),
            boot.wall.as_secs_f64()
        ));
    }
    eprint!("{report}");
}

/// The cgroup promise on cgroup v2 (integration/promise.rs checks it on this host's v1): in a
/// guest booted with the unified hierarchy, bootstrap-runc is pointed at a host service's
/// cgroup holding a live process — by absolute path, with `..`, and with `--systemd-cgroup` at
/// an existing unit's cgroup — and must refuse each, leaving the process and the cgroup as they
/// were; CRI's `/kubepods/<qos>/pod<uid>/<id>` (parents exist) still runs. And the config's
/// cgroup mount (integration/advisories.rs checks it on v1) shows the container's own cgroup,
/// read-only when it says `ro`.
#[test]
fn no_config_reaches_a_host_cgroup_on_cgroup_v2() {
    let mut g = Guest::with_cgroups("victim2", true);
    for (name, path) in [
        ("abs", "/victim-svc"),
        ("dotdot", "/kubepods/../victim-svc"),
        ("systemd", "system.slice:victim:svc"),
        ("cri", "/kubepods/besteffort/pod1/v-cri"),
    ] {
        let bundle = g.bundle(&format!("victim-{name}"), "true");
        let config = g.path(&bundle).join("config.json");
        let mut spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
        spec["linux"]["cgroupsPath"] = serde_json::json!(path);
        std::fs::write(&config, serde_json::to_vec(&spec).unwrap()).unwrap();
    }
    // runc's cgroup mount, `ro` and not: the container sees its own cgroup (the host's
    // victim-svc beside it is out of sight), writable only without `ro`.
    for (name, script) in [
        ("ro", "! mkdir /sys/fs/cgroup/c && [ ! -e /sys/fs/cgroup/victim-svc ] && [ -e /sys/fs/cgroup/cgroup.procs ]"),
        ("rw", "mkdir /sys/fs/cgroup/c && rmdir /sys/fs/cgroup/c && [ ! -e /sys/fs/cgroup/victim-svc ]"),
    ] {
        let bundle = g.bundle(&format!("victim-{name}"), script);
        let config = g.path(&bundle).join("config.json");
        let mut spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
        let mut options = vec!["nosuid", "noexec", "nodev", "relatime"];
        if name == "ro" {
            options.push("ro");
        }
        spec["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
            "options": options
        }));
        spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/v-{name}"));
        std::fs::write(&config, serde_json::to_vec(&spec).unwrap()).unwrap();
    }
    let script = g.path("usr/local/lib/boot-test/victim.sh");
    std::fs::write(
        &script,
        r#"#!/bin/sh
out=/var/lib/boot-test/victim
rt="bootstrap-runc --root /run/victim-test"
mkdir /sys/fs/cgroup/victim-svc /sys/fs/cgroup/system.slice/victim-svc.scope
sleep 1000 & pid=$!
echo $pid >/sys/fs/cgroup/victim-svc/cgroup.procs
for case in abs dotdot; do
  $rt run --bundle /var/lib/bundles/victim-$case v-$case 2>>$out.err; echo "$case $?" >>$out
  $rt delete --force v-$case
done
$rt --systemd-cgroup run --bundle /var/lib/bundles/victim-systemd v-systemd 2>>$out.err
echo "systemd $?" >>$out
$rt --systemd-cgroup delete --force v-systemd
mkdir -p /sys/fs/cgroup/kubepods/besteffort/pod1
$rt run --bundle /var/lib/bundles/victim-cri v-cri 2>>$out.err; echo "cri $?" >>$out
for case in ro rw; do
  $rt run --bundle /var/lib/bundles/victim-$case v-$case 2>>$out.err; echo "$case $?" >>$out
done
kill -0 $pid && echo alive >>$out
[ "$(cat /sys/fs/cgroup/victim-svc/cgroup.procs)" = "$pid" ] && echo untouched >>$out
[ -d /sys/fs/cgroup/system.slice/victim-svc.scope ] && echo unit-untouched >>$out
kill $pid
"#,
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    g.add_unit(
        "boot-test-victim.service",
        "[Unit]\nBefore=boot-test-finish.service\n[Service]\nType=oneshot\nExecStart=/usr/local/lib/boot-test/victim.sh\n",
    );
    let boot = g.boot();
    let result = std::fs::read_to_string(g.path("var/lib/boot-test/victim")).unwrap_or_default();
    let errors =
        std::fs::read_to_string(g.path("var/lib/boot-test/victim.err")).unwrap_or_default();
    assert_eq!(
        result.lines().collect::<Vec<_>>(),
        [
            "abs 1",
            "dotdot 1",
            "systemd 1",
            "cri 0",
            "ro 0",
            "rw 0",
            "alive",
            "untouched",
            "unit-untouched"
        ],
        "errors: {errors}\n{}",
        boot.summary()
    );
    assert!(
        errors.contains("cgroup /sys/fs/cgroup/victim-svc already exists")
            && errors.contains("must not contain '.' or '..'")
            && errors.contains("system.slice/victim-svc.scope already exists"),
        "{errors}"
    );
}

/// `bootstrap-report-node.service`, enabled, on a node with no cluster (its kubeconfig names a
/// port nothing listens on): it starts after the orchestrator, gives up at its timeout with a
/// clear error, and the boot still reaches its target.
#[test]
fn the_node_report_runs_after_the_orchestrator_and_fails_cleanly_without_a_cluster() {
    let mut g = Guest::new("report");
    let fine = g.bundle("fine", "true");
    g.write_settings(&container(
        "fine",
        &fine,
        "mode = \"always\"\nessential = true",
    ));
    std::os::unix::fs::symlink(
        "/usr/local/lib/systemd/system/bootstrap-report-node.service",
        g.path("etc/systemd/system/multi-user.target.wants/bootstrap-report-node.service"),
    )
    .unwrap();
    std::fs::write(
        g.path("etc/kubernetes-test.conf"),
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: none\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n",
    )
    .unwrap();
    let mut env = std::fs::read_to_string(g.path(SUPERVISOR_ENV)).unwrap();
    env.push_str(
        "BOOTSTRAP_KUBECONFIG=/etc/kubernetes-test.conf\nBOOTSTRAP_REPORT_NODE_TIMEOUT=2s\n",
    );
    std::fs::write(g.path(SUPERVISOR_ENV), env).unwrap();
    let hook = g.path("var/lib/boot-test/hook");
    std::fs::write(
        &hook,
        "#!/bin/sh\nsystemctl show -P InactiveExitTimestampMonotonic kubelet.service bootstrap-report-node.service\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let boot = g.boot();
    boot.assert_orchestrator_started();
    assert_eq!(
        boot.failed,
        ["bootstrap-report-node.service"],
        "{}",
        boot.summary()
    );
    let said: Vec<&str> = boot
        .journal
        .iter()
        .filter(|e| e.identifier == "bootstrap-report-node")
        .map(|e| e.message.as_str())
        .collect();
    assert!(said.iter().any(|m| m.contains("gave up")), "{said:#?}");
    let started: Vec<u64> = std::fs::read_to_string(g.path("var/lib/boot-test/hook.out"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty()) // systemctl show separates units by a blank line
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert!(
        started.len() == 2 && started[0] > 0 && started[1] >= started[0],
        "the report started before the orchestrator: {started:?}"
    );
}
