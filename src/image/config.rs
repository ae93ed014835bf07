//! The image config (the OCI image-spec's `config` object): the part of an image that shapes
//! its container's process.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The parts of an image config that shape the container.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Deserialize)]
struct ConfigBlob {
    #[serde(default)]
    config: ImageConfig,
}

impl ImageConfig {
    /// The process-shaping part of an image config blob.
    pub fn from_config_blob(blob: &[u8]) -> Result<ImageConfig> {
        let parsed: ConfigBlob =
            serde_json::from_slice(blob).context("parsing the image config")?;
        Ok(parsed.config)
    }
}
