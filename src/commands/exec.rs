use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::cli::{self, ExitWith};
use crate::policy::capabilities;
use crate::runtime::exec::{ExecFlags, ExecProcess, ExecRequest};
use crate::runtime::foreground::SignalForwarder;
use crate::runtime::Runtime;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Unix socket that receives the pseudo-terminal's master fd
    #[arg(long, value_parser = cli::absolute)]
    pub console_socket: Option<PathBuf>,
    /// Working directory inside the container
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Extra environment variable (KEY=VALUE), repeatable
    #[arg(short, long)]
    pub env: Vec<String>,
    /// Allocate a pseudo-terminal
    #[arg(short, long)]
    pub tty: bool,
    /// User as UID[:GID]
    #[arg(short, long)]
    pub user: Option<String>,
    /// Additional group id, repeatable
    #[arg(short = 'g', long)]
    pub additional_gids: Vec<u32>,
    /// process.json describing the whole process (other process flags are ignored)
    #[arg(short, long, value_parser = cli::absolute)]
    pub process: Option<PathBuf>,
    /// Return once the process started
    #[arg(short, long)]
    pub detach: bool,
    /// File to write the process's pid to
    #[arg(long, value_parser = cli::absolute)]
    pub pid_file: Option<PathBuf>,
    /// Capability to add, repeatable (still bounded by the policy)
    #[arg(short, long)]
    pub cap: Vec<String>,
    /// Pass this many extra file descriptors (from 3 on) to the process
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: i32,
    pub container_id: String,
    /// Command and its arguments (unless --process)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

fn parse_user(user: &str) -> Result<(u32, Option<u32>)> {
    let (uid, gid) = match user.split_once(':') {
        Some((uid, gid)) => (uid, Some(gid)),
        None => (user, None),
    };
    let number = |s: &str| {
        s.parse::<u32>()
            .with_context(|| format!("invalid user {user:?}: use UID[:GID]"))
    };
    Ok((number(uid)?, gid.map(number).transpose()?))
}

fn flags(args: &Args) -> Result<ExecFlags> {
    let capabilities = args
        .cap
        .iter()
        .map(|c| capabilities::parse(c).with_context(|| format!("unknown capability {c:?}")))
        .collect::<Result<_>>()?;
    Ok(ExecFlags {
        args: args.command.clone(),
        env: args.env.clone(),
        cwd: args.cwd.clone(),
        user: args.user.as_deref().map(parse_user).transpose()?,
        additional_gids: args.additional_gids.clone(),
        capabilities,
        tty: args.tty,
    })
}

/// Exits with the command's status; a failure to start it exits 255, as runc's `exec` (so a
/// caller tells it from the command's own `exit 1`). Missing arguments are a usage error (1).
pub(crate) fn run(args: &Args, runtime: &Runtime) -> Result<i32> {
    if args.process.is_none() && args.command.is_empty() {
        bail!("exec needs a command or --process");
    }
    let failed = |error: anyhow::Error| ExitWith {
        code: 255,
        error: error.context("exec failed"),
    };
    let process = match &args.process {
        Some(path) => ExecProcess::File(path),
        None => ExecProcess::Flags(flags(args).map_err(failed)?),
    };
    let forwarder = (!args.detach)
        .then(SignalForwarder::install)
        .transpose()
        .map_err(failed)?;
    let pid = runtime
        .exec(&ExecRequest {
            id: &args.container_id,
            process,
            console_socket: args.console_socket.as_deref(),
            pid_file: args.pid_file.as_deref(),
            detach: args.detach,
            preserve_fds: args.preserve_fds,
        })
        .map_err(failed)?;
    match forwarder {
        Some(forwarder) => forwarder.wait(pid),
        None => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_parse_as_uid_and_optional_gid() {
        assert_eq!(parse_user("0").unwrap(), (0, None));
        assert_eq!(parse_user("1000:100").unwrap(), (1000, Some(100)));
        assert!(parse_user("root").is_err());
        assert!(parse_user("1:x").is_err());
    }
}
