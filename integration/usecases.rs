//! The seed's use cases for bootstrap containers, end to end through the supervisor, each on a
//! node of its own ([`Node`]).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use crate::common;
use crate::common::node::{assert_ran, script_container, Node};
use crate::common::supervisor::SUPERVISOR;

#[test]
fn ephemeral_disk_becomes_containerds_storage() {
    let mut node = Node::new("ephemeral");
    let disk = node.disk(64);
    let script = format!(
        "#!/bin/sh
set -e
disk=/.bottlerocket/rootfs{disk}
mkfs.ext4 -q -F \"$disk\"
mkdir -p /.bottlerocket/rootfs/mnt/ephemeral
mount \"$disk\" /.bottlerocket/rootfs/mnt/ephemeral
mkdir -p /.bottlerocket/rootfs/mnt/ephemeral/containerd
mount --bind /.bottlerocket/rootfs/mnt/ephemeral/containerd /.bottlerocket/rootfs/var/lib/containerd
echo formatted
"
    );
    let ran = node.boot(&script_container("disk-setup", &script, ""));
    assert_ran(&ran);
    assert!(ran.stdout.contains("formatted"), "{}", ran.stdout);
    let containerd = node.root.join("var/lib/containerd");
    // The top mount at the node's containerd dir: its device and filesystem (mountinfo names
    // the source as the container named it, so compare device numbers).
    let top = node.sh_ok(&format!(
        "awk '$5 == \"{}\" {{print $3, $9}}' /proc/self/mountinfo | tail -1",
        containerd.display()
    ));
    let device = node.sh_ok(&format!("lsblk -dno MAJ:MIN {disk}"));
    assert_eq!(
        top.trim(),
        format!("{} ext4", device.trim()),
        "containerd's dir is not on the disk"
    );
    node.sh_ok(&format!(
        "echo state > {}/written && sync",
        containerd.display()
    ));
}

#[test]
fn a_large_kubelet_config_reaches_the_host_byte_for_byte() {
    let node = Node::new("large");
    // Far above what Bottlerocket's API takes in one setting (64 KiB).
    let config: String = (0..3000)
        .map(|i| format!("# line {i:05} of the generated kubelet configuration\n"))
        .collect();
    assert!(config.len() > 64 << 10);
    let script = format!(
        "set -e\ncat > /.bottlerocket/rootfs/var/lib/kubelet/config.yaml <<'EOF'\n{config}EOF\n"
    );
    let ran = node.boot(&script_container("kubelet-config", &script, ""));
    assert_ran(&ran);
    let written = node.read(&node.root.join("var/lib/kubelet/config.yaml"));
    assert!(
        written == config.as_bytes(),
        "not byte-identical: {} of {} bytes",
        written.len(),
        config.len()
    );
}

#[test]
fn a_secret_is_fetched_and_stored_but_never_logged() {
    let node = Node::new("secret");
    let secret = format!("s3cr3t-{}-{}", std::process::id(), fastrand_like());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = secret.clone();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = [0u8; 1024];
        let _ = stream.read(&mut request);
        let body = served;
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    });
    let script = format!(
        "set -e
umask 077
curl -fsS http://127.0.0.1:{port}/token -o /.bottlerocket/rootfs/var/lib/kubelet/token
echo stored
"
    );
    let ran = node.boot(&script_container("fetch-secret", &script, ""));
    assert_ran(&ran);
    server.join().unwrap();
    let token = format!("{}/var/lib/kubelet/token", node.root.display());
    assert_eq!(node.read(Path::new(&token)), secret.as_bytes());
    assert_eq!(node.sh_ok(&format!("stat -c %a {token}")).trim(), "600");
    let everywhere = format!("{}{}{}", ran.stdout, ran.stderr, node.written_text());
    assert!(!everywhere.contains(&secret), "the secret was written out");
}

/// A value no earlier run could have produced.
fn fastrand_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn a_source_less_container_runs_its_user_data_on_the_hosts_tools() {
    let node = Node::new("scriptrules");
    let settings = format!(
        "{}{}",
        // No #!: /bin/sh runs it. The root is the host's, read-only; its tools are there.
        script_container(
            "plain",
            "echo \"ran by $0\"; command -v mkfs.ext4; if touch /etc/made 2>/dev/null; then echo WROTE; fi\n",
            ""
        ),
        // `command` replaces the script as the process; the user-data is still delivered.
        script_container(
            "commanded",
            "not a script at all",
            "command = [\"sh\", \"-c\", \"echo cmd: $(cat /.bottlerocket/bootstrap-containers/current/user-data)\"]"
        ),
    );
    std::fs::write(node.path("settings.toml"), &settings).unwrap();
    let plan = Command::new(SUPERVISOR)
        .args(["plan", "--settings"])
        .arg(node.path("settings.toml"))
        .output()
        .unwrap();
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert_eq!(plan.matches("(user-data script)").count(), 2, "{plan}");

    let ran = node.boot(&settings);
    assert_ran(&ran);
    assert!(
        ran.stdout
            .contains("ran by /.bottlerocket/bootstrap-script"),
        "{}",
        ran.stdout
    );
    assert!(ran.stdout.contains("/usr/sbin/mkfs.ext4"), "{}", ran.stdout);
    assert!(!ran.stdout.contains("WROTE"), "{}", ran.stdout);
    assert!(
        ran.stdout.contains("cmd: not a script at all"),
        "{}",
        ran.stdout
    );
    let script = node.path("state/containers/plain/script");
    assert_eq!(
        node.sh_ok(&format!("stat -c '%a %u' {}", script.display()))
            .trim(),
        "700 0"
    );
    assert!(node
        .sh_ok(&format!("ls {}/etc/made 2>&1 || true", node.root.display()))
        .contains("No such file"));
}

#[test]
fn no_source_and_no_user_data_is_a_settings_error() {
    let dir = common::scratch_dir("brt-nosource-");
    let settings = dir.path().join("settings.toml");
    std::fs::write(
        &settings,
        "[settings.bootstrap-containers.empty]\nmode = \"always\"\n",
    )
    .unwrap();
    let out = Command::new(SUPERVISOR)
        .args(["plan", "--settings"])
        .arg(&settings)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("bootstrap-containers.empty.source: is required unless user-data is set"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
