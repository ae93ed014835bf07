use std::process::ExitCode;

use bootstrap_runc::cli;
use bootstrap_runc::logging::{self, LogFormat};
use bootstrap_runc::runtime::sealed_exe;
use bootstrap_runc::supervisor::commands::{Cli, INVALID};

fn main() -> ExitCode {
    cli::abort_on_panic();
    // After `run`'s re-exec from its protected copy (commands/run.rs).
    sealed_exe::restore_name();
    // A usage error exits 2 (clap's code, the supervisor's documented one for invalid input).
    let cli: Cli = cli::parse().unwrap_or_else(|err| err.exit());
    if let Err(err) = logging::init(None, LogFormat::Text, cli.debug) {
        eprintln!("bootstrap-supervisor: {err:#}");
        return ExitCode::from(INVALID as u8);
    }
    match cli.execute() {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(err) => {
            // Not through `log`: only the library's own modules log (see logging::init).
            eprintln!("bootstrap-supervisor: {err:#}");
            ExitCode::FAILURE
        }
    }
}
