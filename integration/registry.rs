//! Registry pulls by the supervisor against a real registry (Debian's `docker-registry`) on
//! loopback, started per test with its own storage, port and log; images are built here and
//! pushed with `skopeo copy`. The registry's access log tells how many blobs were fetched.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::supervisor::{container, Boot};
use sha2::{Digest, Sha256};

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Access {
    Plain,
    BasicAuth,
    Tls,
}

/// Essential, so a container that cannot get its image fails the boot.
pub(crate) const ALWAYS: &str = "mode = \"always\"\nessential = true";
const USER: &str = "puller";
const PASSWORD: &str = "s3cret-pw";

/// A running registry; killed and its files removed on drop.
pub(crate) struct Registry {
    dir: tempfile::TempDir,
    pub(crate) host: String,
    access: Access,
    child: Option<Child>,
}

impl Registry {
    pub(crate) fn start(access: Access) -> Registry {
        let dir = common::scratch_dir("brt-registry-");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.path();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            d.join("storage").display()
        );
        match access {
            Access::Plain => {}
            Access::BasicAuth => {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", USER, PASSWORD])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "htpasswd failed");
                std::fs::write(d.join("htpasswd"), out.stdout).unwrap();
                config += &format!(
                    "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                    d.join("htpasswd").display()
                );
            }
            Access::Tls => {
                make_certificates(d);
                config += &format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    d.join("server.pem").display(),
                    d.join("server.key").display()
                );
            }
        }
        std::fs::write(d.join("config.yml"), config).unwrap();
        let mut registry = Registry {
            host: format!("127.0.0.1:{port}"),
            access,
            child: None,
            dir,
        };
        registry.resume();
        registry
    }

    /// (Re)starts the registry process on its port and storage.
    fn resume(&mut self) {
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("registry.log"))
            .unwrap();
        self.child = Some(
            Command::new("docker-registry")
                .arg("serve")
                .arg(d.join("config.yml"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("docker-registry (Debian package docker-registry) must be installed"),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&self.host).is_err() {
            assert!(
                Instant::now() < deadline,
                "the registry did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Pushes the layout's `latest` to `repo:tag` here; returns the manifest digest.
    pub(crate) fn push(&self, layout: &Path, repo_tag: &str) -> String {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if self.access == Access::BasicAuth {
            cmd.arg(format!("--dest-creds={USER}:{PASSWORD}"));
        }
        let digest_file = self.dir.path().join("pushed-digest");
        let out = cmd
            .arg("--digestfile")
            .arg(&digest_file)
            .arg(format!("oci:{}:latest", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.host))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(digest_file)
            .unwrap()
            .trim()
            .to_owned()
    }

    /// How many times blobs of `repo` were fetched (GET, not HEAD).
    fn blob_gets(&self, repo: &str) -> usize {
        let needle = format!("\"GET /v2/{repo}/blobs/");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }

    /// The file holding blob `digest` in the registry's storage.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private CA and a server certificate for 127.0.0.1 signed by it.
fn make_certificates(dir: &Path) {
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    for args in [
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=bootstrap-runc test CA",
        ][..],
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    ] {
        openssl(dir, args);
    }
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// A busybox rootfs as one tar layer.
fn busybox_layer(dir: &Path) -> Vec<u8> {
    let bundle = dir.join("base-bundle");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/make-bundle.sh");
    assert!(Command::new(script)
        .arg(&bundle)
        .arg("true")
        .status()
        .unwrap()
        .success());
    let mut tar = tar::Builder::new(Vec::new());
    tar.follow_symlinks(false);
    tar.append_dir_all(".", bundle.join("rootfs")).unwrap();
    let layer = tar.into_inner().unwrap();
    std::fs::remove_dir_all(&bundle).unwrap();
    layer
}

/// A tar layer of raw entries `(name, type, link, content)`: raw, so hostile names survive.
fn raw_layer(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, kind, link, content) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o755);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(*kind);
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_cksum();
        tar.append(&header, *content).unwrap();
    }
    tar.into_inner().unwrap()
}

/// A tar layer and how it is compressed in the image.
pub(crate) enum Layer {
    Gzip(Vec<u8>),
    Zstd(Vec<u8>),
    /// Compressed already: the gzip blob and the digest of the tar in it.
    Gzipped {
        blob: Vec<u8>,
        diff_id: String,
    },
}

/// An OCI layout at `dir/layout` whose `latest` is busybox plus `layers`, running `cmd`.
pub(crate) fn layout(dir: &Path, layers: &[Layer], cmd: &[&str]) -> PathBuf {
    let layout = dir.join("layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let digest = sha256(data);
        std::fs::write(blobs.join(&digest[7..]), data).unwrap();
        serde_json::json!({"digest": digest, "size": data.len()})
    };
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    let base = Layer::Gzip(busybox_layer(dir));
    for layer in std::iter::once(&base).chain(layers) {
        let (diff_id, blob, media_type) = match layer {
            Layer::Gzip(tar) => {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(tar).unwrap();
                (sha256(tar), gz.finish().unwrap(), "tar+gzip")
            }
            Layer::Zstd(tar) => (
                sha256(tar),
                zstd::encode_all(tar.as_slice(), 3).unwrap(),
                "tar+zstd",
            ),
            Layer::Gzipped { blob, diff_id } => (diff_id.clone(), blob.clone(), "tar+gzip"),
        };
        diff_ids.push(diff_id);
        let mut d = put(&blob);
        d["mediaType"] = format!("application/vnd.oci.image.layer.v1.{media_type}").into();
        descriptors.push(d);
    }
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let mut config_d = put(&serde_json::to_vec(&config).unwrap());
    config_d["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_d, "layers": descriptors,
    });
    let mut manifest_d = put(&serde_json::to_vec(&manifest).unwrap());
    manifest_d["mediaType"] = "application/vnd.oci.image.manifest.v1+json".into();
    manifest_d["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "latest"});
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [manifest_d]});
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    layout
}

pub(crate) fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

impl Registry {
    /// Pushes `image` as `repo_tag` and makes it the source of `b`'s one essential container
    /// `short`; returns the manifest digest.
    fn provide(&self, b: &Boot, short: &str, image: &Path, repo_tag: &str) -> String {
        let digest = self.push(image, repo_tag);
        let reference = format!("{}/{repo_tag}", self.host);
        b.write_settings(&container(&b.name(short), &reference, ALWAYS));
        digest
    }

    /// registries.toml for this registry (plain HTTP unless TLS), plus `extra` lines.
    fn configure(&self, b: &Boot, extra: &str) {
        let insecure = self.access != Access::Tls;
        write_private(
            &b.registry_config,
            &format!(
                "[registries.\"{}\"]\ninsecure = {insecure}\n{extra}",
                self.host
            ),
        );
    }
}

/// The images the cache holds (digest hexes).
fn cached_images(b: &Boot) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(b.state_dir.join("images/sha256"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

pub(crate) fn assert_no_staging_left(b: &Boot) {
    let tmp: Vec<_> = std::fs::read_dir(b.state_dir.join("images/tmp"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "staging left: {tmp:?}");
}

#[test]
fn pull_and_run_then_start_from_the_warm_cache() {
    let b = Boot::new("reg-pull");
    let registry = Registry::start(Access::Plain);
    let image = layout(
        b.f.dir.path(),
        &[],
        &[
            "sh",
            "-c",
            "echo hello from the registry; test -x /bin/busybox",
        ],
    );
    let digest = registry.provide(&b, "hello", &image, "team/hello:v1");
    registry.configure(&b, "");

    let ran = b.run_next_boot();
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    assert!(
        ran.stdout.contains("hello from the registry"),
        "{}",
        ran.stdout
    );
    let outcome = b.outcome("hello");
    assert_eq!(outcome["status"], "succeeded");
    assert_eq!(outcome["image"]["digest"], digest.as_str());
    assert!(
        ran.stderr.contains("pulling 1 layer(s)"),
        "progress: {}",
        ran.stderr
    );
    assert_eq!(cached_images(&b), [&digest[7..]]);
    let first_gets = registry.blob_gets("team/hello");
    assert_eq!(
        first_gets,
        2,
        "the config and the layer: {}",
        registry.log()
    );

    // Second boot: the tag is resolved again, but nothing is downloaded or unpacked.
    let ran = b.run_next_boot();
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    assert_eq!(b.outcome("hello")["image"]["unpack_ms"], 0);
    assert_eq!(registry.blob_gets("team/hello"), first_gets);
    assert_no_staging_left(&b);
    b.assert_clean();
}

#[test]
fn three_containers_of_one_image_pull_it_once() {
    let b = Boot::new("reg-once");
    let registry = Registry::start(Access::Plain);
    let image = layout(b.f.dir.path(), &[], &["sh", "-c", "sleep 0.2"]);
    registry.push(&image, "team/shared:v1");
    registry.configure(&b, "");
    let reference = format!("{}/team/shared:v1", registry.host);
    let text: String = ["a", "b", "c"]
        .iter()
        .map(|n| container(&b.name(n), &reference, ALWAYS))
        .collect();
    b.write_settings(&text);
    let ran = b.run_next_boot();
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    for n in ["a", "b", "c"] {
        assert_eq!(b.outcome(n)["status"], "succeeded");
    }
    assert_eq!(registry.blob_gets("team/shared"), 2, "{}", registry.log());
    b.assert_clean();
}

#[test]
fn digest_pinned_images_start_with_the_registry_down_tags_do_not() {
    let b = Boot::new("reg-down");
    let mut registry = Registry::start(Access::Plain);
    let image = layout(b.f.dir.path(), &[], &["true"]);
    let digest = registry.push(&image, "team/pinned:v1");
    registry.configure(&b, "");
    let pinned = format!("{}/team/pinned@{digest}", registry.host);
    let tagged = format!("{}/team/pinned:v1", registry.host);
    b.write_settings(&container(&b.name("p"), &pinned, ALWAYS));
    assert_eq!(b.run_next_boot().code, 0);
    registry.stop();

    // Pinned and cached: no registry needed.
    let ran = b.run_next_boot();
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    assert!(
        ran.stderr.contains("using the cached image"),
        "{}",
        ran.stderr
    );

    // A tag is resolved every boot: with the registry down that fails, after the retries,
    // even though the image is cached...
    registry.resume();
    b.write_settings(&container(&b.name("p"), &tagged, ALWAYS));
    assert_eq!(b.run_next_boot().code, 0);
    registry.stop();
    let ran = b.run_next_boot();
    assert_ne!(
        ran.code, 0,
        "an essential container without its image halts the boot"
    );
    let error = b.outcome("p")["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains(&tagged)
            && error.contains("retries exhausted after 6 attempts")
            && error.contains("if-not-present"),
        "{error}"
    );
    assert_eq!(
        ran.stderr.matches("retrying in").count(),
        5,
        "{}",
        ran.stderr
    );

    // ... unless the container accepts any cached resolution.
    b.write_settings(&container(
        &b.name("p"),
        &tagged,
        &format!("{ALWAYS}\npull-policy = \"if-not-present\""),
    ));
    let ran = b.run_next_boot();
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    assert_eq!(cached_images(&b), [&digest[7..]]);

    // No cache at all: a clear error, and nothing left behind.
    let fresh = Boot::new("reg-down2");
    registry.configure(&fresh, "");
    fresh.write_settings(&container(&fresh.name("p"), &pinned, ALWAYS));
    let ran = fresh.run_next_boot();
    assert_ne!(ran.code, 0);
    let error = fresh.outcome("p")["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains(&pinned) && error.contains("retries exhausted"),
        "{error}"
    );
    assert!(cached_images(&fresh).is_empty());
    assert_no_staging_left(&fresh);
    fresh.assert_clean();
    b.assert_clean();
}

/// `always-or-cached`: with the registry gone the container runs the digest its tag resolved to
/// last, and the report, `status` and the metrics say so; `always` still fails; a registry
/// that answers 404 (the tag is gone) or 401 is obeyed, cache or not.
#[test]
fn always_or_cached_boots_from_the_cache_only_when_the_registry_cannot_be_reached() {
    let b = Boot::new("reg-offline");
    let mut registry = Registry::start(Access::Plain);
    let image = layout(b.f.dir.path(), &[], &["true"]);
    let digest = registry.push(&image, "team/offline:v1");
    registry.configure(&b, "");
    let tagged = format!("{}/team/offline:v1", registry.host);
    let settings = |policy: &str| {
        container(
            &b.name("p"),
            &tagged,
            &format!("{ALWAYS}\npull-policy = \"{policy}\""),
        )
    };
    b.write_settings(&settings("always-or-cached"));
    assert_eq!(b.run_next_boot().code, 0);
    assert!(b.outcome("p")["image"].get("from_cache").is_none());

    registry.stop();
    let metrics = b.f.dir.path().join("metrics.prom");
    let _ = std::fs::remove_dir_all(&b.run_dir);
    let out = b
        .command()
        .arg("--metrics-file")
        .arg(&metrics)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let outcome = b.outcome("p");
    assert_eq!(outcome["status"], "succeeded", "{outcome}");
    assert_eq!(outcome["image"]["digest"], digest.as_str(), "{outcome}");
    assert_eq!(outcome["image"]["from_cache"], true, "{outcome}");
    assert!(
        stderr.contains("the registry cannot be reached") && stderr.contains(&digest),
        "{stderr}"
    );
    let status = std::process::Command::new(common::supervisor::SUPERVISOR)
        .arg("status")
        .arg("--state-dir")
        .arg(&b.state_dir)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("(cache: registry unreachable)"), "{status}");
    let metrics = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        metrics.contains(&format!(
            "bootstrap_container_image_from_cache{{name=\"{}\"}} 1",
            b.name("p")
        )),
        "{metrics}"
    );

    b.write_settings(&settings("always"));
    assert_ne!(b.run_next_boot().code, 0, "always needs the registry");

    // The registry answers: a tag it no longer has is not replaced by the cache.
    registry.resume();
    let tags = registry
        .dir
        .path()
        .join("storage/docker/registry/v2/repositories/team/offline/_manifests/tags/v1");
    std::fs::remove_dir_all(&tags).unwrap();
    b.write_settings(&settings("always-or-cached"));
    assert_ne!(b.run_next_boot().code, 0);
    let outcome = b.outcome("p");
    assert_ne!(outcome["status"], "succeeded", "{outcome}");
    assert!(
        outcome["error"].as_str().unwrap().contains("not retried"),
        "{outcome}"
    );
    b.assert_clean();

    // Nor is a refusal of the credentials.
    let a = Boot::new("reg-offline-auth");
    let registry = Registry::start(Access::BasicAuth);
    let image = layout(a.f.dir.path(), &[], &["true"]);
    registry.push(&image, "team/private:v1");
    let auth_file = a.f.dir.path().join("docker-config.json");
    let write_auth = |password: &str| {
        let auth = base64_encode(&format!("{USER}:{password}"));
        write_private(
            &auth_file,
            &format!(
                r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#,
                registry.host
            ),
        );
    };
    write_auth(PASSWORD);
    registry.configure(
        &a,
        &format!("auth-file = {:?}\n", auth_file.display().to_string()),
    );
    a.write_settings(&container(
        &a.name("p"),
        &format!("{}/team/private:v1", registry.host),
        &format!("{ALWAYS}\npull-policy = \"always-or-cached\""),
    ));
    assert_eq!(a.run_next_boot().code, 0);
    write_auth("wrong");
    assert_ne!(a.run_next_boot().code, 0, "a 401 is obeyed");
    assert_ne!(a.outcome("p")["status"], "succeeded");
    a.assert_clean();
}

#[test]
fn basic_auth_credentials_come_from_a_docker_config() {
    let b = Boot::new("reg-auth");
    let registry = Registry::start(Access::BasicAuth);
    let image = layout(b.f.dir.path(), &[], &["true"]);
    registry.provide(&b, "x", &image, "team/private:v1");

    // Anonymous: refused at once, not retried.
    registry.configure(&b, "");
    let ran = b.run_next_boot();
    assert_ne!(ran.code, 0);
    let error = b.outcome("x")["error"].as_str().unwrap().to_owned();
    assert!(error.contains("not retried"), "{error}");

    let auth_file = b.f.dir.path().join("docker-config.json");
    let auth = base64_encode(&format!("{USER}:{PASSWORD}"));
    write_private(
        &auth_file,
        &format!(
            r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#,
            registry.host
        ),
    );
    registry.configure(
        &b,
        &format!("auth-file = {:?}\n", auth_file.display().to_string()),
    );
    let ran = b.run_next_boot();
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);

    // A credentials file others may write is not trusted.
    std::fs::set_permissions(&auth_file, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::remove_dir_all(b.state_dir.join("images")).unwrap();
    let ran = b.run_next_boot();
    assert_ne!(ran.code, 0);
    let error = b.outcome("x")["error"].as_str().unwrap().to_owned();
    assert!(error.contains("writable by group or others"), "{error}");
    b.assert_clean();
}

fn base64_encode(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn tls_registries_need_their_ca() {
    let b = Boot::new("reg-tls");
    let registry = Registry::start(Access::Tls);
    let image = layout(b.f.dir.path(), &[], &["true"]);
    registry.provide(&b, "x", &image, "team/tls:v1");

    registry.configure(&b, "");
    let ran = b.run_next_boot();
    assert_ne!(ran.code, 0, "an unknown CA must be refused");
    let error = b.outcome("x")["error"].as_str().unwrap().to_owned();
    assert!(error.to_lowercase().contains("certificate"), "{error}");

    registry.configure(
        &b,
        &format!("ca-file = {:?}\n", registry.ca().display().to_string()),
    );
    let ran = b.run_next_boot();
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    b.assert_clean();
}

#[test]
fn mirrors_are_asked_before_the_registry() {
    let b = Boot::new("reg-mirror");
    let mirror = Registry::start(Access::Plain);
    let mut origin = Registry::start(Access::Plain);
    let image = layout(b.f.dir.path(), &[], &["true"]);
    mirror.push(&image, "team/mirrored:v1");
    origin.stop(); // the origin is down: only the mirror can serve
    write_private(
        &b.registry_config,
        &format!(
            "[registries.\"{}\"]\ninsecure = true\nmirrors = [\"{}\"]\n[registries.\"{}\"]\ninsecure = true\n",
            origin.host, mirror.host, mirror.host
        ),
    );
    let reference = format!("{}/team/mirrored:v1", origin.host);
    b.write_settings(&container(&b.name("x"), &reference, ALWAYS));
    let ran = b.run_next_boot();
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    assert_eq!(mirror.blob_gets("team/mirrored"), 2, "{}", mirror.log());
    b.assert_clean();
}

#[test]
fn a_corrupt_blob_is_never_used() {
    let b = Boot::new("reg-corrupt");
    let registry = Registry::start(Access::Plain);
    let image = layout(
        b.f.dir.path(),
        &[Layer::Gzip(raw_layer(&[(
            "marker",
            tar::EntryType::Regular,
            "",
            b"original",
        )]))],
        &["true"],
    );
    registry.push(&image, "team/corrupt:v1");
    let read = |path: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let index = read(image.join("index.json"));
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest = read(image.join("blobs/sha256").join(&manifest_digest[7..]));
    let layer = manifest["layers"][1]["digest"].as_str().unwrap();
    let blob = registry.blob_file(layer);
    let mut data = std::fs::read(&blob).unwrap();
    let middle = data.len() / 2;
    data[middle] ^= 0xff;
    std::fs::write(&blob, data).unwrap();

    registry.configure(&b, "");
    let reference = format!("{}/team/corrupt:v1", registry.host);
    b.write_settings(&container(&b.name("x"), &reference, ALWAYS));
    let ran = b.run_next_boot();
    assert_ne!(ran.code, 0);
    let error = b.outcome("x")["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains(layer) && error.contains("retries exhausted"),
        "{error}"
    );
    assert!(cached_images(&b).is_empty());
    assert_no_staging_left(&b);
    b.assert_clean();
}

/// Pushes busybox plus `layer`, runs it, and returns the container's error.
fn hostile_image_error(name: &str, layer: Vec<u8>) -> (Boot, String) {
    let b = Boot::new(name);
    let registry = Registry::start(Access::Plain);
    let image = layout(b.f.dir.path(), &[Layer::Gzip(layer)], &["true"]);
    registry.provide(&b, "x", &image, "team/hostile:v1");
    registry.configure(&b, "");
    let ran = b.run_next_boot();
    assert_ne!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    let error = b.outcome("x")["error"].as_str().unwrap().to_owned();
    assert!(
        cached_images(&b).is_empty(),
        "a refused image is not cached"
    );
    assert_no_staging_left(&b);
    b.assert_clean();
    (b, error)
}

#[test]
fn a_layer_with_a_dotdot_entry_is_refused() {
    let (_b, error) = hostile_image_error(
        "reg-dotdot",
        raw_layer(&[(
            "../../../../../../tmp/brt-dotdot-escape",
            tar::EntryType::Regular,
            "",
            b"x",
        )]),
    );
    assert!(error.contains("leaves the root filesystem"), "{error}");
    assert!(!Path::new("/tmp/brt-dotdot-escape").exists());
}

#[test]
fn a_layer_writing_through_a_symlink_is_refused() {
    let outside = common::scratch_dir("brt-symlink-target-");
    let target = outside.path().to_str().unwrap().to_owned();
    let (_b, error) = hostile_image_error(
        "reg-symlink",
        raw_layer(&[
            ("evil", tar::EntryType::Symlink, &target, b""),
            ("evil/pwned", tar::EntryType::Regular, "", b"x"),
        ]),
    );
    assert!(error.contains("is a symlink"), "{error}");
    assert!(!outside.path().join("pwned").exists());
}

#[test]
fn whiteouts_hide_lower_layers_and_unused_images_are_collected() {
    let b = Boot::new("reg-wh");
    let registry = Registry::start(Access::Plain);
    let lower = raw_layer(&[
        ("etc/gone", tar::EntryType::Regular, "", b"x"),
        ("etc/kept", tar::EntryType::Regular, "", b"x"),
        ("opaque/old", tar::EntryType::Regular, "", b"x"),
    ]);
    let upper = raw_layer(&[
        ("etc/.wh.gone", tar::EntryType::Regular, "", b""),
        ("opaque/.wh..wh..opq", tar::EntryType::Regular, "", b""),
        ("opaque/new", tar::EntryType::Regular, "", b"x"),
    ]);
    let check =
        "test ! -e /etc/gone && test -e /etc/kept && test ! -e /opaque/old && test -e /opaque/new";
    // The upper layer is zstd-compressed: both compressions in one image.
    let image = layout(
        b.f.dir.path(),
        &[Layer::Gzip(lower), Layer::Zstd(upper)],
        &["sh", "-c", check],
    );
    let first = registry.provide(&b, "x", &image, "team/wh:v1");
    registry.configure(&b, "");
    let ran = b.run_next_boot();
    assert_eq!(ran.code, 0, "{}{}", ran.stdout, ran.stderr);
    assert_eq!(b.outcome("x")["status"], "succeeded");
    assert_eq!(cached_images(&b), [&first[7..]]);

    // The settings move to another image: the first one is removed from the cache.
    let other = layout(&b.f.dir.path().join("other"), &[], &["true"]);
    let second = registry.provide(&b, "x", &other, "team/other:v1");
    assert_eq!(b.run_next_boot().code, 0);
    assert_eq!(cached_images(&b), [&second[7..]]);
    b.assert_clean();
}

#[test]
fn a_stopped_supervisor_abandons_a_pull_at_once() {
    let b = Boot::new("reg-stop");
    let mut registry = Registry::start(Access::Plain);
    registry.stop(); // every attempt fails; with real backoff the retries take over a minute
    registry.configure(&b, "");
    let reference = format!("{}/team/never:v1", registry.host);
    b.write_settings(&container(&b.name("x"), &reference, ALWAYS));
    let mut child = b
        .command()
        .env("BOOTSTRAP_SUPERVISOR_BACKOFF_SCALE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let stopping = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "stopping took {:?}",
        stopping.elapsed()
    );
    assert!(!status.success());
    assert_eq!(b.outcome("x")["status"], "interrupted");
    assert_no_staging_left(&b);
    b.assert_clean();
}

/// A gzip layer of one file, `bomb`, of `size` zero bytes: a few hundred KiB that inflate a
/// thousandfold. Streamed, so the tar is never in memory.
fn gzip_bomb(size: u64) -> Layer {
    struct Tee {
        gz: flate2::write::GzEncoder<Vec<u8>>,
        tar: Sha256,
    }
    impl Write for Tee {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.tar.update(buf);
            self.gz.write_all(buf)?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.gz.flush()
        }
    }
    let mut tar = tar::Builder::new(Tee {
        gz: flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best()),
        tar: Sha256::new(),
    });
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, "bomb", std::io::repeat(0).take(size))
        .unwrap();
    let tee = tar.into_inner().unwrap();
    Layer::Gzipped {
        blob: tee.gz.finish().unwrap(),
        diff_id: format!("sha256:{:x}", tee.tar.finalize()),
    }
}

/// A tmpfs of `size` (as mount(8) says it: `100m`) at `dir`, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size},mode=0755").as_str()),
        )
        .unwrap();
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    /// The reserve the supervisor must keep free here: 5 % (at most 1 GiB).
    fn reserve(&self) -> u64 {
        let fs = nix::sys::statvfs::statvfs(&self.dir).unwrap();
        (fs.blocks() * fs.fragment_size() / 20).min(1 << 30)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// The least free space and inodes a filesystem had while watched.
struct Least {
    bytes: u64,
    inodes: u64,
}

/// Runs `cmd` while watching the free space and inodes of `dir`'s filesystem (every
/// millisecond).
fn run_watching_free_space(mut cmd: Command, dir: &Path) -> (std::process::Output, Least) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        let dir = dir.to_path_buf();
        std::thread::spawn(move || {
            let mut least = Least {
                bytes: u64::MAX,
                inodes: u64::MAX,
            };
            while !done.load(Ordering::Relaxed) {
                let fs = nix::sys::statvfs::statvfs(&dir).unwrap();
                least.bytes = least.bytes.min(fs.blocks_available() * fs.fragment_size());
                least.inodes = least.inodes.min(fs.files_available());
                std::thread::sleep(Duration::from_millis(1));
            }
            least
        })
    };
    let out = cmd.output();
    done.store(true, Ordering::Relaxed);
    let least = watcher.join().unwrap();
    (out.unwrap(), least)
}

/// Nothing of the refused image is left in `b`'s state dir: no staging, no cached image, no
/// container rootfs.
fn assert_nothing_of_the_image_left(b: &Boot, short: &str) {
    assert_no_staging_left(b);
    assert!(cached_images(b).is_empty(), "a refused image is cached");
    let rootfs = b
        .state_dir
        .join("containers")
        .join(b.name(short))
        .join("rootfs");
    assert!(!rootfs.exists(), "{} is left", rootfs.display());
}

/// The bomb as `short`'s source on a 100 MiB tmpfs state dir: the container is a runtime error
/// naming the reserve, the filesystem never fills, and nothing of the image is left.
fn bomb_stops_at_the_reserve(b: &Boot, short: &str, what: &str) {
    let tmpfs = Tmpfs::mount(&b.state_dir, "100m");
    let reserve = tmpfs.reserve();
    assert_eq!(reserve, 5 << 20);
    let _ = std::fs::remove_dir_all(&b.run_dir);
    let (out, least) = run_watching_free_space(b.command(), &b.state_dir);
    let least_free = least.bytes;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let outcome = b.outcome(short);
    assert_eq!(outcome["status"], "runtime-error", "{outcome}");
    let error = outcome["error"].as_str().unwrap();
    eprintln!("{error}\nleast free: {least_free} bytes");
    let wanted = format!(
        "would leave less than the reserve of 5.0 MiB free on the filesystem of {}/{what} (5 % of it, at most 1.0 GiB)",
        b.state_dir.display()
    );
    assert!(error.contains(&wanted), "{error}");
    assert!(
        least_free + (1 << 20) >= reserve,
        "the free space fell to {least_free} bytes, below the reserve of {reserve}"
    );
    assert_nothing_of_the_image_left(b, short);
    drop(tmpfs);
}

#[test]
fn a_gzip_bomb_in_a_layout_stops_at_the_reserve_of_a_small_filesystem() {
    let b = Boot::new("bomb-layout");
    let image = layout(b.f.dir.path(), &[gzip_bomb(300 << 20)], &["true"]);
    let source = format!("oci-layout:{}:latest", image.display());
    b.write_settings(&container(&b.name("x"), &source, ALWAYS));
    bomb_stops_at_the_reserve(&b, "x", &format!("containers/{}", b.name("x")));
    b.assert_clean();
}

#[test]
fn a_gzip_bomb_from_a_registry_stops_at_the_reserve_of_a_small_filesystem() {
    let b = Boot::new("bomb-reg");
    let registry = Registry::start(Access::Plain);
    let image = layout(b.f.dir.path(), &[gzip_bomb(300 << 20)], &["true"]);
    registry.provide(&b, "x", &image, "team/bomb:v1");
    registry.configure(&b, "");
    bomb_stops_at_the_reserve(&b, "x", "images");
    b.assert_clean();
}

#[test]
fn a_blob_that_would_pass_the_reserve_is_not_downloaded() {
    let b = Boot::new("bomb-blob");
    let registry = Registry::start(Access::Plain);
    // 40 MiB that gzip cannot shrink, for a 32 MiB filesystem.
    let mut rng = fastrand::Rng::with_seed(7);
    let noise: Vec<u8> = std::iter::repeat_with(|| rng.u8(..))
        .take(40 << 20)
        .collect();
    let layer = raw_layer(&[("noise", tar::EntryType::Regular, "", &noise)]);
    let image = layout(b.f.dir.path(), &[Layer::Gzip(layer)], &["true"]);
    registry.provide(&b, "x", &image, "team/noise:v1");
    registry.configure(&b, "");
    let tmpfs = Tmpfs::mount(&b.state_dir, "32m");
    let reserve = tmpfs.reserve();
    let (out, least) = run_watching_free_space(b.command(), &b.state_dir);
    let least_free = least.bytes;
    assert_eq!(out.status.code(), Some(1));
    let error = b.outcome("x")["error"].as_str().unwrap().to_owned();
    eprintln!("{error}\nleast free: {least_free} bytes");
    assert!(
        error.contains("(not retried)")
            && error.contains("downloading blob")
            && error.contains(&format!(
                "would leave less than the reserve of 1.6 MiB free on the filesystem of {}/images",
                b.state_dir.display()
            )),
        "{error}"
    );
    assert!(
        least_free + (1 << 20) >= reserve,
        "the free space fell to {least_free} bytes, below the reserve of {reserve}"
    );
    assert_nothing_of_the_image_left(&b, "x");
    drop(tmpfs);
    b.assert_clean();
}

#[test]
fn max_image_size_stops_an_image_unpacking_past_it() {
    let b = Boot::new("bomb-max");
    let registry = Registry::start(Access::Plain);
    let image = layout(b.f.dir.path(), &[gzip_bomb(300 << 20)], &["true"]);
    registry.push(&image, "team/big:v1");
    registry.configure(&b, "");
    b.write_settings(&format!(
        "{}{}",
        container(
            &b.name("layout"),
            &format!("oci-layout:{}:latest", image.display()),
            ALWAYS
        ),
        container(
            &b.name("registry"),
            &format!("{}/team/big:v1", registry.host),
            ALWAYS
        ),
    ));
    // Room for the whole image: only the limit stops it.
    let tmpfs = Tmpfs::mount(&b.state_dir, "1g");
    let out = b
        .command()
        .args(["--max-image-size", "50MiB"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    for short in ["layout", "registry"] {
        let outcome = b.outcome(short);
        assert_eq!(outcome["status"], "runtime-error", "{outcome}");
        let error = outcome["error"].as_str().unwrap();
        eprintln!("{error}");
        assert!(
            error.contains("entry bomb: the image's unpacked size passed --max-image-size 50MiB"),
            "{error}"
        );
        assert_nothing_of_the_image_left(&b, short);
    }
    drop(tmpfs);
    b.assert_clean();

    let bad = b
        .command()
        .args(["--max-image-size", "50MB"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("--max-image-size") && stderr.contains("\"50MB\" is not a size"),
        "{stderr}"
    );
}

#[test]
fn a_layer_of_many_files_stops_at_the_inode_reserve() {
    let b = Boot::new("bomb-inodes");
    let names: Vec<String> = (0..5000).map(|i| format!("many/{i}")).collect();
    let entries: Vec<_> = names
        .iter()
        .map(|name| (name.as_str(), tar::EntryType::Regular, "", &b""[..]))
        .collect();
    let image = layout(
        b.f.dir.path(),
        &[Layer::Gzip(raw_layer(&entries))],
        &["true"],
    );
    let source = format!("oci-layout:{}:latest", image.display());
    b.write_settings(&container(&b.name("x"), &source, ALWAYS));
    // Room for busybox's few hundred files, not for 5000 more.
    let tmpfs = Tmpfs::mount(&b.state_dir, "100m,nr_inodes=4000");
    let (out, least) = run_watching_free_space(b.command(), &b.state_dir);
    assert_eq!(out.status.code(), Some(1));
    let error = b.outcome("x")["error"].as_str().unwrap().to_owned();
    eprintln!("{error}\nleast free inodes: {}", least.inodes);
    assert!(
        error.contains(&format!(
            "would leave fewer than the reserve of 200 free inodes on the filesystem of {}/containers/{} (5 % of its inodes)",
            b.state_dir.display(),
            b.name("x")
        )),
        "{error}"
    );
    assert!(least.inodes >= 200, "free inodes fell to {}", least.inodes);
    assert_nothing_of_the_image_left(&b, "x");
    drop(tmpfs);
    b.assert_clean();
}
