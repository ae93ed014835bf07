//! `state` and `list` JSON in runc's shape.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Result;
use libcontainer::container::{Container, ContainerStatus};
use serde::Serialize;

use super::{derived_bundle, Runtime};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OciState {
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: &'static str,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<HashMap<String, String>>,
}

pub(crate) fn status_name(status: ContainerStatus) -> &'static str {
    match status {
        ContainerStatus::Creating => "creating",
        ContainerStatus::Created => "created",
        ContainerStatus::Running => "running",
        ContainerStatus::Paused => "paused",
        ContainerStatus::Stopped => "stopped",
    }
}

impl Runtime {
    pub(crate) fn state(&self, id: &str) -> Result<OciState> {
        let _lock = self.lock(id)?;
        let container = self.load(id)?;
        Ok(self.describe(&container))
    }

    /// States of every container that has readable state, for `list`.
    pub(crate) fn states(&self) -> Result<Vec<OciState>> {
        let mut states = Vec::new();
        for id in self.root.ids()? {
            let _lock = self.lock(&id)?;
            if let Ok(container) = self.load(&id) {
                states.push(self.describe(&container));
            }
        }
        Ok(states)
    }

    fn describe(&self, container: &Container) -> OciState {
        let status = container.status();
        let (bundle, rootfs) =
            match derived_bundle::read_meta(&self.root.derived_dir(container.id())) {
                Ok(meta) => (meta.bundle, meta.rootfs),
                Err(_) => (
                    container.bundle().clone(),
                    container.bundle().join("rootfs"),
                ),
            };
        let annotations = container
            .state
            .annotations
            .clone()
            .filter(|a| !a.is_empty());
        OciState {
            oci_version: "1.0.2".to_string(),
            id: container.id().to_string(),
            pid: match (status, container.pid()) {
                (ContainerStatus::Stopped, _) | (_, None) => 0,
                (_, Some(pid)) => pid.as_raw(),
            },
            status: status_name(status),
            bundle,
            rootfs,
            created: container
                .created()
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
                .unwrap_or_default(),
            owner: String::new(),
            annotations,
        }
    }
}
