//! Backoff with jitter, shared by every retry loop: Redis commands, the Sentinel
//! watchers, pub/sub reconnects, event publishing and consuming, the issuer's key set.
//!
//! Without jitter, every client that lost Redis at the same moment retries at the same
//! moments too, and a recovering server meets them all at once.

use std::time::Duration;

/// `base × 2^attempt`, at most `max`, then [`jittered`].
pub(crate) fn exponential(base: Duration, attempt: u32, max: Duration) -> Duration {
    jittered(doubled(base, attempt, max))
}

/// `base × 2^attempt`, at most `max`, without jitter.
pub(crate) fn doubled(base: Duration, attempt: u32, max: Duration) -> Duration {
    base.saturating_mul(1 << attempt.min(16)).min(max)
}

/// A delay drawn uniformly between half of `step` and `step` ("equal jitter"): retries
/// spread out, and none comes sooner than half the planned step.
pub(crate) fn jittered(step: Duration) -> Duration {
    step.mul_f64(0.5 + rand::random::<f64>() * 0.5)
}

/// A delay drawn uniformly between `step` and a quarter more, at most `max`: for delays
/// users configure as "at least" (an event's retry), spread without coming sooner.
pub(crate) fn at_least(step: Duration, max: Duration) -> Duration {
    step.mul_f64(1.0 + rand::random::<f64>() * 0.25)
        .min(max.max(step))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_their_bounds_and_spread() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        let mut seen = std::collections::HashSet::new();
        for attempt in 0..40 {
            let step = doubled(base, attempt, max);
            let d = exponential(base, attempt, max);
            assert!(d >= step / 2 && d <= step, "{attempt}: {d:?} of {step:?}");
            let a = at_least(step, max);
            assert!(
                a >= step && a <= max.max(step),
                "{attempt}: {a:?} of {step:?}"
            );
            seen.insert(d);
        }
        assert_eq!(doubled(base, 3, max), Duration::from_millis(800));
        assert_eq!(doubled(base, 40, max), max);
        assert!(seen.len() > 10, "no spread: {seen:?}");
    }
}
