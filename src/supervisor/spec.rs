//! The OCI spec of a bootstrap container, generated before the policy sees it: from an image
//! config the way Bottlerocket's host-ctr builds a bootstrap container, or from an operator's
//! bundle with its paths made absolute. Pure: no file is written here. The policy itself
//! (capability ceiling, host mounts, read-only root) is bootstrap-runc's job.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use libcontainer::oci_spec::runtime::{
    Capabilities, LinuxCapabilities, LinuxDeviceCgroup, LinuxNamespaceType, LinuxResources, Mount,
    Spec,
};

use super::plan::Step;
use crate::image::ImageConfig;
use crate::policy::{self, capabilities};
use crate::runtime::derived_bundle;

/// Where containers find their user-data, as on Bottlerocket.
const USER_DATA_TARGET: &str = "/.bottlerocket/bootstrap-containers";
const PROXY_VARIABLES: [&str; 6] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
];
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The operator's bundle, with its relative paths made absolute (the config moves here).
pub fn from_bundle(bundle: &Path) -> Result<Spec> {
    let mut spec = derived_bundle::read_spec(bundle)?;
    if let Some(root) = spec.root_mut() {
        root.set_path(policy::clean(&bundle.join(root.path())));
    }
    for mount in spec.mounts_mut().iter_mut().flatten() {
        if let (true, Some(source)) = (policy::is_bind(mount), mount.source().clone()) {
            mount.set_source(Some(bundle.join(source)));
        }
    }
    Ok(spec)
}

/// The bootstrap container's spec from `base` (an operator's bundle or an image's): the
/// settings' `command` replaces the process arguments, the supervisor's proxy variables are
/// passed in, the user-data directory `data` is bound at Bottlerocket's
/// `/.bottlerocket/bootstrap-containers/{<name>,current}`, and with `cgroup_parent` the cgroup
/// is `<cgroup_parent>/<id>`.
pub fn bootstrap(mut spec: Spec, step: &Step, data: &Path, cgroup_parent: Option<&Path>) -> Spec {
    if let Some(command) = &step.container.command {
        if let Some(process) = spec.process_mut() {
            process.set_args(Some(command.clone()));
        }
    }
    add_proxy_environment(&mut spec);
    if let Some(parent) = cgroup_parent {
        spec.linux_mut()
            .get_or_insert_with(Default::default)
            .set_cgroups_path(Some(parent.join(&step.id)));
    }
    let mounts = spec.mounts_mut().get_or_insert_with(Vec::new);
    for target in [step.name.as_str(), "current"] {
        mounts.push(bind(
            data,
            &format!("{USER_DATA_TARGET}/{target}"),
            &["rbind", "rw"],
        ));
    }
    spec
}

/// Bottlerocket's bootstrap container for an image: its entrypoint/cmd/env/workdir, the
/// bootstrap capability set, the host's network and PID namespaces, every device allowed, and
/// the host's resolv.conf and hosts read-only.
pub fn from_image(config: &ImageConfig, rootfs: &Path, host_root: &Path) -> Result<Spec> {
    let mut spec = Spec::default();
    let mut root = spec.root().clone().unwrap_or_default();
    root.set_path(rootfs.to_path_buf()).set_readonly(Some(true));
    spec.set_root(Some(root));
    spec.set_hostname(None);

    let mut process = spec.process().clone().unwrap_or_default();
    let args: Vec<String> = config
        .entrypoint
        .iter()
        .flatten()
        .chain(config.cmd.iter().flatten())
        .cloned()
        .collect();
    if args.is_empty() {
        bail!("the image has neither entrypoint nor cmd, and the settings give no command");
    }
    process.set_args(Some(args)).set_terminal(Some(false));
    let mut env = config.env.clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(DEFAULT_PATH.to_string());
    }
    process.set_env(Some(env));
    process.set_cwd(PathBuf::from(
        config
            .working_dir
            .as_deref()
            .filter(|w| !w.is_empty())
            .unwrap_or("/"),
    ));
    let mut user = process.user().clone();
    let (uid, gid) = numeric_user(config.user.as_deref().unwrap_or(""))?;
    user.set_uid(uid).set_gid(gid);
    process.set_user(user);
    let bootstrap: Capabilities = capabilities::bootstrap_set();
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(bootstrap.clone()))
        .set_effective(Some(bootstrap.clone()))
        .set_permitted(Some(bootstrap))
        .set_inheritable(Some(Default::default()))
        .set_ambient(Some(Default::default()));
    process.set_capabilities(Some(caps));
    spec.set_process(Some(process));

    let linux = spec.linux_mut().get_or_insert_with(Default::default);
    let namespaces = linux.namespaces().clone().unwrap_or_default();
    linux.set_namespaces(Some(
        namespaces
            .into_iter()
            .filter(|ns| {
                !matches!(
                    ns.typ(),
                    LinuxNamespaceType::Network | LinuxNamespaceType::Pid
                )
            })
            .collect(),
    ));
    let mut allow_all = LinuxDeviceCgroup::default();
    allow_all
        .set_allow(true)
        .set_access(Some("rwm".to_string()));
    let mut resources = LinuxResources::default();
    resources.set_devices(Some(vec![allow_all]));
    linux.set_resources(Some(resources));

    let mounts = spec.mounts_mut().get_or_insert_with(Vec::new);
    for file in ["etc/resolv.conf", "etc/hosts"] {
        let source = host_root.join(file);
        if source.exists() {
            mounts.push(bind(&source, &format!("/{file}"), &["bind", "ro"]));
        }
    }
    Ok(spec)
}

/// `uid[:gid]`; names would need the image's passwd file, which we do not read.
fn numeric_user(user: &str) -> Result<(u32, u32)> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (uid, gid) = user.split_once(':').unwrap_or((user, "0"));
    match (uid.parse(), gid.parse()) {
        (Ok(uid), Ok(gid)) => Ok((uid, gid)),
        _ => bail!("image user {user:?} is not numeric (uid[:gid])"),
    }
}

fn add_proxy_environment(spec: &mut Spec) {
    let Some(process) = spec.process_mut() else {
        return;
    };
    let mut env = process.env().clone().unwrap_or_default();
    for name in PROXY_VARIABLES {
        if let Ok(value) = std::env::var(name) {
            env.retain(|e| !e.starts_with(&format!("{name}=")));
            env.push(format!("{name}={value}"));
        }
    }
    process.set_env(Some(env));
}

fn bind(source: &Path, destination: &str, options: &[&str]) -> Mount {
    let mut mount = Mount::default();
    mount
        .set_destination(PathBuf::from(destination))
        .set_typ(Some("bind".to_string()))
        .set_source(Some(source.to_path_buf()))
        .set_options(Some(options.iter().map(|o| o.to_string()).collect()));
    mount
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_config_becomes_a_bootstrap_spec() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/resolv.conf"), "nameserver 1.1.1.1\n").unwrap();
        let config = ImageConfig {
            entrypoint: Some(vec!["/bin/setup".into()]),
            cmd: Some(vec!["--fast".into()]),
            env: Some(vec!["A=1".into()]),
            working_dir: Some("/work".into()),
            user: Some("10:20".into()),
        };
        let spec = from_image(&config, Path::new("/rootfs"), dir.path()).unwrap();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.args().as_ref().unwrap(), &["/bin/setup", "--fast"]);
        assert_eq!(process.cwd(), Path::new("/work"));
        assert_eq!((process.user().uid(), process.user().gid()), (10, 20));
        let env = process.env().as_ref().unwrap();
        assert!(env.contains(&"A=1".to_string()) && env.iter().any(|e| e.starts_with("PATH=")));
        let caps = process.capabilities().as_ref().unwrap();
        assert_eq!(
            caps.bounding().as_ref().unwrap(),
            &capabilities::bootstrap_set()
        );
        let namespaces: Vec<_> = spec
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        assert!(namespaces.contains(&LinuxNamespaceType::Mount));
        assert!(
            !namespaces.contains(&LinuxNamespaceType::Network)
                && !namespaces.contains(&LinuxNamespaceType::Pid)
        );
        let devices = spec
            .linux()
            .as_ref()
            .unwrap()
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap();
        assert!(devices[0].allow() && devices[0].access().as_deref() == Some("rwm"));
        let mounts = spec.mounts().as_ref().unwrap();
        assert!(mounts
            .iter()
            .any(|m| m.destination() == Path::new("/etc/resolv.conf")));
        assert!(
            !mounts
                .iter()
                .any(|m| m.destination() == Path::new("/etc/hosts")),
            "absent on the host"
        );
        // The policy accepts what we generate.
        assert!(policy::apply(spec, &policy::Policy::default(), Path::new("/b")).is_ok());
    }

    #[test]
    fn image_without_a_command_or_with_a_named_user_is_refused() {
        let empty = ImageConfig::default();
        assert!(from_image(&empty, Path::new("/r"), Path::new("/")).is_err());
        assert!(numeric_user("nobody").is_err());
        assert_eq!(numeric_user("5").unwrap(), (5, 0));
    }
}
