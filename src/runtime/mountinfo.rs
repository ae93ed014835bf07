//! The host's mount table (`/proc/self/mountinfo`, parsed by the `procfs` crate), read once by
//! `create` and shared by its checks: which optional mounts the host has
//! (runtime/host_sources.rs), where the container's cgroup would be in each hierarchy
//! (runtime/cgroup.rs), and whether the shared sources propagate. Each read costs the kernel
//! a line per mount: hosts with hundreds of mounts (pod volumes, overlays) pay it per read.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use procfs::FromBufRead;

/// One line of mountinfo: what the decisions need.
#[derive(Debug)]
pub(crate) struct MountEntry {
    /// The mount point, unescaped.
    pub point: PathBuf,
    /// In a shared peer group (`shared:N`).
    pub shared: bool,
    /// `proc`, `cgroup2`, `debugfs`, ...
    pub fs_type: String,
    /// A cgroup v1 hierarchy's super options (`cpu`, `name=systemd`, ...), empty otherwise.
    pub cgroup_options: Vec<String>,
    /// The filesystem's device, `major:minor`.
    pub device: String,
    /// The directory of the filesystem mounted there, from its own root, unescaped.
    pub root: PathBuf,
}

/// This process's mount table, in mountinfo order: a later entry at a point is on top.
#[derive(Debug)]
pub(crate) struct MountTable(pub Vec<MountEntry>);

impl MountTable {
    /// Reads `/proc/self/mountinfo`. Errors: procfs unreadable or a line it cannot parse. A
    /// path that is not UTF-8 (any container can mount at one in the mount area) is read
    /// lossily: it names no path of ours, and must not stop every create and delete.
    pub(crate) fn read() -> Result<MountTable> {
        let bytes =
            std::fs::read("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
        let text = String::from_utf8_lossy(&bytes);
        let mounts = procfs::process::MountInfos::from_buf_read(text.as_bytes())
            .context("parsing /proc/self/mountinfo")?;
        Ok(MountTable(
            mounts
                .into_iter()
                .map(|m| MountEntry {
                    point: PathBuf::from(unescape(&m.mount_point.to_string_lossy())),
                    shared: m
                        .opt_fields
                        .iter()
                        .any(|f| matches!(f, procfs::process::MountOptFields::Shared(_))),
                    cgroup_options: if m.fs_type == "cgroup" {
                        m.super_options
                            .iter()
                            .map(|(key, value)| match value {
                                Some(value) => format!("{key}={value}"),
                                None => key.clone(),
                            })
                            .collect()
                    } else {
                        Vec::new()
                    },
                    fs_type: m.fs_type,
                    device: m.majmin,
                    root: PathBuf::from(unescape(&m.root)),
                })
                .collect(),
        ))
    }

    /// The mount on top at `point`, if `point` is a mount point.
    pub(crate) fn top_at(&self, point: &Path) -> Option<&MountEntry> {
        self.0.iter().rev().find(|m| m.point == point)
    }

    /// The other paths at which the directory `dir` (absolute, symlinks resolved) is reached:
    /// through every other mount of its filesystem (same device) whose root holds it, each
    /// checked to be the same directory (device and inode) on this host.
    pub(crate) fn aliases(&self, dir: &Path) -> Vec<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        let identity = |path: &Path| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
        // The mount `dir` is on: the deepest point holding it, the top one of those.
        let holder = self
            .0
            .iter()
            .rev()
            .filter(|m| dir.starts_with(&m.point))
            .max_by_key(|m| m.point.components().count());
        let (Some(holder), Some(wanted)) = (holder, identity(dir)) else {
            return Vec::new();
        };
        let in_fs = holder
            .root
            .join(dir.strip_prefix(&holder.point).unwrap_or(dir));
        let mut found: Vec<PathBuf> = Vec::new();
        for mount in self.0.iter().filter(|m| m.device == holder.device) {
            let Ok(below) = in_fs.strip_prefix(&mount.root) else {
                continue;
            };
            let alias = mount.point.join(below);
            if alias != dir && !found.contains(&alias) && identity(&alias) == Some(wanted) {
                found.push(alias);
            }
        }
        found
    }

    /// The mount points of every cgroup (v1) and cgroup2 hierarchy.
    pub(crate) fn cgroup_hierarchies(&self) -> impl Iterator<Item = &Path> {
        self.0
            .iter()
            .filter(|m| m.fs_type == "cgroup" || m.fs_type == "cgroup2")
            .map(|m| m.point.as_path())
    }
}

/// mountinfo escapes space, tab, newline and backslash as octal; procfs leaves them so.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let octal = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("0");
            out.push(u8::from_str_radix(octal, 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape("/with\\040space"), "/with space");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn the_table_read_has_this_process_root_and_its_cgroups() {
        let table = MountTable::read().unwrap();
        assert!(table.top_at(Path::new("/")).is_some());
        assert!(table.cgroup_hierarchies().count() > 0);
    }
}
