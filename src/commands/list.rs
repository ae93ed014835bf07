use anyhow::Result;

use crate::runtime::Runtime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[arg(short, long, value_enum, default_value = "table")]
    pub format: Format,
    /// Print only the container ids
    #[arg(short, long)]
    pub quiet: bool,
}

pub(crate) fn run(args: &Args, runtime: &Runtime) -> Result<i32> {
    let states = runtime.states()?;
    if args.quiet {
        states.iter().for_each(|s| println!("{}", s.id));
        return Ok(0);
    }
    if args.format == Format::Json {
        return super::print_json(&states);
    }
    println!(
        "{:<20} {:<8} {:<10} {:<40} {:<32} OWNER",
        "ID", "PID", "STATUS", "BUNDLE", "CREATED"
    );
    for s in &states {
        println!(
            "{:<20} {:<8} {:<10} {:<40} {:<32} {}",
            s.id,
            s.pid,
            s.status,
            s.bundle.display(),
            s.created,
            if s.owner.is_empty() { "root" } else { &s.owner }
        );
    }
    Ok(0)
}
