//! Writes the man pages and shell completions of both binaries, generated from their CLI
//! definitions (hack/package.sh runs it; nothing here is written by hand):
//!
//! ```text
//! manuals OUT
//!   OUT/man/man8/bootstrap-runc.8, bootstrap-runc-<command>.8, the same for bootstrap-supervisor
//!     (section 8, system administration, as runc's pages)
//!   OUT/completions/bash/<binary>, OUT/completions/zsh/_<binary>, OUT/completions/fish/<binary>.fish
//! ```

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: manuals OUT_DIR")?;
    for command in [
        bootstrap_runc::commands::Cli::command(),
        bootstrap_runc::supervisor::commands::Cli::command(),
    ] {
        let mut command = command.disable_help_subcommand(true);
        command.build();
        let name = command.get_name().to_string();
        let source = format!("{name} {}", command.get_version().unwrap_or_default());
        let pages = out.join("man/man8");
        std::fs::create_dir_all(&pages).with_context(|| format!("creating {}", pages.display()))?;
        man_pages(&command, &source, &pages)?;
        for (shell, file) in [
            (Shell::Bash, format!("bash/{name}")),
            (Shell::Zsh, format!("zsh/_{name}")),
            (Shell::Fish, format!("fish/{name}.fish")),
        ] {
            let path = out.join("completions").join(file);
            let mut writer = create(&path)?;
            clap_complete::generate(shell, &mut command, &name, &mut writer);
        }
    }
    Ok(())
}

/// The page of `command` (built: its subcommands' display names are `parent-subcommand`, as
/// runc's `runc-run.8`), then one per visible subcommand; `source` is the page footer's
/// program and version.
fn man_pages(command: &clap::Command, source: &str, dir: &Path) -> Result<()> {
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        man_pages(sub, source, dir)?;
    }
    clap_mangen::Man::new(command.clone())
        .section("8")
        .source(source)
        .generate_to(dir)
        .with_context(|| {
            format!(
                "writing {}'s man page in {}",
                command.get_name(),
                dir.display()
            )
        })?;
    Ok(())
}

fn create(path: &Path) -> Result<BufWriter<File>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(BufWriter::new(file))
}
