use anyhow::Result;
use serde_json::json;

use crate::policy::capabilities;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

/// The OCI runtime features document (runtime-spec features.md), bootstrap policy included.
pub(crate) fn run(_args: &Args) -> Result<i32> {
    let mut caps: Vec<String> = capabilities::bootstrap_set()
        .into_iter()
        .map(capabilities::name)
        .collect();
    caps.sort();
    super::print_json(&json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": [],
        "mountOptions": ["bind", "rbind", "ro", "rw", "rro", "nosuid", "nodev", "noexec", "relatime"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": true},
            "seccomp": {"enabled": true},
        },
        "annotations": {
            "io.github.bootstrap-runc.policy": "bootstrap",
        },
    }))
}
