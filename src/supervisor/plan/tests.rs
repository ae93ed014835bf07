use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::supervisor::settings::{parse, Format, Mode, PullPolicy, Settings, Source};

fn settings(text: &str) -> Settings {
    parse(text, Format::Toml).unwrap()
}

/// Containers `name = (mode, depends-on)`, all with a bundle source.
fn graph(containers: &[(&str, &str, &str)]) -> Plan {
    let text: String = containers
        .iter()
        .map(|(name, mode, deps)| {
            format!(
                "[settings.bootstrap-containers.{name}]\nsource = \"/b/{name}\"\n\
                 mode = \"{mode}\"\ndepends-on = {deps}\n"
            )
        })
        .collect();
    plan(&settings(&text), &PlanOptions::default())
}

fn names(steps: &[&Step]) -> Vec<String> {
    steps.iter().map(|step| step.name.clone()).collect()
}

fn outcomes(list: &[(&str, Ended)]) -> BTreeMap<String, Ended> {
    list.iter()
        .map(|(name, outcome)| (name.to_string(), *outcome))
        .collect()
}

#[test]
fn steps_are_the_running_containers_sorted() {
    let plan = graph(&[
        ("zeta", "once", "[]"),
        ("alpha", "always", "[]"),
        ("mid", "off", "[]"),
        ("beta", "off", "[]"),
    ]);
    let steps: Vec<&str> = plan.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(steps, ["alpha", "zeta"]);
    assert_eq!(plan.off, ["beta", "mid"]);
    assert_eq!(plan.steps[0].id, "boot.alpha");
    assert_eq!(plan.steps[0].container.mode, Mode::Always);
    assert_eq!(plan.steps[1].container.mode, Mode::Once);
}

#[test]
fn steps_carry_every_setting() {
    let text = r#"
        [settings.bootstrap-containers.disk]
        source = "oci-layout:/images:v2"
        mode = "once"
        essential = true
        user-data = "aGk="
        command = ["mkfs", "/dev/x"]
        pull-policy = "if-not-present"
    "#;
    let plan = plan(&settings(text), &PlanOptions::default());
    let step = &plan.steps[0];
    assert_eq!(
        step.container.source,
        Source::OciLayout {
            path: "/images".into(),
            tag: "v2".into()
        }
    );
    assert!(step.container.essential);
    assert_eq!(step.container.user_data.as_ref().unwrap().as_bytes(), b"hi");
    assert_eq!(
        step.container.command.as_deref().unwrap(),
        ["mkfs", "/dev/x"]
    );
    assert_eq!(step.container.pull_policy, PullPolicy::IfNotPresent);
    assert_eq!(step.container.timeout, None);
}

#[test]
fn own_timeout_beats_the_default() {
    let text = r#"
        [settings.bootstrap-containers.a]
        source = "/a"
        mode = "once"
        timeout = "5m"
        [settings.bootstrap-containers.b]
        source = "/b"
        mode = "once"
    "#;
    let options = PlanOptions {
        default_timeout: Some(Duration::from_secs(30)),
        ..PlanOptions::default()
    };
    let plan = plan(&settings(text), &options);
    assert_eq!(
        plan.steps[0].container.timeout,
        Some(Duration::from_secs(300))
    );
    assert_eq!(
        plan.steps[1].container.timeout,
        Some(Duration::from_secs(30))
    );
}

#[test]
fn own_pull_limits_beat_the_defaults() {
    let text = r#"
        [settings.bootstrap-containers.a]
        source = "registry.test/a:1"
        mode = "once"
        pull-progress-timeout = "1m"
        pull-timeout = "10m"
        [settings.bootstrap-containers.b]
        source = "registry.test/b:1"
        mode = "once"
    "#;
    let defaults = plan(&settings(text), &PlanOptions::default());
    let b = &defaults.steps[1].container;
    assert_eq!(b.pull_progress_timeout, Some(DEFAULT_PULL_PROGRESS_TIMEOUT));
    assert_eq!(b.pull_timeout, None);
    let options = PlanOptions {
        pull_progress_timeout: Duration::from_secs(5),
        pull_timeout: Some(Duration::from_secs(120)),
        ..PlanOptions::default()
    };
    let plan = plan(&settings(text), &options);
    let (a, b) = (&plan.steps[0].container, &plan.steps[1].container);
    assert_eq!(a.pull_progress_timeout, Some(Duration::from_secs(60)));
    assert_eq!(a.pull_timeout, Some(Duration::from_secs(600)));
    assert_eq!(b.pull_progress_timeout, Some(Duration::from_secs(5)));
    assert_eq!(b.pull_timeout, Some(Duration::from_secs(120)));
}

/// The flags' defaults are [`PlanOptions::default`]'s.
#[test]
fn the_flags_default_to_the_defaults() {
    use clap::{Args, Command, FromArgMatches};
    let matches = PlanOptions::augment_args(Command::new("plan"))
        .try_get_matches_from(["plan"])
        .unwrap();
    let options = PlanOptions::from_arg_matches(&matches).unwrap();
    assert_eq!(options, PlanOptions::default());
}

#[test]
fn an_off_dependency_is_satisfied() {
    let plan = graph(&[
        ("a", "once", "[\"b\", \"c\"]"),
        ("b", "off", "[]"),
        ("c", "always", "[]"),
    ]);
    assert_eq!(plan.steps[0].container.depends_on, ["c"]);
    let next = plan.next(&outcomes(&[("c", Ended::Succeeded)]));
    assert_eq!(names(&next.ready), ["a"]);
}

#[test]
fn next_follows_the_dependencies() {
    // d depends on b and c, which depend on a.
    let plan = graph(&[
        ("a", "once", "[]"),
        ("b", "once", "[\"a\"]"),
        ("c", "once", "[\"a\"]"),
        ("d", "once", "[\"b\", \"c\"]"),
        ("e", "once", "[]"),
    ]);
    let next = plan.next(&BTreeMap::new());
    assert_eq!(names(&next.ready), ["a", "e"]);
    assert!(next.skip.is_empty());

    // Running steps are in neither list; the caller knows them.
    let next = plan.next(&outcomes(&[("a", Ended::Succeeded)]));
    assert_eq!(names(&next.ready), ["b", "c", "e"]);

    let next = plan.next(&outcomes(&[
        ("a", Ended::Succeeded),
        ("b", Ended::Succeeded),
    ]));
    assert_eq!(names(&next.ready), ["c", "e"], "d waits for c");

    let done = outcomes(&[
        ("a", Ended::Succeeded),
        ("b", Ended::Succeeded),
        ("c", Ended::Succeeded),
        ("e", Ended::Failed),
    ]);
    assert_eq!(names(&plan.next(&done).ready), ["d"]);
}

#[test]
fn failure_skips_dependants_transitively() {
    let plan = graph(&[
        ("a", "once", "[]"),
        ("b", "once", "[\"a\"]"),
        ("c", "once", "[\"b\"]"),
        ("d", "once", "[]"),
    ]);
    let next = plan.next(&outcomes(&[("a", Ended::Failed)]));
    assert_eq!(names(&next.skip), ["b", "c"]);
    assert_eq!(names(&next.ready), ["d"]);

    // A skipped dependency skips too.
    let next = plan.next(&outcomes(&[("a", Ended::Succeeded), ("b", Ended::Skipped)]));
    assert_eq!(names(&next.skip), ["c"]);

    let all = outcomes(&[
        ("a", Ended::Failed),
        ("b", Ended::Skipped),
        ("c", Ended::Skipped),
        ("d", Ended::Succeeded),
    ]);
    assert_eq!(plan.next(&all), Next::default(), "nothing left");
}

#[test]
fn skipping_cascades_against_name_order() {
    // z fails; a depends on m which depends on z: both are skipped in one call.
    let plan = graph(&[
        ("a", "once", "[\"m\"]"),
        ("m", "once", "[\"z\"]"),
        ("z", "once", "[]"),
    ]);
    let next = plan.next(&outcomes(&[("z", Ended::Failed)]));
    assert_eq!(names(&next.skip), ["a", "m"]);
    assert!(next.ready.is_empty());
}

#[test]
fn display_is_a_table() {
    let text = r#"
        [settings.bootstrap-containers.disk-setup]
        source = "/opt/bundles/disk"
        mode = "once"
        essential = true
        timeout = "90s"
        environment = { DISK = "/dev/sdb", TOKEN = "s3cret" }
        [settings.bootstrap-containers.motd]
        source = "busybox:1.36"
        mode = "always"
        depends-on = ["disk-setup", "unused"]
        pull-timeout = "5m"
        [settings.bootstrap-containers.unused]
        source = "/x"
    "#;
    let options = PlanOptions::default();
    let shown = plan(&settings(text), &options).to_string();
    assert_eq!(
        shown,
        "NAME        MODE    ESSENTIAL  SOURCE             DEPENDS-ON  TIMEOUT  PULL           ENVIRONMENT  FILE\n\
         disk-setup  once    yes        /opt/bundles/disk  -           90s      -              DISK,TOKEN   -\n\
         motd        always  no         busybox:1.36       disk-setup  -        always,20s,5m  -            -\n\
         off: unused\n"
    );
    assert_eq!(
        plan(&settings(""), &options).to_string(),
        "no bootstrap containers to run\n"
    );
}
