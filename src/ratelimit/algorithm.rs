//! The three algorithms as pure functions of the stored state and an explicit `now`.
//!
//! `check.lua` runs the same arithmetic in Redis, line for line, on the time Redis reports
//! (`TIME`); the memory store runs these functions. Both use IEEE doubles for the same
//! operations in the same order, so a sequence of checks gets the same answers on either
//! backend. Time is in microseconds since [`EPOCH_UNIX_SECS`] (2025-01-01T00:00:00Z): small
//! enough that a double holds a GCRA arrival time to a few nanoseconds, and a whole number
//! of days after the Unix epoch, so windows of a second, minute, hour or day start on the
//! second, minute, hour or UTC day.

use crate::config::Algorithm;

/// Start of the clock every algorithm reads, in seconds since the Unix epoch
/// (2025-01-01T00:00:00Z). `check.lua` holds the same literal.
pub const EPOCH_UNIX_SECS: i64 = 1_735_689_600;

/// What one rule admits, in the units the algorithms compute with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Which algorithm.
    pub algorithm: Algorithm,
    /// Cost units per period.
    pub limit: u64,
    /// The period in microseconds (at least 1000).
    pub period_us: u64,
    /// GCRA: units that may arrive at the same instant on an idle key. Windows ignore it.
    pub burst: u64,
}

impl Limits {
    /// The largest cost a single check may ask for: `burst` for GCRA, `limit` for windows.
    /// A larger cost could never be admitted.
    pub fn max_cost(&self) -> u64 {
        match self.algorithm {
            Algorithm::Gcra => self.burst,
            Algorithm::FixedWindow | Algorithm::SlidingWindow => self.limit,
        }
    }

    /// How `check.lua` is told a check of this rule costing `cost`: the algorithm's tag
    /// byte (`G` GCRA, `F` fixed window, `S` sliding window, as in its stored values), then
    /// the limit, the period in µs, the burst and the cost as little-endian doubles. Packed
    /// because parsing the same numbers from text cost Redis about 11 k instructions per
    /// call, over half of what a check costs.
    pub(crate) fn script_spec(&self, cost: u64) -> Vec<u8> {
        let tag = match self.algorithm {
            Algorithm::Gcra => b'G',
            Algorithm::FixedWindow => b'F',
            Algorithm::SlidingWindow => b'S',
        };
        let mut spec = Vec::with_capacity(33);
        spec.push(tag);
        for n in [self.limit, self.period_us, self.burst, cost] {
            // Lua's numbers are doubles: the script had the same precision from text.
            spec.extend_from_slice(&(n as f64).to_le_bytes());
        }
        spec
    }
}

/// The answer to one check, before it is dressed as a [`super::Decision`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the cost was admitted (and consumed).
    pub allowed: bool,
    /// Cost units a check made right after this one could still be admitted for.
    pub remaining: u64,
    /// When limited, how long until the same cost would be admitted (µs); 0 when allowed.
    pub retry_after_us: u64,
    /// How long until the key is back to its idle state without further traffic (µs).
    pub reset_after_us: u64,
}

/// What a check writes back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Write {
    /// Nothing (the check was limited).
    None,
    /// GCRA: store `tat` for `ttl_ms` milliseconds (the memory store; `check.lua` may keep
    /// the key longer, see its header).
    Tat {
        /// The new theoretical arrival time (µs since the epoch).
        tat: f64,
        /// Expiry: when `tat` is reached the key is idle again.
        ttl_ms: u64,
    },
    /// Windows: add `cost` to the counter of window `window`; when the counter was new,
    /// expire it after `ttl_ms`.
    Incr {
        /// Window index (`floor(now / period)`), appended to the key.
        window: i64,
        /// Units added.
        cost: u64,
        /// Expiry of a new counter.
        ttl_ms: u64,
    },
}

/// `x` rounded down, and 0 when it is not above 0 (as `check.lua`'s answers are read).
pub(crate) fn floor_u64(x: f64) -> u64 {
    if x <= 0.0 { 0 } else { x.floor() as u64 }
}

/// `x` rounded up, and 0 when it is not above 0.
pub(crate) fn ceil_u64(x: f64) -> u64 {
    if x <= 0.0 { 0 } else { x.ceil() as u64 }
}

/// GCRA (as in redis-cell and go-redis/redis_rate).
///
/// With emission interval `T = period / limit` and burst `B`: `tat = max(stored, now)`,
/// `new_tat = tat + T × cost`, `allow_at = new_tat − B × T`. Limited when `now < allow_at`
/// (nothing stored, `retry_after = allow_at − now`); otherwise `new_tat` is stored until it
/// is reached. So `B` requests can arrive at the same instant on an idle key, and after
/// that one every `T`.
pub fn gcra(l: &Limits, stored_tat: Option<f64>, now_us: i64, cost: u64) -> (Outcome, Write) {
    let now = now_us as f64;
    let interval = l.period_us as f64 / l.limit as f64;
    let burst_span = l.burst as f64 * interval;
    let tat = match stored_tat {
        Some(t) if t > now => t,
        _ => now,
    };
    let new_tat = tat + interval * cost as f64;
    let allow_at = new_tat - burst_span;
    if now < allow_at {
        let outcome = Outcome {
            allowed: false,
            remaining: floor_u64((now - (tat - burst_span)) / interval),
            retry_after_us: ceil_u64(allow_at - now),
            reset_after_us: ceil_u64(tat - now),
        };
        return (outcome, Write::None);
    }
    let outcome = Outcome {
        allowed: true,
        remaining: floor_u64((now - allow_at) / interval),
        retry_after_us: 0,
        reset_after_us: ceil_u64(new_tat - now),
    };
    let ttl_ms = ceil_u64((new_tat - now) / 1000.0).max(1);
    (
        outcome,
        Write::Tat {
            tat: new_tat,
            ttl_ms,
        },
    )
}

/// The window `now` falls in: `floor(now / period)`.
pub fn window_index(l: &Limits, now_us: i64) -> i64 {
    (now_us as f64 / l.period_us as f64).floor() as i64
}

fn period_ms(l: &Limits) -> u64 {
    ceil_u64(l.period_us as f64 / 1000.0)
}

/// Fixed window: at most `limit` units per window `[k × period, (k + 1) × period)`.
///
/// `count` is the current window's counter. Limited when `count + cost > limit` (the
/// counter is not incremented); `retry_after` is the end of the window.
pub fn fixed_window(l: &Limits, count: u64, now_us: i64, cost: u64) -> (Outcome, Write) {
    let now = now_us as f64;
    let period = l.period_us as f64;
    let window = (now / period).floor();
    let reset = ceil_u64((window + 1.0) * period - now);
    if count + cost > l.limit {
        let outcome = Outcome {
            allowed: false,
            remaining: l.limit.saturating_sub(count),
            retry_after_us: reset,
            reset_after_us: reset,
        };
        return (outcome, Write::None);
    }
    let outcome = Outcome {
        allowed: true,
        remaining: l.limit - (count + cost),
        retry_after_us: 0,
        reset_after_us: reset,
    };
    let write = Write::Incr {
        window: window as i64,
        cost,
        ttl_ms: period_ms(l),
    };
    (outcome, write)
}

/// Sliding window: one counter per fixed window; the previous window counts in proportion
/// to how much of it still overlaps the last `period`.
///
/// `estimated = prev × (period − elapsed) / period + curr`, where `elapsed` is the time
/// since the current window began. Admitted when `estimated + cost ≤ limit` (then `curr`
/// grows by `cost`). `retry_after` is the first instant at which, without other traffic,
/// the same cost would be admitted, rounded up to the next whole microsecond after it.
pub fn sliding_window(
    l: &Limits,
    prev: u64,
    curr: u64,
    now_us: i64,
    cost: u64,
) -> (Outcome, Write) {
    let now = now_us as f64;
    let period = l.period_us as f64;
    let limit = l.limit as f64;
    let cost_f = cost as f64;
    let window = (now / period).floor();
    let elapsed = now - window * period;
    let prev_f = prev as f64;
    let curr_f = curr as f64;
    let estimated = prev_f * (period - elapsed) / period + curr_f;
    if estimated + cost_f > limit {
        let room = limit - curr_f - cost_f;
        let retry = if room >= 0.0 {
            // Within this window, once the previous window's share has decayed enough.
            (period - room * period / prev_f - elapsed).floor() + 1.0
        } else {
            // Not before the next window, where this window's count becomes `prev`.
            let wait = period - (limit - cost_f) * period / curr_f;
            let extra = if wait > 0.0 { wait.floor() + 1.0 } else { 0.0 };
            period - elapsed + extra
        };
        let reset = if curr > 0 {
            2.0 * period - elapsed
        } else {
            period - elapsed
        };
        let outcome = Outcome {
            allowed: false,
            remaining: floor_u64(limit - estimated),
            retry_after_us: ceil_u64(retry).max(1),
            reset_after_us: ceil_u64(reset),
        };
        return (outcome, Write::None);
    }
    let outcome = Outcome {
        allowed: true,
        remaining: floor_u64(limit - (estimated + cost_f)),
        retry_after_us: 0,
        reset_after_us: ceil_u64(2.0 * period - elapsed),
    };
    let write = Write::Incr {
        window: window as i64,
        cost,
        ttl_ms: 2 * period_ms(l),
    };
    (outcome, write)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000;

    fn limits(algorithm: Algorithm, limit: u64, period_us: u64, burst: u64) -> Limits {
        Limits {
            algorithm,
            limit,
            period_us,
            burst,
        }
    }

    /// Applies GCRA writes to a single stored TAT, as the stores do.
    fn gcra_run(l: &Limits, tat: &mut Option<f64>, now: i64, cost: u64) -> Outcome {
        let (outcome, write) = gcra(l, *tat, now, cost);
        if let Write::Tat { tat: t, .. } = write {
            *tat = Some(t);
        }
        outcome
    }

    #[test]
    fn gcra_admits_the_burst_at_once_then_one_per_interval() {
        // 10 per second: one every 100 ms, burst 4.
        let l = limits(Algorithm::Gcra, 10, SEC as u64, 4);
        let mut tat = None;
        let t0 = 1000 * SEC;
        for i in 0..4 {
            let o = gcra_run(&l, &mut tat, t0, 1);
            assert!(o.allowed, "burst request {i}");
            assert_eq!(o.remaining, 3 - i);
        }
        let denied = gcra_run(&l, &mut tat, t0, 1);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after_us, 100_000);
        assert_eq!(denied.remaining, 0);
        assert_eq!(denied.reset_after_us, 400_000);
        // One microsecond early is still too early; exactly on time is admitted.
        assert!(!gcra_run(&l, &mut tat, t0 + 99_999, 1).allowed);
        let on_time = gcra_run(&l, &mut tat, t0 + 100_000, 1);
        assert!(on_time.allowed);
        assert_eq!(on_time.remaining, 0);
        assert!(!gcra_run(&l, &mut tat, t0 + 100_000, 1).allowed);
        // An idle key is back to a full burst once its TAT has passed.
        let later = t0 + 10 * SEC;
        let o = gcra_run(&l, &mut tat, later, 1);
        assert!(o.allowed);
        assert_eq!(o.remaining, 3);
    }

    #[test]
    fn gcra_cost_consumes_several_intervals_and_limited_checks_store_nothing() {
        let l = limits(Algorithm::Gcra, 10, SEC as u64, 10);
        let now = 5 * SEC;
        let (o, w) = gcra(&l, None, now, 10);
        assert!(o.allowed);
        assert_eq!(o.remaining, 0);
        assert_eq!(o.reset_after_us, SEC as u64);
        assert_eq!(
            w,
            Write::Tat {
                tat: (6 * SEC) as f64,
                ttl_ms: 1000
            }
        );
        let (o, w) = gcra(&l, Some((6 * SEC) as f64), now + 250_000, 3);
        assert!(!o.allowed);
        assert_eq!(w, Write::None);
        assert_eq!(o.remaining, 2);
        assert_eq!(o.retry_after_us, 50_000);
    }

    #[test]
    fn gcra_default_burst_equals_limit_admits_limit_per_period_from_idle() {
        let l = limits(Algorithm::Gcra, 100, 86_400 * SEC as u64, 100);
        let mut tat = None;
        let admitted = (0..1000)
            .filter(|_| gcra_run(&l, &mut tat, 7 * SEC, 1).allowed)
            .count();
        assert_eq!(admitted, 100);
    }

    #[test]
    fn fixed_window_counts_per_aligned_window() {
        let l = limits(Algorithm::FixedWindow, 3, 60 * SEC as u64, 0);
        let now = 600 * SEC + 15 * SEC; // 15 s into window 10
        let (o, w) = fixed_window(&l, 2, now, 1);
        assert!(o.allowed);
        assert_eq!(o.remaining, 0);
        assert_eq!(o.reset_after_us, 45 * SEC as u64);
        assert_eq!(
            w,
            Write::Incr {
                window: 10,
                cost: 1,
                ttl_ms: 60_000
            }
        );
        let (o, w) = fixed_window(&l, 3, now, 1);
        assert!(!o.allowed);
        assert_eq!(w, Write::None);
        assert_eq!(o.retry_after_us, 45 * SEC as u64);
        let (o, _) = fixed_window(&l, 2, now, 2);
        assert!(!o.allowed, "cost 2 does not fit in the one unit left");
        assert_eq!(o.remaining, 1);
        assert_eq!(window_index(&l, now + 45 * SEC), 11);
    }

    #[test]
    fn sliding_window_weights_the_previous_window_by_its_overlap() {
        let l = limits(Algorithm::SlidingWindow, 10, 10 * SEC as u64, 0);
        // 2.5 s into a window (75 % of the previous one still overlaps): 8 × 0.75 = 6.
        let now = 100 * SEC + 2_500_000;
        let (o, _) = sliding_window(&l, 8, 3, now, 1);
        assert!(o.allowed, "6 + 3 + 1 = 10 fits");
        assert_eq!(o.remaining, 0);
        let (o, w) = sliding_window(&l, 8, 4, now, 1);
        assert!(!o.allowed, "6 + 4 + 1 = 11 does not");
        assert_eq!(w, Write::None);
        // Room for 1 once 8 × share ≤ 5, i.e. share ≤ 0.625: 3.75 s into the window,
        // 1.25 s from now; retry is the first microsecond after that instant.
        assert_eq!(o.retry_after_us, 1_250_001);
        let later = now + o.retry_after_us as i64;
        assert!(sliding_window(&l, 8, 4, later, 1).0.allowed);
        assert!(!sliding_window(&l, 8, 4, later - 2, 1).0.allowed);
    }

    #[test]
    fn sliding_window_retry_moves_to_the_next_window_when_this_one_is_full() {
        let l = limits(Algorithm::SlidingWindow, 10, 10 * SEC as u64, 0);
        let now = 100 * SEC + 4 * SEC;
        let (o, _) = sliding_window(&l, 0, 10, now, 2);
        assert!(!o.allowed);
        // Next window starts in 6 s; there 10 × share + 2 ≤ 10 needs share ≤ 0.8: 2 s in.
        assert_eq!(o.retry_after_us, 8 * SEC as u64 + 1);
        assert_eq!(o.reset_after_us, 16 * SEC as u64);
        let next = now + o.retry_after_us as i64;
        assert!(sliding_window(&l, 10, 0, next, 2).0.allowed);
        assert!(!sliding_window(&l, 10, 0, next - 2, 2).0.allowed);
    }

    #[test]
    fn max_cost_is_the_burst_for_gcra_and_the_limit_for_windows() {
        assert_eq!(limits(Algorithm::Gcra, 10, 1000, 3).max_cost(), 3);
        assert_eq!(limits(Algorithm::FixedWindow, 10, 1000, 3).max_cost(), 10);
        assert_eq!(limits(Algorithm::SlidingWindow, 10, 1000, 3).max_cost(), 10);
    }

    #[test]
    fn the_script_spec_is_a_tag_byte_and_four_little_endian_doubles() {
        let spec = limits(Algorithm::SlidingWindow, 100, 60_000_000, 7).script_spec(3);
        assert_eq!(spec.len(), 33);
        assert_eq!(spec[0], b'S');
        let numbers: Vec<f64> = spec[1..]
            .chunks(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(numbers, [100.0, 60_000_000.0, 7.0, 3.0]);
        assert_eq!(limits(Algorithm::Gcra, 1, 1, 1).script_spec(1)[0], b'G');
        assert_eq!(
            limits(Algorithm::FixedWindow, 1, 1, 1).script_spec(1)[0],
            b'F'
        );
    }

    #[test]
    fn the_lua_script_mirrors_the_epoch() {
        let script = include_str!("check.lua");
        assert!(script.contains(&format!("local EPOCH = {EPOCH_UNIX_SECS}")));
    }
}
