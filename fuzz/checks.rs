//! What each fuzz target checks for one input, shared by the cargo-fuzz targets (fuzz/) and
//! the regression test that replays every saved input in CI (integration/hostile.rs). A check
//! panics when an input breaks a promise; an input that is merely refused is fine.
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use bootstrap_runc::image::{budget, unpack};
use bootstrap_runc::policy::{self, capabilities, Policy};
use bootstrap_runc::supervisor::settings::edit;
use bootstrap_runc::supervisor::{plan, settings};
use libcontainer::oci_spec::runtime::{Capability, LinuxNamespaceType, Process, Spec};

/// Settings text (TOML and JSON): parsing never panics; whatever validates has valid names
/// and runc ids, dependencies that exist, and a plan that finishes every container it runs.
pub fn settings(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for format in [settings::Format::Toml, settings::Format::Json] {
        // `get` reads the same documents, unvalidated.
        let _ = edit::get_in(
            text,
            format,
            &[settings::TABLE.to_string(), "settings".to_string()],
        );
        let Ok(parsed) = settings::parse(text, format) else {
            continue;
        };
        for (name, container) in &parsed.containers {
            assert!(settings::check_name(name).is_ok(), "{name:?} validated");
            bootstrap_runc::container_id::validate(&settings::container_id(name))
                .unwrap_or_else(|e| panic!("{name:?} gives an invalid id: {e}"));
            for dependency in &container.depends_on {
                assert!(
                    parsed.containers.contains_key(dependency),
                    "{name:?} depends on the unknown {dependency:?}"
                );
            }
        }
        let plan = plan::plan(&parsed, &plan::PlanOptions::default());
        // Succeed everything that becomes ready; the plan must run out, not loop or stall.
        let mut outcomes = std::collections::BTreeMap::new();
        for _ in 0..=plan.steps.len() {
            let next = plan.next(&outcomes);
            if next.ready.is_empty() && next.skip.is_empty() {
                break;
            }
            for step in next.ready.iter().chain(next.skip.iter()) {
                outcomes.insert(step.name.clone(), plan::Ended::Succeeded);
            }
        }
        for step in &plan.steps {
            assert!(
                outcomes.contains_key(&step.name),
                "{:?} never became ready: a cycle validated",
                step.name
            );
        }
    }
}

/// The busybox bundle's config.json (hack/make-bundle.sh), the base that policy inputs patch.
pub const BASE_CONFIG: &str = include_str!("base-config.json");

/// The policies inputs are checked against: the defaults, and one allowing more.
fn policies() -> Vec<Policy> {
    let generous = Policy {
        extra_capabilities: vec![Capability::SysPtrace],
        writable_binds: vec![PathBuf::from("/var/lib/bootstrap")],
        protected_dirs: vec![
            PathBuf::from("/run/bootstrap-runc"),
            PathBuf::from("/var/lib/bootstrap/state"),
        ],
        ..Policy::default()
    };
    let systemd = Policy {
        systemd_cgroup: true,
        shared_dirs: vec![PathBuf::from("/data/state")],
        seccomp: policy::seccomp::Mode::Unconfined,
        ..Policy::default()
    };
    let bottlerocket = Policy {
        compatibility: policy::Compatibility::Bottlerocket,
        host_root: PathBuf::from("/host"),
        protected_dirs: vec![
            PathBuf::from("/host/run/bootstrap-runc"),
            PathBuf::from("/elsewhere/state"),
        ],
        state_dirs: vec![
            PathBuf::from("/host/var/lib/bootstrap-containers"),
            PathBuf::from("/host/run/bootstrap-runc/inner"),
        ],
        ..Policy::default()
    };
    vec![Policy::default(), generous, systemd, bottlerocket]
}

/// A config (a whole config.json, or a JSON merge patch over [`BASE_CONFIG`]): whatever the
/// policy accepts holds exactly the policy, and `exec`'s process rules hold for its process.
pub fn policy(data: &[u8]) {
    let mut specs = Vec::new();
    if let Ok(spec) = serde_json::from_slice::<Spec>(data) {
        specs.push(spec);
    }
    if let Ok(patch @ serde_json::Value::Object(_)) = serde_json::from_slice(data) {
        let mut config: serde_json::Value = serde_json::from_str(BASE_CONFIG).unwrap();
        merge_patch(&mut config, &patch);
        if let Ok(spec) = serde_json::from_value::<Spec>(config) {
            specs.push(spec);
        }
    }
    let bundle = Path::new("/run/bundle");
    for spec in specs {
        for policy in policies() {
            if let Some(process) = spec.process() {
                if let Ok(process) = policy::apply_to_process(process.clone(), &policy) {
                    check_process(&process, &policy);
                }
            }
            if let Ok(confined) = policy::apply(spec.clone(), &policy, bundle) {
                check_spec(&spec, &confined, &policy, bundle);
                check_seccomp(&spec, &confined, &policy);
            }
        }
    }
}

/// RFC 7386: objects merge, `null` removes, anything else replaces.
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    let serde_json::Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = serde_json::Value::Object(Default::default());
    }
    let target = target.as_object_mut().unwrap();
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(
                target.entry(key.clone()).or_insert(serde_json::Value::Null),
                value,
            );
        }
    }
}

fn check_process(process: &Process, policy: &Policy) {
    let ceiling = capabilities::ceiling(&policy.extra_capabilities);
    let caps = process.capabilities().as_ref().expect("capabilities set");
    let sets = [
        ("bounding", caps.bounding()),
        ("effective", caps.effective()),
        ("inheritable", caps.inheritable()),
        ("permitted", caps.permitted()),
        ("ambient", caps.ambient()),
    ];
    for (name, set) in sets {
        let above: Vec<_> = set
            .iter()
            .flatten()
            .filter(|c| !ceiling.contains(c))
            .collect();
        assert!(above.is_empty(), "{name} holds {above:?} above the ceiling");
    }
    for (name, set) in &sets[..2] {
        assert!(
            set.iter().flatten().any(|c| *c == Capability::SysAdmin),
            "{name} lacks CAP_SYS_ADMIN"
        );
    }
    assert_eq!(process.no_new_privileges(), Some(true));
    assert!(
        !policy::clean(process.cwd()).starts_with("/proc"),
        "a working directory under /proc"
    );
}

fn check_spec(input: &Spec, spec: &Spec, policy: &Policy, bundle: &Path) {
    let bottlerocket = policy.compatibility == policy::Compatibility::Bottlerocket;
    assert!(
        spec.hooks()
            .as_ref()
            .is_none_or(|h| h == &Default::default()),
        "hooks passed"
    );
    let root = spec.root().as_ref().expect("root");
    if bottlerocket {
        // runc's rule: the config's own.
        let asked = input.root().as_ref().and_then(|r| r.readonly());
        assert_eq!(root.readonly(), asked);
    } else {
        assert_eq!(root.readonly(), Some(true));
    }
    if let Some(process) = spec.process() {
        check_process(process, policy);
    }
    let linux = spec.linux().as_ref().expect("linux");
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    assert!(
        namespaces
            .iter()
            .any(|n| n.typ() == LinuxNamespaceType::Mount && n.path().is_none()),
        "no new mount namespace"
    );
    for ns in &namespaces {
        assert_ne!(ns.typ(), LinuxNamespaceType::User, "user namespace passed");
        if ns.path().is_some() {
            assert!(
                matches!(
                    ns.typ(),
                    LinuxNamespaceType::Network
                        | LinuxNamespaceType::Ipc
                        | LinuxNamespaceType::Uts
                        | LinuxNamespaceType::Pid
                ),
                "joins the {:?} namespace",
                ns.typ()
            );
        }
    }
    assert!(matches!(
        linux.rootfs_propagation().as_deref(),
        Some("slave" | "private")
    ));
    let masked = linux.masked_paths().clone().unwrap_or_default();
    for path in policy::MASKED_PATHS {
        assert!(masked.iter().any(|m| m == path), "{path} not masked");
    }
    assert!(
        !masked
            .iter()
            .any(|m| Path::new(m) == Path::new("/sys/firmware")),
        "/sys/firmware masked"
    );

    // The policy's mounts, in order, after the config's: written out here, independently.
    let under = |dir: &Path| policy.host_root.join(dir.strip_prefix("/").unwrap());
    let mut expected: Vec<(PathBuf, PathBuf, &str)> =
        ["/lib/modules", "/usr/src/kernels", "/sys/kernel/debug"]
            .iter()
            .map(|dir| {
                let access = if *dir == "/sys/kernel/debug" {
                    "rw"
                } else {
                    "ro"
                };
                (PathBuf::from(dir), under(Path::new(dir)), access)
            })
            .collect();
    expected.push((
        PathBuf::from(policy::HOST_ROOT_TARGET),
        policy.host_root.clone(),
        if bottlerocket { "ro-top" } else { "ro" },
    ));
    expected.push((
        PathBuf::from(policy::MOUNT_AREA_TARGET),
        policy.host_mount_area.clone(),
        "shared",
    ));
    for dir in &policy.shared_dirs {
        expected.push((
            Path::new(policy::HOST_ROOT_TARGET).join(dir.strip_prefix("/").unwrap()),
            under(dir),
            "shared",
        ));
    }
    {
        // The state the host root shows, outermost first: read-only and private over itself,
        // but where the container sees the mount area or a shared directory.
        let elsewhere = |d: &Path| {
            let inside = Path::new("/").join(d.strip_prefix(&policy.host_root).unwrap());
            inside.starts_with("/mnt") || policy.shared_dirs.iter().any(|s| inside.starts_with(s))
        };
        let mut kept: Vec<&PathBuf> = policy
            .protected_dirs
            .iter()
            .chain(&policy.state_dirs)
            .filter(|d| d.starts_with(&policy.host_root) && *d != &policy.host_root)
            .filter(|d| !elsewhere(d))
            .collect();
        kept.retain(|d| {
            !policy
                .protected_dirs
                .iter()
                .chain(&policy.state_dirs)
                .any(|o| o != *d && d.starts_with(o))
        });
        kept.dedup();
        for dir in kept {
            let inside = dir.strip_prefix(&policy.host_root).unwrap();
            expected.push((
                Path::new(policy::HOST_ROOT_TARGET).join(inside),
                dir.clone(),
                "ro-private",
            ));
        }
    }
    expected.push((
        PathBuf::from(policy::CERTS_TARGET),
        under(&policy.host_certs),
        "ro",
    ));
    let mounts = spec.mounts().clone().unwrap_or_default();
    let n = mounts.len();
    let first_policy = n
        .checked_sub(expected.len())
        .expect("the policy's own mounts are missing");
    assert_eq!(mounts[0].destination(), Path::new(policy::BOTTLEROCKET_DIR));
    for (mount, (destination, source, access)) in mounts[first_policy..].iter().zip(&expected) {
        assert_eq!(mount.destination(), destination);
        assert_eq!(
            mount.source().as_ref(),
            Some(source),
            "{}",
            destination.display()
        );
        let options = mount.options().clone().unwrap_or_default();
        let has = |o: &str| options.iter().any(|x| x == o);
        match *access {
            "ro" => assert!(has("ro") && has("rro") && !has("rw") && !has("rshared")),
            "ro-top" => assert!(has("ro") && !has("rro") && !has("rw") && !has("rshared")),
            "ro-private" => assert!(has("ro") && has("rro") && has("rprivate") && !has("rw")),
            "rw" => assert!(has("rw") && !has("rshared")),
            _ => assert!(has("rw") && has("rshared")),
        }
    }
    let reserved = Path::new(policy::HOST_ROOT_TARGET);
    let pseudo: HashSet<&str> = [
        "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2",
    ]
    .into();
    for mount in &mounts[1..first_policy] {
        let destination = mount.destination();
        assert!(
            destination != Path::new(policy::BOTTLEROCKET_DIR)
                && !destination.starts_with(reserved)
                && !expected.iter().any(|(d, _, _)| destination.starts_with(d)),
            "a config mount at {}",
            destination.display()
        );
        assert!(destination.is_absolute(), "{}", destination.display());
        assert_ne!(destination, Path::new("/"), "a mount over the root");
        assert!(
            !destination.starts_with("/proc")
                || (destination == Path::new("/proc") && mount.typ().as_deref() == Some("proc"))
                || (policy::is_bind(mount)
                    && policy::PROC_ALLOWED
                        .iter()
                        .any(|f| destination == Path::new(f))),
            "a mount over {}",
            destination.display()
        );
        assert!(
            !mount
                .options()
                .iter()
                .flatten()
                .any(|o| o == "rshared" || o == "shared"),
            "a config mount at {} asks to propagate",
            destination.display()
        );
        if policy::is_bind(mount) {
            let source = mount.source().as_deref().expect("bind source");
            let writable = source.starts_with(&policy.host_mount_area)
                || source.starts_with(bundle)
                || policy.writable_binds.iter().any(|w| source.starts_with(w));
            for protected in &policy.protected_dirs {
                assert!(
                    !(source.starts_with(protected) || (writable && protected.starts_with(source))),
                    "a bind of {} reaches the protected {}",
                    source.display(),
                    protected.display()
                );
            }
            let options = mount.options().clone().unwrap_or_default();
            assert!(
                writable || options.iter().any(|o| o == "ro"),
                "host bind of {} is writable: {options:?}",
                source.display()
            );
            assert!(
                writable || !options.iter().any(|o| o == "rw" || o == "rrw"),
                "host bind of {} keeps rw: {options:?}",
                source.display()
            );
        } else {
            let typ = mount.typ().as_deref().unwrap_or_default();
            assert!(pseudo.contains(typ), "a {typ:?} mount passed");
        }
    }
}

/// A config's own profile is kept as it is; without one, the policy's default applies unless
/// the policy says unconfined.
fn check_seccomp(input: &Spec, confined: &Spec, policy: &Policy) {
    let own = input.linux().as_ref().and_then(|l| l.seccomp().clone());
    let result = confined.linux().as_ref().and_then(|l| l.seccomp().clone());
    match (own, policy.seccomp) {
        (Some(own), _) => assert_eq!(result, Some(own), "a config's profile was changed"),
        (None, policy::seccomp::Mode::Default) => assert!(result.is_some(), "no default profile"),
        (None, policy::seccomp::Mode::Unconfined) => assert!(result.is_none()),
    }
}

/// One uncompressed tar layer applied to a rootfs inside a sandbox directory: it may fail (the
/// error is returned), but never writes outside the rootfs (a sibling sentinel stays as it was,
/// nothing else appears).
pub fn unpack(data: &[u8]) -> Result<(), String> {
    let sandbox = tempfile::tempdir().unwrap();
    let rootfs = sandbox.path().join("rootfs");
    let sentinel = sandbox.path().join("sentinel");
    std::fs::create_dir(&rootfs).unwrap();
    std::fs::create_dir(&sentinel).unwrap();
    std::fs::write(sentinel.join("file"), "untouched").unwrap();
    let budget = budget::Budget::new(budget::Limits::new(u64::MAX));
    let charge = budget.image(&rootfs).unwrap();
    let applied = unpack::apply_tar(data, &rootfs, &charge).map_err(|e| format!("{e:#}"));
    let mut outside: Vec<_> = std::fs::read_dir(sandbox.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    outside.sort();
    assert_eq!(outside, ["rootfs", "sentinel"], "written beside the rootfs");
    let sentinel_entries: Vec<_> = std::fs::read_dir(&sentinel)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(sentinel_entries, ["file"], "written into the sentinel");
    assert_eq!(
        std::fs::read_to_string(sentinel.join("file")).unwrap(),
        "untouched"
    );
    applied
}
