//! Fault injection, as root: bootstrap-runc SIGKILLed at syscall boundaries of `create`,
//! `start` and `delete` (the steps inside libcontainer have no other hook). After every kill,
//! `delete --force` and a fresh create of the same id must succeed, and the host must hold no
//! leftover state, cgroup, mount or process.
//!
//! The default run sweeps a sample of kill points per syscall class (a couple of minutes);
//! `FAULT_SWEEP=full` sweeps every invocation up to the counts below.

use crate::common;
use crate::common::supervisor::{container, Boot};
use crate::common::{kill_at_syscall, Fixture};

/// A syscall class and the highest invocation (per process) worth killing at, measured with
/// `strace -f -c` on this runtime: beyond it the command makes no such call.
struct Class {
    syscalls: &'static str,
    last: u32,
}

const fn class(syscalls: &'static str, last: u32) -> Class {
    Class { syscalls, last }
}

/// `create`: state dirs and derived config (mkdir, openat, write, rename), the cgroup (mkdir,
/// write), the container processes (clone3, unshare, its mounts, pivot_root, the sync socket),
/// our host mounts (open_tree, mount_setattr, move_mount, setns) and the sealed re-exec.
const CREATE: &[Class] = &[
    class("execve,execveat", 2),
    class("mkdir,mkdirat", 12),
    class("openat", 74),
    class("openat2", 61),
    class("write", 23),
    class("rename", 2),
    class("clone3", 1),
    class("unshare", 4),
    class("mount", 16),
    class("fsopen,fsconfig,fsmount", 30),
    class("open_tree", 2),
    class("mount_setattr", 8),
    class("move_mount", 10),
    class("setns", 2),
    class("pivot_root", 1),
    class("symlink,mknodat", 6),
    class("connect,sendmsg,sendto,recvmsg", 5),
    class("wait4", 1),
];

/// `start`: state load, the notify socket to the init.
const START: &[Class] = &[
    class("openat", 15),
    class("mkdir", 4),
    class("socket,connect,sendto,write", 3),
    class("poll", 1),
];

/// `delete --force` of a running container: kill, cgroup and state removal.
const DELETE: &[Class] = &[
    class("kill", 1),
    class("rmdir", 8),
    class("unlinkat", 7),
    class("openat", 113),
    class("openat2", 80),
    class("mkdir", 6),
    class("write", 3),
];

/// Invocation numbers to kill at: all in a full sweep, else about `per_class` spread evenly
/// (always the first and the last, where set-up and commit steps sit).
fn points(last: u32, per_class: u32) -> Vec<u32> {
    if std::env::var("FAULT_SWEEP").as_deref() == Ok("full") || last <= per_class {
        return (1..=last).collect();
    }
    let step = last.div_ceil(per_class);
    let mut points: Vec<u32> = (1..=last).step_by(step as usize).collect();
    if points.last() != Some(&last) {
        points.push(last);
    }
    points
}

/// After a kill: the id is removable and reusable, and nothing is left on the host.
fn recovers(f: &Fixture, bundle: &str, id: &str, what: &str) {
    let deleted = f.rt(&["delete", "--force", id]);
    assert_eq!(
        deleted.code, 0,
        "{what}: delete --force: {}",
        deleted.stderr
    );
    for args in [
        vec!["create", "--bundle", bundle, id],
        vec!["delete", "--force", id],
    ] {
        let ran = f.rt(&args);
        assert_eq!(ran.code, 0, "{what}: then {args:?}: {}", ran.stderr);
    }
    f.assert_clean();
    // Runtime processes carry the fixture's --root on their command line until they exec the
    // container's program; an orphaned intermediate or init would still show it. One that lost
    // its parent ends on its own when its sync socket closes: give it a moment.
    let marker = f.root.display().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let left = common::processes_mentioning(&marker);
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: runtime processes left: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

struct Sweep {
    points: usize,
    kills: usize,
}

/// Kills the runtime running `args(bundle, id)` at each point of `classes`, after
/// `before(bundle, id)` set the container up, and checks recovery.
fn sweep(
    f: &Fixture,
    name: &str,
    classes: &[Class],
    per_class: u32,
    before: impl Fn(&str, &str),
    args: impl Fn(&str, &str) -> Vec<String>,
) -> Sweep {
    let bundle = f.bundle(name, &["sleep", "100"]);
    let bundle = bundle.to_str().unwrap();
    let id = f.id(name);
    let mut total = Sweep {
        points: 0,
        kills: 0,
    };
    for class in classes {
        for when in points(class.last, per_class) {
            let what = format!("{name}: SIGKILL at {} #{when}", class.syscalls);
            before(bundle, &id);
            let mut cmd = f.command();
            cmd.args(args(bundle, &id));
            let traced = kill_at_syscall(&cmd, class.syscalls, when, true);
            total.points += 1;
            total.kills += usize::from(traced.killed > 0);
            recovers(f, bundle, &id, &what);
        }
    }
    eprintln!(
        "{name}: {} kill points, {} of them killed a runtime process, all recovered",
        total.points, total.kills
    );
    total
}

/// A sweep that rarely kills anything proves nothing: the classes above must stay accurate.
fn assert_mostly_killed(sweep: &Sweep, name: &str) {
    assert!(
        sweep.kills * 10 >= sweep.points * 7,
        "{name}: only {} of {} kill points killed anything; re-measure the syscall counts",
        sweep.kills,
        sweep.points
    );
}

#[test]
fn sigkill_anywhere_in_create_is_recovered() {
    let f = Fixture::new("fault-create");
    let sweep = sweep(
        &f,
        "create",
        CREATE,
        6,
        |_, _| {},
        |bundle, id| strings(&["create", "--bundle", bundle, id]),
    );
    assert_mostly_killed(&sweep, "create");
}

#[test]
fn sigkill_anywhere_in_start_and_delete_is_recovered() {
    let f = Fixture::new("fault-life");
    let created = |bundle: &str, id: &str| {
        f.rt_ok(&["create", "--bundle", bundle, id]);
    };
    let start = sweep(&f, "start", START, 8, created, |_, id| {
        strings(&["start", id])
    });
    assert_mostly_killed(&start, "start");
    let running = |bundle: &str, id: &str| {
        f.rt_ok(&["create", "--bundle", bundle, id]);
        f.rt_ok(&["start", id]);
    };
    let delete = sweep(&f, "delete", DELETE, 6, running, |_, id| {
        strings(&["delete", "--force", id])
    });
    assert_mostly_killed(&delete, "delete");
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// The supervisor SIGKILLed (with its process group, as systemd stops the unit) at each file
/// replacement of its main thread, until a run has none left to kill it at: the "started"
/// markers, each once → off write of the settings file with the "finished" marker and the
/// boot record's progress after it, and the reports. The settings file is whole every time, and
/// the next run completes the boot: every container succeeded and turned off.
/// (supervisor.rs kills at random moments; this aims at each write.)
#[test]
fn supervisor_killed_at_each_write_completes_the_boot_on_the_next_run() {
    const CONTAINERS: usize = 4;
    let b = Boot::new("fault-sup");
    let names: Vec<String> = (0..CONTAINERS).map(|i| b.name(&format!("c{i}"))).collect();
    let counting = b.bundle("count", "echo run >> /.bottlerocket/rootfs/mnt/runs");
    let settings: String = names
        .iter()
        .map(|n| container(n, &counting, "mode = \"once\"\nessential = true"))
        .collect();
    let mut settings_kills = 0;
    let mut kills = 0;
    for when in 1.. {
        let what = format!("SIGKILL at the supervisor's rename #{when}");
        b.write_settings(&settings);
        let _ = std::fs::remove_dir_all(&b.run_dir);
        let traced = kill_at_syscall(&b.command(), "rename", when, false);
        if !traced.main_exit.contains("killed by SIGKILL") {
            // Past its last rename: at least a started marker, a settings write and a finished
            // marker per container came before.
            assert!(
                when > 3 * CONTAINERS as u32,
                "{what}: the supervisor was not killed ({}): {}\n{}",
                traced.main_exit,
                traced.stderr,
                traced.trace
            );
            b.assert_clean();
            break;
        }
        kills += 1;
        let last_rename = traced.trace.lines().rfind(|l| l.contains("rename("));
        settings_kills += usize::from(last_rename.is_some_and(|l| l.contains("settings.toml\"")));
        let text = std::fs::read_to_string(&b.settings).unwrap();
        let parsed = bootstrap_runc::supervisor::settings::parse(
            &text,
            bootstrap_runc::supervisor::settings::Format::Toml,
        )
        .unwrap_or_else(|e| panic!("{what}: torn settings: {e:#}\n{text}"));
        assert_eq!(parsed.containers.len(), CONTAINERS, "{what}");
        let pending: Vec<&String> = parsed
            .containers
            .iter()
            .filter(|(_, c)| c.mode == bootstrap_runc::supervisor::settings::Mode::Once)
            .map(|(name, _)| name)
            .collect();

        let ran = b.run();
        assert_eq!(ran.code, 0, "{what}: the next run: {}", ran.stderr);
        let text = std::fs::read_to_string(&b.settings).unwrap();
        assert_eq!(
            text.matches("mode = \"off\"").count(),
            CONTAINERS,
            "{what}: not every container was turned off:\n{text}"
        );
        let report = b.report();
        for name in &pending {
            let outcome = report["containers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == name.as_str())
                .unwrap_or_else(|| panic!("{what}: {name} not in the report"));
            assert_eq!(outcome["status"], "succeeded", "{what}");
        }
        b.assert_clean();
    }
    // Where each settings write falls among the renames shifts with how the containers' ends
    // interleave with their starts (machine load), so a sweep may step over some of them; it
    // must hit settings writes at all.
    assert!(
        settings_kills > 0,
        "no kill hit a settings write in {kills} kills"
    );
    eprintln!("supervisor: {kills} kills at its writes ({settings_kills} at a settings write), all recovered");
}
