//! A container's private view of an image: an overlay with the image's rootfs as its only
//! lower layer and a tmpfs of a bounded size for the upper, its writable layer. libcontainer
//! creates missing mountpoints inside `root.path` before making it read-only, and in the
//! Bottlerocket mode the container writes there itself; either way the writes land in the
//! tmpfs, thrown away with the container, so the image is never written and several
//! containers can use it at once. The size bounds what a container's writes (a `yum install`)
//! take of the node's memory; tmpfs pages are charged to the writer's cgroup.
//!
//! ```text
//! <container-dir>/scratch   tmpfs holding upper/ and work/
//! <container-dir>/rootfs    the overlay, the bundle's root.path
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Less free than this in a writable layer, in bytes, counts as full ([`is_full`]).
const FULL_BELOW: u64 = 1 << 20;

/// Mounts the overlay of `lower` at `<dir>/rootfs`, its writable layer a tmpfs of
/// `layer_bytes`, and returns that path.
pub(crate) fn mount_over(lower: &Path, dir: &Path, layer_bytes: u64) -> Result<PathBuf> {
    unmount(dir)?;
    let scratch = dir.join("scratch");
    let rootfs = dir.join("rootfs");
    if rootfs.exists() {
        // An earlier boot's plain unpack, or an empty mountpoint.
        std::fs::remove_dir_all(&rootfs)
            .with_context(|| format!("removing the previous {}", rootfs.display()))?;
    }
    for path in [&scratch, &rootfs] {
        std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    }
    mount(
        Some("tmpfs"),
        &scratch,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("mode=0700,size={layer_bytes}").as_str()),
    )
    .with_context(|| format!("mounting a tmpfs on {}", scratch.display()))?;
    let result = (|| {
        let (upper, work) = (scratch.join("upper"), scratch.join("work"));
        for path in [&upper, &work] {
            std::fs::create_dir(path).with_context(|| format!("creating {}", path.display()))?;
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            option_path(lower)?,
            option_path(&upper)?,
            option_path(&work)?
        );
        mount(
            Some("overlay"),
            &rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .with_context(|| format!("mounting the image overlay on {}", rootfs.display()))
    })();
    if result.is_err() {
        let _ = unmount(dir);
    }
    result.map(|()| rootfs)
}

/// Removes the overlay and its tmpfs from `dir`, if there (a killed run may have left them).
pub(crate) fn unmount(dir: &Path) -> Result<()> {
    for path in [dir.join("rootfs"), dir.join("scratch")] {
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(err) => return Err(err).with_context(|| format!("unmounting {}", path.display())),
        }
    }
    Ok(())
}

/// Whether the writable layer of the overlay in `dir` is (nearly) full: what a container that
/// failed writing into its own root ran into.
pub(crate) fn is_full(dir: &Path) -> bool {
    nix::sys::statvfs::statvfs(&dir.join("scratch"))
        .is_ok_and(|fs| fs.blocks_available().saturating_mul(fs.fragment_size()) < FULL_BELOW)
}

/// Overlay options are comma- and colon-separated: paths holding those cannot be passed.
fn option_path(path: &Path) -> Result<&str> {
    match path.to_str() {
        Some(text) if !text.contains([',', ':', '\\']) => Ok(text),
        _ => bail!(
            "{} cannot be an overlay layer: the path has a ',', ':' or '\\' or is not UTF-8",
            path.display()
        ),
    }
}
