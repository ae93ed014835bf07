//! `report-node`: this boot's bootstrap-container outcome written to the Node as the condition
//! `BootstrapContainersSucceeded`, plus a core/v1 Event per container that failed, with the
//! node's own credentials (the kubelet's kubeconfig), so it can do no more than the node may:
//! under the Node authorizer and NodeRestriction, patch its own `nodes/status` and create
//! Events. The status is PATCHed directly with a strategic merge patch keyed on the
//! condition's `type`, as the kubelet does (a node may not GET `nodes/status`; a JSON merge
//! patch would replace the kubelet's own conditions).
//!
//! It only reads the boot's record: whatever happens here never changes the boot's verdict.

pub(crate) mod condition;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{Event, EventSource, Node, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use sha2::Digest;

use crate::supervisor::boots::{self, Which};
use condition::{Condition, FailureEvent, TYPE};

/// Where nodes keep the kubelet's kubeconfig, tried in order when none is given: kubeadm's,
/// then EKS' and Bottlerocket's.
pub(crate) const DEFAULT_KUBECONFIGS: [&str; 3] = [
    "/etc/kubernetes/kubelet.conf",
    "/var/lib/kubelet/kubeconfig",
    "/etc/kubernetes/kubelet/kubeconfig",
];

/// What to report, where.
pub(crate) struct Target {
    pub kubeconfig: PathBuf,
    /// The Node's name (the kubelet's default: the host name, lowercased).
    pub node: String,
    /// How long to wait for the node to exist and the API server to answer, retries included.
    pub timeout: Duration,
}

/// Reports the current boot's outcome from `state_dir`'s record; returns the condition
/// written. Errors: the kubeconfig cannot be used, the node never appeared or the API server
/// never answered within the timeout, or it refused (403: not this node's credentials).
pub(crate) fn report(state_dir: &Path, target: &Target) -> Result<Condition> {
    let id = boots::resolve(state_dir, &Which::Current)?;
    let dir = boots::boot_dir(state_dir, &id);
    let running = boots::in_progress(&dir);
    let recorded = boots::read(&dir)?;
    let condition = condition::condition(&recorded, running);
    let events = condition::failure_events(&recorded);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the Kubernetes client's runtime")?;
    runtime.block_on(write(target, &id, &condition, &events))?;
    Ok(condition)
}

async fn write(
    target: &Target,
    boot_id: &str,
    condition: &Condition,
    events: &[FailureEvent],
) -> Result<()> {
    let path = &target.kubeconfig;
    let kubeconfig = Kubeconfig::read_from(path)
        .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("using the kubeconfig {}", path.display()))?;
    let client = Client::try_from(config).context("making the Kubernetes client")?;
    let deadline = Instant::now() + target.timeout;
    let name = target.node.as_str();
    let nodes: Api<Node> = Api::all(client.clone());

    let node = retrying(deadline, || async {
        match nodes.get_opt(name).await? {
            Some(node) => Ok(Some(node)),
            None => Ok(None), // not registered yet: the kubelet registers it
        }
    })
    .await
    .with_context(|| format!("getting node {name} (waited up to {:?})", target.timeout))?;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let previous = node
        .status
        .and_then(|status| status.conditions)
        .and_then(|conditions| conditions.into_iter().find(|c| c.type_ == TYPE));
    // Kubernetes' rule: the transition time moves only when the status does.
    let transition = match previous {
        Some(previous) if previous.status == condition.status => {
            previous.last_transition_time.unwrap_or_else(|| now.clone())
        }
        _ => now.clone(),
    };
    let patch = serde_json::json!({
        "status": { "conditions": [{
            "type": TYPE,
            "status": condition.status,
            "reason": condition.reason,
            "message": condition.message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": transition,
        }]}
    });
    retrying(deadline, || async {
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .map(Some)
    })
    .await
    .with_context(|| format!("patching node {name}'s status"))?;

    let api: Api<Event> = Api::namespaced(client, "default");
    for event in events {
        let body = event_for(name, boot_id, event, &now);
        retrying(deadline, || async {
            match api.create(&PostParams::default(), &body).await {
                Ok(created) => Ok(Some(created)),
                // Reported already in this boot (report-node run again): one Event each.
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(Some(body.clone())),
                Err(err) => Err(err),
            }
        })
        .await
        .with_context(|| format!("creating the Event for container {}", event.container))?;
    }
    Ok(())
}

/// The Event about Node `node` for `event`, named after the boot and the container so that a
/// second report in the same boot makes no second Event. `involvedObject.uid` is the node's
/// name, as the kubelet's own Node events: `kubectl describe node` looks them up that way.
fn event_for(node: &str, boot_id: &str, event: &FailureEvent, now: &Time) -> Event {
    let boot: String = boot_id.chars().filter(|c| *c != '-').take(12).collect();
    Event {
        metadata: ObjectMeta {
            name: Some(format!(
                "{node}.bootstrap.{boot}.{}",
                name_part(&event.container)
            )),
            namespace: Some("default".to_string()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Node".to_string()),
            name: Some(node.to_string()),
            uid: Some(node.to_string()),
            ..ObjectReference::default()
        },
        reason: Some(event.reason.to_string()),
        message: Some(event.message.clone()),
        type_: Some("Warning".to_string()),
        source: Some(EventSource {
            component: Some("bootstrap-supervisor".to_string()),
            host: Some(node.to_string()),
        }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now.clone()),
        count: Some(1),
        ..Event::default()
    }
}

/// `container` as part of an object's name, a DNS subdomain (lowercase): a name with capitals
/// is lowercased and followed by a digest of itself, so that `Disk` and `disk` stay apart.
fn name_part(container: &str) -> String {
    if !container.bytes().any(|b| b.is_ascii_uppercase()) {
        return container.to_string();
    }
    let digest = crate::image::digest::hex(&sha2::Sha256::digest(container.as_bytes()));
    format!("{}-{}", container.to_ascii_lowercase(), &digest[..8])
}

/// Runs `attempt` until it gives `Some`, retrying while the API server cannot be reached or
/// answers 429/5xx (and while the node does not exist yet: `None`), with backoff from 1 s to
/// 10 s, until `deadline`. Any other refusal (401, 403, 404 on a patch, 422) ends it at once.
async fn retrying<T, F, Fut>(deadline: Instant, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, kube::Error>>,
{
    let mut delay = Duration::from_secs(1);
    loop {
        let why = match attempt().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => "the node is not registered yet".to_string(),
            Err(kube::Error::Api(status)) if status.code != 429 && status.code < 500 => {
                bail!(
                    "the API server refused: {} ({})",
                    status.message,
                    status.code
                )
            }
            Err(err) => format!("{err}"),
        };
        let now = Instant::now();
        if now >= deadline {
            bail!("{why}; gave up");
        }
        log::info!("{why}; retrying in {}s", delay.as_secs());
        tokio::time::sleep(delay.min(deadline - now)).await;
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_lowercase_and_keep_names_apart() {
        assert_eq!(name_part("disk-setup"), "disk-setup");
        let upper = name_part("Disk");
        assert!(
            upper.starts_with("disk-") && upper.len() == "disk-".len() + 8,
            "{upper}"
        );
        assert_ne!(upper, name_part("DISK"));
        assert!(!upper.bytes().any(|b| b.is_ascii_uppercase()));
    }
}
