//! `update`: new cgroup resources for a container, as runc's `update` and containerd's
//! `UpdateContainerResources` (CRI's in-place resize, the CPU manager) use it. The update is
//! merged into the resources the container has (only the fields it names change, as runc
//! merges), devices stay as created, the policy's rules for resources hold, and only the
//! container's own cgroup is written (runtime/cgroup.rs).

use anyhow::{bail, Context, Result};
use libcgroups::common::{CgroupManager, ControllerOpt};
use libcontainer::container::ContainerStatus;
use libcontainer::oci_spec::runtime::{Linux, LinuxResources};
use serde_json::Value;

use super::{derived_bundle, Runtime};
use crate::policy;

impl Runtime {
    /// Applies `update` (runc's `--resources` JSON: the runtime-spec's `linux.resources`, or a
    /// part of it) to the container's cgroup, and records the merged resources.
    pub(crate) fn update(&self, id: &str, update: &Value) -> Result<()> {
        let _lock = self.lock(id)?;
        let container = self.load(id)?;
        if container.status() == ContainerStatus::Stopped {
            bail!("cannot update container {id:?}: container not running");
        }
        let derived_dir = self.root.derived_dir(id);
        let mut spec = derived_bundle::read_spec(&derived_dir)?;
        let linux = spec.linux_mut().get_or_insert_with(Linux::default);
        let current = linux.resources().clone().unwrap_or_default();
        let merged = merge(&current, update)?;
        policy::check_resources(&merged)?;
        self.cgroup_manager(&container, id)?
            .apply(&ControllerOpt {
                resources: &merged,
                // As libcontainer at create.
                disable_oom_killer: false,
                oom_score_adj: None,
                freezer_state: None,
            })
            .with_context(|| format!("updating the cgroup of container {id:?}"))?;
        linux.set_resources(Some(merged));
        derived_bundle::replace_spec(&derived_dir, &spec)
    }
}

/// `current` with every field `update` sets replaced (objects merged key by key; `null` and
/// runc's "unchanged" 0 for `pids.limit` change nothing), devices kept as they are.
fn merge(current: &LinuxResources, update: &Value) -> Result<LinuxResources> {
    if !update.is_object() {
        bail!("the resources must be a JSON object (the runtime-spec's linux.resources)");
    }
    let mut merged = serde_json::to_value(current).context("reading the current resources")?;
    merge_value(&mut merged, update);
    let mut merged: LinuxResources =
        serde_json::from_value(merged).context("parsing the updated resources")?;
    if merged.pids().as_ref().is_some_and(|p| p.limit() == 0) {
        merged.set_pids(*current.pids());
    }
    merged.set_devices(current.devices().clone());
    Ok(merged)
}

fn merge_value(target: &mut Value, update: &Value) {
    match (target, update) {
        (Value::Object(target), Value::Object(update)) => {
            for (key, value) in update {
                if value.is_null() {
                    continue;
                }
                merge_value(target.entry(key).or_insert(Value::Null), value);
            }
        }
        (target, update) => *target = update.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_update_changes_only_what_it_names_and_never_devices() {
        let current: LinuxResources = serde_json::from_value(json!({
            "devices": [{"allow": true, "access": "rwm"}],
            "memory": {"limit": 100, "swap": 200},
            "cpu": {"shares": 512, "cpus": "0"},
            "pids": {"limit": 10}
        }))
        .unwrap();
        let merged = merge(
            &current,
            &json!({
                "memory": {"limit": 300},
                "cpu": {"quota": 5000, "period": 10000},
                "pids": {"limit": 0},
                "devices": [{"allow": false, "access": "rwm"}]
            }),
        )
        .unwrap();
        let merged = serde_json::to_value(merged).unwrap();
        assert_eq!(merged["memory"], json!({"limit": 300, "swap": 200}));
        assert_eq!(merged["cpu"]["shares"], 512);
        assert_eq!(merged["cpu"]["quota"], 5000);
        assert_eq!(merged["pids"]["limit"], 10, "0 means unchanged, as in runc");
        assert_eq!(merged["devices"], json!([{"allow": true, "access": "rwm"}]));
        assert!(merge(&current, &json!([1])).is_err());
    }
}
