//! `bootstrap-supervisor report-node` against a real kube-apiserver (1.20, built from Debian's
//! source by hack/kube-apiserver.sh) and etcd, on loopback ports of their own, with a CA and
//! certificates made here: the Node authorizer, RBAC and NodeRestriction, as on a real cluster.
//! The report runs with a node's client certificate (`system:node:<name>` in `system:nodes`);
//! the test reads the cluster as admin (`system:masters`) with curl.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use crate::common::supervisor::{Boot, SUPERVISOR};

const KUBE_APISERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/hack/kube-apiserver.sh");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().unwrap_or_else(|err| panic!("{what}: {err}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// etcd and kube-apiserver for one test, stopped (by pid) when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
    etcd: Child,
    apiserver: Option<Child>,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = common::scratch_dir("brt-cluster-");
        let pki = dir.path();
        let binary = run_ok(
            Command::new(KUBE_APISERVER).arg("build"),
            "hack/kube-apiserver.sh build",
        );
        let binary = String::from_utf8_lossy(&binary.stdout).trim().to_string();
        // A CA, the server's certificate (127.0.0.1), an admin's and a service-account key.
        let script = r#"set -e
openssl req -x509 -new -nodes -newkey rsa:2048 -keyout ca.key -out ca.crt -days 2 -subj /CN=test-ca 2>/dev/null
leaf() {
  openssl req -new -nodes -newkey rsa:2048 -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
  printf "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=$3\n$4" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -out "$1.crt" -extfile "$1.ext" 2>/dev/null
}
leaf apiserver /CN=kube-apiserver serverAuth "subjectAltName=IP:127.0.0.1\n"
leaf admin /O=system:masters/CN=admin clientAuth ""
openssl genrsa -out sa.key 2048 2>/dev/null
"#;
        run_ok(
            Command::new("sh").arg("-c").arg(script).current_dir(pki),
            "making certificates",
        );
        let (client, peer, port) = (free_port(), free_port(), free_port());
        let etcd = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(pki.join("etcd"))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!("--initial-cluster=test=http://127.0.0.1:{peer}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(pki.join("etcd.log")).unwrap())
            .spawn()
            .unwrap();
        let mut cluster = Cluster {
            dir,
            port,
            etcd,
            apiserver: None,
        };
        let pki = cluster.dir.path();
        let file = |name: &str| pki.join(name).display().to_string();
        let apiserver = Command::new(binary)
            .arg(format!("--etcd-servers=http://127.0.0.1:{client}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={port}"))
            .arg("--advertise-address=127.0.0.1")
            .arg("--endpoint-reconciler-type=none")
            .arg(format!("--cert-dir={}", file("certs")))
            .arg(format!("--tls-cert-file={}", file("apiserver.crt")))
            .arg(format!("--tls-private-key-file={}", file("apiserver.key")))
            .arg(format!("--client-ca-file={}", file("ca.crt")))
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!("--service-account-key-file={}", file("sa.key")))
            .arg(format!(
                "--service-account-signing-key-file={}",
                file("sa.key")
            ))
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg("--authorization-mode=Node,RBAC")
            .arg("--enable-admission-plugins=NodeRestriction")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(pki.join("apiserver.log")).unwrap())
            .spawn()
            .unwrap();
        cluster.apiserver = Some(apiserver);
        // Ready, and the default namespace made (Events go there).
        let deadline = Instant::now() + Duration::from_secs(60);
        while cluster.admin("GET", "/api/v1/namespaces/default", None).0 != 200 {
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready: {}",
                std::fs::read_to_string(pki.join("apiserver.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        cluster
    }

    /// An admin request: (HTTP status, body).
    fn admin(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let pki = self.dir.path();
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method])
            .arg("--cacert")
            .arg(pki.join("ca.crt"))
            .arg("--cert")
            .arg(pki.join("admin.crt"))
            .arg("--key")
            .arg(pki.join("admin.key"))
            .args(["-H", "Content-Type: application/json"]);
        if let Some(body) = body {
            cmd.args(["--data", body]);
        }
        let out = cmd
            .arg(format!("https://127.0.0.1:{}{path}", self.port))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    fn create_node(&self, name: &str) {
        let body = format!(r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{name}"}}}}"#);
        let (code, text) = self.admin("POST", "/api/v1/nodes", Some(&body));
        assert_eq!(code, 201, "creating node {name}: {text}");
    }

    /// Our condition on `node`, as admin reads it.
    fn condition(&self, node: &str) -> Option<serde_json::Value> {
        let (code, text) = self.admin("GET", &format!("/api/v1/nodes/{node}"), None);
        assert_eq!(code, 200, "{text}");
        let node: serde_json::Value = serde_json::from_str(&text).unwrap();
        node["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "BootstrapContainersSucceeded")
            .cloned()
    }

    fn events(&self) -> Vec<serde_json::Value> {
        let (code, text) = self.admin("GET", "/api/v1/namespaces/default/events", None);
        assert_eq!(code, 200, "{text}");
        let list: serde_json::Value = serde_json::from_str(&text).unwrap();
        list["items"].as_array().cloned().unwrap_or_default()
    }

    /// A kubeconfig with `node`'s client certificate, as the kubelet's.
    fn node_kubeconfig(&self, node: &str) -> PathBuf {
        let pki = self.dir.path();
        run_ok(
            Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "openssl req -new -nodes -newkey rsa:2048 -keyout {node}.key -out {node}.csr \
                     -subj /O=system:nodes/CN=system:node:{node} 2>/dev/null && \
                     printf 'extendedKeyUsage=clientAuth\\n' >{node}.ext && \
                     openssl x509 -req -in {node}.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
                     -days 2 -out {node}.crt -extfile {node}.ext 2>/dev/null"
                ))
                .current_dir(pki),
            "making a node certificate",
        );
        let path = pki.join(format!("{node}.kubeconfig"));
        let file = |name: String| pki.join(name).display().to_string();
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority: {}\nusers:\n- name: node\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: node\n  context:\n    cluster: test\n    user: node\ncurrent-context: node\n",
                self.port,
                file("ca.crt".into()),
                file(format!("{node}.crt")),
                file(format!("{node}.key")),
            ),
        )
        .unwrap();
        path
    }

    fn stop_apiserver(&mut self) {
        if let Some(mut child) = self.apiserver.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_apiserver();
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
    }
}

/// `report-node` for `b`'s state with `kubeconfig` as `node`.
fn report_node(b: &Boot, kubeconfig: &Path, node: &str, timeout: &str) -> Output {
    Command::new(SUPERVISOR)
        .arg("report-node")
        .arg("--state-dir")
        .arg(&b.state_dir)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--node-name", node, "--timeout", timeout])
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn boots_outcomes_reach_the_node_as_a_condition_and_events() {
    let mut cluster = Cluster::start();
    let node = "node-a";
    cluster.create_node(node);
    let kubeconfig = cluster.node_kubeconfig(node);
    let b = Boot::new("nodereport");

    // No record yet: Unknown.
    let out = report_node(&b, &kubeconfig, node, "20s");
    assert!(out.status.success(), "{}", text(&out));
    let unknown = cluster.condition(node).expect("no condition");
    assert_eq!(unknown["status"], "Unknown", "{unknown}");

    // One failing non-essential and one succeeding essential container.
    let fine = b.bundle("fine", "true");
    let broken = b.bundle("broken", "exit 3");
    b.write_settings(
        &(common::supervisor::container(
            &b.name("fine"),
            &fine,
            "mode = \"always\"\nessential = true",
        ) + &common::supervisor::container(&b.name("Broken"), &broken, "mode = \"always\"")),
    );
    assert_eq!(b.run().code, 0);
    let out = report_node(&b, &kubeconfig, node, "20s");
    assert!(out.status.success(), "{}", text(&out));
    let failed = cluster.condition(node).unwrap();
    assert_eq!(failed["status"], "False", "{failed}");
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{}: failed (exit code 3)", b.name("Broken"))),
        "{message}"
    );
    let events = cluster.events();
    let about: Vec<_> = events
        .iter()
        .filter(|e| e["involvedObject"]["name"] == node && e["involvedObject"]["kind"] == "Node")
        .collect();
    assert_eq!(about.len(), 1, "{events:#?}");
    assert!(
        about[0]["message"]
            .as_str()
            .unwrap()
            .contains(&b.name("Broken")),
        "{:#?}",
        about[0]
    );
    // Reported again in the same boot: the same one Event.
    let out = report_node(&b, &kubeconfig, node, "20s");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(cluster.events().len(), events.len());

    // All succeed: True, the transition time moves (whole seconds: wait past one).
    std::thread::sleep(Duration::from_millis(1100));
    b.write_settings(&common::supervisor::container(
        &b.name("fine"),
        &fine,
        "mode = \"always\"\nessential = true",
    ));
    assert_eq!(b.run_next_boot().code, 0);
    let out = report_node(&b, &kubeconfig, node, "20s");
    assert!(out.status.success(), "{}", text(&out));
    let succeeded = cluster.condition(node).unwrap();
    assert_eq!(succeeded["status"], "True", "{succeeded}");
    assert_ne!(
        succeeded["lastTransitionTime"],
        failed["lastTransitionTime"]
    );
    // The same outcome again: the transition time stays, the heartbeat moves.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(b.run_next_boot().code, 0);
    let out = report_node(&b, &kubeconfig, node, "20s");
    assert!(out.status.success(), "{}", text(&out));
    let again = cluster.condition(node).unwrap();
    assert_eq!(again["lastTransitionTime"], succeeded["lastTransitionTime"]);
    assert_ne!(again["lastHeartbeatTime"], succeeded["lastHeartbeatTime"]);

    // The node's credentials reach no other node.
    cluster.create_node("node-b");
    let out = report_node(&b, &kubeconfig, "node-b", "20s");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("403"), "{}", text(&out));
    assert!(cluster.condition("node-b").is_none());

    // The API server gone: retried within the bound, then a clear error; the record untouched.
    let record = std::fs::read(b.run_dir.join("report.json")).unwrap();
    cluster.stop_apiserver();
    let started = Instant::now();
    let out = report_node(&b, &kubeconfig, node, "3s");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(text(&out).contains("gave up"), "{}", text(&out));
    assert_eq!(
        std::fs::read(b.run_dir.join("report.json")).unwrap(),
        record
    );
}
