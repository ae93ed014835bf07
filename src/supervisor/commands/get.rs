use anyhow::Result;

use super::SettingsArg;
use crate::supervisor::settings::edit;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub settings: SettingsArg,
    /// bootstrap-containers, bootstrap-containers.NAME or bootstrap-containers.NAME.FIELD
    #[arg(default_value = "bootstrap-containers")]
    pub key: String,
}

pub fn run(args: &Args) -> Result<i32> {
    let value = edit::get(&args.settings.settings, &args.key)?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(0)
}
