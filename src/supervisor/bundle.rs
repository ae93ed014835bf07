//! The bundle the supervisor hands to bootstrap-runc for one container, under its state dir:
//!
//! ```text
//! <state-dir>/containers/<name>/config.json   regenerated every boot
//! <state-dir>/containers/<name>/rootfs/       oci-layout sources: a fresh unpack every boot;
//!                                              registry images: an overlay of the cached image
//! <state-dir>/containers/<name>/data/         persistent; holds user-data (0600)
//! ```
//! `data/` lies under the bundle, so bootstrap-runc's policy keeps its binds writable.
//! The policy itself (capabilities, host mounts, read-only root) is bootstrap-runc's job.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use libcontainer::oci_spec::runtime::Spec;

use super::plan::Step;
use super::settings::Source;
use super::spec;
use crate::atomic_file;
use crate::image::{self, Images, Rootfs};

/// The directory of container `name`'s bundle.
pub fn dir(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("containers").join(name)
}

/// A container's bundle, ready for bootstrap-runc. Keep it until the container is gone:
/// dropping it unmounts the image's overlay.
pub struct Prepared {
    pub dir: PathBuf,
    /// The image's root filesystem, when the source is an image.
    pub rootfs: Option<Rootfs>,
}

/// Writes the container's bundle (pulling its image if need be). With `cgroup_parent` (cgroup
/// v2, see cgroup.rs) the container's cgroup is `<cgroup_parent>/<id>`, whatever the operator's
/// bundle said: a container must not outlive the supervisor's unit.
pub fn prepare(
    step: &Step,
    state_dir: &Path,
    host_root: &Path,
    images: &Images,
    cgroup_parent: Option<&Path>,
) -> Result<Prepared> {
    let dir = dir(state_dir, &step.name);
    // A killed earlier run may have left the image overlay mounted.
    image::clear(&dir)?;
    let data = dir.join("data");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&data)
        .with_context(|| format!("creating {}", data.display()))?;
    let user_data = data.join("user-data");
    match &step.container.user_data {
        Some(bytes) => atomic_file::replace(&user_data, bytes.as_bytes(), 0o600)?,
        None => {
            let _ = std::fs::remove_file(&user_data);
        }
    }
    let (base, rootfs) = match &step.container.source {
        Source::Bundle(bundle) => (spec::from_bundle(bundle)?, None),
        Source::OciLayout { path, tag } => from_image(
            images,
            &image::Source::Layout { path, tag },
            &dir,
            host_root,
        )?,
        Source::Image(reference) => {
            let policy = step.container.pull_policy;
            let source = image::Source::Registry { reference, policy };
            from_image(images, &source, &dir, host_root)?
        }
    };
    let spec = spec::bootstrap(base, step, &data, cgroup_parent);
    atomic_file::replace(
        &dir.join("config.json"),
        &serde_json::to_vec_pretty(&spec)?,
        0o600,
    )?;
    Ok(Prepared { dir, rootfs })
}

/// The image's root filesystem in `dir`, and the spec generated from its config.
fn from_image(
    images: &Images,
    source: &image::Source<'_>,
    dir: &Path,
    host_root: &Path,
) -> Result<(Spec, Option<Rootfs>)> {
    let rootfs = images.rootfs(source, dir)?;
    let spec = spec::from_image(&rootfs.config, &rootfs.path, host_root)?;
    Ok((spec, Some(rootfs)))
}
