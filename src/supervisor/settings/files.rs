//! Where the settings come from: the main file (`--settings`) and the drop-ins of the
//! `settings.d/` directory beside it (`*.toml` and `*.json`), read in lexical order after the
//! main file, so cloud-init `write_files`, Ignition or config management can add a container
//! without editing one shared file. Either may be absent, not both.
//!
//! Every file decides what runs as root at boot, so each must belong to root and be writable
//! by nobody else (as `registries.toml`), and so must `settings.d/`. A container is defined in
//! one file only; the merged tree is validated as a whole, so `depends-on` may name a container
//! of another file.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};

use super::{document, key, validate, Format, InvalidSettings, Problem, Settings, TABLE};
use crate::private_file;

/// The drop-in directory's name, beside the main file.
pub(crate) const DROPIN_DIR: &str = "settings.d";

/// One settings file as read.
#[derive(Clone, Debug)]
pub(crate) struct SettingsFile {
    pub path: PathBuf,
    pub text: String,
    /// Its permission bits, which an edit keeps.
    pub mode: u32,
}

/// The settings files that exist: the main file first, then the drop-ins by file name.
#[derive(Clone, Debug)]
pub(crate) struct SettingsFiles {
    pub main: PathBuf,
    pub files: Vec<SettingsFile>,
}

/// The merged tree of every file, before validation.
pub(crate) struct Merged {
    /// The main file's tree (other settings included), with every drop-in's containers added
    /// under `settings.bootstrap-containers`.
    pub root: Value,
    /// The file that defines each container.
    pub origins: BTreeMap<String, PathBuf>,
    /// Containers defined twice, and drop-ins that are not shaped as settings.
    pub problems: Vec<Problem>,
}

/// `settings.d/` beside the main file.
pub(crate) fn dropin_dir(main: &Path) -> PathBuf {
    main.parent().unwrap_or(Path::new("/")).join(DROPIN_DIR)
}

impl SettingsFile {
    pub(crate) fn format(&self) -> Format {
        Format::of(&self.path)
    }

    /// The file at `path`, checked by [`private_file::check`]; `None` when it does not exist.
    fn read(path: &Path) -> Result<Option<SettingsFile>> {
        let read = private_file::read(path)
            .with_context(|| format!("settings file {}", path.display()))?;
        Ok(read.map(|(text, meta)| SettingsFile {
            path: path.to_owned(),
            text,
            mode: meta.permissions().mode() & 0o7777,
        }))
    }
}

impl SettingsFiles {
    /// Reads the main file, if it exists, and every drop-in. Errors: a file or `settings.d/`
    /// that is unreadable, not root's or writable by others, a drop-in that is not a regular
    /// file. Finding no file at all is not an error here ([`SettingsFiles::load`] refuses it).
    pub(crate) fn read(main: &Path) -> Result<SettingsFiles> {
        let mut files: Vec<SettingsFile> = SettingsFile::read(main)?.into_iter().collect();
        for path in dropins(&dropin_dir(main))? {
            // A drop-in removed since the listing is simply gone.
            files.extend(SettingsFile::read(&path)?);
        }
        Ok(SettingsFiles {
            main: main.to_owned(),
            files,
        })
    }

    /// Merges and validates every file. Errors: no file at all, a file that does not parse,
    /// and an [`InvalidSettings`] listing every problem, each naming its file when there are
    /// several.
    pub(crate) fn load(&self) -> Result<Settings> {
        self.ensure_some()?;
        let merged = self.merge()?;
        let mut problems = merged.problems;
        match validate(&merged.root) {
            Ok(settings) if problems.is_empty() => {
                return Ok(Settings {
                    origins: merged.origins,
                    ..settings
                })
            }
            Ok(_) => {}
            // Validation knows one tree: with several files, each problem gets its file (the
            // container's, or the main file's for the tree's own shape).
            Err(invalid) => problems.extend(invalid.problems.into_iter().map(|mut problem| {
                if self.files.len() > 1 {
                    let origin = problem
                        .container
                        .as_ref()
                        .and_then(|c| merged.origins.get(c));
                    problem.file = Some(origin.unwrap_or(&self.main).clone());
                }
                problem
            })),
        }
        let context = match &self.files[..] {
            [only] => format!("settings file {}", only.path.display()),
            _ => format!(
                "settings {} and {}",
                self.main.display(),
                dropin_dir(&self.main).display()
            ),
        };
        Err(InvalidSettings { problems }).context(context)
    }

    /// Refuses finding no settings file at all, naming both places looked in.
    pub(crate) fn ensure_some(&self) -> Result<()> {
        if self.files.is_empty() {
            bail!(
                "no settings: {} does not exist and {} has no *.toml or *.json file",
                self.main.display(),
                dropin_dir(&self.main).display()
            );
        }
        Ok(())
    }

    /// The files' trees merged: see [`Merged`]. Errors: a file that is not valid TOML or
    /// JSON, named.
    pub(crate) fn merge(&self) -> Result<Merged> {
        let mut root = Value::Object(Map::new());
        let mut origins = BTreeMap::new();
        let mut problems = Vec::new();
        for file in &self.files {
            let tree = document(&file.text, file.format())
                .with_context(|| format!("settings file {}", file.path.display()))?;
            if file.path == self.main {
                for name in containers(&tree).into_iter().flat_map(Map::keys) {
                    origins.insert(name.clone(), file.path.clone());
                }
                root = tree;
                continue;
            }
            let Some(table) = containers(&tree) else {
                if !is_settings_shaped(&tree) {
                    problems.push(Problem {
                        key: TABLE.into(),
                        reason: "must be a table under settings".into(),
                        container: None,
                        file: Some(file.path.clone()),
                    });
                }
                continue;
            };
            for (name, container) in table {
                if let Some(first) = origins.get(name) {
                    problems.push(Problem {
                        key: key(name, None),
                        reason: format!(
                            "defined in both {} and {}",
                            first.display(),
                            file.path.display()
                        ),
                        container: Some(name.clone()),
                        file: None,
                    });
                    continue;
                }
                origins.insert(name.clone(), file.path.clone());
                // A main file whose table is not a table is reported by validation.
                if let Some(into) = containers_mut(&mut root) {
                    into.insert(name.clone(), container.clone());
                }
            }
        }
        Ok(Merged {
            root,
            origins,
            problems,
        })
    }
}

/// The drop-ins in `dir`, by file name: `*.toml` and `*.json`, hidden files left out (editors'
/// and our own temporary files). None when `dir` does not exist.
fn dropins(dir: &Path) -> Result<Vec<PathBuf>> {
    let meta = match std::fs::metadata(dir) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", dir.display())),
    };
    if !meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    // Whoever may write the directory may swap its files.
    private_file::check(dir, &meta)?;
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with('.') && (name.ends_with(".toml") || name.ends_with(".json")) {
            paths.push(entry.path());
        }
    }
    paths.sort();
    Ok(paths)
}

/// `settings.bootstrap-containers` in `tree`, when it is a table.
fn containers(tree: &Value) -> Option<&Map<String, Value>> {
    tree.get("settings")?.get(TABLE)?.as_object()
}

fn containers_mut(root: &mut Value) -> Option<&mut Map<String, Value>> {
    let settings = root
        .as_object_mut()?
        .entry("settings")
        .or_insert_with(|| Value::Object(Map::new()));
    settings
        .as_object_mut()?
        .entry(TABLE)
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
}

/// Whether a drop-in without containers is still settings: a table whose `settings` and
/// `settings.bootstrap-containers`, where present, are tables.
fn is_settings_shaped(tree: &Value) -> bool {
    let Some(top) = tree.as_object() else {
        return false;
    };
    match top.get("settings") {
        None => true,
        Some(settings) => match settings.as_object() {
            None => false,
            Some(settings) => settings.get(TABLE).is_none_or(Value::is_object),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::supervisor::settings::load;

    /// A directory with a main settings path (not written) and its `settings.d/`.
    struct Dir {
        _dir: tempfile::TempDir,
        main: PathBuf,
        dropins: PathBuf,
    }

    fn dir() -> Dir {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("settings.toml");
        let dropins = dir.path().join(DROPIN_DIR);
        std::fs::create_dir(&dropins).unwrap();
        Dir {
            _dir: dir,
            main,
            dropins,
        }
    }

    fn container(name: &str, extra: &str) -> String {
        format!("[settings.bootstrap-containers.{name}]\nsource = \"/b/{name}\"\nmode = \"once\"\n{extra}")
    }

    fn error(main: &Path) -> String {
        format!("{:#}", load(main).unwrap_err())
    }

    #[test]
    fn drop_ins_add_containers_after_the_main_file_in_lexical_order() {
        let d = dir();
        std::fs::write(&d.main, container("main", "depends-on = [\"json\"]\n")).unwrap();
        std::fs::write(d.dropins.join("20-toml.toml"), container("toml", "")).unwrap();
        let json = r#"{"settings":{"bootstrap-containers":{"json":{"source":"/b/json"}}}}"#;
        std::fs::write(d.dropins.join("10-json.json"), json).unwrap();
        let files = SettingsFiles::read(&d.main).unwrap();
        let order: Vec<&Path> = files.files.iter().map(|f| f.path.as_path()).collect();
        assert_eq!(
            order,
            [
                d.main.clone(),
                d.dropins.join("10-json.json"),
                d.dropins.join("20-toml.toml")
            ]
        );
        let settings = files.load().unwrap();
        assert_eq!(
            settings.containers.keys().collect::<Vec<_>>(),
            ["json", "main", "toml"]
        );
        assert_eq!(settings.origins["main"], d.main);
        assert_eq!(settings.origins["json"], d.dropins.join("10-json.json"));
        assert_eq!(settings.origins["toml"], d.dropins.join("20-toml.toml"));
    }

    #[test]
    fn drop_ins_alone_are_settings_and_nothing_at_all_is_an_error() {
        let d = dir();
        let err = error(&d.main);
        assert!(
            err.contains("no settings") && err.contains(&d.dropins.display().to_string()),
            "{err}"
        );
        std::fs::write(d.dropins.join("a.toml"), container("a", "")).unwrap();
        assert_eq!(
            load(&d.main).unwrap().origins["a"],
            d.dropins.join("a.toml")
        );
    }

    #[test]
    fn hidden_and_other_files_are_not_drop_ins() {
        let d = dir();
        std::fs::write(d.dropins.join("a.toml"), container("a", "")).unwrap();
        for other in [
            ".b.toml",
            "b.toml~",
            "README",
            "b.toml.rpmsave",
            ".a.toml.tmp-1-0",
        ] {
            std::fs::write(d.dropins.join(other), "not settings").unwrap();
        }
        let settings = load(&d.main).unwrap();
        assert_eq!(settings.containers.keys().collect::<Vec<_>>(), ["a"]);
    }

    #[test]
    fn a_container_in_two_files_is_an_error_naming_both() {
        let d = dir();
        std::fs::write(&d.main, container("x", "")).unwrap();
        std::fs::write(d.dropins.join("x.toml"), container("x", "")).unwrap();
        let err = error(&d.main);
        assert!(
            err.contains(&format!(
                "bootstrap-containers.x: defined in both {} and {}",
                d.main.display(),
                d.dropins.join("x.toml").display()
            )),
            "{err}"
        );
    }

    #[test]
    fn each_problem_names_its_file() {
        let d = dir();
        std::fs::write(&d.main, container("good", "depends-on = [\"nobody\"]\n")).unwrap();
        std::fs::write(
            d.dropins.join("bad.toml"),
            container("bad", "essential = 3\n"),
        )
        .unwrap();
        std::fs::write(d.dropins.join("shape.toml"), "settings = 1\n").unwrap();
        let err = error(&d.main);
        for expected in [
            format!(
                "bootstrap-containers.good.depends-on: unknown container \"nobody\" (in {})",
                d.main.display()
            ),
            format!(
                "bootstrap-containers.bad.essential: must be true or false, not a number (in {})",
                d.dropins.join("bad.toml").display()
            ),
            format!(
                "bootstrap-containers: must be a table under settings (in {})",
                d.dropins.join("shape.toml").display()
            ),
        ] {
            assert!(err.contains(&expected), "{expected}\nin\n{err}");
        }
        std::fs::write(d.dropins.join("broken.toml"), "[[[").unwrap();
        let err = error(&d.main);
        assert!(
            err.contains("broken.toml") && err.contains("invalid TOML"),
            "{err}"
        );
    }

    #[test]
    fn files_others_may_write_are_refused_by_name() {
        let d = dir();
        let dropin = d.dropins.join("a.toml");
        std::fs::write(&d.main, container("m", "")).unwrap();
        std::fs::write(&dropin, container("a", "")).unwrap();
        let chmod = |path: &Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        for (path, mode, back) in [
            (&d.main, 0o620, 0o600),
            (&dropin, 0o602, 0o644),
            (&d.dropins, 0o777, 0o755),
        ] {
            chmod(path, mode);
            let err = error(&d.main);
            assert!(
                err.contains(&format!(
                    "{} is writable by group or others",
                    path.display()
                )),
                "{err}"
            );
            chmod(path, back);
        }
        std::os::unix::fs::chown(&dropin, Some(1234), None).unwrap();
        let err = error(&d.main);
        assert!(
            err.contains(&format!("{} is owned by uid 1234", dropin.display())),
            "{err}"
        );
        std::fs::remove_file(&dropin).unwrap();
        std::fs::create_dir(&dropin).unwrap();
        assert!(error(&d.main).contains("is not a regular file"));
    }
}
