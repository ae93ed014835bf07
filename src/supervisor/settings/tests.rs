use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn toml(text: &str) -> Result<Settings, InvalidSettings> {
    validate(&document(text, Format::Toml).unwrap())
}

/// The problems of an invalid TOML text, one "key: reason" line each.
fn problems(text: &str) -> Vec<String> {
    toml(text)
        .unwrap_err()
        .problems
        .iter()
        .map(|p| format!("{}: {}", p.key, p.reason))
        .collect()
}

/// The single problem of a container `c` with `fields` (plus a valid source unless given).
fn problem(fields: &str) -> String {
    let source = if fields.contains("source") {
        ""
    } else {
        "source = \"/b\"\n"
    };
    let found = problems(&format!(
        "[settings.bootstrap-containers.c]\n{source}{fields}"
    ));
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].clone()
}

fn container(fields: &str) -> Container {
    let text = format!("[settings.bootstrap-containers.c]\nsource = \"/b\"\n{fields}");
    toml(&text).unwrap().containers.remove("c").unwrap()
}

#[test]
fn full_container() {
    let c = container(
        r#"
        mode = "once"
        essential = true
        user-data = "aGVsbG8="
        command = ["sh", "-c", "echo hi"]
        timeout = "90s"
        pull-policy = "if-not-present"
        depends-on = ["d"]
        [settings.bootstrap-containers.d]
        source = "/d"
        "#,
    );
    assert_eq!(c.source, Source::Bundle(PathBuf::from("/b")));
    assert_eq!(c.mode, Mode::Once);
    assert!(c.essential);
    assert_eq!(c.user_data.as_ref().unwrap().as_bytes(), b"hello");
    assert_eq!(c.command.unwrap(), ["sh", "-c", "echo hi"]);
    assert_eq!(c.timeout, Some(Duration::from_secs(90)));
    assert_eq!(c.pull_policy, PullPolicy::IfNotPresent);
    assert_eq!(c.depends_on, ["d"]);
}

#[test]
fn defaults() {
    let c = container("");
    assert_eq!(c.mode, Mode::Off);
    assert!(!c.essential);
    assert_eq!(c.user_data, None);
    assert_eq!(c.command, None);
    assert_eq!(c.timeout, None);
    assert!(c.depends_on.is_empty());
    assert_eq!(c.pull_policy, PullPolicy::Always);
}

#[test]
fn no_table_means_no_containers() {
    for text in [
        "",
        "# nothing\n",
        "[settings]\nmotd = \"hi\"\n",
        "[other]\nx = 1\n",
    ] {
        assert!(toml(text).unwrap().containers.is_empty(), "{text:?}");
    }
    let json = parse(r#"{"settings": {"motd": "hi"}}"#, Format::Json).unwrap();
    assert!(json.containers.is_empty());
}

#[test]
fn json_has_the_same_shape() {
    let text = r#"{"settings": {"bootstrap-containers": {"disk-setup": {
        "source": "oci-layout:/var/lib/images:v1", "mode": "always", "essential": true,
        "depends-on": []}}}}"#;
    let settings = parse(text, Format::Json).unwrap();
    let c = &settings.containers["disk-setup"];
    assert_eq!(c.mode, Mode::Always);
    assert_eq!(
        c.source,
        Source::OciLayout {
            path: PathBuf::from("/var/lib/images"),
            tag: "v1".into()
        }
    );
    let err = parse(
        r#"{"settings": {"bootstrap-containers": {"x": {"source": "/b", "mode": null}}}}"#,
        Format::Json,
    )
    .unwrap_err();
    assert_eq!(
        err.downcast_ref::<InvalidSettings>().unwrap().to_string(),
        "bootstrap-containers.x.mode: must be a string, not null"
    );
}

#[test]
fn format_follows_the_extension() {
    assert_eq!(Format::of(Path::new("/etc/x/settings.json")), Format::Json);
    assert_eq!(Format::of(Path::new("/etc/x/settings.toml")), Format::Toml);
    assert_eq!(Format::of(Path::new("/etc/x/settings")), Format::Toml);
}

#[test]
fn a_syntax_error_names_its_place_and_never_quotes_the_file() {
    // An unterminated user-data string: toml's own message would quote the line.
    for text in [
        "[settings.bootstrap-containers.x]\nsource = \"/b\"\nuser-data = \"c2VjcmV0LXRva2Vu\n",
        "[settings.bootstrap-containers.x]\nuser-data = c2VjcmV0LXRva2Vu\n",
    ] {
        let err = format!("{:#}", parse(text, Format::Toml).unwrap_err());
        assert!(!err.contains("c2VjcmV0"), "{err}");
        assert!(err.starts_with("invalid TOML at line "), "{err}");
    }
}

#[test]
fn syntax_errors_are_not_validation_errors() {
    let err = parse("[settings", Format::Toml).unwrap_err();
    assert!(err.to_string().contains("invalid TOML"), "{err:#}");
    assert!(err.downcast_ref::<InvalidSettings>().is_none());
    assert!(parse("{", Format::Json)
        .unwrap_err()
        .to_string()
        .contains("invalid JSON"));
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("settings.toml");
    let err = load(&missing).unwrap_err();
    assert!(
        format!("{err:#}").contains(&missing.display().to_string()),
        "{err:#}"
    );
    assert!(format!("{err:#}").contains("no settings"), "{err:#}");

    std::fs::write(
        &missing,
        "[settings.bootstrap-containers.x]\nmode = \"on\"\n",
    )
    .unwrap();
    let err = format!("{:#}", load(&missing).unwrap_err());
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(err.contains("bootstrap-containers.x.mode: \"on\" is not one of off, once, always"));
}

#[test]
fn sources() {
    let parsed = |text| Source::parse(text);
    assert_eq!(parsed("/opt/b"), Ok(Source::Bundle("/opt/b".into())));
    assert_eq!(
        parsed("oci-layout:/a:b/c:tag"),
        Ok(Source::OciLayout {
            path: "/a:b/c".into(),
            tag: "tag".into()
        })
    );
    let pinned = format!("r.io/x@sha256:{}", "ab".repeat(32));
    for image in [
        "docker.io/library/busybox:1.36",
        "busybox",
        &pinned,
        "127.0.0.1:5000/team/disk-setup:v1",
    ] {
        assert_eq!(parsed(image), Ok(Source::Image(image.into())), "{image}");
    }
    for bad in ["./rel", "r.io/x@sha256:ab", "Team/Upper:v1", "r.io/x:"] {
        assert!(
            parsed(bad)
                .unwrap_err()
                .contains("is not an image reference"),
            "{bad}"
        );
    }
    assert_eq!(parsed(""), Err("must not be empty".into()));
    assert!(parsed("oci-layout:/a").unwrap_err().contains("has no tag"));
    assert!(parsed("oci-layout:/a:").unwrap_err().contains("empty tag"));
    assert!(parsed("oci-layout:rel:t")
        .unwrap_err()
        .contains("is not absolute"));
    assert!(parsed("oci-layout::t")
        .unwrap_err()
        .contains("is not absolute"));
    assert!(parsed("busy box")
        .unwrap_err()
        .contains("contains whitespace"));
    assert!(parsed("busybox\t")
        .unwrap_err()
        .contains("contains whitespace"));
    for source in ["/opt/b", "oci-layout:/a:b:t", "busybox:1"] {
        assert_eq!(parsed(source).unwrap().to_string(), source);
    }
}

#[test]
fn source_is_required_and_checked() {
    assert_eq!(
        problems("[settings.bootstrap-containers.c]\nmode = \"once\"\n"),
        ["bootstrap-containers.c.source: is required unless user-data is set, which then runs as a script (a bundle path, oci-layout:/path:tag or an image reference)"]
    );
    let parsed = parse(
        "[settings.bootstrap-containers.c]\nmode = \"once\"\nuser-data = \"ZWNobyBoaQo=\"\n",
        Format::Toml,
    )
    .unwrap();
    let c = &parsed.containers["c"];
    assert_eq!(c.source, Source::UserDataScript);
    assert_eq!(c.source.to_string(), "(user-data script)");
    assert_eq!(
        problem("source = \"\""),
        "bootstrap-containers.c.source: must not be empty"
    );
    assert_eq!(
        problem("source = 7"),
        "bootstrap-containers.c.source: must be a string, not a number"
    );
}

#[test]
fn modes_and_pull_policies() {
    assert_eq!(container("mode = \"always\"").mode, Mode::Always);
    assert_eq!(
        problem("mode = \"sometimes\""),
        "bootstrap-containers.c.mode: \"sometimes\" is not one of off, once, always"
    );
    assert_eq!(
        problem("mode = \"Once\""),
        "bootstrap-containers.c.mode: \"Once\" is not one of off, once, always"
    );
    assert_eq!(
        container("pull-policy = \"always\"").pull_policy,
        PullPolicy::Always
    );
    assert_eq!(
        problem("pull-policy = \"never\""),
        "bootstrap-containers.c.pull-policy: \"never\" is not one of always, if-not-present, always-or-cached"
    );
    for mode in [Mode::Off, Mode::Once, Mode::Always] {
        assert_eq!(Mode::parse(&mode.to_string()), Ok(mode));
    }
}

#[test]
fn essential_is_a_boolean() {
    assert_eq!(
        problem("essential = \"yes\""),
        "bootstrap-containers.c.essential: must be true or false, not a string"
    );
}

#[test]
fn user_data_is_padded_standard_base64_and_never_shown() {
    assert_eq!(
        container("user-data = \"\"").user_data.unwrap().as_bytes(),
        b""
    );
    let secret = "c2VjcmV0";
    let debug = format!("{:?}", container(&format!("user-data = \"{secret}\"")));
    assert!(debug.contains("UserData(6 bytes)"), "{debug}");
    assert!(
        !debug.contains("secret") && !debug.contains(secret),
        "{debug}"
    );
    // Unpadded, URL-safe alphabet, and garbage are all refused; the text is never echoed.
    for bad in ["aGVsbG8", "a-_b", "not base64!"] {
        let found = problem(&format!("user-data = \"{bad}\""));
        assert!(
            found.starts_with("bootstrap-containers.c.user-data: not valid base64"),
            "{found}"
        );
        assert!(!found.contains(bad), "{found}");
    }
}

#[test]
fn commands() {
    assert_eq!(container("command = [\"true\"]").command.unwrap(), ["true"]);
    assert_eq!(
        container("command = [\"echo\", \"\"]").command.unwrap(),
        ["echo", ""]
    );
    let cases = [
        ("command = []", "must not be empty"),
        (
            "command = [\"\"]",
            "the program (first element) must not be empty",
        ),
        (
            "command = [\"sh\", \"a\\u0000b\"]",
            "element 1 contains a NUL character",
        ),
        (
            "command = \"sh -c x\"",
            "must be a list of strings, not a string",
        ),
        (
            "command = [\"sh\", 1]",
            "element 1 must be a string, not a number",
        ),
    ];
    for (fields, reason) in cases {
        assert_eq!(
            problem(fields),
            format!("bootstrap-containers.c.command: {reason}")
        );
    }
}

#[test]
fn sizes() {
    assert_eq!(parse_size("8GiB"), Ok(8 << 30));
    assert_eq!(parse_size("500MiB"), Ok(500 << 20));
    assert_eq!(parse_size("100KiB"), Ok(100 << 10));
    assert_eq!(parse_size("2TiB"), Ok(2 << 40));
    assert_eq!(parse_size("4096"), Ok(4096));
    assert_eq!(parse_size("007MiB"), Ok(7 << 20));
    for bad in [
        "", "MiB", "1.5GiB", "-1MiB", "+1MiB", " 1MiB", "1 MiB", "1MB", "1M", "1G", "1gib", "1mib",
        "1B", "1KiBs", "1é",
    ] {
        let err = parse_size(bad).unwrap_err();
        assert!(err.contains("is not a size"), "{bad:?}: {err}");
    }
    assert!(parse_size("0GiB").unwrap_err().contains("not a positive"));
    assert!(parse_size("0").unwrap_err().contains("not a positive"));
    assert!(parse_size("99999999999999999999")
        .unwrap_err()
        .contains("too large"));
    assert!(parse_size(&format!("{}KiB", u64::MAX / 1000))
        .unwrap_err()
        .contains("too large"));
    for (bytes, text) in [
        (8 << 30, "8GiB"),
        (500 << 20, "500MiB"),
        (1536 << 20, "1536MiB"),
        (1 << 40, "1TiB"),
        (4096, "4KiB"),
        (1000, "1000"),
        (0, "0"),
    ] {
        assert_eq!(format_size(bytes), text);
        if bytes > 0 {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
    }
}

#[test]
fn durations() {
    let secs = |s| Ok(Duration::from_secs(s));
    assert_eq!(parse_duration("90s"), secs(90));
    assert_eq!(parse_duration("5m"), secs(300));
    assert_eq!(parse_duration("1h"), secs(3600));
    assert_eq!(parse_duration("007s"), secs(7));
    for bad in [
        "", "s", "90", "1.5m", "-1s", "+1s", " 1s", "1 s", "1d", "1ms", "1S", "1é",
    ] {
        let err = parse_duration(bad).unwrap_err();
        assert!(err.contains("is not a duration"), "{bad:?}: {err}");
    }
    assert!(parse_duration("0s").unwrap_err().contains("not a positive"));
    assert!(parse_duration("0h").unwrap_err().contains("not a positive"));
    assert!(parse_duration("99999999999999999999s")
        .unwrap_err()
        .contains("too long"));
    assert!(parse_duration(&format!("{}h", u64::MAX / 60))
        .unwrap_err()
        .contains("too long"));
    for (secs, text) in [
        (90, "90s"),
        (300, "5m"),
        (7200, "2h"),
        (3660, "61m"),
        (0, "0s"),
    ] {
        assert_eq!(format_duration(Duration::from_secs(secs)), text);
    }
    assert_eq!(
        problem("timeout = 90"),
        "bootstrap-containers.c.timeout: must be a string, not a number"
    );
    assert!(problem("timeout = \"soon\"")
        .starts_with("bootstrap-containers.c.timeout: \"soon\" is not a duration"));
}

#[test]
fn names() {
    let max = "a".repeat(MAX_NAME_LEN);
    assert_eq!(check_name(&max), Ok(()));
    assert!(check_name(&format!("{max}a")).is_err());
    for good in ["a", "A-9", "-", "disk-setup"] {
        assert_eq!(check_name(good), Ok(()), "{good}");
    }
    for bad in ["", "a.b", "a_b", "a b", "é", "a/b", ".."] {
        assert!(check_name(bad).is_err(), "{bad:?}");
    }
    assert_eq!(container_id("disk-setup"), "boot.disk-setup");

    let text = format!(
        "[settings.bootstrap-containers.{max}]\nsource = \"/b\"\n\
         [settings.bootstrap-containers.{max}a]\nsource = \"/b\"\n\
         [settings.bootstrap-containers.\"a.b\"]\nsource = \"/b\"\n"
    );
    assert_eq!(
        problems(&text),
        [
            format!("bootstrap-containers.\"{max}a\": name must be 1 to 76 ASCII letters, digits and '-'"),
            "bootstrap-containers.\"a.b\": name must be 1 to 76 ASCII letters, digits and '-'".into(),
        ]
    );
}

#[test]
fn unknown_fields_are_named() {
    assert_eq!(
        problem("sorce = \"/b\""),
        "bootstrap-containers.c.sorce: unknown field \"sorce\" (known: source, mode, essential, user-data, command, timeout, depends-on, pull-policy, pull-progress-timeout, pull-timeout, environment)"
    );
}

#[test]
fn tables_must_be_tables() {
    assert_eq!(
        problems("settings = 1\n"),
        ["settings: must be a table, not a number"]
    );
    assert_eq!(
        problems("[settings]\nbootstrap-containers = []\n"),
        ["bootstrap-containers: must be a table, not a list"]
    );
    assert_eq!(
        problems("[settings.bootstrap-containers]\nc = \"x\"\n"),
        ["bootstrap-containers.c: must be a table, not a string"]
    );
    let err = parse("[1]", Format::Json).unwrap_err();
    assert_eq!(
        err.downcast_ref::<InvalidSettings>().unwrap().to_string(),
        "the top level: must be a table, not a list"
    );
}

#[test]
fn dependencies() {
    let deps = |a: &str, b: &str, c: &str| {
        format!(
            "[settings.bootstrap-containers.a]\nsource = \"/b\"\ndepends-on = {a}\n\
             [settings.bootstrap-containers.b]\nsource = \"/b\"\ndepends-on = {b}\n\
             [settings.bootstrap-containers.c]\nsource = \"/b\"\ndepends-on = {c}\n"
        )
    };
    let ok = toml(&deps("[\"b\", \"c\", \"b\"]", "[\"c\"]", "[]")).unwrap();
    assert_eq!(
        ok.containers["a"].depends_on,
        ["b", "c"],
        "sorted, duplicates dropped"
    );

    assert_eq!(
        problems(&deps("[\"a\"]", "[\"zz\"]", "[]")),
        [
            "bootstrap-containers.a.depends-on: a container cannot depend on itself",
            "bootstrap-containers.b.depends-on: unknown container \"zz\"",
        ]
    );
    assert_eq!(
        problems(&deps("[\"b\"]", "[\"a\"]", "[]")),
        ["bootstrap-containers.a.depends-on: dependency cycle a -> b -> a"]
    );
    assert_eq!(
        problems(&deps("[\"b\"]", "[\"c\"]", "[\"a\"]")),
        ["bootstrap-containers.a.depends-on: dependency cycle a -> b -> c -> a"]
    );
    // A cycle entered from outside is reported from where it closes.
    assert_eq!(
        problems(&deps("[\"b\"]", "[\"c\"]", "[\"b\"]")),
        ["bootstrap-containers.b.depends-on: dependency cycle b -> c -> b"]
    );
    assert_eq!(
        problems(&deps("\"b\"", "[]", "[]")),
        ["bootstrap-containers.a.depends-on: must be a list of strings, not a string"]
    );
}

#[test]
fn a_dependency_on_an_invalid_container_is_still_known() {
    // `b` is invalid (no source), but it exists: only its own problem is reported.
    let text = "[settings.bootstrap-containers.a]\nsource = \"/b\"\ndepends-on = [\"b\"]\n\
                [settings.bootstrap-containers.b]\nmode = \"once\"\n";
    assert_eq!(problems(text).len(), 1);
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
        [settings.bootstrap-containers.disk-setup]
        source = ""
        mode = "sometimes"
        essential = 1
        user-data = "%%%"
        command = []
        timeout = "0s"
        depends-on = ["nope"]
        pull-policy = "never"
        extra = true

        [settings.bootstrap-containers.bad_name]
        mode = "once"
    "#;
    let err = toml(text).unwrap_err();
    let lines: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        lines,
        [
            "bootstrap-containers.disk-setup.source",
            "bootstrap-containers.disk-setup.mode",
            "bootstrap-containers.disk-setup.essential",
            "bootstrap-containers.disk-setup.user-data",
            "bootstrap-containers.disk-setup.command",
            "bootstrap-containers.disk-setup.timeout",
            "bootstrap-containers.disk-setup.pull-policy",
            "bootstrap-containers.disk-setup.extra",
            "bootstrap-containers.\"bad_name\"",
            "bootstrap-containers.\"bad_name\".source",
            "bootstrap-containers.disk-setup.depends-on",
        ]
    );
    // Display: one "key: reason" per line.
    let shown = err.to_string();
    assert_eq!(shown.lines().count(), 11);
    assert!(shown.contains(
        "bootstrap-containers.disk-setup.mode: \"sometimes\" is not one of off, once, always\n"
    ));
}

#[test]
fn fields_know_their_names_and_kinds() {
    for field in Field::ALL {
        assert_eq!(Field::from_name(field.name()), Ok(field));
    }
    assert_eq!(Field::Essential.kind(), Kind::Flag);
    assert_eq!(Field::DependsOn.kind(), Kind::List);
    assert_eq!(Field::Command.kind(), Kind::List);
    assert_eq!(Field::Timeout.kind(), Kind::Text);
}

#[test]
fn environment_is_a_table_of_strings_under_shell_names() {
    let parsed = parse(
        "[settings.bootstrap-containers.x]\nsource = \"/b\"\nenvironment = { A_1 = \"one\", _B = \"\" }\n",
        Format::Toml,
    )
    .unwrap();
    let env = &parsed.containers["x"].environment;
    assert_eq!(env.entries().collect::<Vec<_>>(), ["A_1=one", "_B="]);
    assert_eq!(
        format!("{env:?}"),
        "{\"A_1\", \"_B\"}",
        "Debug shows names only"
    );
    for (value, wanted) in [
        ("{ \"1A\" = \"s3cret\" }", "the variable name \"1A\""),
        ("{ \"A-B\" = \"s3cret\" }", "the variable name \"A-B\""),
        ("{ \"\" = \"s3cret\" }", "the variable name \"\""),
        ("{ A = 5 }", "A must be a string, not a number"),
        ("{ A = \"a\\u0000b\" }", "A contains a NUL character"),
        (
            "[\"A=s3cret\"]",
            "must be a table of NAME = \"value\", not a list",
        ),
    ] {
        let text =
            format!("[settings.bootstrap-containers.x]\nsource = \"/b\"\nenvironment = {value}\n");
        let err = parse(&text, Format::Toml).unwrap_err().to_string();
        assert!(
            err.contains("bootstrap-containers.x.environment: ") && err.contains(wanted),
            "{value}: {err}"
        );
        assert!(!err.contains("s3cret"), "{value}: the value is in {err}");
    }
}
