//! The bootstrap container's world as Bottlerocket's host-ctr builds it: the storage
//! directories shared read-write, the host's modules, sources, certificates and debugfs, the
//! unmasked /sys/firmware, and the default seccomp profile. Every host here is a fake host root
//! in a temp dir; nothing is created in, mounted on or made shared on the real /var/lib.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common;
use crate::common::{host_mounts_under, Fixture, SHARED_DIRS};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Binds the fake host root onto itself with the given propagation, as a host's `/` is.
fn host_root_mount(f: &Fixture, propagation: MsFlags) {
    let root = &f.host_root;
    if !host_mounts_under(root)
        .iter()
        .any(|(point, _)| point == root)
    {
        mount(
            Some(root),
            root,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
    }
    mount(None::<&str>, root, None::<&str>, propagation, None::<&str>).unwrap();
}

#[test]
fn shared_dirs_are_created_writable_and_propagate_to_the_host() {
    let f = Fixture::new("shdirs");
    // A private host root: each directory is bound onto itself and made shared.
    host_root_mount(&f, MsFlags::MS_PRIVATE);
    let script = r#"
        set -e
        echo data > /.bottlerocket/rootfs/var/lib/kubelet/config
        mkdir /.bottlerocket/rootfs/var/lib/containerd/disk
        mount -t tmpfs disk /.bottlerocket/rootfs/var/lib/containerd/disk
        echo on-disk > /.bottlerocket/rootfs/var/lib/containerd/disk/f
        for other in /.bottlerocket/rootfs/var/lib/other /.bottlerocket/rootfs/var/x; do
            if touch $other 2>/dev/null; then echo "WROTE $other"; fi
        done
    "#;
    let ran = f.run_sh("s", script);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(!ran.stdout.contains("WROTE"), "{}", ran.stdout);
    for dir in SHARED_DIRS {
        let path = f.host_root.join(dir);
        assert!(path.is_dir(), "{dir} not created");
        assert_eq!(mode(&path), 0o711, "{dir}");
    }
    assert_eq!(
        std::fs::read_to_string(f.host_root.join("var/lib/kubelet/config")).unwrap(),
        "data\n"
    );
    let disk = f.host_root.join("var/lib/containerd/disk");
    assert_eq!(
        host_mounts_under(&disk).len(),
        1,
        "the container's mount did not reach the host"
    );
    assert_eq!(
        std::fs::read_to_string(disk.join("f")).unwrap(),
        "on-disk\n"
    );
    umount2(&disk, MntFlags::MNT_DETACH).unwrap();
    assert!(
        ran.stderr.contains("created the shared directory"),
        "{}",
        ran.stderr
    );
    // The private host root this test made, with the shared mount points in it.
    common::unmount_all_under(&f.host_root);
    f.assert_clean();
}

#[test]
fn an_empty_list_shares_nothing() {
    let f = Fixture::new("shnone");
    let bundle = f.bundle(
        "n",
        &[
            "sh",
            "-c",
            "grep -c ' /.bottlerocket/rootfs/var' /proc/self/mountinfo || true",
        ],
    );
    let id = f.id("n");
    let ran = f.rt(&[
        "--shared-dirs",
        "",
        "run",
        "--bundle",
        bundle.to_str().unwrap(),
        &id,
    ]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(ran.stdout.trim(), "0");
    assert!(!f.host_root.join("var").exists());
    f.assert_clean();
}

#[test]
fn a_shared_mount_is_used_as_it_is_and_a_live_private_tree_is_refused() {
    let f = Fixture::new("shlive");
    let volume = f.host_root.join("var/lib/kubelet/pods/p1/volume");
    std::fs::create_dir_all(&volume).unwrap();
    host_root_mount(&f, MsFlags::MS_SHARED);
    mount(
        Some("tmpfs"),
        &volume,
        Some("tmpfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let script = "set -e; mkdir /.bottlerocket/rootfs/var/lib/kubelet/m; \
                  mount -t tmpfs m /.bottlerocket/rootfs/var/lib/kubelet/m";
    let ran = f.run_sh("shared", script);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let kubelet = f.host_root.join("var/lib/kubelet");
    let points: Vec<PathBuf> = host_mounts_under(&kubelet)
        .into_iter()
        .map(|(point, _)| point)
        .collect();
    assert!(
        points.contains(&kubelet.join("m")),
        "no propagation: {points:?}"
    );
    assert!(
        !points.contains(&kubelet),
        "a directory on a shared mount was bound onto itself: {points:?}"
    );
    umount2(&kubelet.join("m"), MntFlags::MNT_DETACH).unwrap();

    // The same live tree on a private mount: refused, and nothing on the host changes.
    host_root_mount(&f, MsFlags::MS_PRIVATE);
    let before = host_mounts_under(&f.host_root);
    let ran = f.run_sh("private", "true");
    assert_eq!(ran.code, 1);
    for wanted in [
        "shared directory",
        "var/lib/kubelet is on a private mount and has mounts under it",
        "make it shared",
    ] {
        assert!(ran.stderr.contains(wanted), "{wanted:?}: {}", ran.stderr);
    }
    assert_eq!(host_mounts_under(&f.host_root), before);
    umount2(&volume, MntFlags::MNT_DETACH).unwrap();
    umount2(&f.host_root, MntFlags::MNT_DETACH).unwrap();
    f.assert_clean();
}

#[test]
fn a_symlinked_shared_dir_is_refused() {
    let f = Fixture::new("shlink");
    std::fs::create_dir_all(f.host_root.join("var/lib")).unwrap();
    std::os::unix::fs::symlink("/etc", f.host_root.join("var/lib/docker")).unwrap();
    let ran = f.run_sh("l", "true");
    assert_eq!(ran.code, 1);
    assert!(
        ran.stderr.contains("var/lib/docker: a symlink on its path"),
        "{}",
        ran.stderr
    );
    assert!(
        !f.host_root.join("var/lib/containerd").exists(),
        "changed the host before refusing"
    );
    f.assert_clean();
}

#[test]
fn modules_sources_certs_and_debugfs_when_the_host_has_them() {
    let f = Fixture::new("optional");
    let h = &f.host_root;
    // A merged-/usr host: /lib is a relative symlink, resolved inside the host root.
    std::fs::create_dir_all(h.join("usr/lib/modules/6.1.0")).unwrap();
    std::fs::write(h.join("usr/lib/modules/6.1.0/modules.dep"), "dep\n").unwrap();
    std::os::unix::fs::symlink("usr/lib", h.join("lib")).unwrap();
    std::fs::create_dir_all(h.join("usr/src/kernels/6.1.0")).unwrap();
    std::fs::create_dir_all(h.join("etc/ssl/certs")).unwrap();
    std::fs::write(h.join("etc/ssl/certs/ca-certificates.crt"), "PEM\n").unwrap();
    let debug = h.join("sys/kernel/debug");
    std::fs::create_dir_all(&debug).unwrap();
    mount(
        Some("debugfs"),
        &debug,
        Some("debugfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let script = r#"
        cat /lib/modules/6.1.0/modules.dep /.bottlerocket/certs/ca-certificates.crt
        ls /usr/src/kernels
        for f in /lib/modules/x /.bottlerocket/certs/x /usr/src/kernels/x; do
            if touch $f 2>/dev/null; then echo "WROTE $f"; fi
        done
        awk '{print "mount", $5, $6, $9}' /proc/self/mountinfo
    "#;
    let ran = f.run_sh("o", script);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(
        ran.stdout.starts_with("dep\nPEM\n6.1.0\n"),
        "{}",
        ran.stdout
    );
    assert!(!ran.stdout.contains("WROTE"), "{}", ran.stdout);
    let mounted = |point: &str| {
        ran.stdout
            .lines()
            .filter_map(|l| l.strip_prefix("mount "))
            .filter(|l| l.split(' ').next() == Some(point))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let debugfs = mounted("/sys/kernel/debug");
    assert!(
        debugfs
            .iter()
            .any(|m| m.starts_with("/sys/kernel/debug rw,") && m.ends_with(" debugfs")),
        "{}",
        ran.stdout
    );
    assert!(
        mounted("/sys/firmware").is_empty(),
        "/sys/firmware is masked"
    );
    assert!(
        !mounted("/proc/keys").is_empty(),
        "runc's other masks stay: {}",
        ran.stdout
    );

    // No debugfs on the host: none inside.
    umount2(&debug, MntFlags::MNT_DETACH).unwrap();
    let ran = f.run_sh("n", "awk '{print $5}' /proc/self/mountinfo");
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(
        !ran.stdout.lines().any(|l| l == "/sys/kernel/debug"),
        "{}",
        ran.stdout
    );
    f.assert_clean();
}

#[test]
fn image_symlinks_cannot_move_the_environment() {
    let f = Fixture::new("imglinks");
    std::fs::create_dir_all(f.host_root.join("lib/modules/6.1.0")).unwrap();
    // The image's own /lib/modules is a symlink: followed inside the rootfs, as libcontainer does.
    let bundle = f.bundle("modlink", &["ls", "/lib/modules", "/usr/lib/modules"]);
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(rootfs.join("usr/lib/modules")).unwrap();
    std::fs::create_dir_all(rootfs.join("lib")).unwrap();
    std::os::unix::fs::symlink("/usr/lib/modules", rootfs.join("lib/modules")).unwrap();
    let id = f.id("modlink");
    let ran = f.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(ran.stdout.matches("6.1.0").count(), 2, "{}", ran.stdout);

    // An image whose /.bottlerocket points at a host directory: refused, the host untouched.
    let victim = f.dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let bundle = f.bundle("brlink", &["true"]);
    std::os::unix::fs::symlink(&victim, bundle.join("rootfs/.bottlerocket")).unwrap();
    // Where libcontainer, resolving inside the rootfs, mounts the policy's tmpfs.
    let inside = bundle
        .join("rootfs")
        .join(victim.strip_prefix("/").unwrap());
    std::fs::create_dir_all(inside).unwrap();
    let id = f.id("brlink");
    let ran = f.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
    assert_eq!(ran.code, 1);
    assert!(
        ran.stderr
            .contains("/.bottlerocket is not the policy's directory"),
        "{}",
        ran.stderr
    );
    assert_eq!(
        std::fs::read_dir(&victim).unwrap().count(),
        0,
        "host dir written"
    );
    f.assert_clean();
}

#[test]
fn a_read_only_root_without_the_mount_point_goes_without() {
    let f = Fixture::new("rorootfs");
    std::fs::create_dir_all(f.host_root.join("lib/modules/6.1.0")).unwrap();
    let bundle = f.bundle("ro", &["sh", "-c", "ls /lib/modules 2>&1; true"]);
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir(rootfs.join(".bottlerocket")).unwrap();
    mount(
        Some(&rootfs),
        &rootfs,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    mount(
        None::<&str>,
        &rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .unwrap();
    let id = f.id("ro");
    let ran = f.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
    umount2(&rootfs, MntFlags::MNT_DETACH).unwrap();
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(ran.stdout.contains("No such file"), "{}", ran.stdout);
    assert!(
        ran.stderr.contains("read-only root has no /lib/modules"),
        "{}",
        ran.stderr
    );
    f.assert_clean();
}

#[test]
fn config_mounts_on_the_environment_paths_are_refused() {
    let f = Fixture::new("envres");
    for (name, destination) in [
        ("mods", "/lib/modules"),
        ("certs", "/.bottlerocket/certs/x"),
    ] {
        let bundle = f.bundle(name, &["true"]);
        f.edit_config(&bundle, |config| {
            config["mounts"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!(
                    {"destination": destination, "type": "tmpfs", "source": "tmpfs"}
                ));
        });
        let id = f.id(name);
        let ran = f.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
        assert_eq!(ran.code, 1, "{destination}");
        assert!(
            ran.stderr
                .contains(&format!("refuses the mount at {destination}")),
            "{}",
            ran.stderr
        );
    }
    f.assert_clean();
}

/// The static syscall probe (integration/probe/syscalls.c), built into `dir`.
fn probe(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/probe/syscalls.c");
    let out = dir.join("probe");
    let built = Command::new("cc")
        .args(["-static", "-O", "-o"])
        .arg(&out)
        .arg(&source)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    out
}

const PROBED: [&str; 8] = [
    "keyctl",
    "mount",
    "umount2",
    "swapon",
    "swapoff",
    "init_module",
    "finit_module",
    "mknod",
];

/// Runs the probe in a fresh container; returns (syscall, errno) pairs.
fn probed(
    f: &Fixture,
    name: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> Vec<(String, i32)> {
    let mut args = vec!["/bin/probe"];
    args.extend(PROBED);
    let bundle = f.bundle(name, &args);
    std::fs::copy(probe(f.dir.path()), bundle.join("rootfs/bin/probe")).unwrap();
    f.edit_config(&bundle, edit);
    let id = f.id(name);
    let ran = f.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    ran.stdout
        .lines()
        .map(|line| {
            let (name, errno) = line.split_once(' ').unwrap();
            (name.to_string(), errno.parse().unwrap())
        })
        .collect()
}

/// An allow-everything program in the layout of runtime/seccomp_filter.rs, with a wrong digest.
fn allow_all_filter() -> Vec<u8> {
    let mut bytes = 0u32.to_ne_bytes().to_vec();
    bytes.extend_from_slice(&0x06u16.to_ne_bytes()); // BPF_RET | BPF_K
    bytes.extend_from_slice(&[0, 0]);
    bytes.extend_from_slice(&libc::SECCOMP_RET_ALLOW.to_ne_bytes());
    bytes.extend_from_slice(&[0; 32]);
    bytes
}

#[test]
fn seccomp_filter_is_compiled_once_reaches_exec_and_a_changed_one_is_not_trusted() {
    let f = Fixture::new("scfilter");
    let results = probed(&f, "first", |_| {});
    assert_eq!(errno_of(&results, "keyctl"), libc::EPERM, "{results:?}");
    let cached: Vec<PathBuf> = std::fs::read_dir(f.root.join(".seccomp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_none())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    let compiled = std::fs::read(&cached[0]).unwrap();

    // A cached program that does not check out is compiled again, not loaded.
    std::fs::write(&cached[0], allow_all_filter()).unwrap();
    let results = probed(&f, "again", |_| {});
    assert_eq!(errno_of(&results, "keyctl"), libc::EPERM, "{results:?}");
    assert_eq!(std::fs::read(&cached[0]).unwrap(), compiled);

    // exec'd processes load the container's filter too.
    let bundle = f.bundle("held", &["sleep", "100"]);
    std::fs::copy(probe(f.dir.path()), bundle.join("rootfs/bin/probe")).unwrap();
    let id = f.id("held");
    f.rt_ok(&["create", "--bundle", bundle.to_str().unwrap(), &id]);
    f.rt_ok(&["start", &id]);
    let ran = f.rt_ok(&["exec", &id, "/bin/probe", "keyctl", "mount"]);
    assert_eq!(
        ran.stdout,
        format!("keyctl {}\nmount {}\n", libc::EPERM, libc::ENOENT)
    );

    // ... and an exec whose filter file was changed fails rather than run unfiltered.
    let own = f.root.join(".bootstrap").join(&id).join("seccomp.bpf");
    std::fs::write(&own, allow_all_filter()).unwrap();
    let ran = f.rt(&["exec", &id, "/bin/probe", "keyctl"]);
    assert_ne!(ran.code, 0, "{}", ran.stdout);
    assert!(
        ran.stderr.contains("seccomp.bpf is not valid") && ran.stderr.contains("digest"),
        "{}",
        ran.stderr
    );
    f.rt_ok(&["delete", "--force", &id]);
    f.assert_clean();
}

fn errno_of(results: &[(String, i32)], name: &str) -> i32 {
    results.iter().find(|(n, _)| n == name).unwrap().1
}

#[test]
fn seccomp_default_profile_denies_and_allows_as_bottlerocket() {
    let f = Fixture::new("seccomp");
    let results = probed(&f, "default", |_| {});
    assert_eq!(errno_of(&results, "keyctl"), libc::EPERM, "{results:?}");
    for name in &PROBED[1..] {
        let errno = errno_of(&results, name);
        assert_ne!(errno, libc::EPERM, "{name} is blocked: {results:?}");
        assert_ne!(errno, 0, "{name} succeeded: {results:?}");
    }

    // A config's own profile is used as it is.
    let results = probed(&f, "own", |config| {
        config["linux"]["seccomp"] = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["swapon"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        });
    });
    assert_ne!(errno_of(&results, "keyctl"), libc::EPERM, "{results:?}");
    assert_eq!(errno_of(&results, "swapon"), libc::EPERM, "{results:?}");

    // The policy can turn the default off.
    std::fs::write(&f.policy_file, "seccomp = \"unconfined\"\n").unwrap();
    let results = probed(&f, "unconfined", |_| {});
    assert_ne!(errno_of(&results, "keyctl"), libc::EPERM, "{results:?}");
    f.assert_clean();
}
