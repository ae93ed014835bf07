use anyhow::Result;

use crate::runtime::Runtime;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    pub container_id: String,
}

/// runc prints the state indented by two spaces (`json.MarshalIndent(.., "", "  ")`).
pub(crate) fn run(args: &Args, runtime: &Runtime) -> Result<i32> {
    println!(
        "{}",
        serde_json::to_string_pretty(&runtime.state(&args.container_id)?)?
    );
    Ok(0)
}
