//! Same-boot markers under the run directory (a tmpfs: gone at the next boot). A container is
//! marked `started` before it runs and gets its outcome when it ends, so a second supervisor run
//! in the same boot never runs it twice, and knows which runs an earlier supervisor left
//! unfinished.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::report::Outcome;
use crate::atomic_file;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub(crate) enum Marker {
    Started,
    Finished { outcome: Box<Outcome> },
}

pub(crate) struct Markers {
    dir: PathBuf,
}

impl Markers {
    pub(crate) fn open(run_dir: &Path) -> Result<Self> {
        let dir = run_dir.join("markers");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Markers { dir })
    }

    /// The marker of `name`; a missing or unreadable one means the container has not run.
    pub(crate) fn get(&self, name: &str) -> Option<Marker> {
        let text = std::fs::read(self.dir.join(name)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub(crate) fn set(&self, name: &str, marker: &Marker) -> Result<()> {
        atomic_file::replace(&self.dir.join(name), &serde_json::to_vec(marker)?, 0o600)
            .with_context(|| format!("writing the marker of {name}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::report::{ImageOutcome, Status};
    use crate::supervisor::settings::Mode;

    #[test]
    fn markers_round_trip_and_missing_means_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let markers = Markers::open(dir.path()).unwrap();
        assert_eq!(markers.get("a"), None);
        markers.set("a", &Marker::Started).unwrap();
        assert_eq!(markers.get("a"), Some(Marker::Started));
        let outcome = Outcome {
            name: "a".into(),
            mode: Mode::Once,
            essential: true,
            source: "/b".into(),
            status: Status::Failed,
            exit_code: Some(3),
            signal: None,
            started_at: None,
            finished_at: None,
            prepare_ms: 1,
            run_ms: 2,
            image: Some(ImageOutcome {
                digest: "sha256:00".into(),
                pull_ms: 3,
                unpack_ms: 4,
                from_cache: false,
            }),
            error: None,
        };
        markers
            .set(
                "a",
                &Marker::Finished {
                    outcome: Box::new(outcome.clone()),
                },
            )
            .unwrap();
        assert_eq!(
            markers.get("a"),
            Some(Marker::Finished {
                outcome: Box::new(outcome)
            })
        );
        std::fs::write(dir.path().join("markers/b"), b"{torn").unwrap();
        assert_eq!(markers.get("b"), None);
    }
}
