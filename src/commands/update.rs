use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

use crate::runtime::Runtime;

/// runc's `update` flags; with `--resources` the others are ignored, as in runc.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// JSON resources (the runtime-spec's linux.resources) from a file, or `-` for stdin
    #[arg(short, long, value_name = "FILE")]
    pub resources: Option<PathBuf>,
    /// Block IO weight (10 to 1000)
    #[arg(long)]
    pub blkio_weight: Option<u16>,
    /// CPU CFS period in microseconds
    #[arg(long)]
    pub cpu_period: Option<u64>,
    /// CPU CFS quota in microseconds
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CPU shares (relative weight)
    #[arg(long)]
    pub cpu_share: Option<u64>,
    /// CPU realtime period in microseconds
    #[arg(long)]
    pub cpu_rt_period: Option<u64>,
    /// CPU realtime runtime in microseconds
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_rt_runtime: Option<i64>,
    /// CPUs the container may use (0-3, 0,1)
    #[arg(long)]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes the container may use (0-3, 0,1)
    #[arg(long)]
    pub cpuset_mems: Option<String>,
    /// Memory limit (bytes, or with a k, m, g, t, p suffix; -1 for none)
    #[arg(long, allow_hyphen_values = true, value_parser = parse_ram)]
    pub memory: Option<i64>,
    /// Memory soft limit (as --memory)
    #[arg(long, allow_hyphen_values = true, value_parser = parse_ram)]
    pub memory_reservation: Option<i64>,
    /// Memory plus swap limit (as --memory)
    #[arg(long, allow_hyphen_values = true, value_parser = parse_ram)]
    pub memory_swap: Option<i64>,
    /// Maximum number of tasks (0: unchanged, -1: none)
    #[arg(long, allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    pub container_id: String,
}

pub(crate) fn run(args: &Args, runtime: &Runtime) -> Result<i32> {
    let update = match &args.resources {
        Some(path) => read_resources(path)?,
        None => from_flags(args),
    };
    runtime.update(&args.container_id, &update)?;
    Ok(0)
}

fn read_resources(path: &PathBuf) -> Result<Value> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the resources from stdin")?;
    } else {
        text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the resources from {}", path.display()))?;
    }
    serde_json::from_str(&text).context("parsing the resources (JSON, linux.resources)")
}

/// The runtime-spec's shape of what the flags set; a flag not given is left out.
fn from_flags(args: &Args) -> Value {
    let section = |fields: Vec<(&str, Option<Value>)>| -> Option<Value> {
        let map: Map<String, Value> = fields
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), v?)))
            .collect();
        (!map.is_empty()).then_some(Value::Object(map))
    };
    let cpu = section(vec![
        ("shares", args.cpu_share.map(Value::from)),
        ("quota", args.cpu_quota.map(Value::from)),
        ("period", args.cpu_period.map(Value::from)),
        ("realtimeRuntime", args.cpu_rt_runtime.map(Value::from)),
        ("realtimePeriod", args.cpu_rt_period.map(Value::from)),
        ("cpus", args.cpuset_cpus.clone().map(Value::from)),
        ("mems", args.cpuset_mems.clone().map(Value::from)),
    ]);
    let memory = section(vec![
        ("limit", args.memory.map(Value::from)),
        ("reservation", args.memory_reservation.map(Value::from)),
        ("swap", args.memory_swap.map(Value::from)),
    ]);
    let block_io = section(vec![("weight", args.blkio_weight.map(Value::from))]);
    let pids = section(vec![("limit", args.pids_limit.map(Value::from))]);
    section(vec![
        ("cpu", cpu),
        ("memory", memory),
        ("blockIO", block_io),
        ("pids", pids),
    ])
    .unwrap_or_else(|| json!({}))
}

/// A memory size as runc reads one (docker's `RAMInBytes`): a number with an optional `b`,
/// `k`, `m`, `g`, `t` or `p` suffix (powers of 1024, any case, an optional trailing `b`), or
/// -1 for no limit.
pub(crate) fn parse_ram(text: &str) -> Result<i64, String> {
    let invalid = || format!("{text:?} is not a size (like 512m, 2g, 1048576, or -1)");
    if text == "-1" {
        return Ok(-1);
    }
    let lower = text.to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let number: f64 = number.parse().map_err(|_| invalid())?;
    let shift = match unit.strip_suffix('b').unwrap_or(unit) {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(invalid()),
    };
    let bytes = number * (1u64 << shift) as f64;
    if !(0.0..=i64::MAX as f64).contains(&bytes) {
        return Err(invalid());
    }
    Ok(bytes as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_runc_reads_them() {
        assert_eq!(parse_ram("1048576"), Ok(1 << 20));
        assert_eq!(parse_ram("512m"), Ok(512 << 20));
        assert_eq!(parse_ram("2G"), Ok(2 << 30));
        assert_eq!(parse_ram("1.5kb"), Ok(1536));
        assert_eq!(parse_ram("-1"), Ok(-1));
        for bad in ["", "m", "12x", "-2", "1e3"] {
            assert!(parse_ram(bad).is_err(), "{bad:?}");
        }
    }
}
