//! `bootstrap-supervisor report-node`: this boot's outcome as the Node's
//! `BootstrapContainersSucceeded` condition and Events (supervisor/node_report).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use super::StateDirArg;
use crate::cli;
use crate::supervisor::node_report::{self, Target, DEFAULT_KUBECONFIGS};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub state_dir: StateDirArg,
    /// The node's kubeconfig (the kubelet's); default: the first of /etc/kubernetes/kubelet.conf,
    /// /var/lib/kubelet/kubeconfig, /etc/kubernetes/kubelet/kubeconfig that exists
    #[arg(long, env = "BOOTSTRAP_KUBECONFIG", value_name = "PATH", value_parser = cli::absolute)]
    pub kubeconfig: Option<PathBuf>,
    /// The Node's name; default: the host name, lowercased (the kubelet's default)
    #[arg(long, env = "BOOTSTRAP_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
    /// How long to wait for the node to be registered and the API server to answer
    #[arg(long, env = "BOOTSTRAP_REPORT_NODE_TIMEOUT", default_value = "5m", value_name = "DURATION", value_parser = crate::supervisor::settings::parse_duration)]
    pub timeout: Duration,
}

pub(crate) fn run(args: &Args) -> Result<i32> {
    let kubeconfig = match &args.kubeconfig {
        Some(path) => path.clone(),
        None => DEFAULT_KUBECONFIGS
            .iter()
            .map(PathBuf::from)
            .find(|path| path.exists())
            .with_context(|| {
                format!(
                    "no kubeconfig: none of {} exists (--kubeconfig)",
                    DEFAULT_KUBECONFIGS.join(", ")
                )
            })?,
    };
    let node = match &args.node_name {
        Some(name) => name.clone(),
        None => nix::unistd::gethostname()
            .context("reading the host name (--node-name)")?
            .to_string_lossy()
            .trim()
            .to_lowercase(),
    };
    let target = Target {
        kubeconfig,
        node: node.clone(),
        timeout: args.timeout,
    };
    let condition = node_report::report(&args.state_dir.state_dir, &target)?;
    println!(
        "node {node}: {} = {} ({}): {}",
        node_report::condition::TYPE,
        condition.status,
        condition.reason,
        condition.message
    );
    Ok(0)
}
