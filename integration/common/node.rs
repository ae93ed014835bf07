//! A node of its own for a test: a private mount namespace holding a fake host root (an
//! overlay of the real `/`, so the host's own tools are there, with fresh writable `/var/lib`
//! and `/mnt` and the real `/dev`), and the supervisor booted inside it. Everything the node
//! mounts dies with its namespace; loop devices are detached on drop, even when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::supervisor::SUPERVISOR;
use super::{Ran, BIN};
use base64::Engine;

pub struct Node {
    pub dir: tempfile::TempDir,
    /// A process in the node's mount namespace, which lives as long as it does.
    holder: Child,
    /// The fake host root, as the node's namespace sees it.
    pub root: PathBuf,
    /// `--state-dir` and `--run-dir` of [`Node::boot`]: beside the host root unless a test moves
    /// them.
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    loops: Vec<String>,
}

impl Node {
    pub fn new(name: &str) -> Node {
        let dir = super::scratch_dir(&format!("brt-node-{name}-"));
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
            state_dir: dir.path().join("state"),
            run_dir: dir.path().join("run"),
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
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--mount=/proc/{}/ns/mnt", self.holder.id()))
            .arg("--")
            .arg(program)
            .stdin(Stdio::null());
        cmd
    }

    pub fn output(mut cmd: Command) -> Ran {
        let out = cmd.output().unwrap();
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn sh_ok(&self, script: &str) -> String {
        let mut cmd = self.command("sh");
        cmd.args(["-c", script]);
        let ran = Node::output(cmd);
        assert_eq!(ran.code, 0, "{script}: {}", ran.stderr);
        ran.stdout
    }

    /// A fresh loop device over a file of `mib` MiB: the node's instance-store disk.
    pub fn disk(&mut self, mib: u64) -> String {
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
    pub fn read(&self, path: &Path) -> Vec<u8> {
        let out = self.command("cat").arg(path).output().unwrap();
        assert!(
            out.status.success(),
            "cat {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `bootstrap-supervisor run` on `settings`, inside the node.
    pub fn boot(&self, settings: &str) -> Ran {
        self.boot_with(settings, &[])
    }

    /// [`Node::boot`] with more flags of `run` (`--compatibility bottlerocket`).
    pub fn boot_with(&self, settings: &str, flags: &[&str]) -> Ran {
        std::fs::write(self.path("settings.toml"), settings).unwrap();
        let mut cmd = self.command(SUPERVISOR);
        cmd.arg("run")
            .args(flags)
            .arg("--settings")
            .arg(self.path("settings.toml"))
            .arg("--runtime")
            .arg(BIN)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--run-dir")
            .arg(&self.run_dir)
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
    pub fn written_text(&self) -> String {
        let mut text = String::new();
        for dir in [&self.state_dir, &self.run_dir] {
            for file in files_under(dir) {
                text.push_str(&String::from_utf8_lossy(
                    &std::fs::read(file).unwrap_or_default(),
                ));
            }
        }
        text + &std::fs::read_to_string(self.path("settings.toml")).unwrap()
    }
}

pub fn files_under(dir: &Path) -> Vec<PathBuf> {
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

pub fn script_container(name: &str, script: &str, extra: &str) -> String {
    let user_data = base64::engine::general_purpose::STANDARD.encode(script);
    format!(
        "[settings.bootstrap-containers.{name}]\nmode = \"always\"\nessential = true\nuser-data = \"{user_data}\"\n{extra}\n"
    )
}

pub fn assert_ran(ran: &Ran) {
    assert_eq!(
        ran.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        ran.stdout, ran.stderr
    );
}
