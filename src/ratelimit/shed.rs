//! Local shed: keys Redis said are over their limit, answered here until they may pass.
//!
//! When Redis limits a check of cost `c` with `retry_after = r`, no check of cost `c` or
//! more on that key can be admitted before `now + r`: GCRA arrival times and window
//! counters only grow until then, and `r` is rounded up. So such checks are answered
//! "limited" from this map without a Redis round trip. The shed only ever denies what
//! Redis would deny, so limits stay exact; it only saves the round trip. Smaller costs
//! still go to Redis.
//!
//! The map is bounded: when full, expired entries are swept out, and if none has expired
//! the new entry is simply not remembered (the next check asks Redis again). A full map
//! is not swept again before its earliest entry expires, so a flood of distinct limited
//! keys costs one sweep per expiry, not one per check.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::time::{Duration, Instant};

/// Over-limit keys of this instance.
pub(crate) struct Shed {
    capacity: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    entries: HashMap<String, Entry>,
    /// No sweep before this instant (the earliest expiry seen by the last full sweep).
    next_sweep: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    blocked_until: Instant,
    reset_at: Instant,
    min_cost: u64,
}

/// A check answered from the shed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Blocked {
    pub retry_after: Duration,
    pub reset_after: Duration,
}

impl Shed {
    pub(crate) fn new(capacity: u64) -> Self {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
        Self {
            capacity,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                next_sweep: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a check of `cost` on `key` is certainly limited now.
    pub(crate) fn blocked(&self, key: &str, cost: u64, now: Instant) -> Option<Blocked> {
        let mut inner = self.lock();
        let entry = *inner.entries.get(key)?;
        if now >= entry.blocked_until {
            inner.entries.remove(key);
            return None;
        }
        (cost >= entry.min_cost).then(|| Blocked {
            retry_after: entry.blocked_until - now,
            reset_after: entry.reset_at.max(entry.blocked_until) - now,
        })
    }

    /// Remembers that Redis limited a check of `cost` on `key`.
    pub(crate) fn limited(
        &self,
        key: &str,
        cost: u64,
        retry_after: Duration,
        reset_after: Duration,
        now: Instant,
    ) {
        if self.capacity == 0 || retry_after.is_zero() {
            return;
        }
        let entry = Entry {
            blocked_until: now + retry_after,
            reset_at: now + reset_after,
            min_cost: cost,
        };
        let mut inner = self.lock();
        if let Some(e) = inner.entries.get_mut(key) {
            *e = entry;
            return;
        }
        if inner.entries.len() >= self.capacity {
            if inner.next_sweep.is_some_and(|at| now < at) {
                return;
            }
            inner.entries.retain(|_, e| e.blocked_until > now);
            if inner.entries.len() >= self.capacity {
                inner.next_sweep = inner.entries.values().map(|e| e.blocked_until).min();
                return;
            }
            inner.next_sweep = None;
        }
        inner.entries.insert(key.to_owned(), entry);
    }

    /// Entries held now (tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn blocks_equal_or_larger_costs_until_retry_after() {
        let shed = Shed::new(10);
        let t0 = Instant::now();
        shed.limited("k", 2, 100 * MS, 300 * MS, t0);
        assert_eq!(
            shed.blocked("k", 1, t0),
            None,
            "a smaller cost may still pass"
        );
        let b = shed.blocked("k", 2, t0 + 40 * MS).expect("blocked");
        assert_eq!(b.retry_after, 60 * MS);
        assert_eq!(b.reset_after, 260 * MS);
        assert!(shed.blocked("k", 5, t0 + 99 * MS).is_some());
        assert_eq!(shed.blocked("k", 5, t0 + 100 * MS), None);
        assert_eq!(shed.len(), 0, "expired entries are dropped when seen");
    }

    #[test]
    fn stays_within_capacity_and_sweeps_expired_entries() {
        let shed = Shed::new(2);
        let t0 = Instant::now();
        shed.limited("a", 1, 10 * MS, 10 * MS, t0);
        shed.limited("b", 1, 50 * MS, 50 * MS, t0);
        shed.limited("c", 1, 50 * MS, 50 * MS, t0);
        assert_eq!(shed.len(), 2);
        assert!(
            shed.blocked("c", 1, t0).is_none(),
            "not remembered while full"
        );
        // Full and nothing expired: no sweep before the earliest expiry.
        shed.limited("d", 1, 50 * MS, 50 * MS, t0 + 5 * MS);
        assert!(shed.blocked("d", 1, t0 + 5 * MS).is_none());
        // After "a" expired, the sweep makes room.
        shed.limited("d", 1, 50 * MS, 50 * MS, t0 + 20 * MS);
        assert!(shed.blocked("d", 1, t0 + 20 * MS).is_some());
        assert!(shed.blocked("b", 1, t0 + 20 * MS).is_some());
        assert_eq!(shed.len(), 2);
    }

    #[test]
    fn zero_capacity_remembers_nothing() {
        let shed = Shed::new(0);
        let t0 = Instant::now();
        shed.limited("k", 1, 10 * MS, 10 * MS, t0);
        assert!(shed.blocked("k", 1, t0).is_none());
    }
}
