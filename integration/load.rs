//! Load, as root: many containers at once on one `--root`, many runs in a row, and the
//! supervisor's file descriptors and memory over a long boot. No state may be corrupted, no
//! resource may grow with the number of containers, nothing may be left behind.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::supervisor::{container, Boot};
use crate::common::Fixture;

const CONCURRENT: usize = 50;
const ROUNDS: usize = 2;
const SEQUENTIAL: usize = 200;

/// `list --format json` as (id, status) pairs.
fn listed(f: &Fixture) -> BTreeSet<(String, String)> {
    let out = f.rt_ok(&["list", "--format", "json"]).stdout;
    let states: Vec<serde_json::Value> = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("list printed invalid JSON ({e}): {out}"));
    states
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Runs `each(id)` for every id at once, one thread each.
fn all_at_once(ids: &[String], each: impl Fn(&str) + Sync) {
    std::thread::scope(|s| {
        for id in ids {
            let each = &each;
            s.spawn(move || each(id));
        }
    });
}

#[test]
fn fifty_containers_at_once_on_one_root() {
    let f = Fixture::new("load50");
    let bundle = f.bundle("c", &["sleep", "100"]);
    let bundle = bundle.to_str().unwrap();
    for round in 0..ROUNDS {
        let ids: Vec<String> = (0..CONCURRENT)
            .map(|i| f.id(&format!("r{round}-{i}")))
            .collect();
        let started = Instant::now();
        all_at_once(&ids, |id| {
            f.rt_ok(&["create", "--bundle", bundle, id]);
        });
        let want = |status: &str| -> BTreeSet<(String, String)> {
            ids.iter().map(|id| (id.clone(), status.into())).collect()
        };
        assert_eq!(listed(&f), want("created"), "round {round}");
        all_at_once(&ids, |id| {
            f.rt_ok(&["start", id]);
        });
        assert_eq!(listed(&f), want("running"), "round {round}");
        // Every state is whole and names a live process of its own.
        let pids: BTreeSet<i64> = ids
            .iter()
            .map(|id| {
                let pid = f.state(id)["pid"].as_i64().unwrap();
                assert!(common::alive(pid as i32), "{id}: pid {pid} is not alive");
                pid
            })
            .collect();
        assert_eq!(pids.len(), CONCURRENT, "two containers share a pid");
        all_at_once(&ids, |id| {
            f.rt_ok(&["delete", "--force", id]);
        });
        assert!(listed(&f).is_empty(), "round {round}");
        f.assert_clean();
        eprintln!(
            "round {round}: {CONCURRENT} containers created, started and deleted concurrently in {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn two_hundred_runs_in_a_row() {
    let f = Fixture::new("load200");
    let ok = f.bundle("ok", &["true"]);
    let fails = f.bundle("fails", &["sh", "-c", "exit 7"]);
    let id = f.id("seq");
    let started = Instant::now();
    for i in 0..SEQUENTIAL {
        // The same id every time: each run must leave it free for the next.
        let (bundle, code) = if i % 10 == 9 { (&fails, 7) } else { (&ok, 0) };
        let ran = f.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
        assert_eq!(ran.code, code, "run {i}: {}", ran.stderr);
    }
    eprintln!("{SEQUENTIAL} sequential runs in {:?}", started.elapsed());
    f.assert_clean();
    // The state root holds only our own entries and the id's lock file, not one per run.
    let entries: Vec<String> = std::fs::read_dir(&f.root)
        .unwrap()
        .chain(std::fs::read_dir(f.root.join(".bootstrap")).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(entries.len() <= 8, "the state root grows: {entries:?}");
}

/// The supervisor's open descriptors and resident memory, sampled.
#[derive(Clone, Copy, Debug)]
struct Sample {
    fds: usize,
    rss_kib: u64,
}

fn sample(pid: u32) -> Option<Sample> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(Sample { fds, rss_kib })
}

/// A boot of 60 containers run one after another (a depends-on chain), each checking that it
/// inherited no descriptor of the supervisor's: the supervisor's descriptors and memory must
/// not grow from the first containers to the last.
#[test]
fn supervisor_descriptors_and_memory_stay_flat_over_a_long_boot() {
    const CHAIN: usize = 60;
    let b = Boot::new("loadsup");
    let fds_seen = b.f.mount_area.join("fds");
    std::fs::create_dir(&fds_seen).unwrap();
    let check = b.bundle(
        "fds",
        "ls /proc/self/fd > $(mktemp /.bottlerocket/rootfs/mnt/fds/XXXXXX)",
    );
    let settings: String = (0..CHAIN)
        .map(|i| {
            let depends = if i == 0 {
                String::new()
            } else {
                format!("depends-on = [{:?}]", b.name(&format!("c{}", i - 1)))
            };
            container(
                &b.name(&format!("c{i}")),
                &check,
                &format!("mode = \"always\"\nessential = true\n{depends}"),
            )
        })
        .collect();
    b.write_settings(&settings);
    let mut child = b
        .command()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the boot did not finish");
        if let Some(s) = sample(child.id()) {
            samples.push(s);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(status.success(), "the boot failed: {}", b.report());
    assert!(samples.len() >= 20, "too few samples: {}", samples.len());
    let quarter = samples.len() / 4;
    let (early, late) = (&samples[..quarter], &samples[samples.len() - quarter..]);
    let max = |s: &[Sample], f: fn(&Sample) -> u64| s.iter().map(f).max().unwrap();
    let (early_fds, late_fds) = (max(early, |s| s.fds as u64), max(late, |s| s.fds as u64));
    let (early_rss, late_rss) = (max(early, |s| s.rss_kib), max(late, |s| s.rss_kib));
    eprintln!(
        "supervisor over {CHAIN} containers ({} samples): fds early {early_fds} late {late_fds}, RSS early {early_rss} KiB late {late_rss} KiB",
        samples.len()
    );
    // One container at a time: a leak of one descriptor per container would show 45 more.
    assert!(
        late_fds <= early_fds + 2,
        "descriptors grow: {early_fds} -> {late_fds}"
    );
    assert!(
        late_rss <= early_rss + 2048,
        "memory grows: {early_rss} KiB -> {late_rss} KiB"
    );
    // Each container saw stdio and ls's own directory descriptor, nothing of the supervisor's.
    let seen: Vec<_> = std::fs::read_dir(&fds_seen).unwrap().flatten().collect();
    assert_eq!(seen.len(), CHAIN);
    for entry in seen {
        let fds = std::fs::read_to_string(entry.path()).unwrap();
        let fds: Vec<&str> = fds.split_whitespace().collect();
        assert_eq!(
            fds,
            ["0", "1", "2", "3"],
            "{:?} inherited descriptors",
            entry.file_name()
        );
    }
    b.assert_clean();
}
