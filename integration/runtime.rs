//! bootstrap-runc driven as a real binary, as root: lifecycle, exit codes, signals, every
//! policy point seen from inside the container and from the host, bad input, and leftovers.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{alive, Fixture, RuntimeSeen};
use serde_json::json;

const CAP_SYS_ADMIN_BIT: u64 = 1 << 21;
const CAP_SYS_PTRACE_BIT: u64 = 1 << 19;

/// Starts `run` in the background and returns once the container printed `first`.
fn run_until_output(f: &Fixture, bundle: &Path, id: &str, first: &str) -> std::process::Child {
    let mut child = f
        .command()
        .args(["run", "--bundle", bundle.to_str().unwrap(), id])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut printed = vec![0u8; first.len()];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut printed)
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&printed), first);
    child
}

fn cap_field(status: &str, field: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

#[test]
fn run_returns_the_container_exit_code() {
    let f = Fixture::new("exit");
    let ran = f.run_sh("zero", "echo out; echo err >&2");
    assert_eq!(
        (ran.code, ran.stdout.as_str()),
        (0, "out\n"),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("err"));
    assert_eq!(f.run_sh("three", "exit 3").code, 3);
    assert_eq!(f.run_sh("max", "exit 255").code, 255);
    f.assert_clean();
}

/// The container's process starts with SIGPIPE's default action, as runc's do: the runtime's
/// own ignored SIGPIPE (Rust's runtime ignores it) would survive clone and exec, and `yes |
/// head` would see EPIPE instead of ending quietly.
#[test]
fn the_container_gets_sigpipes_default_action() {
    let f = Fixture::new("sigpipe");
    let ran = f.run_sh(
        "status",
        "grep SigIgn /proc/self/status; yes | head -1 >/dev/null",
    );
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let ignored = cap_field(&ran.stdout, "SigIgn:");
    assert_eq!(
        ignored & (1 << (libc::SIGPIPE - 1)),
        0,
        "SIGPIPE is ignored: {}",
        ran.stdout
    );
    assert!(!ran.stderr.contains("Broken pipe"), "{}", ran.stderr);
    f.assert_clean();
}

#[test]
fn run_without_a_pid_namespace_kills_what_the_init_left() {
    let f = Fixture::new("leftover");
    // A sleep no other test runs: its argument is unique to this process.
    let sleep = format!("sleep {}", 4_000_000 + std::process::id());
    let script = format!("{sleep} >/dev/null 2>&1 & echo started");
    let bundle = f.bundle("left", &["sh", "-c", &script]);
    f.edit_config(&bundle, |config| {
        let namespaces = config["linux"]["namespaces"].as_array_mut().unwrap();
        namespaces.retain(|ns| ns["type"] != "pid");
    });
    let id = f.id("left");
    let ran = f.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
    assert_eq!(
        (ran.code, ran.stdout.as_str()),
        (0, "started\n"),
        "{}",
        ran.stderr
    );
    let left = common::processes_mentioning(&sleep);
    assert!(left.is_empty(), "the init's child outlived run: {left:?}");
    f.assert_clean();
}

#[test]
fn run_forwards_signals_and_reports_128_plus_signal() {
    let f = Fixture::new("signals");
    // A trap turns SIGTERM into exit 7: proves the signal reached the container.
    let bundle = f.bundle(
        "trap",
        &[
            "sh",
            "-c",
            "trap 'exit 7' TERM; echo ready; while :; do sleep 0.05; done",
        ],
    );
    let id = f.id("trap");
    let mut child = run_until_output(&f, &bundle, &id, "ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(7));

    // Killed by SIGKILL from outside: 128 + 9, as runc.
    let bundle = f.bundle("sleeper", &["sh", "-c", "echo ready; exec sleep 100"]);
    let id = f.id("sleeper");
    let mut child = run_until_output(&f, &bundle, &id, "ready\n");
    f.rt_ok(&["kill", &id, "KILL"]);
    assert_eq!(child.wait().unwrap().code(), Some(137));
    f.assert_clean();
}

#[test]
fn lifecycle_matches_runc() {
    let f = Fixture::new("lifecycle");
    let bundle = f.bundle("life", &["sleep", "100"]);
    let id = f.id("life");
    let pid_file = f.dir.path().join("init.pid");
    f.rt_ok(&[
        "create",
        "--bundle",
        bundle.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
    ]);

    let pid_text = std::fs::read_to_string(&pid_file).unwrap();
    assert!(!pid_text.ends_with('\n'), "pid file must have no newline");
    let pid: i32 = pid_text.parse().unwrap();
    let state = f.state(&id);
    assert_eq!(state["status"], "created");
    assert_eq!(state["pid"], pid);
    assert_eq!(state["id"], id.as_str());
    assert_eq!(state["ociVersion"], "1.0.2");
    assert_eq!(
        state["bundle"],
        bundle.canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(
        state["rootfs"],
        bundle
            .join("rootfs")
            .canonicalize()
            .unwrap()
            .to_str()
            .unwrap()
    );
    assert!(chrono_like(state["created"].as_str().unwrap()));
    assert_eq!(state["owner"], "");

    let listed = f.rt_ok(&["list", "--format", "json"]).stdout;
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["id"], id.as_str());
    assert!(f.rt_ok(&["list", "-q"]).stdout.contains(&id));

    f.rt_ok(&["start", &id]);
    assert_eq!(f.state(&id)["status"], "running");
    let ps: Vec<i32> =
        serde_json::from_str(&f.rt_ok(&["ps", "--format", "json", &id]).stdout).unwrap();
    assert_eq!(ps, vec![pid]);
    let started_again = f.rt(&["start", &id]);
    assert_eq!(started_again.code, 1);

    f.rt_ok(&["kill", &id, "9"]);
    wait_until(|| !alive(pid));
    assert_eq!(f.state(&id)["status"], "stopped");
    assert_eq!(f.state(&id)["pid"], 0);
    // kill --all of a stopped container succeeds (containerd sends it); a plain kill says why not
    f.rt_ok(&["kill", "--all", &id, "9"]);
    f.rt_err(&["kill", &id, "9"], "not running");

    f.rt_ok(&["delete", &id]);
    f.rt_err(&["state", &id], "does not exist");
    f.rt_err(&["delete", &id], "does not exist");
    f.rt_ok(&["delete", "--force", &id]);
    f.assert_clean();
}

fn chrono_like(text: &str) -> bool {
    text.len() > 20 && text.ends_with('Z') && text.as_bytes()[10] == b'T'
}

fn wait_until(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn run_detach_returns_with_the_container_running() {
    let f = Fixture::new("detach");
    let bundle = f.bundle("d", &["sleep", "100"]);
    let id = f.id("d");
    f.rt_ok(&["run", "--detach", "--bundle", bundle.to_str().unwrap(), &id]);
    let state = f.state(&id);
    assert_eq!(state["status"], "running");
    let pid = state["pid"].as_i64().unwrap() as i32;
    assert!(alive(pid));
    f.rt_ok(&["delete", "--force", &id]);
    wait_until(|| !alive(pid));
    f.assert_clean();
}

/// `--preserve-fds` passes the caller's fds on, as runc's does, and nothing of the runtime's
/// own comes with them: not the lock `create` holds across libcontainer's forks
/// (runtime/creating.rs), even when it is numbered inside the preserved range.
#[test]
fn preserved_fds_reach_the_container_and_nothing_of_the_runtime() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let f = Fixture::new("fds");
    let bundle = f.bundle("fds", &["ls", "-l", "/proc/self/fd"]);
    let id = f.id("fds");
    let passed = std::fs::File::create(f.dir.path().join("passed-as-fd-3")).unwrap();
    let passed_fd = passed.as_raw_fd();
    let mut cmd = f.command();
    cmd.args(["run", "--preserve-fds", "20", "--bundle"])
        .arg(&bundle)
        .arg(&id);
    // SAFETY: dup2, fcntl and close_range are async-signal-safe; the child execs the runtime
    // right after. F_SETFD clears close-on-exec, which dup2 keeps when the file already is fd
    // 3; close_range drops what the test harness's own caller left open in the range.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(passed_fd, 3) == -1
                || libc::fcntl(3, libc::F_SETFD, 0) == -1
                || libc::syscall(libc::SYS_close_range, 4, u32::MAX, 0) == -1
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains("passed-as-fd-3"),
        "fd 3 not passed on: {stdout}"
    );
    // Beside stdio and fd 3, only ls's own handle on the directory it lists.
    let others: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(" -> "))
        .filter(|l| !(l.contains(" 0 -> ") || l.contains(" 1 -> ") || l.contains(" 2 -> ")))
        .filter(|l| !l.contains("passed-as-fd-3") && !l.ends_with("/fd"))
        .collect();
    assert!(
        others.is_empty(),
        "the container holds {others:?}: {stdout}"
    );
    f.assert_clean();
}

#[test]
fn delete_of_a_created_or_running_container() {
    let f = Fixture::new("delete");
    let bundle = f.bundle("d", &["sleep", "100"]);
    let created = f.id("created");
    f.rt_ok(&["create", "--bundle", bundle.to_str().unwrap(), &created]);
    let pid = f.state(&created)["pid"].as_i64().unwrap() as i32;
    f.rt_ok(&["delete", &created]);
    wait_until(|| !alive(pid));

    let running = f.id("running");
    f.rt_ok(&["create", "--bundle", bundle.to_str().unwrap(), &running]);
    f.rt_ok(&["start", &running]);
    let refused = f.rt(&["delete", &running]);
    assert_eq!(refused.code, 1, "a running container needs --force");
    let pid = f.state(&running)["pid"].as_i64().unwrap() as i32;
    f.rt_ok(&["delete", "--force", &running]);
    wait_until(|| !alive(pid));
    f.assert_clean();
}

#[test]
fn policy_seen_from_inside() {
    let f = Fixture::new("inside");
    // A submount of the host root must be read-only too.
    let sub = f.host_root.join("sub");
    std::fs::create_dir(&sub).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let script = r#"
        grep Cap /proc/self/status
        cat /.bottlerocket/rootfs/etc/hostname
        touch /root-write 2>/dev/null && echo ROOT-WRITABLE
        touch /tmp/ok && echo TMP-OK
        touch /.bottlerocket/rootfs/etc/x 2>/dev/null && echo HOST-ROOT-WRITABLE
        touch /.bottlerocket/rootfs/sub/x 2>/dev/null && echo HOST-SUBMOUNT-WRITABLE
        mkdir /.bottlerocket/newdir 2>/dev/null && echo POLICY-TMPFS-WRITABLE
        echo from-container > /.bottlerocket/rootfs/mnt/file && echo MNT-OK
        grep ' /.bottlerocket/rootfs/mnt ' /proc/self/mountinfo | tail -n1
    "#;
    let ran = f.run_sh("caps", script);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let out = ran.stdout;
    for set in ["CapEff:", "CapPrm:", "CapBnd:"] {
        let caps = cap_field(&out, set);
        assert!(
            caps & CAP_SYS_ADMIN_BIT != 0,
            "{set} lacks CAP_SYS_ADMIN: {out}"
        );
        assert!(
            caps & CAP_SYS_PTRACE_BIT == 0,
            "{set} has CAP_SYS_PTRACE: {out}"
        );
    }
    assert!(
        out.contains("fake-host"),
        "host root not at /.bottlerocket/rootfs: {out}"
    );
    assert!(out.contains("TMP-OK") && out.contains("MNT-OK"), "{out}");
    for leak in [
        "ROOT-WRITABLE",
        "HOST-ROOT-WRITABLE",
        "HOST-SUBMOUNT-WRITABLE",
        "POLICY-TMPFS-WRITABLE",
    ] {
        assert!(!out.contains(leak), "{leak}: {out}");
    }
    assert!(
        out.contains(" shared:"),
        "mount area is not shared inside: {out}"
    );
    assert_eq!(
        std::fs::read_to_string(f.mount_area.join("file")).unwrap(),
        "from-container\n"
    );
    assert!(!f.host_root.join("etc/x").exists());
    nix::mount::umount2(&sub, nix::mount::MntFlags::MNT_DETACH).unwrap();
    f.assert_clean();
}

#[test]
fn mounts_propagate_from_the_mount_area_only() {
    let f = Fixture::new("propagation");
    std::fs::create_dir_all(f.host_root.join("other")).unwrap();
    let script = r#"
        set -e
        mkdir -p /.bottlerocket/rootfs/mnt/kept /.bottlerocket/rootfs/mnt/gone
        mount -t tmpfs kept /.bottlerocket/rootfs/mnt/kept
        echo data > /.bottlerocket/rootfs/mnt/kept/f
        mount -t tmpfs gone /.bottlerocket/rootfs/mnt/gone
        mount -t tmpfs private /.bottlerocket/rootfs/other
        echo mounted
        read line < /tmp/fifo-never 2>/dev/null || true
    "#;
    // Check the "gone" mount is on the host while the container runs, then unmounted.
    let bundle = f.bundle(
        "prop",
        &[
            "sh",
            "-c",
            &format!("{script}\n sleep 0.5; umount /.bottlerocket/rootfs/mnt/gone"),
        ],
    );
    let id = f.id("prop");
    let mut child = run_until_output(&f, &bundle, &id, "mounted\n");
    let on_host = |name: &str| {
        common::host_mounts_under(&f.mount_area)
            .iter()
            .any(|(p, _)| p.ends_with(name))
    };
    assert!(
        on_host("gone"),
        "a mount in the mount area must reach the host while the container runs"
    );
    assert!(
        !common::host_mounts_under(&f.host_root.join("other"))
            .iter()
            .any(|_| true),
        "mount outside mnt leaked"
    );
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(
        !on_host("gone"),
        "an unmount inside must remove the host's mount"
    );
    assert!(on_host("kept"), "a mount left at exit stays on the host");
    assert_eq!(
        std::fs::read_to_string(f.mount_area.join("kept/f")).unwrap(),
        "data\n"
    );
    nix::mount::umount2(&f.mount_area.join("kept"), nix::mount::MntFlags::MNT_DETACH).unwrap();
    assert!(common::host_mounts_under(&f.host_root.join("other")).is_empty());
    f.assert_clean();
}

#[test]
fn mount_area_is_made_shared_and_that_is_logged() {
    let f = Fixture::new("shared");
    let ran = f.run_sh("s", "true");
    assert_eq!(ran.code, 0);
    assert!(
        ran.stderr.contains("made the host mount area"),
        "{}",
        ran.stderr
    );
    let line = common::host_mounts_under(&f.mount_area).pop().unwrap().1;
    assert!(line.contains("shared:"), "{line}");
    // Already shared: nothing more is said or done.
    let ran = f.run_sh("t", "true");
    assert!(
        !ran.stderr.contains("made the host mount area"),
        "{}",
        ran.stderr
    );
    assert_eq!(common::host_mounts_under(&f.mount_area).len(), 1);
    f.assert_clean();
}

fn refused(f: &Fixture, name: &str, edit: impl FnOnce(&mut serde_json::Value), wanted: &str) {
    let bundle = f.bundle(name, &["true"]);
    f.edit_config(&bundle, edit);
    let id = f.id(name);
    let ran = f.rt(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
    assert_eq!(ran.code, 1, "{name} was not refused");
    assert!(
        ran.stderr.contains(wanted),
        "{name}: wanted {wanted:?} in {}",
        ran.stderr
    );
    let state = f.rt(&["state", &id]);
    assert!(
        state.stderr.contains("does not exist"),
        "{name} left state: {}",
        state.stdout
    );
}

#[test]
fn elevation_attempts_are_refused_and_leave_nothing() {
    let f = Fixture::new("refuse");
    refused(
        &f,
        "cap",
        |c| c["process"]["capabilities"]["bounding"] = json!(["CAP_SYS_PTRACE"]),
        "CAP_SYS_PTRACE (in bounding)",
    );
    refused(
        &f,
        "ambient",
        |c| c["process"]["capabilities"]["ambient"] = json!(["CAP_SYS_RAWIO"]),
        "CAP_SYS_RAWIO (in ambient)",
    );
    refused(
        &f,
        "mount",
        |c| {
            c["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/.bottlerocket/rootfs/etc", "type": "tmpfs", "source": "tmpfs"}))
        },
        "refuses the mount at /.bottlerocket/rootfs/etc",
    );
    refused(
        &f,
        "userns",
        |c| {
            c["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "user"}))
        },
        "refuses a user namespace",
    );
    refused(
        &f,
        "nomntns",
        |c| c["linux"]["namespaces"] = json!([{"type": "pid"}]),
        "requires a new mount namespace",
    );
    refused(
        &f,
        "joinmnt",
        |c| c["linux"]["namespaces"] = json!([{"type": "mount", "path": "/proc/1/ns/mnt"}]),
        "refuses to join the mnt namespace",
    );
    refused(
        &f,
        "joincg",
        |c| {
            c["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "cgroup", "path": "/proc/1/ns/cgroup"}))
        },
        "refuses to join the cgroup namespace",
    );
    refused(
        &f,
        "hooks",
        |c| c["hooks"] = json!({"createRuntime": [{"path": "/bin/true"}]}),
        "refuses hooks",
    );
    f.assert_clean();
}

#[test]
fn extra_capabilities_come_only_from_the_policy_file() {
    let f = Fixture::new("extra");
    let bundle = f.bundle("ptrace", &["grep", "CapEff", "/proc/self/status"]);
    f.edit_config(&bundle, |c| {
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set] = json!(["CAP_SYS_PTRACE"]);
        }
    });
    let id = f.id("ptrace");
    assert_eq!(
        f.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id])
            .code,
        1
    );
    std::fs::write(
        &f.policy_file,
        "extra-capabilities = [\"CAP_SYS_PTRACE\"]\n",
    )
    .unwrap();
    let ran = f.rt_ok(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
    assert!(
        cap_field(&ran.stdout, "CapEff:") & CAP_SYS_PTRACE_BIT != 0,
        "{}",
        ran.stdout
    );
    f.assert_clean();
}

#[test]
fn invalid_or_unreadable_policy_file_is_an_error() {
    let f = Fixture::new("policyfile");
    let bundle = f.bundle("p", &["true"]);
    let id = f.id("p");
    std::fs::write(&f.policy_file, "extra-capabilities = [\"CAP_NOPE\"]\n").unwrap();
    let ran = f.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
    assert!(
        ran.code == 1
            && ran.stderr.contains("unknown capability")
            && ran.stderr.contains("CAP_NOPE"),
        "{}",
        ran.stderr
    );
    std::fs::write(&f.policy_file, "host-root = [").unwrap();
    f.rt_err(
        &["run", "--bundle", bundle.to_str().unwrap(), &id],
        "invalid TOML",
    );
    // The file's host root is used when no flag overrides it.
    std::fs::write(
        &f.policy_file,
        format!("host-root = {:?}\n", f.dir.path().join("absent")),
    )
    .unwrap();
    f.rt_ok(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
    let without_flag = std::process::Command::new(common::BIN)
        .args([
            "--root",
            f.root.to_str().unwrap(),
            "--host-mount-area",
            f.mount_area.to_str().unwrap(),
        ])
        .env("BOOTSTRAP_RUNC_POLICY", &f.policy_file)
        .args(["run", "--bundle", bundle.to_str().unwrap(), &id])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&without_flag.stderr);
    assert_eq!(without_flag.status.code(), Some(1));
    assert!(
        stderr.contains("host root") && stderr.contains("absent"),
        "{stderr}"
    );
    f.assert_clean();
}

#[test]
fn host_binds_are_read_only_unless_allowed() {
    let f = Fixture::new("binds");
    let data = f.dir.path().join("hostdata");
    std::fs::create_dir(&data).unwrap();
    let bundle = f.bundle(
        "b",
        &[
            "sh",
            "-c",
            "touch /data/x && echo DATA-W; touch /local/y && echo LOCAL-W; true",
        ],
    );
    std::fs::create_dir(bundle.join("local")).unwrap();
    f.edit_config(&bundle, |c| {
        let mounts = c["mounts"].as_array_mut().unwrap();
        mounts.push(json!({"destination": "/data", "type": "bind", "source": data, "options": ["rbind", "rw"]}));
        mounts.push(json!({"destination": "/local", "type": "bind", "source": "local", "options": ["rbind", "rw"]}));
    });
    let id = f.id("b");
    let ran = f.rt_ok(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
    assert!(
        !ran.stdout.contains("DATA-W"),
        "host bind must be read-only: {}",
        ran.stdout
    );
    assert!(
        ran.stdout.contains("LOCAL-W"),
        "bind from the bundle stays writable: {}",
        ran.stdout
    );
    std::fs::write(&f.policy_file, format!("writable-binds = [{:?}]\n", data)).unwrap();
    let ran = f.rt_ok(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
    assert!(
        ran.stdout.contains("DATA-W"),
        "allowed in the policy file: {}",
        ran.stdout
    );
    f.assert_clean();
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let f = Fixture::new("badinput");
    let bundle = f.bundle("ok", &["sleep", "100"]);
    let b = bundle.to_str().unwrap();
    let long = "x".repeat(256);
    for (id, wanted) in [
        ("../escape", "invalid container id"),
        ("a/b", "invalid container id"),
        (".hidden", "invalid container id"),
        ("-flag-like", "invalid container id"),
        (long.as_str(), "256 bytes long"),
    ] {
        f.rt_err(&["create", "--bundle", b, "--", id], wanted);
    }
    // No entry but ours in the state root.
    let names: Vec<_> = std::fs::read_dir(&f.root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names.iter().all(|n| n.to_string_lossy().starts_with('.')),
        "{names:?}"
    );

    let id = f.id("dup");
    f.rt_ok(&["create", "--bundle", b, &id]);
    let pid = f.state(&id)["pid"].clone();
    f.rt_err(&["create", "--bundle", b, &id], "already exists");
    assert_eq!(
        f.state(&id)["pid"],
        pid,
        "the duplicate create changed the first container"
    );
    assert_eq!(f.state(&id)["status"], "created");
    f.rt_ok(&["delete", "--force", &id]);

    let id = f.id("nobundle");
    f.rt_err(
        &["create", "--bundle", "/nonexistent/bundle", &id],
        "/nonexistent/bundle",
    );

    let broken = f.bundle("broken", &["true"]);
    let config = std::fs::read(broken.join("config.json")).unwrap();
    for (name, contents) in [
        ("truncated", config[..config.len() / 2].to_vec()),
        ("notjson", b"not json".to_vec()),
        ("empty", Vec::new()),
        ("wrongtype", br#"{"ociVersion": 1}"#.to_vec()),
    ] {
        std::fs::write(broken.join("config.json"), &contents).unwrap();
        let id = f.id(name);
        f.rt_err(
            &["create", "--bundle", broken.to_str().unwrap(), &id],
            "parsing",
        );
    }
    // A huge config is refused before it is parsed.
    let huge = std::fs::File::create(broken.join("config.json")).unwrap();
    huge.set_len(17 << 20).unwrap();
    let id = f.id("huge");
    f.rt_err(
        &["create", "--bundle", broken.to_str().unwrap(), &id],
        "MiB limit",
    );

    f.rt_err(&["kill", "some-id", "NOTASIGNAL"], "unknown signal");
    f.assert_clean();
}

#[test]
fn json_log_carries_the_real_reason_for_containerd() {
    let f = Fixture::new("jsonlog");
    let bundle = f.bundle("j", &["true"]);
    f.edit_config(&bundle, |c| {
        c["process"]["capabilities"]["bounding"] = json!(["CAP_SYS_BOOT"])
    });
    let log = f.dir.path().join("log.json");
    let id = f.id("j");
    let ran = f.rt(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "create",
        "--bundle",
        bundle.to_str().unwrap(),
        &id,
    ]);
    assert_eq!(ran.code, 1);
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    let last_error = lines
        .iter()
        .rev()
        .find(|l| l["level"] == "error")
        .expect("an error line");
    assert!(
        last_error["msg"].as_str().unwrap().contains("CAP_SYS_BOOT"),
        "{text}"
    );
    assert!(last_error["time"].as_str().unwrap().ends_with('Z'));
    assert!(
        ran.stderr.contains("CAP_SYS_BOOT"),
        "runc also prints the error on stderr"
    );
    f.assert_clean();
}

#[test]
fn corrupt_state_is_never_trusted_and_force_delete_cleans_up() {
    let f = Fixture::new("corrupt");
    let (id, pid) = f.started("c");
    let state_file = f.root.join(&id).join("state.json");
    let text = std::fs::read(&state_file).unwrap();
    std::fs::write(&state_file, &text[..text.len() / 2]).unwrap();
    f.rt_err(&["state", &id], "unreadable state");
    f.rt_err(&["delete", &id], "delete --force");
    f.rt_ok(&["delete", "--force", &id]);
    wait_until(|| !alive(pid));
    f.assert_clean();
    // The id is free again.
    f.rt_ok(&[
        "run",
        "--bundle",
        f.bundle("again", &["true"]).to_str().unwrap(),
        &id,
    ]);
    f.assert_clean();
}

#[test]
fn exec_runs_inside_under_the_same_policy() {
    let f = Fixture::new("exec");
    let (id, _) = f.started("e");
    let ran = f.rt_ok(&[
        "exec",
        &id,
        "sh",
        "-c",
        "grep CapEff /proc/self/status; cat /.bottlerocket/rootfs/etc/hostname",
    ]);
    assert!(
        cap_field(&ran.stdout, "CapEff:") & CAP_SYS_ADMIN_BIT != 0,
        "{}",
        ran.stdout
    );
    assert!(ran.stdout.contains("fake-host"));
    assert_eq!(f.rt(&["exec", &id, "sh", "-c", "exit 4"]).code, 4);

    f.rt_fails(
        &["exec", "--cap", "CAP_SYS_PTRACE", &id, "true"],
        255,
        "CAP_SYS_PTRACE",
    );
    let process = f.dir.path().join("process.json");
    std::fs::write(
        &process,
        json!({"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0},
        "capabilities": {"bounding": ["CAP_SYS_MODULE", "CAP_BPF"]}})
        .to_string(),
    )
    .unwrap();
    f.rt_fails(
        &["exec", "--process", process.to_str().unwrap(), &id],
        255,
        "CAP_BPF (in bounding)",
    );

    let pid_file = f.dir.path().join("exec.pid");
    f.rt_ok(&[
        "exec",
        "--detach",
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
        "sleep",
        "100",
    ]);
    let exec_pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let ps: Vec<i32> =
        serde_json::from_str(&f.rt_ok(&["ps", "--format", "json", &id]).stdout).unwrap();
    assert!(ps.contains(&exec_pid), "{ps:?} lacks {exec_pid}");
    f.rt_ok(&["kill", "--all", &id, "KILL"]);
    wait_until(|| !alive(exec_pid));
    f.rt_ok(&["delete", "--force", &id]);
    f.assert_clean();
}

#[test]
fn pause_and_resume() {
    let f = Fixture::new("pause");
    let (id, _) = f.started("p");
    f.rt_ok(&["pause", &id]);
    assert_eq!(f.state(&id)["status"], "paused");
    f.rt_ok(&["resume", &id]);
    assert_eq!(f.state(&id)["status"], "running");
    f.rt_ok(&["delete", "--force", &id]);
    f.assert_clean();
}

#[test]
fn runtime_binary_cannot_be_overwritten_through_proc_exe() {
    let f = Fixture::new("sealed");
    let bundle = f.bundle("s", &["true"]);
    let id = f.id("s");
    f.rt_ok(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
    // Until start, the container's init is the runtime itself; the CVE-2019-5736 attack keeps a
    // handle on its exe and reopens it for writing once the process is gone.
    let pid = f.state(&id)["pid"].as_i64().unwrap();
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(format!("/proc/{pid}/exe"))
        .unwrap();
    f.rt_ok(&["delete", "--force", &id]);
    wait_until(|| !alive(pid as i32));
    let reopened = std::fs::OpenOptions::new().write(true).open(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&handle)
    ));
    let err = reopened.expect_err("the runtime binary the container saw is writable");
    assert!(
        matches!(err.raw_os_error(), Some(libc::EROFS) | Some(libc::EPERM)),
        "unexpected error {err}"
    );
    f.assert_clean();
}

/// Unmounts everything under a scratch directory when the test ends, passed or not.
struct ScratchMounts(tempfile::TempDir);

impl Drop for ScratchMounts {
    fn drop(&mut self) {
        common::unmount_all_under(self.0.path());
    }
}

/// `run` of a `sleep` container with the runtime at `binary`, seen while it runs.
fn runtime_as_it_runs(f: &Fixture, binary: &Path, name: &str) -> RuntimeSeen {
    let bundle = f.bundle(name, &["sh", "-c", "echo up; exec sleep 100"]);
    let id = f.id(name);
    let mut child = f
        .command_of(binary)
        .args(["run", "--bundle", bundle.to_str().unwrap(), &id])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut up = [0u8; 3];
    child.stdout.as_mut().unwrap().read_exact(&mut up).unwrap();
    let seen = RuntimeSeen::of(child.id());
    f.rt_ok(&["kill", &id, "KILL"]);
    child.wait().unwrap();
    f.assert_clean();
    seen
}

fn mount(args: &[&str], what: &str) {
    let status = Command::new("mount").args(args).status().unwrap();
    assert!(status.success(), "mounting {what}: mount {args:?}");
}

/// hack/install.sh's mount unit makes the runtime's directory read-only: a runtime executed
/// from it is protected as it starts (CVE-2019-5736: its exe gives EROFS) and does not
/// re-execute itself.
#[test]
fn an_installed_runtime_starts_protected_without_re_executing() {
    let f = Fixture::new("installed");
    let installed = ScratchMounts(common::scratch_dir("brt-installed-"));
    let prefix = installed.0.path().join("prefix");
    common::install(&prefix);
    // The mount unit, mounted as systemd would: mount -t Type What -o Options Where.
    let units = prefix.join("lib/systemd/system");
    let unit = std::fs::read_dir(&units)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "mount"))
        .expect("install.sh installs a mount unit");
    let text = std::fs::read_to_string(&unit).unwrap();
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("{} has no {key}=", unit.display()))
    };
    mount(
        &[
            "-t",
            field("Type"),
            field("What"),
            "-o",
            field("Options"),
            field("Where"),
        ],
        "the mount unit",
    );

    let seen = runtime_as_it_runs(&f, &prefix.join("bin/bootstrap-runc"), "installed");
    seen.assert_exe_read_only("the installed runtime");
    assert!(
        !seen.re_executed,
        "the installed runtime re-executed itself"
    );
}

/// A read-only mount of a writable filesystem does not protect the runtime, even an overlay:
/// with an upper layer, a remount or another mount of it writes the binary. The runtime
/// started from one re-executes itself from its own protected copy.
#[test]
fn a_runtime_on_a_read_only_bind_of_a_writable_overlay_protects_itself() {
    let f = Fixture::new("rwoverlay");
    let scratch = ScratchMounts(common::scratch_dir("brt-rwoverlay-"));
    let dir = scratch.0.path();
    for sub in ["lower", "upper", "work", "merged", "ro"] {
        std::fs::create_dir(dir.join(sub)).unwrap();
    }
    std::fs::copy(common::BIN, dir.join("lower/bootstrap-runc")).unwrap();
    let d = |sub: &str| dir.join(sub).to_str().unwrap().to_string();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        d("lower"),
        d("upper"),
        d("work")
    );
    mount(
        &["-t", "overlay", "overlay", "-o", &options, &d("merged")],
        "the overlay",
    );
    mount(&["--bind", &d("merged"), &d("ro")], "the bind");
    mount(&["-o", "remount,bind,ro", &d("ro")], "the bind read-only");

    let seen = runtime_as_it_runs(&f, &dir.join("ro/bootstrap-runc"), "rw");
    seen.assert_exe_read_only("the runtime");
    assert!(
        seen.re_executed,
        "the runtime took a writable overlay for protection"
    );
}

#[test]
fn concurrent_commands_on_one_root() {
    let f = Fixture::new("concurrent");
    let bundle = f.bundle("c", &["true"]);
    let b = bundle.to_str().unwrap().to_string();
    let ids: Vec<String> = (0..8).map(|i| f.id(&format!("c{i}"))).collect();
    std::thread::scope(|s| {
        for id in &ids {
            let (f, b) = (&f, &b);
            s.spawn(move || {
                f.rt_ok(&["create", "--bundle", b, id]);
                f.rt_ok(&["start", id]);
                f.rt_ok(&["delete", "--force", id]);
            });
        }
    });
    // The same id from several places at once: exactly one create wins.
    let same = f.id("same");
    let wins: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| f.rt(&["create", "--bundle", &b, &same]).code == 0))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap() as usize)
            .sum()
    });
    assert_eq!(wins, 1);
    assert_eq!(f.state(&same)["status"], "created");
    f.rt_ok(&["delete", "--force", &same]);
    f.assert_clean();
}

#[test]
fn spec_and_features() {
    let f = Fixture::new("spec");
    let dir = f.dir.path().join("newbundle");
    std::fs::create_dir(&dir).unwrap();
    f.rt_ok(&["spec", "--bundle", dir.to_str().unwrap()]);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["root"]["path"], "rootfs");
    let again = f.rt(&["spec", "--bundle", dir.to_str().unwrap()]);
    assert!(again.code == 1 && again.stderr.contains("exists"));
    let features: serde_json::Value = serde_json::from_str(&f.rt_ok(&["features"]).stdout).unwrap();
    assert!(features["linux"]["capabilities"]
        .as_array()
        .unwrap()
        .contains(&json!("CAP_SYS_ADMIN")));
    assert!(Path::new(common::BIN).exists());
}
