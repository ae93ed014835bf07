//! Image configs started as containerd and CRI start them, each case an image built here with
//! umoci and run by the supervisor through the real bootstrap-runc, as root: `Entrypoint [""]`,
//! `User` in its six forms resolved inside the image (never through a symlink to the host),
//! a missing `WorkingDir`, `Env` with the proxies, and `StopSignal` on a timeout and a stop.
//! Each container prints what it got (args, ids, groups, cwd, env) to its log.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use crate::common;
use crate::common::observed::{Observed, REPORT};
use crate::common::supervisor::{container, Boot};

fn observed(b: &Boot, short: &str) -> Observed {
    Observed::parse(&b.container_log(short), short)
}

fn source(layout: &Path, tag: &str) -> String {
    format!("oci-layout:{}:{tag}", layout.display())
}

/// Runs containers `(short name, tag)` of `layout` in one boot; returns the supervisor's output.
fn run_tags(b: &Boot, layout: &Path, tags: &[(&str, &str)]) -> String {
    let sources: Vec<(&str, String)> = tags
        .iter()
        .map(|(short, tag)| (*short, source(layout, tag)))
        .collect();
    let sources: Vec<(&str, &str)> = sources.iter().map(|(s, t)| (*s, t.as_str())).collect();
    b.write_settings(&b.always(&sources));
    let ran = b.run();
    format!("{}{}", ran.stdout, ran.stderr)
}

fn assert_succeeded(b: &Boot, short: &str, output: &str) {
    assert_eq!(b.outcome(short)["status"], "succeeded", "{short}: {output}");
}

/// The error of a container that must not have run.
fn runtime_error(b: &Boot, short: &str) -> String {
    let outcome = b.outcome(short);
    assert_eq!(outcome["status"], "runtime-error", "{short}: {outcome}");
    outcome["error"].as_str().unwrap().to_string()
}

/// A busybox image running [`REPORT`] with `rootfs` edited and `config` on top.
fn report_image(b: &Boot, edit: impl FnOnce(&Path), config: &[(&str, &str)]) -> PathBuf {
    let mut all = vec![("--config.cmd", "sh"), ("--config.cmd", "-c")];
    all.push(("--config.cmd", REPORT));
    all.extend_from_slice(config);
    common::image_layout(b.f.dir.path(), edit, &all)
}

#[test]
fn an_entrypoint_of_one_empty_string_is_none_and_an_empty_process_is_named() {
    let b = Boot::new("img-args");
    let layout = report_image(&b, |_| {}, &[]);
    common::image_tag(&layout, "cleared", &[("--config.entrypoint", "")]);
    common::image_tag(
        &layout,
        "nothing",
        &[("--config.entrypoint", ""), ("--clear", "config.cmd")],
    );
    common::image_tag(
        &layout,
        "bad-signal",
        &[("--config.stopsignal", "SIGBOGUS")],
    );
    let output = run_tags(
        &b,
        &layout,
        &[
            ("cleared", "cleared"),
            ("nothing", "nothing"),
            ("bad-signal", "bad-signal"),
        ],
    );
    assert_succeeded(&b, "cleared", &output);
    assert_eq!(observed(&b, "cleared").args, format!("sh -c {REPORT}"));
    let error = runtime_error(&b, "nothing");
    assert!(
        error.starts_with(&format!(
            "image {}: no process to run: the image has no Entrypoint or Cmd",
            source(&layout, "nothing")
        )),
        "{error}"
    );
    let error = runtime_error(&b, "bad-signal");
    assert!(
        error.contains(&source(&layout, "bad-signal")) && error.contains("StopSignal \"SIGBOGUS\""),
        "{error}"
    );
    b.assert_clean();
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
    alice:x:1000:1000::/home/alice:/bin/sh\n";
const GROUP: &str = "root:x:0:\n\
    wheel:x:10:alice,root\n\
    alice:x:1000:alice\n\
    staff:x:50:alice\n\
    nogroup:x:65534:\n";

#[test]
fn users_resolve_in_the_images_own_passwd_and_group() {
    let b = Boot::new("img-user");
    let layout = report_image(
        &b,
        |rootfs| {
            std::fs::write(rootfs.join("etc/passwd"), PASSWD).unwrap();
            std::fs::write(rootfs.join("etc/group"), GROUP).unwrap();
        },
        &[],
    );
    // (tag and User, uid, primary gid, groups as the kernel sorts them)
    let cases: [(&str, u32, u32, &[u32]); 8] = [
        ("", 0, 0, &[0, 10]),
        ("nobody", 65534, 65534, &[65534]),
        ("1000", 1000, 1000, &[10, 50, 1000]),
        ("4242", 4242, 0, &[0]),
        ("alice:wheel", 1000, 10, &[10, 50]),
        ("1000:7", 1000, 7, &[7, 10, 50]),
        ("alice:7", 1000, 7, &[7, 10, 50]),
        ("4242:staff", 4242, 50, &[50]),
    ];
    let mut tags = Vec::new();
    for (user, ..) in &cases {
        let tag = if user.is_empty() {
            "root".to_string()
        } else {
            format!("u-{}", user.replace(':', "-"))
        };
        common::image_tag(&layout, &tag, &[("--config.user", user)]);
        tags.push(tag);
    }
    common::image_tag(&layout, "mallory", &[("--config.user", "mallory")]);
    common::image_tag(&layout, "nogroup", &[("--config.user", "alice:nope")]);
    let mut runs: Vec<(&str, &str)> = tags.iter().map(|t| (t.as_str(), t.as_str())).collect();
    runs.extend([("mallory", "mallory"), ("nogroup", "nogroup")]);
    let output = run_tags(&b, &layout, &runs);
    for ((user, uid, gid, groups), tag) in cases.iter().zip(&tags) {
        assert_succeeded(&b, tag, &output);
        let seen = observed(&b, tag);
        assert_eq!(
            (seen.uid, seen.gid, seen.groups.as_slice()),
            (*uid, *gid, *groups),
            "User {user:?}"
        );
    }
    let error = runtime_error(&b, "mallory");
    assert!(
        error.contains(&source(&layout, "mallory"))
            && error.contains("user \"mallory\" is not in the image's /etc/passwd"),
        "{error}"
    );
    let error = runtime_error(&b, "nogroup");
    assert!(
        error.contains("group \"nope\" is not in the image's /etc/group"),
        "{error}"
    );
    b.assert_clean();
}

#[test]
fn account_files_symlinked_out_of_the_image_never_read_the_host() {
    let b = Boot::new("img-link");
    // Host files that a lookup following the symlinks on the host would find.
    let host_passwd = b.f.dir.path().join("host-passwd");
    let host_group = b.f.dir.path().join("host-group");
    std::fs::write(&host_passwd, "hostonly:x:4321:4321::/:/bin/sh\n").unwrap();
    std::fs::write(&host_group, "hostgroup:x:4322:hostonly\n").unwrap();
    let climbing = format!("../../../../../../../..{}", host_group.display());
    let layout = report_image(
        &b,
        |rootfs| {
            for file in ["etc/passwd", "etc/group"] {
                std::fs::remove_file(rootfs.join(file)).unwrap();
            }
            std::os::unix::fs::symlink(&host_passwd, rootfs.join("etc/passwd")).unwrap();
            std::os::unix::fs::symlink(&climbing, rootfs.join("etc/group")).unwrap();
        },
        &[],
    );
    common::image_tag(&layout, "by-name", &[("--config.user", "hostonly")]);
    common::image_tag(&layout, "by-uid", &[("--config.user", "4321")]);
    common::image_tag(&layout, "by-group", &[("--config.user", "4321:hostgroup")]);
    let output = run_tags(
        &b,
        &layout,
        &[
            ("by-name", "by-name"),
            ("by-uid", "by-uid"),
            ("by-group", "by-group"),
        ],
    );
    let error = runtime_error(&b, "by-name");
    assert!(
        error.contains("no /etc/passwd in the image to look up user \"hostonly\""),
        "{error}"
    );
    let error = runtime_error(&b, "by-group");
    assert!(
        error.contains("no /etc/group in the image to look up group \"hostgroup\""),
        "{error}"
    );
    // The uid has no entry in the image: gid 0, not the host file's 4321.
    assert_succeeded(&b, "by-uid", &output);
    let seen = observed(&b, "by-uid");
    assert_eq!((seen.uid, seen.gid, seen.groups), (4321, 0, vec![0]));
    b.assert_clean();
}

#[test]
fn a_missing_working_dir_is_created_and_a_bundles_is_named() {
    let b = Boot::new("img-cwd");
    let script = format!("{REPORT}; stat -c 'mode: %n %u:%g %a' /work /work/here");
    let layout = common::image_layout(
        b.f.dir.path(),
        |_| {},
        &[
            ("--config.cmd", "sh"),
            ("--config.cmd", "-c"),
            ("--config.cmd", &script),
            ("--config.workingdir", "/work/here"),
        ],
    );
    common::image_tag(&layout, "a-file", &[("--config.workingdir", "/etc/passwd")]);
    let bundle = b.f.bundle("nocwd", &["true"]);
    b.f.edit_config(&bundle, |c| c["process"]["cwd"] = "/no/such/dir".into());
    b.write_settings(&b.always(&[
        ("created", &source(&layout, "latest")),
        ("a-file", &source(&layout, "a-file")),
        ("nocwd", bundle.to_str().unwrap()),
    ]));
    // A umask that would leave new directories 0700: their mode must not depend on it.
    let mut command = b.command();
    // SAFETY: umask is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
            Ok(())
        });
    }
    let ran = command.output().unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
    assert_succeeded(&b, "created", &output);
    let seen = observed(&b, "created");
    assert_eq!(seen.cwd, "/work/here");
    let log = b.container_log("created");
    for dir in ["/work", "/work/here"] {
        assert!(
            log.contains(&format!("mode: {dir} 0:0 755")),
            "{dir} is root's and 0755: {log}"
        );
    }
    let error = runtime_error(&b, "a-file");
    assert!(
        error.contains("creating its WorkingDir /etc/passwd")
            && error.contains("is not a directory"),
        "{error}"
    );
    let error = runtime_error(&b, "nocwd");
    assert!(
        error.contains(&format!(
            "bundle {}: process.cwd /no/such/dir does not exist in its root filesystem",
            bundle.display()
        )),
        "{error}"
    );
    assert!(!error.contains("unix syscall"), "{error}");
    b.assert_clean();
}

#[test]
fn env_is_the_images_then_the_proxies_later_values_winning() {
    let b = Boot::new("img-env");
    let layout = report_image(
        &b,
        |_| {},
        &[
            ("--config.env", "PATH=/bin:/usr/bin"),
            ("--config.env", "A=1"),
            ("--config.env", "HTTPS_PROXY=http://image:1"),
        ],
    );
    common::image_tag(
        &layout,
        "no-path",
        &[("--clear", "config.env"), ("--config.env", "A=2")],
    );
    let settings = b.always(&[
        ("path", &source(&layout, "latest")),
        ("no-path", &source(&layout, "no-path")),
    ]);
    b.write_settings(&settings);
    let ran = b
        .command()
        .env("HTTPS_PROXY", "http://host:3128")
        .env("no_proxy", ".local")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("NO_PROXY")
        .output()
        .unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
    for short in ["path", "no-path"] {
        assert_succeeded(&b, short, &output);
    }
    let named = |env: &[String], name: &str| -> Vec<String> {
        env.iter()
            .filter(|e| e.split('=').next() == Some(name))
            .cloned()
            .collect()
    };
    // The spec holds each name once (the runtime would hide a duplicate: it keeps the last).
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            b.state_dir
                .join("containers")
                .join(b.name("path"))
                .join("config.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let spec_env: Vec<String> = serde_json::from_value(config["process"]["env"].clone()).unwrap();
    assert_eq!(
        named(&spec_env, "HTTPS_PROXY"),
        ["HTTPS_PROXY=http://host:3128"],
        "{spec_env:?}"
    );
    let env = observed(&b, "path").env;
    assert_eq!(named(&env, "PATH"), ["PATH=/bin:/usr/bin"]);
    assert_eq!(named(&env, "A"), ["A=1"]);
    assert_eq!(
        named(&env, "HTTPS_PROXY"),
        ["HTTPS_PROXY=http://host:3128"],
        "the supervisor's proxy replaces the image's"
    );
    assert_eq!(named(&env, "no_proxy"), ["no_proxy=.local"]);
    let env = observed(&b, "no-path").env;
    assert_eq!(
        named(&env, "PATH"),
        ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    );
    assert_eq!(named(&env, "A"), ["A=2"]);
    b.assert_clean();
}

/// An image that says which signal stopped it, with `StopSignal` SIGUSR1 (tag `usr1`) or
/// none (tag `latest`).
fn stop_image(b: &Boot) -> PathBuf {
    let script =
        "trap 'echo stopped by USR1; exit 0' USR1; trap 'echo stopped by TERM; exit 0' TERM; \
        touch /.bottlerocket/rootfs/mnt/up; while :; do sleep 0.1; done";
    let layout = common::image_layout(
        b.f.dir.path(),
        |_| {},
        &[
            ("--config.entrypoint", "sh"),
            ("--config.entrypoint", "-c"),
            ("--config.entrypoint", script),
        ],
    );
    common::image_tag(&layout, "usr1", &[("--config.stopsignal", "SIGUSR1")]);
    layout
}

#[test]
fn the_images_stop_signal_is_what_a_timeout_sends_first() {
    let b = Boot::new("img-stop");
    let layout = stop_image(&b);
    let settings = format!(
        "{}{}",
        container(
            &b.name("usr1"),
            &source(&layout, "usr1"),
            "mode = \"always\"\ntimeout = \"2s\"",
        ),
        container(
            &b.name("term"),
            &source(&layout, "latest"),
            "mode = \"always\"\ntimeout = \"2s\"",
        ),
    );
    b.write_settings(&settings);
    let ran = b.command().output().unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
    for (short, signal) in [("usr1", "USR1"), ("term", "TERM")] {
        assert_eq!(b.outcome(short)["status"], "timed-out", "{output}");
        let log = b.container_log(short);
        assert!(
            log.contains(&format!("stopped by {signal}")),
            "{short}: {log}"
        );
    }
    b.assert_clean();
}

#[test]
fn the_images_stop_signal_is_what_a_stopped_supervisor_sends_first() {
    let b = Boot::new("img-intr");
    let layout = stop_image(&b);
    b.write_settings(&container(
        &b.name("usr1"),
        &source(&layout, "usr1"),
        "mode = \"always\"",
    ));
    b.stop_once_up(b.command(), &["up"]);
    assert_eq!(b.outcome("usr1")["status"], "interrupted");
    // The stop signal first: the container's trap ran (a SIGKILL, or SIGTERM, first would
    // have ended it without this line).
    let log = b.container_log("usr1");
    assert!(log.contains("stopped by USR1"), "{log}");
    b.assert_clean();
}
