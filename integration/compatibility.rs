//! Bottlerocket's bootstrap containers run here unchanged: the `bottlerocket` compatibility mode
//! (a writable root thrown away with the container, the host root bound `rbind,ro` as
//! Bottlerocket binds it), a container's `environment`, and image roots whose `resolv.conf` is
//! a symlink. Each case is also run in the default mode, where the same writes stay `EROFS`.

use std::path::Path;

use crate::common;
use crate::common::node::{script_container, Node};
use crate::common::supervisor::{container, Boot};
use crate::common::Fixture;
use serde_json::json;

/// The node's fake host root made like Bottlerocket's: `/var` and `/run` filesystems of their
/// own, procfs and sysfs (with the host's cgroup hierarchies) mounted, `/run` bound at `/alias`
/// too (a second path to the run dir); the supervisor's state and run directories on them,
/// where the host root shows them.
fn bottlerocket_like_node(name: &str) -> Node {
    let mut node = Node::new(name);
    let r = node.root.display().to_string();
    node.sh_ok(&format!(
        "set -e
         mount -t tmpfs var {r}/var
         mkdir -p {r}/var/lib
         mount -t tmpfs run {r}/run
         mkdir -p {r}/alias
         mount --bind {r}/run {r}/alias
         mount -t proc proc {r}/proc
         mount --rbind /sys {r}/sys
         mount --make-rslave {r}/sys"
    ));
    node.state_dir = node.root.join("var/lib/bootstrap-containers");
    node.run_dir = node.root.join("run/bootstrap-containers");
    node
}

/// What container `name` wrote in its last run this boot, from its log in the node's boot
/// record (which holds every run of the boot, each after a `--- run again` line).
fn log_of(node: &Node, name: &str) -> String {
    let log = node
        .state_dir
        .join("boots")
        .join(common::supervisor::boot_id())
        .join("logs")
        .join(format!("{name}.log"));
    let log = String::from_utf8_lossy(&node.read(&log)).into_owned();
    let last = log.rsplit("--- run again").next().unwrap_or_default();
    last.split_once("---\n")
        .map_or(last, |(_, rest)| rest)
        .to_string()
}

/// Boots the node again as after a reboot: this boot's markers (in the run dir) gone.
fn reboot(node: &Node, settings: &str, flags: &[&str]) -> common::Ran {
    node.sh_ok(&format!("rm -rf {}", node.run_dir.display()));
    node.boot_with(settings, flags)
}

/// What a container may write under the host root, one line per place ("wrote X" or
/// "refused X"), and how the host's kernel filesystems are mounted ("mount X ro|rw").
const HOST_ROOT_PROBE: &str = r#"#!/bin/sh
R=/.bottlerocket/rootfs
try() { if sh -c "$2" 2>/dev/null; then echo "wrote $1"; else echo "refused $1"; fi; }
try var "echo swap > $R/var/swapfile"
try cloud "mkdir -p $R/var/lib/cloud/data && echo i-0123 > $R/var/lib/cloud/data/instance-id"
try etc "touch $R/etc/bootstrap-probe"
try state "touch $R/var/lib/bootstrap-containers/planted"
try run "touch $R/run/bootstrap-containers/planted"
try runtime "touch $R/run/bootstrap-containers/runtime/planted"
try alias "touch $R/alias/bootstrap-containers/planted"
for p in proc sys sys/fs/cgroup/pids; do
  awk -v p="$R/$p" '$5 == p { split($6, o, ","); flag = o[1] } END { print "mount " p " " flag }' /proc/self/mountinfo
done
"#;

/// Bottlerocket's host root: its top mount read-only, the host's `/var` writable through it
/// (a swap file, cloud-init's instance id reach the host), the runtime's and supervisor's
/// state and run directories and the host's procfs, sysfs and cgroupfs read-only; in the
/// default mode every one of them read-only.
#[test]
fn the_bottlerocket_mode_binds_the_host_root_as_bottlerocket_does() {
    let node = bottlerocket_like_node("brroot");
    let settings = script_container("probe", HOST_ROOT_PROBE, "");
    let strict = node.boot(&settings);
    assert_eq!(strict.code, 0, "{strict:?}");
    let strict = log_of(&node, "probe");
    for place in ["var", "cloud", "etc", "state", "run", "runtime", "alias"] {
        assert!(
            strict.contains(&format!("refused {place}")),
            "default mode, {place}:\n{strict}"
        );
    }
    let bottlerocket = reboot(&node, &settings, &["--compatibility", "bottlerocket"]);
    assert_eq!(bottlerocket.code, 0, "{bottlerocket:?}");
    let out = &log_of(&node, "probe");
    for place in ["var", "cloud"] {
        assert!(out.contains(&format!("wrote {place}")), "{place}:\n{out}");
    }
    for place in ["etc", "state", "run", "runtime", "alias"] {
        assert!(out.contains(&format!("refused {place}")), "{place}:\n{out}");
    }
    for run in [&strict, out] {
        for fs in ["proc", "sys", "sys/fs/cgroup/pids"] {
            assert!(
                run.contains(&format!("/.bottlerocket/rootfs/{fs} ro")),
                "{fs} writable:\n{run}"
            );
        }
    }
    assert_eq!(node.read(&node.root.join("var/swapfile")), b"swap\n");
    assert_eq!(
        node.read(&node.root.join("var/lib/cloud/data/instance-id")),
        b"i-0123\n"
    );
    let planted = node.sh_ok(&format!(
        "ls {0}/etc/bootstrap-probe {1}/planted {2}/planted {2}/runtime/planted 2>/dev/null; true",
        node.root.display(),
        node.state_dir.display(),
        node.run_dir.display()
    ));
    assert!(planted.trim().is_empty(), "planted on the host: {planted}");
}

/// A script writing into its own root (Bottlerocket's README example, `mkdir -p
/// /var/lib/my_directory`), as an image container and as a source-less one.
const ROOT_WRITER: &str = "mkdir -p /var/lib/my_directory && echo kept > /var/lib/my_directory/file && cat /var/lib/my_directory/file";

/// In the Bottlerocket mode an image's and a source-less container's root is writable, and
/// nothing of what they wrote stays after them: not in the image, not on the host, not in the
/// state dir. In the default mode the same writes fail with EROFS.
#[test]
fn the_bottlerocket_mode_gives_a_writable_root_thrown_away_after() {
    let node = Node::new("brwrite");
    let layout = common::busybox_layout(node.dir.path(), &["sh", "-c", ROOT_WRITER]);
    let settings = format!(
        "{}{}",
        container(
            "image",
            &format!("oci-layout:{}:latest", layout.display()),
            "mode = \"always\""
        ),
        // Not essential: in the default mode it fails, and the boot reports it.
        script_container("script", &format!("#!/bin/sh\n{ROOT_WRITER}\n"), "")
            .replace("essential = true", "essential = false"),
    );
    let strict = node.boot(&settings);
    assert_eq!(strict.code, 0, "{strict:?}");
    let report = |node: &Node| -> serde_json::Value {
        serde_json::from_slice(&node.read(&node.run_dir.join("report.json"))).unwrap()
    };
    let statuses = |report: &serde_json::Value| -> Vec<String> {
        report["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| format!("{}={}", c["name"], c["status"]))
            .collect()
    };
    assert_eq!(
        statuses(&report(&node)),
        ["\"image\"=\"failed\"", "\"script\"=\"failed\""],
        "{strict:?}"
    );
    for name in ["image", "script"] {
        let log = log_of(&node, name);
        assert!(log.contains("Read-only file system"), "{name}: {log}");
    }
    let bottlerocket = reboot(&node, &settings, &["--compatibility", "bottlerocket"]);
    assert_eq!(
        statuses(&report(&node)),
        ["\"image\"=\"succeeded\"", "\"script\"=\"succeeded\""],
        "{bottlerocket:?}"
    );
    for name in ["image", "script"] {
        assert_eq!(log_of(&node, name), "kept\n", "{name}");
    }
    let left = node.sh_ok(&format!(
        "find {0} {1} {2} -path '*my_directory*' 2>/dev/null; true",
        node.root.join("var/lib").display(),
        node.state_dir.display(),
        layout.display()
    ));
    assert!(left.trim().is_empty(), "left behind: {left}");
}

/// A plain bundle's `root.readonly` is honoured in the Bottlerocket mode as runc honours it (the
/// write lands in the bundle's rootfs); the default mode makes every root read-only.
#[test]
fn a_bundles_root_readonly_is_honoured_as_runc_does_in_the_bottlerocket_mode() {
    let f = Fixture::new("brbundle");
    for (mode, readonly, writes) in [
        ("bottlerocket", false, true),
        ("bottlerocket", true, false),
        ("strict", false, false),
    ] {
        let name = format!("{mode}-{readonly}");
        let bundle = f.bundle(&name, &["touch", "/written"]);
        f.edit_config(&bundle, |c| c["root"]["readonly"] = json!(readonly));
        let id = f.id(&name);
        let ran = f.rt(&[
            "--compatibility",
            mode,
            "run",
            "--bundle",
            bundle.to_str().unwrap(),
            &id,
        ]);
        assert_eq!(ran.code == 0, writes, "{name}: {ran:?}");
        assert_eq!(bundle.join("rootfs/written").exists(), writes, "{name}");
        if !writes {
            assert!(
                ran.stderr.contains("Read-only file system"),
                "{name}: {ran:?}"
            );
        }
    }
    f.assert_clean();
}

/// A container that fills its writable layer fails, and the report says why; what it wrote
/// never passed the layer's size.
#[test]
fn a_full_writable_layer_fails_the_container_with_that_reason() {
    let b = Boot::new("brfull");
    let layout = common::busybox_layout(
        b.f.dir.path(),
        &[
            "sh",
            "-c",
            "df -k / | tail -n 1; dd if=/dev/zero of=/big bs=1M count=64",
        ],
    );
    b.write_settings(&container(
        &b.name("fill"),
        &format!("oci-layout:{}:latest", layout.display()),
        "mode = \"always\"",
    ));
    let out = b
        .command()
        .args([
            "--compatibility",
            "bottlerocket",
            "--writable-layer-size",
            "8MiB",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let outcome = b.outcome("fill");
    assert_eq!(outcome["status"], "failed", "{outcome}");
    assert!(
        outcome["error"]
            .as_str()
            .unwrap_or_default()
            .contains("its writable layer was full: it holds 8MiB (--writable-layer-size)"),
        "{outcome}"
    );
    let log = b.container_log("fill");
    let total_kib: u64 = log
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no df line: {log}"));
    assert!(total_kib <= 8192, "the layer holds {total_kib} KiB: {log}");
    b.assert_clean();
}

/// `environment` reaches the process after the image's env and the proxies, a later name
/// replacing an earlier one; no value is in the report, the boot's record, the logs or the
/// metrics; a bad name is refused by `plan`, naming the field.
#[test]
fn a_containers_environment_reaches_it_and_no_record() {
    let b = Boot::new("brenv");
    let layout = common::image_layout(
        b.f.dir.path(),
        |_| {},
        &[
            ("--config.env", "FOO=from-image"),
            (
                "--config.cmd",
                "sh",
            ),
            ("--config.cmd", "-c"),
            (
                "--config.cmd",
                "[ \"$SECRET\" = s3cr3t-zz9 ] || exit 3; echo \"$FOO|$HTTP_PROXY|$(env | grep -c ^FOO=)\" > /.bottlerocket/rootfs/mnt/env",
            ),
        ],
    );
    b.write_settings(&container(
        &b.name("env"),
        &format!("oci-layout:{}:latest", layout.display()),
        "mode = \"always\"\nenvironment = { FOO = \"from-settings\", HTTP_PROXY = \"settings-proxy\", SECRET = \"s3cr3t-zz9\" }",
    ));
    let metrics = b.f.dir.path().join("metrics.prom");
    let out = b
        .command()
        .arg("--metrics-file")
        .arg(&metrics)
        .env("HTTP_PROXY", "supervisor-proxy")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(b.outcome("env")["status"], "succeeded", "{}", b.report());
    assert_eq!(
        std::fs::read_to_string(b.f.mount_area.join("env")).unwrap(),
        "from-settings|settings-proxy|1\n"
    );
    let mut records = vec![metrics];
    records.extend(common::node::files_under(&b.run_dir));
    records.extend(common::node::files_under(&b.state_dir.join("boots")));
    for file in records {
        let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap_or_default()).into_owned();
        assert!(
            !text.contains("s3cr3t-zz9"),
            "{} holds the value",
            file.display()
        );
    }
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("s3cr3t-zz9"),
        "the supervisor's log holds the value"
    );

    b.write_settings(&container(
        &b.name("bad"),
        "/some/bundle",
        "environment = { \"1BAD\" = \"s3cr3t-zz9\" }",
    ));
    let plan = std::process::Command::new(common::supervisor::SUPERVISOR)
        .args(["plan", "--settings"])
        .arg(&b.settings)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&plan.stderr);
    assert_eq!(plan.status.code(), Some(2), "{plan:?}");
    assert!(
        stderr.contains(&format!(
            "bootstrap-containers.{}.environment: the variable name \"1BAD\"",
            b.name("bad")
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cr3t-zz9"), "{stderr}");
    b.assert_clean();
}

/// An image whose `/etc/resolv.conf` is a dangling in-root symlink (images built from systemd
/// roots) runs and sees the host's resolver; one whose symlink names an absolute host path gets
/// the file made inside its own root, and nothing outside changes.
#[test]
fn an_images_resolv_conf_symlink_is_resolved_inside_its_root() {
    let b = Boot::new("brresolv");
    std::fs::write(
        b.f.host_root.join("etc/resolv.conf"),
        "nameserver 192.0.2.53\n",
    )
    .unwrap();
    let marker = format!("bootstrap-runc-resolv-{}", std::process::id());
    let host_side = Path::new("/run").join(&marker);
    let mut settings = String::new();
    for (case, link) in [
        (
            "dangling",
            "../run/systemd/resolve/stub-resolv.conf".to_string(),
        ),
        ("absolute", format!("/run/{marker}/resolv.conf")),
    ] {
        let dir = b.f.dir.path().join(case);
        std::fs::create_dir_all(&dir).unwrap();
        let layout = common::image_layout(
            &dir,
            |rootfs| {
                let etc = rootfs.join("etc");
                let _ = std::fs::remove_file(etc.join("resolv.conf"));
                std::os::unix::fs::symlink(&link, etc.join("resolv.conf")).unwrap();
            },
            &[
                ("--config.cmd", "sh"),
                ("--config.cmd", "-c"),
                (
                    "--config.cmd",
                    &format!("cat /etc/resolv.conf > /.bottlerocket/rootfs/mnt/{case}"),
                ),
            ],
        );
        settings.push_str(&container(
            &b.name(case),
            &format!("oci-layout:{}:latest", layout.display()),
            "mode = \"always\"",
        ));
    }
    b.write_settings(&settings);
    let ran = b.run();
    assert_eq!(ran.code, 0, "{ran:?}");
    for case in ["dangling", "absolute"] {
        assert_eq!(b.outcome(case)["status"], "succeeded", "{}", b.report());
        assert_eq!(
            std::fs::read_to_string(b.f.mount_area.join(case)).unwrap(),
            "nameserver 192.0.2.53\n",
            "{case}"
        );
    }
    assert!(
        !host_side.exists(),
        "{} was made on the host",
        host_side.display()
    );
    b.assert_clean();
}
