use super::*;
use libcontainer::oci_spec::runtime::{LinuxNamespaceBuilder, Root, User};
use serde_json::json;

fn base_spec() -> Spec {
    let mut spec = Spec::default();
    let mut root = Root::default();
    root.set_path(PathBuf::from("rootfs"));
    spec.set_root(Some(root));
    spec
}

fn spec_from(value: serde_json::Value) -> Spec {
    serde_json::from_value(value).expect("test spec parses")
}

fn policy() -> Policy {
    Policy {
        host_root: PathBuf::from("/host"),
        host_mount_area: PathBuf::from("/host/mnt"),
        extra_capabilities: vec![],
        writable_binds: vec![PathBuf::from("/var/lib/writable")],
        systemd_cgroup: false,
        ..Policy::default()
    }
}

fn bundle() -> &'static Path {
    Path::new("/bundles/b1")
}

fn masked(spec: &Spec) -> Vec<String> {
    spec.linux()
        .as_ref()
        .and_then(|linux| linux.masked_paths().clone())
        .unwrap_or_default()
}

fn applied(spec: Spec) -> Spec {
    apply(spec, &policy(), bundle()).expect("policy accepts")
}

fn caps(spec: &Spec) -> LinuxCapabilities {
    spec.process()
        .as_ref()
        .unwrap()
        .capabilities()
        .clone()
        .unwrap()
}

fn mount_at<'a>(spec: &'a Spec, destination: &str) -> &'a Mount {
    spec.mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new(destination))
        .unwrap_or_else(|| panic!("no mount at {destination}"))
}

fn options(mount: &Mount) -> Vec<&str> {
    mount
        .options()
        .iter()
        .flatten()
        .map(String::as_str)
        .collect()
}

fn with_namespaces(namespaces: &[(LinuxNamespaceType, Option<&str>)]) -> Spec {
    let mut spec = base_spec();
    let list = namespaces
        .iter()
        .map(|(typ, path)| {
            let mut builder = LinuxNamespaceBuilder::default().typ(*typ);
            if let Some(path) = path {
                builder = builder.path(PathBuf::from(path));
            }
            builder.build().unwrap()
        })
        .collect::<Vec<_>>();
    spec.linux_mut()
        .as_mut()
        .unwrap()
        .set_namespaces(Some(list));
    spec
}

fn with_capabilities(set: &str, names: &[&str]) -> Spec {
    let mut value = serde_json::to_value(base_spec()).unwrap();
    value["process"]["capabilities"] = json!({ set: names });
    spec_from(value)
}

#[test]
fn adds_sys_admin_even_when_the_config_drops_every_capability() {
    let mut spec = base_spec();
    spec.process_mut()
        .as_mut()
        .unwrap()
        .set_capabilities(Some(empty_capabilities()));
    let caps = caps(&applied(spec));
    for set in [caps.bounding(), caps.effective(), caps.permitted()] {
        assert!(set.as_ref().unwrap().contains(&Capability::SysAdmin));
    }
    // root keeps its capabilities across exec without the inheritable and ambient sets
    assert!(!caps
        .ambient()
        .as_ref()
        .unwrap()
        .contains(&Capability::SysAdmin));
}

#[test]
fn adds_sys_admin_when_the_config_has_no_capabilities_at_all() {
    let mut spec = base_spec();
    spec.process_mut().as_mut().unwrap().set_capabilities(None);
    let caps = caps(&applied(spec));
    assert!(caps
        .effective()
        .as_ref()
        .unwrap()
        .contains(&Capability::SysAdmin));
    assert_eq!(caps.bounding().as_ref().unwrap().len(), 1);
}

#[test]
fn non_root_user_gets_sys_admin_in_inheritable_and_ambient_too() {
    let mut spec = base_spec();
    let mut user = User::default();
    user.set_uid(1000);
    spec.process_mut().as_mut().unwrap().set_user(user);
    let caps = caps(&applied(spec));
    for set in [
        caps.bounding(),
        caps.effective(),
        caps.permitted(),
        caps.inheritable(),
        caps.ambient(),
    ] {
        assert!(set.as_ref().unwrap().contains(&Capability::SysAdmin));
    }
}

#[test]
fn keeps_requested_capabilities_inside_the_ceiling() {
    let spec = with_capabilities(
        "bounding",
        &["CAP_NET_ADMIN", "CAP_SYS_MODULE", "CAP_CHOWN"],
    );
    let bounding = caps(&applied(spec)).bounding().clone().unwrap();
    for cap in [
        Capability::NetAdmin,
        Capability::SysModule,
        Capability::Chown,
        Capability::SysAdmin,
    ] {
        assert!(bounding.contains(&cap), "{cap}");
    }
}

#[test]
fn refuses_a_capability_outside_the_ceiling_in_every_set() {
    for set in [
        "bounding",
        "effective",
        "inheritable",
        "permitted",
        "ambient",
    ] {
        let spec = with_capabilities(set, &["CAP_SYS_PTRACE"]);
        let err = apply(spec, &policy(), bundle()).unwrap_err();
        assert_eq!(
            err,
            PolicyError::Capabilities(BTreeMap::from([("CAP_SYS_PTRACE".to_string(), vec![set])])),
        );
        let message = err.to_string();
        assert!(
            message.contains("CAP_SYS_PTRACE") && message.contains(set),
            "{message}"
        );
    }
}

#[test]
fn names_every_refused_capability() {
    let spec = with_capabilities(
        "effective",
        &["CAP_SYS_RAWIO", "CAP_SYS_PTRACE", "CAP_KILL"],
    );
    let message = apply(spec, &policy(), bundle()).unwrap_err().to_string();
    assert!(
        message.contains("CAP_SYS_PTRACE (in effective), CAP_SYS_RAWIO (in effective)"),
        "{message}"
    );
}

#[test]
fn operator_extras_raise_the_ceiling() {
    let spec = with_capabilities("bounding", &["CAP_SYS_PTRACE"]);
    let mut policy = policy();
    policy.extra_capabilities = vec![Capability::SysPtrace];
    let bounding = caps(&apply(spec, &policy, bundle()).unwrap())
        .bounding()
        .clone()
        .unwrap();
    assert!(bounding.contains(&Capability::SysPtrace));
}

#[test]
fn nul_bytes_in_args_or_env_are_refused() {
    for field in ["args", "env"] {
        let mut process = base_spec().process().clone().unwrap();
        let values = Some(vec!["sh\0".to_string()]);
        match field {
            "args" => process.set_args(values),
            _ => process.set_env(values),
        };
        let err = apply_to_process(process, &policy()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("process.{field} contains a NUL byte, which no program can be given")
        );
    }
}

#[test]
fn exec_process_gets_the_same_rules() {
    let spec = with_capabilities("permitted", &["CAP_SYS_BOOT"]);
    let process = spec.process().clone().unwrap();
    let err = apply_to_process(process, &policy()).unwrap_err();
    assert!(err.to_string().contains("CAP_SYS_BOOT (in permitted)"));

    let mut process = base_spec().process().clone().unwrap();
    process.set_no_new_privileges(Some(false));
    let process = apply_to_process(process, &policy()).unwrap();
    let caps = process.capabilities().clone().unwrap();
    assert!(caps
        .effective()
        .as_ref()
        .unwrap()
        .contains(&Capability::SysAdmin));
    assert_eq!(process.no_new_privileges(), Some(true));
}

#[test]
fn no_new_privileges_stays_on() {
    let mut spec = base_spec();
    spec.process_mut()
        .as_mut()
        .unwrap()
        .set_no_new_privileges(Some(false));
    assert_eq!(
        applied(spec)
            .process()
            .as_ref()
            .unwrap()
            .no_new_privileges(),
        Some(true)
    );
}

#[test]
fn root_becomes_read_only_and_absolute() {
    let spec = applied(base_spec());
    let root = spec.root().as_ref().unwrap();
    assert_eq!(root.readonly(), Some(true));
    assert_eq!(root.path(), Path::new("/bundles/b1/rootfs"));

    let mut spec = base_spec();
    spec.root_mut()
        .as_mut()
        .unwrap()
        .set_path(PathBuf::from("/elsewhere/../rootfs"));
    assert_eq!(
        applied(spec).root().as_ref().unwrap().path(),
        Path::new("/rootfs")
    );
}

#[test]
fn refuses_a_spec_without_root() {
    let mut spec = base_spec();
    spec.set_root(None);
    assert_eq!(apply(spec, &policy(), bundle()), Err(PolicyError::NoRoot));
}

#[test]
fn host_root_is_bound_read_only_recursively_and_never_shared() {
    let spec = applied(base_spec());
    let mount = mount_at(&spec, HOST_ROOT_TARGET);
    assert_eq!(mount.source().as_deref(), Some(Path::new("/host")));
    let options = options(mount);
    for wanted in ["rbind", "ro", "rro", "rslave"] {
        assert!(options.contains(&wanted), "{options:?}");
    }
    assert!(!options.iter().any(|o| o.contains("shared")));
}

#[test]
fn mount_area_is_bound_read_write_rshared_after_the_host_root() {
    let spec = applied(base_spec());
    let mount = mount_at(&spec, MOUNT_AREA_TARGET);
    assert_eq!(mount.source().as_deref(), Some(Path::new("/host/mnt")));
    assert_eq!(options(mount), ["rbind", "rw", "rshared"]);
    let mounts = spec.mounts().as_ref().unwrap();
    let position = |d: &str| {
        mounts
            .iter()
            .position(|m| m.destination() == Path::new(d))
            .unwrap()
    };
    assert!(position(HOST_ROOT_TARGET) < position(MOUNT_AREA_TARGET));
    assert_eq!(
        position(BOTTLEROCKET_DIR),
        0,
        "the policy's tmpfs comes before any mount under it"
    );
}

#[test]
fn refuses_mounts_on_the_policy_paths() {
    for destination in [
        "/.bottlerocket",
        "/.bottlerocket/",
        "/.bottlerocket/rootfs",
        "/.bottlerocket/rootfs/etc",
        "/.bottlerocket/rootfs/mnt",
        "/.bottlerocket/rootfs/mnt/disk",
        "/x/../.bottlerocket/rootfs",
        "//.bottlerocket/./rootfs/",
        ".bottlerocket/rootfs",
        "/lib/modules",
        "/lib/modules/6.1/extra",
        "/usr/src/kernels",
        "/sys/kernel/debug",
        "/sys/kernel/debug/tracing",
        "/.bottlerocket/certs",
        "/.bottlerocket/certs/ca.pem",
        "/lib/x/../modules",
    ] {
        let mut value = serde_json::to_value(base_spec()).unwrap();
        value["mounts"] = json!([{"destination": destination, "type": "tmpfs", "source": "tmpfs"}]);
        let err = apply(spec_from(value), &policy(), bundle()).unwrap_err();
        assert!(
            matches!(err, PolicyError::ReservedMount(_)),
            "{destination}: {err}"
        );
    }
}

#[test]
fn allows_mounts_elsewhere_under_bottlerocket() {
    let mut value = serde_json::to_value(base_spec()).unwrap();
    value["mounts"] = json!([{"destination": "/.bottlerocket/bootstrap-containers/x", "type": "bind",
        "source": "/var/lib/bootstrap/x", "options": ["rbind", "rw"]}]);
    let spec = apply(spec_from(value), &policy(), bundle()).unwrap();
    mount_at(&spec, "/.bottlerocket/bootstrap-containers/x");
}

fn bind_options(source: &str, opts: &[&str]) -> Vec<String> {
    let mut value = serde_json::to_value(base_spec()).unwrap();
    value["mounts"] =
        json!([{"destination": "/data", "type": "bind", "source": source, "options": opts}]);
    let spec = applied(spec_from(value));
    options(mount_at(&spec, "/data"))
        .into_iter()
        .map(String::from)
        .collect()
}

#[test]
fn host_binds_become_read_only() {
    assert_eq!(
        bind_options("/etc", &["rbind", "rw"]),
        ["rbind", "ro", "rro"]
    );
    assert_eq!(bind_options("/etc", &["bind", "rrw"]), ["bind", "ro"]);
    assert_eq!(
        bind_options("/host/mnt/../etc", &["rbind"]),
        ["rbind", "ro", "rro"]
    );
}

#[test]
fn binds_from_the_mount_area_the_bundle_or_the_allow_list_stay_writable() {
    assert_eq!(bind_options("/host/mnt", &["rbind", "rw"]), ["rbind", "rw"]);
    assert_eq!(
        bind_options("/host/mnt/disk", &["rbind", "rw"]),
        ["rbind", "rw"]
    );
    assert_eq!(
        bind_options("/bundles/b1/data", &["rbind", "rw"]),
        ["rbind", "rw"]
    );
    assert_eq!(bind_options("data", &["rbind", "rw"]), ["rbind", "rw"]);
    assert_eq!(bind_options("/var/lib/writable/x", &["bind"]), ["bind"]);
    // a prefix of a name is not the same directory
    assert_eq!(
        bind_options("/var/lib/writable2", &["bind"]),
        ["bind", "ro"]
    );
}

#[test]
fn relative_bind_sources_resolve_against_the_bundle() {
    let mut value = serde_json::to_value(base_spec()).unwrap();
    value["mounts"] = json!([{"destination": "/data", "type": "none", "source": "../b2/data", "options": ["bind"]}]);
    let spec = applied(spec_from(value));
    let mount = mount_at(&spec, "/data");
    assert_eq!(
        mount.source().as_deref(),
        Some(Path::new("/bundles/b2/data"))
    );
    assert_eq!(
        options(mount),
        ["bind", "ro"],
        "outside the bundle after `..`"
    );
}

#[test]
fn adds_a_tmp_tmpfs_unless_the_bundle_mounts_tmp() {
    let spec = applied(base_spec());
    assert_eq!(mount_at(&spec, "/tmp").typ().as_deref(), Some("tmpfs"));

    let mut value = serde_json::to_value(base_spec()).unwrap();
    value["mounts"] = json!([{"destination": "/tmp/", "type": "bind", "source": "/bundles/b1/tmp", "options": ["bind"]}]);
    let spec = applied(spec_from(value));
    let tmps: Vec<_> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|m| m.destination() == Path::new("/tmp"))
        .collect();
    assert_eq!(tmps.len(), 1);
    assert_eq!(tmps[0].typ().as_deref(), Some("bind"));
}

#[test]
fn requires_an_own_mount_namespace() {
    let spec = with_namespaces(&[(LinuxNamespaceType::Pid, None)]);
    assert_eq!(
        apply(spec, &policy(), bundle()),
        Err(PolicyError::NoMountNamespace)
    );

    let spec = with_namespaces(&[(LinuxNamespaceType::Mount, Some("/proc/1/ns/mnt"))]);
    assert!(matches!(
        apply(spec, &policy(), bundle()),
        Err(PolicyError::JoinedNamespace { .. })
    ));
}

#[test]
fn refuses_a_user_namespace() {
    let spec = with_namespaces(&[
        (LinuxNamespaceType::Mount, None),
        (LinuxNamespaceType::User, None),
    ]);
    assert_eq!(
        apply(spec, &policy(), bundle()),
        Err(PolicyError::UserNamespace)
    );
    let spec = with_namespaces(&[
        (LinuxNamespaceType::Mount, None),
        (LinuxNamespaceType::User, Some("/proc/1/ns/user")),
    ]);
    assert_eq!(
        apply(spec, &policy(), bundle()),
        Err(PolicyError::UserNamespace)
    );
}

#[test]
fn net_ipc_uts_pid_may_be_joined_by_path_others_not() {
    for typ in [
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Pid,
    ] {
        let spec = with_namespaces(&[
            (LinuxNamespaceType::Mount, None),
            (typ, Some("/proc/1/ns/x")),
        ]);
        assert!(apply(spec, &policy(), bundle()).is_ok(), "{typ}");
    }
    for typ in [LinuxNamespaceType::Cgroup, LinuxNamespaceType::Time] {
        let spec = with_namespaces(&[
            (LinuxNamespaceType::Mount, None),
            (typ, Some("/proc/1/ns/x")),
        ]);
        let err = apply(spec, &policy(), bundle()).unwrap_err();
        assert!(err.to_string().contains(&typ.to_string()), "{err}");
    }
}

#[test]
fn refuses_hooks() {
    let mut value = serde_json::to_value(base_spec()).unwrap();
    value["hooks"] = json!({"prestart": [{"path": "/bin/sh"}]});
    assert_eq!(
        apply(spec_from(value), &policy(), bundle()),
        Err(PolicyError::Hooks)
    );
    let mut value = serde_json::to_value(base_spec()).unwrap();
    value["hooks"] = json!({});
    assert!(apply(spec_from(value), &policy(), bundle()).is_ok());
}

#[test]
fn rootfs_propagation_is_never_shared() {
    for (asked, expected) in [
        (None, "slave"),
        (Some("shared"), "slave"),
        (Some("rshared"), "slave"),
        (Some("slave"), "slave"),
        (Some("private"), "private"),
        (Some("rprivate"), "private"),
    ] {
        let mut spec = base_spec();
        spec.linux_mut()
            .as_mut()
            .unwrap()
            .set_rootfs_propagation(asked.map(String::from));
        let spec = applied(spec);
        assert_eq!(
            spec.linux()
                .as_ref()
                .unwrap()
                .rootfs_propagation()
                .as_deref(),
            Some(expected)
        );
    }
}

#[test]
fn masked_paths_cannot_be_unmasked() {
    let mut spec = base_spec();
    spec.linux_mut()
        .as_mut()
        .unwrap()
        .set_masked_paths(Some(vec!["/proc/extra".into()]));
    let masked = masked(&applied(spec));
    for path in MASKED_PATHS.iter().chain(&["/proc/extra"]) {
        assert!(masked.iter().any(|m| m == path), "{path}");
    }
}

#[test]
fn applying_twice_changes_nothing_more() {
    let once = applied(base_spec());
    let mut again_input = once.clone();
    // the policy's own mounts would be refused as input: strip them as a bundle would not have them
    again_input.set_mounts(Some(
        once.mounts()
            .clone()
            .unwrap()
            .into_iter()
            .filter(|m| {
                !m.destination().starts_with(BOTTLEROCKET_DIR)
                    && !WHEN_PRESENT.iter().any(|d| m.destination() == Path::new(d))
            })
            .collect(),
    ));
    assert_eq!(applied(again_input), once);
}

#[test]
fn clean_never_climbs_above_root() {
    assert_eq!(clean(Path::new("/../../etc")), Path::new("/etc"));
    assert_eq!(clean(Path::new("/a/./b//c/..")), Path::new("/a/b"));
    assert_eq!(clean(Path::new("rel/x")), Path::new("/rel/x"));
}

#[test]
fn only_pseudo_filesystems_besides_binds() {
    for typ in [
        "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2",
    ] {
        let mut value = serde_json::to_value(base_spec()).unwrap();
        value["mounts"] = json!([{"destination": "/m", "type": typ, "source": typ}]);
        assert!(
            apply(spec_from(value), &policy(), bundle()).is_ok(),
            "{typ}"
        );
    }
    for (typ, options) in [
        (
            "overlay",
            json!(["lowerdir=/x", "upperdir=/etc", "workdir=/w"]),
        ),
        ("ext4", json!([])),
        ("devtmpfs", json!([])),
        ("", json!([])),
    ] {
        let mut value = serde_json::to_value(base_spec()).unwrap();
        value["mounts"] =
            json!([{"destination": "/m", "type": typ, "source": "/dev/sda1", "options": options}]);
        let err = apply(spec_from(value), &policy(), bundle()).unwrap_err();
        assert!(matches!(err, PolicyError::MountType { .. }), "{typ}: {err}");
    }
}

fn with_linux(linux: serde_json::Value) -> Spec {
    let mut spec = base_spec();
    let mut merged = serde_json::to_value(spec.linux().clone().unwrap()).unwrap();
    for (key, value) in linux.as_object().unwrap() {
        merged[key] = value.clone();
    }
    spec.set_linux(Some(serde_json::from_value(merged).unwrap()));
    spec
}

fn cgroups_path_verdict(path: &str, systemd: bool) -> Result<(), PolicyError> {
    let policy = Policy {
        systemd_cgroup: systemd,
        ..policy()
    };
    apply(
        with_linux(json!({ "cgroupsPath": path })),
        &policy,
        bundle(),
    )
    .map(|_| ())
}

#[test]
fn cgroups_paths_name_a_cgroup_of_the_containers_own() {
    for path in ["/victim-svc", "/kubepods/besteffort/pod12/abc", "/a.b/c_d"] {
        assert_eq!(cgroups_path_verdict(path, false), Ok(()), "{path}");
        assert_eq!(cgroups_path_verdict(path, true), Ok(()), "{path}");
    }
    for path in [
        "kubepods-besteffort-pod12.slice:cri-containerd:abc",
        ":youki:x",
    ] {
        assert_eq!(cgroups_path_verdict(path, true), Ok(()), "{path}");
    }
    // Relative: from each hierarchy's root, as runc takes it (runtime-tools' cgroups tests).
    for path in [
        "runtime-tools/abc",
        "victim-svc",
        "kubepods.slice:cri-containerd:abc",
    ] {
        assert_eq!(cgroups_path_verdict(path, false), Ok(()), "{path}");
    }
    for (path, systemd) in [
        ("a/b", true),
        ("a/../../b", false),
        ("./a", false),
        ("../../../tmp", false),
        ("/a/../victim", false),
        ("/a/./b", false),
        ("/", false),
        ("", false),
        ("", true),
        ("/", true),
        ("a:b", true),
        ("a:b:c:d", true),
        ("notaslice:p:n", true),
        ("x.slice:p:..", true),
        ("x.slice:p/q:n", true),
        ("x.slice::n", true),
        ("/a/../../victim", true),
    ] {
        assert!(
            matches!(
                cgroups_path_verdict(path, systemd),
                Err(PolicyError::CgroupsPath { .. })
            ),
            "{path:?} (systemd {systemd}) was accepted"
        );
    }
}

#[test]
fn resource_file_names_stay_in_the_cgroup() {
    let verdict = |resources: serde_json::Value| {
        apply(
            with_linux(json!({ "resources": resources })),
            &policy(),
            bundle(),
        )
        .map(|_| ())
    };
    assert_eq!(verdict(json!({"unified": {"memory.high": "1G"}})), Ok(()));
    assert_eq!(
        verdict(json!({"hugepageLimits": [{"pageSize": "2MB", "limit": 1}]})),
        Ok(())
    );
    for resources in [
        json!({"unified": {"/proc/sys/kernel/core_pattern": "|/x"}}),
        json!({"unified": {"../../x": "1"}}),
        json!({"unified": {"a/b": "1"}}),
        json!({"unified": {"..": "1"}}),
        json!({"hugepageLimits": [{"pageSize": "2MB/../../../x", "limit": 1}]}),
    ] {
        assert!(
            matches!(
                verdict(resources.clone()),
                Err(PolicyError::CgroupFile { .. })
            ),
            "{resources} was accepted"
        );
    }
}

#[test]
fn bottlerocket_environment_mounts_follow_the_configs() {
    let mut value = serde_json::to_value(base_spec()).unwrap();
    value["mounts"] =
        json!([{"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["ro"]}]);
    let spec = apply(spec_from(value), &policy(), bundle()).unwrap();
    let mounts = spec.mounts().clone().unwrap();
    let at = |d: &str| {
        let i = mounts
            .iter()
            .position(|m| m.destination() == Path::new(d))
            .unwrap_or_else(|| panic!("no mount at {d}"));
        (i, &mounts[i])
    };
    let options = |m: &Mount| m.options().clone().unwrap_or_default();
    let (sys, _) = at("/sys");
    for (dir, source, read_only) in [
        ("/lib/modules", "/host/lib/modules", true),
        ("/usr/src/kernels", "/host/usr/src/kernels", true),
        ("/sys/kernel/debug", "/host/sys/kernel/debug", false),
        (CERTS_TARGET, "/host/etc/ssl/certs", true),
    ] {
        let (i, mount) = at(dir);
        assert!(i > sys, "{dir} comes after the config's /sys");
        assert_eq!(mount.source().as_deref(), Some(Path::new(source)));
        assert_eq!(
            options(mount).contains(&"rro".to_string()),
            read_only,
            "{dir}"
        );
        assert!(!options(mount).contains(&"rshared".to_string()), "{dir}");
    }
    for dir in ["/var/lib/containerd", "/var/lib/docker", "/var/lib/kubelet"] {
        let (_, mount) = at(&format!("{HOST_ROOT_TARGET}{dir}"));
        assert_eq!(
            mount.source().as_deref(),
            Some(Path::new(&format!("/host{dir}")))
        );
        assert_eq!(options(mount), ["rbind", "rw", "rshared"]);
    }
}

#[test]
fn shared_dirs_come_from_the_policy_alone() {
    let mut policy = policy();
    policy.shared_dirs = vec![PathBuf::from("/data/x")];
    let spec = apply(base_spec(), &policy, bundle()).unwrap();
    let shared: Vec<_> = spec
        .mounts()
        .iter()
        .flatten()
        .filter(|m| m.options().iter().flatten().any(|o| o == "rshared"))
        .map(|m| m.destination().clone())
        .collect();
    assert_eq!(
        shared,
        [
            PathBuf::from(MOUNT_AREA_TARGET),
            PathBuf::from("/.bottlerocket/rootfs/data/x")
        ]
    );
}

#[test]
fn sys_firmware_is_not_masked() {
    // Spec::default() has runc's list, /sys/firmware included, as CRI's configs do.
    let spec = base_spec();
    assert!(masked(&spec).iter().any(|m| m == "/sys/firmware"));
    let masked = masked(&applied(spec));
    assert!(!masked.iter().any(|m| m == "/sys/firmware"), "{masked:?}");
    assert!(masked.iter().any(|m| m == "/proc/kcore"));
}

#[test]
fn seccomp_is_a_default_not_a_ceiling() {
    let seccomp = |spec: &Spec| spec.linux().as_ref().unwrap().seccomp().clone();
    let default = seccomp(&applied(base_spec())).expect("a default profile");
    assert_eq!(
        default.default_action(),
        libcontainer::oci_spec::runtime::LinuxSeccompAction::ScmpActErrno
    );

    // A config's own profile is used as it is, however loose.
    let mut value = serde_json::to_value(base_spec()).unwrap();
    value["linux"]["seccomp"] = json!({"defaultAction": "SCMP_ACT_ALLOW"});
    let own = seccomp(&applied(spec_from(value))).unwrap();
    assert_eq!(
        own.default_action(),
        libcontainer::oci_spec::runtime::LinuxSeccompAction::ScmpActAllow
    );
    assert!(own.syscalls().is_none());

    let mut unconfined = policy();
    unconfined.seccomp = seccomp::Mode::Unconfined;
    let spec = apply(base_spec(), &unconfined, bundle()).unwrap();
    assert!(seccomp(&spec).is_none());
}

#[test]
fn config_mounts_never_ask_to_propagate() {
    let mut value = serde_json::to_value(base_spec()).unwrap();
    value["mounts"] = json!([{"destination": "/data", "type": "bind", "source": "/mnt/x",
        "options": ["rbind", "rw", "rshared"]}, {"destination": "/t", "type": "tmpfs",
        "source": "tmpfs", "options": ["shared"]}]);
    let spec = apply(spec_from(value), &policy(), bundle()).unwrap();
    for destination in ["/data", "/t"] {
        let options = mount_at(&spec, destination).options().clone().unwrap();
        assert!(
            !options.iter().any(|o| o.ends_with("shared")),
            "{options:?}"
        );
    }
}

#[test]
fn the_bottlerocket_mode_honours_root_readonly_and_binds_the_host_root_top_only() {
    let bottlerocket = Policy {
        compatibility: Compatibility::Bottlerocket,
        protected_dirs: vec![
            PathBuf::from("/host/run/bootstrap-runc"),
            PathBuf::from("/elsewhere"),
        ],
        state_dirs: vec![
            PathBuf::from("/host/var/lib/bootstrap-containers"),
            PathBuf::from("/host/run/bootstrap-runc/inner"),
            PathBuf::from("/host"),
        ],
        ..policy()
    };
    for (asked, strict, mode) in [
        (None, Some(true), None),
        (Some(false), Some(true), Some(false)),
        (Some(true), Some(true), Some(true)),
    ] {
        let mut spec = base_spec();
        spec.root_mut().as_mut().unwrap().set_readonly(asked);
        let readonly = |policy: &Policy| {
            apply(spec.clone(), policy, bundle())
                .unwrap()
                .root()
                .as_ref()
                .unwrap()
                .readonly()
        };
        assert_eq!(readonly(&policy()), strict, "strict, asked {asked:?}");
        assert_eq!(
            readonly(&bottlerocket),
            mode,
            "bottlerocket, asked {asked:?}"
        );
    }
    let strict = Policy {
        compatibility: Compatibility::Strict,
        ..bottlerocket.clone()
    };
    let strict = apply(base_spec(), &strict, bundle()).unwrap();
    assert!(options(mount_at(&strict, HOST_ROOT_TARGET)).contains(&"rro"));
    assert_eq!(
        options(mount_at(
            &strict,
            "/.bottlerocket/rootfs/run/bootstrap-runc"
        )),
        ["rbind", "ro", "rro", "rprivate"],
        "the state is bound over itself in both modes"
    );
    let spec = apply(base_spec(), &bottlerocket, bundle()).unwrap();
    let host_root = options(mount_at(&spec, HOST_ROOT_TARGET));
    assert!(
        host_root.contains(&"ro") && !host_root.contains(&"rro"),
        "{host_root:?}"
    );
    // The state the host root shows, outermost only, read-only over itself.
    let kept: Vec<(String, String, Vec<&str>)> = spec
        .mounts()
        .iter()
        .flatten()
        .filter(|m| m.destination().starts_with(HOST_ROOT_TARGET))
        .filter(|m| m.destination() != Path::new(HOST_ROOT_TARGET))
        .filter(|m| options(m).contains(&"rro"))
        .map(|m| {
            (
                m.source().as_ref().unwrap().display().to_string(),
                m.destination().display().to_string(),
                options(m),
            )
        })
        .collect();
    assert_eq!(
        kept,
        [
            (
                "/host/run/bootstrap-runc".to_string(),
                "/.bottlerocket/rootfs/run/bootstrap-runc".to_string(),
                vec!["rbind", "ro", "rro", "rprivate"]
            ),
            (
                "/host/var/lib/bootstrap-containers".to_string(),
                "/.bottlerocket/rootfs/var/lib/bootstrap-containers".to_string(),
                vec!["rbind", "ro", "rro", "rprivate"]
            ),
        ]
    );
}
