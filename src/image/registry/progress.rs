//! Progress of one image's download: a line at most every few seconds (bytes and layers), so
//! the journal shows a long pull advancing without a line per chunk.

use super::watch::mib;
use crate::locks;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_secs(2);

pub(crate) struct Progress {
    image: String,
    layers: usize,
    total: u64,
    layers_done: AtomicUsize,
    done: AtomicU64,
    started: Instant,
    last: Mutex<Instant>,
}

impl Progress {
    pub(crate) fn new(image: &str, layers: usize, total: u64) -> Progress {
        let now = Instant::now();
        log::info!("{image}: pulling {layers} layer(s), {}", mib(total));
        Progress {
            image: image.to_owned(),
            layers,
            total,
            layers_done: AtomicUsize::new(0),
            done: AtomicU64::new(0),
            started: now,
            last: Mutex::new(now),
        }
    }

    pub(crate) fn add(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
        let mut last = locks::lock(&self.last);
        if last.elapsed() >= INTERVAL {
            *last = Instant::now();
            log::info!("{}: {}", self.image, self.line());
        }
    }

    pub(crate) fn layer_done(&self) {
        self.layers_done.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    fn line(&self) -> String {
        let done = self.bytes();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        format!(
            "{}/{} layers, {} of {}, {}/s",
            self.layers_done.load(Ordering::Relaxed),
            self.layers,
            mib(done),
            mib(self.total),
            mib((done as f64 / secs) as u64)
        )
    }
}
