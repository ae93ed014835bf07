//! The host's mount table (`/proc/self/mountinfo`, parsed by the `procfs` crate), read once by
//! `create` and shared by its checks: which optional mounts the host has
//! (runtime/host_sources.rs), where the container's cgroup would be in each hierarchy
//! (runtime/cgroup.rs), and whether the shared sources propagate. Each read costs the kernel
//! a line per mount: hosts with hundreds of mounts (pod volumes, overlays) pay it per read.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

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
}

/// This process's mount table, in mountinfo order: a later entry at a point is on top.
#[derive(Debug)]
pub(crate) struct MountTable(pub Vec<MountEntry>);

impl MountTable {
    /// Reads `/proc/self/mountinfo`. Errors: procfs unreadable or a line it cannot parse.
    pub(crate) fn read() -> Result<MountTable> {
        let mounts = procfs::process::Process::myself()
            .and_then(|me| me.mountinfo())
            .context("reading /proc/self/mountinfo")?;
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
                })
                .collect(),
        ))
    }

    /// The mount on top at `point`, if `point` is a mount point.
    pub(crate) fn top_at(&self, point: &Path) -> Option<&MountEntry> {
        self.0.iter().rev().find(|m| m.point == point)
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
