//! What a container sees of its own process: a script for the image to run ([`REPORT`]) and
//! the parse of what it prints ([`Observed`]), so runs by the supervisor and by containerd
//! compare field by field.

/// A shell script printing the process's view of itself, one `key: value` line each: args,
/// the `Uid`/`Gid`/`Groups` lines of /proc/self/status, cwd, and each env entry.
pub const REPORT: &str = "echo \"args: $(tr '\\0' ' ' < /proc/$$/cmdline)\"; \
    grep -E '^(Uid|Gid|Groups):' /proc/self/status; echo \"cwd: $(pwd)\"; \
    env | sed 's/^/env: /'";

/// What a container printed with [`REPORT`].
#[derive(Debug, PartialEq, Eq)]
pub struct Observed {
    pub args: String,
    /// The effective uid and gid.
    pub uid: u32,
    pub gid: u32,
    /// Sorted, as the kernel keeps them.
    pub groups: Vec<u32>,
    pub cwd: String,
    /// In the order `env` printed them.
    pub env: Vec<String>,
}

impl Observed {
    /// Parses [`REPORT`]'s output; panics (naming `what`) on a missing line.
    pub fn parse(text: &str, what: &str) -> Observed {
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(str::trim)
                .unwrap_or_else(|| panic!("{what}: no {key} in {text}"))
                .to_string()
        };
        // "Uid:\treal\teffective\tsaved\tfs": the effective one.
        let id = |key: &str| {
            field(key)
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse()
                .unwrap()
        };
        Observed {
            args: field("args:"),
            uid: id("Uid:"),
            gid: id("Gid:"),
            groups: field("Groups:")
                .split_whitespace()
                .map(|g| g.parse().unwrap())
                .collect(),
            cwd: field("cwd:"),
            env: text
                .lines()
                .filter_map(|l| l.strip_prefix("env: "))
                .map(String::from)
                .collect(),
        }
    }

    /// The env entries of `name`.
    pub fn named(&self, name: &str) -> Vec<String> {
        self.env
            .iter()
            .filter(|e| e.split('=').next() == Some(name))
            .cloned()
            .collect()
    }
}
