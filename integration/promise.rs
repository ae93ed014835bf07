//! The promise for every field: no config reaches a host cgroup. Each case is run against a
//! real "victim" cgroup holding a real host process; the runtime must refuse the container and
//! leave the victim, its process and its cgroup as they were, however the config names it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use crate::common::Fixture;
use serde_json::json;

/// A host service's cgroup in every mounted v1 hierarchy (or the v2 one), holding a `sleep`.
struct Victim {
    name: String,
    dirs: Vec<PathBuf>,
    sleep: Child,
}

impl Victim {
    fn new(name: &str) -> Victim {
        let mut victim = Victim {
            name: format!("{name}-{}", std::process::id()),
            dirs: Vec::new(),
            sleep: Command::new("sleep").arg("1000").spawn().unwrap(),
        };
        for hierarchy in hierarchies() {
            let dir = make_cgroup(&hierarchy, &victim.name);
            victim.dirs.push(dir.clone());
            std::fs::write(dir.join("cgroup.procs"), victim.sleep.id().to_string()).unwrap();
        }
        assert!(!victim.dirs.is_empty(), "no cgroup hierarchy mounted");
        victim
    }

    /// The process and every cgroup are where the host put them.
    fn assert_untouched(&mut self, case: &str) {
        assert!(
            self.sleep.try_wait().unwrap().is_none(),
            "{case}: the host's process was killed"
        );
        for dir in &self.dirs {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_else(|e| panic!("{case}: {} is gone: {e}", dir.display()));
            assert_eq!(
                procs.trim(),
                self.sleep.id().to_string(),
                "{case}: {} changed",
                dir.display()
            );
        }
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.sleep.kill();
        let _ = self.sleep.wait();
        for dir in &self.dirs {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Every mounted cgroup hierarchy (v1 controllers, named ones, cgroup2).
fn hierarchies() -> Vec<PathBuf> {
    crate::common::mountinfo("self")
        .lines()
        .filter_map(|line| {
            let point = line.split(' ').nth(4)?;
            let fs_type = line.split(" - ").nth(1)?.split(' ').next()?;
            matches!(fs_type, "cgroup" | "cgroup2").then(|| PathBuf::from(point))
        })
        .collect()
}

/// Makes the cgroup `relative` under `hierarchy`, as kubelet or systemd would: each new
/// cpuset cgroup gets its parent's cpus and mems (an empty cpuset takes no process).
fn make_cgroup(hierarchy: &Path, relative: &str) -> PathBuf {
    let mut dir = hierarchy.to_path_buf();
    for part in relative.split('/') {
        let parent = dir.clone();
        dir.push(part);
        std::fs::create_dir(&dir).unwrap();
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(value) = std::fs::read(parent.join(file)) {
                std::fs::write(dir.join(file), value).unwrap();
            }
        }
    }
    dir
}

#[test]
fn no_cgroups_path_reaches_a_host_cgroup() {
    let f = Fixture::new("promise-cg");
    let mut victim = Victim::new("victim-svc");
    let depth = std::env::current_dir().unwrap().components().count();
    let cases = [
        (format!("/{}", victim.name), "already exists"),
        // Relative: from each hierarchy's root, so this names the victim too.
        (victim.name.clone(), "already exists"),
        (format!("/a/../{}", victim.name), "must not contain"),
        (
            format!("{}{}", "../".repeat(depth), victim.name),
            "must not contain",
        ),
        ("/".to_string(), "root cgroup"),
        (String::new(), "it is empty"),
    ];
    for (i, (path, wanted)) in cases.iter().enumerate() {
        let bundle = f.bundle(&format!("b{i}"), &["true"]);
        f.edit_config(&bundle, |c| c["linux"]["cgroupsPath"] = json!(path));
        let id = f.id(&format!("c{i}"));
        f.rt_err(
            &["create", "--bundle", bundle.to_str().unwrap(), &id],
            wanted,
        );
        // What a caller does after a failed create: nothing may reach the victim either.
        f.rt_ok(&["delete", "--force", &id]);
        victim.assert_untouched(&format!("cgroupsPath {path:?}"));
    }
    f.assert_clean();
}

#[test]
fn cri_cgroup_paths_keep_working() {
    let f = Fixture::new("promise-cri");
    let parents = format!("kubepods-{}/besteffort/pod1234", std::process::id());
    let roots = hierarchies();
    let _cleanup = RemoveParents(roots.iter().map(|h| h.join(&parents)).collect());
    for root in &roots {
        make_cgroup(root, &parents);
    }
    let bundle = f.bundle("cri", &["true"]);
    let id = f.id("cri");
    f.edit_config(&bundle, |c| {
        c["linux"]["cgroupsPath"] = json!(format!("/{parents}/{id}"))
    });
    f.rt_ok(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
    for root in &roots {
        assert!(root.join(&parents).exists(), "the parents stay");
        assert!(
            !root.join(&parents).join(&id).exists(),
            "the leaf is removed"
        );
    }
    // The systemd form with --systemd-cgroup (a literal leaf on v1, a scope on v2).
    let id = f.id("cri-systemd");
    let bundle = f.bundle("cri-systemd", &["true"]);
    f.edit_config(&bundle, |c| {
        c["linux"]["cgroupsPath"] = json!(format!(
            "kubepods-besteffort-pod1234.slice:cri-containerd:{id}"
        ))
    });
    f.rt_ok(&[
        "--systemd-cgroup",
        "run",
        "--bundle",
        bundle.to_str().unwrap(),
        &id,
    ]);
    f.assert_clean();
}

/// Removes test-made parent cgroups, deepest first, even when the test fails.
struct RemoveParents(Vec<PathBuf>);

impl Drop for RemoveParents {
    fn drop(&mut self) {
        for dir in &self.0 {
            for ancestor in dir.ancestors().take(3) {
                let _ = std::fs::remove_dir(ancestor);
            }
        }
    }
}

#[test]
fn resource_files_cannot_name_host_files() {
    let f = Fixture::new("promise-res");
    let target = f.dir.path().join("host-file");
    std::fs::write(&target, "untouched").unwrap();
    let bundle = f.bundle("unified", &["true"]);
    f.edit_config(&bundle, |c| {
        c["linux"]["resources"] = json!({"unified": {target.to_str().unwrap(): "written"}})
    });
    let id = f.id("unified");
    f.rt_err(
        &["run", "--bundle", bundle.to_str().unwrap(), &id],
        "linux.resources.unified",
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
    f.assert_clean();
}

/// The bind-source race: the policy judges a source under the bundle (so writable), and the
/// bundle's writer swaps it for a symlink to a host directory before the init mounts it.
/// strace delays every `open_tree` (libcontainer's bind mount) by a second, so the swap always
/// lands after the judgement and before the mount. libcontainer must still mount what was
/// judged: the host directory gets nothing, and the container writes into the judged
/// directory (where the runtime used to refuse the container once mounted).
#[test]
fn a_bind_source_swapped_after_the_judgement_changes_nothing() {
    let f = Fixture::new("promise-swap");
    let host_dir = f.dir.path().join("host-secret");
    std::fs::create_dir(&host_dir).unwrap();
    let bundle = f.bundle("swap", &["sh", "-c", "touch /data/written-from-inside"]);
    let source = bundle.join("data");
    std::fs::create_dir(&source).unwrap();
    f.edit_config(&bundle, |c| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/data", "type": "bind", "source": "data", "options": ["rbind", "rw"]
        }))
    });
    let id = f.id("swap");
    let derived = f.root.join(".bootstrap").join(&id).join("config.json");
    let mut strace = Command::new("strace");
    strace
        .args(["-f", "-q", "-o", "/dev/null", "-etrace=open_tree"])
        .arg("-einject=open_tree:delay_enter=1000000")
        .arg("--")
        .arg(f.command().get_program())
        .args(f.command().get_args())
        .args(["run", "--bundle", bundle.to_str().unwrap(), &id])
        .env("BOOTSTRAP_RUNC_POLICY", &f.policy_file)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = strace
        .spawn()
        .expect("strace (hack/install-deps.sh installs it)");
    // The derived config is written once the policy has judged the sources.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !derived.exists() {
        assert!(std::time::Instant::now() < deadline, "create never judged");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let judged = bundle.join("data.judged");
    std::fs::rename(&source, &judged).unwrap();
    std::os::unix::fs::symlink(&host_dir, &source).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let host_has: Vec<_> = std::fs::read_dir(&host_dir).unwrap().collect();
    assert!(
        host_has.is_empty(),
        "the swapped host directory got {host_has:?}: {stderr}"
    );
    assert!(
        out.status.success() && judged.join("written-from-inside").exists(),
        "the judged directory was not the one mounted: {stderr}"
    );
    f.assert_clean();
}
