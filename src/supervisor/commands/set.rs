use anyhow::{Context, Result};

use super::SettingsArg;
use crate::supervisor::settings::edit;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub settings: SettingsArg,
    /// [settings.]bootstrap-containers.NAME.FIELD=VALUE (command and depends-on take a JSON
    /// list, environment a JSON table of strings); all applied together or none
    #[arg(required = true)]
    pub assignments: Vec<String>,
}

/// Applies every assignment in one edit, creating the settings file if there is none.
pub(crate) fn run(args: &Args) -> Result<i32> {
    let assignments = args
        .assignments
        .iter()
        .map(|assignment| {
            assignment
                .split_once('=')
                .with_context(|| format!("{assignment:?} is not KEY=VALUE"))
        })
        .collect::<Result<Vec<_>>>()?;
    edit::set_all(&args.settings.settings, &assignments)?;
    Ok(0)
}
