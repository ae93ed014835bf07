//! The hostile input corpus (integration/hostile/, see its README): every config.json, settings
//! file and image layer there must produce exactly the outcome `expected.toml` names for it and
//! leave nothing behind. Also the inputs the fuzzers kept (fuzz/regressions/), replayed
//! through the fuzz targets' own checks.

#[path = "../fuzz/checks.rs"]
mod checks;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common;
use crate::common::supervisor::{container, Boot, SUPERVISOR};
use crate::common::Fixture;
use serde_json::json;

/// What a case must produce: this text in the error, or "accepted".
const ACCEPTED: &str = "accepted";

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/hostile")
}

/// The expected outcome of every file in one corpus directory; the directory and the list must
/// name the same files, so no case is dropped or left unchecked.
fn cases(kind: &str) -> Vec<(PathBuf, String)> {
    let text = std::fs::read_to_string(corpus().join("expected.toml")).unwrap();
    let expected: BTreeMap<String, BTreeMap<String, String>> = toml::from_str(&text).unwrap();
    let expected = &expected[kind];
    let dir = corpus().join(kind);
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let listed: Vec<String> = expected.keys().cloned().collect();
    assert_eq!(files, listed, "{kind}/ and expected.toml disagree");
    expected
        .iter()
        .map(|(file, outcome)| (dir.join(file), outcome.clone()))
        .collect()
}

/// Checks every case, then reports every mismatch at once.
fn check_all(kind: &str, mut check: impl FnMut(&Path, &str) -> Result<(), String>) -> usize {
    let cases = cases(kind);
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(file, outcome)| {
            check(file, outcome)
                .err()
                .map(|why| format!("{}: {why}", file.file_name().unwrap().to_string_lossy()))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("{kind}: {} hostile inputs, each as expected", cases.len());
    cases.len()
}

/// Whether a command's result matches the expected outcome (`code` is the refusal's exit code).
fn outcome_matches(code: i32, stderr: &str, refused: i32, expected: &str) -> Result<(), String> {
    let ok = if expected == ACCEPTED {
        code == 0
    } else {
        code == refused && stderr.contains(expected)
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "wanted {expected:?}, got exit {code}: {}",
            stderr.trim()
        ))
    }
}

#[test]
fn hostile_configs_get_their_exact_error_and_leave_nothing() {
    let f = Fixture::new("hostile-config");
    let base = f.bundle("base", &["true"]);
    let mut n = 0;
    check_all("configs", |file, expected| {
        n += 1;
        let bundle = f.bundle(&format!("case{n}"), &["true"]);
        let data = std::fs::read(file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy();
        if name.starts_with("raw-") {
            std::fs::write(bundle.join("config.json"), &data).unwrap();
        } else {
            let patch: serde_json::Value = serde_json::from_slice(&data).unwrap();
            f.edit_config(&bundle, |config| checks::merge_patch(config, &patch));
        }
        let id = f.id(&format!("case{n}"));
        let ran = f.rt(&["run", "--bundle", bundle.to_str().unwrap(), &id]);
        outcome_matches(ran.code, &ran.stderr, 1, expected)?;
        let state = f.rt(&["state", &id]);
        if !state.stderr.contains("does not exist") {
            return Err(format!("left state: {}", state.stdout));
        }
        Ok(())
    });

    // Generated, too big for the repo: a config just under the 16 MiB limit (an unknown field
    // padding it) still runs; a config.json that is a symlink to an endless file, or a FIFO
    // nobody writes, is refused instead of hanging the runtime (and its lock) forever.
    f.edit_config(&base, |c| c["x-padding"] = json!("x".repeat(15 << 20)));
    f.rt_ok(&["run", "--bundle", base.to_str().unwrap(), &f.id("padded")]);
    let endless = f.bundle("endless", &["true"]);
    std::fs::remove_file(endless.join("config.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", endless.join("config.json")).unwrap();
    f.rt_err(
        &[
            "run",
            "--bundle",
            endless.to_str().unwrap(),
            &f.id("endless"),
        ],
        "config.json is not a regular file",
    );
    let fifo = f.bundle("fifo", &["true"]);
    std::fs::remove_file(fifo.join("config.json")).unwrap();
    nix::unistd::mkfifo(&fifo.join("config.json"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let started = std::time::Instant::now();
    let mut run = f.command();
    run.args(["run", "--bundle", fifo.to_str().unwrap(), &f.id("fifo")]);
    let out = run_with_timeout(run, std::time::Duration::from_secs(10));
    assert!(
        out.as_ref().is_some_and(|o| o.status.code() == Some(1)
            && String::from_utf8_lossy(&o.stderr).contains("not a regular file")),
        "a FIFO config.json: {:?} after {:?}",
        out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned()),
        started.elapsed()
    );
    f.assert_clean();
}

/// Runs `cmd`, killing it after `limit`: None if it had to be killed.
fn run_with_timeout(mut cmd: Command, limit: std::time::Duration) -> Option<std::process::Output> {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => Some(out.unwrap()),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL);
            let _ = rx.recv();
            None
        }
    }
}

/// Ids the runtime must refuse before touching anything, however they arrive on argv.
#[test]
fn hostile_ids_are_refused_before_anything_is_written() {
    let f = Fixture::new("hostile-id");
    let bundle = f.bundle("b", &["true"]);
    let b = bundle.to_str().unwrap();
    // 128 KiB is the kernel's limit for one argument (MAX_ARG_STRLEN).
    let long = "a".repeat(128 * 1024 - 1);
    let cases: Vec<(&str, String)> = vec![
        ("/", "invalid container id".into()),
        ("..", "invalid container id".into()),
        ("a/../../etc", "invalid container id".into()),
        ("a\\b", "invalid container id".into()),
        ("a b", "invalid container id".into()),
        ("a\nb", "invalid container id".into()),
        ("é", "invalid container id".into()),
        ("", "invalid container id: it is empty".into()),
        (
            &long[..256],
            "it is 256 bytes long, the limit is 255".into(),
        ),
        (&long, format!("it is {} bytes long", long.len())),
    ];
    for (id, wanted) in &cases {
        // A failed exec exits 255, as runc's; every other command 1.
        for (command, code) in [
            (vec!["create", "--bundle", b, "--", id], 1),
            (vec!["run", "--bundle", b, "--", id], 1),
            (vec!["start", "--", id], 1),
            (vec!["delete", "--force", "--", id], 1),
            (vec!["exec", "--", id, "true"], 255),
            (vec!["kill", "--", id, "KILL"], 1),
            (vec!["state", "--", id], 1),
        ] {
            f.rt_fails(&command, code, wanted);
        }
    }
    let names: Vec<_> = std::fs::read_dir(&f.root)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_else(|_| Vec::new());
    assert!(
        names.iter().all(|n| n.to_string_lossy().starts_with('.')),
        "{names:?}"
    );
    f.assert_clean();
    eprintln!("{} hostile ids refused by 7 commands each", cases.len());
}

#[test]
fn hostile_settings_get_their_exact_error() {
    let dir = common::scratch_dir("brt-hostile-settings-");
    check_all("settings", |file, expected| {
        let out = Command::new(SUPERVISOR)
            .arg("plan")
            .arg("--settings")
            .arg(file)
            .output()
            .unwrap();
        outcome_matches(
            out.status.code().unwrap_or(-1),
            &String::from_utf8_lossy(&out.stderr),
            2,
            expected,
        )
    });
    // Huge user-data (24 MiB of base64) is no reason to fail, nor to be slow.
    let huge = dir.path().join("huge.toml");
    let data = "QUFB".repeat(6 << 20);
    std::fs::write(
        &huge,
        format!("[settings.bootstrap-containers.big]\nsource = \"/b\"\nmode = \"once\"\nuser-data = \"{data}\"\n"),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = Command::new(SUPERVISOR)
        .args(["plan", "--settings"])
        .arg(&huge)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn hostile_layers_are_refused_or_unpacked_inside_the_rootfs() {
    check_all("layers", |file, expected| {
        let data = std::fs::read(file).unwrap();
        let result = std::panic::catch_unwind(|| checks::unpack(&data))
            .map_err(|_| "the unpacker wrote outside the rootfs (see the panic)".to_string())?;
        match (result, expected) {
            (Ok(()), ACCEPTED) => Ok(()),
            (Err(err), wanted) if wanted != ACCEPTED && err.contains(wanted) => Ok(()),
            (got, wanted) => Err(format!("wanted {wanted:?}, got {got:?}")),
        }
    });
}

/// A refused layer through the supervisor's `oci-layout:` source: a runtime error naming the
/// refusal, and nothing of the container left.
#[test]
fn a_hostile_image_is_a_runtime_error_and_leaves_nothing() {
    let b = Boot::new("hostile-img");
    let layer = std::fs::read(corpus().join("layers/symlink-parent-absolute.tar")).unwrap();
    let layout = oci_layout(b.f.dir.path(), &layer);
    b.write_settings(&container(
        &b.name("evil"),
        &format!("oci-layout:{}:latest", layout.display()),
        "mode = \"once\"\nessential = true",
    ));
    let ran = b.run();
    assert_eq!(ran.code, 1, "{}", ran.stderr);
    let outcome = b.outcome("evil");
    assert_eq!(outcome["status"], "runtime-error", "{outcome}");
    assert!(
        outcome["error"].as_str().unwrap().contains("is a symlink"),
        "{outcome}"
    );
    assert!(!Path::new("/etc/bootstrap-runc-hostile-escape").exists());
    b.assert_clean();
}

/// An OCI image layout at `dir/layout` with one uncompressed layer, tagged `latest`.
fn oci_layout(dir: &Path, layer: &[u8]) -> PathBuf {
    use sha2::Digest;
    let layout = dir.join("layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = bootstrap_runc::image::digest::hex(sha2::Sha256::digest(bytes).as_slice());
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let (layer_digest, layer_size) = put(layer);
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let (config_digest, config_size) = put(config.to_string().as_bytes());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = put(manifest.to_string().as_bytes());
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest, "size": manifest_size,
                       "annotations": {"org.opencontainers.image.ref.name": "latest"}}],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion": "1.0.0"}"#,
    )
    .unwrap();
    layout
}

/// Every input a fuzzer found and kept, replayed through its target's checks.
#[test]
fn fuzz_regressions_still_pass_their_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut replayed = 0;
    for (target, check) in [
        ("settings", checks::settings as fn(&[u8])),
        ("policy", checks::policy),
        ("unpack", |data: &[u8]| {
            let _ = checks::unpack(data);
        }),
    ] {
        let Ok(entries) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            check(&std::fs::read(&path).unwrap());
            replayed += 1;
        }
    }
    // The corpus itself seeds the fuzzers: run it through the same checks.
    for (kind, check) in [
        ("settings", checks::settings as fn(&[u8])),
        ("configs", checks::policy),
    ] {
        for (file, _) in cases(kind) {
            check(&std::fs::read(file).unwrap());
            replayed += 1;
        }
    }
    eprintln!("{replayed} saved fuzz inputs and corpus files passed the fuzz checks");
}
