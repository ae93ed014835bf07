//! bootstrap-runc as the supervisor uses it: one `--root` for the boot (`<run-dir>/runtime`),
//! a JSON log per container (`<run-dir>/logs/<name>.runtime.json`, where every error of the
//! runtime's own lands), and the policy's host paths passed through. Containers run in the
//! launcher's runtime processes (launcher.rs); kills execute the binary.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::launcher;
use crate::policy::file::Overrides;

/// How to call bootstrap-runc.
#[derive(Clone, Debug)]
pub(crate) struct Runtime {
    /// The bootstrap-runc binary, for kills.
    pub binary: PathBuf,
    /// The supervisor's run dir (a tmpfs).
    pub run_dir: PathBuf,
    /// `--host-root`, when given.
    pub host_root: Option<PathBuf>,
    /// `--host-mount-area`, when given.
    pub host_mount_area: Option<PathBuf>,
    /// `--shared-dirs`, when given.
    pub shared_dirs: Option<Vec<PathBuf>>,
    /// `--protected-dirs`: the supervisor's own state, which no container may reach.
    pub protected_dirs: Vec<PathBuf>,
}

impl Runtime {
    /// `bootstrap-runc --root ... --log ... --log-format json [--host-root ...]
    /// [--host-mount-area ...] [--shared-dirs ...] [--protected-dirs ...]` for container `name`, stdin from /dev/null; the caller adds the
    /// subcommand.
    fn command(&self, name: &str) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(self.run_dir.join("runtime"));
        cmd.arg("--log")
            .arg(self.log(name))
            .args(["--log-format", "json"]);
        if let Some(root) = &self.host_root {
            cmd.arg("--host-root").arg(root);
        }
        if let Some(area) = &self.host_mount_area {
            cmd.arg("--host-mount-area").arg(area);
        }
        if let Some(dirs) = &self.shared_dirs {
            let list: Vec<&str> = dirs.iter().filter_map(|d| d.to_str()).collect();
            cmd.arg("--shared-dirs").arg(list.join(","));
        }
        if !self.protected_dirs.is_empty() {
            let list: Vec<&str> = self
                .protected_dirs
                .iter()
                .filter_map(|d| d.to_str())
                .collect();
            cmd.arg("--protected-dirs").arg(list.join(","));
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs `bootstrap-runc <args>` for container `name` and waits for it. Best effort, for
    /// kills and deletes: the container may be gone already, and its log says why if not.
    pub(crate) fn try_run(&self, name: &str, args: &[&str]) {
        if let Err(err) = self.command(name).args(args).status() {
            log::warn!("{name}: running {}: {err}", self.binary.display());
        }
    }

    /// The same flags for the launcher's runtime processes, and their seccomp cache.
    pub(crate) fn launcher_config(&self, seccomp_cache: PathBuf) -> launcher::Config {
        launcher::Config {
            seccomp_cache,
            root: self.run_dir.join("runtime"),
            overrides: Overrides {
                host_root: self.host_root.clone(),
                host_mount_area: self.host_mount_area.clone(),
                shared_dirs: self.shared_dirs.clone(),
                systemd_cgroup: false,
                protected_dirs: self.protected_dirs.clone(),
            },
        }
    }

    /// The runtime's JSON log for container `name`.
    pub(crate) fn log(&self, name: &str) -> PathBuf {
        self.run_dir
            .join("logs")
            .join(format!("{name}.runtime.json"))
    }
}
