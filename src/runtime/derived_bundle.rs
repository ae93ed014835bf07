//! The bundle libcontainer actually runs: the original config with the policy applied.
//!
//! libcontainer 0.7.0 only reads `<bundle>/config.json`, so the derived spec is written into our
//! part of the state root, with every path made absolute against the original bundle.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libcontainer::oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use std::os::fd::OwnedFd;

use super::bind_sources::{self, Judged};
use super::cgroup_mounts::{self, CgroupMount};
use super::host_mounts::{self, HostMount};
use super::host_sources;
use super::mountinfo::MountTable;
use super::reach::Lineage;
use super::rootfs::{self, Layer};
use super::seccomp_filter::Filter;
use crate::atomic_file;
use crate::policy::{self, Policy};

/// A config.json larger than this is refused before parsing.
pub(crate) const MAX_CONFIG_BYTES: u64 = 16 << 20;
const META_FILE: &str = "bootstrap.json";
const FILTER_FILE: &str = "seccomp.bpf";

/// What we remember about a container beside libcontainer's state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Meta {
    /// The bundle the caller gave, reported by `state`.
    pub bundle: PathBuf,
    /// The container's root filesystem, absolute.
    pub rootfs: PathBuf,
    /// The effective policy the container was created under.
    pub policy: Policy,
    /// The config's seccomp profile is not in the derived config but compiled, in
    /// `seccomp.bpf` beside it, for every process of the container to load.
    #[serde(default)]
    pub seccomp_filter: bool,
}

impl Meta {
    /// The compiled seccomp filter of the container whose derived bundle is `dir`, if it has
    /// one; an unreadable one is an error, never no filter.
    pub(crate) fn seccomp_filter(&self, dir: &Path) -> Result<Option<Filter>> {
        self.seccomp_filter
            .then(|| Filter::read(&dir.join(FILTER_FILE)))
            .transpose()
    }
}

/// Reads and parses `<bundle>/config.json`, refusing oversized files.
pub(crate) fn read_spec(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    // Non-blocking, and only a regular file: a FIFO planted as config.json would otherwise
    // hang the runtime, holding the container's lock, until someone writes to it (found by
    // integration/hostile.rs).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("reading the type of {}", path.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    let mut text = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut text)
        .with_context(|| format!("reading {}", path.display()))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        bail!(
            "{} is larger than the {} MiB limit",
            path.display(),
            MAX_CONFIG_BYTES >> 20
        );
    }
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The derived spec, and what `create` needs of it besides the file libcontainer reads.
pub(crate) struct Derived {
    /// The spec libcontainer gets, once [`place`] has placed its mounts and written it.
    pub spec: Spec,
    /// The container's root filesystem, canonical.
    pub root: PathBuf,
    /// The mounts our own code attaches after libcontainer created the container.
    pub host_mounts: Vec<HostMount>,
    /// The config's cgroup filesystems, which our own code mounts.
    pub(crate) cgroup_mounts: Vec<CgroupMount>,
    /// `linux.cgroupsPath`, as the spec has it.
    pub cgroups_path: Option<PathBuf>,
    /// The bind sources as the policy judged them, to check once mounted.
    pub binds: Vec<Judged>,
    /// The seccomp profile compiled, when libcontainer does not apply it.
    pub seccomp_filter: Option<Filter>,
}

/// Applies the policy to the bundle's spec, for [`place`] to finish, with what goes beside it
/// written into `dir` (which exists and is empty); seccomp filters are compiled into, or taken
/// from, `seccomp_dir`; `table` is the host's mount table.
pub(crate) fn write(
    dir: &Path,
    bundle: &Path,
    policy: &Policy,
    seccomp_dir: &Path,
    table: &MountTable,
    protected: &[Lineage],
) -> Result<Derived> {
    let mut spec = read_spec(bundle)?;
    resolve_bind_sources(&mut spec, bundle);
    let mut spec = policy::apply(spec, policy, bundle)?;
    let root = resolve_root(&mut spec)?;
    host_sources::present(&mut spec, &policy.host_root, table)?;
    let (mut spec, host_mounts) = host_mounts::split(spec);
    let cgroup_mounts = cgroup_mounts::split(&mut spec);
    let binds = bind_sources::judge(spec.mounts().as_deref().unwrap_or_default(), protected)?;
    let seccomp_filter = Filter::take(&mut spec, seccomp_dir)?;
    if let Some(filter) = &seccomp_filter {
        filter.write(&dir.join(FILTER_FILE))?;
    }
    let meta = Meta {
        bundle: bundle.to_path_buf(),
        rootfs: root.clone(),
        policy: policy.clone(),
        seccomp_filter: seccomp_filter.is_some(),
    };
    atomic_file::replace(&dir.join(META_FILE), &serde_json::to_vec(&meta)?, 0o600)?;
    Ok(Derived {
        cgroups_path: spec.linux().as_ref().and_then(|l| l.cgroups_path().clone()),
        spec,
        root,
        host_mounts,
        cgroup_mounts,
        binds,
        seccomp_filter,
    })
}

/// Places the derived spec's mounts in the container's root (`root`, opened by rootfs.rs's
/// check) and writes the spec into `dir`: each destination becomes its landing (rootfs.rs), a
/// bind a later mount hides is refused, and each bind source becomes its stage
/// (bind_sources.rs).
pub(crate) fn place(dir: &Path, derived: &mut Derived, root: &OwnedFd) -> Result<()> {
    let mounts = derived.spec.mounts().as_deref().unwrap_or_default();
    let layers: Vec<Layer> = mounts
        .iter()
        .map(|mount| Layer {
            destination: mount.destination(),
            bind: policy::is_bind(mount),
        })
        .collect();
    let landings = rootfs::land(root, &layers)?;
    let devices: Vec<&Path> = derived
        .spec
        .linux()
        .iter()
        .flat_map(|linux| linux.devices().iter().flatten())
        .map(|device| device.path().as_path())
        .collect();
    rootfs::check_devices(root, &layers, &landings, &devices)?;
    drop(layers);
    let mounts = derived.spec.mounts_mut().get_or_insert_with(Vec::new);
    for (mount, landing) in mounts.iter_mut().zip(landings) {
        mount.set_destination(landing);
    }
    bind_sources::check_hidden(mounts, &derived.binds)?;
    bind_sources::stage_points(dir, mounts, &derived.binds)?;
    replace_spec(dir, &derived.spec)
}

/// Replaces the derived config in `dir` atomically (create, and `update`'s new resources).
pub(crate) fn replace_spec(dir: &Path, spec: &Spec) -> Result<()> {
    let config = serde_json::to_vec(spec).context("serialising the derived config")?;
    atomic_file::replace(&dir.join("config.json"), &config, 0o600)
}

pub(crate) fn read_meta(dir: &Path) -> Result<Meta> {
    let path = dir.join(META_FILE);
    let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Makes `root.path` (absolute after the policy) canonical, as runc resolves it: libcontainer
/// walks it by path, and rootfs.rs checks the very path it will walk.
fn resolve_root(spec: &mut Spec) -> Result<PathBuf> {
    let Some(root) = spec.root_mut() else {
        bail!("the config has no root filesystem (root.path)");
    };
    let real = root
        .path()
        .canonicalize()
        .with_context(|| format!("root.path {}", root.path().display()))?;
    root.set_path(real.clone());
    Ok(real)
}

/// Resolves symlinks in existing bind sources, so the policy judges where a bind really points.
fn resolve_bind_sources(spec: &mut Spec, bundle: &Path) {
    for mount in spec.mounts_mut().iter_mut().flatten() {
        if let (true, Some(source)) = (policy::is_bind(mount), mount.source().clone()) {
            if let Ok(real) = bundle.join(source).canonicalize() {
                mount.set_source(Some(real));
            }
        }
    }
}
