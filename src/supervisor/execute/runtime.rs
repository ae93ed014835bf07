//! The runtime as the supervisor uses it: one state root for the boot (`<run-dir>/runtime`),
//! a JSON log per container (`<run-dir>/logs/<name>.runtime.json`, where every error of its
//! runtime process lands), and the policy's host paths. Containers run in the launcher's
//! runtime processes (launcher.rs); stops and deletes call the same runtime library here, as
//! `bootstrap-runc kill` and `delete --force` would.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;

use super::launcher;
use crate::policy::file::Overrides;
use crate::runtime::kill::parse_signal;
use crate::runtime::state_root::StateRoot;
use crate::runtime::Runtime as Library;

/// The boot's runtime: where its state and logs go, and the library on that state.
#[derive(Clone)]
pub(crate) struct Runtime {
    run_dir: PathBuf,
    config: launcher::Config,
    library: Arc<Library>,
}

impl Runtime {
    /// The runtime of the boot whose run dir (a tmpfs) is `run_dir`; its state root is made
    /// here. `overrides` are the policy's flags, `seccomp_cache` where compiled filters are kept.
    pub(crate) fn open(
        run_dir: &Path,
        overrides: Overrides,
        seccomp_cache: PathBuf,
    ) -> Result<Self> {
        let config = launcher::Config {
            root: run_dir.join("runtime"),
            overrides,
            seccomp_cache,
        };
        Ok(Runtime {
            run_dir: run_dir.to_path_buf(),
            library: Arc::new(config.runtime()?),
            config,
        })
    }

    /// The supervisor's run dir.
    pub(crate) fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The boot's state root.
    pub(crate) fn state_root(&self) -> &StateRoot {
        &self.library.root
    }

    /// The host root containers see, as the runtime resolves it: `--host-root`, else the
    /// policy file's, else `/`. Errors: the policy file is invalid or the path does not exist.
    pub(crate) fn host_root(&self) -> Result<PathBuf> {
        Ok(self.library.policy()?.host_root)
    }

    /// What every runtime process the launcher forks runs with.
    pub(crate) fn launcher_config(&self) -> launcher::Config {
        self.config.clone()
    }

    /// The runtime's JSON log for container `name`.
    pub(crate) fn log(&self, name: &str) -> PathBuf {
        self.run_dir
            .join("logs")
            .join(format!("{name}.runtime.json"))
    }

    /// `bootstrap-runc kill [--all] <id> <signal>` for container `name`, `signal` a name or
    /// number as runc reads it. Best effort: the container may be gone already; why not is
    /// logged.
    pub(crate) fn kill(&self, name: &str, id: &str, signal: &str, all: bool) {
        let killed = parse_signal(signal).and_then(|signal| self.library.kill(id, signal, all));
        if let Err(err) = killed {
            log::warn!("{name}: sending {signal}: {err:#}");
        }
    }

    /// `bootstrap-runc delete --force <id>` for container `name`: whatever is left of it goes.
    /// Best effort, as [`Runtime::kill`].
    pub(crate) fn delete(&self, name: &str, id: &str) {
        if let Err(err) = self.library.delete(id, true) {
            log::warn!("{name}: removing what it left: {err:#}");
        }
    }
}
