//! The registry config file (`--registry-config`, default
//! `/etc/bootstrap-containers/registries.toml`), one table per registry `host[:port]`:
//!
//! ```toml
//! [registries."registry.example:5000"]
//! insecure = true                           # plain HTTP allowed
//! ca-file = "/etc/pki/private-ca.pem"       # extra CA bundle (PEM) for this registry
//! auth-file = "/root/.docker/config.json"   # credentials, docker config.json format
//! mirrors = ["mirror.example:5000"]         # tried in order before the registry itself
//! ```
//! It may name credential files, so it must be root's and writable by nobody else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegistryConfig {
    #[serde(default)]
    pub registries: BTreeMap<String, Registry>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Registry {
    #[serde(default)]
    pub insecure: bool,
    pub ca_file: Option<PathBuf>,
    pub auth_file: Option<PathBuf>,
    #[serde(default)]
    pub mirrors: Vec<String>,
}

impl RegistryConfig {
    /// Reads the file; a missing file means defaults (anonymous HTTPS everywhere).
    pub(crate) fn load(path: &Path) -> Result<RegistryConfig> {
        let Some((text, _)) = crate::private_file::read(path)? else {
            log::debug!("{} does not exist: registry defaults", path.display());
            return Ok(RegistryConfig::default());
        };
        RegistryConfig::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub(crate) fn parse(text: &str) -> Result<RegistryConfig> {
        let config: RegistryConfig = toml::from_str(text).context("parsing the registry config")?;
        for (host, registry) in &config.registries {
            check_host(host)?;
            for mirror in &registry.mirrors {
                check_host(mirror).with_context(|| format!("a mirror of {host}"))?;
            }
            for path in registry.ca_file.iter().chain(&registry.auth_file) {
                if !path.is_absolute() {
                    bail!("{host}: {} is not an absolute path", path.display());
                }
            }
        }
        Ok(config)
    }

    /// The settings for `host` (defaults when the file has none).
    pub(crate) fn registry(&self, host: &str) -> Registry {
        self.registries.get(host).cloned().unwrap_or_default()
    }
}

/// A registry is named `host[:port]`, as in image references.
fn check_host(host: &str) -> Result<()> {
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:_[]".contains(&b));
    if !valid {
        bail!("{host:?} is not a registry host[:port]");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_form() {
        let config = RegistryConfig::parse(
            r#"
            [registries."registry.example:5000"]
            insecure = true
            ca-file = "/etc/pki/private-ca.pem"
            auth-file = "/root/.docker/config.json"
            mirrors = ["mirror.example:5000"]
            "#,
        )
        .unwrap();
        let registry = config.registry("registry.example:5000");
        assert!(registry.insecure);
        assert_eq!(
            registry.ca_file.unwrap(),
            Path::new("/etc/pki/private-ca.pem")
        );
        assert_eq!(registry.mirrors, ["mirror.example:5000"]);
        assert_eq!(config.registry("other.example"), Registry::default());
    }

    #[test]
    fn refuses_unknown_keys_relative_paths_and_bad_hosts() {
        let err = |text: &str| format!("{:#}", RegistryConfig::parse(text).unwrap_err());
        assert!(err("[registries.\"r\"]\ninsecur = true").contains("unknown field"));
        assert!(err("[registries.\"r\"]\nca-file = \"ca.pem\"").contains("not an absolute path"));
        assert!(err("[registries.\"r/x\"]").contains("not a registry"));
        assert!(err("[registries.\"r\"]\nmirrors = [\"\"]").contains("not a registry"));
    }

    #[test]
    fn files_others_can_write_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registries.toml");
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(RegistryConfig::load(&path).is_ok());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(format!("{:#}", RegistryConfig::load(&path).unwrap_err()).contains("writable"));
        assert_eq!(
            RegistryConfig::load(&dir.path().join("missing")).unwrap(),
            RegistryConfig::default()
        );
    }
}
