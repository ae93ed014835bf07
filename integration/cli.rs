//! The CLI as runc's callers rely on it (runtime-spec PR #875, runc PR #3073, runc issue
//! #1766, containerd's shim): each case is run against bootstrap-runc and, where runc has the
//! same command, against runc on the same bundle, and both must behave the same.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::supervisor::{container, Boot, SUPERVISOR};
use crate::common::{Fixture, Ran};

/// A runtime under test: ours (the fixture's command line) or runc with a root of its own.
enum Rt<'a> {
    Ours(&'a Fixture),
    Runc(&'a Fixture, PathBuf),
}

impl Rt<'_> {
    fn both(f: &Fixture) -> [Rt<'_>; 2] {
        [Rt::Ours(f), Rt::Runc(f, f.dir.path().join("runc-root"))]
    }

    fn name(&self) -> &'static str {
        match self {
            Rt::Ours(_) => "bootstrap-runc",
            Rt::Runc(..) => "runc",
        }
    }

    fn run(&self, args: &[&str]) -> Ran {
        match self {
            Rt::Ours(f) => f.rt(args),
            Rt::Runc(f, root) => {
                let out = f.dir.path().join("runc-out");
                let err = f.dir.path().join("runc-err");
                let status = Command::new("runc")
                    .arg("--root")
                    .arg(root)
                    .args(args)
                    .stdin(Stdio::null())
                    .stdout(std::fs::File::create(&out).unwrap())
                    .stderr(std::fs::File::create(&err).unwrap())
                    .status()
                    .unwrap();
                Ran {
                    code: status.code().unwrap_or(-1),
                    stdout: std::fs::read_to_string(&out).unwrap_or_default(),
                    stderr: std::fs::read_to_string(&err).unwrap_or_default(),
                }
            }
        }
    }

    fn ok(&self, args: &[&str]) -> Ran {
        let ran = self.run(args);
        assert_eq!(ran.code, 0, "{} {args:?}: {}", self.name(), ran.stderr);
        ran
    }

    fn status(&self, id: &str) -> String {
        let state: serde_json::Value = serde_json::from_str(&self.ok(&["state", id]).stdout)
            .unwrap_or_else(|e| panic!("{}: state of {id}: {e}", self.name()));
        state["status"].as_str().unwrap_or_default().to_string()
    }

    fn wait_status(&self, id: &str, wanted: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.status(id) != wanted {
            assert!(
                Instant::now() < deadline,
                "{}: {id} never became {wanted}",
                self.name()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A started container (detached) running `script`; returns its id.
    fn started(&self, f: &Fixture, name: &str, script: &str) -> String {
        let bundle = f.bundle(&format!("{}-{name}", self.name()), &["sh", "-c", script]);
        let id = f.id(&format!("{}-{name}", self.name()));
        self.ok(&["run", "-d", "--bundle", bundle.to_str().unwrap(), &id]);
        id
    }
}

/// runc's containers go even when a test fails (ours go with the fixture).
impl Drop for Rt<'_> {
    fn drop(&mut self) {
        if let Rt::Runc(_, root) = self {
            let runc = |args: &[&str]| {
                Command::new("runc")
                    .arg("--root")
                    .arg(&*root)
                    .args(args)
                    .output()
            };
            let listed = runc(&["list", "-q"]).map(|o| o.stdout).unwrap_or_default();
            for id in String::from_utf8_lossy(&listed).lines() {
                let _ = runc(&["delete", "--force", id]);
            }
        }
    }
}

#[test]
fn kill_on_a_created_container_stops_it() {
    let f = Fixture::new("cli-kill-created");
    for rt in Rt::both(&f) {
        let bundle = f.bundle(&format!("{}-c", rt.name()), &["sleep", "100"]);
        let id = f.id(&format!("{}-c", rt.name()));
        rt.ok(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
        rt.ok(&["kill", &id, "TERM"]);
        rt.wait_status(&id, "stopped");
        rt.ok(&["delete", &id]);
    }
    f.assert_clean();
}

#[test]
fn any_signal_the_kernel_takes_is_delivered() {
    let f = Fixture::new("cli-signals");
    for rt in Rt::both(&f) {
        // PID 1 of its namespace: only a signal it handles ends it.
        let id = rt.started(&f, "rt", "trap 'exit 0' 40; while :; do sleep 0.05; done");
        rt.ok(&["kill", &id, "0"]);
        assert_eq!(
            rt.status(&id),
            "running",
            "{}: signal 0 only probes",
            rt.name()
        );
        rt.ok(&["kill", &id, "40"]);
        rt.wait_status(&id, "stopped");
        rt.ok(&["delete", &id]);
    }
    f.assert_clean();
}

#[test]
fn a_failed_exec_exits_255() {
    let f = Fixture::new("cli-exec");
    for rt in Rt::both(&f) {
        let id = rt.started(&f, "x", "sleep 100");
        let code = |args: &[&str]| rt.run(args).code;
        assert_eq!(
            code(&["exec", &id, "sh", "-c", "exit 1"]),
            1,
            "{}",
            rt.name()
        );
        assert_eq!(
            code(&["exec", &id, "/no/such/binary"]),
            255,
            "{}",
            rt.name()
        );
        assert_eq!(
            code(&["exec", "no-such-container", "true"]),
            255,
            "{}",
            rt.name()
        );
        rt.ok(&["pause", &id]);
        let paused = rt.run(&["exec", &id, "true"]);
        assert_eq!(paused.code, 255, "{}", rt.name());
        assert!(
            paused.stderr.contains("cannot exec in a paused container"),
            "{}: {}",
            rt.name(),
            paused.stderr
        );
        rt.ok(&["resume", &id]);
        rt.ok(&["kill", &id, "KILL"]);
        rt.wait_status(&id, "stopped");
        assert_eq!(code(&["exec", &id, "true"]), 255, "{}", rt.name());
        rt.ok(&["delete", &id]);
    }
    f.assert_clean();
}

/// A process that cannot start after `start` (an environment over the kernel's limit: E2BIG)
/// says why on stderr, for `run` and `exec` alike, as runc does; not only in the log.
#[test]
fn a_process_that_cannot_start_says_why_on_stderr() {
    let f = Fixture::new("cli-e2big");
    // One string over MAX_ARG_STRLEN (32 pages).
    let big = format!("BIG={}", "x".repeat(200 * 1024));
    for rt in Rt::both(&f) {
        let name = format!("{}-big", rt.name());
        let bundle = f.bundle(&name, &["true"]);
        f.edit_config(&bundle, |c| {
            c["process"]["env"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!(big))
        });
        let ran = rt.run(&["run", "--bundle", bundle.to_str().unwrap(), &f.id(&name)]);
        assert!(
            ran.code != 0 && ran.stderr.to_lowercase().contains("argument list too long"),
            "{} run: {} {}",
            rt.name(),
            ran.code,
            ran.stderr
        );
        let _ = rt.run(&["delete", "--force", &f.id(&name)]);
        let id = rt.started(&f, "exec-big", "sleep 100");
        // Through --process: an argument that large would not even start the runtime.
        let process = f.dir.path().join(format!("{}-process.json", rt.name()));
        std::fs::write(
            &process,
            serde_json::json!({"args": ["true"], "env": ["PATH=/bin:/usr/bin", big], "cwd": "/", "user": {"uid": 0, "gid": 0}})
                .to_string(),
        )
        .unwrap();
        let ran = rt.run(&["exec", "--process", process.to_str().unwrap(), &id]);
        assert!(
            ran.code != 0 && ran.stderr.to_lowercase().contains("argument list too long"),
            "{} exec: {} {}",
            rt.name(),
            ran.code,
            ran.stderr
        );
        rt.ok(&["kill", &id, "KILL"]);
        rt.wait_status(&id, "stopped");
        rt.ok(&["delete", &id]);
    }
    f.assert_clean();
}

#[test]
fn usage_errors_exit_1_and_repeated_flags_take_the_last() {
    let f = Fixture::new("cli-usage");
    for rt in Rt::both(&f) {
        assert_eq!(rt.run(&["--bogus", "list"]).code, 1, "{}", rt.name());
        assert_eq!(rt.run(&["kill"]).code, 1, "{}", rt.name());
    }
    // A wrapper appending its own --root: the last one is used.
    let (id, _) = f.started("last");
    let out = Command::new(common::BIN)
        .args(["--root", "/nonexistent-first-root", "--root"])
        .arg(&f.root)
        .args(["list", "-q"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));
    f.rt_ok(&["delete", "--force", &id]);
    // The supervisor keeps its own contract: 2 for a usage error; repeated flags as runc's.
    let boot = Boot::new("cli-sup");
    let status = Command::new(SUPERVISOR)
        .args(["run", "--bogus"])
        .output()
        .unwrap()
        .status;
    assert_eq!(status.code(), Some(2));
    boot.write_settings("");
    let first = boot.f.dir.path().join("first-run-dir");
    let out = boot
        .command()
        .arg("--run-dir")
        .arg(&first)
        .arg("--run-dir")
        .arg(&boot.run_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(boot.run_dir.join("report.json").exists() && !first.exists());
    f.assert_clean();
}

#[test]
fn update_changes_the_containers_own_cgroup() {
    let f = Fixture::new("cli-update");
    let (id, _) = f.started("u");
    let memory = |id: &str| -> PathBuf {
        common::cgroup_dirs(id)
            .into_iter()
            .find(|d| d.join("memory.limit_in_bytes").exists() || d.join("memory.max").exists())
            .expect("the container's memory cgroup")
    };
    let limit = |dir: &Path| -> String {
        ["memory.limit_in_bytes", "memory.max"]
            .iter()
            .find_map(|file| std::fs::read_to_string(dir.join(file)).ok())
            .unwrap()
            .trim()
            .to_string()
    };
    f.rt_ok(&["update", "--memory", "64m", "--pids-limit", "50", &id]);
    assert_eq!(limit(&memory(&id)), (64u64 << 20).to_string());
    let mut child = f
        .command()
        .args(["update", "--resources", "-", &id])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"memory": {"limit": 33554432}}"#)
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(limit(&memory(&id)), (32u64 << 20).to_string());
    let target = f.dir.path().join("host-file");
    std::fs::write(&target, "untouched").unwrap();
    let resources = f.dir.path().join("resources.json");
    std::fs::write(
        &resources,
        serde_json::json!({"unified": {target.to_str().unwrap(): "x"}}).to_string(),
    )
    .unwrap();
    f.rt_err(
        &["update", "-r", resources.to_str().unwrap(), &id],
        "linux.resources.unified",
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
    f.rt_ok(&["delete", "--force", &id]);
    f.rt_err(&["update", "--memory", "1g", &id], "does not exist");
    f.assert_clean();
}

#[test]
fn path_flags_are_taken_against_the_working_directory() {
    let boot = Boot::new("cli-rel");
    let cwd = boot.f.dir.path();
    let name = boot.name("rel");
    boot.write_settings(&container(
        &name,
        &boot.bundle("rel", "true"),
        "mode = \"once\"",
    ));
    // A bare file name as --settings, relative state and run dirs.
    let out = boot
        .command()
        .current_dir(cwd)
        .args([
            "--settings",
            "settings.toml",
            "--state-dir",
            "rel-state",
            "--run-dir",
            "rel-run",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(cwd.join("rel-run/report.json").exists());
    let settings = std::fs::read_to_string(&boot.settings).unwrap();
    assert!(
        settings.contains("mode = \"off\""),
        "once -> off written: {settings}"
    );
    let set = Command::new(SUPERVISOR)
        .current_dir(cwd)
        .args(["set", "--settings", "settings.toml"])
        .arg(format!("bootstrap-containers.{name}.mode=always"))
        .output()
        .unwrap();
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    // bootstrap-runc: a relative --host-mount-area is the flag's, and named so when wrong.
    let ran = boot
        .f
        .command()
        .current_dir(cwd)
        .args(["--host-mount-area", "no-such-area", "run", "--bundle"])
        .arg(boot.bundle("rt", "true"))
        .arg(boot.f.id("rel"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&ran.stderr);
    assert!(
        stderr.contains(&format!(
            "from --host-mount-area: {}",
            cwd.join("no-such-area").display()
        )),
        "{stderr}"
    );
    boot.assert_clean();
}

#[test]
fn lock_files_go_with_their_container_and_messages_name_us() {
    let f = Fixture::new("cli-locks");
    let locks = f.root.join(".locks");
    let (id, _) = f.started("l");
    assert!(locks.join(&id).exists(), "held while the container exists");
    f.rt_ok(&["delete", "--force", &id]);
    assert!(!locks.join(&id).exists(), "removed with the container");
    f.rt_err(&["state", "never-existed"], "does not exist");
    assert!(!locks.join("never-existed").exists());
    let bundle = f.bundle("console", &["true"]);
    let id = f.id("console");
    let ran = f.rt_err(
        &[
            "create",
            "--console-socket",
            f.dir.path().join("console.sock").to_str().unwrap(),
            "--bundle",
            bundle.to_str().unwrap(),
            &id,
        ],
        "cannot use console socket if bootstrap-runc",
    );
    assert!(!ran.stderr.contains("youki"), "{}", ran.stderr);
    f.assert_clean();
}

/// Every relative link in README.md and docs/*.md names a file that exists (anchors are not
/// checked), so a page or a source file that moves cannot leave a dead link behind. Needs no root.
#[test]
fn every_relative_link_in_the_readme_and_docs_names_a_file() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![repo.join("README.md")];
    for entry in std::fs::read_dir(repo.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "md") {
            pages.push(path);
        }
    }
    assert!(pages.len() > 1, "no docs/*.md beside README.md");
    let mut missing = Vec::new();
    for page in &pages {
        let dir = page.parent().unwrap();
        let text = std::fs::read_to_string(page).unwrap();
        for line in text.lines() {
            for (at, _) in line.match_indices("](") {
                let rest = &line[at + 2..];
                let Some(end) = rest.find(')') else { continue };
                let target = &rest[..end];
                let skip = ["http://", "https://", "mailto:", "#"];
                if skip.into_iter().any(|prefix| target.starts_with(prefix)) {
                    continue;
                }
                let file = target.split('#').next().unwrap_or_default();
                if !dir.join(file).exists() {
                    let page = page.strip_prefix(repo).unwrap().display();
                    missing.push(format!("{page}: {target}"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "links to files that do not exist:\n{}",
        missing.join("\n")
    );
}
