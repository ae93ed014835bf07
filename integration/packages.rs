//! The release artifacts of `hack/package.sh`, installed as a fleet installs them: the .deb with
//! apt into the boot tests' Debian root (with only the test harness, none of our files) and
//! booted; `remove` and `purge`; the .rpm with rpm into a scratch root and the tarball's
//! install.sh into a scratch prefix, compared with the .deb's files.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::boot::{Boot, Guest};
use crate::common;
use crate::common::supervisor::container;

const RUNTIME: &str = env!("CARGO_BIN_EXE_bootstrap-runc");
const PACKAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/hack/package.sh");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A version after this one, for the upgrade.
const NEXT_VERSION: &str = "999.0.0";

/// The artifacts, built once per test run from the binaries under test into cargo's
/// per-target scratch directory.
fn dist() -> &'static Path {
    static DIST: OnceLock<PathBuf> = OnceLock::new();
    DIST.get_or_init(|| package("dist", VERSION))
}

/// `hack/package.sh` with `version` into `name` under cargo's scratch directory.
fn package(name: &str, version: &str) -> PathBuf {
    let dist = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dist);
    let out = Command::new(PACKAGE)
        .env("BIN_DIR", Path::new(RUNTIME).parent().unwrap())
        .env("DIST", &dist)
        .env("VERSION", version)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hack/package.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dist
}

fn assert_outcome(boot: &Boot, name: &str, outcome: &str) {
    assert_eq!(boot.outcomes(name), [outcome], "{}", boot.summary());
}

/// The supervisor that ran is the package's, and found itself installed read-only.
fn assert_supervisor_read_only(boot: &Boot) {
    let said = "/usr/lib/bootstrap-runc/bootstrap-supervisor is installed read-only";
    assert!(
        boot.supervisor().iter().any(|m| m.contains(said)),
        "{}",
        boot.summary()
    );
}

fn write_hook(g: &Guest, script: &str) {
    let hook = g.path("var/lib/boot-test/hook");
    std::fs::write(&hook, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// What the hook printed in the last boot, once it exited 0.
fn hook_output(g: &Guest) -> String {
    let out = std::fs::read_to_string(g.path("var/lib/boot-test/hook.out")).unwrap();
    let rc = std::fs::read_to_string(g.path("var/lib/boot-test/hook.rc")).unwrap();
    assert_eq!(rc.trim(), "0", "the hook failed:\n{out}");
    out
}

fn deb() -> PathBuf {
    dist().join(format!("bootstrap-runc_{VERSION}_amd64.deb"))
}

/// Every path under `root` (directories with a trailing `/`, symlinks with their target),
/// relative, leaving out the paths under `skip`.
fn listing(root: &Path, skip: &[&str]) -> BTreeSet<String> {
    let out = Command::new("find")
        .arg(root)
        .args(["-mindepth", "1", "-printf", "%P\t%y\t%l\n"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| !skip.iter().any(|s| line.starts_with(s)))
        .map(|line| {
            let mut fields = line.split('\t');
            let (path, kind, target) = (fields.next().unwrap(), fields.next(), fields.next());
            match (kind, target) {
                (Some("d"), _) => format!("{path}/"),
                (Some("l"), Some(target)) => format!("{path} -> {target}"),
                _ => path.to_string(),
            }
        })
        .collect()
}

/// What boots, apt and dpkg change in a root whatever they install: not ours.
const SYSTEM_STATE: [&str; 10] = [
    "var/lib/dpkg",
    "var/lib/apt",
    "var/cache",
    "var/log",
    "var/lib/systemd",
    "var/lib/boot-test",
    "var/tmp",
    "tmp",
    "run",
    "etc/ld.so.cache",
];

#[test]
fn the_deb_installs_boots_removes_and_purges() {
    let mut g = Guest::bare("deb");
    let bundles_dir = "var/lib/bundles";
    let before = listing(&g.path(""), &SYSTEM_STATE);
    std::fs::copy(deb(), g.path("var/tmp/bootstrap-runc.deb")).unwrap();
    g.run_in(
        "apt-get install -y -q --no-install-recommends /var/tmp/bootstrap-runc.deb >/dev/null",
    );
    assert!(
        g.path("usr/share/man/man8/bootstrap-runc-run.8.gz")
            .is_file()
            && g.path("usr/share/man/man8/bootstrap-supervisor.8.gz")
                .is_file(),
        "no man pages"
    );
    assert!(!g.path("usr/local/lib/bootstrap-runc").exists());
    // Enabled (the symlinks name the guest's paths: not followed here).
    for link in [
        "multi-user.target.wants/bootstrap-containers.target",
        "bootstrap-containers.target.requires/bootstrap-containers.service",
        "local-fs.target.wants/usr-lib-bootstrap\\x2drunc.mount",
    ] {
        let path = g.path("etc/systemd/system").join(link);
        assert!(path.symlink_metadata().is_ok(), "{link} is not enabled");
    }

    let fine = g.bundle("fine", "echo fine");
    let broken = g.bundle("broken", "exit 3");
    g.write_settings(
        &(container("fine", &fine, "mode = \"always\"\nessential = true")
            + &container("broken", &broken, "mode = \"always\"")),
    );
    write_hook(&g, "bootstrap-supervisor status");
    let boot = g.boot();
    boot.assert_orchestrator_started();
    assert_outcome(&boot, "fine", "succeeded (exit code 0)");
    assert_outcome(&boot, "broken", "failed (exit code 3)");
    // The packaged supervisor ran, protected by the packaged mount unit.
    assert_supervisor_read_only(&boot);
    let exe = boot
        .journal
        .iter()
        .filter(|e| e.identifier == "bootstrap-containers")
        .find_map(|e| e.fields["_EXE"].as_str().map(str::to_string));
    assert_eq!(
        exe.as_deref(),
        Some("/usr/lib/bootstrap-runc/bootstrap-supervisor"),
        "{}",
        boot.summary()
    );
    let status = hook_output(&g);
    for (name, outcome) in [("fine", "succeeded"), ("broken", "failed")] {
        assert!(
            status
                .lines()
                .any(|l| l.starts_with(&format!("{name} ")) && l.contains(outcome)),
            "{status}"
        );
    }

    // An essential container failing: the orchestrator never starts.
    let failing = g.bundle("fine", "exit 1");
    g.write_settings(&container(
        "fine",
        &failing,
        "mode = \"always\"\nessential = true",
    ));
    g.boot().assert_orchestrator_never_started();

    // remove keeps the operator's files; purge takes them and everything of ours.
    g.run_in("apt-get remove -y -q bootstrap-runc >/dev/null");
    assert!(g.path("etc/bootstrap-containers/settings.toml").is_file());
    assert!(!g.path("usr/lib/bootstrap-runc").exists());
    assert!(g.path("var/lib/bootstrap-containers/boots").is_dir());
    g.run_in("dpkg --purge bootstrap-runc >/dev/null");
    // The test's own files: the bundles and what the guest's setup wrote.
    let after = listing(
        &g.path(""),
        &[&SYSTEM_STATE[..], &[bundles_dir, "etc/machine-id"]].concat(),
    );
    // The operator's files (the guest's supervisor.env among them), which purge took.
    assert!(!g.path("etc/bootstrap-containers").exists());
    let before: BTreeSet<String> = before
        .into_iter()
        .filter(|p| !p.starts_with("etc/machine-id") && !p.starts_with("etc/bootstrap-containers"))
        .collect();
    let left: Vec<_> = after.difference(&before).collect();
    let taken: Vec<_> = before.difference(&after).collect();
    assert!(
        left.is_empty() && taken.is_empty(),
        "after purge, left: {left:#?}\ntaken: {taken:#?}"
    );
}

/// The .deb's files, as `dpkg-deb -x` unpacks them, with Debian's own names made common:
/// zsh's vendor-completions for the site-functions of everyone else, and no Debian-only docs.
fn deb_files() -> BTreeSet<String> {
    let dir = common::scratch_dir("brt-deb-files-");
    let ok = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb())
        .arg(dir.path())
        .status()
        .unwrap()
        .success();
    assert!(ok, "dpkg-deb -x");
    listing(dir.path(), &[])
        .into_iter()
        .filter(|p| {
            !p.starts_with("usr/share/doc/bootstrap-runc/changelog.gz")
                && !p.starts_with("usr/share/doc/bootstrap-runc/copyright")
        })
        .map(|p| p.replace("zsh/vendor-completions", "zsh/site-functions"))
        .collect()
}

#[test]
fn the_rpm_and_the_tarball_install_the_debs_files() {
    let debs = deb_files();
    assert!(
        debs.contains("usr/lib/bootstrap-runc/bootstrap-runc"),
        "{debs:#?}"
    );

    // rpm into a scratch root: --nodeps (the root has no glibc of rpm's), --noscripts (the
    // scriptlets need a shell and systemctl in that root; the boot test runs the .deb's).
    let root = common::scratch_dir("brt-rpm-root-");
    let rpm = dist().join(format!("bootstrap-runc-{VERSION}-1.x86_64.rpm"));
    for args in [
        vec!["--initdb"],
        vec!["-i", "--nodeps", "--noscripts", rpm.to_str().unwrap()],
    ] {
        let out = Command::new("rpm")
            .arg("--root")
            .arg(root.path())
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rpm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rpms: BTreeSet<String> = listing(root.path(), &["var/lib/rpm", "usr/lib/sysimage", "root"])
        .into_iter()
        .filter(|p| !["var/", "var/lib/", "usr/lib/"].contains(&p.as_str()) || debs.contains(p))
        .collect();
    assert_eq!(rpms, debs, "the .rpm's tree differs from the .deb's");

    // The tarball's install.sh into a scratch prefix.
    let dir = common::scratch_dir("brt-tarball-");
    let tarball = dist().join(format!("bootstrap-runc-{VERSION}-x86_64.tar.gz"));
    let ok = Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap()
        .success();
    assert!(ok, "unpacking {}", tarball.display());
    let staged = dir.path().join("root");
    let out = Command::new(
        dir.path()
            .join(format!("bootstrap-runc-{VERSION}-x86_64/install.sh")),
    )
    .arg("/usr")
    .env("DESTDIR", &staged)
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "install.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        listing(&staged, &[]),
        debs,
        "the tarball's install differs from the .deb's"
    );
}

/// An upgrade in the running guest, as unattended-upgrades would do it, with the runtime's
/// read-only mount active: the operator's settings (edited by the supervisor) survive, the
/// mount is back afterwards, and the next boot runs.
#[test]
fn the_deb_upgrades_in_the_running_guest() {
    let next = package("dist-next", NEXT_VERSION);
    let mut g = Guest::bare("upgrade");
    std::fs::copy(deb(), g.path("var/tmp/bootstrap-runc.deb")).unwrap();
    std::fs::copy(
        next.join(format!("bootstrap-runc_{NEXT_VERSION}_amd64.deb")),
        g.path("var/tmp/next.deb"),
    )
    .unwrap();
    g.run_in("apt-get install -y -q /var/tmp/bootstrap-runc.deb >/dev/null");
    let setup = g.bundle("setup", "echo once");
    let every = g.bundle("every", "echo every boot");
    g.write_settings(
        &(container("setup", &setup, "mode = \"once\"\nessential = true")
            + &container("every", &every, "mode = \"always\"")),
    );
    write_hook(
        &g,
        "set -e\n\
         findmnt -n -o FSTYPE,OPTIONS /usr/lib/bootstrap-runc | sed 's/^/before: /'\n\
         DEBIAN_FRONTEND=noninteractive apt-get install -y -q /var/tmp/next.deb >/dev/null\n\
         findmnt -n -o FSTYPE,OPTIONS /usr/lib/bootstrap-runc | sed 's/^/after: /'\n\
         dpkg-query -W -f 'version: ${Version}\\n' bootstrap-runc\n\
         dpkg --verify bootstrap-runc",
    );
    let boot = g.boot();
    boot.assert_orchestrator_started();
    assert_outcome(&boot, "setup", "succeeded (exit code 0)");
    let upgraded = hook_output(&g);
    let mounted = |when: &str| {
        upgraded
            .lines()
            .any(|l| l.starts_with(&format!("{when}: overlay ro,")))
    };
    assert!(mounted("before") && mounted("after"), "{upgraded}");
    assert!(
        upgraded.contains(&format!("version: {NEXT_VERSION}\n")),
        "{upgraded}"
    );
    let settings =
        std::fs::read_to_string(g.path("etc/bootstrap-containers/settings.toml")).unwrap();
    assert!(settings.contains("mode = \"off\""), "{settings}");

    std::fs::remove_file(g.path("var/lib/boot-test/hook")).unwrap();
    let boot = g.boot();
    boot.assert_orchestrator_started();
    assert!(boot.outcomes("setup").is_empty(), "{}", boot.summary());
    assert_outcome(&boot, "every", "succeeded (exit code 0)");
}

/// The systemd-sysext image, merged into the guest's /usr by `systemd-sysext merge --root`
/// on this host (in a mount namespace of its own with a /run of its own: systemd-sysext stages
/// the images there; the merged /usr reaches the guest's root, a shared mount, by
/// propagation), then booted: systemd loads the image's units at boot, nothing enabled in
/// /etc; `systemd-sysext status` in the guest lists it, the containers run, and the runtime
/// finds itself read-only without its mount unit.
#[test]
fn the_sysext_image_merged_into_the_guest_boots() {
    let mut g = Guest::bare("sysext");
    let extensions = g.path("var/lib/extensions");
    std::fs::create_dir_all(&extensions).unwrap();
    std::fs::copy(
        dist().join("bootstrap-runc.raw"),
        extensions.join("bootstrap-runc.raw"),
    )
    .unwrap();
    let root = g.path("");
    let merged = Command::new("sh")
        .arg("-c")
        .arg(
            r#"mount --make-shared "$1" &&
               unshare -m --propagation unchanged sh -c \
                 'mount --make-private / && mount -t tmpfs tmpfs /run && systemd-sysext merge --root="$1"' sh "$1""#,
        )
        .arg("sh")
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        merged.status.success(),
        "systemd-sysext merge: {}",
        String::from_utf8_lossy(&merged.stderr)
    );
    assert!(g.path("usr/lib/bootstrap-runc/bootstrap-runc").is_file());

    let fine = g.bundle("fine", "echo fine");
    g.write_settings(&container(
        "fine",
        &fine,
        "mode = \"always\"\nessential = true",
    ));
    write_hook(&g, "systemd-sysext status");
    let boot = g.boot();
    boot.assert_orchestrator_started();
    assert_outcome(&boot, "fine", "succeeded (exit code 0)");
    let status = hook_output(&g);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("/usr") && l.contains("bootstrap-runc")),
        "{status}"
    );
    assert_supervisor_read_only(&boot);
    // Skipped by its condition (on this test's overlay root the mount would fail anyway: a
    // third stacked overlay is more than the kernel takes).
    let mount_unit: Vec<&str> = boot
        .journal
        .iter()
        .filter(|e| e.unit == "usr-lib-bootstrap\\x2drunc.mount")
        .map(|e| e.message.as_str())
        .collect();
    assert!(
        mount_unit
            .iter()
            .any(|m| m.contains("ConditionPathIsReadWrite=/usr/lib/bootstrap-runc")),
        "the mount unit was not skipped: {mount_unit:#?}"
    );
}
