//! What a boot runs, decided from the settings alone: which containers, in which order, and,
//! as results come in, which may start and which never will.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::settings::{self, Container, Mode, Settings};

#[cfg(test)]
mod tests;

/// The supervisor's defaults for what a container's settings leave out; the flags of `run` and
/// `plan`.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct PlanOptions {
    /// Timeout for containers that set none, e.g. 90s, 5m (none by default, as on Bottlerocket)
    #[arg(long, value_parser = settings::parse_duration)]
    pub default_timeout: Option<Duration>,
    /// How long an image's pull may receive no byte before the attempt is abandoned and
    /// retried, for containers that set no pull-progress-timeout
    #[arg(long, env = "BOOTSTRAP_PULL_PROGRESS_TIMEOUT", default_value = "20s", value_parser = settings::parse_duration)]
    pub pull_progress_timeout: Duration,
    /// How long an image's whole pull, retries included, may take, for containers that set no
    /// pull-timeout (none by default)
    #[arg(long, env = "BOOTSTRAP_PULL_TIMEOUT", value_parser = settings::parse_duration)]
    pub pull_timeout: Option<Duration>,
}

/// The default `--pull-progress-timeout`: a registry that sends nothing for 20 s is stalled
/// (well under a minute: the fixed 60 s read timeout this replaced took three times as long
/// per attempt, six attempts in all).
pub const DEFAULT_PULL_PROGRESS_TIMEOUT: Duration = Duration::from_secs(20);

impl Default for PlanOptions {
    fn default() -> PlanOptions {
        PlanOptions {
            default_timeout: None,
            pull_progress_timeout: DEFAULT_PULL_PROGRESS_TIMEOUT,
            pull_timeout: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The containers that run (mode `once` or `always`), sorted by name.
    pub steps: Vec<Step>,
    /// The containers that do not run because their mode is `off`, sorted.
    pub off: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    /// The runc container id, `boot.<name>`.
    pub id: String,
    /// The container's settings as this boot runs them: `timeout`, `pull-progress-timeout` and
    /// `pull-timeout` fall back to the plan's defaults (so `pull_progress_timeout` is always
    /// set), and `depends-on` keeps only dependencies that run (one that is `off` counts as
    /// satisfied).
    pub container: Container,
    /// The settings file that defines it, when the settings were read from files.
    pub file: Option<PathBuf>,
}

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Succeeded,
    Failed,
    /// Never started because a dependency failed or was skipped.
    Skipped,
}

/// The answer to "what now?" given the outcomes so far.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Next<'a> {
    /// Not started yet, and every dependency succeeded.
    pub ready: Vec<&'a Step>,
    /// Not started yet, and will never start: a dependency failed or is skipped (transitively).
    pub skip: Vec<&'a Step>,
}

pub fn plan(settings: &Settings, options: &PlanOptions) -> Plan {
    let runs = |name: &String| settings.containers.get(name).map(|c| c.mode) != Some(Mode::Off);
    let mut steps = Vec::new();
    let mut off = Vec::new();
    // BTreeMap iteration is sorted by name, which makes the plan deterministic.
    for (name, container) in &settings.containers {
        if container.mode == Mode::Off {
            off.push(name.clone());
            continue;
        }
        steps.push(Step {
            name: name.clone(),
            id: settings::container_id(name),
            container: Container {
                timeout: container.timeout.or(options.default_timeout),
                pull_progress_timeout: container
                    .pull_progress_timeout
                    .or(Some(options.pull_progress_timeout)),
                pull_timeout: container.pull_timeout.or(options.pull_timeout),
                depends_on: container
                    .depends_on
                    .iter()
                    .filter(|d| runs(d))
                    .cloned()
                    .collect(),
                ..container.clone()
            },
            file: settings.origins.get(name).cloned(),
        });
    }
    Plan { steps, off }
}

impl Plan {
    /// The steps not in `outcomes` that can start now, and those that never will. Skipping
    /// cascades within one call, so the caller records every `skip` as [`Ended::Skipped`]
    /// and only waits on running steps.
    pub fn next(&self, outcomes: &BTreeMap<String, Ended>) -> Next<'_> {
        let pending: Vec<&Step> = self
            .steps
            .iter()
            .filter(|step| !outcomes.contains_key(&step.name))
            .collect();
        let mut skipped: BTreeSet<&str> = BTreeSet::new();
        loop {
            let before = skipped.len();
            for step in &pending {
                let doomed = step.container.depends_on.iter().any(|dep| {
                    skipped.contains(dep.as_str())
                        || matches!(outcomes.get(dep), Some(Ended::Failed | Ended::Skipped))
                });
                if doomed {
                    skipped.insert(&step.name);
                }
            }
            if skipped.len() == before {
                break;
            }
        }
        let (skip, waiting): (Vec<&Step>, Vec<&Step>) = pending
            .into_iter()
            .partition(|step| skipped.contains(step.name.as_str()));
        let ready = waiting
            .into_iter()
            .filter(|step| {
                step.container
                    .depends_on
                    .iter()
                    .all(|dep| outcomes.get(dep) == Some(&Ended::Succeeded))
            })
            .collect();
        Next { ready, skip }
    }
}

/// The table `bootstrap-supervisor plan` prints.
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.steps.is_empty() {
            writeln!(f, "no bootstrap containers to run")?;
        } else {
            let header = [
                "NAME",
                "MODE",
                "ESSENTIAL",
                "SOURCE",
                "DEPENDS-ON",
                "TIMEOUT",
                "PULL",
                "ENVIRONMENT",
                "FILE",
            ];
            let rows: Vec<[String; 9]> = self.steps.iter().map(row).collect();
            let mut widths = header.map(str::len);
            for row in &rows {
                for (width, cell) in widths.iter_mut().zip(row) {
                    *width = (*width).max(cell.chars().count());
                }
            }
            write_row(f, &header.map(String::from), &widths)?;
            for row in &rows {
                write_row(f, row, &widths)?;
            }
        }
        if !self.off.is_empty() {
            writeln!(f, "off: {}", self.off.join(", "))?;
        }
        Ok(())
    }
}

fn row(step: &Step) -> [String; 9] {
    let or_dash = |text: String| if text.is_empty() { "-".into() } else { text };
    [
        step.name.clone(),
        step.container.mode.to_string(),
        if step.container.essential {
            "yes"
        } else {
            "no"
        }
        .into(),
        step.container.source.to_string(),
        or_dash(step.container.depends_on.join(",")),
        or_dash(
            step.container
                .timeout
                .map(settings::format_duration)
                .unwrap_or_default(),
        ),
        pull(&step.container),
        // Names only: values may be secrets (`get` shows them).
        or_dash(
            step.container
                .environment
                .0
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(","),
        ),
        step.file
            .as_ref()
            .map_or_else(|| "-".into(), |file| file.display().to_string()),
    ]
}

/// A registry image's pull: `policy,progress-timeout[,pull-timeout]`, e.g. `always,20s,10m`;
/// `-` for other sources.
fn pull(container: &Container) -> String {
    if !matches!(container.source, settings::Source::Image(_)) {
        return "-".into();
    }
    let durations = [container.pull_progress_timeout, container.pull_timeout];
    std::iter::once(container.pull_policy.to_string())
        .chain(
            durations
                .into_iter()
                .flatten()
                .map(settings::format_duration),
        )
        .collect::<Vec<_>>()
        .join(",")
}

fn write_row(f: &mut fmt::Formatter<'_>, cells: &[String; 9], widths: &[usize; 9]) -> fmt::Result {
    let line: Vec<String> = cells
        .iter()
        .zip(widths)
        .map(|(cell, &width)| format!("{cell:<width$}"))
        .collect();
    writeln!(f, "{}", line.join("  ").trim_end())
}
