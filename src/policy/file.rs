//! The policy's inputs: flags, then the policy file, then defaults.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::{capabilities, Policy};

pub const DEFAULT_PATH: &str = "/etc/bootstrap-runc/policy.toml";
/// Another policy file; containerd passes no flags, so this is how its runtime gets one.
pub const PATH_ENV: &str = "BOOTSTRAP_RUNC_POLICY";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct PolicyFile {
    host_root: Option<PathBuf>,
    host_mount_area: Option<PathBuf>,
    #[serde(default)]
    extra_capabilities: Vec<String>,
    #[serde(default)]
    writable_binds: Vec<PathBuf>,
}

/// What the command line says; it wins over the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub host_root: Option<PathBuf>,
    pub host_mount_area: Option<PathBuf>,
    /// `--systemd-cgroup`.
    pub systemd_cgroup: bool,
}

/// The policy file's path: `$BOOTSTRAP_RUNC_POLICY`, else the default.
pub fn path() -> PathBuf {
    std::env::var_os(PATH_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

/// Reads the policy file (a missing one means the defaults; an unreadable or invalid one is an
/// error) and applies the overrides.
pub fn load(path: &Path, overrides: &Overrides) -> Result<Policy> {
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
pub fn resolve(text: Option<&str>, overrides: &Overrides) -> Result<Policy> {
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
        systemd_cgroup: overrides.systemd_cgroup,
    };
    for (key, path) in [
        ("host-root", &policy.host_root),
        ("host-mount-area", &policy.host_mount_area),
    ]
    .into_iter()
    .chain(policy.writable_binds.iter().map(|p| ("writable-binds", p)))
    {
        if !path.is_absolute() {
            bail!("{key}: {} is not an absolute path", path.display());
        }
    }
    Ok(policy)
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
        "#;
        let policy = resolve(Some(text), &Overrides::default()).unwrap();
        assert_eq!(policy.host_root, Path::new("/file-root"));
        assert_eq!(policy.host_mount_area, Path::new("/file-mnt"));
        assert_eq!(
            policy.extra_capabilities,
            [Capability::SysPtrace, Capability::SysRawio]
        );
        assert_eq!(policy.writable_binds, [PathBuf::from("/var/lib/x")]);

        let overrides = Overrides {
            host_root: Some("/flag-root".into()),
            host_mount_area: None,
            systemd_cgroup: false,
        };
        let policy = resolve(Some(text), &overrides).unwrap();
        assert_eq!(policy.host_root, Path::new("/flag-root"));
        assert_eq!(policy.host_mount_area, Path::new("/file-mnt"));
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
