//! bootstrap-runc as containerd's runtime, through containerd's own runc shim v2: a private
//! containerd (own root, state, socket, and a private mount namespace with its own /run, so the
//! host's /run/containerd is never touched), a busybox image built with umoci and imported
//! without a registry, and `ctr` run inside that namespace. The three registration forms of the
//! README are each exercised: `--runc-binary`, the `containerd-shim-bootstrap-v1` wrapper, and
//! the CRI runtime-class snippet.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::observed::{Observed, REPORT};
use common::supervisor::Boot;
use common::{cgroup_dirs, host_mounts_under, Ran};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const IMAGE: &str = "local/busybox:latest";

struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
    namespace: String,
    prefix: PathBuf,
    mount_area: PathBuf,
    host_root: PathBuf,
    ids: Vec<String>,
}

impl Containerd {
    /// Starts a private containerd; `cri` turns the CRI plugin on with our runtime-class snippet.
    fn start(name: &str, cri: bool) -> Containerd {
        let dir = common::scratch_dir(&format!("brt-ctd-{name}-"));
        let d = dir.path();
        let prefix = d.join("prefix");
        let status = Command::new(Path::new(REPO).join("hack/install.sh"))
            .arg(&prefix)
            .env("BIN_DIR", Path::new(common::BIN).parent().unwrap())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "hack/install.sh failed");

        let (host_root, mount_area) = common::fake_host(d);
        let policy = d.join("policy.toml");
        std::fs::write(
            &policy,
            format!(
                "host-root = {:?}\nhost-mount-area = {:?}\n",
                host_root, mount_area
            ),
        )
        .unwrap();

        let config = d.join("config.toml");
        std::fs::write(&config, containerd_config(d, &prefix, cri)).unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let path = format!(
            "{}:{}",
            prefix.join("bin").display(),
            std::env::var("PATH").unwrap()
        );
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs tmpfs /run && exec containerd --config {}",
                config.display()
            ))
            .env("PATH", path)
            .env("BOOTSTRAP_RUNC_POLICY", &policy)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let ctd = Containerd {
            namespace: format!("brt{}{name}", std::process::id()),
            dir,
            child,
            prefix,
            mount_area,
            host_root,
            ids: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while ctd.ctr(&["version"]).code != 0 {
            assert!(
                Instant::now() < deadline,
                "containerd did not start: {}",
                ctd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        ctd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    fn id(&mut self, name: &str) -> String {
        let id = format!("{}-{name}", self.namespace);
        self.ids.push(id.clone());
        id
    }

    /// `ctr` in containerd's mount namespace (its FIFOs live under the private /run).
    fn ctr_command(&self) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--mount=/proc/{}/ns/mnt", self.child.id()))
            .arg("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", &self.namespace])
            .stdin(Stdio::null());
        cmd
    }

    fn ctr(&self, args: &[&str]) -> Ran {
        run_to_files(self.ctr_command().args(args), self.dir.path())
    }

    fn ctr_ok(&self, args: &[&str]) -> Ran {
        let ran = self.ctr(args);
        assert_eq!(ran.code, 0, "ctr {args:?}: {}{}", ran.stdout, ran.stderr);
        ran
    }

    /// Builds a busybox OCI image with umoci and imports it (no registry).
    fn import_busybox(&self) {
        let layout = common::busybox_layout(self.dir.path(), &["sh"]);
        self.import(&layout, "local/busybox");
    }

    /// Imports every tag of the OCI layout at `layout` as `<base>:<tag>` (no registry).
    fn import(&self, layout: &Path, base: &str) {
        let tar = self.dir.path().join("import.tar");
        sh(&format!(
            "tar -C {} -cf {} .",
            layout.display(),
            tar.display()
        ));
        self.ctr_ok(&[
            "images",
            "import",
            "--base-name",
            base,
            tar.to_str().unwrap(),
        ]);
    }

    /// Pids of processes in containerd's mount namespace other than containerd (its shims).
    fn processes_in_namespace(&self) -> Vec<i32> {
        let ours = std::fs::read_link(format!("/proc/{}/ns/mnt", self.child.id())).ok();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| *pid != self.child.id() as i32)
            .filter(|pid| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok() == ours)
            .collect()
    }

    /// Nothing left: no task, container, shim, mount or cgroup of ours.
    fn assert_clean(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.processes_in_namespace().is_empty() {
            assert!(
                Instant::now() < deadline,
                "shims left: {:?}",
                self.processes_in_namespace()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let tasks = self.ctr_ok(&["task", "ls", "-q"]).stdout;
        assert!(tasks.trim().is_empty(), "tasks left: {tasks}");
        let containers = self.ctr_ok(&["containers", "ls", "-q"]).stdout;
        assert!(
            containers.trim().is_empty(),
            "containers left: {containers}"
        );
        for id in &self.ids {
            let cgroups = cgroup_dirs(id);
            assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
        }
        let mounts: Vec<_> = host_mounts_under(&self.host_root)
            .into_iter()
            .filter(|(point, _)| {
                !common::shared_on_purpose(point, &self.host_root, &self.mount_area)
            })
            .collect();
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let namespace_processes = self.processes_in_namespace();
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in namespace_processes {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
        for id in &self.ids {
            for dir in cgroup_dirs(id) {
                let _ = std::fs::remove_dir(dir);
            }
        }
        for dir in cgroup_dirs(&self.namespace) {
            let _ = std::fs::remove_dir(dir);
        }
        common::unmount_all_under(self.dir.path());
    }
}

/// containerd's default config with every path inside `dir`; CRI off unless asked, and then
/// with the README's runtime-class snippet appended (pointing at our install prefix).
fn containerd_config(dir: &Path, prefix: &Path, cri: bool) -> String {
    let out = Command::new("containerd")
        .args(["config", "default"])
        .output()
        .unwrap();
    let d = dir.display();
    let mut config = String::from_utf8(out.stdout)
        .unwrap()
        .replace(
            "root = \"/var/lib/containerd\"",
            &format!("root = \"{d}/root\""),
        )
        .replace(
            "state = \"/run/containerd\"",
            &format!("state = \"{d}/state\""),
        )
        .replace("temp = \"\"", &format!("temp = \"{d}/tmp\""))
        .replace("path = \"/opt/containerd\"", &format!("path = \"{d}/opt\""))
        .replace(
            "address = \"/run/containerd/containerd.sock\"",
            &format!("address = \"{d}/containerd.sock\""),
        );
    // [ttrpc] is the last table with an empty address; [debug] and [metrics] keep theirs.
    let ttrpc = config
        .find("[ttrpc]")
        .expect("[ttrpc] in the default config");
    let tail = config[ttrpc..].replacen(
        "address = \"\"",
        &format!("address = \"{d}/containerd.sock.ttrpc\""),
        1,
    );
    config.truncate(ttrpc);
    config.push_str(&tail);
    if cri {
        let snippet =
            std::fs::read_to_string(Path::new(REPO).join("packaging/containerd/config.toml"))
                .unwrap();
        let binary = prefix.join("bin/bootstrap-runc");
        config.push('\n');
        config
            .push_str(&snippet.replace("/usr/local/bin/bootstrap-runc", binary.to_str().unwrap()));
    } else {
        config = config.replace(
            "disabled_plugins = []",
            "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]",
        );
    }
    config
}

fn sh(script: &str) {
    let status = Command::new("sh").args(["-c", script]).status().unwrap();
    assert!(status.success(), "failed: {script}");
}

/// Runs to completion with output through files (a container may hold a pipe open).
fn run_to_files(cmd: &mut Command, dir: &Path) -> Ran {
    let out = tempfile::NamedTempFile::new_in(dir).unwrap();
    let err = tempfile::NamedTempFile::new_in(dir).unwrap();
    let status = cmd
        .stdout(out.reopen().unwrap())
        .stderr(err.reopen().unwrap())
        .status()
        .unwrap();
    Ran {
        code: status.code().unwrap_or(-1),
        stdout: std::fs::read_to_string(out.path()).unwrap(),
        stderr: std::fs::read_to_string(err.path()).unwrap(),
    }
}

fn cap_eff(output: &str) -> u64 {
    let line = output
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .unwrap_or_else(|| panic!("no CapEff in {output}"));
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

const CAP_SYS_ADMIN_BIT: u64 = 1 << 21;

#[test]
fn ctr_with_runc_binary_runs_bootstrap_containers() {
    let mut ctd = Containerd::start("runcbin", false);
    ctd.import_busybox();
    let binary = ctd.prefix.join("bin/bootstrap-runc");
    let rb = binary.to_str().unwrap().to_string();

    // Output, exit code and the policy as seen from inside.
    let id = ctd.id("policy");
    let script =
        "echo hello; grep CapEff /proc/self/status; cat /.bottlerocket/rootfs/etc/hostname; \
        touch /.bottlerocket/rootfs/etc/x 2>/dev/null && echo HOST-ROOT-WRITABLE; \
        echo via-containerd > /.bottlerocket/rootfs/mnt/file; \
        grep ' /.bottlerocket/rootfs/mnt ' /proc/self/mountinfo | tail -n1; exit 5";
    let ran = ctd.ctr(&[
        "run",
        "--rm",
        "--runc-binary",
        &rb,
        IMAGE,
        &id,
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(ran.code, 5, "{}{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.starts_with("hello\n"), "{}", ran.stdout);
    assert!(cap_eff(&ran.stdout) & CAP_SYS_ADMIN_BIT != 0);
    assert!(ran.stdout.contains("fake-host"));
    assert!(!ran.stdout.contains("HOST-ROOT-WRITABLE"));
    assert!(
        ran.stdout.contains(" shared:"),
        "mount area not rshared: {}",
        ran.stdout
    );
    assert_eq!(
        std::fs::read_to_string(ctd.mount_area.join("file")).unwrap(),
        "via-containerd\n"
    );

    // A terminal (ctr run -t: --console-socket), given to ctr by script(1).
    let id = ctd.id("tty");
    let cmd = format!(
        "nsenter --mount=/proc/{}/ns/mnt ctr --address {} --namespace {} run --rm -t --runc-binary {rb} {IMAGE} {id} sh -c 'tty; exit 3'",
        ctd.child.id(),
        ctd.socket().display(),
        ctd.namespace
    );
    let ran = run_to_files(
        Command::new("script").args(["-qec", &cmd, "/dev/null"]),
        ctd.dir.path(),
    );
    assert_eq!(ran.code, 3, "{}{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains("/dev/pts/"), "{}", ran.stdout);

    // A refused create shows our reason, not "exit status 1: unknown".
    let id = ctd.id("refused");
    let ran = ctd.ctr(&[
        "run",
        "--rm",
        "--privileged",
        "--runc-binary",
        &rb,
        IMAGE,
        &id,
        "true",
    ]);
    assert_ne!(ran.code, 0);
    assert!(
        ran.stderr
            .contains("refuses capabilities outside its ceiling")
            && ran.stderr.contains("CAP_SYS_PTRACE"),
        "{}",
        ran.stderr
    );

    // A long-running task: ps, exec, kill.
    let id = ctd.id("task");
    ctd.ctr_ok(&[
        "run",
        "-d",
        "--runc-binary",
        &rb,
        IMAGE,
        &id,
        "sleep",
        "100",
    ]);
    let ps = ctd.ctr_ok(&["task", "ps", &id]).stdout;
    let init_pid: i32 = ps
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(common::alive(init_pid));
    let ran = ctd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        &id,
        "sh",
        "-c",
        "grep CapEff /proc/self/status; exit 4",
    ]);
    assert_eq!(ran.code, 4, "{}{}", ran.stdout, ran.stderr);
    assert!(cap_eff(&ran.stdout) & CAP_SYS_ADMIN_BIT != 0);
    let ran = ctd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e2",
        &id,
        "sh",
        "-c",
        "echo in-exec",
    ]);
    assert_eq!(ran.stdout, "in-exec\n");
    ctd.ctr_ok(&["task", "kill", "--signal", "KILL", &id]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ctd.ctr_ok(&["task", "ls"]).stdout.contains("STOPPED") {
        assert!(Instant::now() < deadline, "task did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    // kill --all of the stopped task (what the shim sends) must succeed too
    ctd.ctr_ok(&["task", "kill", "--all", "--signal", "KILL", &id]);
    ctd.ctr_ok(&["task", "delete", &id]);
    ctd.ctr_ok(&["containers", "rm", &id]);
    ctd.assert_clean();
}

#[test]
fn ctr_with_the_shim_wrapper() {
    let mut ctd = Containerd::start("shim", false);
    ctd.import_busybox();
    let id = ctd.id("wrapped");
    let ran = ctd.ctr(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.bootstrap.v1",
        IMAGE,
        &id,
        "sh",
        "-c",
        "grep CapEff /proc/self/status; grep -c bottlerocket /proc/self/mountinfo",
    ]);
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    assert!(
        cap_eff(&ran.stdout) & CAP_SYS_ADMIN_BIT != 0,
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout.lines().last().unwrap().parse::<u32>().unwrap() >= 3,
        "{}",
        ran.stdout
    );
    ctd.assert_clean();
}

#[test]
fn cri_runtime_class_snippet_registers_our_binary() {
    let ctd = Containerd::start("cri", true);
    let plugins = ctd.ctr_ok(&["plugins", "ls"]).stdout;
    let cri = plugins
        .lines()
        .find(|l| l.contains("io.containerd.grpc.v1") && l.contains(" cri "))
        .unwrap();
    assert!(
        cri.trim_end().ends_with("ok"),
        "CRI plugin not ok: {cri}\n{}",
        ctd.log()
    );
    let binary = ctd.prefix.join("bin/bootstrap-runc");
    let log = ctd.log();
    assert!(
        log.contains("bootstrap:{Type:io.containerd.runc.v2"),
        "{log}"
    );
    assert!(
        log.contains(&format!("BinaryName:{}", binary.display())),
        "{log}"
    );
    let dump = Command::new("containerd")
        .args([
            "--config",
            ctd.dir.path().join("config.toml").to_str().unwrap(),
            "config",
            "dump",
        ])
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout);
    let section = dump
        .split("runtimes.bootstrap.options]")
        .nth(1)
        .expect("bootstrap runtime in config dump");
    assert!(
        section
            .trim_start()
            .starts_with(&format!("BinaryName = \"{}\"", binary.display())),
        "{section}"
    );
}

/// One image config run two ways — by the supervisor (through bootstrap-runc) and by
/// `ctr run` with containerd's own runc — and what each process got, compared: args, uid, gid,
/// groups, cwd, env. (`ctr run` reads the image config with containerd's `WithImageConfig`;
/// CRI, which Bottlerocket's `command`-less containers follow, differs on `Entrypoint [""]`.)
/// Run with `--nocapture` to see the table.
#[test]
fn an_image_config_runs_as_under_ctr_and_runc() {
    let mut ctd = Containerd::start("imgcfg", false);
    let b = Boot::new("ctd-imgcfg");
    let layout = common::image_layout(
        ctd.dir.path(),
        |rootfs| {
            std::fs::write(
                rootfs.join("etc/passwd"),
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
            )
            .unwrap();
            std::fs::write(
                rootfs.join("etc/group"),
                "root:x:0:\nadm:x:4:nobody\nstaff:x:50:root,nobody\nnogroup:x:65534:\n",
            )
            .unwrap();
        },
        &[
            ("--config.cmd", "sh"),
            ("--config.cmd", "-c"),
            ("--config.cmd", REPORT),
            ("--config.user", "nobody"),
            ("--config.workingdir", "/work/here"),
            ("--config.env", "PATH=/bin:/usr/bin"),
            ("--config.env", "A=1"),
            ("--config.env", "HTTPS_PROXY=http://image:1"),
        ],
    );
    // ctr runs Entrypoint [""] as an empty executable, and an image with an Env but no PATH
    // with no PATH at all: each in a tag of its own, compared apart from the rest.
    common::image_tag(&layout, "cleared", &[("--config.entrypoint", "")]);
    common::image_tag(
        &layout,
        "no-path",
        &[("--clear", "config.env"), ("--config.env", "A=1")],
    );
    common::image_tag(&layout, "mallory", &[("--config.user", "mallory")]);
    ctd.import(&layout, "local/imgcfg");

    let cleared_id = ctd.id("cleared");
    let plain_id = ctd.id("plain");
    let no_path_id = ctd.id("no-path");
    let mallory_id = ctd.id("mallory");
    let ctr_run = |tag: &str, id: &str| {
        ctd.ctr(&[
            "run",
            "--rm",
            "--env",
            "HTTPS_PROXY=http://host:3128",
            &format!("local/imgcfg:{tag}"),
            id,
        ])
    };
    let ctr_cleared = ctr_run("cleared", &cleared_id);
    let ctr_plain = ctr_run("latest", &plain_id);
    let ctr_no_path = ctr_run("no-path", &no_path_id);
    let ctr_mallory = ctr_run("mallory", &mallory_id);
    assert_eq!(
        ctr_plain.code, 0,
        "{}{}",
        ctr_plain.stdout, ctr_plain.stderr
    );
    let theirs = Observed::parse(&ctr_plain.stdout, "ctr run");

    let source = |tag: &str| format!("oci-layout:{}:{tag}", layout.display());
    b.write_settings(&b.always(&[
        ("mallory", &source("mallory")),
        ("no-path", &source("no-path")),
        ("cleared", &source("cleared")),
        ("plain", &source("latest")),
    ]));
    let ran = b
        .command()
        .env("HTTPS_PROXY", "http://host:3128")
        .output()
        .unwrap();
    let log = |short: &str| b.container_log(short);
    assert_eq!(b.outcome("plain")["status"], "succeeded", "{ran:?}");
    assert_eq!(b.outcome("cleared")["status"], "succeeded", "{ran:?}");
    let ours = Observed::parse(&log("plain"), "supervisor");
    let ours_cleared = Observed::parse(&log("cleared"), "supervisor, Entrypoint [\"\"]");
    assert_eq!(b.outcome("no-path")["status"], "succeeded", "{ran:?}");
    let ours_no_path = Observed::parse(&log("no-path"), "supervisor, no PATH");

    println!("| | supervisor + bootstrap-runc | ctr run + runc |");
    println!("|---|---|---|");
    println!(
        "| Entrypoint [\"\"] | runs Cmd: `{}` | exit {}: {} |",
        ours_cleared.args,
        ctr_cleared.code,
        ctr_cleared.stderr.trim()
    );
    println!(
        "| Env without PATH | {:?} | exit {}: {} |",
        ours_no_path.named("PATH"),
        ctr_no_path.code,
        ctr_no_path.stderr.trim()
    );
    println!(
        "| User mallory (not in passwd) | {}: {} | exit {}: {} |",
        b.outcome("mallory")["status"],
        b.outcome("mallory")["error"],
        ctr_mallory.code,
        ctr_mallory.stderr.trim()
    );
    println!("| args | `{}` | `{}` |", ours.args, theirs.args);
    println!(
        "| uid gid | {} {} | {} {} |",
        ours.uid, ours.gid, theirs.uid, theirs.gid
    );
    println!("| groups | {:?} | {:?} |", ours.groups, theirs.groups);
    println!("| cwd | {} | {} |", ours.cwd, theirs.cwd);
    println!("| env | {:?} | {:?} |", ours.env, theirs.env);

    assert_ne!(
        ctr_cleared.code, 0,
        "ctr runs Entrypoint [\"\"] as an executable"
    );
    assert_eq!(ours_cleared.args, ours.args);
    assert_eq!(
        (ours.uid, ours.gid, &ours.groups, &ours.cwd),
        (theirs.uid, theirs.gid, &theirs.groups, &theirs.cwd)
    );
    for name in ["PATH", "A", "HTTPS_PROXY"] {
        assert_eq!(ours.named(name), theirs.named(name), "{name}");
    }
    ctd.assert_clean();
    b.assert_clean();
}
