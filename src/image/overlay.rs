//! A container's private view of a cached image: an overlay with the cached rootfs as its only
//! lower layer and a tmpfs for the upper. libcontainer creates missing mountpoints inside
//! `root.path` before making it read-only; with the overlay those writes land in the tmpfs, so
//! the shared cache is never written, and several containers can use it at once.
//!
//! ```text
//! <container-dir>/scratch   tmpfs holding upper/ and work/
//! <container-dir>/rootfs    the overlay, the bundle's root.path
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Mounts the overlay of `lower` at `<dir>/rootfs` and returns that path.
pub(crate) fn mount_over(lower: &Path, dir: &Path) -> Result<PathBuf> {
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
        Some("mode=0700"),
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
