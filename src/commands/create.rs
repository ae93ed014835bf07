use std::path::PathBuf;

use anyhow::Result;

use crate::cli;
use crate::runtime::create::CreateRequest;
use crate::runtime::Runtime;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Path to the bundle directory
    #[arg(short, long, default_value = ".", value_parser = cli::absolute)]
    pub bundle: PathBuf,
    /// Unix socket that receives the pseudo-terminal's master fd
    #[arg(long, value_parser = cli::absolute)]
    pub console_socket: Option<PathBuf>,
    /// File to write the container's pid to
    #[arg(long, value_parser = cli::absolute)]
    pub pid_file: Option<PathBuf>,
    /// Do not use pivot_root (for a ramdisk root)
    #[arg(long)]
    pub no_pivot: bool,
    /// Do not create a new session keyring (accepted for compatibility)
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass this many extra file descriptors (from 3 on) to the container
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: i32,
    pub container_id: String,
}

impl Args {
    pub(crate) fn request(&self, detach: bool) -> CreateRequest<'_> {
        CreateRequest {
            id: &self.container_id,
            bundle: &self.bundle,
            pid_file: self.pid_file.as_deref(),
            console_socket: self.console_socket.as_deref(),
            no_pivot: self.no_pivot,
            preserve_fds: self.preserve_fds,
            detach,
            root_area: None,
        }
    }
}

pub(crate) fn run(args: &Args, runtime: &Runtime) -> Result<i32> {
    runtime.create(&args.request(true))?;
    Ok(0)
}
