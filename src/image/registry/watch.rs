//! The two bounds on a pull: `pull-progress-timeout`, how long it may receive no byte before the
//! attempt is abandoned (and retried on the schedule), and `pull-timeout`, when the whole pull,
//! retries included, ends. A pull shared by several containers is watched by one [`Watch`]:
//! each container that joins may lengthen both, so the pull runs to the latest deadline of
//! those it serves (each container gives up at its own).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::locks;
use crate::stop;

/// What one container allows its image's pull: the settings' `pull-progress-timeout` and
/// `pull-timeout`, or the supervisor's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PullLimits {
    /// The longest a pull may receive no byte (of a manifest or a blob).
    pub progress_timeout: Duration,
    /// The longest the whole pull may take, retries included; `None`: no bound.
    pub timeout: Option<Duration>,
}

/// When a container's pull must end, and the `pull-timeout` that set it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Deadline {
    pub at: Instant,
    pub limit: Duration,
}

impl PullLimits {
    /// The deadline of a pull that starts now under these limits; `None`: no bound (nor
    /// for a limit past the clock's end, as `"18446744073709551615s"`).
    pub(crate) fn deadline(&self) -> Option<Deadline> {
        let limit = self.timeout?;
        Some(Deadline {
            at: Instant::now().checked_add(limit)?,
            limit,
        })
    }
}

/// An attempt received nothing for the progress timeout. Retried; after the retries, a
/// registry that stalls counts as one that cannot be reached.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Stalled {
    #[error("received no byte for {}s (pull-progress-timeout) while downloading {blobs}; {} of the image received in this attempt", limit.as_secs(), mib(*received))]
    Blobs {
        limit: Duration,
        /// The blobs pending, with their bytes.
        blobs: String,
        received: u64,
    },
    /// One host's manifest request (with its token and an index's second request) did not
    /// complete in time: the next mirror, or the registry, is asked.
    #[error("no manifest from {host} within {}s (pull-progress-timeout)", limit.as_secs())]
    Manifest { limit: Duration, host: String },
}

/// The pull's deadline passed: the container fails, whatever `pull-policy` says.
#[derive(Debug, thiserror::Error)]
#[error("pull-timeout of {}s passed (retries included); {} received", limit.as_secs(), mib(*received))]
pub(crate) struct PullTimedOut {
    pub limit: Duration,
    pub received: u64,
}

/// One pull's bounds and what it has received, shared by the containers it serves and the
/// attempts it makes.
pub(crate) struct Watch {
    stall: Mutex<Duration>,
    /// The latest deadline of the containers served; `None` once one has no bound.
    deadline: Mutex<Option<Deadline>>,
    /// Bytes received over every attempt.
    received: AtomicU64,
    /// Whether an attempt reached the registry: ended in anything but
    /// [`super::client::is_unreachable`].
    reached: AtomicBool,
    attempt: Mutex<Attempt>,
}

/// The attempt in progress: when it last received a byte of a blob (`None` while it fetches the
/// manifest, which [`Watch::stall`] bounds per host), and each blob it is downloading (digest:
/// bytes received, size).
struct Attempt {
    last_byte: Option<Instant>,
    blobs: BTreeMap<String, (u64, u64)>,
    received: u64,
}

impl Watch {
    /// The watch of a pull for one container, with its limits and its deadline.
    pub(crate) fn new(limits: &PullLimits, deadline: Option<Deadline>) -> Watch {
        Watch {
            stall: Mutex::new(limits.progress_timeout),
            deadline: Mutex::new(deadline),
            received: AtomicU64::new(0),
            reached: AtomicBool::new(false),
            attempt: Mutex::new(Attempt {
                last_byte: None,
                blobs: BTreeMap::new(),
                received: 0,
            }),
        }
    }

    /// Another container waits on this pull: the pull may now stall as long as the most
    /// patient of them allows and go on until the latest deadline.
    pub(crate) fn join(&self, limits: &PullLimits, deadline: Option<Deadline>) {
        let mut stall = locks::lock(&self.stall);
        *stall = (*stall).max(limits.progress_timeout);
        let mut latest = locks::lock(&self.deadline);
        *latest = match (*latest, deadline) {
            (Some(a), Some(b)) => Some(if b.at > a.at { b } else { a }),
            _ => None,
        };
    }

    /// An attempt reached the registry.
    pub(crate) fn reached(&self) {
        self.reached.store(true, Ordering::Relaxed);
    }

    /// Whether no attempt reached the registry and no byte arrived: when the deadline passes
    /// then, the registry could not be reached at all.
    pub(crate) fn never_reached(&self) -> bool {
        !self.reached.load(Ordering::Relaxed) && self.received() == 0
    }

    /// Bytes received by every attempt so far.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// The progress timeout now: the longest of the containers the pull serves.
    pub(crate) fn stall(&self) -> Duration {
        *locks::lock(&self.stall)
    }

    /// A new attempt begins: nothing pending, fetching its manifest.
    pub(crate) fn begin_attempt(&self) {
        *locks::lock(&self.attempt) = Attempt {
            last_byte: None,
            blobs: BTreeMap::new(),
            received: 0,
        };
    }

    /// Blob `digest` of `size` bytes starts downloading.
    pub(crate) fn blob_started(&self, digest: &str, size: u64) {
        let mut attempt = locks::lock(&self.attempt);
        attempt.last_byte = Some(Instant::now());
        attempt.blobs.insert(digest.to_owned(), (0, size));
    }

    /// Blob `digest` is done (whole or failed): no longer pending.
    pub(crate) fn blob_ended(&self, digest: &str) {
        locks::lock(&self.attempt).blobs.remove(digest);
    }

    /// `bytes` of blob `digest` arrived.
    pub(crate) fn received_bytes(&self, digest: &str, bytes: u64) {
        if bytes == 0 {
            return;
        }
        self.received.fetch_add(bytes, Ordering::Relaxed);
        let mut attempt = locks::lock(&self.attempt);
        attempt.last_byte = Some(Instant::now());
        attempt.received += bytes;
        if let Some((got, _)) = attempt.blobs.get_mut(digest) {
            *got += bytes;
        }
    }

    /// Resolves when the attempt in progress, downloading blobs, has received no byte for the
    /// progress timeout, with what it was waiting for; never otherwise.
    pub(crate) async fn stalled(&self) -> Stalled {
        loop {
            let limit = self.stall();
            let idle = locks::lock(&self.attempt)
                .last_byte
                .map_or(Duration::ZERO, |last| last.elapsed());
            if idle >= limit {
                let attempt = locks::lock(&self.attempt);
                return Stalled::Blobs {
                    limit,
                    blobs: pending(&attempt.blobs),
                    received: attempt.received,
                };
            }
            // The limit may grow meanwhile (a container joins): look again at least this often.
            tokio::time::sleep((limit - idle).min(stop::POLL * 10)).await;
        }
    }

    /// Resolves when the latest deadline of the containers this pull serves has passed; never
    /// while one of them has no `pull-timeout`.
    pub(crate) async fn deadline_passed(&self) -> PullTimedOut {
        loop {
            let deadline = *locks::lock(&self.deadline);
            let wait = match deadline {
                Some(deadline) => deadline.at.saturating_duration_since(Instant::now()),
                None => stop::POLL * 10,
            };
            if let (Some(deadline), true) = (deadline, wait.is_zero()) {
                return self.timed_out(deadline.limit);
            }
            // A container may join meanwhile, with a later deadline or none.
            tokio::time::sleep(wait.min(stop::POLL * 10)).await;
        }
    }

    /// The failure of a container whose `pull-timeout` of `limit` passed.
    pub(crate) fn timed_out(&self, limit: Duration) -> PullTimedOut {
        PullTimedOut {
            limit,
            received: self.received(),
        }
    }
}

/// The blobs pending, "blob sha256:… (1.0 MiB of 30.0 MiB), …": the first few, for a manifest
/// may list thousands.
fn pending(blobs: &BTreeMap<String, (u64, u64)>) -> String {
    const NAMED: usize = 3;
    let mut named: Vec<String> = blobs
        .iter()
        .take(NAMED)
        .map(|(digest, (got, size))| format!("blob {digest} ({} of {})", mib(*got), mib(*size)))
        .collect();
    if blobs.len() > NAMED {
        named.push(format!("and {} more", blobs.len() - NAMED));
    }
    named.join(", ")
}

pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joining_keeps_the_most_patient_limit_and_the_latest_deadline() {
        let short = PullLimits {
            progress_timeout: Duration::from_secs(5),
            timeout: Some(Duration::from_secs(10)),
        };
        let watch = Watch::new(&short, short.deadline());
        let long = PullLimits {
            progress_timeout: Duration::from_secs(20),
            timeout: Some(Duration::from_secs(60)),
        };
        let latest = long.deadline();
        watch.join(&long, latest);
        watch.join(&short, short.deadline());
        assert_eq!(watch.stall(), Duration::from_secs(20));
        assert_eq!(*locks::lock(&watch.deadline), latest);
        // One container without a pull-timeout: the pull is unbounded.
        watch.join(&short, None);
        assert_eq!(*locks::lock(&watch.deadline), None);
        watch.join(&short, short.deadline());
        assert_eq!(*locks::lock(&watch.deadline), None);
    }

    #[test]
    fn a_limit_past_the_clocks_end_is_no_bound() {
        // The largest the settings take: "18446744073709551615s".
        let limits = PullLimits {
            progress_timeout: Duration::MAX,
            timeout: Some(Duration::from_secs(u64::MAX)),
        };
        assert_eq!(limits.deadline(), None);
    }

    #[test]
    fn a_stall_names_the_pending_blobs_and_what_arrived() {
        let limits = PullLimits {
            progress_timeout: Duration::from_secs(1),
            timeout: None,
        };
        let watch = Watch::new(&limits, None);
        watch.begin_attempt();
        watch.blob_started("sha256:aa", 3 << 20);
        watch.blob_started("sha256:bb", 1 << 20);
        watch.received_bytes("sha256:aa", 1 << 20);
        watch.blob_ended("sha256:bb");
        let stalled = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(watch.stalled());
        assert_eq!(
            stalled.to_string(),
            "received no byte for 1s (pull-progress-timeout) while downloading blob sha256:aa \
             (1.0 MiB of 3.0 MiB); 1.0 MiB of the image received in this attempt"
        );
        assert_eq!(watch.received(), 1 << 20);
        watch.begin_attempt();
        assert!(locks::lock(&watch.attempt).blobs.is_empty());
        assert_eq!(watch.received(), 1 << 20);
    }
}
