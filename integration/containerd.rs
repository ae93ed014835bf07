//! bootstrap-runc as containerd's runtime, through containerd's own runc shim v2: a private
//! containerd (own root, state, socket, and a private mount namespace with its own /run, so the
//! host's /run/containerd is never touched), a busybox image built with umoci and imported without
//! a registry, and `ctr` run inside that namespace. The three registration forms of
//! docs/containerd.md are each exercised: `--runc-binary`, the `containerd-shim-bootstrap-v1`
//! wrapper, and the CRI runtime-class snippet, the last also with a real pod driven over
//! containerd's CRI socket as kubelet drives it (`k8s-cri`'s runtime.v1 client).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::observed::{Observed, REPORT};
use crate::common::supervisor::Boot;
use crate::common::{cgroup_dirs, host_mounts_under, Ran};
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const IMAGE: &str = "local/busybox:latest";
/// The containerd namespace CRI keeps its pods, containers and images in.
const CRI_NAMESPACE: &str = "k8s.io";
/// A name CRI takes as it is (a registry host, `localhost`, and no `docker.io/` prepended).
const CRI_IMAGE_BASE: &str = "localhost/bootstrap-runc-test/busybox";
const CRI_IMAGE: &str = "localhost/bootstrap-runc-test/busybox:latest";
const SANDBOX_IMAGE: &str = "localhost/bootstrap-runc-test/busybox:pause";

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
        common::install(&prefix);

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

    /// Counts `id` (one containerd chose, as CRI's) among the test's containers: its cgroups are
    /// checked by `assert_clean` and removed on drop.
    fn track(&mut self, id: &str) {
        self.ids.push(id.to_string());
    }

    /// `ctr` on containerd namespace `namespace`, in containerd's mount namespace (its FIFOs
    /// live under the private /run).
    fn ctr_command(&self, namespace: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--mount=/proc/{}/ns/mnt", self.child.id()))
            .arg("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", namespace])
            .stdin(Stdio::null());
        cmd
    }

    /// `ctr` on the test's own containerd namespace.
    fn ctr(&self, args: &[&str]) -> Ran {
        self.ctr_in(&self.namespace, args)
    }

    fn ctr_in(&self, namespace: &str, args: &[&str]) -> Ran {
        run_to_files(self.ctr_command(namespace).args(args), self.dir.path())
    }

    fn ctr_ok(&self, args: &[&str]) -> Ran {
        self.ctr_ok_in(&self.namespace, args)
    }

    fn ctr_ok_in(&self, namespace: &str, args: &[&str]) -> Ran {
        let ran = self.ctr_in(namespace, args);
        assert_eq!(
            ran.code, 0,
            "ctr -n {namespace} {args:?}: {}{}",
            ran.stdout, ran.stderr
        );
        ran
    }

    /// Builds a busybox OCI image with umoci and imports it (no registry).
    fn import_busybox(&self) {
        let layout = common::busybox_layout(self.dir.path(), &["sh"]);
        self.import(&layout, "local/busybox");
    }

    /// Imports every tag of the OCI layout at `layout` as `<base>:<tag>` (no registry).
    fn import(&self, layout: &Path, base: &str) {
        self.import_in(&self.namespace, layout, base);
    }

    /// `import` into containerd namespace `namespace` (CRI's is `k8s.io`).
    fn import_in(&self, namespace: &str, layout: &Path, base: &str) {
        let tar = self.dir.path().join("import.tar");
        sh(&format!(
            "tar -C {} -cf {} .",
            layout.display(),
            tar.display()
        ));
        self.ctr_ok_in(
            namespace,
            &[
                "images",
                "import",
                "--base-name",
                base,
                tar.to_str().unwrap(),
            ],
        );
    }

    /// CRI's images, in its namespace: a busybox image (`CRI_IMAGE`) and, as a tag of it whose
    /// Cmd sleeps until killed, the pod sandbox's "pause" image (`SANDBOX_IMAGE`, set as
    /// `sandbox_image` in the config). CRI then finds both locally: nothing is pulled. CRI runs
    /// the sandbox with the image's Env alone (no default PATH, unlike a pod's containers), and
    /// libcontainer refuses a process without PATH even for an absolute path: the pause tag
    /// sets one (docker gives an image one by default).
    fn import_cri_images(&self) {
        let layout = common::busybox_layout(self.dir.path(), &["sh"]);
        common::image_tag(
            &layout,
            "pause",
            &[
                ("--clear", "config.cmd"),
                ("--config.cmd", "/bin/sleep"),
                ("--config.cmd", "2147483647"),
                ("--config.env", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"),
            ],
        );
        self.import_in(CRI_NAMESPACE, &layout, CRI_IMAGE_BASE);
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
        // every containerd namespace: the test's own and, with CRI, k8s.io
        for namespace in self.ctr_ok(&["namespaces", "ls", "-q"]).stdout.lines() {
            let tasks = self.ctr_ok_in(namespace, &["task", "ls", "-q"]).stdout;
            assert!(
                tasks.trim().is_empty(),
                "tasks left in {namespace}: {tasks}"
            );
            let containers = self
                .ctr_ok_in(namespace, &["containers", "ls", "-q"])
                .stdout;
            assert!(
                containers.trim().is_empty(),
                "containers left in {namespace}: {containers}"
            );
        }
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
        // a container whose shim was killed above lives on (it is no child of containerd and
        // not in its mount namespace): its cgroup names its processes
        for id in &self.ids {
            for dir in cgroup_dirs(id) {
                kill_cgroup_processes(&dir);
                let _ = std::fs::remove_dir(dir);
            }
        }
        for dir in cgroup_dirs(&self.namespace) {
            let _ = std::fs::remove_dir(dir);
        }
        common::unmount_all_under(self.dir.path());
    }
}

/// Whether this process, and so the containerd it starts, may lower an oom_score_adj.
fn has_cap_sys_resource() -> bool {
    const CAP_SYS_RESOURCE_BIT: u64 = 1 << 24;
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    cap_eff(&status) & CAP_SYS_RESOURCE_BIT != 0
}

/// SIGKILLs every process in the cgroup directory `dir` and waits (at most 5 s) until it is
/// empty, so that it can be removed.
fn kill_cgroup_processes(dir: &Path) {
    let procs = || {
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|pid| pid.parse::<i32>().ok())
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !procs().is_empty() && Instant::now() < deadline {
        for pid in procs() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// containerd's default config with every path inside `dir`; CRI off unless asked, and then with
/// docs/containerd.md's runtime-class snippet appended (pointing at our install prefix), our local
/// pause image as the sandbox image, and CNI's directories in `dir` (none is configured: pods use
/// the host's network).
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
        config = config
            .replace(
                "sandbox_image = \"registry.k8s.io/pause:3.6\"",
                &format!("sandbox_image = \"{SANDBOX_IMAGE}\""),
            )
            .replace(
                "bin_dir = \"/opt/cni/bin\"",
                &format!("bin_dir = \"{d}/cni/bin\""),
            )
            .replace(
                "conf_dir = \"/etc/cni/net.d\"",
                &format!("conf_dir = \"{d}/cni/net.d\""),
            );
        if !has_cap_sys_resource() {
            // CRI gives a sandbox oomScoreAdj -998, and lowering it takes CAP_SYS_RESOURCE
            // (runc and libcontainer fail the create without it): clamp to containerd's own
            config = config.replace(
                "restrict_oom_score_adj = false",
                "restrict_oom_score_adj = true",
            );
        }
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
    // The container's `tty` is read from the mount area: what a short-lived
    // process writes to its console can be lost between containerd's shim and
    // ctr (the same race as cri-o#8483), which is not the runtime's to fix.
    let id = ctd.id("tty");
    let cmd = format!(
        "nsenter --mount=/proc/{}/ns/mnt ctr --address {} --namespace {} run --rm -t --runc-binary {rb} {IMAGE} {id} sh -c 'tty > /.bottlerocket/rootfs/mnt/tty; exit 3'",
        ctd.child.id(),
        ctd.socket().display(),
        ctd.namespace
    );
    let ran = run_to_files(
        Command::new("script").args(["-qec", &cmd, "/dev/null"]),
        ctd.dir.path(),
    );
    assert_eq!(ran.code, 3, "{}{}", ran.stdout, ran.stderr);
    let tty = std::fs::read_to_string(ctd.mount_area.join("tty")).unwrap();
    assert!(tty.starts_with("/dev/pts/"), "{tty}");

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

/// containerd's CRI (runtime.v1's RuntimeService and ImageService) over its unix socket, as
/// kubelet calls it; every call blocks and times out after a minute.
struct Cri {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl Cri {
    fn connect(ctd: &Containerd) -> Cri {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let channel = {
            let _runtime = rt.enter();
            Endpoint::from_shared(format!("unix://{}", ctd.socket().display()))
                .unwrap()
                .timeout(Duration::from_secs(60))
                .connect_lazy()
        };
        Cri {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        }
    }

    /// Waits (at most 20 s) until CRI lists `image`: it learns of an import from containerd's
    /// events, after `ctr images import` has returned.
    fn wait_for_image(&self, image: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let request = cri::ImageStatusRequest {
                image: Some(image_spec(image)),
                verbose: false,
            };
            let status = self
                .rt
                .block_on(self.images.clone().image_status(request))
                .unwrap()
                .into_inner();
            if status.image.is_some() {
                return;
            }
            assert!(Instant::now() < deadline, "CRI does not see {image}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn run_pod_sandbox(&self, request: cri::RunPodSandboxRequest) -> Result<String, Status> {
        let mut client = self.runtime.clone();
        let response = self.rt.block_on(client.run_pod_sandbox(request))?;
        Ok(response.into_inner().pod_sandbox_id)
    }

    fn stop_and_remove_pod(&self, pod_sandbox_id: &str) -> Result<(), Status> {
        let mut client = self.runtime.clone();
        let id = pod_sandbox_id.to_string();
        self.rt
            .block_on(client.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            }))?;
        self.rt.block_on(
            client.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id }),
        )?;
        Ok(())
    }

    fn create_container(&self, request: cri::CreateContainerRequest) -> Result<String, Status> {
        let mut client = self.runtime.clone();
        let response = self.rt.block_on(client.create_container(request))?;
        Ok(response.into_inner().container_id)
    }

    fn start_container(&self, container_id: &str) -> Result<(), Status> {
        let mut client = self.runtime.clone();
        self.rt
            .block_on(client.start_container(cri::StartContainerRequest {
                container_id: container_id.to_string(),
            }))?;
        Ok(())
    }

    fn container_status(&self, container_id: &str) -> cri::ContainerStatus {
        let mut client = self.runtime.clone();
        let request = cri::ContainerStatusRequest {
            container_id: container_id.to_string(),
            verbose: false,
        };
        self.rt
            .block_on(client.container_status(request))
            .unwrap()
            .into_inner()
            .status
            .unwrap()
    }

    /// `cmd` run in the container by ExecSync (through the runtime's `exec`): (exit code,
    /// stdout and stderr).
    fn exec_sync(&self, container_id: &str, cmd: &[&str]) -> (i32, String) {
        let mut client = self.runtime.clone();
        let request = cri::ExecSyncRequest {
            container_id: container_id.to_string(),
            cmd: cmd.iter().map(|arg| arg.to_string()).collect(),
            timeout: 30,
        };
        let response = self
            .rt
            .block_on(client.exec_sync(request))
            .unwrap()
            .into_inner();
        let output = String::from_utf8_lossy(&response.stdout).to_string()
            + &String::from_utf8_lossy(&response.stderr);
        (response.exit_code, output)
    }
}

fn image_spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

/// A pod as kubelet runs one with `runtimeClassName: bootstrap`: a sandbox run by CRI with
/// runtime handler `bootstrap` (so through bootstrap-runc, as the pod's containers), on the
/// host's network (no CNI here), its cgroups under `/<test namespace>`, its containers' logs in
/// `log_directory`. Stopped and removed when dropped, also when the test fails.
struct Pod<'a> {
    cri: &'a Cri,
    id: String,
    config: cri::PodSandboxConfig,
    log_directory: PathBuf,
}

impl<'a> Pod<'a> {
    fn run(cri: &'a Cri, ctd: &mut Containerd, name: &str) -> Pod<'a> {
        let log_directory = ctd.dir.path().join("pod-logs").join(name);
        std::fs::create_dir_all(&log_directory).unwrap();
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.to_string(),
                uid: format!("{}-{name}", ctd.namespace),
                namespace: ctd.namespace.clone(),
                attempt: 0,
            }),
            log_directory: log_directory.to_str().unwrap().to_string(),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: format!("/{}", ctd.namespace),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(host_network()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = cri
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: "bootstrap".to_string(),
            })
            .unwrap_or_else(|status| panic!("RunPodSandbox: {status}\n{}", ctd.log()));
        ctd.track(&id);
        Pod {
            cri,
            id,
            config,
            log_directory,
        }
    }

    /// A container of this pod running `command` from `CRI_IMAGE`, its output logged to
    /// `<log directory>/<name>.log`.
    fn container_config(&self, name: &str, command: &[&str]) -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.to_string(),
                attempt: 0,
            }),
            image: Some(image_spec(CRI_IMAGE)),
            command: command.iter().map(|arg| arg.to_string()).collect(),
            log_path: format!("{name}.log"),
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(host_network()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// CreateContainer then StartContainer, as kubelet does; the container's id either way
    /// (tracked for cleanup), and the first error.
    fn start_container(
        &self,
        ctd: &mut Containerd,
        config: cri::ContainerConfig,
    ) -> (Option<String>, Result<(), Status>) {
        let id = match self.cri.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: self.id.clone(),
            config: Some(config),
            sandbox_config: Some(self.config.clone()),
        }) {
            Ok(id) => id,
            Err(status) => return (None, Err(status)),
        };
        ctd.track(&id);
        let started = self.cri.start_container(&id);
        (Some(id), started)
    }

    /// What the container named `name` wrote, from its CRI log file (`<time> <stream> <tag>
    /// <text>` lines), once a line reads `last` (at most 20 s).
    fn log_until(&self, name: &str, last: &str) -> String {
        let path = self.log_directory.join(format!("{name}.log"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text: String = std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .filter_map(|line| line.splitn(4, ' ').nth(3))
                .map(|text| format!("{text}\n"))
                .collect();
            if text.lines().any(|line| line == last) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "no {last:?} in {}: {text}",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// StopPodSandbox and RemovePodSandbox, as kubelet on the pod's deletion; must succeed.
    fn remove(mut self) {
        let id = std::mem::take(&mut self.id);
        self.cri.stop_and_remove_pod(&id).unwrap();
    }
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        if !self.id.is_empty() {
            let _ = self.cri.stop_and_remove_pod(&self.id);
        }
    }
}

/// Pod-level namespaces as kubelet sets them for `hostNetwork: true`.
fn host_network() -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Node as i32,
        pid: cri::NamespaceMode::Pod as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// A private containerd with CRI on and our images imported, and a CRI client to it.
fn cri_containerd(name: &str) -> (Containerd, Cri) {
    let ctd = Containerd::start(name, true);
    ctd.import_cri_images();
    let cri = Cri::connect(&ctd);
    cri.wait_for_image(SANDBOX_IMAGE);
    cri.wait_for_image(CRI_IMAGE);
    (ctd, cri)
}

/// What the container's process reports of the policy (stderr too, in the same log): its
/// capabilities, the host root's hostname (the fake host's), a write to the host root and one
/// to the container's own root (each fails with its error), a file through the mount area, and
/// the mount area's mountinfo line.
const POLICY_REPORT: &str = "grep CapEff /proc/self/status; \
    cat /.bottlerocket/rootfs/etc/hostname; \
    touch /.bottlerocket/rootfs/etc/x; \
    touch /x; \
    echo via-cri > /.bottlerocket/rootfs/mnt/file; \
    grep ' /.bottlerocket/rootfs/mnt ' /proc/self/mountinfo | tail -n1; \
    echo report-done";

/// A pod with the `bootstrap` runtime class, run through CRI as kubelet would: its container
/// gets the bootstrap policy (CAP_SYS_ADMIN effective, the host root read-only at
/// /.bottlerocket/rootfs, the mount area rshared at /.bottlerocket/rootfs/mnt and writable
/// through to the host, its own root read-only), as its log file shows, and so does a process
/// ExecSync runs in it; the pod is then stopped and removed with nothing left.
#[test]
fn cri_pod_with_the_bootstrap_runtime_class_gets_the_policy() {
    let (mut ctd, cri) = cri_containerd("cripod");
    let pod = Pod::run(&cri, &mut ctd, "policy");
    let script = format!("{POLICY_REPORT}; exec sleep 2147483647");
    let config = pod.container_config("report", &["sh", "-c", &script]);
    let (id, started) = pod.start_container(&mut ctd, config);
    started.unwrap_or_else(|status| panic!("StartContainer: {status}"));
    let id = id.unwrap();

    let log = pod.log_until("report", "report-done");
    assert!(cap_eff(&log) & CAP_SYS_ADMIN_BIT != 0, "{log}");
    assert!(log.lines().any(|l| l == "fake-host"), "{log}");
    for path in ["/.bottlerocket/rootfs/etc/x", "/x"] {
        let refused = format!("touch: {path}: Read-only file system");
        assert!(log.lines().any(|l| l == refused), "{log}");
    }
    assert!(!ctd.host_root.join("etc/x").exists());
    let mount_area = log
        .lines()
        .find(|l| l.contains(" /.bottlerocket/rootfs/mnt "))
        .unwrap_or_else(|| panic!("no mount area in {log}"));
    assert!(
        mount_area.contains(" shared:"),
        "mount area not rshared: {mount_area}"
    );
    assert_eq!(
        std::fs::read_to_string(ctd.mount_area.join("file")).unwrap(),
        "via-cri\n"
    );

    let (code, output) = cri.exec_sync(
        &id,
        &[
            "sh",
            "-c",
            "grep CapEff /proc/self/status; touch /.bottlerocket/rootfs/etc/y",
        ],
    );
    assert_ne!(code, 0, "exec wrote to the host root: {output}");
    assert!(cap_eff(&output) & CAP_SYS_ADMIN_BIT != 0, "{output}");
    assert!(output.contains("Read-only file system"), "{output}");

    pod.remove();
    ctd.assert_clean();
}

/// A container config the policy refuses — a host directory mounted under
/// /.bottlerocket/rootfs, the policy's own — fails to start through CRI with our reason in the
/// gRPC error (the shim reads it from the runtime's json log), and in the container's status
/// message, which kubelet shows; the pod is then stopped and removed with nothing left.
#[test]
fn cri_shows_the_policy_reason_for_a_refused_container() {
    let (mut ctd, cri) = cri_containerd("crirefused");
    let pod = Pod::run(&cri, &mut ctd, "refused");
    let source = ctd.dir.path().join("volume");
    std::fs::create_dir(&source).unwrap();
    let mut config = pod.container_config("mounts-host-root", &["true"]);
    config.mounts.push(cri::Mount {
        container_path: "/.bottlerocket/rootfs/etc".to_string(),
        host_path: source.to_str().unwrap().to_string(),
        ..Default::default()
    });
    let (id, started) = pod.start_container(&mut ctd, config);
    let status = started.expect_err("a mount under /.bottlerocket/rootfs started");
    let reason = "the bootstrap policy refuses the mount at /.bottlerocket/rootfs/etc";
    assert!(
        status.message().contains(reason),
        "{:?}: {}",
        status.code(),
        status.message()
    );
    let id = id.expect("CreateContainer only records the container");
    let container = cri.container_status(&id);
    assert!(container.message.contains(reason), "{container:?}");

    pod.remove();
    ctd.assert_clean();
}
