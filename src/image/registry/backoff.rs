//! Bottlerocket's pull retry schedule: after the first attempt up to 5 retries, waiting 1 s
//! doubling up to 30 s, plus 2–6 s of random jitter. `BOOTSTRAP_SUPERVISOR_BACKOFF_SCALE`
//! (a factor, for tests only) shrinks every wait.

use std::time::Duration;

pub(crate) const RETRIES: u32 = 5;
const SCALE_VARIABLE: &str = "BOOTSTRAP_SUPERVISOR_BACKOFF_SCALE";

/// The wait before retry `retry` (0-based); `jitter` in [0, 1) picks within the 2–6 s range.
pub(crate) fn delay(retry: u32, jitter: f64, scale: f64) -> Duration {
    let base = 2f64.powi(retry.min(5) as i32).min(30.0);
    Duration::from_secs_f64((base + 2.0 + 4.0 * jitter) * scale)
}

/// The scale from the environment: 1 unless a test set one.
pub(crate) fn scale() -> f64 {
    std::env::var(SCALE_VARIABLE)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(1.0)
}

pub(crate) fn jitter() -> f64 {
    fastrand::f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_one_second_capped_at_thirty_plus_jitter() {
        let secs = |retry, jitter| delay(retry, jitter, 1.0).as_secs_f64();
        assert_eq!(secs(0, 0.0), 3.0);
        assert_eq!(secs(1, 0.0), 4.0);
        assert_eq!(secs(4, 0.0), 18.0);
        assert_eq!(secs(5, 0.0), 32.0);
        assert_eq!(secs(40, 0.0), 32.0);
        assert!(secs(0, 0.999) < 7.0 && secs(0, 0.999) > 6.9);
        assert_eq!(delay(3, 0.5, 0.01), Duration::from_secs_f64(0.12));
    }
}
