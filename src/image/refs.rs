//! References resolved to digests, as containerd's image store keeps them: `refs.json`, a JSON
//! object mapping each reference text (as the settings spell it) to the `sha256:` digest of the
//! platform manifest it last resolved to.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use anyhow::Result;

use crate::atomic_file;
use crate::locks;

/// Reference → platform-manifest digest.
pub(crate) type RefMap = BTreeMap<String, String>;

/// `refs.json`, read fresh on every look-up and changed by one writer at a time.
pub(crate) struct Refs {
    path: PathBuf,
    writer: Mutex<()>,
}

impl Refs {
    pub(crate) fn at(path: PathBuf) -> Refs {
        Refs {
            path,
            writer: Mutex::default(),
        }
    }

    /// The whole map; a missing file is empty, and an unreadable one is ignored (logged): the
    /// references are resolved again.
    pub(crate) fn read(&self) -> RefMap {
        match std::fs::read(&self.path) {
            Ok(text) => serde_json::from_slice(&text).unwrap_or_else(|err| {
                log::warn!("{}: unreadable ({err}); ignoring it", self.path.display());
                RefMap::default()
            }),
            Err(_) => RefMap::default(),
        }
    }

    /// The digest `reference` last resolved to.
    pub(crate) fn get(&self, reference: &str) -> Option<String> {
        self.read().get(reference).cloned()
    }

    /// Records that `reference` resolved to `digest` (written atomically, only if it changed).
    pub(crate) fn remember(&self, reference: &str, digest: &str) -> Result<()> {
        let _writer = self.lock();
        let mut refs = self.read();
        if refs.get(reference).map(String::as_str) == Some(digest) {
            return Ok(());
        }
        refs.insert(reference.to_owned(), digest.to_owned());
        self.write(&refs)
    }

    /// Forgets every reference not in `in_use`; returns the digests still referred to.
    pub(crate) fn retain(&self, in_use: &BTreeSet<String>) -> Result<BTreeSet<String>> {
        let _writer = self.lock();
        let mut refs = self.read();
        let before = refs.len();
        refs.retain(|reference, _| in_use.contains(reference));
        if refs.len() != before {
            self.write(&refs)?;
        }
        Ok(refs.into_values().collect())
    }

    fn write(&self, refs: &RefMap) -> Result<()> {
        atomic_file::write(&self.path, &serde_json::to_vec_pretty(refs)?, 0o644)
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        locks::lock(&self.writer)
    }
}
