use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use super::{SettingsArg, INVALID};
use crate::cli;
use crate::image::registry::config::RegistryConfig;
use crate::image::{Images, Limits};
use crate::logging::now_rfc3339;
use crate::policy;
use crate::private_file;
use crate::runtime::sealed_exe;
use crate::stop;
use crate::supervisor::boots::Record;
use crate::supervisor::cgroup::Delegated;
use crate::supervisor::execute::launcher::Launcher;
use crate::supervisor::execute::{Executor, Runtime};
use crate::supervisor::metrics;
use crate::supervisor::plan::{plan, PlanOptions};
use crate::supervisor::report::Report;
use crate::supervisor::settings;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub settings: SettingsArg,
    /// Accepted and ignored, for scripts that pass it: containers run, stop and are deleted in
    /// this binary's own runtime, the library bootstrap-runc is built on
    #[arg(long, env = "BOOTSTRAP_RUNTIME", value_name = "PATH")]
    pub runtime: Option<PathBuf>,
    /// Persistent state: generated bundles, unpacked images, per-container data and logs
    #[arg(long, default_value = "/var/lib/bootstrap-containers", value_parser = cli::absolute)]
    pub state_dir: PathBuf,
    /// This boot's markers, runtime state and report (a tmpfs)
    #[arg(long, default_value = "/run/bootstrap-containers", value_parser = cli::absolute)]
    pub run_dir: PathBuf,
    /// JSON report [default: RUN_DIR/report.json]
    #[arg(long, value_parser = cli::absolute)]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub policy_flags: policy::file::PolicyFlags,
    /// How long a stopped container (timeout, or the supervisor stopping) has between SIGTERM
    /// and SIGKILL to all its processes (host-ctr's 20 s)
    #[arg(long, env = "BOOTSTRAP_STOP_GRACE", default_value = "20s", value_parser = settings::parse_duration)]
    pub stop_grace: Duration,
    /// Registries: insecure, ca-file, auth-file and mirrors per host[:port] (missing: defaults)
    #[arg(long, default_value = "/etc/bootstrap-containers/registries.toml", value_parser = cli::absolute)]
    pub registry_config: PathBuf,
    #[command(flatten)]
    pub plan_options: PlanOptions,
    /// The most an image may unpack to (file data, all layers), e.g. 8GiB, 500MiB, or bytes
    #[arg(long, default_value = "8GiB", value_parser = settings::parse_size)]
    pub max_image_size: u64,
    /// The most an image's or source-less container's writes into its own root may take: the
    /// size of its writable layer, a tmpfs thrown away with it (memory, charged to its cgroup)
    #[arg(long, env = "BOOTSTRAP_WRITABLE_LAYER_SIZE", default_value = "512MiB", value_parser = settings::parse_size)]
    pub writable_layer_size: u64,
    /// Prometheus metrics of every run, written atomically in text format 0.0.4, e.g. into
    /// node_exporter's textfile directory: /var/lib/prometheus/node-exporter/bootstrap-containers.prom
    #[arg(long, env = "BOOTSTRAP_METRICS_FILE", value_parser = cli::absolute)]
    pub metrics_file: Option<PathBuf>,
}

/// Every registry image the settings name, whatever the container's mode: their images stay.
fn image_references(settings: &settings::Settings) -> BTreeSet<String> {
    settings
        .containers
        .values()
        .filter_map(|c| match &c.source {
            settings::Source::Image(reference) => Some(reference.clone()),
            _ => None,
        })
        .collect()
}

/// What no container may reach: the run dir (runtime state, logs, markers) and the state dir
/// but for the containers' bundles (their `data/` is bound into them on purpose).
fn protected_dirs(state_dir: &Path, run_dir: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![run_dir.to_path_buf()];
    dirs.extend(["boots", "images", "seccomp"].map(|dir| state_dir.join(dir)));
    dirs
}

/// `<state-dir>/seccomp`, root's and private: compiled seccomp filters kept across boots (the
/// run dir is new each boot, and the first container would compile the profile, ~10 ms, while
/// the others wait). What it holds is loaded into containers, so it must be root's alone, as
/// the bundles and images beside it.
fn seccomp_cache(state_dir: &Path) -> Result<PathBuf> {
    let dir = state_dir.join("seccomp");
    private_file::create_dir(&dir)?;
    private_file::check_path(&dir)?;
    Ok(dir)
}

pub(crate) fn run(args: &Args) -> Result<i32> {
    // Runtime processes are forks of this one (execute/launcher.rs): run from a protected
    // binary, as bootstrap-runc does before it creates containers.
    let reexecuted = sealed_exe::take_reexec_mark();
    if let Some(ignored) = &args.runtime {
        log::debug!(
            "--runtime {} ignored: containers run in this binary",
            ignored.display()
        );
    }
    let runtime = Runtime::open(
        &args.run_dir,
        args.policy_flags.overrides(
            protected_dirs(&args.state_dir, &args.run_dir),
            vec![args.state_dir.clone(), args.run_dir.clone()],
        ),
        seccomp_cache(&args.state_dir)?,
    )?;
    sealed_exe::ensure_sealed(&runtime.state_root().empty_dir())?;
    if !reexecuted {
        log::info!(
            "{} is installed read-only: it runs containers as it is",
            std::env::current_exe().unwrap_or_default().display()
        );
    }
    // Dropped (the cgroup given back) once every container is gone.
    let cgroup = Delegated::take();
    // Forked while this process is single-threaded, in the cgroup just taken, and before the
    // settings and credentials are read: runtime processes hold no more than they need.
    let launcher = Arc::new(Launcher::start(runtime.launcher_config())?);
    let started_at = now_rfc3339();
    let record = Arc::new(Record::open(
        &args.state_dir,
        &args.settings.settings,
        &started_at,
    )?);
    let settings = match settings::load(&args.settings.settings) {
        Ok(settings) => settings,
        Err(err) => {
            let error = format!("{err:#}");
            eprintln!("bootstrap-supervisor: {error}");
            let report = record.report(Vec::new(), INVALID, Some(error));
            finish(args, &record, &report)?;
            return Ok(INVALID);
        }
    };
    let plan = plan(&settings, &args.plan_options);
    let images = Arc::new(open_images(args)?);
    let executor = Executor {
        settings: args.settings.settings.clone(),
        runtime,
        launcher: launcher.clone(),
        state_dir: args.state_dir.clone(),
        images: images.clone(),
        cgroup_parent: cgroup.as_ref().map(|c| c.parent().to_path_buf()),
        stop_grace: args.stop_grace,
        record: record.clone(),
        writable_layer: args.writable_layer_size,
    };
    let containers = executor.execute(&plan);
    // Gone before the cgroup is given back (it is in it).
    launcher.stop();
    let containers = containers?;
    if let Err(err) = images.collect_garbage(&image_references(&settings)) {
        log::warn!("removing unused images: {err:#}");
    }
    let exit_code = Report::verdict(&containers);
    let report = record.report(containers, exit_code, None);
    finish(args, &record, &report)?;
    print!("{}", report.table());
    for failed in Report::essential_failures(&report.containers) {
        log::error!(
            "essential bootstrap container {} did not succeed ({}): the boot must not go on",
            failed.name,
            failed.status.name()
        );
    }
    Ok(exit_code)
}

/// The image store, with the registries' configuration and the size limit of the flags.
fn open_images(args: &Args) -> Result<Images> {
    Images::open(
        &args.state_dir,
        RegistryConfig::load(&args.registry_config)?,
        Limits {
            max_image_bytes: args.max_image_size,
            max_image_bytes_name: format!(
                "--max-image-size {}",
                settings::format_size(args.max_image_size)
            ),
        },
        stop::requested,
    )
}

/// Writes the run's report: this boot's record first, then the run dir's, then the metrics.
/// Only the run dir's report can fail the run, as it always could; the record and the metrics
/// are for watching the boot, and a failure to write them is logged, never the boot's verdict.
fn finish(args: &Args, record: &Record, report: &Report) -> Result<()> {
    record.finish(report);
    let path = args
        .report
        .clone()
        .unwrap_or_else(|| args.run_dir.join("report.json"));
    report.write(&path)?;
    if let Some(path) = &args.metrics_file {
        let written = metrics::write(
            path,
            &report.containers,
            &report.finished_at,
            report.exit_code,
        );
        if let Err(err) = written {
            log::warn!("writing metrics: {err:#}");
        }
    }
    Ok(())
}
