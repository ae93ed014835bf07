//! Reading and changing settings in the operator's files, as `apiclient get`/`set` read and
//! change Bottlerocket's: in place, under one lock, keeping each file's format, comments and
//! everything else, one call's assignments all applied or none, and never leaving the settings
//! invalid. A container lives in the main file or a drop-in ([`SettingsFiles`]); it is changed
//! where it is defined.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use serde_json::Value;
use toml_edit::{DocumentMut, Item, Table, TableLike};

use crate::locks;
use crate::supervisor::settings::files::{SettingsFile, SettingsFiles};
use crate::supervisor::settings::{self, Field, Format, Kind, TABLE};

#[cfg(test)]
mod tests;

/// Turns a `once` container off after it ran, as Bottlerocket does, in the file that defines
/// it (the main file or a drop-in).
pub(crate) fn set_mode_off(path: &Path, name: &str) -> Result<()> {
    let key = settings::key(name, Some(Field::Mode.name()));
    edit(path, &[(key.as_str(), "off")], Missing::Error)
}

/// Sets `bootstrap-containers.NAME.FIELD` to `value` in an existing file: [`set_all`] with one
/// assignment, except that a missing file is an error.
pub fn set(path: &Path, key: &str, value: &str) -> Result<()> {
    edit(path, &[(key, value)], Missing::Error)
}

/// Applies every `(key, value)` assignment in one edit, as `apiclient set` applies one call's:
/// all of them or none. A key is `[settings.]bootstrap-containers.NAME.FIELD` (the `settings.`
/// prefix optional, as in apiclient); a value is text as is, `true`/`false`, or a JSON list of
/// strings for `command` and `depends-on`. A container is edited in the file that defines it,
/// the main file or a drop-in ([`SettingsFiles`]); a new one is added to the main file,
/// created if missing (mode 0600: it holds user-data; its directory 0755 if missing too); an
/// existing file keeps its mode. Errors: a bad key or value (named), a file that is unreadable or would not
/// validate as a whole once edited (nothing is written then).
pub(crate) fn set_all(path: &Path, assignments: &[(&str, &str)]) -> Result<()> {
    edit(path, assignments, Missing::Create)
}

/// What an edit does when the settings file does not exist.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Missing {
    Create,
    Error,
}

/// The mode of a settings file `set` creates: it holds user-data.
const NEW_FILE_MODE: u32 = 0o600;
/// The mode of a settings directory `set` creates.
const NEW_DIR_MODE: u32 = 0o755;

fn edit(main: &Path, assignments: &[(&str, &str)], missing: Missing) -> Result<()> {
    let mut edits = Vec::with_capacity(assignments.len());
    for (key, value) in assignments {
        let (name, field) = match parse_key(key)? {
            (Some(name), Some(field)) => (name, field),
            _ => bail!("cannot set {key:?}: expected {TABLE}.NAME.FIELD"),
        };
        let new = NewValue::parse(field, value).with_context(|| format!("setting {key}"))?;
        edits.push((name, field, new));
    }
    let keys = assignments
        .iter()
        .map(|(key, _)| *key)
        .collect::<Vec<_>>()
        .join(", ");
    if missing == Missing::Create {
        create_parent(main)?;
    }
    // One lock, the main file's, for every file: an edit decides which file holds a container
    // from all of them.
    let _lock = lock(main)?;
    // Read under the lock: another writer may have changed the files since the caller read them.
    let mut files = SettingsFiles::read(main)?;
    let origins = files.merge()?.origins;
    let mut changed = BTreeSet::new();
    for (name, field, new) in &edits {
        // A container is edited where it is defined; a new one goes into the main file.
        let path = origins.get(*name).map_or(main, PathBuf::as_path);
        let file = match files.files.iter().position(|file| file.path == path) {
            Some(index) => &mut files.files[index],
            None if missing == Missing::Create => {
                files.files.insert(0, new_file(main));
                &mut files.files[0]
            }
            None => bail!(
                "cannot set {} in settings file {}: it does not exist",
                settings::key(name, Some(field.name())),
                main.display()
            ),
        };
        file.text = match file.format() {
            Format::Toml => edit_toml(&file.text, name, *field, new),
            Format::Json => edit_json(&file.text, name, *field, new),
        }
        .with_context(|| {
            format!(
                "setting {} in {}",
                settings::key(name, Some(field.name())),
                path.display()
            )
        })?;
        changed.insert(path.to_owned());
    }
    files
        .load()
        .with_context(|| format!("refusing to set {keys}: the settings would be invalid"))?;
    for file in files
        .files
        .iter()
        .filter(|file| changed.contains(&file.path))
    {
        crate::atomic_file::write(&file.path, file.text.as_bytes(), file.mode)?;
    }
    Ok(())
}

/// An empty main settings file, as `set` creates it.
fn new_file(main: &Path) -> SettingsFile {
    let text = match Format::of(main) {
        Format::Toml => "",
        Format::Json => "{}",
    };
    SettingsFile {
        path: main.to_owned(),
        text: text.to_owned(),
        mode: NEW_FILE_MODE,
    }
}

/// Creates the settings file's directory (0755, root's) if it is missing.
fn create_parent(path: &Path) -> Result<()> {
    let Some(dir) = path.parent().filter(|dir| !dir.exists()) else {
        return Ok(());
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(NEW_DIR_MODE)
        .create(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(NEW_DIR_MODE)))
        .with_context(|| format!("creating settings directory {}", dir.display()))
}

/// What `get` prints for `keys`, in apiclient's shape: the settings from `settings` down to
/// each key, nested, the keys' results merged (a later key's wins where they overlap). A key
/// is `settings` (the main file's whole `settings` table, other settings too, with the
/// drop-ins' containers) or
/// `[settings.]bootstrap-containers[.NAME[.FIELD]]`; what is not set is left out, so a key
/// with nothing under it adds nothing (`{}` when no key finds anything):
///
/// `bootstrap-containers.x.mode` → `{"settings":{"bootstrap-containers":{"x":{"mode":"once"}}}}`
///
/// Errors: an unreadable or unparsable file, a key that is none of these.
pub fn get(main: &Path, keys: &[String]) -> Result<Value> {
    let files = SettingsFiles::read(main)?;
    files.ensure_some()?;
    get_from(&files.merge()?.root, keys)
}

/// [`get`] on settings text.
pub fn get_in(text: &str, format: Format, keys: &[String]) -> Result<Value> {
    get_from(&settings::document(text, format)?, keys)
}

/// [`get`] on a settings tree.
fn get_from(root: &Value, keys: &[String]) -> Result<Value> {
    let mut merged = Value::Object(Default::default());
    for key in keys {
        if let Some(found) = get_one(root, key)? {
            merge(&mut merged, found);
        }
    }
    Ok(merged)
}

/// One key's value in `root`, nested from `settings` down; `None` when nothing is set there.
fn get_one(root: &Value, key: &str) -> Result<Option<Value>> {
    let mut path = vec!["settings"];
    if key != "settings" {
        let (name, field) = parse_key(key)?;
        path.push(TABLE);
        path.extend(name);
        path.extend(field.map(Field::name));
    }
    let mut node = root;
    for part in &path {
        match node.get(part) {
            Some(child) => node = child,
            None => return Ok(None),
        }
    }
    Ok(Some(path.iter().rev().fold(node.clone(), |inner, part| {
        Value::Object([(part.to_string(), inner)].into_iter().collect())
    })))
}

/// Merges `from` into `into`: objects key by key, anything else replaced.
fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                match into.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        into.insert(key, value);
                    }
                }
            }
        }
        (into, from) => *into = from,
    }
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
    Table(BTreeMap<String, String>),
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
            // Not quoted: the values may be secrets.
            Kind::Table => NewValue::Table(serde_json::from_str(value).map_err(|_| {
                anyhow!("the value is not a JSON table of strings like {{\"NAME\":\"value\"}}")
            })?),
        })
    }

    fn to_toml(&self) -> toml_edit::Value {
        match self {
            NewValue::Text(text) => text.into(),
            NewValue::Flag(flag) => (*flag).into(),
            NewValue::List(items) => toml_edit::Value::Array(items.iter().collect()),
            NewValue::Table(table) => toml_edit::Value::InlineTable(
                table
                    .iter()
                    .map(|(key, value)| (key, toml_edit::Value::from(value)))
                    .collect(),
            ),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            NewValue::Text(text) => text.as_str().into(),
            NewValue::Flag(flag) => (*flag).into(),
            NewValue::List(items) => items.as_slice().into(),
            NewValue::Table(table) => table
                .iter()
                .map(|(key, value)| (key.clone(), Value::from(value.as_str())))
                .collect(),
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
    locks::flock(
        &lock_path,
        OpenOptions::new().create(true).truncate(false).write(true),
        FlockArg::LockExclusive,
    )
}
