use anyhow::{Context, Result};

use super::list::Format;
use crate::runtime::Runtime;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(short, long, value_enum, default_value = "table")]
    pub format: Format,
    pub container_id: String,
    /// Options for ps(1) in table format (default -ef)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

pub(crate) fn run(args: &Args, runtime: &Runtime) -> Result<i32> {
    let pids = runtime.pids(&args.container_id)?;
    if args.format == Format::Json {
        return super::print_json(&pids);
    }
    // As runc: ps(1)'s own table, narrowed to the container's processes.
    let ps_args = if args.ps_args.is_empty() {
        vec!["-ef".to_string()]
    } else {
        args.ps_args.clone()
    };
    let output = std::process::Command::new("ps")
        .args(&ps_args)
        .output()
        .context("running ps")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let pid_column = header
        .split_whitespace()
        .position(|h| h == "PID")
        .context("ps output has no PID column")?;
    println!("{header}");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(pid_column)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            println!("{line}");
        }
    }
    Ok(0)
}
