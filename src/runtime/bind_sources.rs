//! What the policy judged is what is mounted. The policy judges a bind's source by its
//! canonical path; libcontainer 0.7.0 canonicalizes the path it is given again and
//! `open_tree`s it, in the container's init. Whoever can write where the source lies (the
//! bundle, the mount area) could swap it for a symlink in between, and libcontainer would make
//! mount points and device nodes through the swapped bind before anything could check it. So:
//! - each source is opened right after the judgement with no symlink allowed on the way (its
//!   identity: device and inode);
//! - libcontainer is handed a path nobody else can change: `<derived dir>/binds/<n>` in the
//!   runtime's state (no container reaches it), where a clone of the judged handle is mounted
//!   in a private mount namespace that only libcontainer's processes inherit (see [`staged`]);
//! - once libcontainer has mounted everything (the init still waiting for `start`), each mount
//!   point must hold that same object, or the container is refused and removed.
//!
//! (Handing libcontainer `/proc/self/fd/N` would not do: it canonicalizes that back to a path.)

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libcontainer::oci_spec::runtime::Mount;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::stat::fstat;
use nix::unistd::Pid;
use pathrs::error::ErrorKind;
use pathrs::flags::ResolverFlags;
use pathrs::Root;

use super::reach::Lineage;
use crate::policy;

/// The directory of the stages, in the container's derived directory.
const STAGES: &str = "binds";

/// Where the `n`th judged source is staged for libcontainer, in the container's derived
/// directory `dir`.
fn stage(dir: &Path, n: usize) -> PathBuf {
    dir.join(STAGES).join(n.to_string())
}

/// A bind source as the policy judged it, held open.
#[derive(Debug)]
pub(crate) struct Judged {
    /// Its position among the derived spec's mounts.
    pub index: usize,
    /// Where it is mounted in the container.
    pub destination: PathBuf,
    /// Its canonical host path, as the policy judged it (for messages).
    pub source: PathBuf,
    /// The source itself, opened with no symlink followed (`O_PATH`).
    pub handle: OwnedFd,
    /// `rbind`: its submounts come along.
    recursive: bool,
    dev: u64,
    ino: u64,
}

/// Opens the source of every bind in `mounts` (the derived spec's, in mount order), with no
/// symlink followed: what is opened is what gets mounted and checked. Refused, naming the
/// source: one that is missing or a dangling symlink (libcontainer would resolve it again
/// later, to whatever is there by then); one reached through a symlink now (swapped since it
/// was judged); one that is or lies inside `protected` (the runtime's and the supervisor's
/// state), or, when the bind is writable, holds it.
pub(crate) fn judge(mounts: &[Mount], protected: &[Lineage]) -> Result<Vec<Judged>> {
    let host = Root::open("/")
        .context("opening / for the bind sources")?
        .with_resolver_flags(ResolverFlags::NO_SYMLINKS);
    let mut judged = Vec::new();
    for (index, mount) in mounts.iter().enumerate() {
        let (true, Some(source)) = (policy::is_bind(mount), mount.source()) else {
            continue;
        };
        let destination = mount.destination();
        let missing = || {
            anyhow::anyhow!(
                "the bootstrap policy refuses the bind of {} at {}: its source does not exist (or is a dangling symlink), so the policy cannot judge what would be mounted",
                source.display(),
                destination.display()
            )
        };
        let handle = match host.resolve_nofollow(source) {
            Ok(handle) => handle,
            Err(err) if err.kind() == ErrorKind::OsError(Some(libc::ENOENT)) => {
                return Err(missing())
            }
            Err(err) if err.kind() == ErrorKind::OsError(Some(libc::ELOOP)) => {
                return Err(err).with_context(|| {
                    format!(
                        "bind source {} changed after the policy judged it (a symlink on its path)",
                        source.display()
                    )
                })
            }
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("opening bind source {}", source.display()))
            }
        };
        let stat = fstat(handle.as_fd().as_raw_fd())
            .with_context(|| format!("stat {}", source.display()))?;
        // Existing symlinks were resolved before the policy: this one leads nowhere.
        if stat.st_mode & libc::S_IFMT == libc::S_IFLNK {
            return Err(missing());
        }
        let has = |option: &str| mount.options().iter().flatten().any(|o| o == option);
        if let Some((state, relation)) =
            Lineage::of(source, &handle)?.reaching(protected, !has("ro"))
        {
            bail!(
                "the bootstrap policy refuses the bind of {} at {}: it {} {}, the runtime's own state, which no container may reach",
                source.display(),
                destination.display(),
                relation.verb(),
                state.path.display()
            );
        }
        judged.push(Judged {
            index,
            destination: destination.clone(),
            source: source.clone(),
            handle: handle.into(),
            recursive: has("rbind"),
            dev: stat.st_dev,
            ino: stat.st_ino,
        });
    }
    Ok(judged)
}

/// Refuses a bind that a later mount hides (`mounts` with their final destinations): what is
/// mounted there could not be checked. runc would mount both; nothing a bootstrap container
/// needs does this.
pub(crate) fn check_hidden(mounts: &[Mount], judged: &[Judged]) -> Result<()> {
    for bind in judged {
        let destination = mounts[bind.index].destination();
        if let Some(later) = mounts[bind.index + 1..]
            .iter()
            .find(|later| destination.starts_with(later.destination()))
        {
            bail!(
                "the bootstrap policy refuses the bind of {} at {}: the later mount at {} hides it, so what is mounted there could not be checked",
                bind.source.display(),
                bind.destination.display(),
                later.destination().display()
            );
        }
    }
    Ok(())
}

/// Points each bind of `mounts` at its stage in `dir` (the derived directory: `binds/<n>`, a
/// directory or an empty file as the source is), where [`staged`] mounts the judged source.
pub(crate) fn stage_points(dir: &Path, mounts: &mut [Mount], judged: &[Judged]) -> Result<()> {
    if judged.is_empty() {
        return Ok(());
    }
    let stages = dir.join(STAGES);
    std::fs::create_dir(&stages).with_context(|| format!("creating {}", stages.display()))?;
    for (n, bind) in judged.iter().enumerate() {
        let point = stage(dir, n);
        let is_dir = fstat(bind.handle.as_raw_fd())
            .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
            .with_context(|| format!("stat {}", bind.source.display()))?;
        let made = if is_dir {
            std::fs::create_dir(&point)
        } else {
            std::fs::File::create(&point).map(drop)
        };
        made.with_context(|| format!("creating {}", point.display()))?;
        mounts[bind.index].set_source(Some(point));
    }
    Ok(())
}

/// Runs `build` (libcontainer's create) on a thread of its own, in a private copy of the mount
/// namespace where every judged source is mounted at its stage ([`stage_points`], in `dir`):
/// libcontainer's processes inherit that copy, the host never sees the stages, and the copy
/// goes when the thread ends. The copy is made a slave first, so nothing mounted in it
/// propagates back to the host. With no binds, `build` runs here.
pub(crate) fn staged<T: Send>(
    dir: &Path,
    judged: &[Judged],
    build: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    if judged.is_empty() {
        return build();
    }
    let staging = |bind: &Judged| {
        format!(
            "staging the bind source {} for {}",
            bind.source.display(),
            bind.destination.display()
        )
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // Cloned here first: open_tree clones only mounts of the caller's namespace,
                // and the handles are the host's. A detached clone attaches anywhere.
                let trees = judged
                    .iter()
                    .map(|bind| {
                        super::host_mounts::clone_handle(&bind.handle, &bind.source, bind.recursive)
                            .with_context(|| staging(bind))
                    })
                    .collect::<Result<Vec<_>>>()?;
                // CLONE_FS too: threads share their filesystem context, and a mount namespace
                // of one's own needs one's own.
                nix::sched::unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS)
                    .context("making a private mount namespace for the bind sources")?;
                nix::mount::mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    MsFlags::MS_REC | MsFlags::MS_SLAVE,
                    None::<&str>,
                )
                .context("making the private mount namespace a slave of the host's")?;
                for (n, (bind, tree)) in judged.iter().zip(trees).enumerate() {
                    // Opened in the private namespace: the mount point must be its own.
                    let point = std::fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW)
                        .open(stage(dir, n))
                        .with_context(|| staging(bind))?;
                    super::host_mounts::move_mount(&tree, &point).with_context(|| staging(bind))?;
                }
                build()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Checks, in the created container whose init is `pid`, that every judged destination holds
/// its judged source.
pub(crate) fn verify(pid: Pid, judged: &[Judged]) -> Result<()> {
    if judged.is_empty() {
        return Ok(());
    }
    let root = Root::from_fd(super::host_mounts::container_root(pid)?);
    for bind in judged {
        let checking = || format!("checking the bind mount at {}", bind.destination.display());
        // Symlinks followed inside the container's root, as libcontainer placed the mount.
        let handle = root.resolve(&bind.destination).with_context(checking)?;
        let mounted = fstat(handle.as_fd().as_raw_fd()).with_context(checking)?;
        if (mounted.st_dev, mounted.st_ino) != (bind.dev, bind.ino) {
            bail!(
                "the bind mount at {} is not {}, which the policy judged: its source was swapped before the mount; refusing the container",
                bind.destination.display(),
                bind.source.display()
            );
        }
    }
    Ok(())
}
