//! What downloads and unpacks may take of a filesystem. An image is refused **before** it fills
//! the filesystem the state dir shares with the rest of the host (`/var` at boot):
//!
//! - no write may leave less free space (`f_bavail`) than the reserve, [`RESERVE_PERCENT`] of
//!   the filesystem and at most [`MAX_RESERVE_BYTES`], nor fewer free inodes (`f_favail`) than
//!   [`RESERVE_PERCENT`] of its inodes (unless it reports none, as btrfs does);
//! - an image's unpacked file data may not pass [`Limits::max_image_bytes`].
//!
//! Each download or unpack holds a [`Charge`] and tells it what it is about to write: bytes
//! actually written (the holes of a sparse file and a size its header merely claims fill
//! nothing) and one inode (plus a block, for what rounding and metadata take) per file. A
//! charge reserves ahead in steps, so `statvfs` runs once per [`STEP_BYTES`] or
//! [`STEP_INODES`], not per write; what every charge on a filesystem reserved and has not
//! written yet is counted as used, so concurrent pulls share one reserve.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use crate::locks::lock;

/// The share of a filesystem's space and inodes kept free, in percent.
pub(crate) const RESERVE_PERCENT: u64 = 5;
/// The most space kept free, in bytes (1 GiB): 5 % of a large filesystem is plenty.
pub(crate) const MAX_RESERVE_BYTES: u64 = 1 << 30;
/// How much space a charge reserves at once, in bytes.
pub(crate) const STEP_BYTES: u64 = 4 << 20;
/// How many inodes a charge reserves at once.
pub(crate) const STEP_INODES: u64 = 256;

/// What [`super::Images`] may write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most file data one image may unpack to, in bytes, over all its layers.
    pub max_image_bytes: u64,
    /// How errors name that limit, e.g. `--max-image-size 8GiB`.
    pub max_image_bytes_name: String,
}

impl Limits {
    /// At most `max_image_bytes` per image, named by its size in errors.
    pub fn new(max_image_bytes: u64) -> Limits {
        Limits {
            max_image_bytes,
            max_image_bytes_name: format!("the limit of {}", human(max_image_bytes)),
        }
    }
}

/// Why a write was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The image's file data would pass [`Limits::max_image_bytes`] (`limit` names it).
    #[error("the image's unpacked size passed {limit}")]
    ImageSize { limit: String },
    /// The free space of `dir`'s filesystem would fall below `reserve` bytes.
    #[error(
        "writing on would leave less than the reserve of {} free on the filesystem of {} \
         ({RESERVE_PERCENT} % of it, at most {})",
        human(*reserve),
        dir.display(),
        human(MAX_RESERVE_BYTES)
    )]
    Space { reserve: u64, dir: PathBuf },
    /// The free inodes of `dir`'s filesystem would fall below `reserve`.
    #[error(
        "writing on would leave fewer than the reserve of {reserve} free inodes on the \
         filesystem of {} ({RESERVE_PERCENT} % of its inodes)",
        dir.display()
    )]
    Inodes { reserve: u64, dir: PathBuf },
    /// `statvfs` failed: nothing is written without knowing.
    #[error("the free space on the filesystem of {} is unknown: {error}", dir.display())]
    Unknown { dir: PathBuf, error: String },
}

/// The space budget of one [`super::Images`]: the limits, and per filesystem what the charges
/// in progress have reserved.
pub struct Budget {
    limits: Limits,
    pools: Mutex<HashMap<u64, Arc<Pool>>>,
}

/// The reservations on one filesystem.
#[derive(Default)]
struct Pool {
    /// Held while a charge checks `statvfs` and takes what it allows.
    refill: Mutex<()>,
    /// Reserved by the charges, not written yet: bytes and inodes.
    bytes: AtomicU64,
    inodes: AtomicU64,
}

impl Budget {
    /// A budget with nothing reserved yet.
    pub fn new(limits: Limits) -> Budget {
        Budget {
            limits,
            pools: Mutex::default(),
        }
    }

    /// A charge for unpacking one image under `dir`: held to the reserve of `dir`'s
    /// filesystem and to [`Limits::max_image_bytes`].
    pub fn image(&self, dir: &Path) -> Result<Charge> {
        self.charge(dir, Some(self.limits.clone()))
    }

    /// A charge for downloads (blobs staged) under `dir`: held to the reserve only.
    pub(crate) fn downloads(&self, dir: &Path) -> Result<Charge> {
        self.charge(dir, None)
    }

    fn charge(&self, dir: &Path, limits: Option<Limits>) -> Result<Charge> {
        let device = dir
            .metadata()
            .with_context(|| format!("checking the filesystem of {}", dir.display()))?
            .dev();
        let fs = nix::sys::statvfs::statvfs(dir)
            .with_context(|| format!("checking the free space of {}", dir.display()))?;
        let pool = lock(&self.pools).entry(device).or_default().clone();
        Ok(Charge {
            dir: dir.to_path_buf(),
            pool,
            limits,
            block: (fs.fragment_size() as u64).max(1),
            state: Mutex::default(),
        })
    }
}

/// What one download or unpack wrote and has reserved. Dropping it gives back what it
/// reserved and did not write.
pub struct Charge {
    /// Where it writes (named in errors).
    dir: PathBuf,
    pool: Arc<Pool>,
    /// For an image's unpack.
    limits: Option<Limits>,
    /// The filesystem's block size, in bytes.
    block: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// File data written, in bytes.
    written: u64,
    /// Reserved in the pool and not written yet.
    bytes_ahead: u64,
    inodes_ahead: u64,
    /// Once refused, always refused.
    refused: Option<Refused>,
}

impl Charge {
    /// Before writing `bytes` bytes of file data.
    pub fn data(&self, bytes: u64) -> Result<(), Refused> {
        let mut state = lock(&self.state);
        if let Some(limits) = &self.limits {
            if state.written.saturating_add(bytes) > limits.max_image_bytes {
                return Err(self.refuse(
                    &mut state,
                    Refused::ImageSize {
                        limit: limits.max_image_bytes_name.clone(),
                    },
                ));
            }
        }
        self.take(&mut state, bytes, 0)?;
        state.written += bytes;
        Ok(())
    }

    /// Gives back `bytes` announced to [`Charge::data`] and not written after all.
    pub(crate) fn refund(&self, bytes: u64) {
        let mut state = lock(&self.state);
        let bytes = bytes.min(state.written);
        state.written -= bytes;
        state.bytes_ahead += bytes;
        self.pool.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Before creating a file (directory, link...): an inode, and a block for its metadata
    /// and the rounding of its data.
    pub fn entry(&self) -> Result<(), Refused> {
        let mut state = lock(&self.state);
        self.take(&mut state, self.block, 1)
    }

    /// Why this charge refused a write, if it did: the error worth reporting when the
    /// refusal reaches the caller wrapped in others' errors.
    pub fn refused(&self) -> Option<Refused> {
        lock(&self.state).refused.clone()
    }

    /// File data written so far, in bytes.
    pub fn written(&self) -> u64 {
        lock(&self.state).written
    }

    fn take(&self, state: &mut State, bytes: u64, inodes: u64) -> Result<(), Refused> {
        if let Some(refused) = &state.refused {
            return Err(refused.clone());
        }
        if state.bytes_ahead < bytes || state.inodes_ahead < inodes {
            if let Err(refused) = self.refill(state, bytes, inodes) {
                return Err(self.refuse(state, refused));
            }
        }
        state.bytes_ahead -= bytes;
        state.inodes_ahead -= inodes;
        self.pool.bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.pool.inodes.fetch_sub(inodes, Ordering::Relaxed);
        Ok(())
    }

    /// Reserves at least what `bytes` and `inodes` need beyond what is reserved already, a
    /// step ahead if the filesystem allows.
    fn refill(&self, state: &mut State, bytes: u64, inodes: u64) -> Result<(), Refused> {
        let _refilling = lock(&self.pool.refill);
        let fs = nix::sys::statvfs::statvfs(&self.dir).map_err(|err| Refused::Unknown {
            dir: self.dir.clone(),
            error: err.to_string(),
        })?;
        let block = fs.fragment_size() as u64;
        let reserve = (fs.blocks() as u64)
            .saturating_mul(block)
            .saturating_mul(RESERVE_PERCENT)
            / 100;
        let reserve = reserve.min(MAX_RESERVE_BYTES);
        let available = (fs.blocks_available() as u64).saturating_mul(block);
        let more_bytes = grant(
            available,
            reserve,
            self.pool.bytes.load(Ordering::Relaxed),
            bytes.saturating_sub(state.bytes_ahead),
            STEP_BYTES,
        )
        .ok_or_else(|| Refused::Space {
            reserve,
            dir: self.dir.clone(),
        })?;
        let needed_inodes = inodes.saturating_sub(state.inodes_ahead);
        let more_inodes = if fs.files() == 0 {
            needed_inodes.max(STEP_INODES) // no inode count (btrfs): nothing to run out of
        } else {
            let reserve = (fs.files() as u64).saturating_mul(RESERVE_PERCENT) / 100;
            grant(
                fs.files_available() as u64,
                reserve,
                self.pool.inodes.load(Ordering::Relaxed),
                needed_inodes,
                STEP_INODES,
            )
            .ok_or_else(|| Refused::Inodes {
                reserve,
                dir: self.dir.clone(),
            })?
        };
        state.bytes_ahead += more_bytes;
        state.inodes_ahead += more_inodes;
        self.pool.bytes.fetch_add(more_bytes, Ordering::Relaxed);
        self.pool.inodes.fetch_add(more_inodes, Ordering::Relaxed);
        Ok(())
    }

    fn refuse(&self, state: &mut State, refused: Refused) -> Refused {
        state.refused.get_or_insert(refused).clone()
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let state = lock(&self.state);
        self.pool
            .bytes
            .fetch_sub(state.bytes_ahead, Ordering::Relaxed);
        self.pool
            .inodes
            .fetch_sub(state.inodes_ahead, Ordering::Relaxed);
    }
}

/// How much more to reserve of `available` (bytes or inodes), keeping `reserve` and what all
/// charges hold (`reserved`) aside: `step` if there is room, else what is `needed`; `None` when
/// not even that fits.
fn grant(available: u64, reserve: u64, reserved: u64, needed: u64, step: u64) -> Option<u64> {
    let room = available.saturating_sub(reserve).saturating_sub(reserved);
    (room >= needed).then(|| room.min(needed.max(step)))
}

/// A size for people: `5.0 MiB`, `1.0 GiB`, `512 B`.
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_a_step_then_what_is_needed_then_nothing() {
        // 100 free, 10 kept, 20 held by others: room for 70.
        assert_eq!(grant(100, 10, 20, 5, 50), Some(50));
        assert_eq!(grant(100, 10, 20, 5, 80), Some(70));
        assert_eq!(grant(100, 10, 20, 70, 80), Some(70));
        assert_eq!(grant(100, 10, 20, 71, 80), None);
        assert_eq!(grant(5, 10, 0, 0, 80), Some(0));
        assert_eq!(grant(5, 10, 0, 1, 80), None);
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(5 << 20), "5.0 MiB");
        assert_eq!(human(MAX_RESERVE_BYTES), "1.0 GiB");
        assert_eq!(human(1536), "1.5 KiB");
    }

    #[test]
    fn the_image_limit_counts_data_written_and_refunds() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Budget::new(Limits::new(1000));
        let charge = budget.image(dir.path()).unwrap();
        charge.entry().unwrap();
        charge.data(600).unwrap();
        charge.refund(100);
        charge.data(500).unwrap();
        assert_eq!(charge.written(), 1000);
        let refused = charge.data(1).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "the image's unpacked size passed the limit of 1000 B"
        );
        // Refused once, refused for good, even what would have fit.
        assert_eq!(charge.entry(), Err(refused.clone()));
        assert_eq!(charge.refused(), Some(refused));
    }

    #[test]
    fn reservations_are_shared_and_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Budget::new(Limits::new(u64::MAX));
        let a = budget.image(dir.path()).unwrap();
        let b = budget.downloads(dir.path()).unwrap();
        a.data(1).unwrap();
        b.entry().unwrap();
        let pool = a.pool.clone();
        assert!(Arc::ptr_eq(&pool, &b.pool), "one filesystem, one pool");
        assert_eq!(
            pool.bytes.load(Ordering::Relaxed),
            2 * STEP_BYTES - 1 - b.block
        );
        assert_eq!(pool.inodes.load(Ordering::Relaxed), 2 * STEP_INODES - 1);
        drop(a);
        drop(b);
        assert_eq!(pool.bytes.load(Ordering::Relaxed), 0);
        assert_eq!(pool.inodes.load(Ordering::Relaxed), 0);
    }
}
