//! What operators see: per-boot records through `status` and `logs` (exit codes, the last 5
//! boots kept, an invalid-settings run recorded, a run in progress), and the Prometheus
//! metrics file scraped by a real node_exporter (textfile collector) and checked by promtool.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::supervisor::{container, Boot, SUPERVISOR};
use crate::common::Ran;

const BOOT_ID_ENV: &str = "BOOTSTRAP_SUPERVISOR_BOOT_ID";

/// A run as in boot `boot`: the run dir (a tmpfs, this boot's markers) starts empty.
fn run_in_boot(b: &Boot, boot: &str) -> Ran {
    let _ = std::fs::remove_dir_all(&b.run_dir);
    ran(b.command().env(BOOT_ID_ENV, boot).output().unwrap())
}

fn ran(out: std::process::Output) -> Ran {
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `bootstrap-supervisor ARGS --state-dir STATE` as seen from boot `boot`.
fn supervisor(b: &Boot, boot: &str, args: &[&str]) -> Ran {
    ran(Command::new(SUPERVISOR)
        .args(args)
        .arg("--state-dir")
        .arg(&b.state_dir)
        .env(BOOT_ID_ENV, boot)
        .stdin(Stdio::null())
        .output()
        .unwrap())
}

fn recorded_boots(b: &Boot) -> Vec<String> {
    let mut boots: Vec<String> = std::fs::read_dir(b.state_dir.join("boots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    boots.sort();
    boots
}

#[test]
fn status_and_logs_per_boot_with_their_exit_codes() {
    let b = Boot::new("status");
    let ok = b.bundle("ok", "echo formatting disk; echo done");
    let failing = b.bundle("fail", "echo about to fail >&2; exit 3");
    b.write_settings(&format!(
        "{}{}",
        container(&b.name("ok"), &ok, "mode = \"always\"\nessential = true"),
        container(&b.name("fail"), &failing, "mode = \"always\""),
    ));
    assert_eq!(run_in_boot(&b, "b001").code, 0);

    let status = supervisor(&b, "b001", &["status"]);
    assert_eq!(status.code, 0, "{status:?}");
    let line = |name: &str| {
        status
            .stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not in {}", status.stdout))
            .to_string()
    };
    assert!(
        line(&b.name("ok")).contains("succeeded"),
        "{}",
        status.stdout
    );
    let failed = line(&b.name("fail"));
    assert!(
        failed.contains("failed") && failed.contains(" 3 "),
        "{failed}"
    );

    let json = supervisor(&b, "b001", &["status", "--format", "json"]);
    assert_eq!(json.code, 0);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["version"], 1);
    assert_eq!(report["exit_code"], 0);
    assert_eq!(report, b.report(), "the boot's record is the run's report");

    let logs = supervisor(&b, "b001", &["logs", &b.name("ok")]);
    assert_eq!(
        (logs.code, logs.stdout.as_str()),
        (0, "formatting disk\ndone\n")
    );
    let logs = supervisor(&b, "b001", &["logs", &b.name("fail")]);
    assert_eq!(logs.stdout, "about to fail\n");
    let missing = supervisor(&b, "b001", &["logs", "nope"]);
    assert_ne!(missing.code, 0);
    assert!(
        missing
            .stderr
            .contains("container nope has no output recorded in boot b001"),
        "{}",
        missing.stderr
    );

    // An essential failure: 1.
    b.write_settings(&container(
        &b.name("fail"),
        &failing,
        "mode = \"always\"\nessential = true",
    ));
    assert_eq!(run_in_boot(&b, "b002").code, 1);
    assert_eq!(supervisor(&b, "b002", &["status"]).code, 1);
    // The previous boot is still there, as it was.
    let previous = supervisor(&b, "b002", &["status", "--boot", "previous"]);
    assert_eq!(previous.code, 0, "{previous:?}");
    assert!(
        previous.stdout.starts_with("boot b001"),
        "{}",
        previous.stdout
    );

    // Invalid settings: recorded, 2, with the reason.
    b.write_settings("[settings.bootstrap-containers.x]\nmode = \"sometimes\"\n");
    let ran = run_in_boot(&b, "b003");
    assert_eq!(ran.code, 2);
    let invalid = supervisor(&b, "b003", &["status"]);
    assert_eq!(invalid.code, 2, "{invalid:?}");
    assert!(
        invalid.stdout.contains("stopped on invalid settings"),
        "{}",
        invalid.stdout
    );
    assert!(invalid.stdout.contains("sometimes"), "{}", invalid.stdout);

    // Nothing enabled, or no record at all: 3.
    b.write_settings(&container(&b.name("ok"), &ok, "mode = \"off\""));
    for boot in ["b004", "b005", "b006"] {
        assert_eq!(run_in_boot(&b, boot).code, 0);
    }
    assert_eq!(supervisor(&b, "b006", &["status"]).code, 3);
    let never = supervisor(&b, "b999", &["status"]);
    assert_eq!(never.code, 3, "{never:?}");
    assert!(
        never.stderr.contains("nothing ran in boot b999"),
        "{}",
        never.stderr
    );

    // The last 5 boots are kept.
    assert_eq!(recorded_boots(&b), ["b002", "b003", "b004", "b005", "b006"]);
    let gone = supervisor(&b, "b006", &["logs", "--boot", "b001", &b.name("ok")]);
    assert_ne!(gone.code, 0);
    assert!(supervisor(&b, "b006", &["status", "--boot", "../x"])
        .stderr
        .contains("invalid boot id"));
    b.assert_clean();
}

/// Settings of `quick` (an echo) and `slow` (`slow_script`), both always, and a supervisor
/// spawned in boot `boot`, returned once `status` shows `quick` ended, with what it showed.
fn spawn_until_quick_ended(b: &Boot, boot: &str, slow_script: &str) -> (Child, Ran) {
    let quick = b.bundle("quick", "echo quick");
    let slow = b.bundle("slow", slow_script);
    b.write_settings(&format!(
        "{}{}",
        container(&b.name("quick"), &quick, "mode = \"always\""),
        container(&b.name("slow"), &slow, "mode = \"always\""),
    ));
    let mut child = b
        .command()
        .env(BOOT_ID_ENV, boot)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let status = supervisor(b, boot, &["status"]);
        if status.code == 4 && status.stdout.contains(&b.name("quick")) {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("never in progress: {status:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (child, seen)
}

#[test]
fn status_shows_a_run_in_progress() {
    let b = Boot::new("progress");
    let (mut child, seen) = spawn_until_quick_ended(&b, "c001", "sleep 4");
    assert!(seen.stdout.contains("in progress"), "{}", seen.stdout);
    assert!(!seen.stdout.contains(&b.name("slow")), "{}", seen.stdout);
    assert!(child.wait().unwrap().success());
    assert_eq!(supervisor(&b, "c001", &["status"]).code, 0);
    b.assert_clean();
}

/// A supervisor killed mid-run leaves a record that says the run did not finish (exit 1, never
/// a success); the next run in that boot finishes it, the container's log keeping both runs.
/// The records are root's alone: they hold the containers' output.
#[test]
fn a_killed_run_is_never_shown_as_finished() {
    let b = Boot::new("killed");
    let (mut child, _) = spawn_until_quick_ended(&b, "d001", "echo slow started; sleep 3");
    // Killed once slow has said something, so its log holds the first run's output.
    let deadline = Instant::now() + Duration::from_secs(30);
    let slow_log = || supervisor(&b, "d001", &["logs", &b.name("slow")]).stdout;
    while !slow_log().contains("slow started") {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("slow never started");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let status = supervisor(&b, "d001", &["status"]);
    assert_eq!(status.code, 1, "{status:?}");
    assert!(
        status.stdout.contains("did not finish"),
        "{}",
        status.stdout
    );
    let json = supervisor(&b, "d001", &["status", "--format", "json"]);
    assert_eq!(json.code, 1, "{json:?}");

    // The next run in the same boot (the run dir kept) stops the leftover and runs it again.
    let ran = ran(b.command().env(BOOT_ID_ENV, "d001").output().unwrap());
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(supervisor(&b, "d001", &["status"]).code, 0);
    let logs = slow_log();
    assert!(
        logs.starts_with("slow started\n--- run again at "),
        "{logs}"
    );
    assert!(logs.ends_with("---\nslow started\n"), "{logs}");

    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let boots = b.state_dir.join("boots");
    assert_eq!(mode(&boots), 0o700);
    let log = boots
        .join("d001/logs")
        .join(format!("{}.log", b.name("slow")));
    assert_eq!(mode(&log), 0o600);
    b.assert_clean();
}

/// A loopback port nothing listens on (the kernel picks it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

/// node_exporter with only its textfile collector, reading `dir`; killed on drop.
struct NodeExporter(std::process::Child, u16);

impl NodeExporter {
    fn start(dir: &Path) -> NodeExporter {
        let port = free_port();
        let child = Command::new("prometheus-node-exporter")
            .arg("--collector.disable-defaults")
            .arg("--collector.textfile")
            .arg(format!("--collector.textfile.directory={}", dir.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-node-exporter (hack/install-deps.sh installs it)");
        NodeExporter(child, port)
    }

    fn scrape(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(body) = http_get(self.1, "/metrics") {
                if body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200") {
                    return body;
                }
            }
            assert!(Instant::now() < deadline, "node_exporter never answered");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn value(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} not scraped:\n{scrape}"))
        .parse()
        .unwrap()
}

#[test]
fn metrics_are_scraped_by_node_exporter_and_pass_promtool() {
    let b = Boot::new("metrics");
    let textfiles = b.f.dir.path().join("node-exporter");
    std::fs::create_dir(&textfiles).unwrap();
    let metrics = textfiles.join("bootstrap.prom");
    let ok = b.bundle("ok", "true");
    let killed = b.bundle("failing", "exit 7");
    b.write_settings(&format!(
        "{}{}",
        container(&b.name("ok"), &ok, "mode = \"always\"\nessential = true"),
        container(&b.name("failing"), &killed, "mode = \"always\""),
    ));
    let before = chrono::Utc::now().timestamp() as f64;
    let ran = b
        .command()
        .arg("--metrics-file")
        .arg(&metrics)
        .output()
        .unwrap();
    assert_eq!(
        ran.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );

    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&metrics).unwrap())
        .output()
        .expect("promtool (hack/install-deps.sh installs prometheus)");
    assert!(
        promtool.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&promtool.stdout),
        String::from_utf8_lossy(&promtool.stderr)
    );

    let exporter = NodeExporter::start(&textfiles);
    let scrape = exporter.scrape();
    assert_eq!(
        value(&scrape, "node_textfile_scrape_error"),
        0.0,
        "{scrape}"
    );
    let (ok, killed) = (b.name("ok"), b.name("failing"));
    assert_eq!(
        value(
            &scrape,
            &format!("bootstrap_container_success{{essential=\"true\",name=\"{ok}\"}}")
        ),
        1.0
    );
    assert_eq!(
        value(
            &scrape,
            &format!("bootstrap_container_success{{essential=\"false\",name=\"{killed}\"}}")
        ),
        0.0
    );
    assert_eq!(
        value(
            &scrape,
            &format!("bootstrap_container_exit_code{{name=\"{ok}\"}}")
        ),
        0.0
    );
    assert_eq!(
        value(
            &scrape,
            &format!("bootstrap_container_exit_code{{name=\"{killed}\"}}")
        ),
        7.0
    );
    let run = value(
        &scrape,
        &format!("bootstrap_container_duration_seconds{{name=\"{ok}\",phase=\"run\"}}"),
    );
    assert!(run > 0.0 && run < 60.0, "{run}");
    let started = value(
        &scrape,
        &format!("bootstrap_container_start_time_seconds{{name=\"{ok}\"}}"),
    );
    assert!(started >= before - 1.0, "{started} {before}");
    assert!(value(&scrape, "bootstrap_supervisor_last_run_timestamp_seconds") >= started);
    assert_eq!(value(&scrape, "bootstrap_supervisor_last_run_success"), 1.0);

    // The next run replaces the file whole: invalid settings make it a failed run.
    b.write_settings("[settings.bootstrap-containers.x]\nmode = \"sometimes\"\n");
    let ran = b
        .command()
        .arg("--metrics-file")
        .arg(&metrics)
        .output()
        .unwrap();
    assert_eq!(ran.status.code(), Some(2));
    let scrape = exporter.scrape();
    assert_eq!(value(&scrape, "node_textfile_scrape_error"), 0.0);
    assert_eq!(value(&scrape, "bootstrap_supervisor_last_run_success"), 0.0);
    assert!(!scrape.contains("bootstrap_container_success"), "{scrape}");
    let leftovers: Vec<_> = std::fs::read_dir(&textfiles)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "only the metrics file: {leftovers:?}");
}
