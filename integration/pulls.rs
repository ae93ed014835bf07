//! Pulls that stall or crawl: a real registry behind a TCP proxy written here, which passes
//! bytes through and, once a connection has sent a response past a threshold, stops sending
//! (keeping the connection open) or trickles. Checks `pull-progress-timeout` (a stall is
//! abandoned and retried), `pull-timeout` (the whole pull is bounded, per container), and
//! `always-or-cached` on a registry that stalls.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::supervisor::{container, Boot};
use crate::registry::{layout, write_private, Access, Registry, ALWAYS};

/// What the proxy does to the registry's answers once a connection has sent `after` bytes.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Pass,
    /// Sends nothing more on that connection, for this many connections (then passes).
    Stall {
        after: usize,
        connections: usize,
    },
    /// Sends `chunk` bytes every `every`.
    Trickle {
        after: usize,
        chunk: usize,
        every: Duration,
    },
}

/// A loopback TCP proxy to `upstream`; its threads end and its sockets close on drop.
struct Proxy {
    host: String,
    mode: Arc<Mutex<Mode>>,
    stop: Arc<AtomicBool>,
    /// Connections stalled so far.
    stalled: Arc<AtomicUsize>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    fn start(upstream: &str, mode: Mode) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let mode = Arc::new(Mutex::new(mode));
        let stop = Arc::new(AtomicBool::new(false));
        let stalled = Arc::new(AtomicUsize::new(0));
        let upstream = upstream.to_owned();
        let accept = {
            let (mode, stop, stalled) = (mode.clone(), stop.clone(), stalled.clone());
            std::thread::spawn(move || {
                let mut connections = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let server = TcpStream::connect(&upstream).unwrap();
                            connections.push(relay(client, server, &mode, &stop, &stalled));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
                for connection in connections.into_iter().flatten() {
                    let _ = connection.join();
                }
            })
        };
        Proxy {
            host,
            mode,
            stop,
            stalled,
            accept: Some(accept),
        }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn stalled(&self) -> usize {
        self.stalled.load(Ordering::Relaxed)
    }

    /// registries.toml naming the proxy, plain HTTP.
    fn configure(&self, b: &Boot) {
        write_private(
            &b.registry_config,
            &format!("[registries.\"{}\"]\ninsecure = true\n", self.host),
        );
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// Copies client to server as is, and server to client as `mode` says, each way in a thread.
fn relay(
    client: TcpStream,
    server: TcpStream,
    mode: &Arc<Mutex<Mode>>,
    stop: &Arc<AtomicBool>,
    stalled: &Arc<AtomicUsize>,
) -> [JoinHandle<()>; 2] {
    let (mut from_client, mut to_server) =
        (client.try_clone().unwrap(), server.try_clone().unwrap());
    let upward = std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_server);
        let _ = to_server.shutdown(Shutdown::Write);
    });
    let (mode, stop, stalled) = (mode.clone(), stop.clone(), stalled.clone());
    let downward = std::thread::spawn(move || {
        let (mut from_server, mut to_client) = (server, client);
        from_server
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut sent = 0;
        let mut buf = vec![0; 16 * 1024];
        let mut stalling = false;
        while !stop.load(Ordering::Relaxed) {
            if stalling {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            let n = match from_server.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(_) => continue, // the read timeout: look at `stop` again
            };
            let mode = *mode.lock().unwrap();
            let wrote = match mode {
                Mode::Stall { after, connections } if sent + n > after => {
                    let taken = stalled.fetch_add(1, Ordering::Relaxed);
                    if taken < connections {
                        // Hold the connection open, sending nothing more.
                        let _ = to_client.write_all(&buf[..after.saturating_sub(sent)]);
                        stalling = true;
                        continue;
                    }
                    stalled.fetch_sub(1, Ordering::Relaxed);
                    to_client.write_all(&buf[..n])
                }
                Mode::Trickle {
                    after,
                    chunk,
                    every,
                } if sent + n > after => {
                    let mut result = Ok(());
                    for piece in buf[..n].chunks(chunk) {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        std::thread::sleep(every);
                        result = to_client.write_all(piece);
                        if result.is_err() {
                            break;
                        }
                    }
                    result
                }
                _ => to_client.write_all(&buf[..n]),
            };
            if wrote.is_err() {
                break;
            }
            sent += n;
        }
        let _ = to_client.shutdown(Shutdown::Both);
    });
    [upward, downward]
}

/// Bigger than any manifest or config this registry sends: only a layer passes it.
const LAYER_ONLY: usize = 64 * 1024;

/// A busybox image pushed to `registry` as `repo_tag`, named through `proxy`.
fn image_behind(b: &Boot, registry: &Registry, proxy: &Proxy, repo_tag: &str) -> String {
    let image = layout(b.f.dir.path(), &[], &["true"]);
    registry.push(&image, repo_tag);
    proxy.configure(b);
    format!("{}/{repo_tag}", proxy.host)
}

#[test]
fn a_stalled_layer_is_abandoned_at_the_progress_timeout_and_retried() {
    let b = Boot::new("pull-stall");
    let registry = Registry::start(Access::Plain);
    let proxy = Proxy::start(
        &registry.host,
        Mode::Stall {
            after: LAYER_ONLY,
            connections: 1,
        },
    );
    let reference = image_behind(&b, &registry, &proxy, "team/stall:v1");
    b.write_settings(&container(
        &b.name("s"),
        &reference,
        &format!("{ALWAYS}\npull-progress-timeout = \"2s\""),
    ));
    let ran = b.run_next_boot();
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(b.outcome("s")["status"], "succeeded");
    assert_eq!(proxy.stalled(), 1, "the first attempt's layer stalled");
    let failed = ran
        .stderr
        .lines()
        .find(|l| l.contains("pull attempt 1 failed"))
        .unwrap_or_else(|| panic!("no retry: {}", ran.stderr));
    assert!(
        failed.contains(
            "received no byte for 2s (pull-progress-timeout) while downloading blob sha256:"
        ) && failed.contains(" MiB of "),
        "{failed}"
    );
    b.assert_clean();
}

#[test]
fn a_registry_that_always_stalls_fails_its_container_and_a_non_essential_one_lets_the_boot_go_on() {
    let b = Boot::new("pull-stalls");
    let registry = Registry::start(Access::Plain);
    let proxy = Proxy::start(
        &registry.host,
        Mode::Stall {
            after: LAYER_ONLY,
            connections: usize::MAX,
        },
    );
    let reference = image_behind(&b, &registry, &proxy, "team/stalls:v1");
    let settings = container(
        &b.name("stalls"),
        &reference,
        "mode = \"always\"\npull-progress-timeout = \"2s\"",
    ) + &container(&b.name("ok"), &b.bundle("ok", "true"), ALWAYS);
    b.write_settings(&settings);
    let started = Instant::now();
    let ran = b.run_next_boot();
    let took = started.elapsed();
    assert_eq!(ran.code, 0, "the boot goes on: {}", ran.stderr);
    assert_eq!(b.outcome("ok")["status"], "succeeded");
    let outcome = b.outcome("stalls");
    assert_eq!(outcome["status"], "runtime-error", "{outcome}");
    let error = outcome["error"].as_str().unwrap();
    assert!(
        error.contains(&reference)
            && error.contains("retries exhausted after 6 attempts")
            && error.contains(
                "received no byte for 2s (pull-progress-timeout) while downloading blob sha256:"
            )
            && error.contains("MiB of the image received in this attempt"),
        "{error}"
    );
    assert_eq!(proxy.stalled(), 6, "each attempt stalled once");
    // Six stalls of 2 s each, with generous margins: never the 60 s of a fixed read timeout.
    assert!(took < Duration::from_secs(6 * (2 + 5)), "took {took:?}");
    crate::registry::assert_no_staging_left(&b);
    b.assert_clean();
}

#[test]
fn pull_timeout_ends_a_trickling_pull_and_each_container_sharing_it_fails_at_its_own() {
    let b = Boot::new("pull-trickle");
    let registry = Registry::start(Access::Plain);
    // 1 KiB every 0.3 s: never a stall of 2 s, and a busybox layer would take many minutes.
    let proxy = Proxy::start(
        &registry.host,
        Mode::Trickle {
            after: LAYER_ONLY,
            chunk: 1024,
            every: Duration::from_millis(300),
        },
    );
    let reference = image_behind(&b, &registry, &proxy, "team/trickle:v1");
    let settings = container(
        &b.name("short"),
        &reference,
        "mode = \"always\"\npull-progress-timeout = \"2s\"\npull-timeout = \"4s\"",
    ) + &container(
        &b.name("long"),
        &reference,
        "mode = \"always\"\npull-progress-timeout = \"2s\"\npull-timeout = \"8s\"",
    ) + &container(&b.name("ok"), &b.bundle("ok", "true"), ALWAYS);
    b.write_settings(&settings);
    let started = Instant::now();
    let ran = b.run_next_boot();
    let took = started.elapsed();
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    for (short, limit) in [("short", 4), ("long", 8)] {
        let outcome = b.outcome(short);
        assert_eq!(outcome["status"], "runtime-error", "{outcome}");
        let error = outcome["error"].as_str().unwrap();
        assert!(
            error.contains(&format!(
                "pulling {reference}: pull-timeout of {limit}s passed (retries included)"
            )),
            "{short}: {error}"
        );
    }
    assert!(
        !ran.stderr.contains("pull-progress-timeout"),
        "never a stall: {}",
        ran.stderr
    );
    assert!(
        took >= Duration::from_secs(8),
        "the pull ran to the later deadline: {took:?}"
    );
    assert!(took < Duration::from_secs(8 + 10), "took {took:?}");
    crate::registry::assert_no_staging_left(&b);
    b.assert_clean();
}

#[test]
fn always_or_cached_runs_the_cached_image_when_the_registry_stalls() {
    let b = Boot::new("pull-cached");
    let registry = Registry::start(Access::Plain);
    let proxy = Proxy::start(&registry.host, Mode::Pass);
    let reference = image_behind(&b, &registry, &proxy, "team/cached:v1");
    b.write_settings(&container(
        &b.name("c"),
        &reference,
        &format!("{ALWAYS}\npull-policy = \"always-or-cached\"\npull-progress-timeout = \"1s\""),
    ));
    assert_eq!(b.run_next_boot().code, 0);
    let digest = b.outcome("c")["image"]["digest"].clone();
    // Every answer stalls, the manifest's too.
    proxy.set(Mode::Stall {
        after: 0,
        connections: usize::MAX,
    });
    let ran = b.run_next_boot();
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let outcome = b.outcome("c");
    assert_eq!(outcome["image"]["from_cache"], true, "{outcome}");
    assert_eq!(outcome["image"]["digest"], digest);
    let stalled = format!(
        "no manifest from {} within 1s (pull-progress-timeout)",
        proxy.host
    );
    assert!(ran.stderr.contains(&stalled), "{}", ran.stderr);

    // A pull-timeout shorter than the retries: it passes before any attempt reached the
    // registry, which counts as unreachable too.
    b.write_settings(&container(
        &b.name("c"),
        &reference,
        &format!(
            "{ALWAYS}\npull-policy = \"always-or-cached\"\npull-progress-timeout = \"1s\"\npull-timeout = \"2s\""
        ),
    ));
    let ran = b.run_next_boot();
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let outcome = b.outcome("c");
    assert_eq!(outcome["image"]["from_cache"], true, "{outcome}");
    assert!(
        ran.stderr.contains("pull-timeout of 2s passed"),
        "{}",
        ran.stderr
    );
    b.assert_clean();
}

/// The largest duration the settings take: past the clock's end, so no bound at all.
const FOREVER: &str = "18446744073709551615s";

#[test]
fn a_mirror_that_stalls_on_the_manifest_is_passed_over_and_endless_limits_are_no_bound() {
    let b = Boot::new("pull-mirror");
    let origin = Registry::start(Access::Plain);
    let mirror = Proxy::start(
        &origin.host,
        Mode::Stall {
            after: 0,
            connections: usize::MAX,
        },
    );
    let image = layout(b.f.dir.path(), &[], &["true"]);
    origin.push(&image, "team/mirrored:v1");
    write_private(
        &b.registry_config,
        &format!(
            "[registries.\"{}\"]\ninsecure = true\nmirrors = [\"{}\"]\n[registries.\"{}\"]\ninsecure = true\n",
            origin.host, mirror.host, mirror.host
        ),
    );
    b.write_settings(&container(
        &b.name("m"),
        &format!("{}/team/mirrored:v1", origin.host),
        &format!(
            "{ALWAYS}\npull-progress-timeout = \"1s\"\npull-timeout = \"{FOREVER}\"\ntimeout = \"{FOREVER}\""
        ),
    ));
    let ran = b.run_next_boot();
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(b.outcome("m")["status"], "succeeded");
    let passed_over = format!(
        "mirror {} failed (no manifest from {} within 1s (pull-progress-timeout))",
        mirror.host, mirror.host
    );
    assert!(ran.stderr.contains(&passed_over), "{}", ran.stderr);
    assert!(
        !ran.stderr.contains("pull attempt"),
        "no attempt failed: {}",
        ran.stderr
    );
    b.assert_clean();
}
