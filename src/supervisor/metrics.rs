//! Prometheus metrics for node_exporter's textfile collector: after every run the supervisor
//! writes a `*.prom` file in the Prometheus text exposition format 0.0.4 (the format that
//! collector parses; OpenMetrics-only types make it drop the file), atomically (temp and
//! rename), so node_exporter never reads a torn file. Gauges only, each describing the last run:
//!
//! | metric | labels | value |
//! |---|---|---|
//! | `bootstrap_container_success` | `name`, `essential` (`true`/`false`) | 1 succeeded, 0 not |
//! | `bootstrap_container_exit_code` | `name` | the exit code; 128 + N for signal N (the shell's convention); absent when it never ran |
//! | `bootstrap_container_start_time_seconds` | `name` | Unix time it started; absent when it never started |
//! | `bootstrap_container_duration_seconds` | `name`, `phase` (`pull`, `unpack`, `run`) | seconds; `pull`/`unpack` for images only |
//! | `bootstrap_container_image_info` | `name`, `digest` | 1 (the image's manifest digest) |
//! | `bootstrap_supervisor_last_run_timestamp_seconds` | | Unix time the run ended |
//! | `bootstrap_supervisor_last_run_success` | | 1 when the supervisor exited 0, else 0 |

use std::path::Path;

use anyhow::{Context, Result};
use prometheus::{Gauge, GaugeVec, Opts, Registry, TextEncoder};

use super::report::Outcome;
use crate::atomic_file;

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<GaugeVec> {
    let gauge = GaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(gauge.clone()))?;
    Ok(gauge)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Result<Gauge> {
    let gauge = Gauge::new(name, help)?;
    registry.register(Box::new(gauge.clone()))?;
    Ok(gauge)
}

fn unix_seconds(rfc3339: &str) -> Option<f64> {
    let time = chrono::DateTime::parse_from_rfc3339(rfc3339).ok()?;
    Some(time.timestamp_nanos_opt()? as f64 / 1e9)
}

/// The metrics of one run in text format 0.0.4. `finished_at` is the run's end (RFC 3339),
/// `exit_code` the supervisor's.
pub(crate) fn render(containers: &[Outcome], finished_at: &str, exit_code: i32) -> Result<String> {
    let registry = Registry::new();
    let success = gauge_vec(
        &registry,
        "bootstrap_container_success",
        "1 if the bootstrap container succeeded in the last run, else 0",
        &["name", "essential"],
    )?;
    let exit = gauge_vec(
        &registry,
        "bootstrap_container_exit_code",
        "The bootstrap container's exit code in the last run (128+N for signal N)",
        &["name"],
    )?;
    let start = gauge_vec(
        &registry,
        "bootstrap_container_start_time_seconds",
        "Unix time the bootstrap container started in the last run",
        &["name"],
    )?;
    let duration = gauge_vec(
        &registry,
        "bootstrap_container_duration_seconds",
        "Seconds the bootstrap container spent in each phase of the last run",
        &["name", "phase"],
    )?;
    let image = gauge_vec(
        &registry,
        "bootstrap_container_image_info",
        "The image the bootstrap container ran (its manifest digest), always 1",
        &["name", "digest"],
    )?;
    let from_cache = gauge_vec(
        &registry,
        "bootstrap_container_image_from_cache",
        "1 if the registry could not be reached and the bootstrap container ran the image its reference resolved to last, from the cache (pull-policy always-or-cached), else 0",
        &["name"],
    )?;
    let last_run = gauge(
        &registry,
        "bootstrap_supervisor_last_run_timestamp_seconds",
        "Unix time the last bootstrap-supervisor run ended",
    )?;
    let last_success = gauge(
        &registry,
        "bootstrap_supervisor_last_run_success",
        "1 if the last bootstrap-supervisor run let the boot go on (exit code 0), else 0",
    )?;
    for o in containers {
        let name = o.name.as_str();
        let succeeded = o.status == super::report::Status::Succeeded;
        success
            .with_label_values(&[name, if o.essential { "true" } else { "false" }])
            .set(if succeeded { 1.0 } else { 0.0 });
        match (o.exit_code, o.signal) {
            (_, Some(signal)) => exit.with_label_values(&[name]).set(f64::from(128 + signal)),
            (Some(code), None) => exit.with_label_values(&[name]).set(f64::from(code)),
            (None, None) => {}
        }
        if let Some(time) = o.started_at.as_deref().and_then(unix_seconds) {
            start.with_label_values(&[name]).set(time);
        }
        if let Some(img) = &o.image {
            duration
                .with_label_values(&[name, "pull"])
                .set(img.pull_ms as f64 / 1000.0);
            duration
                .with_label_values(&[name, "unpack"])
                .set(img.unpack_ms as f64 / 1000.0);
            image
                .with_label_values(&[name, img.digest.as_str()])
                .set(1.0);
            from_cache
                .with_label_values(&[name])
                .set(if img.from_cache { 1.0 } else { 0.0 });
        }
        if o.started_at.is_some() {
            duration
                .with_label_values(&[name, "run"])
                .set(o.run_ms as f64 / 1000.0);
        }
    }
    last_run.set(unix_seconds(finished_at).unwrap_or_default());
    last_success.set(if exit_code == 0 { 1.0 } else { 0.0 });
    let mut text = String::new();
    TextEncoder::new()
        .encode_utf8(&registry.gather(), &mut text)
        .context("encoding the metrics")?;
    Ok(text)
}

/// Renders the run's metrics and replaces `path` with them atomically (mode 0644: node_exporter
/// runs as its own user).
pub(crate) fn write(
    path: &Path,
    containers: &[Outcome],
    finished_at: &str,
    exit_code: i32,
) -> Result<()> {
    let text = render(containers, finished_at, exit_code)?;
    atomic_file::write(path, text.as_bytes(), 0o644)
        .with_context(|| format!("writing the metrics file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::report::{ImageOutcome, Status};
    use crate::supervisor::settings::Mode;

    #[test]
    fn text_format_has_the_documented_series() {
        let outcome = Outcome {
            name: "disk-setup".into(),
            mode: Mode::Once,
            essential: true,
            source: "r/x:1".into(),
            status: Status::Failed,
            exit_code: None,
            signal: Some(9),
            started_at: Some("2026-01-01T00:00:01Z".into()),
            finished_at: Some("2026-01-01T00:00:02Z".into()),
            prepare_ms: 5,
            run_ms: 1500,
            image: Some(ImageOutcome {
                digest: "sha256:ab".into(),
                pull_ms: 250,
                unpack_ms: 10,
                from_cache: false,
            }),
            error: None,
        };
        let text = render(&[outcome], "2026-01-01T00:00:03Z", 1).unwrap();
        for line in [
            "bootstrap_container_success{essential=\"true\",name=\"disk-setup\"} 0",
            "bootstrap_container_exit_code{name=\"disk-setup\"} 137",
            "bootstrap_container_start_time_seconds{name=\"disk-setup\"} 1767225601",
            "bootstrap_container_duration_seconds{name=\"disk-setup\",phase=\"pull\"} 0.25",
            "bootstrap_container_duration_seconds{name=\"disk-setup\",phase=\"run\"} 1.5",
            "bootstrap_container_image_info{digest=\"sha256:ab\",name=\"disk-setup\"} 1",
            "bootstrap_supervisor_last_run_timestamp_seconds 1767225603",
            "bootstrap_supervisor_last_run_success 0",
            "# TYPE bootstrap_container_success gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
