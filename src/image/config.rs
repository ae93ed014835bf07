//! The image config (the OCI image-spec's `config` object): the part of an image that shapes
//! its container's process. Only read here; how each field becomes the process is
//! `supervisor::spec`'s (containerd's and CRI's rules) and [`super::user`]'s.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The parts of an image config that shape the container, as the image-spec names them.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ImageConfig {
    /// The executable and its first arguments; `[""]` means none (CRI's reading).
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// The arguments after the entrypoint (or the whole command without one).
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// `NAME=value` entries.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// The process's working directory; `/` when absent or empty.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// `name`, `uid`, `name:group`, `uid:gid`, `name:gid` or `uid:group`; root when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// The signal that asks the container to stop (a name such as `SIGQUIT`, or a number);
    /// SIGTERM when absent.
    #[serde(default)]
    pub stop_signal: Option<String>,
}

#[derive(Deserialize)]
struct ConfigBlob {
    #[serde(default)]
    config: ImageConfig,
}

impl ImageConfig {
    /// The process-shaping part of an image config blob (JSON). Errors: the blob is not JSON,
    /// or a field has the wrong type.
    pub(crate) fn from_config_blob(blob: &[u8]) -> Result<ImageConfig> {
        let parsed: ConfigBlob =
            serde_json::from_slice(blob).context("parsing the image config")?;
        Ok(parsed.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fields_are_read_as_the_image_spec_spells_them() {
        let blob = br#"{"architecture":"amd64","config":{"Entrypoint":[""],"Cmd":["sh"],
            "Env":["A=1"],"WorkingDir":"/w","User":"nobody","StopSignal":"SIGQUIT",
            "Labels":{"x":"y"}}}"#;
        let config = ImageConfig::from_config_blob(blob).unwrap();
        assert_eq!(config.entrypoint, Some(vec![String::new()]));
        assert_eq!(config.cmd, Some(vec!["sh".to_string()]));
        assert_eq!(config.user.as_deref(), Some("nobody"));
        assert_eq!(config.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(
            ImageConfig::from_config_blob(b"{}").unwrap(),
            ImageConfig::default()
        );
    }
}
