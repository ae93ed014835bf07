//! Escape checks, as root, within the threat model of docs/security.md (a bootstrap container is
//! trusted root code with CAP_SYS_ADMIN; no configuration gets more than the policy): what a
//! container and its `exec`s actually hold, seen from inside, for the most a config, an `exec` and
//! the supervisor's generated config can ask; mounts under the host root not reaching the real
//! host's shared root; the runtime binary behind a running `exec`; masked paths.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::supervisor::{container, Boot};
use crate::common::Fixture;
use bootstrap_runc::policy::capabilities;
use libcontainer::capabilities::CapabilityExt;
use serde_json::json;

/// The policy's ceiling as a kernel capability mask.
fn ceiling_mask() -> u64 {
    capabilities::ceiling(&[])
        .iter()
        .map(|c| 1u64 << c.to_cap().index())
        .fold(0, |a, b| a | b)
}

/// Every capability set and NoNewPrivs a process printed from /proc/self/status must be within
/// the policy: sets within the ceiling, CAP_SYS_ADMIN effective, no_new_privs on.
fn assert_within_policy(status: &str, what: &str) {
    let field = |name: &str| -> u64 {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{what}: no {name} in {status}"));
        u64::from_str_radix(line[name.len()..].trim(), 16).unwrap()
    };
    let ceiling = ceiling_mask();
    for set in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        let above = field(set) & !ceiling;
        assert_eq!(above, 0, "{what}: {set} holds {above:#x} above the ceiling");
    }
    assert_ne!(field("CapEff:") & (1 << 21), 0, "{what}: no CAP_SYS_ADMIN");
    assert_eq!(field("NoNewPrivs:"), 1, "{what}: no_new_privs is off");
}

const STATUS: &str = "grep -E '^(Cap|NoNewPrivs)' /proc/self/status";

#[test]
fn the_most_a_config_or_exec_can_ask_stays_within_the_policy() {
    let f = Fixture::new("esc-caps");
    let all: Vec<String> = capabilities::ceiling(&[])
        .into_iter()
        .map(capabilities::name)
        .collect();
    for (name, uid) in [("root", 0), ("user", 1000)] {
        let bundle = f.bundle(name, &["sh", "-c", STATUS]);
        f.edit_config(&bundle, |c| {
            let process = &mut c["process"];
            process["user"] = json!({"uid": uid, "gid": uid});
            process["noNewPrivileges"] = json!(false);
            for set in [
                "bounding",
                "effective",
                "inheritable",
                "permitted",
                "ambient",
            ] {
                process["capabilities"][set] = json!(all);
            }
        });
        let ran = f.rt_ok(&["run", "--bundle", bundle.to_str().unwrap(), &f.id(name)]);
        assert_within_policy(&ran.stdout, name);
    }

    let (id, _) = f.started("exec");
    let process = f.dir.path().join("process.json");
    std::fs::write(
        &process,
        json!({"args": ["sh", "-c", STATUS], "cwd": "/", "user": {"uid": 0, "gid": 0},
               "env": ["PATH=/bin:/usr/bin"],
               "noNewPrivileges": false,
               "capabilities": {"bounding": all, "effective": all, "inheritable": all,
                                "permitted": all, "ambient": all}})
        .to_string(),
    )
    .unwrap();
    let ran = f.rt_ok(&["exec", "--process", process.to_str().unwrap(), &id]);
    assert_within_policy(&ran.stdout, "exec --process");
    let mut exec = vec!["exec"];
    for cap in &all {
        exec.extend(["--cap", cap.as_str()]);
    }
    exec.extend([id.as_str(), "sh", "-c", STATUS]);
    assert_within_policy(&f.rt_ok(&exec).stdout, "exec --cap");

    // Namespaces: a mount namespace of its own, never a user namespace (the host's, so the
    // capabilities above are the host's: that is the policy, and no more).
    let ns = |pid: &str, ns: &str| std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
    let pid = f.state(&id)["pid"].as_i64().unwrap().to_string();
    assert_ne!(ns(&pid, "mnt"), ns("self", "mnt"));
    assert_eq!(ns(&pid, "user"), ns("self", "user"));
    f.rt_ok(&["delete", "--force", &id]);
    f.assert_clean();
}

/// The supervisor's config generated from an image (Bottlerocket's capability set, the host's
/// network and PID namespaces) is within the policy too.
#[test]
fn the_supervisors_generated_config_stays_within_the_policy() {
    let b = Boot::new("esc-sup");
    let layout = common::busybox_layout(
        b.f.dir.path(),
        &[
            "sh",
            "-c",
            &format!("{STATUS} > /.bottlerocket/rootfs/mnt/status"),
        ],
    );
    b.write_settings(&container(
        &b.name("img"),
        &format!("oci-layout:{}:latest", layout.display()),
        "mode = \"always\"\nessential = true",
    ));
    let ran = b.run();
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let status = std::fs::read_to_string(b.f.mount_area.join("status")).unwrap();
    assert_within_policy(&status, "oci-layout container");
    b.assert_clean();
}

/// With the real host root (`/`) and the host side shared, as systemd sets it up: a mount made
/// inside under /.bottlerocket/rootfs, outside mnt, never shows on the host.
#[test]
fn mounts_under_the_real_host_root_never_reach_the_host() {
    let f = Fixture::new("esc-mount");
    // The fixture dir becomes a shared mount point, so a wrong propagation (shared instead of
    // slave) would carry the container's mount back here.
    let target = f.dir.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let shared = f.dir.path();
    nix::mount::mount(
        Some(shared),
        shared,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    nix::mount::mount(
        None::<&str>,
        shared,
        None::<&str>,
        nix::mount::MsFlags::MS_SHARED,
        None::<&str>,
    )
    .unwrap();
    let inside = Path::new("/.bottlerocket/rootfs").join(target.strip_prefix("/").unwrap());
    let bundle = f.bundle(
        "m",
        &[
            "sh",
            "-c",
            &format!(
                "mount -t tmpfs evil {0} && touch {0}/made && echo mounted && sleep 1",
                inside.display()
            ),
        ],
    );
    let id = f.id("m");
    // The fixture's command names its fake host root; this one names the real one.
    let out = std::process::Command::new(common::BIN)
        .arg("--root")
        .arg(&f.root)
        .args(["--host-root", "/", "--shared-dirs", "", "--host-mount-area"])
        .arg(&f.mount_area)
        .env("BOOTSTRAP_RUNC_POLICY", &f.policy_file)
        .args(["run", "--bundle", bundle.to_str().unwrap(), &id])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("mounted"),
        "the container could not mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        common::host_mounts_under(&target).is_empty(),
        "a mount under the host root reached the host"
    );
    assert!(!target.join("made").exists());
    nix::mount::umount2(shared, nix::mount::MntFlags::MNT_DETACH).unwrap();
    f.assert_clean();
}

/// CVE-2019-5736 against `exec`: the runtime processes that join a running container have an
/// `exe` that cannot be opened for writing, even once they are gone (the attack's handle).
#[test]
fn runtime_binary_cannot_be_overwritten_through_a_running_exec() {
    let f = Fixture::new("esc-exec");
    let (id, init) = f.started("e");
    let runtime = std::fs::metadata(common::BIN).unwrap();
    let mut handles = Vec::new();
    // Grab an O_PATH handle on the exe of every runtime process seen in the container's pid
    // namespace (where the container could see it) while execs come and go.
    let deadline = Instant::now() + Duration::from_secs(20);
    while handles.is_empty() {
        assert!(
            Instant::now() < deadline,
            "never saw a runtime process inside the container"
        );
        std::thread::scope(|s| {
            let exec = s.spawn(|| f.rt_ok(&["exec", &id, "sleep", "0.2"]));
            while !exec.is_finished() {
                for pid in pids_in_namespace_of(init) {
                    let exe = format!("/proc/{pid}/exe");
                    let Ok(handle) = std::fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_PATH)
                        .open(&exe)
                    else {
                        continue;
                    };
                    if is_runtime(&handle, &runtime) {
                        handles.push(handle);
                    }
                }
            }
        });
    }
    for handle in &handles {
        let reopened = std::fs::OpenOptions::new().write(true).open(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(handle)
        ));
        let err = reopened.expect_err("an exec's runtime binary is writable");
        assert!(
            matches!(err.raw_os_error(), Some(libc::EROFS) | Some(libc::EPERM)),
            "unexpected error {err}"
        );
    }
    eprintln!(
        "{} runtime processes caught inside the container",
        handles.len()
    );
    f.rt_ok(&["delete", "--force", &id]);
    f.assert_clean();
}

/// Pids sharing the pid namespace of `pid`.
fn pids_in_namespace_of(pid: i32) -> Vec<i32> {
    let Ok(wanted) = std::fs::read_link(format!("/proc/{pid}/ns/pid")) else {
        return Vec::new();
    };
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_link(format!("/proc/{p}/ns/pid"))
                .ok()
                .as_ref()
                == Some(&wanted)
        })
        .collect()
}

/// Whether an exe handle is the runtime (the same size; the container runs busybox).
fn is_runtime(handle: &std::fs::File, runtime: &std::fs::Metadata) -> bool {
    handle.metadata().is_ok_and(|m| m.len() == runtime.len())
}

/// Masked paths stay masked when a config clears the lists, and in its `exec`s.
#[test]
fn masked_paths_stay_masked() {
    let f = Fixture::new("esc-mask");
    // Those this kernel has (a path that does not exist is not masked).
    let paths: Vec<&str> = bootstrap_runc::policy::MASKED_PATHS
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .collect();
    assert!(paths.contains(&"/proc/timer_list"), "{paths:?}");
    let check = format!(
        "for p in {}; do grep -q \" $p \" /proc/self/mountinfo && echo masked $p; done; \
         head -c 16 /proc/timer_list | wc -c",
        paths.join(" ")
    );
    let unmask = |c: &mut serde_json::Value| {
        c["linux"]["maskedPaths"] = json!([]);
        c["linux"]["readonlyPaths"] = json!([]);
    };
    let masked = |out: &str| {
        for path in &paths {
            assert!(
                out.contains(&format!("masked {path}\n")),
                "{path} unmasked: {out}"
            );
        }
        assert!(
            out.trim_end().ends_with('0'),
            "/proc/timer_list readable: {out}"
        );
    };
    let bundle = f.bundle("m", &["sh", "-c", &check]);
    f.edit_config(&bundle, unmask);
    masked(
        &f.rt_ok(&["run", "--bundle", bundle.to_str().unwrap(), &f.id("m")])
            .stdout,
    );

    let bundle = f.bundle("e", &["sleep", "100"]);
    f.edit_config(&bundle, unmask);
    let id = f.id("e");
    f.rt_ok(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
    f.rt_ok(&["start", &id]);
    masked(&f.rt_ok(&["exec", &id, "sh", "-c", &check]).stdout);
    f.rt_ok(&["delete", "--force", &id]);
    f.assert_clean();
}
