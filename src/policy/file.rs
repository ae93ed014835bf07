//! The policy's inputs: flags, then the policy file, then defaults.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::{capabilities, seccomp, Compatibility, Policy, MOUNT_AREA_TARGET};
use crate::cli;

pub(crate) const DEFAULT_PATH: &str = "/etc/bootstrap-runc/policy.toml";
/// Another policy file; containerd passes no flags, so this is how its runtime gets one.
pub(crate) const PATH_ENV: &str = "BOOTSTRAP_RUNC_POLICY";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct PolicyFile {
    host_root: Option<PathBuf>,
    host_mount_area: Option<PathBuf>,
    #[serde(default)]
    extra_capabilities: Vec<String>,
    #[serde(default)]
    writable_binds: Vec<PathBuf>,
    shared_dirs: Option<Vec<PathBuf>>,
    host_certs: Option<PathBuf>,
    seccomp: Option<seccomp::Mode>,
    compatibility: Option<Compatibility>,
    state_dirs: Option<Vec<PathBuf>>,
}

/// The policy's flags on a command line (host paths, the Bottlerocket mode): bootstrap-runc's
/// global flags, and the supervisor's, which its runtime processes take as theirs.
#[derive(Clone, Debug, Default, clap::Args)]
pub(crate) struct PolicyFlags {
    /// Host directory bound read-only at /.bottlerocket/rootfs [policy file, then /]
    #[arg(long, global = true, value_name = "PATH", value_parser = cli::absolute)]
    pub host_root: Option<PathBuf>,
    /// Host directory bound rshared at /.bottlerocket/rootfs/mnt [policy file, then /mnt]
    #[arg(long, global = true, value_name = "PATH", value_parser = cli::absolute)]
    pub host_mount_area: Option<PathBuf>,
    /// Host directories bound read-write and rshared at /.bottlerocket/rootfs<dir>,
    /// comma-separated; '' for none [policy file, then
    /// /var/lib/containerd,/var/lib/docker,/var/lib/kubelet]
    #[arg(long, global = true, value_name = "LIST", value_parser = parse_dir_list)]
    pub shared_dirs: Option<DirList>,
    /// bottlerocket: a writable container root and the host root bound as Bottlerocket binds
    /// it (only its top mount read-only) [policy file, then strict]
    #[arg(long, global = true, value_enum, value_name = "MODE")]
    pub compatibility: Option<Compatibility>,
}

impl PolicyFlags {
    /// The flags as the policy takes them, with `protected_dirs` (a flag of bootstrap-runc's;
    /// the supervisor's own state for the supervisor) and `state_dirs` (the supervisor's).
    pub(crate) fn overrides(
        &self,
        protected_dirs: Vec<PathBuf>,
        state_dirs: Vec<PathBuf>,
    ) -> Overrides {
        Overrides {
            host_root: self.host_root.clone(),
            host_mount_area: self.host_mount_area.clone(),
            shared_dirs: self.shared_dirs.clone().map(|list| list.0),
            systemd_cgroup: false,
            protected_dirs,
            compatibility: self.compatibility,
            state_dirs,
        }
    }
}

/// What the command line says; it wins over the file.
#[derive(Clone, Debug, Default)]
pub(crate) struct Overrides {
    pub host_root: Option<PathBuf>,
    pub host_mount_area: Option<PathBuf>,
    /// `--shared-dirs`: `Some(vec![])` is "none".
    pub shared_dirs: Option<Vec<PathBuf>>,
    /// `--systemd-cgroup`.
    pub systemd_cgroup: bool,
    /// `--protected-dirs`.
    pub protected_dirs: Vec<PathBuf>,
    /// `--compatibility`.
    pub compatibility: Option<Compatibility>,
    /// The supervisor's state and run directories ([`Policy::state_dirs`]).
    pub state_dirs: Vec<PathBuf>,
}

/// The policy file's path: `$BOOTSTRAP_RUNC_POLICY`, else the default.
pub(crate) fn path() -> PathBuf {
    std::env::var_os(PATH_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

/// Reads the policy file (a missing one means the defaults; an unreadable or invalid one is an
/// error) and applies the overrides.
pub(crate) fn load(path: &Path, overrides: &Overrides) -> Result<Policy> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(err) if err.kind() == ErrorKind::NotFound => None,
        Err(err) => {
            return Err(err).with_context(|| format!("reading policy file {}", path.display()))
        }
    };
    resolve(text.as_deref(), overrides).with_context(|| format!("policy file {}", path.display()))
}

/// Pure part of `load`: file contents (if any) plus overrides to a policy.
pub(crate) fn resolve(text: Option<&str>, overrides: &Overrides) -> Result<Policy> {
    let file: PolicyFile = match text {
        Some(text) => toml::from_str(text).context("invalid TOML")?,
        None => PolicyFile::default(),
    };
    let defaults = Policy::default();
    let mut extra = Vec::new();
    for name in &file.extra_capabilities {
        match capabilities::parse(name) {
            Some(cap) => extra.push(cap),
            None => bail!("extra-capabilities: unknown capability {name:?}"),
        }
    }
    let policy = Policy {
        host_root: overrides
            .host_root
            .clone()
            .or(file.host_root)
            .unwrap_or(defaults.host_root),
        host_mount_area: overrides
            .host_mount_area
            .clone()
            .or(file.host_mount_area)
            .unwrap_or(defaults.host_mount_area),
        extra_capabilities: extra,
        writable_binds: file.writable_binds,
        shared_dirs: overrides
            .shared_dirs
            .clone()
            .or(file.shared_dirs)
            .unwrap_or(defaults.shared_dirs),
        host_certs: file.host_certs.unwrap_or(defaults.host_certs),
        seccomp: file.seccomp.unwrap_or(defaults.seccomp),
        systemd_cgroup: overrides.systemd_cgroup,
        protected_dirs: overrides.protected_dirs.clone(),
        compatibility: overrides
            .compatibility
            .or(file.compatibility)
            .unwrap_or(defaults.compatibility),
        state_dirs: file
            .state_dirs
            .unwrap_or(defaults.state_dirs)
            .into_iter()
            .chain(overrides.state_dirs.iter().cloned())
            .collect(),
    };
    for (key, path) in [
        ("host-root", &policy.host_root),
        ("host-mount-area", &policy.host_mount_area),
        ("host-certs", &policy.host_certs),
    ]
    .into_iter()
    .chain(policy.writable_binds.iter().map(|p| ("writable-binds", p)))
    .chain(policy.shared_dirs.iter().map(|p| ("shared-dirs", p)))
    .chain(policy.state_dirs.iter().map(|p| ("state-dirs", p)))
    {
        if !path.is_absolute() {
            bail!("{key}: {} is not an absolute path", path.display());
        }
    }
    check_shared_dirs(&policy)?;
    Ok(policy)
}

/// Each shared directory is a read-write, propagating mount on the read-only host root: not
/// the root itself; not at or under the mount area's place in the container (`/mnt`: a bind
/// stacked on that propagating copy would be left on the host), nor one inside another (the
/// same); and on the host neither overlapping the mount area nor a writable bind source, where
/// a container could swap a directory on its path for a symlink while another is created.
fn check_shared_dirs(policy: &Policy) -> Result<()> {
    let mount_target = Path::new("/").join(
        Path::new(MOUNT_AREA_TARGET)
            .strip_prefix(super::HOST_ROOT_TARGET)
            .unwrap_or(Path::new("mnt")),
    );
    let dirs = &policy.shared_dirs;
    for (i, dir) in dirs.iter().enumerate() {
        let text = dir.to_string_lossy();
        if text.split('/').any(|part| part == "." || part == "..") {
            bail!(
                "shared-dirs: {} must not contain '.' or '..'",
                dir.display()
            );
        }
        if dir.parent().is_none() {
            bail!("shared-dirs: / would make the whole host root writable");
        }
        if dir.starts_with(&mount_target) {
            bail!(
                "shared-dirs: {} is in {}, where the mount area is, which is shared already",
                dir.display(),
                mount_target.display()
            );
        }
        let on_host = super::under(&policy.host_root, dir);
        for (what, writable) in std::iter::once(("the host mount area", &policy.host_mount_area))
            .chain(policy.writable_binds.iter().map(|w| ("a writable bind", w)))
        {
            if on_host.starts_with(writable) || writable.starts_with(&on_host) {
                bail!(
                    "shared-dirs: {} ({}) overlaps {what}, {}, which containers can write",
                    dir.display(),
                    on_host.display(),
                    writable.display()
                );
            }
        }
        for other in &dirs[i + 1..] {
            if dir.starts_with(other) || other.starts_with(dir) {
                bail!(
                    "shared-dirs: {} and {} overlap; list the outer one only",
                    dir.display(),
                    other.display()
                );
            }
        }
    }
    Ok(())
}

/// `--shared-dirs`'s value (a type of its own, so clap takes it as one value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DirList(pub Vec<PathBuf>);

/// Parses `--shared-dirs` and `--protected-dirs`: comma-separated absolute paths; empty means
/// none.
pub(crate) fn parse_dir_list(list: &str) -> Result<DirList, String> {
    list.split(',')
        .filter(|dir| !dir.is_empty())
        .map(|dir| {
            let path = PathBuf::from(dir);
            if path.is_absolute() {
                Ok(path)
            } else {
                Err(format!("{dir} is not an absolute path"))
            }
        })
        .collect::<Result<_, _>>()
        .map(DirList)
}

#[cfg(test)]
mod tests {
    use super::*;
    use libcontainer::oci_spec::runtime::Capability;

    #[test]
    fn missing_file_means_defaults() {
        assert_eq!(
            resolve(None, &Overrides::default()).unwrap(),
            Policy::default()
        );
        let dir = tempfile::tempdir().unwrap();
        let policy = load(&dir.path().join("absent.toml"), &Overrides::default()).unwrap();
        assert_eq!(policy, Policy::default());
    }

    #[test]
    fn flag_beats_file_beats_default() {
        let text = r#"
            host-root = "/file-root"
            host-mount-area = "/file-mnt"
            extra-capabilities = ["CAP_SYS_PTRACE", "sys_rawio"]
            writable-binds = ["/var/lib/x"]
            shared-dirs = ["/data/containerd"]
            host-certs = "/etc/pki/tls/certs"
            seccomp = "unconfined"
            compatibility = "bottlerocket"
        "#;
        let policy = resolve(Some(text), &Overrides::default()).unwrap();
        assert_eq!(policy.host_root, Path::new("/file-root"));
        assert_eq!(policy.host_mount_area, Path::new("/file-mnt"));
        assert_eq!(
            policy.extra_capabilities,
            [Capability::SysPtrace, Capability::SysRawio]
        );
        assert_eq!(policy.writable_binds, [PathBuf::from("/var/lib/x")]);
        assert_eq!(policy.shared_dirs, [PathBuf::from("/data/containerd")]);
        assert_eq!(policy.host_certs, Path::new("/etc/pki/tls/certs"));
        assert_eq!(policy.seccomp, seccomp::Mode::Unconfined);
        assert_eq!(policy.compatibility, Compatibility::Bottlerocket);

        let overrides = Overrides {
            host_root: Some("/flag-root".into()),
            shared_dirs: Some(parse_dir_list("").unwrap().0),
            ..Default::default()
        };
        let policy = resolve(Some(text), &overrides).unwrap();
        assert_eq!(policy.host_root, Path::new("/flag-root"));
        assert_eq!(policy.host_mount_area, Path::new("/file-mnt"));
        assert!(policy.shared_dirs.is_empty(), "--shared-dirs '' means none");
    }

    #[test]
    fn shared_dirs_flag() {
        assert_eq!(
            parse_dir_list("/a,/b/c").unwrap().0,
            [PathBuf::from("/a"), PathBuf::from("/b/c")]
        );
        assert!(parse_dir_list("/a,b").unwrap_err().contains("b is not"));
        assert_eq!(
            resolve(None, &Overrides::default()).unwrap().shared_dirs,
            crate::policy::default_shared_dirs()
        );
    }

    #[test]
    fn invalid_files_are_errors() {
        for (text, wanted) in [
            ("host-root = ", "invalid TOML"),
            ("hots-root = \"/x\"", "unknown field"),
            (
                "extra-capabilities = [\"CAP_NOPE\"]",
                "unknown capability \"CAP_NOPE\"",
            ),
            (
                "host-root = \"relative\"",
                "host-root: relative is not an absolute path",
            ),
            (
                "writable-binds = [\"x\"]",
                "writable-binds: x is not an absolute path",
            ),
            ("shared-dirs = [\"/\"]", "whole host root"),
            ("shared-dirs = [\"/mnt/x\"]", "where the mount area is"),
            (
                "host-mount-area = \"/data\"\nshared-dirs = [\"/data/k/lib\"]",
                "overlaps the host mount area, /data",
            ),
            (
                "writable-binds = [\"/srv\"]\nshared-dirs = [\"/srv/state\"]",
                "overlaps a writable bind, /srv",
            ),
            (
                "host-mount-area = \"/var/lib/mnt\"\nshared-dirs = [\"/var/lib\"]",
                "overlaps the host mount area",
            ),
            ("shared-dirs = [\"/var/lib/../x\"]", "'.' or '..'"),
            (
                "shared-dirs = [\"var\"]",
                "shared-dirs: var is not an absolute path",
            ),
            (
                "shared-dirs = [\"/var/lib\", \"/var/lib/kubelet\"]",
                "overlap",
            ),
            (
                "host-certs = \"certs\"",
                "host-certs: certs is not an absolute path",
            ),
            ("seccomp = \"strict\"", "unknown variant"),
            ("compatibility = \"bottlerock\"", "unknown variant"),
        ] {
            let err = format!(
                "{:#}",
                resolve(Some(text), &Overrides::default()).unwrap_err()
            );
            assert!(err.contains(wanted), "{text}: {err}");
        }
    }

    #[test]
    fn unreadable_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        // a directory cannot be read as a file
        let err = load(dir.path(), &Overrides::default()).unwrap_err();
        assert!(format!("{err:#}").contains("reading policy file"));
    }
}
