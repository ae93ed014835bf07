use anyhow::Result;

use super::SettingsArg;
use crate::supervisor::settings::edit;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub settings: SettingsArg,
    /// [settings.]bootstrap-containers[.NAME[.FIELD]], or settings; several are merged
    #[arg(default_value = "bootstrap-containers")]
    pub keys: Vec<String>,
}

/// Prints the keys' settings as apiclient does: nested JSON from `settings` down.
pub(crate) fn run(args: &Args) -> Result<i32> {
    let value = edit::get(&args.settings.settings, &args.keys)?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(0)
}
