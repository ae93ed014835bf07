//! What a host path reaches, compared by device and inode rather than by name: a symlink, a
//! bind mount or a second name for the same directory cannot make two paths look apart.
//!
//! Used for two rules. The runtime's and the supervisor's own state (`--root`, the seccomp
//! cache, `--protected-dirs`) is never, never holds, and never lies inside anything the policy
//! mounts writable, nor is it bound at all (a container that could write its `state.json` could
//! point the runtime's `kill`, `exec` and `delete` at a host process). And the container's root
//! does not lie where another container can write (the mount area, a shared directory, a
//! `writable-binds` source) while libcontainer walks it by path.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::sys::stat::fstat;
use pathrs::error::ErrorKind;
use pathrs::flags::ResolverFlags;
use pathrs::Root;

/// A file or directory, by what the kernel calls it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
}

impl Identity {
    fn of(fd: &impl AsFd) -> nix::Result<(Identity, bool)> {
        let stat = fstat(fd.as_fd().as_raw_fd())?;
        let is_dir = stat.st_mode & libc::S_IFMT == libc::S_IFDIR;
        Ok((
            Identity {
                dev: stat.st_dev,
                ino: stat.st_ino,
            },
            is_dir,
        ))
    }
}

/// A host object and every directory above it, up to `/` (`..` followed on handles, across
/// mount points as the kernel does).
#[derive(Clone, Debug)]
pub(crate) struct Lineage {
    /// The path it was opened by, for messages.
    pub path: PathBuf,
    /// The object first, then its parent, up to `/`.
    chain: Vec<Identity>,
}

/// How one object stands to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Relation {
    Is,
    Inside,
    Contains,
}

impl Relation {
    /// The relation in words: "`a` {is, lies inside, contains} `b`".
    pub(crate) fn verb(self) -> &'static str {
        match self {
            Relation::Is => "is",
            Relation::Inside => "lies inside",
            Relation::Contains => "contains",
        }
    }
}

impl Lineage {
    /// The lineage of the object `fd` (opened as `path`).
    pub(crate) fn of(path: &Path, fd: &impl AsFd) -> Result<Lineage> {
        let reading = || format!("reading what {} is", path.display());
        let (first, is_dir) = Identity::of(fd).with_context(reading)?;
        let mut chain = vec![first];
        // A file's parent: `..` only works from a directory, so reopen the parent by handle.
        let mut dir: OwnedFd = if is_dir {
            fd.as_fd().try_clone_to_owned().with_context(reading)?
        } else {
            open_nofollow(path.parent().unwrap_or(Path::new("/")))?
                .with_context(|| format!("{} vanished while it was read", path.display()))?
        };
        if !is_dir {
            chain.push(Identity::of(&dir).with_context(reading)?.0);
        }
        loop {
            let parent = nix::fcntl::openat(
                Some(dir.as_raw_fd()),
                "..",
                nix::fcntl::OFlag::O_PATH
                    | nix::fcntl::OFlag::O_DIRECTORY
                    | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .with_context(reading)?;
            // SAFETY: openat just returned this descriptor to us.
            let parent = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(parent) };
            let (identity, _) = Identity::of(&parent).with_context(reading)?;
            if Some(&identity) == chain.last() {
                break;
            }
            chain.push(identity);
            dir = parent;
        }
        Ok(Lineage {
            path: path.to_path_buf(),
            chain,
        })
    }

    /// The lineage of `path` (absolute), opened from `/` with no symlink followed; `None` when
    /// nothing is there.
    pub(crate) fn open(path: &Path) -> Result<Option<Lineage>> {
        match open_nofollow(path)? {
            Some(fd) => Lineage::of(path, &fd).map(Some),
            None => Ok(None),
        }
    }

    /// The first of `protected` that `self` reaches, and how: being it or lying inside it
    /// always, holding it only when `writable` (a read-only view of a tree that holds the
    /// state, as the host root's, writes nothing).
    pub(crate) fn reaching<'a>(
        &self,
        protected: &'a [Lineage],
        writable: bool,
    ) -> Option<(&'a Lineage, Relation)> {
        protected
            .iter()
            .find_map(|state| match self.relation(state) {
                Some(Relation::Contains) if !writable => None,
                relation => relation.map(|r| (state, r)),
            })
    }

    /// How `self` stands to `other`, if they overlap at all.
    pub(crate) fn relation(&self, other: &Lineage) -> Option<Relation> {
        if self.chain[0] == other.chain[0] {
            Some(Relation::Is)
        } else if self.chain[1..].contains(&other.chain[0]) {
            Some(Relation::Inside)
        } else if other.chain[1..].contains(&self.chain[0]) {
            Some(Relation::Contains)
        } else {
            None
        }
    }
}

/// Opens `path` from `/` as an `O_PATH` handle, failing on any symlink on the way; `None` when
/// it does not exist.
fn open_nofollow(path: &Path) -> Result<Option<OwnedFd>> {
    let host = Root::open("/")
        .context("opening /")?
        .with_resolver_flags(ResolverFlags::NO_SYMLINKS);
    match host.resolve_nofollow(path) {
        Ok(handle) => Ok(Some(handle.into())),
        Err(err) if err.kind() == ErrorKind::OsError(Some(libc::ENOENT)) => Ok(None),
        Err(err) => {
            Err(err).with_context(|| format!("opening {} (no symlink followed)", path.display()))
        }
    }
}

/// The state a container must never reach, as lineages: each of `dirs` that exists (a
/// missing one holds nothing to protect).
pub(crate) fn protected(dirs: &[PathBuf]) -> Result<Vec<Lineage>> {
    let mut lineages = Vec::with_capacity(dirs.len());
    for dir in dirs {
        // The runtime's own paths may hold symlinks (a `--root` under /var/run): follow them.
        let real = match dir.canonicalize() {
            Ok(real) => real,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err).with_context(|| format!("resolving {}", dir.display())),
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
            .open(&real)
            .with_context(|| format!("opening {}", real.display()))?;
        lineages.push(Lineage::of(dir, &file)?);
    }
    Ok(lineages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations_are_found_through_other_names() {
        let dir = tempfile::tempdir().unwrap();
        let outer = dir.path().join("outer");
        let inner = outer.join("inner");
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::write(inner.join("file"), "x").unwrap();
        std::os::unix::fs::symlink(&inner, dir.path().join("alias")).unwrap();
        let lineage = |p: &Path| Lineage::open(p).unwrap().unwrap();
        let (outer_l, inner_l) = (lineage(&outer), lineage(&inner));
        let file_l = lineage(&inner.join("file"));
        let alias = protected(&[dir.path().join("alias")]).unwrap().remove(0);
        assert_eq!(alias.relation(&inner_l), Some(Relation::Is));
        assert_eq!(file_l.relation(&alias), Some(Relation::Inside));
        assert_eq!(outer_l.relation(&alias), Some(Relation::Contains));
        assert_eq!(file_l.relation(&outer_l), Some(Relation::Inside));
        let other = tempfile::tempdir().unwrap();
        assert_eq!(lineage(other.path()).relation(&inner_l), None);
        assert!(
            Lineage::open(&dir.path().join("alias/file")).is_err(),
            "a symlink on the way"
        );
        assert!(Lineage::open(&dir.path().join("absent")).unwrap().is_none());
    }
}
