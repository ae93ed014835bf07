//! The bundle the supervisor hands to bootstrap-runc for one container, under its state dir:
//!
//! ```text
//! <state-dir>/containers/<name>/config.json   regenerated every boot
//! <state-dir>/containers/<name>/rootfs/       the container's root: an overlay of its image
//!                                              (or the host root's top filesystem)
//! <state-dir>/containers/<name>/scratch/      the overlay's writable layer, a sized tmpfs
//! <state-dir>/containers/<name>/image/        oci-layout sources: a fresh unpack every boot
//! <state-dir>/containers/<name>/data/         persistent; holds user-data (0600)
//! ```
//! `data/` lies under the bundle, so bootstrap-runc's policy keeps its binds writable.
//! The policy itself (capabilities, host mounts, read-only root) is bootstrap-runc's job.
//!
//! This is the on-disk half of a container's spec; `spec` plans it from what is read here.
//! Inside an image's root filesystem everything is resolved with `openat2(RESOLVE_IN_ROOT)`
//! (the `pathrs` crate): a symlink in the image (`/etc/passwd -> /etc/shadow`, an absolute
//! `..`-laden one) resolves within the image and never reaches a host file. What is read:
//! `/etc/passwd` and `/etc/group` (regular files of at most [`MAX_ACCOUNT_FILE`] bytes; a
//! missing one is no entries). What is written: the image's `WorkingDir`, created (root, 0755)
//! where missing — in the container's writable layer (the overlay's upper), never in the
//! image. The supervisor never writes an operator bundle's root filesystem (a missing
//! `process.cwd` is an error naming it); in the Bottlerocket mode the container may, when the
//! bundle's `root.readonly` allows it, as under runc.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use libcontainer::oci_spec::runtime::Spec;
use pathrs::error::ErrorKind;
use pathrs::flags::OpenFlags;
use pathrs::{InodeType, Root};

use super::plan::{Step, DEFAULT_PULL_PROGRESS_TIMEOUT};
use super::settings::Source;
use super::spec;
use crate::atomic_file;
use crate::image::user::Accounts;
use crate::image::{self, Images, PullLimits, Rootfs};
use crate::private_file;

/// The largest `/etc/passwd` or `/etc/group` read from an image, in bytes.
pub(crate) const MAX_ACCOUNT_FILE: u64 = 4 << 20;

/// The directory of container `name`'s bundle.
pub(crate) fn dir(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("containers").join(name)
}

/// A container's bundle, ready for bootstrap-runc. Keep it until the container is gone:
/// dropping it unmounts the image's overlay.
pub(crate) struct Prepared {
    pub dir: PathBuf,
    /// The image's root filesystem, when the source is an image.
    pub rootfs: Option<Rootfs>,
    /// An operator's bundle, whose root the container's is (bootstrap-runc's `root_area`: a
    /// root must lie inside the bundle, and this one's config is rewritten into `dir`).
    pub root_area: Option<PathBuf>,
    /// What asks the container to stop ([`spec::stop_signal`]): a signal name or number as
    /// `bootstrap-runc kill` takes it.
    pub stop_signal: String,
}

/// Writes the container's bundle (pulling its image if need be); an image's or a source-less
/// container's root is an overlay whose writable layer holds at most `layer_bytes`. With
/// `cgroup_parent` (cgroup v2, see cgroup.rs) the container's cgroup is
/// `<cgroup_parent>/<id>`, whatever the operator's bundle said: a container must not outlive
/// the supervisor's unit.
pub(crate) fn prepare(
    step: &Step,
    state_dir: &Path,
    host_root: &Path,
    images: &Arc<Images>,
    cgroup_parent: Option<&Path>,
    layer_bytes: u64,
) -> Result<Prepared> {
    let dir = dir(state_dir, &step.name);
    // A killed earlier run may have left the image overlay mounted.
    image::clear(&dir)?;
    let data = dir.join("data");
    private_file::create_dir(&data)?;
    let user_data = data.join("user-data");
    match &step.container.user_data {
        Some(bytes) => atomic_file::replace(&user_data, bytes.as_bytes(), 0o600)?,
        None => {
            let _ = std::fs::remove_file(&user_data);
        }
    }
    let (base, rootfs) = match &step.container.source {
        Source::Bundle(bundle) => {
            let spec = spec::from_bundle(bundle)?;
            check_bundle_cwd(bundle, &spec)?;
            (spec, None)
        }
        Source::OciLayout { path, tag } => from_image(
            images,
            &image::Source::Layout { path, tag },
            &dir,
            host_root,
            layer_bytes,
            step,
        )?,
        Source::Image(reference) => {
            let source = image::Source::Registry {
                reference,
                policy: step.container.pull_policy,
                limits: PullLimits {
                    progress_timeout: step
                        .container
                        .pull_progress_timeout
                        .unwrap_or(DEFAULT_PULL_PROGRESS_TIMEOUT),
                    timeout: step.container.pull_timeout,
                },
            };
            from_image(images, &source, &dir, host_root, layer_bytes, step)?
        }
        Source::UserDataScript => host_script(step, &dir, host_root, layer_bytes)?,
    };
    let spec = spec::bootstrap(base, step, &data, cgroup_parent);
    atomic_file::replace(
        &dir.join("config.json"),
        &serde_json::to_vec_pretty(&spec)?,
        0o600,
    )?;
    let root_area = match &step.container.source {
        Source::Bundle(bundle) => Some(bundle.clone()),
        _ => None,
    };
    Ok(Prepared {
        dir,
        rootfs,
        root_area,
        stop_signal: spec::stop_signal(&spec).to_string(),
    })
}

/// A source-less container: its user-data copied to `<dir>/script` (root, 0700; never under
/// the host root) and an overlay of the host root's top filesystem as its root.
fn host_script(
    step: &Step,
    dir: &Path,
    host_root: &Path,
    layer_bytes: u64,
) -> Result<(Spec, Option<Rootfs>)> {
    let user_data = step
        .container
        .user_data
        .as_ref()
        .context("a source-less container needs user-data")?;
    let script = dir.join("script");
    atomic_file::replace(&script, user_data.as_bytes(), 0o700)?;
    let rootfs = Rootfs::over(host_root, dir, layer_bytes).with_context(|| {
        format!(
            "making the root of a source-less container over the host root {}",
            host_root.display()
        )
    })?;
    let spec =
        spec::from_host_script(step, user_data.as_bytes(), &rootfs.path, &script, host_root)?;
    Ok((spec, Some(rootfs)))
}

/// The image's root filesystem in `dir`, and the spec planned from its config and accounts;
/// its working directory is then made to exist.
fn from_image(
    images: &Arc<Images>,
    source: &image::Source<'_>,
    dir: &Path,
    host_root: &Path,
    layer_bytes: u64,
    step: &Step,
) -> Result<(Spec, Option<Rootfs>)> {
    let rootfs = images.rootfs(source, dir, layer_bytes)?;
    let name = step.container.source.to_string();
    let root = Root::open(&rootfs.path)
        .with_context(|| format!("image {name}: opening {}", rootfs.path.display()))?;
    let read = |file| {
        read_account_file(&root, file).with_context(|| format!("image {name}: reading {file}"))
    };
    let (passwd, group) = (read("/etc/passwd")?, read("/etc/group")?);
    let image = spec::Image {
        name: &name,
        config: &rootfs.config,
        rootfs: &rootfs.path,
        accounts: Accounts {
            passwd: passwd.as_deref(),
            group: group.as_deref(),
        },
    };
    let spec = spec::from_image(&image, step.container.command.as_deref(), host_root)?;
    if let Some(process) = spec.process() {
        make_working_dir(&root, process.cwd()).with_context(|| {
            format!(
                "image {name}: creating its WorkingDir {} in the container's writable layer",
                process.cwd().display()
            )
        })?;
    }
    Ok((spec, Some(rootfs)))
}

/// The text of `path` inside `root` (resolved in it), `None` if there is no such file. Not a
/// regular file (a FIFO would block, a device never end) or larger than [`MAX_ACCOUNT_FILE`]:
/// an error. Bytes that are not UTF-8 are replaced (they can only be in comment fields).
fn read_account_file(root: &Root, path: &str) -> Result<Option<String>> {
    let flags = OpenFlags::O_RDONLY | OpenFlags::O_NONBLOCK | OpenFlags::O_CLOEXEC;
    let file = match root.open_subpath(path, flags) {
        Ok(file) => file,
        Err(err) if is_missing(&err) => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        bail!("not a regular file");
    }
    if metadata.len() > MAX_ACCOUNT_FILE {
        bail!(
            "{} bytes, more than the {MAX_ACCOUNT_FILE} read",
            metadata.len()
        );
    }
    let mut bytes = Vec::new();
    file.take(MAX_ACCOUNT_FILE).read_to_end(&mut bytes)?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Creates `cwd` (absolute, clean) inside `root` where it is missing, as runc creates a missing
/// cwd: each new directory root's and 0755, whatever the umask. Errors: a component that is not
/// a directory.
fn make_working_dir(root: &Root, cwd: &Path) -> Result<()> {
    let mut path = PathBuf::from("/");
    for component in cwd.components() {
        let Component::Normal(part) = component else {
            continue;
        };
        path.push(part);
        match root.resolve(&path) {
            Ok(_) => continue,
            Err(err) if is_missing(&err) => {}
            Err(err) => return Err(err).with_context(|| format!("resolving {}", path.display())),
        }
        let mode = std::fs::Permissions::from_mode(0o755);
        root.create(&path, &InodeType::Directory(mode.clone()))
            .with_context(|| format!("creating {}", path.display()))?;
        root.open_subpath(&path, OpenFlags::O_RDONLY | OpenFlags::O_DIRECTORY)
            .map_err(anyhow::Error::from)
            .and_then(|dir| Ok(dir.set_permissions(mode)?))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
    }
    match root.open_subpath(cwd, OpenFlags::O_PATH | OpenFlags::O_DIRECTORY) {
        Ok(_) => Ok(()),
        Err(err) if errno(&err) == Some(libc::ENOTDIR) => {
            bail!("{} is not a directory", cwd.display())
        }
        Err(err) => Err(err).with_context(|| format!("opening {}", cwd.display())),
    }
}

/// An operator bundle's `process.cwd` must be a directory of its root filesystem, which we do
/// not write: else an error naming it (the runtime would only say `failed to unix syscall`). A
/// cwd at or under a mount's destination (or the policy's `/tmp`) is left to the runtime.
fn check_bundle_cwd(bundle: &Path, spec: &Spec) -> Result<()> {
    let (Some(root), Some(process)) = (spec.root(), spec.process()) else {
        return Ok(());
    };
    let cwd = process.cwd();
    let mounted = spec
        .mounts()
        .iter()
        .flatten()
        .map(|m| m.destination().as_path())
        .chain([Path::new("/tmp")])
        .any(|destination| cwd.starts_with(destination) && destination != Path::new("/"));
    if mounted {
        return Ok(());
    }
    let named = || format!("bundle {}: process.cwd {}", bundle.display(), cwd.display());
    if !cwd.is_absolute() {
        bail!("{}: not an absolute path", named());
    }
    let rootfs = Root::open(root.path())
        .with_context(|| format!("{}: opening {}", named(), root.path().display()))?;
    let reason = match rootfs.open_subpath(cwd, OpenFlags::O_PATH | OpenFlags::O_DIRECTORY) {
        Ok(_) => return Ok(()),
        Err(err) if is_missing(&err) => "does not exist",
        Err(err) if errno(&err) == Some(libc::ENOTDIR) => "is not a directory",
        Err(err) => return Err(err).with_context(named),
    };
    bail!(
        "{} {reason} in its root filesystem {}",
        named(),
        root.path().display()
    )
}

/// Whether a pathrs error is "no such file or directory".
fn is_missing(err: &pathrs::error::Error) -> bool {
    errno(err) == Some(libc::ENOENT)
}

/// The errno of a pathrs error that came from a system call.
fn errno(err: &pathrs::error::Error) -> Option<i32> {
    match err.kind() {
        ErrorKind::OsError(errno) => errno,
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn account_files_are_read_inside_the_root_only() {
        let dir = tempfile::tempdir().unwrap();
        let (rootfs, outside) = (dir.path().join("rootfs"), dir.path().join("outside"));
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::write(&outside, "host:x:1:1::/:/bin/sh\n").unwrap();
        symlink(&outside, rootfs.join("etc/passwd")).unwrap();
        symlink("../../../../../../outside", rootfs.join("etc/group")).unwrap();
        let root = Root::open(&rootfs).unwrap();
        assert_eq!(read_account_file(&root, "/etc/passwd").unwrap(), None);
        assert_eq!(read_account_file(&root, "/etc/group").unwrap(), None);
        std::fs::create_dir(rootfs.join("etc/shadow")).unwrap();
        let err = read_account_file(&root, "/etc/shadow").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        std::fs::write(rootfs.join("outside"), "inside:x:2:2::/:/bin/sh\n").unwrap();
        assert_eq!(
            read_account_file(&root, "/etc/group").unwrap().as_deref(),
            Some("inside:x:2:2::/:/bin/sh\n")
        );
    }

    #[test]
    fn the_working_dir_is_made_inside_the_root_only() {
        let dir = tempfile::tempdir().unwrap();
        let (rootfs, outside) = (dir.path().join("rootfs"), dir.path().join("outside"));
        std::fs::create_dir_all(&rootfs).unwrap();
        std::fs::create_dir(&outside).unwrap();
        let root = Root::open(&rootfs).unwrap();
        make_working_dir(&root, Path::new("/a/b")).unwrap();
        for path in ["a", "a/b"] {
            let mode = std::fs::metadata(rootfs.join(path))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o7777, 0o755, "{path}");
        }
        make_working_dir(&root, Path::new("/a/b")).unwrap();
        // A symlink to a host directory resolves inside the root, where it is dangling.
        symlink(&outside, rootfs.join("link")).unwrap();
        assert!(make_working_dir(&root, Path::new("/link/new")).is_err());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        std::fs::write(rootfs.join("file"), "").unwrap();
        let err = make_working_dir(&root, Path::new("/file")).unwrap_err();
        assert_eq!(err.to_string(), "/file is not a directory");
    }
}
