use std::process::ExitCode;

use bootstrap_runc::cli;
use bootstrap_runc::commands::Cli;
use bootstrap_runc::logging;
use bootstrap_runc::runtime::sealed_exe;

fn main() -> ExitCode {
    cli::abort_on_panic();
    sealed_exe::restore_name();
    let cli: Cli = match cli::parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            // runc exits 1 on a usage error; help and version are not errors.
            return if err.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let log_to_file = cli.log.is_some();
    if let Err(err) = logging::init(cli.log.as_deref(), cli.log_format, cli.debug) {
        eprintln!("bootstrap-runc: {err:#}");
        return ExitCode::FAILURE;
    }
    ExitCode::from(cli::finish(cli.execute(), log_to_file))
}
