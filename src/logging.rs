//! runc-shaped log output. containerd's shim reads `--log` as a stream of JSON objects and shows
//! the last one whose `level` is exactly `"error"`, using `msg`; anything else hides the real reason.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::{OnceLock, RwLock};

use anyhow::{Context, Result};
use clap::ValueEnum;
use log::{Level, LevelFilter, Log, Metadata, Record};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Logrus level names, which runc (and so containerd) use.
fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// One log line in runc's shape for `format`.
pub(crate) fn format_line(format: LogFormat, level: Level, msg: &str, time: &str) -> String {
    match format {
        LogFormat::Json => serde_json::json!({
            "level": level_name(level),
            "msg": msg,
            "time": time,
        })
        .to_string(),
        LogFormat::Text => format!("time={:?} level={} msg={:?}", time, level_name(level), msg),
    }
}

/// The process's logger: `log` takes one for the life of a process, and the supervisor's
/// launcher (supervisor/execute/launcher.rs) needs another in each runtime process it forks.
struct Installed(RwLock<env_logger::Logger>);

static INSTALLED: OnceLock<Installed> = OnceLock::new();

impl Log for Installed {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.0.read().is_ok_and(|logger| logger.enabled(metadata))
    }

    fn log(&self, record: &Record) {
        if let Ok(logger) = self.0.read() {
            logger.log(record);
        }
    }

    fn flush(&self) {
        if let Ok(logger) = self.0.read() {
            logger.flush();
        }
    }
}

/// Sends this process's log, from now on, as runc-shaped lines to `log_file` (or stderr)
/// through env_logger; a later call replaces an earlier one. Only our own crate logs at info;
/// libraries are heard with `--debug` (libcontainer logs each error itself, and a second copy
/// of it would not be the last error line containerd looks for). Errors: the log file cannot
/// be opened for appending.
pub fn init(log_file: Option<&Path>, format: LogFormat, debug: bool) -> Result<()> {
    let mut builder = env_logger::Builder::new();
    if debug {
        builder.filter_level(LevelFilter::Debug);
    } else {
        builder
            .filter_level(LevelFilter::Off)
            .filter_module("bootstrap_runc", LevelFilter::Info);
    }
    builder.parse_env("BOOTSTRAP_RUNC_LOG");
    if let Some(path) = log_file {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening log file {}", path.display()))?;
        builder.target(env_logger::Target::Pipe(Box::new(file)));
    }
    builder.format(move |buf, record| {
        let line = format_line(
            format,
            record.level(),
            &record.args().to_string(),
            &now_rfc3339(),
        );
        writeln!(buf, "{line}")
    });
    let logger = builder.build();
    log::set_max_level(logger.filter());
    match INSTALLED.get() {
        Some(current) => {
            *current
                .0
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = logger
        }
        None => log::set_logger(INSTALLED.get_or_init(|| Installed(RwLock::new(logger))))
            .context("installing the logger")?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_error_line_is_what_containerd_parses() {
        let line = format_line(
            LogFormat::Json,
            Level::Error,
            "refused \"x\"",
            "2026-11-22T01:29:40Z",
        );
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["level"], "error");
        assert_eq!(value["msg"], "refused \"x\"");
        assert_eq!(value["time"], "2026-11-22T01:29:40Z");
        assert_eq!(value.as_object().unwrap().len(), 3);
    }

    #[test]
    fn text_line_is_logrus_shaped() {
        let line = format_line(LogFormat::Text, Level::Warn, "a b", "T");
        assert_eq!(line, r#"time="T" level=warning msg="a b""#);
    }

    #[test]
    fn time_is_rfc3339() {
        assert!(chrono::DateTime::parse_from_rfc3339(&now_rfc3339()).is_ok());
    }
}
