use anyhow::Result;

use super::SettingsArg;
use crate::supervisor::plan::{plan, PlanOptions};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub settings: SettingsArg,
    #[command(flatten)]
    pub options: PlanOptions,
}

pub(crate) fn run(args: &Args) -> Result<i32> {
    let settings = match super::load(&args.settings.settings)? {
        Ok(settings) => settings,
        Err(code) => return Ok(code),
    };
    print!("{}", plan(&settings, &args.options));
    Ok(0)
}
