//! The seed's use cases for bootstrap containers, end to end through the supervisor, each on a
//! node of its own: a private mount namespace holding a fake host root (an overlay of the real
//! `/`, so the host's own tools are there, with fresh writable `/var/lib` and `/mnt` and the real
//! `/dev`). Everything the node mounts dies with its namespace; loop devices are detached and
//! files removed on drop, even when the test fails.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::supervisor::SUPERVISOR;
use crate::common::{Ran, BIN};
use base64::Engine;

struct Node {
    dir: tempfile::TempDir,
    /// A process in the node's mount namespace, which lives as long as it does.
    holder: Child,
    /// The fake host root, as the node's namespace sees it.
    root: PathBuf,
    loops: Vec<String>,
}

impl Node {
    fn new(name: &str) -> Node {
        let dir = common::scratch_dir(&format!("brt-node-{name}-"));
        let holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sleep", "1000"])
            .spawn()
            .unwrap();
        let ours = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        let theirs = format!("/proc/{}/ns/mnt", holder.id());
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_link(&theirs).ok().is_none_or(|ns| ns == ours) {
            assert!(
                Instant::now() < deadline,
                "unshare did not make a namespace"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let node = Node {
            root: dir.path().join("host"),
            dir,
            holder,
            loops: Vec::new(),
        };
        let d = node.dir.path().display();
        node.sh_ok(&format!(
            "set -e
             mkdir {d}/layers {d}/host
             mount -t tmpfs layers {d}/layers
             mkdir {d}/layers/upper {d}/layers/work
             mount -t overlay overlay -o lowerdir=/,upperdir={d}/layers/upper,workdir={d}/layers/work {d}/host
             mount -t tmpfs var-lib {d}/host/var/lib
             mount -t tmpfs mnt {d}/host/mnt
             mount --rbind /dev {d}/host/dev"
        ));
        node
    }

    /// A command run inside the node's mount namespace.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--mount=/proc/{}/ns/mnt", self.holder.id()))
            .arg("--")
            .arg(program)
            .stdin(Stdio::null());
        cmd
    }

    fn output(mut cmd: Command) -> Ran {
        let out = cmd.output().unwrap();
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn sh_ok(&self, script: &str) -> String {
        let mut cmd = self.command("sh");
        cmd.args(["-c", script]);
        let ran = Node::output(cmd);
        assert_eq!(ran.code, 0, "{script}: {}", ran.stderr);
        ran.stdout
    }

    /// A fresh loop device over a file of `mib` MiB: the node's instance-store disk.
    fn disk(&mut self, mib: u64) -> String {
        let file = self
            .dir
            .path()
            .join(format!("disk{}.img", self.loops.len()));
        std::fs::File::create(&file)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let device = String::from_utf8(out.stdout).unwrap().trim().to_string();
        self.loops.push(device.clone());
        device
    }

    /// A file as the node sees it (its `/var/lib` and `/mnt` exist only in its namespace).
    fn read(&self, path: &Path) -> Vec<u8> {
        let out = self.command("cat").arg(path).output().unwrap();
        assert!(
            out.status.success(),
            "cat {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `bootstrap-supervisor run` on `settings`, inside the node.
    fn boot(&self, settings: &str) -> Ran {
        std::fs::write(self.path("settings.toml"), settings).unwrap();
        let mut cmd = self.command(SUPERVISOR);
        cmd.arg("run")
            .arg("--settings")
            .arg(self.path("settings.toml"))
            .arg("--runtime")
            .arg(BIN)
            .arg("--state-dir")
            .arg(self.path("state"))
            .arg("--run-dir")
            .arg(self.path("run"))
            .arg("--host-root")
            .arg(&self.root)
            .arg("--host-mount-area")
            .arg(self.root.join("mnt"))
            .arg("--registry-config")
            .arg(self.path("registries.toml"))
            .env("BOOTSTRAP_STOP_GRACE", "2s")
            .env("BOOTSTRAP_RUNC_POLICY", self.path("policy.toml"));
        Node::output(cmd)
    }

    /// Every file the supervisor wrote: logs, report, settings.
    fn written_text(&self) -> String {
        let mut text = String::new();
        for dir in [self.path("state"), self.path("run")] {
            for file in files_under(&dir) {
                text.push_str(&String::from_utf8_lossy(
                    &std::fs::read(file).unwrap_or_default(),
                ));
            }
        }
        text + &std::fs::read_to_string(self.path("settings.toml")).unwrap()
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => files.extend(files_under(&path)),
            Ok(t) if t.is_file() => files.push(path),
            _ => {}
        }
    }
    files
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
        // The namespace, and every mount of the disks in it, is gone with its last process.
        for device in &self.loops {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !Command::new("losetup")
                .args(["-d", device])
                .status()
                .is_ok_and(|s| s.success())
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn script_container(name: &str, script: &str, extra: &str) -> String {
    let user_data = base64::engine::general_purpose::STANDARD.encode(script);
    format!(
        "[settings.bootstrap-containers.{name}]\nmode = \"always\"\nessential = true\nuser-data = \"{user_data}\"\n{extra}\n"
    )
}

fn assert_ran(ran: &Ran) {
    assert_eq!(
        ran.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        ran.stdout, ran.stderr
    );
}

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
