use anyhow::Result;

use super::SettingsArg;
use crate::supervisor::plan::{plan, PlanOptions};
use crate::supervisor::settings;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub settings: SettingsArg,
    /// Timeout for containers that set none (e.g. 90s, 5m)
    #[arg(long, value_parser = settings::parse_duration)]
    pub default_timeout: Option<std::time::Duration>,
}

pub(crate) fn run(args: &Args) -> Result<i32> {
    let settings = match super::load(&args.settings.settings)? {
        Ok(settings) => settings,
        Err(code) => return Ok(code),
    };
    print!(
        "{}",
        plan(
            &settings,
            &PlanOptions {
                default_timeout: args.default_timeout
            }
        )
    );
    Ok(0)
}
