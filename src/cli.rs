//! What both binaries' command lines share: flags given twice take the last value, as runc's
//! flag parsing does (wrappers append their own `--root`), and an error that carries the exit
//! code a caller must see.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Command, CommandFactory, FromArgMatches};

/// Makes a panic abort the process once its message is printed, as `panic = "abort"` did,
/// while the build itself unwinds so that tests, demo and benchmarks share one build.
/// libcontainer clones its intermediate and init processes without exec: a panic unwinding
/// there would return into the caller's code, in a copy of the caller. Call it first in `main`.
pub fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
}

/// Parses the process's arguments into `T`, every flag of every subcommand overriding itself.
pub fn parse<T: CommandFactory + FromArgMatches>() -> Result<T, clap::Error> {
    let matches = overriding_self(T::command()).try_get_matches()?;
    T::from_arg_matches(&matches)
}

fn overriding_self(command: Command) -> Command {
    command
        .args_override_self(true)
        .mut_subcommands(overriding_self)
}

/// A path flag's value taken against the working directory, as runc takes its path flags: a
/// relative `--settings s.toml` or `--state-dir state` names what it says wherever it is used
/// later (and is handed on to bootstrap-runc absolute).
pub fn absolute(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    let path = Path::new(text);
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .map_err(|err| format!("reading the working directory for {text:?}: {err}"))
}

/// An error with the exit code it must end the process with (runc's 255 for a failed `exec`,
/// so callers tell it from the command's own exit status).
#[derive(Debug)]
pub(crate) struct ExitWith {
    pub code: u8,
    pub error: anyhow::Error,
}

impl fmt::Display for ExitWith {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for ExitWith {}

/// The exit code for a command's error: the one it carries, else 1.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    error.downcast_ref::<ExitWith>().map_or(1, |e| e.code)
}

/// Ends a command as runc does: returns its exit code (a container's, or 1, or the code an
/// error carries); an error goes to the log and, when the log is a file, to stderr too
/// ("bootstrap-runc: <error>"), where a caller that reads only our output sees it.
pub fn finish(result: anyhow::Result<i32>, log_to_file: bool) -> u8 {
    match result {
        Ok(code) => u8::try_from(code).unwrap_or(1),
        Err(err) => {
            let message = format!("{err:#}");
            log::error!("{message}");
            if log_to_file {
                let _ = writeln!(std::io::stderr(), "bootstrap-runc: {message}");
            }
            exit_code(&err)
        }
    }
}
