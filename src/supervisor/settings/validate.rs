//! Validation of a whole settings tree: every invalid value is found in one pass, so one run
//! reports every problem at once (name, field, reason), and nothing runs.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::*;

/// Validates a whole settings tree; no `settings.bootstrap-containers` means no containers.
pub fn validate(root: &Value) -> Result<Settings, InvalidSettings> {
    let mut problems = Problems::default();
    let table = containers_table(root, &mut problems);
    let mut containers = BTreeMap::new();
    for (name, value) in table.into_iter().flatten() {
        if let Err(reason) = check_name(name) {
            problems.at(name, None, reason);
        }
        let fields = match as_map(value) {
            Ok(fields) => fields,
            Err(reason) => {
                problems.at(name, None, reason);
                continue;
            }
        };
        if let Some(container) = parse_container(name, fields, &mut problems) {
            containers.insert(name.clone(), container);
        }
    }
    if let Some(table) = table {
        check_dependencies(table, &mut problems);
    }
    if problems.0.is_empty() {
        Ok(Settings {
            containers,
            origins: BTreeMap::new(),
        })
    } else {
        Err(InvalidSettings {
            problems: problems.0,
        })
    }
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    /// A problem with the settings' structure, outside any container.
    fn push(&mut self, key: String, reason: String) {
        self.0.push(Problem {
            key,
            reason,
            container: None,
            file: None,
        });
    }

    /// A problem with container `name`, or with its `field`.
    fn at(&mut self, name: &str, field: Option<&str>, reason: String) {
        self.0.push(Problem {
            key: key(name, field),
            reason,
            container: Some(name.to_owned()),
            file: None,
        });
    }
}

/// `settings.bootstrap-containers`, if the file has one and it is a table.
fn containers_table<'a>(
    root: &'a Value,
    problems: &mut Problems,
) -> Option<&'a Map<String, Value>> {
    let settings = as_table(root, "the top level", problems)?.get("settings")?;
    let table = as_table(settings, "settings", problems)?.get(TABLE)?;
    as_table(table, TABLE, problems)
}

fn as_table<'a>(
    value: &'a Value,
    key: &str,
    problems: &mut Problems,
) -> Option<&'a Map<String, Value>> {
    as_map(value)
        .map_err(|reason| problems.push(key.into(), reason))
        .ok()
}

fn as_map(value: &Value) -> Result<&Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| format!("must be a table, not {}", kind_of(value)))
}

fn parse_container(
    name: &str,
    fields: &Map<String, Value>,
    problems: &mut Problems,
) -> Option<Container> {
    let mut source = None;
    let mut mode = Mode::default();
    let mut essential = false;
    let mut user_data = None;
    let mut command = None;
    let mut timeout = None;
    let mut depends_on = Vec::new();
    let mut pull_policy = PullPolicy::default();
    let mut pull_progress_timeout = None;
    let mut pull_timeout = None;
    let mut environment = Environment::default();
    for (field_name, value) in fields {
        let result = Field::from_name(field_name).and_then(|field| match field {
            Field::Source => text(value)
                .and_then(Source::parse)
                .map(|s| source = Some(s)),
            Field::Mode => text(value).and_then(Mode::parse).map(|m| mode = m),
            Field::Essential => flag(value).map(|e| essential = e),
            Field::UserData => text(value)
                .and_then(UserData::decode)
                .map(|u| user_data = Some(u)),
            Field::Command => list(value)
                .and_then(check_command)
                .map(|c| command = Some(c)),
            Field::Timeout => text(value)
                .and_then(parse_duration)
                .map(|t| timeout = Some(t)),
            // References and cycles are checked across containers, in check_dependencies.
            Field::DependsOn => list(value).map(|d| depends_on = d),
            Field::PullPolicy => text(value)
                .and_then(|text| choose(text, &PullPolicy::ALL, PullPolicy::name))
                .map(|p| pull_policy = p),
            Field::PullProgressTimeout => text(value)
                .and_then(parse_duration)
                .map(|t| pull_progress_timeout = Some(t)),
            Field::PullTimeout => text(value)
                .and_then(parse_duration)
                .map(|t| pull_timeout = Some(t)),
            Field::Environment => variables(value).map(|e| environment = e),
        });
        if let Err(reason) = result {
            problems.at(name, Some(field_name), reason);
        }
    }
    let has = |field: Field| fields.contains_key(field.name());
    if !has(Field::Source) {
        if has(Field::UserData) {
            source = Some(Source::UserDataScript);
        } else {
            problems.at(
                name,
                Some(Field::Source.name()),
                "is required unless user-data is set, which then runs as a script (a bundle \
                 path, oci-layout:/path:tag or an image reference)"
                    .into(),
            );
        }
    }
    depends_on.sort();
    depends_on.dedup();
    Some(Container {
        source: source?,
        mode,
        essential,
        user_data,
        command,
        timeout,
        depends_on,
        pull_policy,
        pull_progress_timeout,
        pull_timeout,
        environment,
    })
}

/// `environment`: a table of strings under valid names; a message names the variable, never
/// its value.
fn variables(value: &Value) -> Result<Environment, String> {
    let table = value.as_object().ok_or_else(|| {
        format!(
            "must be a table of NAME = \"value\", not {}",
            kind_of(value)
        )
    })?;
    let mut variables = BTreeMap::new();
    for (name, value) in table {
        Environment::check_name(name)?;
        let value = value
            .as_str()
            .ok_or_else(|| format!("{name} must be a string, not {}", kind_of(value)))?;
        // exec takes C strings, which end at the first NUL.
        if value.contains('\0') {
            return Err(format!("{name} contains a NUL character"));
        }
        variables.insert(name.clone(), value.to_owned());
    }
    Ok(Environment(variables))
}

fn check_command(argv: Vec<String>) -> Result<Vec<String>, String> {
    if argv.is_empty() {
        return Err("must not be empty".into());
    }
    if argv[0].is_empty() {
        return Err("the program (first element) must not be empty".into());
    }
    // exec takes C strings, which end at the first NUL.
    if let Some(i) = argv.iter().position(|arg| arg.contains('\0')) {
        return Err(format!("element {i} contains a NUL character"));
    }
    Ok(argv)
}

/// Unknown names, self-dependencies and cycles in `depends-on`. Reads the raw lists leniently:
/// their types are reported by `parse_container`.
fn check_dependencies(table: &Map<String, Value>, problems: &mut Problems) {
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, value) in table {
        let field = Field::DependsOn.name();
        let targets = value
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        let edges = graph.entry(name).or_default();
        for target in targets.filter_map(Value::as_str) {
            if target == name {
                problems.at(
                    name,
                    Some(field),
                    "a container cannot depend on itself".into(),
                );
            } else if !table.contains_key(target) {
                problems.at(name, Some(field), format!("unknown container {target:?}"));
            } else {
                edges.insert(target);
            }
        }
    }
    let mut done = BTreeSet::new();
    for &start in graph.keys() {
        find_cycles(start, &graph, &mut Vec::new(), &mut done, problems);
    }
}

/// Depth-first search; a dependency already on `path` closes a cycle, reported once, at the
/// container where the cycle starts.
fn find_cycles<'a>(
    node: &'a str,
    graph: &BTreeMap<&'a str, BTreeSet<&'a str>>,
    path: &mut Vec<&'a str>,
    done: &mut BTreeSet<&'a str>,
    problems: &mut Problems,
) {
    if done.contains(node) {
        return;
    }
    if let Some(at) = path.iter().position(|&n| n == node) {
        let mut cycle = path[at..].to_vec();
        cycle.push(node);
        problems.at(
            node,
            Some(Field::DependsOn.name()),
            format!("dependency cycle {}", cycle.join(" -> ")),
        );
        return;
    }
    path.push(node);
    for &next in graph.get(node).into_iter().flatten() {
        find_cycles(next, graph, path, done, problems);
    }
    path.pop();
    done.insert(node);
}

fn text(value: &Value) -> Result<&str, String> {
    value
        .as_str()
        .ok_or_else(|| format!("must be a string, not {}", kind_of(value)))
}

fn flag(value: &Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| format!("must be true or false, not {}", kind_of(value)))
}

fn list(value: &Value) -> Result<Vec<String>, String> {
    let items = value
        .as_array()
        .ok_or_else(|| format!("must be a list of strings, not {}", kind_of(value)))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let not_string = || format!("element {i} must be a string, not {}", kind_of(item));
            item.as_str().map(str::to_owned).ok_or_else(not_string)
        })
        .collect()
}

/// A value's type, for messages; never the value itself, which may be a secret.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}
