//! bootstrap-supervisor driving real containers through the real bootstrap-runc, as root:
//! concurrency, exit codes, once → off, same-boot markers, interrupted runs, timeouts,
//! depends-on, settings errors, user-data secrecy, image-layout sources and the systemd units.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::supervisor::{boot_id, container, stop, Boot, SUPERVISOR};
use crate::common::RuntimeSeen;

/// SIGKILL to a process group, as systemd stops a unit.
fn kill_group(mut child: std::process::Child) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGKILL,
    );
    child.wait().unwrap();
}

#[test]
fn three_containers_run_concurrently() {
    let b = Boot::new("conc");
    let sleeper = b.bundle("sleep", "sleep 1");
    let text: String = ["a", "b", "c"]
        .iter()
        .map(|n| container(&b.name(n), &sleeper, "mode = \"always\""))
        .collect();
    b.write_settings(&text);
    let started = Instant::now();
    let ran = b.run();
    let elapsed = started.elapsed();
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    assert!(
        elapsed < Duration::from_secs(2),
        "three sleep 1 took {elapsed:?}"
    );
    for n in ["a", "b", "c"] {
        assert_eq!(b.outcome(n)["status"], "succeeded");
    }
    assert_eq!(b.report()["version"], 1);
    b.assert_clean();
}

#[test]
fn essential_failure_halts_the_boot_and_a_non_essential_one_does_not() {
    let b = Boot::new("ess");
    let failing = b.bundle("fail", "echo failing; exit 3");
    b.write_settings(&container(
        &b.name("x"),
        &failing,
        "mode = \"always\"\nessential = false",
    ));
    let ran = b.run();
    assert_eq!(
        ran.code, 0,
        "non-essential failure must not halt: {}",
        ran.stderr
    );
    assert_eq!(b.outcome("x")["status"], "failed");
    assert_eq!(b.outcome("x")["exit_code"], 3);
    assert!(
        ran.stdout.contains(&format!("{}: failing", b.name("x"))),
        "output is prefixed: {}",
        ran.stdout
    );

    let b = Boot::new("ess2");
    let failing = b.bundle("fail", "exit 3");
    b.write_settings(&container(
        &b.name("x"),
        &failing,
        "mode = \"always\"\nessential = true",
    ));
    let ran = b.run();
    assert_eq!(ran.code, 1);
    assert!(
        ran.stderr.contains(&format!(
            "essential bootstrap container {} did not succeed",
            b.name("x")
        )),
        "{}",
        ran.stderr
    );
    let log = b.state_dir.join("boots").join(boot_id()).join("logs");
    assert!(
        log.join(format!("{}.log", b.name("x"))).exists(),
        "no per-container log"
    );
    assert_eq!(b.container_log("x"), "");
    b.assert_clean();
}

/// An operator's bundle named through a symlink (`/etc/bootstrap/b -> /opt/...`) runs: its
/// root lies inside the bundle the symlink names.
#[test]
fn a_bundle_source_named_through_a_symlink_runs() {
    let b = Boot::new("bundlelink");
    let bundle = b.bundle("real", "touch /.bottlerocket/rootfs/mnt/ran");
    let link = b.f.dir.path().join("link");
    std::os::unix::fs::symlink(&bundle, &link).unwrap();
    b.write_settings(&container(
        &b.name("x"),
        link.to_str().unwrap(),
        "mode = \"always\"",
    ));
    let ran = b.run();
    assert_eq!(ran.code, 0, "{ran:?}");
    assert_eq!(b.outcome("x")["status"], "succeeded", "{}", b.report());
    assert!(b.f.mount_area.join("ran").exists());
    b.assert_clean();
}

#[test]
fn a_runtime_error_is_not_a_container_failure() {
    let b = Boot::new("rterr");
    let refused = b.f.bundle("refused", &["true"]);
    b.f.edit_config(&refused, |c| {
        c["process"]["capabilities"]["bounding"] = serde_json::json!(["CAP_SYS_BOOT"])
    });
    let exits_one = b.bundle("one", "exit 1");
    let succeeds = b.bundle("succeeds", "true");
    b.write_settings(&format!(
        "{}{}{}{}",
        container(
            &b.name("refused"),
            refused.to_str().unwrap(),
            "mode = \"always\""
        ),
        container(&b.name("one"), &exits_one, "mode = \"always\""),
        container(
            &b.name("missing"),
            "/nonexistent/bundle",
            "mode = \"always\""
        ),
        container(&b.name("nolog"), &succeeds, "mode = \"always\""),
    ));
    // A runtime process that cannot open its log fails before the container runs (one that
    // ran it anyway would report it succeeded); its exit code 1 is not the container's.
    let nolog = b
        .run_dir
        .join("logs")
        .join(format!("{}.runtime.json", b.name("nolog")));
    std::fs::create_dir_all(&nolog).unwrap();
    assert_eq!(b.run().code, 0);
    let refused = b.outcome("refused");
    assert_eq!(refused["status"], "runtime-error");
    assert!(
        refused["error"].as_str().unwrap().contains("CAP_SYS_BOOT"),
        "{refused}"
    );
    assert_eq!(b.outcome("one")["status"], "failed");
    assert_eq!(b.outcome("one")["exit_code"], 1);
    assert_eq!(b.outcome("missing")["status"], "runtime-error");
    let nolog = b.outcome("nolog");
    assert_eq!(nolog["status"], "runtime-error", "{nolog}");
    assert!(
        nolog["error"].as_str().unwrap().contains(".runtime.json"),
        "{nolog}"
    );
    b.assert_clean();
}

#[test]
fn once_becomes_off_only_after_success_keeping_the_file() {
    let b = Boot::new("once");
    let ok = b.bundle("ok", "true");
    let bad = b.bundle("bad", "exit 1");
    let text = format!(
        "# operator's comment\n[settings.other]\nkeep = \"me\"\n\n{}{}",
        container(&b.name("good"), &ok, "mode = \"once\" # runs once"),
        container(&b.name("bad"), &bad, "mode = \"once\""),
    );
    b.write_settings(&text);
    assert_eq!(b.run().code, 0);
    let after = std::fs::read_to_string(&b.settings).unwrap();
    let expected = text.replacen(
        "mode = \"once\" # runs once",
        "mode = \"off\" # runs once",
        1,
    );
    assert_eq!(
        after, expected,
        "only the succeeded container's mode changes"
    );

    // JSON settings are written back as JSON.
    let mut b = Boot::new("oncejson");
    let ok = b.bundle("ok", "true");
    b.settings = b.f.dir.path().join("settings.json");
    let json = serde_json::json!({"settings": {"bootstrap-containers": {b.name("j"): {"source": ok, "mode": "once"}}, "motd": "hi"}});
    b.write_settings(&serde_json::to_string_pretty(&json).unwrap());
    let ran = b.run();
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let settings = &b.settings;
    let after: serde_json::Value =
        serde_json::from_slice(&std::fs::read(settings).unwrap()).unwrap();
    assert_eq!(
        after["settings"]["bootstrap-containers"][b.name("j")]["mode"],
        "off"
    );
    assert_eq!(after["settings"]["motd"], "hi");
    b.assert_clean();
}

/// Drop-ins (settings.d/ beside the main file) as cloud-init would write one: its container
/// runs after a main-file container it depends on, `plan` names its file, and the write-back
/// turns it off there; a drop-in others may write is refused before anything runs.
#[test]
fn drop_ins_add_containers_and_are_written_back() {
    let b = Boot::new("dropin");
    let first = b.bundle("first", "touch /.bottlerocket/rootfs/mnt/first");
    let second = b.bundle("second", "test -e /.bottlerocket/rootfs/mnt/first");
    let main = container(&b.name("first"), &first, "mode = \"always\"");
    b.write_settings(&main);
    let dropins = b.f.dir.path().join("settings.d");
    std::fs::create_dir(&dropins).unwrap();
    let dropin = dropins.join("50-second.toml");
    let extra = format!("mode = \"once\"\ndepends-on = [{:?}]", b.name("first"));
    std::fs::write(&dropin, container(&b.name("second"), &second, &extra)).unwrap();

    let plan = settings_command("plan", &b.settings, &[]);
    let shown = String::from_utf8_lossy(&plan.stdout);
    let row = shown
        .lines()
        .find(|l| l.starts_with(&b.name("second")))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(row.ends_with(&dropin.display().to_string()), "{shown}");

    let ran = b.run();
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(b.outcome("second")["status"], "succeeded");
    assert!(std::fs::read_to_string(&dropin)
        .unwrap()
        .contains("mode = \"off\""));
    assert_eq!(std::fs::read_to_string(&b.settings).unwrap(), main);

    std::fs::set_permissions(&dropin, std::fs::Permissions::from_mode(0o666)).unwrap();
    let ran = b.run_next_boot();
    assert_eq!(ran.code, 2, "{}", ran.stderr);
    assert!(
        ran.stderr.contains(&format!(
            "{} is writable by group or others",
            dropin.display()
        )),
        "{}",
        ran.stderr
    );
    assert!(b.report()["containers"].as_array().unwrap().is_empty());
    b.assert_clean();
}

#[test]
fn a_container_never_runs_twice_in_one_boot() {
    let b = Boot::new("twice");
    let counter = b.f.mount_area.join("runs");
    let counting = b.bundle(
        "count",
        "echo run >> /.bottlerocket/rootfs/mnt/runs; exit 3",
    );
    b.write_settings(&container(
        &b.name("c"),
        &counting,
        "mode = \"always\"\nessential = true",
    ));
    assert_eq!(b.run().code, 1);
    let second = b.run();
    assert_eq!(second.code, 1, "the recorded outcome still counts");
    assert_eq!(std::fs::read_to_string(&counter).unwrap(), "run\n");
    assert_eq!(b.outcome("c")["status"], "failed");
    b.assert_clean();
}

#[test]
fn an_interrupted_run_is_recovered_by_the_next_one() {
    let b = Boot::new("intr");
    let slow = b.bundle(
        "slow",
        "echo started >> /.bottlerocket/rootfs/mnt/log; sleep 30",
    );
    b.write_settings(&container(&b.name("s"), &slow, "mode = \"once\""));
    let child = b
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let log = b.f.mount_area.join("log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.exists() {
        assert!(Instant::now() < deadline, "container did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // As when the unit is killed: the supervisor and its runtime processes die; the container
    // (its own session and cgroup) lives on.
    kill_group(child);

    let fast = b.bundle("fast", "echo again >> /.bottlerocket/rootfs/mnt/log");
    b.write_settings(&container(&b.name("s"), &fast, "mode = \"once\""));
    let ran = b.run();
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(ran.stderr.contains("interrupted"), "{}", ran.stderr);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "started\nagain\n");
    assert_eq!(b.outcome("s")["status"], "succeeded");
    assert!(std::fs::read_to_string(&b.settings)
        .unwrap()
        .contains("mode = \"off\""));
    b.assert_clean();
}

#[test]
fn a_stopped_supervisor_kills_its_containers_and_reports_them_interrupted() {
    let b = Boot::new("stop");
    let slow = b.bundle(
        "slow",
        "echo up > /.bottlerocket/rootfs/mnt/up; exec sleep 30",
    );
    let later = b.bundle("later", "true");
    b.write_settings(&format!(
        "{}{}",
        container(&b.name("slow"), &slow, "mode = \"once\"\nessential = true"),
        container(
            &b.name("later"),
            &later,
            &format!("mode = \"always\"\ndepends-on = [{:?}]", b.name("slow"))
        ),
    ));
    let (out, took) = b.stop_once_up(b.command(), &["up"]);
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "an essential container did not succeed"
    );
    assert_eq!(b.outcome("slow")["status"], "interrupted");
    assert_eq!(b.outcome("later")["status"], "interrupted");
    assert!(std::fs::read_to_string(&b.settings)
        .unwrap()
        .contains("mode = \"once\""));
    b.assert_clean();
}

#[test]
fn shared_dirs_are_passed_to_the_runtime() {
    let b = Boot::new("shdirs");
    let write = b.bundle("write", "echo x > /.bottlerocket/rootfs/srv/data/x");
    b.write_settings(&container(&b.name("write"), &write, "mode = \"always\""));
    let ran = b
        .command()
        .args(["--shared-dirs", "/srv/data"])
        .output()
        .unwrap();
    assert_eq!(
        ran.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(b.f.host_root.join("srv/data/x")).unwrap(),
        "x\n"
    );
    assert!(!b.f.host_root.join("var/lib/containerd").exists());
    // The runtime's shared mount point for /srv/data is on purpose, as the mount area's.
    common::unmount_all_under(&b.f.host_root.join("srv"));
    b.assert_clean();
}

#[test]
fn stopping_gives_sigterm_then_the_grace_then_sigkill() {
    let b = Boot::new("grace");
    let polite = b.bundle(
        "polite",
        "trap 'sleep 1; echo cleaned > /.bottlerocket/rootfs/mnt/cleaned; exit 0' TERM; \
         echo up > /.bottlerocket/rootfs/mnt/polite-up; sleep 100 & wait",
    );
    // PID 1 of its namespace: SIGTERM does nothing, only the SIGKILL after the grace ends it.
    let stubborn = b.bundle(
        "stubborn",
        "echo up > /.bottlerocket/rootfs/mnt/stubborn-up; exec sleep 100",
    );
    b.write_settings(&format!(
        "{}{}",
        container(&b.name("polite"), &polite, "mode = \"always\""),
        container(&b.name("stubborn"), &stubborn, "mode = \"always\""),
    ));
    let mut run = b.command();
    run.args(["--stop-grace", "3s"]);
    let (out, took) = b.stop_once_up(run, &["polite-up", "stubborn-up"]);
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(10),
        "--stop-grace 3s, stopping took {took:?}"
    );
    assert_eq!(out.status.code(), Some(0), "no essential container");
    assert_eq!(
        std::fs::read_to_string(b.f.mount_area.join("cleaned")).unwrap(),
        "cleaned\n",
        "SIGTERM first, and time to clean up"
    );
    for name in ["polite", "stubborn"] {
        assert_eq!(b.outcome(name)["status"], "interrupted", "{name}");
    }
    b.assert_clean();
}

#[test]
fn settings_file_is_whole_whenever_the_supervisor_dies() {
    let b = Boot::new("torn");
    let ok = b.bundle("ok", "true");
    let old = (0..20)
        .map(|i| container(&b.name(&format!("c{i}")), &ok, "mode = \"once\""))
        .collect::<String>();
    for attempt in 0..8u64 {
        b.write_settings(&old);
        let _ = std::fs::remove_dir_all(&b.run_dir);
        let child = b
            .command()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(30 + attempt * 30));
        kill_group(child);
        let text = std::fs::read_to_string(&b.settings).unwrap();
        let parsed: toml::Value =
            toml::from_str(&text).unwrap_or_else(|e| panic!("torn settings: {e}\n{text}"));
        let containers = parsed["settings"]["bootstrap-containers"]
            .as_table()
            .unwrap();
        assert_eq!(
            containers.len(),
            20,
            "a container vanished from the settings"
        );
        // Clean up what the killed run left before the next attempt.
        let runtime_root = b.run_dir.join("runtime");
        for i in 0..20 {
            let _ = Command::new(common::BIN)
                .args([
                    "--root",
                    runtime_root.to_str().unwrap(),
                    "delete",
                    "--force",
                    &format!("boot.{}", b.name(&format!("c{i}"))),
                ])
                .output();
        }
    }
    b.assert_clean();
}

#[test]
fn timeout_stops_the_container_and_counts_as_failure() {
    let b = Boot::new("tmo");
    // Handles SIGTERM: ends within the grace period.
    let polite = b.bundle("polite", "trap 'exit 0' TERM; sleep 100 & wait");
    // PID 1 of its namespace ignores SIGTERM: needs the SIGKILL after the grace period.
    let stubborn = b.bundle("stubborn", "exec sleep 100");
    b.write_settings(&format!(
        "{}{}",
        container(
            &b.name("polite"),
            &polite,
            "mode = \"always\"\nessential = true\ntimeout = \"1s\""
        ),
        container(&b.name("stubborn"), &stubborn, "mode = \"always\""),
    ));
    let started = Instant::now();
    let ran = b
        .command()
        .args(["--default-timeout", "1s"])
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(
        ran.status.code(),
        Some(1),
        "an essential timeout halts the boot"
    );
    assert_eq!(b.outcome("polite")["status"], "timed-out");
    assert_eq!(b.outcome("stubborn")["status"], "timed-out");
    assert!(b.outcome("polite")["run_ms"].as_u64().unwrap() < 5000);
    // The timeout, then the whole stop grace (BOOTSTRAP_STOP_GRACE=2s) before SIGKILL.
    assert!(b.outcome("stubborn")["run_ms"].as_u64().unwrap() >= 3000);
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    b.assert_clean();
}

#[test]
fn depends_on_orders_and_skips() {
    let b = Boot::new("deps");
    let ok = b.bundle("ok", "sleep 0.3");
    let bad = b.bundle("bad", "exit 1");
    let off = b.bundle("off", "true");
    b.write_settings(&format!(
        "{}{}{}{}{}",
        container(&b.name("first"), &ok, "mode = \"always\""),
        container(
            &b.name("second"),
            &ok,
            &format!(
                "mode = \"always\"\ndepends-on = [{:?}, {:?}]",
                b.name("first"),
                b.name("disabled")
            )
        ),
        container(&b.name("disabled"), &off, "mode = \"off\""),
        container(&b.name("broken"), &bad, "mode = \"always\""),
        container(
            &b.name("after-broken"),
            &ok,
            &format!("mode = \"always\"\ndepends-on = [{:?}]", b.name("broken"))
        ),
    ));
    assert_eq!(b.run().code, 0);
    let first = b.outcome("first");
    let second = b.outcome("second");
    assert_eq!(
        second["status"], "succeeded",
        "an off dependency counts as satisfied"
    );
    assert!(
        second["started_at"].as_str().unwrap() >= first["finished_at"].as_str().unwrap(),
        "{first} {second}"
    );
    assert_eq!(b.outcome("after-broken")["status"], "skipped");
    b.assert_clean();
}

#[test]
fn every_settings_error_is_reported_before_anything_runs() {
    let b = Boot::new("bad");
    let ok = b.bundle("ok", "echo ran > /.bottlerocket/rootfs/mnt/ran");
    b.write_settings(&format!(
        "{}{}{}{}{}",
        container(&b.name("good"), &ok, "mode = \"always\""),
        container("bad_name", &ok, "mode = \"always\""),
        container(&b.name("mode"), &ok, "mode = \"sometimes\""),
        container(&b.name("b64"), &ok, "user-data = \"not base64!\""),
        container(
            &b.name("cycle"),
            &ok,
            &format!("depends-on = [{:?}]", b.name("cycle"))
        ),
    ));
    let ran = b.run();
    assert_eq!(ran.code, 2, "{}", ran.stderr);
    for wanted in ["bad_name", "sometimes", "user-data", "cycle"] {
        assert!(
            ran.stderr.contains(wanted),
            "{wanted} not reported: {}",
            ran.stderr
        );
    }
    assert!(
        !b.f.mount_area.join("ran").exists(),
        "a container ran despite invalid settings"
    );
    assert!(!b.run_dir.join("markers").exists());
    let plan = Command::new(SUPERVISOR)
        .args(["plan", "--settings", b.settings.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(plan.status.code(), Some(2));
}

#[test]
fn user_data_reaches_the_container_and_nothing_else() {
    let b = Boot::new("ud");
    let secret = "s3cr3t-token-value";
    let encoded = base64_encode(secret.as_bytes());
    let reader = b.bundle(
        "reader",
        "d=/.bottlerocket/bootstrap-containers/current; stat -c %a $d/user-data; \
         cmp -s $d/user-data /.bottlerocket/bootstrap-containers/$NAME/user-data && echo SAME; \
         grep -q s3cr3t $d/user-data && echo HAS-SECRET",
    );
    b.f.edit_config(Path::new(&reader), |c| {
        c["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!(format!("NAME={}", b.name("u"))));
    });
    b.write_settings(&container(
        &b.name("u"),
        &reader,
        &format!("mode = \"always\"\nuser-data = {encoded:?}"),
    ));
    let ran = b.run();
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(
        ran.stdout.contains("600\n") || ran.stdout.contains(": 600"),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout.contains("SAME") && ran.stdout.contains("HAS-SECRET"),
        "{}",
        ran.stdout
    );
    let report = std::fs::read_to_string(b.run_dir.join("report.json")).unwrap();
    for (what, text) in [
        ("stdout", ran.stdout.as_str()),
        ("stderr", ran.stderr.as_str()),
        ("report", report.as_str()),
    ] {
        assert!(
            !text.contains(secret) && !text.contains(&encoded),
            "user-data in the {what}"
        );
    }
    let plan = Command::new(SUPERVISOR)
        .args(["plan", "--settings", b.settings.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&plan.stdout).contains(&encoded));
    b.assert_clean();
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn oci_layout_sources_run_as_bootstrap_containers() {
    let b = Boot::new("layout");
    let layout = common::busybox_layout(
        b.f.dir.path(),
        &[
            "sh",
            "-c",
            "grep CapEff /proc/self/status; echo image > /.bottlerocket/rootfs/mnt/from-image",
        ],
    );
    b.write_settings(&format!(
        "{}{}",
        container(
            &b.name("img"),
            &format!("oci-layout:{}:latest", layout.display()),
            "mode = \"always\""
        ),
        container(
            &b.name("cmd"),
            &format!("oci-layout:{}:latest", layout.display()),
            "mode = \"always\"\ncommand = [\"sh\", \"-c\", \"exit 7\"]"
        ),
    ));
    let ran = b.run();
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    assert_eq!(b.outcome("img")["status"], "succeeded", "{}", ran.stderr);
    assert_eq!(
        std::fs::read_to_string(b.f.mount_area.join("from-image")).unwrap(),
        "image\n"
    );
    assert_eq!(
        b.outcome("cmd")["exit_code"],
        7,
        "command overrides the image's cmd"
    );
    let missing = format!("oci-layout:{}:nope", layout.display());
    b.write_settings(&container(
        &b.name("missing"),
        &missing,
        "mode = \"always\"",
    ));
    b.run();
    let outcome = b.outcome("missing");
    assert_eq!(outcome["status"], "runtime-error");
    assert!(
        outcome["error"]
            .as_str()
            .unwrap()
            .contains("no image tagged \"nope\""),
        "{outcome}"
    );
    b.assert_clean();
}

#[test]
fn systemd_units_verify_and_order_the_orchestrator_after_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("prefix");
    common::install(&prefix);
    let units = prefix.join("lib/systemd/system");
    // A stand-in orchestrator, as kubelet would be installed.
    std::fs::write(
        units.join("kubelet.service"),
        "[Unit]\nDescription=kubelet\n[Service]\nExecStart=/bin/true\n",
    )
    .unwrap();
    // The mount unit that makes the runtime read-only, under the name systemd gives its path.
    let escaped = Command::new("systemd-escape")
        .args(["--path", "--suffix=mount"])
        .arg(prefix.join("lib/bootstrap-runc"))
        .output()
        .unwrap();
    let mount_unit = String::from_utf8(escaped.stdout)
        .unwrap()
        .trim()
        .to_string();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(
            [
                "bootstrap-containers.service",
                "bootstrap-containers.target",
                "kubelet.service",
                &mount_unit,
            ]
            .map(|u| units.join(u)),
        )
        .env("SYSTEMD_UNIT_PATH", format!("{}:", units.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
    let dropin =
        std::fs::read_to_string(units.join("kubelet.service.d/10-bootstrap-containers.conf"))
            .unwrap();
    assert!(
        dropin.contains("Requires=bootstrap-containers.target")
            && dropin.contains("After=bootstrap-containers.target")
    );
    let service = std::fs::read_to_string(units.join("bootstrap-containers.service")).unwrap();
    for line in [
        "Type=oneshot",
        "RemainAfterExit=yes",
        "After=network-online.target",
        "Delegate=yes",
        "RequiredBy=bootstrap-containers.target",
        &format!("Wants={mount_unit}"),
        &format!("After={mount_unit}"),
    ] {
        assert!(service.lines().any(|l| l == line), "{line} missing");
    }
    assert!(service.contains(&format!(
        "ExecStart={}/bin/bootstrap-supervisor run",
        prefix.display()
    )));
}

/// `bootstrap-supervisor get`/`set` with `--settings PATH` and `args`.
fn settings_command(verb: &str, path: &Path, args: &[&str]) -> std::process::Output {
    Command::new(SUPERVISOR)
        .arg(verb)
        .arg("--settings")
        .arg(path)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn get_and_set_speak_apiclients_shapes_from_a_fresh_host() {
    let dir = common::scratch_dir("brt-apiclient-");
    // A fresh host: neither the settings file nor its directory exists.
    let path = dir.path().join("etc/bootstrap-containers/settings.toml");
    // The workshop's first step, `settings.` prefix or not, in any order.
    let set = settings_command(
        "set",
        &path,
        &[
            "bootstrap-containers.bootstrap.mode=always",
            "settings.bootstrap-containers.bootstrap.source=/opt/bootstrap",
            "bootstrap-containers.bootstrap.essential=false",
        ],
    );
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let file = std::fs::metadata(&path).unwrap();
    assert_eq!(
        (file.mode() & 0o7777, file.uid(), file.gid()),
        (0o600, 0, 0)
    );
    let parent = std::fs::metadata(path.parent().unwrap()).unwrap();
    assert_eq!(parent.mode() & 0o7777, 0o755);

    let get = |keys: &[&str]| -> serde_json::Value {
        let out = settings_command("get", &path, keys);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // The workshop's "Check Output".
    let whole = serde_json::json!({"settings": {"bootstrap-containers": {"bootstrap": {
        "essential": false, "mode": "always", "source": "/opt/bootstrap"}}}});
    assert_eq!(get(&["settings.bootstrap-containers"]), whole);
    assert_eq!(get(&["bootstrap-containers"]), whole);
    assert_eq!(get(&[]), whole);
    assert_eq!(
        get(&["bootstrap-containers.bootstrap.mode"]),
        serde_json::json!({"settings": {"bootstrap-containers": {"bootstrap": {"mode": "always"}}}})
    );

    // One call's assignments are applied together or not at all.
    let before = std::fs::read(&path).unwrap();
    let refused = settings_command(
        "set",
        &path,
        &[
            "bootstrap-containers.bootstrap.mode=once",
            "bootstrap-containers.bootstrap.timeout=soon",
        ],
    );
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("bootstrap-containers.bootstrap.timeout"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

/// Each container runs in a runtime process that the supervisor's launcher forks, not a
/// bootstrap-runc it executes: the process's exe is the supervisor's own, which re-executed
/// itself from a read-only overlay first (CVE-2019-5736: the exe cannot be opened for writing).
#[test]
fn each_container_runs_in_a_protected_fork_of_the_supervisor() {
    let b = Boot::new("prot");
    let slow = b.bundle(
        "slow",
        "echo up > /.bottlerocket/rootfs/mnt/up; exec sleep 30",
    );
    b.write_settings(&b.always(&[("slow", &slow)]));
    let supervisor = b.start_until_up(b.command(), &["up"]);
    // The file a process runs, as (device, inode).
    let exe = |pid: u32| {
        std::fs::metadata(format!("/proc/{pid}/exe"))
            .map(|m| (m.dev(), m.ino()))
            .unwrap()
    };
    let supervisor_exe = exe(supervisor.id());
    let supervisor_seen = RuntimeSeen::of(supervisor.id());
    let seen: Vec<(u32, RuntimeSeen, (u64, u64))> = descendants(supervisor.id())
        .into_iter()
        .map(|pid| (pid, RuntimeSeen::of(pid)))
        .filter(|(_, seen)| seen.comm == "bootstrap-runc\n")
        .map(|(pid, seen)| (pid, seen, exe(pid)))
        .collect();
    let runtimes: Vec<u32> = seen.iter().map(|(pid, ..)| *pid).collect();
    stop(supervisor);
    b.assert_clean();
    supervisor_seen.assert_exe_read_only("the supervisor");
    assert!(
        supervisor_seen.re_executed,
        "the supervisor did not re-execute itself"
    );
    assert_eq!(runtimes.len(), 1, "one runtime process: {runtimes:?}");
    for (pid, seen, exe) in seen {
        seen.assert_exe_read_only(&format!("runtime process {pid}"));
        assert_eq!(
            exe, supervisor_exe,
            "runtime process {pid} is not the supervisor's fork"
        );
    }
}

/// Every process below `pid`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut next = vec![pid];
    while let Some(pid) = next.pop() {
        let children: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|task| std::fs::read_to_string(task.path().join("children")).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" ")
            .split_whitespace()
            .filter_map(|child| child.parse().ok())
            .collect();
        found.extend(&children);
        next.extend(children);
    }
    found
}

/// Compiled seccomp filters outlive the boot in `<state-dir>/seccomp`: the next boot, with a
/// new run dir, loads the program the first one compiled instead of compiling it again.
#[test]
fn the_seccomp_profile_is_compiled_once_across_boots() {
    let b = Boot::new("sccache");
    let quick = b.bundle("quick", "true");
    b.write_settings(&b.always(&[("quick", &quick)]));
    // Each compiled program, as (name, inode): a program compiled again is a new file.
    let compiled = |dir: &Path| -> Vec<(String, u64)> {
        let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata()))
            .filter(|(name, _)| !name.ends_with(".lock"))
            .map(|(name, meta)| (name, meta.unwrap().ino()))
            .collect();
        files.sort();
        files
    };
    let cache = b.state_dir.join("seccomp");
    assert_eq!(b.run().code, 0);
    let first = compiled(&cache);
    assert_eq!(first.len(), 1, "one compiled profile: {first:?}");
    std::fs::remove_dir_all(&b.run_dir).unwrap();
    assert_eq!(b.run().code, 0);
    assert_eq!(b.outcome("quick")["status"], "succeeded");
    assert_eq!(compiled(&cache), first, "the profile was compiled again");
    assert_eq!(compiled(&b.run_dir.join("runtime/.seccomp")), []);
    b.assert_clean();
}
