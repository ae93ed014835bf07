//! Reading and changing one setting in the operator's file, in place: under a lock, keeping
//! its format, comments and everything else, and never leaving it invalid.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use serde_json::Value;
use toml_edit::{DocumentMut, Item, Table, TableLike};

use crate::supervisor::settings::{self, Field, Format, Kind, TABLE};

#[cfg(test)]
mod tests;

/// Turns a `once` container off after it ran, as Bottlerocket does.
pub fn set_mode_off(path: &Path, name: &str) -> Result<()> {
    set(path, &settings::key(name, Some(Field::Mode.name())), "off")
}

/// Sets `bootstrap-containers.NAME.FIELD` to `value` (text as is, `true`/`false`, or a JSON
/// list of strings for `command` and `depends-on`). A missing container is created; the edit
/// is refused, leaving the file untouched, if the whole file would not validate.
pub fn set(path: &Path, key: &str, value: &str) -> Result<()> {
    let (name, field) = match parse_key(key)? {
        (Some(name), Some(field)) => (name, field),
        _ => bail!("cannot set {key:?}: expected {TABLE}.NAME.FIELD"),
    };
    let new = NewValue::parse(field, value).with_context(|| format!("setting {key}"))?;
    let format = Format::of(path);
    let _lock = lock(path)?;
    // Read under the lock: another writer may have changed the file since the caller read it.
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading settings file {}", path.display()))?;
    let edited = match format {
        Format::Toml => edit_toml(&text, name, field, &new),
        Format::Json => edit_json(&text, name, field, &new),
    }
    .with_context(|| format!("setting {key} in {}", path.display()))?;
    settings::parse(&edited, format).with_context(|| {
        format!(
            "refusing to set {key} in {}: the settings would be invalid",
            path.display()
        )
    })?;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("reading the mode of {}", path.display()))?
        .permissions()
        .mode()
        & 0o7777;
    crate::atomic_file::write(path, edited.as_bytes(), mode)
}

/// The value at `bootstrap-containers[.NAME[.FIELD]]` as stored in the file (`null` for a field
/// that is not set; no table at all reads as `{}`).
pub fn get(path: &Path, key: &str) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading settings file {}", path.display()))?;
    get_in(&text, Format::of(path), key)
        .with_context(|| format!("settings file {}", path.display()))
}

/// [`get`] on settings text.
pub fn get_in(text: &str, format: Format, key: &str) -> Result<Value> {
    let (name, field) = parse_key(key)?;
    let root = settings::document(text, format)?;
    let table = root
        .get("settings")
        .and_then(|settings| settings.get(TABLE))
        .cloned()
        .unwrap_or_else(|| Value::Object(Default::default()));
    let Some(name) = name else {
        return Ok(table);
    };
    let container = table
        .get(name)
        .ok_or_else(|| anyhow!("there is no container {name:?}"))?;
    Ok(match field {
        Some(field) => container.get(field.name()).cloned().unwrap_or(Value::Null),
        None => container.clone(),
    })
}

/// Splits `[settings.]bootstrap-containers[.NAME[.FIELD]]`; names hold no dots, so the split is
/// unambiguous.
fn parse_key(key: &str) -> Result<(Option<&str>, Option<Field>)> {
    let bad = || anyhow!("invalid key {key:?}: expected {TABLE}[.NAME[.FIELD]]");
    let rest = key.strip_prefix("settings.").unwrap_or(key);
    let rest = rest.strip_prefix(TABLE).ok_or_else(bad)?;
    if rest.is_empty() {
        return Ok((None, None));
    }
    let mut parts = rest.strip_prefix('.').ok_or_else(bad)?.splitn(2, '.');
    let name = parts.next().unwrap_or_default();
    settings::check_name(name).map_err(|reason| anyhow!("invalid key {key:?}: {reason}"))?;
    let field = parts
        .next()
        .map(Field::from_name)
        .transpose()
        .map_err(|reason| anyhow!("invalid key {key:?}: {reason}"))?;
    Ok((Some(name), field))
}

/// A value from the command line, typed by its field; its meaning is checked by validation.
enum NewValue {
    Text(String),
    Flag(bool),
    List(Vec<String>),
}

impl NewValue {
    fn parse(field: Field, value: &str) -> Result<NewValue> {
        Ok(match field.kind() {
            Kind::Text => NewValue::Text(value.to_owned()),
            Kind::Flag => match value {
                "true" => NewValue::Flag(true),
                "false" => NewValue::Flag(false),
                _ => bail!("{value:?} is not true or false"),
            },
            Kind::List => NewValue::List(serde_json::from_str(value).with_context(|| {
                format!("{value:?} is not a JSON list of strings like [\"sh\",\"-c\",\"echo hi\"]")
            })?),
        })
    }

    fn to_toml(&self) -> toml_edit::Value {
        match self {
            NewValue::Text(text) => text.into(),
            NewValue::Flag(flag) => (*flag).into(),
            NewValue::List(items) => toml_edit::Value::Array(items.iter().collect()),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            NewValue::Text(text) => text.as_str().into(),
            NewValue::Flag(flag) => (*flag).into(),
            NewValue::List(items) => items.as_slice().into(),
        }
    }
}

/// Sets one field with toml_edit, so comments and layout survive; an existing value keeps its
/// surrounding whitespace and trailing comment.
fn edit_toml(text: &str, name: &str, field: Field, new: &NewValue) -> Result<String> {
    let mut doc: DocumentMut = text.parse().context("invalid TOML")?;
    let mut table: &mut dyn TableLike = doc.as_table_mut();
    for key in ["settings", TABLE, name] {
        table = child_table(table, key)?;
    }
    let mut value = new.to_toml();
    match table.get_mut(field.name()) {
        Some(Item::Value(old)) => {
            *value.decor_mut() = old.decor().clone();
            *old = value;
        }
        _ => {
            table.insert(field.name(), Item::Value(value));
        }
    }
    Ok(doc.to_string())
}

/// The table `key` in `parent`, created if missing. New tables are implicit, so only the
/// container's own `[settings.bootstrap-containers.NAME]` header is written; in an inline table
/// toml_edit turns them into inline tables.
fn child_table<'a>(parent: &'a mut dyn TableLike, key: &str) -> Result<&'a mut dyn TableLike> {
    if parent.get(key).is_none() {
        let mut table = Table::new();
        table.set_implicit(true);
        parent.insert(key, Item::Table(table));
    }
    parent
        .get_mut(key)
        .and_then(Item::as_table_like_mut)
        .with_context(|| format!("{key} is not a table"))
}

/// Sets one field in the JSON tree; keys keep their order (serde_json's `preserve_order`).
fn edit_json(text: &str, name: &str, field: Field, new: &NewValue) -> Result<String> {
    let mut root: Value = serde_json::from_str(text).context("invalid JSON")?;
    let mut node = &mut root;
    for key in ["settings", TABLE, name] {
        node = node
            .as_object_mut()
            .with_context(|| format!("the parent of {key} is not an object"))?
            .entry(key)
            .or_insert_with(|| Value::Object(Default::default()));
    }
    node.as_object_mut()
        .with_context(|| format!("{name} is not an object"))?
        .insert(field.name().to_owned(), new.to_json());
    let mut edited = serde_json::to_string_pretty(&root).context("serializing JSON")?;
    edited.push('\n');
    Ok(edited)
}

/// Holds an exclusive `flock` on `<file>.lock`, so concurrent edits serialise. A separate file,
/// because the settings file itself is replaced by rename.
fn lock(path: &Path) -> Result<Flock<File>> {
    let mut lock_path = PathBuf::from(path.as_os_str());
    lock_path.as_mut_os_string().push(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening lock {}", lock_path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| errno)
        .with_context(|| format!("locking {}", lock_path.display()))
}
