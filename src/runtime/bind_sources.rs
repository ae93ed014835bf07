//! What the policy judged is what is mounted. The policy judges a bind's source by its
//! canonical path; libcontainer resolves that path again when it mounts, in the container's
//! init. Whoever can write where the source lies (the bundle, the mount area) could swap it for
//! a symlink in between and get a writable bind of a host path. So each judged source is opened
//! right after the judgement with no symlink allowed on the way (its identity: device and
//! inode), and once libcontainer has mounted everything — the init still waiting for `start`,
//! nothing of the container run yet — each mount point must hold that same object, or the
//! container is refused and removed. (Handing libcontainer `/proc/self/fd/N` would not do:
//! libcontainer 0.7.0 canonicalizes a bind source back to a path before `open_tree`.)

use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use libcontainer::oci_spec::runtime::Mount;
use nix::sys::stat::fstat;
use nix::unistd::Pid;
use pathrs::error::ErrorKind;
use pathrs::flags::ResolverFlags;
use pathrs::Root;

use super::reach::Lineage;
use crate::policy;

/// A bind source as the policy judged it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judged {
    /// Where it is mounted in the container.
    pub destination: PathBuf,
    /// Its canonical host path.
    pub source: PathBuf,
    dev: u64,
    ino: u64,
}

/// Opens the source of every bind in `mounts` (the derived spec's, in mount order), with no
/// symlink followed: what is opened is what gets checked once mounted. Refused, naming the
/// source: a bind a later mount hides (its mount could not be checked); a source that is
/// missing or a dangling symlink (libcontainer would resolve it again later, to whatever is
/// there by then); one reached through a symlink now (swapped since it was judged); one that
/// is or lies inside `protected` (the runtime's and the supervisor's state), or, when the bind
/// is writable, holds it.
pub(crate) fn judge(mounts: &[Mount], protected: &[Lineage]) -> Result<Vec<Judged>> {
    let host = Root::open("/")
        .context("opening / for the bind sources")?
        .with_resolver_flags(ResolverFlags::NO_SYMLINKS);
    let mut judged = Vec::new();
    for (i, mount) in mounts.iter().enumerate() {
        let (true, Some(source)) = (policy::is_bind(mount), mount.source()) else {
            continue;
        };
        let destination = mount.destination();
        if let Some(later) = mounts[i + 1..]
            .iter()
            .find(|later| destination.starts_with(later.destination()))
        {
            bail!(
                "the bootstrap policy refuses the bind of {} at {}: the later mount at {} hides it, so what is mounted there could not be checked",
                source.display(),
                destination.display(),
                later.destination().display()
            );
        }
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
            Err(err) => {
                return Err(err).with_context(|| {
                    format!(
                        "bind source {} changed after the policy judged it (a symlink on its path)",
                        source.display()
                    )
                })
            }
        };
        let stat = fstat(handle.as_fd().as_raw_fd())
            .with_context(|| format!("stat {}", source.display()))?;
        // Existing symlinks were resolved before the policy: this one leads nowhere.
        if stat.st_mode & libc::S_IFMT == libc::S_IFLNK {
            return Err(missing());
        }
        let writable = !mount.options().iter().flatten().any(|o| o == "ro");
        if let Some((state, relation)) = Lineage::of(source, &handle)?.reaching(protected, writable)
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
            destination: destination.clone(),
            source: source.clone(),
            dev: stat.st_dev,
            ino: stat.st_ino,
        });
    }
    Ok(judged)
}

/// Checks, in the created container whose init is `pid`, that every judged destination holds
/// its judged source.
pub fn verify(pid: Pid, judged: &[Judged]) -> Result<()> {
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
