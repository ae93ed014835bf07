//! The operator's settings file: `settings.bootstrap-containers` in TOML or JSON, parsed and
//! validated as a whole, so one run reports every problem at once.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::Value;

use crate::container_id;
pub(crate) use crate::image::PullPolicy;
pub use validate::validate;

pub mod edit;
pub(crate) mod files;
#[cfg(test)]
mod tests;
mod validate;

pub(crate) const DEFAULT_PATH: &str = "/etc/bootstrap-containers/settings.toml";
/// Bottlerocket's limit on a bootstrap container's name.
pub(crate) const MAX_NAME_LEN: usize = 76;
/// Prefix of every key in messages and in `get`/`set`, as Bottlerocket's apiclient spells it.
pub const TABLE: &str = "bootstrap-containers";

/// How a settings file is written; write-back keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
}

impl Format {
    /// JSON for `*.json` (what `apiclient get settings.bootstrap-containers` prints), else TOML.
    pub fn of(path: &Path) -> Format {
        match path.extension() {
            Some(ext) if ext == "json" => Format::Json,
            _ => Format::Toml,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub containers: BTreeMap<String, Container>,
    /// The file that defines each container, when the settings were read from files.
    pub origins: BTreeMap<String, PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    pub source: Source,
    pub mode: Mode,
    pub essential: bool,
    pub user_data: Option<UserData>,
    pub command: Option<Vec<String>>,
    pub timeout: Option<Duration>,
    pub depends_on: Vec<String>,
    pub pull_policy: PullPolicy,
    /// How long the image's pull may receive no byte before an attempt is abandoned.
    pub pull_progress_timeout: Option<Duration>,
    /// How long the image's whole pull, retries included, may take.
    pub pull_timeout: Option<Duration>,
    /// Variables set in the container's process after the image's own and the proxies.
    pub environment: Environment,
}

/// A container's `environment`: names (`[A-Za-z_][A-Za-z0-9_]*`) to values. Values may be
/// secrets, so Debug shows only the names; the report, journal, metrics and logs never hold
/// them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Environment(pub BTreeMap<String, String>);

impl Environment {
    /// `NAME=value` entries, in name order.
    pub fn entries(&self) -> impl Iterator<Item = String> + '_ {
        self.0.iter().map(|(name, value)| format!("{name}={value}"))
    }

    /// Whether `name` is a variable name a shell takes: `[A-Za-z_][A-Za-z0-9_]*`.
    pub(crate) fn check_name(name: &str) -> Result<(), String> {
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            Ok(())
        } else {
            Err(format!(
                "the variable name {name:?} must be letters, digits and '_', not starting with a digit ([A-Za-z_][A-Za-z0-9_]*)"
            ))
        }
    }
}

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// An OCI runtime bundle directory.
    Bundle(PathBuf),
    /// An image in an OCI image layout directory, by tag.
    OciLayout { path: PathBuf, tag: String },
    /// An image reference, for a registry pull.
    Image(String),
    /// No `source`: the container runs its `user-data` as a script, on the host's own tools
    /// (where Bottlerocket runs its `bottlerocket-bootstrap` image).
    UserDataScript,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Off,
    Once,
    Always,
}

/// Decoded `user-data`. It may hold secrets, so Debug shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct UserData(Vec<u8>);

/// The fields of a container; the single list that validation, `get` and `set` agree on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Field {
    Source,
    Mode,
    Essential,
    UserData,
    Command,
    Timeout,
    DependsOn,
    PullPolicy,
    PullProgressTimeout,
    PullTimeout,
    Environment,
}

/// The type a field's value has in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Text,
    Flag,
    List,
    /// A table of strings.
    Table,
}

/// One invalid value: where (`bootstrap-containers.NAME.FIELD`) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub reason: String,
    /// The container the problem is in, if any.
    pub container: Option<String>,
    /// The file it is in, named when the settings come from several files.
    pub file: Option<PathBuf>,
}

/// Every problem found in a settings file, one per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidSettings {
    pub problems: Vec<Problem>,
}

impl fmt::Display for InvalidSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {}", problem.key, problem.reason)?;
            if let Some(file) = &problem.file {
                write!(f, " (in {})", file.display())?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for InvalidSettings {}

/// Reads and validates the settings: the file at `main` and its drop-ins
/// ([`files::SettingsFiles`]).
pub fn load(main: &Path) -> Result<Settings> {
    files::SettingsFiles::read(main)?.load()
}

/// Parses and validates settings text. Validation failures are an [`InvalidSettings`].
pub fn parse(text: &str, format: Format) -> Result<Settings> {
    Ok(validate(&document(text, format)?)?)
}

/// The file's whole tree, unvalidated, as JSON values (TOML datetimes become tables).
pub(crate) fn document(text: &str, format: Format) -> Result<Value> {
    match format {
        Format::Toml => toml::from_str(text).map_err(|err| toml_error(text, &err)),
        Format::Json => serde_json::from_str(text).context("invalid JSON"),
    }
}

/// A TOML error as its message and place only: toml's own text quotes the offending line,
/// which may be user-data, and errors end up in reports and the journal. (serde_json's never
/// quote the input.)
fn toml_error(text: &str, err: &toml::de::Error) -> anyhow::Error {
    let place = err.span().map_or_else(String::new, |span| {
        let before = &text[..span.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!(" at line {line}, column {column}")
    });
    anyhow::anyhow!("invalid TOML{place}: {}", err.message().trim_end())
}

/// The runc id of a container: `boot.<name>`.
pub fn container_id(name: &str) -> String {
    format!("boot.{name}")
}

/// Checks a container name: 1 to 76 ASCII letters, digits and `-`, and a valid runc id.
pub fn check_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-';
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(allowed) {
        return Err(format!(
            "name must be 1 to {MAX_NAME_LEN} ASCII letters, digits and '-'"
        ));
    }
    container_id::validate(&container_id(name)).map_err(|err| err.to_string())
}

/// Parses a humane duration: a positive integer followed by `s`, `m` or `h`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || {
        format!("{text:?} is not a duration: expected a positive integer followed by s, m or h (e.g. \"90s\", \"5m\", \"1h\")")
    };
    let (digits, scale) = [("s", 1), ("m", 60), ("h", 3600)]
        .into_iter()
        .find_map(|(unit, scale)| text.strip_suffix(unit).map(|digits| (digits, scale)))
        .ok_or_else(invalid)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let seconds = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("{text:?} is too long a duration"))?;
    if seconds == 0 {
        return Err(format!("{text:?} is not a positive duration"));
    }
    Ok(Duration::from_secs(seconds))
}

/// Formats a duration the way [`parse_duration`] reads it, in the largest exact unit.
pub(crate) fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The units [`parse_size`] reads, largest first, with their size in bytes.
const SIZE_UNITS: [(&str, u64); 4] = [
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
];

/// Parses a size in bytes: a positive integer, alone (bytes) or followed by `KiB`, `MiB`,
/// `GiB` or `TiB` (e.g. `8GiB`, `500MiB`).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let invalid = || {
        format!("{text:?} is not a size: expected a positive integer of bytes, or followed by KiB, MiB, GiB or TiB (e.g. \"8GiB\", \"500MiB\")")
    };
    let (digits, scale) = SIZE_UNITS
        .into_iter()
        .find_map(|(unit, scale)| text.strip_suffix(unit).map(|digits| (digits, scale)))
        .unwrap_or((text, 1));
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let bytes = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("{text:?} is too large a size"))?;
    if bytes == 0 {
        return Err(format!("{text:?} is not a positive size"));
    }
    Ok(bytes)
}

/// Formats a size the way [`parse_size`] reads it, in the largest exact unit.
pub(crate) fn format_size(bytes: u64) -> String {
    SIZE_UNITS
        .into_iter()
        .find(|(_, scale)| bytes > 0 && bytes.is_multiple_of(*scale))
        .map_or_else(
            || bytes.to_string(),
            |(unit, scale)| format!("{}{unit}", bytes / scale),
        )
}

impl Source {
    /// An absolute path is a bundle, `oci-layout:/path:tag` a layout, anything else an image.
    pub fn parse(text: &str) -> Result<Source, String> {
        if text.is_empty() {
            return Err("must not be empty".into());
        }
        if let Some(rest) = text.strip_prefix("oci-layout:") {
            // Split at the last ':' so the path may contain colons; tags cannot.
            let (path, tag) = rest
                .rsplit_once(':')
                .ok_or_else(|| format!("{text:?} has no tag: expected oci-layout:/path:tag"))?;
            if tag.is_empty() {
                return Err(format!("{text:?} has an empty tag"));
            }
            if !Path::new(path).is_absolute() {
                return Err(format!(
                    "{text:?}: the layout path {path:?} is not absolute"
                ));
            }
            return Ok(Source::OciLayout {
                path: PathBuf::from(path),
                tag: tag.to_owned(),
            });
        }
        if text.starts_with('/') {
            return Ok(Source::Bundle(PathBuf::from(text)));
        }
        if text.contains(char::is_whitespace) {
            return Err(format!("image reference {text:?} contains whitespace"));
        }
        text.parse::<oci_client::Reference>()
            .map_err(|err| format!("{text:?} is not an image reference: {err}"))?;
        Ok(Source::Image(text.to_owned()))
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Bundle(path) => write!(f, "{}", path.display()),
            Source::OciLayout { path, tag } => write!(f, "oci-layout:{}:{tag}", path.display()),
            Source::Image(reference) => f.write_str(reference),
            Source::UserDataScript => f.write_str("(user-data script)"),
        }
    }
}

/// The one of `all` whose name is `text`, or a message listing the names.
fn choose<T: Copy>(text: &str, all: &[T], name: fn(T) -> &'static str) -> Result<T, String> {
    all.iter()
        .copied()
        .find(|&value| name(value) == text)
        .ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|&value| name(value)).collect();
            format!("{text:?} is not one of {}", names.join(", "))
        })
}

impl Mode {
    pub fn parse(text: &str) -> Result<Mode, String> {
        choose(text, &[Mode::Off, Mode::Once, Mode::Always], Mode::name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Once => "once",
            Mode::Always => "always",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl UserData {
    /// Decodes standard, padded base64. The message never repeats the (secret) text.
    pub(crate) fn decode(text: &str) -> Result<UserData, String> {
        BASE64
            .decode(text)
            .map(UserData)
            .map_err(|err| format!("not valid base64 (standard alphabet, padded): {err}"))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for UserData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserData({} bytes)", self.0.len())
    }
}

impl Field {
    pub(crate) const ALL: [Field; 11] = [
        Field::Source,
        Field::Mode,
        Field::Essential,
        Field::UserData,
        Field::Command,
        Field::Timeout,
        Field::DependsOn,
        Field::PullPolicy,
        Field::PullProgressTimeout,
        Field::PullTimeout,
        Field::Environment,
    ];

    /// The field's key in the file.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Field::Source => "source",
            Field::Mode => "mode",
            Field::Essential => "essential",
            Field::UserData => "user-data",
            Field::Command => "command",
            Field::Timeout => "timeout",
            Field::DependsOn => "depends-on",
            Field::PullPolicy => "pull-policy",
            Field::PullProgressTimeout => "pull-progress-timeout",
            Field::PullTimeout => "pull-timeout",
            Field::Environment => "environment",
        }
    }

    pub(crate) fn kind(self) -> Kind {
        match self {
            Field::Essential => Kind::Flag,
            Field::Command | Field::DependsOn => Kind::List,
            Field::Environment => Kind::Table,
            _ => Kind::Text,
        }
    }

    /// The field named `name`, or a message listing the known ones.
    pub(crate) fn from_name(name: &str) -> Result<Field, String> {
        choose(name, &Field::ALL, Field::name).map_err(|_| {
            let names: Vec<&str> = Field::ALL.iter().map(|field| field.name()).collect();
            format!("unknown field {name:?} (known: {})", names.join(", "))
        })
    }
}

/// `bootstrap-containers.NAME[.FIELD]`; a name that is not valid is quoted, so the key stays
/// unambiguous whatever it holds.
pub fn key(name: &str, field: Option<&str>) -> String {
    let name = match check_name(name) {
        Ok(()) => name.to_owned(),
        Err(_) => format!("{name:?}"),
    };
    match field {
        Some(field) => format!("{TABLE}.{name}.{field}"),
        None => format!("{TABLE}.{name}"),
    }
}
