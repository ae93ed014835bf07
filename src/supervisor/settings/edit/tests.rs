use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;
use crate::supervisor::settings::{load, Format, InvalidSettings, Mode};

const TOML: &str = r#"# Operator's notes: keep me.
[settings.motd]
text = "hello"

[settings.bootstrap-containers.disk-setup]
source = "/opt/bundles/disk"  # the bundle
mode = "once"     # off | once | always
essential = true

# The second one.
[settings.bootstrap-containers.motd]
source = "busybox:1.36"
mode = "always"

[other]
keep = [1, 2, 3]
"#;

const JSON: &str = r#"{
  "settings": {
    "motd": "hello",
    "bootstrap-containers": {
      "disk-setup": {
        "source": "/opt/bundles/disk",
        "mode": "once",
        "essential": true
      },
      "motd": {
        "source": "busybox:1.36",
        "mode": "always"
      }
    },
    "host-containers": {}
  }
}
"#;

/// A settings file with `text`, in a temporary directory kept alive by the caller.
fn file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn once_to_off_keeps_everything_else_in_toml() {
    let (_dir, path) = file("settings.toml", TOML);
    set_mode_off(&path, "disk-setup").unwrap();
    assert_eq!(
        read(&path),
        TOML.replace("mode = \"once\"", "mode = \"off\"")
    );
    assert_eq!(
        load(&path).unwrap().containers["disk-setup"].mode,
        Mode::Off
    );
}

#[test]
fn once_to_off_keeps_everything_else_in_json() {
    let (_dir, path) = file("settings.json", JSON);
    set_mode_off(&path, "disk-setup").unwrap();
    assert_eq!(
        read(&path),
        JSON.replace("\"mode\": \"once\"", "\"mode\": \"off\"")
    );
}

#[test]
fn set_every_kind_of_field() {
    let (_dir, path) = file("settings.toml", TOML);
    set(&path, "bootstrap-containers.motd.essential", "true").unwrap();
    set(
        &path,
        "bootstrap-containers.motd.command",
        r#"["sh","-c","echo hi"]"#,
    )
    .unwrap();
    set(&path, "settings.bootstrap-containers.motd.timeout", "5m").unwrap();
    set(&path, "bootstrap-containers.motd.user-data", "aGk=").unwrap();
    set(
        &path,
        "bootstrap-containers.motd.depends-on",
        r#"["disk-setup"]"#,
    )
    .unwrap();
    set(
        &path,
        "bootstrap-containers.motd.pull-policy",
        "if-not-present",
    )
    .unwrap();
    set(
        &path,
        "bootstrap-containers.motd.environment",
        r#"{"DISK":"/dev/nvme1n1","LEVEL":"debug"}"#,
    )
    .unwrap();
    let err = set(
        &path,
        "bootstrap-containers.motd.environment",
        r#"{"N":5,"S":"s3cret"}"#,
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("not a JSON table of strings")
            && !format!("{err:#}").contains("s3cret"),
        "{err:#}"
    );
    let text = read(&path);
    assert!(
        text.contains("environment = { DISK = \"/dev/nvme1n1\", LEVEL = \"debug\" }\n"),
        "{text}"
    );
    assert!(text.starts_with("# Operator's notes: keep me."), "{text}");
    assert!(text.contains("# The second one.\n[settings.bootstrap-containers.motd]\n"));
    assert!(
        text.contains("command = [\"sh\", \"-c\", \"echo hi\"]\n"),
        "{text}"
    );
    assert!(text.ends_with("[other]\nkeep = [1, 2, 3]\n"), "{text}");
    let motd = &load(&path).unwrap().containers["motd"];
    assert!(motd.essential);
    assert_eq!(motd.depends_on, ["disk-setup"]);
    assert_eq!(motd.user_data.as_ref().unwrap().as_bytes(), b"hi");
    assert_eq!(
        motd.environment.entries().collect::<Vec<_>>(),
        ["DISK=/dev/nvme1n1", "LEVEL=debug"]
    );
}

#[test]
fn set_creates_a_container_that_validates() {
    let (_dir, path) = file("settings.toml", TOML);
    let before = read(&path);
    let err = set(&path, "bootstrap-containers.new.mode", "once").unwrap_err();
    let shown = format!("{err:#}");
    assert!(
        shown.contains("refusing to set bootstrap-containers.new.mode"),
        "{shown}"
    );
    assert!(
        shown.contains("bootstrap-containers.new.source: is required"),
        "{shown}"
    );
    assert_eq!(read(&path), before);

    set(&path, "bootstrap-containers.new.source", "/opt/new").unwrap();
    set(&path, "bootstrap-containers.new.mode", "once").unwrap();
    let text = read(&path);
    assert!(
        text.contains(
            "[settings.bootstrap-containers.new]\nsource = \"/opt/new\"\nmode = \"once\"\n"
        ),
        "{text}"
    );
    assert!(
        !text.contains("[settings]\n"),
        "no empty parent headers: {text}"
    );
    assert_eq!(load(&path).unwrap().containers.len(), 3);
}

#[test]
fn set_creates_the_table_in_a_file_without_one() {
    let (_dir, path) = file("settings.toml", "# notes\n[settings]\nmotd = \"hi\"\n");
    set(&path, "bootstrap-containers.a.source", "/a").unwrap();
    assert_eq!(
        read(&path),
        "# notes\n[settings]\nmotd = \"hi\"\n\n[settings.bootstrap-containers.a]\nsource = \"/a\"\n"
    );
    let (_dir, path) = file("settings.json", "{\"other\": 1}");
    set(&path, "bootstrap-containers.a.source", "/a").unwrap();
    let value: serde_json::Value = serde_json::from_str(&read(&path)).unwrap();
    assert_eq!(
        value,
        json!({"other": 1, "settings": {"bootstrap-containers": {"a": {"source": "/a"}}}})
    );
}

#[test]
fn set_works_in_inline_tables() {
    let text = "[settings.bootstrap-containers]\na = { source = \"/a\" } # inline\n";
    let (_dir, path) = file("settings.toml", text);
    set(&path, "bootstrap-containers.a.mode", "always").unwrap();
    assert_eq!(
        read(&path),
        "[settings.bootstrap-containers]\na = { source = \"/a\" , mode = \"always\" } # inline\n"
    );
}

#[test]
fn invalid_edits_leave_the_file_byte_identical() {
    for (name, text) in [("settings.toml", TOML), ("settings.json", JSON)] {
        let (_dir, path) = file(name, text);
        let cases = [
            (
                "bootstrap-containers.disk-setup.mode",
                "sometimes",
                "is not one of off, once, always",
            ),
            (
                "bootstrap-containers.disk-setup.user-data",
                "not base64!",
                "not valid base64",
            ),
            (
                "bootstrap-containers.disk-setup.timeout",
                "soon",
                "is not a duration",
            ),
            (
                "bootstrap-containers.disk-setup.source",
                "",
                "must not be empty",
            ),
            (
                "bootstrap-containers.disk-setup.depends-on",
                r#"["disk-setup"]"#,
                "cannot depend on itself",
            ),
            (
                "bootstrap-containers.disk-setup.essential",
                "yes",
                "is not true or false",
            ),
            (
                "bootstrap-containers.disk-setup.command",
                "sh -c x",
                "is not a JSON list of strings",
            ),
            (
                "bootstrap-containers.disk-setup.command",
                "[]",
                "must not be empty",
            ),
            (
                "bootstrap-containers.disk-setup.nope",
                "x",
                "unknown field \"nope\"",
            ),
            ("bootstrap-containers.bad_name.mode", "off", "name must be"),
            (
                "bootstrap-containers.disk-setup",
                "x",
                "expected bootstrap-containers.NAME.FIELD",
            ),
            ("host-containers.x.mode", "off", "invalid key"),
        ];
        for (key, value, reason) in cases {
            let err = format!("{:#}", set(&path, key, value).unwrap_err());
            assert!(err.contains(reason), "{name} {key}={value}: {err}");
            assert_eq!(read(&path), text, "{name} {key}={value}");
        }
    }
}

#[test]
fn an_edit_closing_a_cycle_is_refused() {
    let text = TOML.replace(
        "mode = \"always\"",
        "mode = \"always\"\ndepends-on = [\"disk-setup\"]",
    );
    let (_dir, path) = file("settings.toml", &text);
    let err = set(
        &path,
        "bootstrap-containers.disk-setup.depends-on",
        r#"["motd"]"#,
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("dependency cycle disk-setup -> motd -> disk-setup"),
        "{err:#}"
    );
    assert_eq!(read(&path), text);
}

#[test]
fn refusal_carries_the_problems() {
    let (_dir, path) = file("settings.toml", TOML);
    let err = set(&path, "bootstrap-containers.motd.mode", "sometimes").unwrap_err();
    let invalid = err.downcast_ref::<InvalidSettings>().unwrap();
    assert_eq!(invalid.problems[0].key, "bootstrap-containers.motd.mode");
}

#[test]
fn an_already_invalid_file_is_not_edited() {
    let text = "[settings.bootstrap-containers.a]\nsource = \"/a\"\nmode = \"once\"\n\
                [settings.bootstrap-containers.b]\nmode = \"once\"\n";
    let (_dir, path) = file("settings.toml", text);
    let err = format!("{:#}", set_mode_off(&path, "a").unwrap_err());
    assert!(
        err.contains("bootstrap-containers.b.source: is required"),
        "{err}"
    );
    assert_eq!(read(&path), text);
}

#[test]
fn mode_is_kept_and_a_lock_file_is_used() {
    for mode in [0o600, 0o640, 0o644] {
        let (dir, path) = file("settings.toml", TOML);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        set_mode_off(&path, "motd").unwrap();
        let now = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(now, mode, "{mode:o}");
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["settings.toml", "settings.toml.lock"]);
    }
}

#[test]
fn missing_file_is_an_error_naming_it_for_once_to_off_and_get() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.toml");
    let err = format!("{:#}", set_mode_off(&path, "a").unwrap_err());
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(!path.exists());
    let err = format!(
        "{:#}",
        set(&path, "bootstrap-containers.a.source", "/a").unwrap_err()
    );
    assert!(err.contains("it does not exist"), "{err}");
    assert!(!path.exists());
    let err = format!(
        "{:#}",
        get(&path, &keys(&["bootstrap-containers"])).unwrap_err()
    );
    assert!(err.contains(&path.display().to_string()), "{err}");
}

#[test]
fn set_all_creates_a_missing_file_and_directory() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "etc/bootstrap-containers/settings.toml",
        "json/settings.json",
    ] {
        let path = dir.path().join(name);
        // The workshop's first step, in any order: validated once, after all of them.
        set_all(
            &path,
            &[
                ("bootstrap-containers.bootstrap.mode", "always"),
                ("settings.bootstrap-containers.bootstrap.source", "/opt/b"),
                ("bootstrap-containers.bootstrap.essential", "false"),
            ],
        )
        .unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&path), 0o600, "{name}");
        assert_eq!(mode(path.parent().unwrap()), 0o755, "{name}");
        let container = &load(&path).unwrap().containers["bootstrap"];
        assert_eq!(container.mode, Mode::Always);
        assert!(!container.essential);
    }
    assert_eq!(
        read(&dir.path().join("etc/bootstrap-containers/settings.toml")),
        "[settings.bootstrap-containers.bootstrap]\nmode = \"always\"\nsource = \"/opt/b\"\nessential = false\n"
    );
}

#[test]
fn set_all_applies_every_assignment_or_none() {
    let (_dir, path) = file("settings.toml", TOML);
    let before = read(&path);
    for assignments in [
        // The last is invalid once applied: the first must not be written either.
        vec![
            ("bootstrap-containers.motd.mode", "off"),
            ("bootstrap-containers.motd.timeout", "soon"),
        ],
        // A bad key after a good one.
        vec![
            ("bootstrap-containers.motd.mode", "off"),
            ("bootstrap-containers.motd.bogus", "x"),
        ],
    ] {
        assert!(set_all(&path, &assignments).is_err());
        assert_eq!(read(&path), before);
    }
    // A missing file is not created when the assignments are refused.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("settings.toml");
    assert!(set_all(&missing, &[("bootstrap-containers.a.mode", "once")]).is_err());
    assert!(!missing.exists());
}

fn keys(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

#[test]
fn get_prints_apiclients_nested_shape() {
    let with_user_data = TOML.replace("essential = true", "essential = true\nuser-data = \"aGk=\"");
    for (text, format) in [
        (with_user_data.as_str(), Format::Toml),
        (JSON, Format::Json),
    ] {
        let get = |key: &[&str]| get_in(text, format, &keys(key)).unwrap();
        assert_eq!(
            get(&["bootstrap-containers.disk-setup.mode"]),
            json!({"settings": {"bootstrap-containers": {"disk-setup": {"mode": "once"}}}})
        );
        assert_eq!(
            get(&["settings.bootstrap-containers.disk-setup.essential"]),
            json!({"settings": {"bootstrap-containers": {"disk-setup": {"essential": true}}}})
        );
        assert_eq!(
            get(&["bootstrap-containers.motd"]),
            json!({"settings": {"bootstrap-containers": {"motd": {"source": "busybox:1.36", "mode": "always"}}}})
        );
        let all = get(&["settings.bootstrap-containers"]);
        let names: Vec<&String> = all["settings"]["bootstrap-containers"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(names, ["disk-setup", "motd"]);
        assert_eq!(all.as_object().unwrap().len(), 1);
        assert_eq!(get(&["bootstrap-containers"]), all);
        // Several keys merge; what is not set adds nothing.
        assert_eq!(
            get(&[
                "bootstrap-containers.motd.mode",
                "bootstrap-containers.disk-setup.source",
                "bootstrap-containers.motd.timeout",
                "bootstrap-containers.nope",
            ]),
            json!({"settings": {"bootstrap-containers": {
                "motd": {"mode": "always"},
                "disk-setup": {"source": "/opt/bundles/disk"},
            }}})
        );
        assert_eq!(get(&["bootstrap-containers.nope"]), json!({}));
        // `settings` is the whole table, other settings too.
        assert!(get(&["settings"])["settings"].get("motd").is_some());
        for bad in [
            "bootstrap-containers.motd.bogus",
            "other",
            "bootstrap-containers.no_name",
        ] {
            assert!(get_in(text, format, &keys(&[bad])).is_err(), "{bad}");
        }
    }
    assert_eq!(
        get_in(
            &with_user_data,
            Format::Toml,
            &keys(&["bootstrap-containers.disk-setup.user-data"])
        )
        .unwrap(),
        json!({"settings": {"bootstrap-containers": {"disk-setup": {"user-data": "aGk="}}}})
    );
    assert_eq!(
        get_in("", Format::Toml, &keys(&["bootstrap-containers"])).unwrap(),
        json!({})
    );

    let (_dir, path) = file("settings.json", JSON);
    assert_eq!(
        get(&path, &keys(&["bootstrap-containers.motd.mode"])).unwrap(),
        json!({"settings": {"bootstrap-containers": {"motd": {"mode": "always"}}}})
    );
}

/// A main settings file with container `main` and a drop-in with `dropin`, both `once`.
fn with_dropin() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let (dir, main) = file(
        "settings.toml",
        "[settings.bootstrap-containers.main]\nsource = \"/m\"\nmode = \"once\"\n",
    );
    let dropins = dir.path().join("settings.d");
    std::fs::create_dir(&dropins).unwrap();
    let dropin = dropins.join("10-dropin.toml");
    std::fs::write(
        &dropin,
        "# from cloud-init\n[settings.bootstrap-containers.dropin]\nsource = \"/d\"\nmode = \"once\"\n",
    )
    .unwrap();
    (dir, main, dropin)
}

#[test]
fn a_container_is_edited_in_the_file_that_defines_it() {
    let (_dir, main, dropin) = with_dropin();
    let main_before = read(&main);
    set_mode_off(&main, "dropin").unwrap();
    assert_eq!(read(&main), main_before);
    assert_eq!(
        read(&dropin),
        "# from cloud-init\n[settings.bootstrap-containers.dropin]\nsource = \"/d\"\nmode = \"off\"\n"
    );
    set_all(
        &main,
        &[
            ("bootstrap-containers.dropin.essential", "true"),
            ("bootstrap-containers.new.source", "/n"),
        ],
    )
    .unwrap();
    assert!(read(&dropin).contains("essential = true"));
    assert!(read(&main).contains("[settings.bootstrap-containers.new]"));
    let settings = load(&main).unwrap();
    assert_eq!(settings.origins["new"], main);
    assert_eq!(settings.origins["dropin"], dropin);
}

#[test]
fn a_drop_in_is_edited_without_a_main_file_and_one_lock_covers_all() {
    let (dir, main, dropin) = with_dropin();
    std::fs::remove_file(&main).unwrap();
    set_mode_off(&main, "dropin").unwrap();
    assert!(read(&dropin).contains("mode = \"off\""));
    assert!(!main.exists());
    let err = format!("{:#}", set_mode_off(&main, "main").unwrap_err());
    assert!(err.contains(&main.display().to_string()), "{err}");
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["settings.d", "settings.toml.lock"]);
    assert_eq!(
        std::fs::read_dir(dropin.parent().unwrap()).unwrap().count(),
        1
    );
}

#[test]
fn an_edit_across_files_that_would_be_invalid_writes_nothing() {
    let (_dir, main, dropin) = with_dropin();
    let before = (read(&main), read(&dropin));
    let err = set_all(
        &main,
        &[
            ("bootstrap-containers.main.mode", "off"),
            ("bootstrap-containers.dropin.depends-on", "[\"nobody\"]"),
        ],
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("unknown container \"nobody\""),
        "{err:#}"
    );
    assert_eq!((read(&main), read(&dropin)), before);
}

#[test]
fn get_shows_the_drop_ins_containers() {
    let (_dir, main, _dropin) = with_dropin();
    let got = get(&main, &["bootstrap-containers".into()]).unwrap();
    assert_eq!(
        got,
        json!({"settings": {"bootstrap-containers": {
            "main": {"source": "/m", "mode": "once"},
            "dropin": {"source": "/d", "mode": "once"},
        }}})
    );
}
