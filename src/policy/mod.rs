//! The bootstrap policy: one pure function from the bundle's spec to the spec we run.
//!
//! Whatever the config asks for, the result has CAP_SYS_ADMIN, a read-only root, the host root
//! read-only at `/.bottlerocket/rootfs` and the host's mount area read-write and rshared at
//! `/.bottlerocket/rootfs/mnt` (in the [`Compatibility::Bottlerocket`] mode, the root as the
//! config says and the host root's top mount read-only, as Bottlerocket binds them); and nothing in it exceeds the policy (capabilities, mounts,
//! namespaces, hooks). It also builds the rest of the world Bottlerocket's host-ctr gives a
//! bootstrap container: the storage directories read-write and rshared, the kernel's modules and
//! sources, the host's certificates and debugfs, and a default seccomp profile.

pub mod capabilities;
pub(crate) mod file;
pub mod seccomp;

use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path, PathBuf};

use libcontainer::oci_spec::runtime::{
    Capabilities, Capability, Linux, LinuxCapabilities, LinuxNamespace, LinuxNamespaceType,
    LinuxResources, Mount, Process, Spec,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Where every policy-owned mount lives inside the container.
pub const BOTTLEROCKET_DIR: &str = "/.bottlerocket";
pub const HOST_ROOT_TARGET: &str = "/.bottlerocket/rootfs";
pub const MOUNT_AREA_TARGET: &str = "/.bottlerocket/rootfs/mnt";
/// Where the host's CA certificates (`host-certs`) are, read-only (host-ctr's path).
pub const CERTS_TARGET: &str = "/.bottlerocket/certs";
/// The host's kernel modules, read-only at the same path (host-ctr's), for the image's own kmod.
pub(crate) const MODULES_DIR: &str = "/lib/modules";
/// The host's kernel sources and headers, read-only at the same path (host-ctr's).
pub(crate) const KERNEL_SOURCES_DIR: &str = "/usr/src/kernels";
/// The host's debugfs, read-write (host-ctr's), when debugfs is mounted there.
pub(crate) const DEBUGFS_DIR: &str = "/sys/kernel/debug";

/// Bottlerocket's bootstrap mounts that exist only when their host source does: the policy
/// always asks for them, and the runtime drops those the host lacks (runtime/host_sources.rs).
/// A config may mount nothing at or under them.
pub(crate) const WHEN_PRESENT: [&str; 4] =
    [MODULES_DIR, KERNEL_SOURCES_DIR, DEBUGFS_DIR, CERTS_TARGET];

/// runc's default masked paths but `/sys/firmware`; a config may add to them, never remove
/// them.
pub const MASKED_PATHS: [&str; 10] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/devices/virtual/powercap",
];

/// Unmasked for bootstrap containers, even if the config masks it (Bottlerocket's host-ctr).
pub(crate) const UNMASKED: &str = "/sys/firmware";

/// Filesystems a config may mount besides binds: they expose nothing of the host's disks
/// (an overlay's upperdir or a block device's filesystem would, writable, bypassing the
/// read-only rule for host paths).
const PSEUDO_FILESYSTEMS: [&str; 7] = [
    "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2",
];

/// The only mounts under `/proc` besides procfs itself: binds onto these files (runc's
/// `checkProcMount`, for lxcfs), never over anything else of the kernel's (CVE-2019-19921).
pub const PROC_ALLOWED: [&str; 10] = [
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
];

/// How close to Bottlerocket's own bootstrap container the policy builds one (`compatibility`
/// in the policy file, `--compatibility`): the operator's choice, recorded with each container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Compatibility {
    /// This product's design: the container's root read-only, the host root read-only
    /// recursively.
    #[default]
    Strict,
    /// Bottlerocket's container: the root writable unless the config's `root.readonly` says
    /// otherwise (runc's rule), the host root bound `rbind,ro` (its top mount read-only, the
    /// host's other mounts under it with their own flags), but the runtime's and the
    /// supervisor's state (read-only binds) and the host's procfs, sysfs and cgroupfs (made
    /// read-only by the runtime) still read-only.
    Bottlerocket,
}

/// The operator's inputs to the policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Policy {
    pub host_root: PathBuf,
    pub host_mount_area: PathBuf,
    pub extra_capabilities: Vec<Capability>,
    pub writable_binds: Vec<PathBuf>,
    /// Host directories (absolute, read under `host_root`) bound read-write and rshared at
    /// `/.bottlerocket/rootfs<dir>`, created (0711) when missing: Bottlerocket's storage
    /// directories, so that a disk mounted there inside reaches the host.
    #[serde(default = "default_shared_dirs")]
    pub shared_dirs: Vec<PathBuf>,
    /// The host's CA certificates directory (absolute, read under `host_root`), read-only at
    /// `/.bottlerocket/certs` when present.
    #[serde(default = "default_host_certs")]
    pub host_certs: PathBuf,
    /// The seccomp profile of a config that brings none.
    #[serde(default)]
    pub seccomp: seccomp::Mode,
    /// The cgroup driver (`--systemd-cgroup`, not a policy-file key): it decides which form
    /// `linux.cgroupsPath` must have. Recorded with the container like the rest.
    #[serde(default)]
    pub systemd_cgroup: bool,
    /// Host directories no container may reach (`--protected-dirs`, not a policy-file key; the
    /// runtime adds its state root and seccomp cache, the supervisor its run directory and
    /// its state's records, images and seccomp cache): no bind source is or lies inside one,
    /// nothing writable holds one. Absolute.
    #[serde(default)]
    pub protected_dirs: Vec<PathBuf>,
    /// The Bottlerocket mode or not.
    #[serde(default)]
    pub compatibility: Compatibility,
    /// Runtimes' and supervisors' whole state and run directories (`state-dirs` in the policy
    /// file, default [`default_state_dirs`]; the supervisor adds its own): containers' roots
    /// lie inside them, so they cannot all be protected, but with `protected_dirs` they are
    /// bound read-only and private over themselves where the host root shows them, so that
    /// neither a writable host filesystem (the Bottlerocket mode) nor a mount made there later
    /// (a sibling's root) reaches a container. Absolute.
    #[serde(default)]
    pub state_dirs: Vec<PathBuf>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            host_root: PathBuf::from("/"),
            host_mount_area: PathBuf::from("/mnt"),
            extra_capabilities: Vec::new(),
            writable_binds: Vec::new(),
            shared_dirs: default_shared_dirs(),
            host_certs: default_host_certs(),
            seccomp: seccomp::Mode::default(),
            systemd_cgroup: false,
            protected_dirs: Vec::new(),
            compatibility: Compatibility::Strict,
            state_dirs: default_state_dirs(),
        }
    }
}

/// Bottlerocket's storage directories: containerd's, docker's and kubelet's state.
pub(crate) fn default_shared_dirs() -> Vec<PathBuf> {
    ["/var/lib/containerd", "/var/lib/docker", "/var/lib/kubelet"]
        .into_iter()
        .map(PathBuf::from)
        .collect()
}

/// The supervisor's default state and run directories, and containerd's state (its runtimes'
/// roots): what a runtime started by containerd, which passes no flags, keeps read-only too.
pub(crate) fn default_state_dirs() -> Vec<PathBuf> {
    [
        "/var/lib/bootstrap-containers",
        "/run/bootstrap-containers",
        "/run/containerd",
    ]
    .into_iter()
    .map(PathBuf::from)
    .collect()
}

/// Where Debian, Ubuntu and Bottlerocket keep the trusted CA certificates.
pub(crate) fn default_host_certs() -> PathBuf {
    PathBuf::from("/etc/ssl/certs")
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("the bootstrap policy refuses capabilities outside its ceiling: {}; an operator can allow them with extra-capabilities in the policy file", describe_refused(.0))]
    Capabilities(BTreeMap<String, Vec<&'static str>>),
    #[error("the bootstrap policy refuses the mount at {0}: {BOTTLEROCKET_DIR} itself, everything under {HOST_ROOT_TARGET}, and {reserved} with all under them are the policy's own", reserved = WHEN_PRESENT.join(", "))]
    ReservedMount(PathBuf),
    #[error("the bootstrap policy refuses the {typ:?} mount at {destination}: besides binds, a config may only mount {}; the container can mount other filesystems itself", PSEUDO_FILESYSTEMS.join(", "))]
    MountType { typ: String, destination: PathBuf },
    #[error("the bootstrap policy requires a new mount namespace; the config has none")]
    NoMountNamespace,
    #[error("the bootstrap policy refuses to join the {ns} namespace at {path}: only the net, ipc, uts and pid namespaces may be joined by path")]
    JoinedNamespace { ns: String, path: PathBuf },
    #[error("the bootstrap policy refuses a user namespace: it would break mount propagation and change what the capabilities mean")]
    UserNamespace,
    #[error("the bootstrap policy refuses hooks: they would run on the host outside the policy")]
    Hooks,
    #[error("the bootstrap policy refuses process.cwd {0}: a working directory under /proc can name a descriptor the runtime holds, outside the container's root (runc CVE-2024-21626)")]
    ProcCwd(PathBuf),
    #[error("the bootstrap policy refuses the {typ:?} mount at {destination}: besides proc itself, only binds onto runc's allowed /proc files ({}) may be mounted under /proc", PROC_ALLOWED.join(", "))]
    ProcMount { typ: String, destination: PathBuf },
    #[error("the bootstrap policy refuses the mount at /: it would replace the container's root (root.path) after the runtime checked it")]
    MountOverRoot,
    #[error("the bootstrap policy refuses the bind of {} at {}: it {relation} {}, the runtime's own state, which no container may reach", .from.display(), .destination.display(), .protected.display())]
    ProtectedSource {
        from: PathBuf,
        destination: PathBuf,
        relation: &'static str,
        protected: PathBuf,
    },
    #[error("the config has no root filesystem (root.path)")]
    NoRoot,
    #[error("process.{0} contains a NUL byte, which no program can be given")]
    Nul(&'static str),
    #[error("the bootstrap policy refuses linux.cgroupsPath {path:?}: {reason}")]
    CgroupsPath { path: PathBuf, reason: &'static str },
    #[error("the bootstrap policy refuses linux.resources.{field} {name:?}: it must name a file of the container's own cgroup, a plain name without '/'")]
    CgroupFile { field: &'static str, name: String },
}

fn describe_refused(refused: &BTreeMap<String, Vec<&'static str>>) -> String {
    refused
        .iter()
        .map(|(cap, sets)| format!("{cap} (in {})", sets.join(", ")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Applies the policy to the spec of a bundle at `bundle` (an absolute path). Relative paths in
/// the spec are taken against the bundle; mount sources should already have symlinks resolved.
pub fn apply(mut spec: Spec, policy: &Policy, bundle: &Path) -> Result<Spec, PolicyError> {
    if spec
        .hooks()
        .as_ref()
        .is_some_and(|hooks| hooks != &Default::default())
    {
        return Err(PolicyError::Hooks);
    }

    let mut root = spec.root().clone().ok_or(PolicyError::NoRoot)?;
    root.set_path(clean(&bundle.join(root.path())));
    if policy.compatibility == Compatibility::Strict {
        root.set_readonly(Some(true));
    }
    spec.set_root(Some(root));

    if let Some(process) = spec.process_mut() {
        confine_process(process, policy)?;
    }

    let linux = spec.linux_mut().get_or_insert_with(Linux::default);
    check_namespaces(linux.namespaces().as_deref().unwrap_or_default())?;
    if let Some(path) = linux.cgroups_path() {
        check_cgroups_path(path, policy.systemd_cgroup)?;
    }
    if let Some(resources) = linux.resources() {
        check_resources(resources)?;
    }
    // `shared` would carry every mount of the container back to the host: only the mount area
    // propagates, and our own code sets that up.
    let propagation = match linux.rootfs_propagation().as_deref() {
        Some("private" | "rprivate") => "private",
        _ => "slave",
    };
    linux.set_rootfs_propagation(Some(propagation.to_string()));
    if linux.seccomp().is_none() && policy.seccomp == seccomp::Mode::Default {
        let ceiling = capabilities::ceiling(&policy.extra_capabilities);
        linux.set_seccomp(Some(seccomp::default_profile(&ceiling)));
    }
    let mut masked = linux.masked_paths().clone().unwrap_or_default();
    // host-ctr unmasks it for bootstrap containers; runc's and containerd's defaults mask it.
    masked.retain(|path| clean(Path::new(path)) != Path::new(UNMASKED));
    for path in MASKED_PATHS {
        if !masked.iter().any(|m| m == path) {
            masked.push(path.to_string());
        }
    }
    linux.set_masked_paths(Some(masked));

    let mounts = confine_mounts(spec.mounts().clone().unwrap_or_default(), policy, bundle)?;
    spec.set_mounts(Some(mounts));
    Ok(spec)
}

/// The same rules for a process given to `exec`.
pub fn apply_to_process(mut process: Process, policy: &Policy) -> Result<Process, PolicyError> {
    confine_process(&mut process, policy)?;
    Ok(process)
}

fn confine_process(process: &mut Process, policy: &Policy) -> Result<(), PolicyError> {
    // exec(2) would cut these strings short at the NUL, or fail without saying why.
    for (field, values) in [("args", process.args()), ("env", process.env())] {
        if values.iter().flatten().any(|v| v.contains('\0')) {
            return Err(PolicyError::Nul(field));
        }
    }
    if clean(process.cwd()).starts_with("/proc") {
        return Err(PolicyError::ProcCwd(process.cwd().clone()));
    }
    let ceiling = capabilities::ceiling(&policy.extra_capabilities);
    let requested = process
        .capabilities()
        .clone()
        .unwrap_or_else(empty_capabilities);
    let sets = [
        ("bounding", requested.bounding()),
        ("effective", requested.effective()),
        ("inheritable", requested.inheritable()),
        ("permitted", requested.permitted()),
        ("ambient", requested.ambient()),
    ];
    let mut refused: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
    for (set_name, set) in sets {
        for cap in set.iter().flatten().filter(|cap| !ceiling.contains(cap)) {
            refused
                .entry(capabilities::name(*cap))
                .or_default()
                .push(set_name);
        }
    }
    if !refused.is_empty() {
        return Err(PolicyError::Capabilities(refused));
    }

    let with_sys_admin = |set: &Option<Capabilities>| -> Option<Capabilities> {
        let mut set = set.clone().unwrap_or_default();
        set.insert(Capability::SysAdmin);
        Some(set)
    };
    let mut granted = requested.clone();
    granted
        .set_bounding(with_sys_admin(requested.bounding()))
        .set_effective(with_sys_admin(requested.effective()))
        .set_permitted(with_sys_admin(requested.permitted()));
    // A non-root user loses everything but ambient capabilities across exec.
    if process.user().uid() != 0 {
        granted
            .set_inheritable(with_sys_admin(requested.inheritable()))
            .set_ambient(with_sys_admin(requested.ambient()));
    }
    process.set_capabilities(Some(granted));
    process.set_no_new_privileges(Some(true));
    Ok(())
}

fn empty_capabilities() -> LinuxCapabilities {
    let none = || Some(HashSet::new());
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(none())
        .set_effective(none())
        .set_inheritable(none())
        .set_permitted(none())
        .set_ambient(none());
    caps
}

fn check_namespaces(namespaces: &[LinuxNamespace]) -> Result<(), PolicyError> {
    let mut has_mount = false;
    for ns in namespaces {
        match (ns.typ(), ns.path()) {
            (LinuxNamespaceType::User, _) => return Err(PolicyError::UserNamespace),
            (LinuxNamespaceType::Mount, None) => has_mount = true,
            (
                LinuxNamespaceType::Network
                | LinuxNamespaceType::Ipc
                | LinuxNamespaceType::Uts
                | LinuxNamespaceType::Pid,
                _,
            )
            | (_, None) => {}
            (other, Some(path)) => {
                return Err(PolicyError::JoinedNamespace {
                    ns: other.to_string(),
                    path: path.clone(),
                })
            }
        }
    }
    if has_mount {
        Ok(())
    } else {
        Err(PolicyError::NoMountNamespace)
    }
}

/// The container's cgroup is one the runtime creates for it, never a host cgroup reached by
/// path: libcgroups 0.7.0 only strips a leading `/`, so `..` would aim its mkdir, resource
/// writes, freezer and kill-all anywhere. With the cgroupfs driver the path has no `.` or `..`
/// and is not the root (runc's `CleanPath` form); a relative one is taken from each
/// hierarchy's root (the runtime-spec's "runtime-determined location", as libcgroups reads it;
/// runc puts it under its own cgroup); with
/// `--systemd-cgroup` it may also be runc's `slice:prefix:name` (CRI's
/// `kubepods-<qos>-pod<uid>.slice:cri-containerd:<id>`). That the cgroup does not exist yet is
/// the runtime's check (runtime/cgroup.rs): it depends on the host.
fn check_cgroups_path(path: &Path, systemd: bool) -> Result<(), PolicyError> {
    let refuse = |reason| {
        Err(PolicyError::CgroupsPath {
            path: path.to_path_buf(),
            reason,
        })
    };
    let text = path.to_string_lossy();
    if text.contains('\0') {
        return refuse("it contains a NUL byte");
    }
    if text.is_empty() {
        return refuse(
            "it is empty, which libcgroups takes as the runtime's own cgroup or the root",
        );
    }
    if !path.is_absolute() && systemd && text.contains(':') {
        let parts: Vec<&str> = text.split(':').collect();
        let [slice, prefix, name] = parts[..] else {
            return refuse(
                "with --systemd-cgroup it must be an absolute path or slice:prefix:name",
            );
        };
        let plain =
            |part: &str| !part.is_empty() && part != "." && part != ".." && !part.contains('/');
        if !(slice.is_empty() || (plain(slice) && slice.ends_with(".slice")))
            || !plain(prefix)
            || !plain(name)
        {
            return refuse("in slice:prefix:name the slice must be empty or a *.slice name, and prefix and name plain names without '/'");
        }
        return Ok(());
    }
    if !path.is_absolute() && systemd {
        return refuse("with --systemd-cgroup it must be an absolute path or slice:prefix:name");
    }
    // By text: `Path::components` would hide a `.`. A relative path is taken from each
    // hierarchy's root, as libcgroups reads it.
    if text.split('/').any(|part| part == "." || part == "..") {
        return refuse("it must not contain '.' or '..'");
    }
    let depth = text.split('/').filter(|part| !part.is_empty()).count();
    if depth == 0 {
        return refuse("it is the root cgroup, which holds the whole host");
    }
    Ok(())
}

/// Resource fields that name files: libcgroups joins them to the cgroup's directory as given,
/// so an absolute name or `..` would write any host file (`unified` on cgroup v2, the page
/// size of `hugepageLimits`). Also applied to `update`'s resources.
pub(crate) fn check_resources(resources: &LinuxResources) -> Result<(), PolicyError> {
    let plain =
        |name: &str| !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\0']);
    for key in resources.unified().iter().flat_map(|u| u.keys()) {
        if !plain(key) {
            return Err(PolicyError::CgroupFile {
                field: "unified",
                name: key.clone(),
            });
        }
    }
    for limit in resources.hugepage_limits().iter().flatten() {
        if !plain(limit.page_size()) {
            return Err(PolicyError::CgroupFile {
                field: "hugepageLimits.pageSize",
                name: limit.page_size().clone(),
            });
        }
    }
    Ok(())
}

fn confine_mounts(
    requested: Vec<Mount>,
    policy: &Policy,
    bundle: &Path,
) -> Result<Vec<Mount>, PolicyError> {
    let mut mounts = vec![tmpfs(
        BOTTLEROCKET_DIR,
        &["nosuid", "nodev", "noexec", "mode=755", "size=1m"],
    )];
    // Before the config's mounts, so that a bind under /tmp lands on it instead of being
    // hidden by it.
    if !requested
        .iter()
        .any(|m| clean(m.destination()) == Path::new("/tmp"))
    {
        mounts.push(tmpfs(
            "/tmp",
            &["nosuid", "nodev", "mode=1777", "size=65536k"],
        ));
    }
    for mount in requested {
        mounts.push(confine_mount(mount, policy, bundle)?);
    }
    mounts.extend(policy_mounts(policy));
    Ok(mounts)
}

/// One of the config's mounts, confined: not over the root, `/proc` nor the policy's own
/// mounts; never propagating to the host; a bind read-only unless its source may be written,
/// and never of protected state; otherwise only a pseudo-filesystem.
fn confine_mount(mut mount: Mount, policy: &Policy, bundle: &Path) -> Result<Mount, PolicyError> {
    // runc takes a relative destination against the container's root.
    let destination = clean(mount.destination());
    if destination == Path::new("/") {
        return Err(PolicyError::MountOverRoot);
    }
    check_proc_mount(&mount, &destination)?;
    if destination == Path::new(BOTTLEROCKET_DIR)
        || destination.starts_with(HOST_ROOT_TARGET)
        || WHEN_PRESENT.iter().any(|dir| destination.starts_with(dir))
    {
        return Err(PolicyError::ReservedMount(destination));
    }
    mount.set_destination(destination);
    // Only the policy's own mounts propagate to the host (libcontainer 0.7.0 ignores these
    // options; a later one would honour them).
    if let Some(options) = mount.options_mut() {
        options.retain(|o| o != "shared" && o != "rshared");
    }
    if is_bind(&mount) {
        let source = clean(&bundle.join(mount.source().clone().unwrap_or_default()));
        let writable = may_write(&source, policy, bundle);
        if !writable {
            make_read_only(&mut mount);
        }
        check_protected(&source, mount.destination(), writable, policy)?;
        mount.set_source(Some(source));
    } else {
        let typ = mount.typ().clone().unwrap_or_default();
        if !PSEUDO_FILESYSTEMS.contains(&typ.as_str()) {
            return Err(PolicyError::MountType {
                typ,
                destination: mount.destination().clone(),
            });
        }
    }
    Ok(mount)
}

/// The policy's own mounts, after the config's (its /sys included), as host-ctr orders them:
/// the optional host mounts, the host root, the mount area, the shared directories and the
/// certificates.
fn policy_mounts(policy: &Policy) -> Vec<Mount> {
    let mut mounts = Vec::new();
    let read_only = ["rbind", "ro", "rro"];
    for dir in [MODULES_DIR, KERNEL_SOURCES_DIR] {
        mounts.push(bind(&under(&policy.host_root, dir), dir, &read_only));
    }
    mounts.push(bind(
        &under(&policy.host_root, DEBUGFS_DIR),
        DEBUGFS_DIR,
        &["rbind", "rw"],
    ));
    // `ro` alone is the top mount only (Bottlerocket's `rbind,ro`); `rro` every mount under it.
    let host_root_options: &[&str] = match policy.compatibility {
        Compatibility::Strict => &["rbind", "ro", "rro", "rslave"],
        Compatibility::Bottlerocket => &["rbind", "ro", "rslave"],
    };
    mounts.push(bind(&policy.host_root, HOST_ROOT_TARGET, host_root_options));
    mounts.push(bind(
        &policy.host_mount_area,
        MOUNT_AREA_TARGET,
        &["rbind", "rw", "rshared"],
    ));
    for dir in &policy.shared_dirs {
        mounts.push(bind(
            &under(&policy.host_root, dir),
            &under(Path::new(HOST_ROOT_TARGET), dir).to_string_lossy(),
            &["rbind", "rw", "rshared"],
        ));
    }
    for dir in kept_read_only(policy) {
        let inside = dir.strip_prefix(&policy.host_root).unwrap_or(&dir);
        mounts.push(bind(
            &dir,
            &under(Path::new(HOST_ROOT_TARGET), Path::new("/").join(inside)).to_string_lossy(),
            &["rbind", "ro", "rro", "rprivate"],
        ));
    }
    mounts.push(bind(
        &under(&policy.host_root, &policy.host_certs),
        CERTS_TARGET,
        &read_only,
    ));
    mounts
}

/// The runtime's and the supervisor's state that the host root shows (each of
/// `protected_dirs` and `state_dirs` inside `host_root`, by name: the runtime resolves them
/// first), outermost only, in order: bound read-only and private over itself, since the
/// Bottlerocket mode leaves the host root's other filesystems writable and a mount made there
/// after create (the supervisor's overlay for a sibling's root) would show up with its own
/// flags. Not where the container sees the mount area or a shared directory instead (a bind
/// there would propagate to the host).
pub fn kept_read_only(policy: &Policy) -> Vec<PathBuf> {
    let root = clean(&policy.host_root);
    let elsewhere: Vec<PathBuf> = std::iter::once(PathBuf::from("/mnt"))
        .chain(policy.shared_dirs.iter().map(|dir| clean(dir)))
        .collect();
    let dirs: Vec<PathBuf> = policy
        .protected_dirs
        .iter()
        .chain(&policy.state_dirs)
        .map(|dir| clean(dir))
        .filter(|dir| dir.starts_with(&root) && dir != &root)
        .filter(|dir| {
            let inside = Path::new("/").join(dir.strip_prefix(&root).unwrap_or(dir));
            !elsewhere.iter().any(|other| inside.starts_with(other))
        })
        .collect();
    let mut kept: Vec<PathBuf> = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let covered = dirs
            .iter()
            .enumerate()
            .any(|(j, other)| other != dir && dir.starts_with(other) || (other == dir && j < i));
        if !covered {
            kept.push(dir.clone());
        }
    }
    kept
}

/// `dir` (absolute) read under `root`.
pub fn under(root: &Path, dir: impl AsRef<Path>) -> PathBuf {
    let dir = clean(dir.as_ref());
    root.join(dir.strip_prefix("/").unwrap_or(&dir))
}

/// A bind mount, as runc and libcontainer recognise one.
pub fn is_bind(mount: &Mount) -> bool {
    mount.typ().as_deref() == Some("bind")
        || mount
            .options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

/// Under `/proc` only procfs itself, or a bind onto one of runc's allowed files.
fn check_proc_mount(mount: &Mount, destination: &Path) -> Result<(), PolicyError> {
    if !destination.starts_with("/proc") {
        return Ok(());
    }
    let typ = mount.typ().clone().unwrap_or_default();
    let allowed = if is_bind(mount) {
        PROC_ALLOWED
            .iter()
            .any(|file| destination == Path::new(file))
    } else {
        typ == "proc" && destination == Path::new("/proc")
    };
    if allowed {
        return Ok(());
    }
    Err(PolicyError::ProcMount {
        typ: if is_bind(mount) { "bind".into() } else { typ },
        destination: destination.to_path_buf(),
    })
}

/// By name (the runtime compares by device and inode too): a bind source is not, nor lies
/// inside, a protected directory, and a writable one holds none.
fn check_protected(
    source: &Path,
    destination: &Path,
    writable: bool,
    policy: &Policy,
) -> Result<(), PolicyError> {
    for dir in &policy.protected_dirs {
        let dir = clean(dir);
        let relation = if source == dir {
            "is"
        } else if source.starts_with(&dir) {
            "lies inside"
        } else if writable && dir.starts_with(source) {
            "contains"
        } else {
            continue;
        };
        return Err(PolicyError::ProtectedSource {
            from: source.to_path_buf(),
            destination: destination.to_path_buf(),
            relation,
            protected: dir,
        });
    }
    Ok(())
}

fn may_write(source: &Path, policy: &Policy, bundle: &Path) -> bool {
    source.starts_with(&policy.host_mount_area)
        || (bundle != Path::new("/") && source.starts_with(bundle))
        || policy.writable_binds.iter().any(|w| source.starts_with(w))
}

fn make_read_only(mount: &mut Mount) {
    let mut options: Vec<String> = mount
        .options()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|o| o != "rw" && o != "rrw")
        .collect();
    let recursive = options.iter().any(|o| o == "rbind");
    for wanted in ["ro", "rro"]
        .into_iter()
        .take(if recursive { 2 } else { 1 })
    {
        if !options.iter().any(|o| o == wanted) {
            options.push(wanted.to_string());
        }
    }
    mount.set_options(Some(options));
}

fn tmpfs(destination: &str, options: &[&str]) -> Mount {
    let mut mount = Mount::default();
    mount
        .set_destination(PathBuf::from(destination))
        .set_typ(Some("tmpfs".into()))
        .set_source(Some(PathBuf::from("tmpfs")))
        .set_options(Some(options.iter().map(|o| o.to_string()).collect()));
    mount
}

fn bind(source: &Path, destination: &str, options: &[&str]) -> Mount {
    let mut mount = tmpfs(destination, options);
    mount
        .set_typ(Some("bind".into()))
        .set_source(Some(source.to_path_buf()));
    mount
}

/// Lexically normalises an absolute path: `.`, `..` and repeated separators go away, and `..`
/// never climbs above `/`.
pub fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests;
