use anyhow::{Context, Result};

use super::SettingsArg;
use crate::supervisor::settings::edit;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub settings: SettingsArg,
    /// bootstrap-containers.NAME.FIELD=VALUE (command and depends-on take a JSON list)
    #[arg(required = true)]
    pub assignments: Vec<String>,
}

pub fn run(args: &Args) -> Result<i32> {
    for assignment in &args.assignments {
        let (key, value) = assignment
            .split_once('=')
            .with_context(|| format!("{assignment:?} is not KEY=VALUE"))?;
        edit::set(&args.settings.settings, key, value)?;
    }
    Ok(0)
}
