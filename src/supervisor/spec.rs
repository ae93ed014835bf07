//! The OCI spec of a bootstrap container, generated before the policy sees it: from an image
//! config the way Bottlerocket's host-ctr builds a bootstrap container, or from an operator's
//! bundle with its paths made absolute. Planning only: no file is read or written here but
//! the bundle's config.json and the host's resolv.conf/hosts test; what the image's root
//! filesystem holds (its accounts, its working directory) is bundle.rs's. The policy itself
//! (capability ceiling, host mounts, read-only root) is bootstrap-runc's job.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use libcontainer::oci_spec::runtime::{
    Capabilities, LinuxCapabilities, LinuxDeviceCgroup, LinuxNamespaceType, LinuxResources, Mount,
    Spec,
};

use super::plan::Step;
use crate::image::user::{self, Accounts};
use crate::image::ImageConfig;
use crate::policy::{self, capabilities};
use crate::runtime::{derived_bundle, kill};

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
/// containerd's default `PATH`, for an image that sets none.
pub(crate) const DEFAULT_PATH: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The spec annotation that carries an image's `StopSignal`: the image-spec's conversion of
/// `Config.StopSignal` to a runtime config (umoci and podman write it too).
pub(crate) const STOP_SIGNAL_ANNOTATION: &str = "org.opencontainers.image.stopSignal";
/// What asks a container to stop when its image names no `StopSignal` (containerd's default).
pub(crate) const DEFAULT_STOP_SIGNAL: &str = "SIGTERM";
/// Where a source-less container's script (its user-data) is, read-only.
pub(crate) const SCRIPT_TARGET: &str = "/.bottlerocket/bootstrap-script";

/// A source-less container's process: its `#!` interpreter (with the line's one optional
/// argument, as Linux reads it) running the script, else `/bin/sh` running it — what
/// Bottlerocket's `bottlerocket-bootstrap` image does with user-data. The interpreter is named,
/// not the script executed, so the script can stay 0700 (libcontainer refuses to exec a file
/// that others may not execute).
pub(crate) fn script_args(user_data: &[u8]) -> Vec<String> {
    let mut args = match user_data.strip_prefix(b"#!") {
        Some(rest) => {
            let line = rest.split(|b| *b == b'\n').next().unwrap_or_default();
            let line = String::from_utf8_lossy(line);
            let line = line.trim();
            match line.split_once([' ', '\t']) {
                Some((interpreter, arg)) if !arg.trim().is_empty() => {
                    vec![interpreter.to_string(), arg.trim().to_string()]
                }
                _ if !line.is_empty() => vec![line.to_string()],
                _ => vec!["/bin/sh".to_string()],
            }
        }
        None => vec!["/bin/sh".to_string()],
    };
    args.push(SCRIPT_TARGET.to_string());
    args
}

/// A source-less container's spec: the host root's overlay at `rootfs` as if it were an image
/// whose `Cmd` is [`script_args`] (so `command` replaces it, and every other rule is the
/// image's: root user, `/`, the default `PATH`), with `script` bound read-only at
/// [`SCRIPT_TARGET`].
pub(crate) fn from_host_script(
    step: &Step,
    user_data: &[u8],
    rootfs: &Path,
    script: &Path,
    host_root: &Path,
) -> Result<Spec> {
    let config = ImageConfig {
        cmd: Some(script_args(user_data)),
        ..Default::default()
    };
    let image = Image {
        name: "(user-data script)",
        config: &config,
        rootfs,
        accounts: Accounts {
            passwd: None,
            group: None,
        },
    };
    let mut spec = from_image(&image, step.container.command.as_deref(), host_root)?;
    spec.mounts_mut().get_or_insert_with(Vec::new).push(bind(
        script,
        SCRIPT_TARGET,
        &["bind", "ro"],
    ));
    Ok(spec)
}

/// The operator's bundle, with its relative paths made absolute (the config moves here).
pub(crate) fn from_bundle(bundle: &Path) -> Result<Spec> {
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
/// settings' `command` replaces the process arguments, the supervisor's proxy variables and
/// then the settings' `environment` are merged into the environment after the base's own
/// ([`merge_env`]: a later name takes the place and value of an earlier one), the user-data directory `data` is bound at Bottlerocket's
/// `/.bottlerocket/bootstrap-containers/{<name>,current}`, and with `cgroup_parent` the cgroup
/// is `<cgroup_parent>/<id>`.
pub(crate) fn bootstrap(
    mut spec: Spec,
    step: &Step,
    data: &Path,
    cgroup_parent: Option<&Path>,
) -> Spec {
    if let Some(command) = &step.container.command {
        if let Some(process) = spec.process_mut() {
            process.set_args(Some(command.clone()));
        }
    }
    add_proxy_environment(&mut spec);
    if let Some(process) = spec.process_mut() {
        let env = merge_env(
            process.env().clone().unwrap_or_default(),
            step.container.environment.entries(),
        );
        process.set_env(Some(env));
    }
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

/// An image as [`from_image`] takes it: its config and what bundle.rs read of its root
/// filesystem (this module reads nothing).
pub(crate) struct Image<'a> {
    /// The image as the settings name it (a reference or an `oci-layout:` source), for
    /// messages.
    pub name: &'a str,
    /// Its config blob's process-shaping part.
    pub config: &'a ImageConfig,
    /// Its root filesystem on the host: the container's `root.path`.
    pub rootfs: &'a Path,
    /// Its `/etc/passwd` and `/etc/group`, read inside `rootfs`.
    pub accounts: Accounts<'a>,
}

/// Bottlerocket's bootstrap container for an image, its process read from the image config as
/// containerd and CRI read it:
///
/// - args: the settings' `command` if given, else `Entrypoint` + `Cmd`, an `Entrypoint` of
///   `[""]` counting as none ([`process_args`], CRI's rule);
/// - env: [`image_env`]; cwd: `WorkingDir` (absolute, lexically cleaned), `/` if empty;
/// - user: `User` resolved against the image's accounts ([`user::resolve`], containerd's
///   `WithUser` and `WithAdditionalGIDs`);
/// - `StopSignal`: checked, and carried as the [`STOP_SIGNAL_ANNOTATION`] annotation.
///
/// Then the bootstrap capability set, the host's network and PID namespaces, every device
/// allowed, and the host's resolv.conf and hosts read-only. Errors name the image and what is
/// wrong: no process to run, an empty executable, a relative `WorkingDir`, a user or group the
/// image does not have, an unknown `StopSignal`.
pub(crate) fn from_image(
    image: &Image<'_>,
    command: Option<&[String]>,
    host_root: &Path,
) -> Result<Spec> {
    image_spec(image, command, host_root).with_context(|| format!("image {}", image.name))
}

fn image_spec(image: &Image<'_>, command: Option<&[String]>, host_root: &Path) -> Result<Spec> {
    let config = image.config;
    let mut spec = Spec::default();
    let mut root = spec.root().clone().unwrap_or_default();
    // Writable as containerd makes an image's root; the policy makes it read-only but in its
    // Bottlerocket mode. Writes land in the overlay's sized tmpfs, never in the image.
    root.set_path(image.rootfs.to_path_buf())
        .set_readonly(Some(false));
    spec.set_root(Some(root));
    spec.set_hostname(None);

    let mut process = spec.process().clone().unwrap_or_default();
    let args = process_args(config, command);
    match args.first() {
        None => bail!(
            "no process to run: the image has no Entrypoint or Cmd (an Entrypoint of [\"\"] \
             counts as none, as in CRI) and the settings give no command"
        ),
        Some(executable) if executable.is_empty() => {
            bail!("the process's executable is an empty string (args {args:?})")
        }
        Some(_) => {}
    }
    process.set_args(Some(args)).set_terminal(Some(false));
    process.set_env(Some(image_env(config)));
    process.set_cwd(working_dir(config)?);
    let identity = user::resolve(config.user.as_deref().unwrap_or(""), image.accounts)
        .context("resolving the image's User")?;
    let mut user = process.user().clone();
    user.set_uid(identity.uid)
        .set_gid(identity.gid)
        .set_additional_gids(Some(identity.additional_gids));
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
    if let Some(signal) = &config.stop_signal {
        check_stop_signal(signal)?;
        spec.set_annotations(Some(
            [(STOP_SIGNAL_ANNOTATION.to_string(), signal.clone())].into(),
        ));
    }

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

/// The process's arguments as CRI's `WithProcessArgs` makes them: `command` when given (a
/// bootstrap container's `command` replaces both entrypoint and cmd), else the image's
/// `Entrypoint` followed by its `Cmd`, where an `Entrypoint` of exactly `[""]` is no entrypoint
/// (how an image clears the one of its base). Empty when there is nothing to run.
pub(crate) fn process_args(config: &ImageConfig, command: Option<&[String]>) -> Vec<String> {
    if let Some(command) = command {
        return command.to_vec();
    }
    let entrypoint = match config.entrypoint.as_deref() {
        Some([only]) if only.is_empty() => &[][..],
        other => other.unwrap_or_default(),
    };
    entrypoint
        .iter()
        .chain(config.cmd.iter().flatten())
        .cloned()
        .collect()
}

/// The image's environment as CRI builds it: containerd's default `PATH`, then the image's
/// `Env` merged over it ([`merge_env`]): the image's `PATH` replaces the default, and a later
/// entry of a name replaces an earlier one.
pub(crate) fn image_env(config: &ImageConfig) -> Vec<String> {
    merge_env(
        vec![DEFAULT_PATH.to_string()],
        config.env.iter().flatten().cloned(),
    )
}

/// `overrides` merged into `base` as containerd's `replaceOrAppendEnvValues` does, each name
/// kept once: `NAME=value` replaces the value of an earlier `NAME` where it stands, or is
/// appended; a bare `NAME` (no `=`) removes it.
pub(crate) fn merge_env(
    base: Vec<String>,
    overrides: impl IntoIterator<Item = String>,
) -> Vec<String> {
    fn name(entry: &str) -> &str {
        entry.split('=').next().unwrap_or("")
    }
    let mut merged: Vec<String> = Vec::with_capacity(base.len());
    for entry in base.into_iter().chain(overrides) {
        let earlier = merged.iter().position(|e| name(e) == name(&entry));
        match (earlier, entry.contains('=')) {
            (Some(i), true) => merged[i] = entry,
            (None, true) => merged.push(entry),
            (Some(i), false) => {
                merged.remove(i);
            }
            (None, false) => {}
        }
    }
    merged
}

/// The image's `WorkingDir` as the process's cwd: `/` when absent or empty, lexically cleaned
/// (bundle.rs creates it in the container's writable layer); a relative one is refused, as
/// the runtime-spec requires an absolute cwd.
fn working_dir(config: &ImageConfig) -> Result<PathBuf> {
    match config.working_dir.as_deref().filter(|w| !w.is_empty()) {
        None => Ok(PathBuf::from("/")),
        Some(dir) if dir.starts_with('/') => Ok(policy::clean(Path::new(dir))),
        Some(dir) => bail!("WorkingDir {dir:?} is not an absolute path"),
    }
}

/// A `StopSignal` the runtime's `kill` takes (a name with or without `SIG`, or a number) and
/// that is a real signal (not 0).
fn check_stop_signal(signal: &str) -> Result<()> {
    match kill::parse_signal(signal) {
        Ok(0) => bail!("StopSignal {signal:?} is no signal"),
        Ok(_) => Ok(()),
        Err(err) => Err(err).with_context(|| format!("StopSignal {signal:?}")),
    }
}

/// The signal that asks this container to stop: its [`STOP_SIGNAL_ANNOTATION`] (the image's
/// `StopSignal`, or an operator bundle's own), else [`DEFAULT_STOP_SIGNAL`]. What the
/// supervisor sends first on a timeout or a stop, as containerd and CRI send the image's.
pub(crate) fn stop_signal(spec: &Spec) -> &str {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(STOP_SIGNAL_ANNOTATION))
        .map_or(DEFAULT_STOP_SIGNAL, String::as_str)
}

fn add_proxy_environment(spec: &mut Spec) {
    let Some(process) = spec.process_mut() else {
        return;
    };
    let proxies = PROXY_VARIABLES
        .iter()
        .filter_map(|name| Some(format!("{name}={}", std::env::var(name).ok()?)));
    let env = merge_env(process.env().clone().unwrap_or_default(), proxies);
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
    use libcontainer::oci_spec::runtime::Process;

    #[test]
    fn scripts_run_by_their_interpreter() {
        let args = |text: &str| script_args(text.as_bytes());
        assert_eq!(args("echo hi\n"), ["/bin/sh", SCRIPT_TARGET]);
        assert_eq!(args("#!/bin/sh\nset -e\n"), ["/bin/sh", SCRIPT_TARGET]);
        assert_eq!(
            args("#! /usr/bin/env  python3 -u \nprint(1)"),
            ["/usr/bin/env", "python3 -u", SCRIPT_TARGET]
        );
        assert_eq!(args("#!\n"), ["/bin/sh", SCRIPT_TARGET]);
    }

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
            stop_signal: None,
        };
        let spec = from_image(&image(&config), None, dir.path()).unwrap();
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.args().as_ref().unwrap(), &["/bin/setup", "--fast"]);
        assert_eq!(process.cwd(), Path::new("/work"));
        assert_eq!((process.user().uid(), process.user().gid()), (10, 20));
        assert_eq!(stop_signal(&spec), "SIGTERM");
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

    const PASSWD: &str = "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n";
    const GROUP: &str = "root:x:0:\nnogroup:x:65534:\nadm:x:4:nobody\n";

    fn image(config: &ImageConfig) -> Image<'_> {
        Image {
            name: "registry.example/setup:v1",
            config,
            rootfs: Path::new("/rootfs"),
            accounts: Accounts {
                passwd: Some(PASSWD),
                group: Some(GROUP),
            },
        }
    }

    fn process_of(config: &ImageConfig, command: Option<&[String]>) -> Process {
        from_image(&image(config), command, Path::new("/nonexistent"))
            .unwrap()
            .process()
            .clone()
            .unwrap()
    }

    fn error_of(config: &ImageConfig) -> String {
        format!(
            "{:#}",
            from_image(&image(config), None, Path::new("/")).unwrap_err()
        )
    }

    fn strings(items: &[&str]) -> Option<Vec<String>> {
        Some(items.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn an_entrypoint_of_one_empty_string_is_none_as_in_cri() {
        let config = ImageConfig {
            entrypoint: strings(&[""]),
            cmd: strings(&["sh", "-c", "true"]),
            ..Default::default()
        };
        assert_eq!(process_args(&config, None), ["sh", "-c", "true"]);
        let both = ImageConfig {
            entrypoint: strings(&["/init"]),
            ..config.clone()
        };
        assert_eq!(process_args(&both, None), ["/init", "sh", "-c", "true"]);
        let command = vec!["echo".to_string()];
        assert_eq!(process_args(&both, Some(&command)), ["echo"]);
        // Only exactly [""] is "none".
        let two = ImageConfig {
            entrypoint: strings(&["", "x"]),
            cmd: None,
            ..Default::default()
        };
        assert_eq!(process_args(&two, None), ["", "x"]);
    }

    #[test]
    fn an_empty_process_is_an_error_naming_the_image() {
        let only_empty_entrypoint = ImageConfig {
            entrypoint: strings(&[""]),
            ..Default::default()
        };
        for config in [ImageConfig::default(), only_empty_entrypoint] {
            let err = error_of(&config);
            assert!(
                err.starts_with("image registry.example/setup:v1: no process to run"),
                "{err}"
            );
        }
        let empty_executable = ImageConfig {
            cmd: strings(&["", "x"]),
            ..Default::default()
        };
        let err = error_of(&empty_executable);
        assert!(err.contains("executable is an empty string"), "{err}");
        // The settings' command fills an image without one.
        let command = vec!["true".to_string()];
        let process = process_of(&ImageConfig::default(), Some(&command));
        assert_eq!(process.args().as_deref(), Some(&command[..]));
    }

    #[test]
    fn the_user_is_resolved_in_the_images_accounts() {
        let config = |user: &str| ImageConfig {
            cmd: strings(&["true"]),
            user: Some(user.to_string()),
            ..Default::default()
        };
        let user = process_of(&config("nobody"), None).user().clone();
        assert_eq!((user.uid(), user.gid()), (65534, 65534));
        assert_eq!(user.additional_gids().as_deref(), Some(&[65534, 4][..]));
        let user = process_of(&config("65534"), None).user().clone();
        assert_eq!((user.uid(), user.gid()), (65534, 65534));
        let root = process_of(&config(""), None).user().clone();
        assert_eq!(root.additional_gids().as_deref(), Some(&[0][..]));
        let err = error_of(&config("mallory"));
        assert!(
            err.contains("registry.example/setup:v1")
                && err.contains("user \"mallory\" is not in the image's /etc/passwd"),
            "{err}"
        );
    }

    #[test]
    fn env_is_the_images_over_a_default_path_later_entries_winning() {
        let config = |env: &[&str]| ImageConfig {
            cmd: strings(&["true"]),
            env: strings(env),
            ..Default::default()
        };
        assert_eq!(image_env(&config(&[])), [DEFAULT_PATH]);
        assert_eq!(
            image_env(&config(&["A=1", "PATH=/bin", "B=2", "A=3"])),
            ["PATH=/bin", "A=3", "B=2"]
        );
        assert_eq!(
            merge_env(
                vec!["A=1".into(), "B=2".into(), "C=3".into()],
                ["B".to_string(), "A=x=y".to_string(), "D=".to_string()]
            ),
            ["A=x=y", "C=3", "D="]
        );
        let process = process_of(&config(&["HTTPS_PROXY=image"]), None);
        assert_eq!(
            process.env().as_deref(),
            Some(&[DEFAULT_PATH.to_string(), "HTTPS_PROXY=image".to_string()][..])
        );
    }

    #[test]
    fn working_dir_must_be_absolute_and_is_cleaned() {
        let config = |dir: &str| ImageConfig {
            cmd: strings(&["true"]),
            working_dir: Some(dir.to_string()),
            ..Default::default()
        };
        assert_eq!(process_of(&config(""), None).cwd(), Path::new("/"));
        assert_eq!(
            process_of(&config("/a/./b/../c//"), None).cwd(),
            Path::new("/a/c")
        );
        let err = error_of(&config("work"));
        assert!(
            err.contains("WorkingDir \"work\" is not an absolute path"),
            "{err}"
        );
    }

    #[test]
    fn the_stop_signal_is_checked_and_carried() {
        let config = |signal: &str| ImageConfig {
            cmd: strings(&["true"]),
            stop_signal: Some(signal.to_string()),
            ..Default::default()
        };
        for signal in ["SIGQUIT", "USR1", "9", "SIGRTMIN+3"] {
            let spec = from_image(&image(&config(signal)), None, Path::new("/")).unwrap();
            assert_eq!(stop_signal(&spec), signal);
        }
        for (signal, wanted) in [("SIGBOGUS", "unknown signal"), ("0", "is no signal")] {
            let err = error_of(&config(signal));
            assert!(
                err.contains("registry.example/setup:v1") && err.contains(wanted),
                "{err}"
            );
        }
    }
}
