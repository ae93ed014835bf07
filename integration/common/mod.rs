//! Test fixture: a private state root, a fake host root with its mount area, busybox bundles,
//! and the real `bootstrap-runc` binary. Dropping the fixture removes every container and mount
//! it made; `assert_clean` checks that the runtime itself left nothing behind.

pub mod node;
pub mod observed;
pub mod supervisor;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const BIN: &str = env!("CARGO_BIN_EXE_bootstrap-runc");

static NEXT: AtomicUsize = AtomicUsize::new(0);

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub host_root: PathBuf,
    pub mount_area: PathBuf,
    pub policy_file: PathBuf,
    ids: std::sync::Mutex<Vec<String>>,
    prefix: String,
}

#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Fixture {
    pub fn new(name: &str) -> Fixture {
        let dir = scratch_dir(&format!("brt-{name}-"));
        let root = dir.path().join("state");
        let (host_root, mount_area) = fake_host(dir.path());
        Fixture {
            policy_file: dir.path().join("policy.toml"),
            prefix: format!(
                "{name}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ),
            dir,
            root,
            host_root,
            mount_area,
            ids: Default::default(),
        }
    }

    /// A fresh container id, remembered for cleanup.
    pub fn id(&self, suffix: &str) -> String {
        let id = format!("{}-{suffix}", self.prefix);
        self.ids.lock().unwrap().push(id.clone());
        id
    }

    /// A container created from a `sleep 100` bundle and started; returns its id and pid.
    pub fn started(&self, name: &str) -> (String, i32) {
        let bundle = self.bundle(name, &["sleep", "100"]);
        let id = self.id(name);
        self.rt_ok(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
        self.rt_ok(&["start", &id]);
        let pid = self.state(&id)["pid"].as_i64().unwrap() as i32;
        (id, pid)
    }

    /// A busybox bundle running `args`.
    pub fn bundle(&self, name: &str, args: &[&str]) -> PathBuf {
        let bundle = self.dir.path().join("bundles").join(name);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/make-bundle.sh");
        let status = Command::new(script)
            .arg(&bundle)
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "make-bundle.sh failed");
        bundle
    }

    /// `run` of a fresh busybox bundle executing `sh -c script`; the id is remembered.
    pub fn run_sh(&self, name: &str, script: &str) -> Ran {
        let bundle = self.bundle(name, &["sh", "-c", script]);
        let id = self.id(name);
        self.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id])
    }

    /// Edits a bundle's config.json.
    pub fn edit_config(&self, bundle: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
        let path = bundle.join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        edit(&mut config);
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    }

    /// The runtime with this fixture's root, fake host and policy file.
    pub fn command(&self) -> Command {
        self.command_of(Path::new(BIN))
    }

    /// As [`Fixture::command`], with the runtime binary at `binary` (an installed copy).
    pub fn command_of(&self, binary: &Path) -> Command {
        let mut cmd = Command::new(binary);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--host-root")
            .arg(&self.host_root)
            .arg("--host-mount-area")
            .arg(&self.mount_area)
            .env("BOOTSTRAP_RUNC_POLICY", &self.policy_file)
            .stdin(std::process::Stdio::null());
        cmd
    }

    /// Runs the runtime to completion. Output goes through files, not pipes: after `create` the
    /// container holds the runtime's stdio, and a pipe would not reach EOF until it exits.
    pub fn rt(&self, args: &[&str]) -> Ran {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let out = self.dir.path().join(format!("stdout-{n}"));
        let err = self.dir.path().join(format!("stderr-{n}"));
        let status = self
            .command()
            .args(args)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .status()
            .unwrap();
        let read = |path: &Path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let _ = std::fs::remove_file(path);
            text
        };
        Ran {
            code: status.code().unwrap_or(-1),
            stdout: read(&out),
            stderr: read(&err),
        }
    }

    pub fn rt_ok(&self, args: &[&str]) -> Ran {
        let ran = self.rt(args);
        assert_eq!(
            ran.code, 0,
            "bootstrap-runc {args:?} failed: {}",
            ran.stderr
        );
        ran
    }

    /// Runs the runtime, expecting exit code 1 with `wanted` in its error output.
    pub fn rt_err(&self, args: &[&str], wanted: &str) -> Ran {
        self.rt_fails(args, 1, wanted)
    }

    /// Runs the runtime, expecting exit code `code` (255 for a failed `exec`, as runc's) with
    /// `wanted` in its error output.
    pub fn rt_fails(&self, args: &[&str], code: i32, wanted: &str) -> Ran {
        let ran = self.rt(args);
        assert!(
            ran.code == code && ran.stderr.contains(wanted),
            "bootstrap-runc {args:?}: wanted exit {code} and {wanted:?}, got {}: {}",
            ran.code,
            ran.stderr
        );
        ran
    }

    pub fn state(&self, id: &str) -> serde_json::Value {
        serde_json::from_str(&self.rt_ok(&["state", id]).stdout).unwrap()
    }

    /// Asserts the runtime left no state, cgroup, process or mount for this fixture's ids.
    pub fn assert_clean(&self) {
        for id in self.ids.lock().unwrap().iter() {
            for dir in [self.root.join(id), self.root.join(".bootstrap").join(id)] {
                assert!(!dir.exists(), "state left behind: {}", dir.display());
            }
            let cgroups = cgroup_dirs(id);
            assert!(cgroups.is_empty(), "cgroups left behind: {cgroups:?}");
        }
        let mounts = self.unexpected_mounts();
        assert!(mounts.is_empty(), "mounts left behind: {mounts:#?}");
    }

    /// Mounts under the fixture's directory other than those the runtime makes shared mount
    /// points on purpose (the mount area, the shared directories).
    pub fn unexpected_mounts(&self) -> Vec<String> {
        host_mounts_under(self.dir.path())
            .into_iter()
            .filter(|(point, _)| !shared_on_purpose(point, &self.host_root, &self.mount_area))
            .map(|(point, line)| format!("{}: {line}", point.display()))
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for id in self.ids.lock().unwrap().iter() {
            let _ = self.command().args(["delete", "--force", id]).output();
        }
        unmount_all_under(self.dir.path());
    }
}

/// The default shared directories, as the policy names them.
pub const SHARED_DIRS: [&str; 3] = ["var/lib/containerd", "var/lib/docker", "var/lib/kubelet"];

/// Whether `point` is a mount the runtime leaves on the host on purpose: the mount area, or a
/// default shared directory, made a shared mount point of its own on a private host root.
pub fn shared_on_purpose(point: &Path, host_root: &Path, mount_area: &Path) -> bool {
    point == mount_area || SHARED_DIRS.iter().any(|dir| point == host_root.join(dir))
}

/// `hack/install.sh PREFIX` with the binaries under test (BIN_DIR): the installed layout,
/// units included.
pub fn install(prefix: &Path) {
    let status = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/install.sh"))
        .arg(prefix)
        .env("BIN_DIR", Path::new(BIN).parent().unwrap())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(
        status.success(),
        "hack/install.sh {} failed",
        prefix.display()
    );
}

/// A running bootstrap-runc process as a CVE-2019-5736 attack would find it.
#[derive(Debug)]
pub struct RuntimeSeen {
    /// The error opening its `/proc/<pid>/exe` for writing gave (`None`: it opened).
    pub exe_write_error: Option<i32>,
    /// Its environment has the re-exec's mark: it re-executed itself from a protected copy.
    pub re_executed: bool,
    /// Its `comm`, newline included.
    pub comm: String,
}

impl RuntimeSeen {
    pub fn of(pid: u32) -> RuntimeSeen {
        let writable = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/{pid}/exe"));
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        RuntimeSeen {
            exe_write_error: writable.err().and_then(|e| e.raw_os_error()),
            re_executed: environ
                .split(|b| *b == 0)
                .any(|var| var.starts_with(b"_BOOTSTRAP_RUNC_REEXECUTED=")),
            comm: std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default(),
        }
    }

    /// Its exe cannot be opened for writing (EROFS from a read-only overlay, EPERM from a
    /// sealed memfd).
    pub fn assert_exe_read_only(&self, who: &str) {
        let error = self.exe_write_error;
        assert!(
            matches!(error, Some(libc::EROFS) | Some(libc::EPERM)),
            "{who}: its exe opened for writing gave {error:?}"
        );
    }
}

/// A temporary directory for one test (integration tests need root).
pub fn scratch_dir(prefix: &str) -> tempfile::TempDir {
    assert!(
        nix::unistd::geteuid().is_root(),
        "integration tests run as root"
    );
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

/// A fake host root under `dir` with its mount area; returns (host root, mount area).
pub fn fake_host(dir: &Path) -> (PathBuf, PathBuf) {
    let host_root = dir.join("host");
    let mount_area = host_root.join("mnt");
    std::fs::create_dir_all(&mount_area).unwrap();
    std::fs::create_dir_all(host_root.join("etc")).unwrap();
    std::fs::write(host_root.join("etc/hostname"), "fake-host\n").unwrap();
    (host_root, mount_area)
}

/// Unmounts every host mount at or under `dir`, deepest first.
pub fn unmount_all_under(dir: &Path) {
    let mut points: Vec<PathBuf> = host_mounts_under(dir).into_iter().map(|(p, _)| p).collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for point in points {
        let _ = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The mount table of process `pid` (`self` for this one), read lossily: a mount point that
/// is not UTF-8 (a container can make one) must not fail every test that reads the table.
pub fn mountinfo(pid: &str) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/mountinfo")).unwrap()).into_owned()
}

/// (mount point, mountinfo line) of every host mount at or under `dir`.
pub fn host_mounts_under(dir: &Path) -> Vec<(PathBuf, String)> {
    mountinfo("self")
        .lines()
        .filter_map(|line| {
            let point = PathBuf::from(line.split(' ').nth(4)?);
            point.starts_with(dir).then(|| (point, line.to_string()))
        })
        .collect()
}

/// Every cgroup directory (any hierarchy) whose name mentions `id`.
pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return found;
    };
    for hierarchy in hierarchies.flatten() {
        let mut stack = vec![hierarchy.path()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    if entry.file_name().to_string_lossy().contains(id) {
                        found.push(entry.path());
                    }
                    stack.push(entry.path());
                }
            }
        }
    }
    found
}

/// Whether `pid` is alive (and not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// Builds a busybox OCI image layout (tag `latest`) at `dir/image` with umoci, running `args`
/// by default; returns the layout's path.
pub fn busybox_layout(dir: &Path, args: &[&str]) -> PathBuf {
    let config: Vec<(&str, &str)> = args.iter().map(|arg| ("--config.cmd", *arg)).collect();
    image_layout(dir, |_| {}, &config)
}

/// Builds a busybox OCI image layout (tag `latest`) at `dir/image` with umoci: `edit` may change
/// its root filesystem first, then `config` is given to `umoci config` as flag and value pairs
/// (`("--config.user", "nobody")`, `("--config.cmd", "sh")`, ...). Returns the layout's path.
pub fn image_layout(dir: &Path, edit: impl FnOnce(&Path), config: &[(&str, &str)]) -> PathBuf {
    let layout = dir.join("image");
    let unpacked = dir.join("image-unpacked");
    let bundle = dir.join("image-bundle");
    let r = format!("{}:latest", layout.display());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/make-bundle.sh");
    let status = Command::new(script)
        .arg(&bundle)
        .arg("true")
        .status()
        .unwrap();
    assert!(status.success(), "make-bundle.sh failed");
    for step in [
        vec!["init", "--layout", layout.to_str().unwrap()],
        vec!["new", "--image", &r],
        vec!["unpack", "--image", &r, unpacked.to_str().unwrap()],
    ] {
        umoci(&step);
    }
    let copy = Command::new("cp")
        .arg("-a")
        .arg(bundle.join("rootfs/."))
        .arg(unpacked.join("rootfs/"))
        .status()
        .unwrap();
    assert!(copy.success());
    edit(&unpacked.join("rootfs"));
    umoci(&["repack", "--image", &r, unpacked.to_str().unwrap()]);
    image_tag(&layout, "latest", config);
    let _ = std::fs::remove_dir_all(&unpacked);
    let _ = std::fs::remove_dir_all(&bundle);
    layout
}

/// Sets `config` (flag and value pairs of `umoci config`) on the layout's `latest`, as `tag`
/// (`latest` itself when `tag` is `latest`). One rootfs, many configs: a tag each.
pub fn image_tag(layout: &Path, tag: &str, config: &[(&str, &str)]) {
    let image = format!("{}:latest", layout.display());
    let mut args = vec![
        "config",
        "--image",
        &image,
        "--tag",
        tag,
        "--os",
        "linux",
        "--architecture",
        "amd64",
    ];
    for (flag, value) in config {
        args.push(flag);
        args.push(value);
    }
    umoci(&args);
}

fn umoci(args: &[&str]) {
    let out = Command::new("umoci").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "umoci {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How a command run under [`kill_at_syscall`] ended.
pub struct Traced {
    /// strace's line for the command's own process, e.g. "+++ killed by SIGKILL +++".
    pub main_exit: String,
    /// How many of the traced processes (the command and the processes it cloned) the injected
    /// SIGKILL ended.
    pub killed: usize,
    /// What the command wrote to stderr.
    pub stderr: String,
    /// strace's output.
    pub trace: String,
}

/// Runs `cmd` under strace, which SIGKILLs it at its `when`-th call of one of `syscalls`.
/// With `follow_forks`, every process it clones is traced and killed at its own `when`-th call
/// (strace counts per process), and what survives goes on as it would: this returns once the
/// command's own process has ended (strace would go on waiting for a container init that waits
/// for `start`). Without, only the command's main thread is, and once it has ended its whole
/// process group is SIGKILLed, as systemd stops a unit.
pub fn kill_at_syscall(cmd: &Command, syscalls: &str, when: u32, follow_forks: bool) -> Traced {
    let trace = tempfile::NamedTempFile::new().unwrap();
    let mut strace = Command::new("strace");
    // execve is traced so that without -P the trace's first line is the command's own process.
    // (No --seccomp-bpf: strace 6.1 then skips the injections.)
    if follow_forks {
        strace.arg("-f");
    }
    strace
        .args(["-q", "-o"])
        .arg(trace.path())
        .arg(format!("-etrace=execve,{syscalls}"))
        .arg(format!("-einject={syscalls}:signal=KILL:when={when}"));
    strace.arg("--").arg(cmd.get_program()).args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => strace.env(key, value),
            None => strace.env_remove(key),
        };
    }
    // Files, not pipes: a container init left behind holds the command's stdio.
    let stderr = tempfile::NamedTempFile::new().unwrap();
    let mut strace = strace
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(tempfile::tempfile().unwrap())
        .stderr(stderr.reopen().unwrap())
        .spawn()
        .expect("strace (hack/install-deps.sh installs it)");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let exec_line = format!("execve(\"{}\"", cmd.get_program().to_string_lossy());
    let mut main: Option<String> = None;
    let main_exit = loop {
        // Whether strace has ended, before reading: its last lines are in the file then.
        let ended = strace.try_wait().unwrap().is_some();
        let text = std::fs::read_to_string(trace.path()).unwrap_or_default();
        // The command's own process is the one that execs the command's program first.
        if main.is_none() {
            main = text
                .lines()
                .find(|line| line.contains(&exec_line))
                .and_then(|line| line.split_whitespace().next())
                .map(str::to_string);
        }
        let main = main.as_deref();
        // strace pads pids: "1234  +++ exited with 0 +++".
        let exit = text.lines().find_map(|line| {
            // Without -f strace prints no pids.
            if !follow_forks {
                return line.starts_with("+++ ").then(|| line.to_string());
            }
            let (pid, rest) = line.split_once(' ')?;
            let rest = rest.trim_start();
            (Some(pid) == main && rest.starts_with("+++ ")).then(|| rest.to_string())
        });
        if let Some(exit) = exit {
            break exit;
        }
        if ended {
            break "strace ended".to_string();
        }
        if std::time::Instant::now() > deadline {
            let _ = strace.kill();
            let _ = strace.wait();
            panic!("{cmd:?} hung after a SIGKILL at {syscalls} #{when}:\n{text}");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    if !follow_forks {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(strace.id() as i32),
            nix::sys::signal::SIGKILL,
        );
    }
    let _ = strace.kill();
    let _ = strace.wait();
    let text = std::fs::read_to_string(trace.path()).unwrap_or_default();
    Traced {
        main_exit,
        killed: text.matches("+++ killed by SIGKILL").count(),
        stderr: std::fs::read_to_string(stderr.path()).unwrap_or_default(),
        trace: text,
    }
}

/// Processes (other than this one) whose command line mentions `marker`.
pub fn processes_mentioning(marker: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if pid != me && alive(pid) && cmdline.contains(marker) {
            found.push((pid, cmdline));
        }
    }
    found
}
