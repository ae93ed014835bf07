//! The container's cgroup: one the runtime creates for it, never one that exists already.
//!
//! The policy checks the form of `linux.cgroupsPath` (policy/mod.rs); here, before libcontainer
//! builds the container, we check the host: in no hierarchy may the cgroup exist yet (for
//! systemd's `slice:prefix:name`, no unit's cgroup), and what will be created lies on cgroupfs
//! or cgroup2 (`statfs`). Then the path is recorded in our state (`cgroup.json`, beside the
//! derived config), so that `delete --force` after a create killed at any point removes
//! exactly the cgroup this runtime made — and, with no record, none. libcontainer's `delete`,
//! `kill --all`, `pause` and `ps` use the same path, which is therefore ours too.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use libcgroups::common::{get_cgroup_setup, CgroupSetup, DEFAULT_CGROUP_ROOT};
use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC};
use serde::{Deserialize, Serialize};

use super::mountinfo::MountTable;
use crate::atomic_file;

const RECORD: &str = "cgroup.json";

/// The cgroup a container owns, as libcontainer is given it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Owned {
    /// `linux.cgroupsPath`, or libcontainer's default `:youki:<id>`.
    pub path: PathBuf,
    /// `--systemd-cgroup`.
    pub systemd: bool,
    /// The directories libcgroups made, by inode, recorded once create has built the
    /// container ([`Owned::record_made`]); empty when a create was killed before that.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub made: Vec<Made>,
}

/// One directory of the container's cgroup, as it was when create recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Made {
    pub dir: PathBuf,
    pub dev: u64,
    pub ino: u64,
}

impl Made {
    /// `dir` as it is now; `None` when it is gone.
    fn of(dir: &Path) -> Option<Made> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(dir).ok()?;
        Some(Made {
            dir: dir.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

impl Owned {
    /// Checks that the container's cgroup would be new and on a cgroup filesystem, and records
    /// it in `state_dir` (atomically) before anything creates it. `cgroups_path` is the spec's;
    /// without one the cgroup is libcontainer's default for `id`, `:youki:<id>`, which no host
    /// service has: an empty one there (no process, no child) is what an earlier container of
    /// this id left when it was killed with its runtime, and is taken over.
    pub(crate) fn claim(
        cgroups_path: Option<PathBuf>,
        id: &str,
        systemd: bool,
        state_dir: &Path,
        table: &MountTable,
    ) -> Result<Owned> {
        let explicit = cgroups_path.is_some();
        let path = libcontainer::utils::get_cgroup_path(&cgroups_path, id);
        for dir in directories(&path, systemd, table)? {
            if dir.exists() {
                if !explicit && is_empty(&dir) {
                    log::warn!(
                        "taking over the empty cgroup {} an earlier container {id:?} left",
                        dir.display()
                    );
                    continue;
                }
                bail!(
                    "cgroup {} already exists: a container gets a cgroup of its own, never a host one (linux.cgroupsPath {:?})",
                    dir.display(),
                    path
                );
            }
            check_cgroup_fs(&dir)?;
        }
        let owned = Owned {
            path,
            systemd,
            made: Vec::new(),
        };
        owned.write(state_dir)?;
        Ok(owned)
    }

    /// Records, by inode, the directories libcgroups made for the container: a directory of
    /// the same path made later by someone else (the container's own cgroupfs can remove and
    /// remake it) is then never taken for the container's by [`Owned::remove_tree`].
    pub(crate) fn record_made(&mut self, state_dir: &Path, table: &MountTable) -> Result<()> {
        self.made = directories(&self.path, self.systemd, table)?
            .iter()
            .filter_map(|dir| Made::of(dir))
            .collect();
        self.write(state_dir)
    }

    fn write(&self, state_dir: &Path) -> Result<()> {
        atomic_file::replace(&state_dir.join(RECORD), &serde_json::to_vec(self)?, 0o600)
    }

    /// Every directory, in every mounted hierarchy, where this cgroup is (whether it exists or
    /// not). One read of mountinfo.
    pub(crate) fn directories(&self) -> Result<Vec<PathBuf>> {
        directories(&self.path, self.systemd, &MountTable::read()?)
    }

    /// Whether process `pid` is in this cgroup or one under it (an init that moved itself to a
    /// child, as systemd does), as its `/proc/<pid>/cgroup` says (in any hierarchy; false when
    /// it cannot be read).
    pub(crate) fn holds(&self, pid: nix::unistd::Pid) -> bool {
        let Ok(relative) = relative_path(&self.path, self.systemd) else {
            return false;
        };
        let Ok(cgroups) =
            procfs::process::Process::new(pid.as_raw()).and_then(|process| process.cgroups())
        else {
            return false;
        };
        cgroups
            .into_iter()
            .any(|cgroup| Path::new(cgroup.pathname.trim_start_matches('/')).starts_with(&relative))
    }

    /// The cgroup relative to the root of each hierarchy it is in.
    pub(crate) fn relative(&self) -> Result<PathBuf> {
        relative_path(&self.path, self.systemd)
    }

    /// Kills every process in the cgroup and the cgroups under it, in every hierarchy, and
    /// removes them, children first (runc's `RemovePaths`): a container that made child
    /// cgroups leaves none, and its id can be used again. Frozen ones are thawed first so
    /// that SIGKILL lands. Gives up after a second on a cgroup that stays busy. Returns whether
    /// it left a directory alone: one at the cgroup's path that create did not record
    /// ([`Owned::is_made`]), someone else's.
    pub(crate) fn remove_tree(&self) -> Result<bool> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        let mut foreign = false;
        for top in self.own_directories()? {
            if !self.is_made(&top) {
                foreign = true;
                log::warn!(
                    "cgroup {} is not the one made for the container (another directory now has its path): left alone",
                    top.display()
                );
                continue;
            }
            thaw(&top);
            loop {
                let mut tree = Vec::new();
                collect_tree(&top, &mut tree);
                let mut busy = false;
                for dir in &tree {
                    for pid in std::fs::read_to_string(dir.join("cgroup.procs"))
                        .unwrap_or_default()
                        .lines()
                        .filter_map(|l| l.trim().parse::<i32>().ok())
                    {
                        busy = true;
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
                // Deepest first: `collect_tree` lists a directory after everything under it.
                for dir in &tree {
                    match std::fs::remove_dir(dir) {
                        Ok(()) => {}
                        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                        Err(err) if err.raw_os_error() == Some(libc::EBUSY) => busy = true,
                        Err(err) => {
                            return Err(err)
                                .with_context(|| format!("removing cgroup {}", dir.display()))
                        }
                    }
                }
                if !busy || !top.exists() {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    bail!("cgroup {} still has processes after SIGKILL", top.display());
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        Ok(foreign)
    }

    /// Whether `dir`, when it exists, is a directory create recorded (any, when it recorded
    /// none).
    pub(crate) fn is_made(&self, dir: &Path) -> bool {
        match Made::of(dir) {
            Some(now) => self.made.is_empty() || self.made.contains(&now),
            None => true,
        }
    }

    /// Where libcgroups made this cgroup: every hierarchy but the named ones (`name=systemd`)
    /// and, beside v1 controllers, the hybrid cgroup2. A cgroup of the same path there is a
    /// host service's, made after create checked it did not exist: never killed.
    fn own_directories(&self) -> Result<Vec<PathBuf>> {
        let table = MountTable::read()?;
        let relative = relative_path(&self.path, self.systemd)?;
        if is_systemd_unit(&self.path, self.systemd) {
            return Ok(vec![Path::new(DEFAULT_CGROUP_ROOT).join(relative)]);
        }
        let has_v1 = table.0.iter().any(|m| m.fs_type == "cgroup");
        Ok(table
            .0
            .iter()
            .filter(|m| match m.fs_type.as_str() {
                "cgroup" => !m.cgroup_options.iter().any(|o| o.starts_with("name=")),
                "cgroup2" => !has_v1,
                _ => false,
            })
            .map(|m| m.point.join(&relative))
            .collect())
    }

    /// The cgroup recorded in `state_dir`; `None` when no create got as far as claiming one.
    pub(crate) fn recorded(state_dir: &Path) -> Result<Option<Owned>> {
        crate::atomic_file::read_json(&state_dir.join(RECORD))
    }
}

/// Every directory, in every mounted hierarchy, where the cgroup `path` would be: libcgroups
/// joins the path, leading `/` dropped, to each hierarchy's root; on cgroup v2 with systemd
/// the unit's cgroup is `<slice expanded>/<prefix>-<name>.scope` (or `<name>` for a slice).
fn directories(path: &Path, systemd: bool, table: &MountTable) -> Result<Vec<PathBuf>> {
    let relative = relative_path(path, systemd)?;
    if is_systemd_unit(path, systemd) {
        return Ok(vec![Path::new(DEFAULT_CGROUP_ROOT).join(relative)]);
    }
    Ok(table
        .cgroup_hierarchies()
        .map(|point| point.join(&relative))
        .collect())
}

/// Whether `path` names a systemd unit's cgroup (cgroup v2 with `--systemd-cgroup` and
/// `slice:prefix:name`).
fn is_systemd_unit(path: &Path, systemd: bool) -> bool {
    systemd && !path.is_absolute() && matches!(get_cgroup_setup(), Ok(CgroupSetup::Unified))
}

/// The cgroup `path` relative to the root of each hierarchy it is in.
fn relative_path(path: &Path, systemd: bool) -> Result<PathBuf> {
    if is_systemd_unit(path, systemd) {
        return systemd_unit_path(path);
    }
    Ok(path
        .components()
        .filter(|c| !matches!(c, Component::RootDir))
        .collect())
}

/// libcgroups' systemd naming: `slice:prefix:name`, an empty slice meaning `system.slice`.
fn systemd_unit_path(path: &Path) -> Result<PathBuf> {
    let text = path.to_string_lossy();
    let parts: Vec<&str> = text.split(':').collect();
    let (slice, prefix, name) = match parts[..] {
        [slice, prefix, name] => (slice, prefix, name),
        _ => bail!("cgroupsPath {text:?} is not slice:prefix:name"),
    };
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    let unit = if name.ends_with(".slice") {
        name.to_owned()
    } else {
        format!("{prefix}-{name}.scope")
    };
    Ok(expand_slice(slice)?.join(unit))
}

/// systemd's slice nesting: `a-b.slice` lives at `a.slice/a-b.slice`; `-.slice` is the root.
fn expand_slice(slice: &str) -> Result<PathBuf> {
    let Some(stem) = slice.strip_suffix(".slice") else {
        bail!("{slice:?} is not a slice name");
    };
    let mut path = PathBuf::new();
    if stem == "-" {
        return Ok(path);
    }
    let mut prefix = String::new();
    for part in stem.split('-') {
        if part.is_empty() {
            bail!("{slice:?} is not a valid slice name");
        }
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push(format!("{prefix}.slice"));
    }
    Ok(path)
}

/// `dir` and every cgroup under it, each after the ones under it (none when `dir` is gone).
fn collect_tree(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_tree(&entry.path(), out);
        }
    }
    out.push(dir.to_path_buf());
}

/// Thaws a frozen cgroup (v1 freezer, v2 cgroup.freeze); nothing where there is no freezer.
fn thaw(dir: &Path) {
    let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
    let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
}

/// No process in the cgroup and no cgroup under it.
fn is_empty(dir: &Path) -> bool {
    let no_process = std::fs::read_to_string(dir.join("cgroup.procs"))
        .is_ok_and(|procs| procs.trim().is_empty());
    let no_child = std::fs::read_dir(dir).is_ok_and(|entries| {
        !entries
            .flatten()
            .any(|e| e.file_type().is_ok_and(|t| t.is_dir()))
    });
    no_process && no_child
}

/// What will be created must lie on a cgroup filesystem: its nearest existing ancestor is
/// checked with statfs.
fn check_cgroup_fs(dir: &Path) -> Result<()> {
    let existing = dir
        .ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"));
    let fs = statfs(existing).with_context(|| format!("statfs {}", existing.display()))?;
    if fs.filesystem_type() != CGROUP_SUPER_MAGIC && fs.filesystem_type() != CGROUP2_SUPER_MAGIC {
        bail!(
            "cgroup {} would not be on a cgroup filesystem ({} is not cgroupfs or cgroup2)",
            dir.display(),
            existing.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_expand_as_systemd_nests_them() {
        assert_eq!(
            systemd_unit_path(Path::new(
                "kubepods-besteffort-pod12.slice:cri-containerd:abc"
            ))
            .unwrap(),
            Path::new(
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-containerd-abc.scope"
            )
        );
        assert_eq!(
            systemd_unit_path(Path::new(":youki:x")).unwrap(),
            Path::new("system.slice/youki-x.scope")
        );
        assert_eq!(
            systemd_unit_path(Path::new("-.slice:p:user.slice")).unwrap(),
            Path::new("user.slice")
        );
        assert!(expand_slice("a--b.slice").is_err());
    }

    #[test]
    fn the_record_is_absent_until_claimed() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Owned::recorded(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join(RECORD), "{").unwrap();
        assert!(
            Owned::recorded(dir.path()).is_err(),
            "never trusted half-written"
        );
    }
}
