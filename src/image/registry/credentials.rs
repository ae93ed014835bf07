//! Registry credentials from a docker `config.json`, as docker resolves them: a per-registry
//! `credHelpers` entry, else an `auths` entry, else the `credsStore` helper, else anonymous.
//! Helpers are run as docker runs them (`docker-credential-<name> get`, the server on stdin),
//! which is how ECR users authenticate.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
    registrytoken: Option<String>,
}

/// What a credential helper prints.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperReply {
    username: String,
    secret: String,
}

const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// The credentials `auth_file` holds for `host`.
pub(crate) fn lookup(auth_file: &Path, host: &str) -> Result<RegistryAuth> {
    crate::private_file::check_path(auth_file)?;
    let text =
        std::fs::read(auth_file).with_context(|| format!("reading {}", auth_file.display()))?;
    let config: DockerConfig = serde_json::from_slice(&text)
        .with_context(|| format!("parsing {} (docker config.json)", auth_file.display()))?;
    resolve(&config, host, run_helper)
        .with_context(|| format!("credentials for {host} from {}", auth_file.display()))
}

type Helper = fn(&str, &str) -> Result<Option<(String, String)>>;

fn resolve(config: &DockerConfig, host: &str, helper: Helper) -> Result<RegistryAuth> {
    if let Some(name) = config.cred_helpers.get(host) {
        return helper_auth(helper(name, host)?);
    }
    if let Some(entry) = config
        .auths
        .iter()
        .find(|(key, _)| server_host(key) == host)
        .map(|(_, entry)| entry)
    {
        return entry_auth(entry);
    }
    match &config.creds_store {
        Some(name) => helper_auth(helper(name, host)?),
        None => Ok(RegistryAuth::Anonymous),
    }
}

/// `auths` keys may be URLs (`https://host/v1/`); docker matches them by host.
fn server_host(key: &str) -> &str {
    let key = key.split_once("://").map_or(key, |(_, rest)| rest);
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        host => host,
    }
}

fn entry_auth(entry: &AuthEntry) -> Result<RegistryAuth> {
    if let Some(token) = &entry.registrytoken {
        return Ok(RegistryAuth::Bearer(token.clone()));
    }
    if entry.identitytoken.is_some() {
        bail!("identity tokens (OAuth refresh tokens) are not supported: use a credential helper or a username and password");
    }
    if let (Some(user), Some(password)) = (&entry.username, &entry.password) {
        return Ok(RegistryAuth::Basic(user.clone(), password.clone()));
    }
    let Some(auth) = &entry.auth else {
        return Ok(RegistryAuth::Anonymous);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .context("the \"auth\" value is not base64")?;
    let decoded = String::from_utf8(decoded).context("the \"auth\" value is not UTF-8")?;
    let (user, password) = decoded
        .split_once(':')
        .context("the \"auth\" value is not base64 of user:password")?;
    Ok(RegistryAuth::Basic(user.to_owned(), password.to_owned()))
}

fn helper_auth(reply: Option<(String, String)>) -> Result<RegistryAuth> {
    Ok(match reply {
        None => RegistryAuth::Anonymous,
        Some((user, _)) if user == "<token>" => {
            bail!("the credential helper returned an identity token, which is not supported")
        }
        Some((user, secret)) => RegistryAuth::Basic(user, secret),
    })
}

/// Runs `docker-credential-<name> get`; `None` when it has no credentials for `host`.
fn run_helper(name: &str, host: &str) -> Result<Option<(String, String)>> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        bail!("{name:?} is not a credential helper name");
    }
    let program = format!("docker-credential-{name}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(host.as_bytes())
            .with_context(|| format!("writing to {program}"))?;
    }
    let started = Instant::now();
    while child.try_wait()?.is_none() {
        if started.elapsed() > HELPER_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{program} did not answer within {HELPER_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        bail!(
            "{program} failed ({}): {}{}",
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let reply: HelperReply =
        serde_json::from_str(&stdout).with_context(|| format!("parsing what {program} printed"))?;
    Ok(Some((reply.username, reply.secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> DockerConfig {
        serde_json::from_str(json).unwrap()
    }

    fn no_helper(_: &str, _: &str) -> Result<Option<(String, String)>> {
        panic!("no helper expected")
    }

    fn fake_helper(name: &str, host: &str) -> Result<Option<(String, String)>> {
        Ok((name == "ecr-login").then(|| ("AWS".to_owned(), format!("token-for-{host}"))))
    }

    fn basic(user: &str, password: &str) -> String {
        format!("{:?}", RegistryAuth::Basic(user.into(), password.into()))
    }

    #[test]
    fn auths_entries_by_host_or_url() {
        // "user:pass" in base64.
        let c = config(
            r#"{"auths": {"https://r.example:5000/v1/": {"auth": "dXNlcjpwYXNz"},
                          "https://index.docker.io/v1/": {"username": "d", "password": "p"}}}"#,
        );
        let got = |host| format!("{:?}", resolve(&c, host, no_helper).unwrap());
        assert_eq!(got("r.example:5000"), basic("user", "pass"));
        assert_eq!(got("docker.io"), basic("d", "p"));
        assert_eq!(got("other.example"), "Anonymous");
    }

    #[test]
    fn helpers_take_precedence_as_in_docker() {
        let c = config(
            r#"{"auths": {"r.example": {"auth": "dXNlcjpwYXNz"}},
                "credHelpers": {"r.example": "ecr-login"}, "credsStore": "none"}"#,
        );
        let got = |host| format!("{:?}", resolve(&c, host, fake_helper).unwrap());
        assert_eq!(got("r.example"), basic("AWS", "token-for-r.example"));
        // The store has nothing for other hosts: anonymous.
        assert_eq!(got("other.example"), "Anonymous");
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        let err = |json: &str| format!("{:#}", resolve(&config(json), "r", no_helper).unwrap_err());
        assert!(err(r#"{"auths": {"r": {"auth": "%%%"}}}"#).contains("not base64"));
        assert!(err(r#"{"auths": {"r": {"auth": "dXNlcg=="}}}"#).contains("user:password"));
        assert!(err(r#"{"auths": {"r": {"identitytoken": "x"}}}"#).contains("not supported"));
        let token = resolve(
            &config(r#"{"auths": {"r": {"registrytoken": "t"}}}"#),
            "r",
            no_helper,
        );
        assert!(matches!(token.unwrap(), RegistryAuth::Bearer(t) if t == "t"));
    }

    #[test]
    fn helper_programs_are_run_and_named_safely() {
        assert!(run_helper("../evil", "r").is_err());
        let err = format!("{:#}", run_helper("surely-not-installed", "r").unwrap_err());
        assert!(
            err.contains("docker-credential-surely-not-installed"),
            "{err}"
        );
    }
}
