//! bootstrap-runc as the supervisor calls it: one `--root` for the boot (`<run-dir>/runtime`),
//! a JSON log per container (`<run-dir>/logs/<name>.runtime.json`, where every error of the
//! runtime's own lands), and the policy's host paths passed through.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::runtime::{sealed_exe, state_root::StateRoot};

/// How to call bootstrap-runc.
#[derive(Clone, Debug)]
pub struct Runtime {
    /// The bootstrap-runc binary.
    pub binary: PathBuf,
    /// The supervisor's run dir (a tmpfs).
    pub run_dir: PathBuf,
    /// `--host-root`, when given.
    pub host_root: Option<PathBuf>,
    /// `--host-mount-area`, when given.
    pub host_mount_area: Option<PathBuf>,
    /// `--shared-dirs`, when given.
    pub shared_dirs: Option<Vec<PathBuf>>,
    /// `binary` in a read-only overlay of its own ([`Runtime::protect`]), executed instead.
    pub protected: Option<Arc<OwnedFd>>,
}

impl Runtime {
    /// `bootstrap-runc --root ... --log ... --log-format json [--host-root ...]
    /// [--host-mount-area ...] [--shared-dirs ...]` for container `name`, stdin from /dev/null; the caller adds the
    /// subcommand.
    pub fn command(&self, name: &str) -> Command {
        let mut cmd = match &self.protected {
            Some(fd) => {
                let mut cmd = Command::new(format!("/proc/self/fd/{}", fd.as_raw_fd()));
                cmd.arg0(&self.binary);
                cmd
            }
            None => Command::new(&self.binary),
        };
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
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs `bootstrap-runc <args>` for container `name` and waits for it. Best effort, for
    /// kills and deletes: the container may be gone already, and its log says why if not.
    pub fn try_run(&self, name: &str, args: &[&str]) {
        let _ = self.command(name).args(args).status();
    }

    /// Makes the read-only overlay that bootstrap-runc makes for itself before it creates
    /// container processes (runtime/sealed_exe.rs), once for the boot: every runtime started
    /// through it is protected from the start and skips its re-exec. A binary installed
    /// read-only already (`hack/install.sh`'s mount unit) is executed as it is. Without
    /// overlayfs, or with a binary found on PATH, each runtime protects itself as before.
    pub fn protect(&mut self) {
        if !self.binary.is_absolute() {
            return;
        }
        match self.protected_copy() {
            Ok(Some(fd)) => self.protected = Some(Arc::new(fd)),
            Ok(None) => log::info!(
                "{} is installed read-only: each runtime starts protected",
                self.binary.display()
            ),
            Err(err) => log::debug!("bootstrap-runc will protect itself: {err:#}"),
        }
    }

    /// An overlay copy of the binary, or `None` when the binary is protected as installed.
    fn protected_copy(&self) -> anyhow::Result<Option<OwnedFd>> {
        // The overlay's lower layer is the directory of the file itself, not of a symlink to it.
        let binary = std::fs::canonicalize(&self.binary)?;
        if sealed_exe::is_protected(&File::open(&binary)?) {
            return Ok(None);
        }
        let root = StateRoot::open(&self.run_dir.join("runtime"))?;
        sealed_exe::protected_binary(&binary, &root.empty_dir()).map(Some)
    }

    /// The runtime's JSON log for container `name`.
    pub fn log(&self, name: &str) -> PathBuf {
        self.run_dir
            .join("logs")
            .join(format!("{name}.runtime.json"))
    }
}
