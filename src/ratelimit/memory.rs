//! The in-process store: the memory backend, and the insurance limiter of the Redis backend.
//!
//! State lives in sharded maps keyed exactly like the Redis keys, and every check runs the
//! functions of [`super::algorithm`] on a clock read from `tokio::time::Instant` (so tests
//! can pause and advance it), anchored to the wall clock once at creation so windows are
//! aligned as in Redis. Expired entries are treated as absent, as Redis would, and are
//! swept out every few thousand writes to a shard.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::algorithm::{self, EPOCH_UNIX_SECS, Limits, Outcome, Write};
use crate::backend::memory::{Full, ITEM_OVERHEAD, MemoryBudget};
use crate::config::Algorithm;

const SHARDS: usize = 16;
const SWEEP_EVERY: u32 = 4096;

/// Rate-limit state of this process.
pub(crate) struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    clock: Clock,
    budget: MemoryBudget,
}

/// The budget charge of one counter or arrival time.
fn weight(key: &str) -> usize {
    key.len() + ITEM_OVERHEAD
}

#[derive(Default)]
struct Shard {
    entries: HashMap<String, Entry>,
    writes: u32,
}

#[derive(Clone, Copy)]
struct Entry {
    value: Value,
    /// Microseconds since the epoch at which the entry no longer exists.
    expires_at: f64,
}

#[derive(Clone, Copy)]
enum Value {
    Tat(f64),
    Count(u64),
}

/// Microseconds since [`EPOCH_UNIX_SECS`], advancing with tokio's clock.
pub(crate) struct Clock {
    start: Instant,
    start_us: i64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        Self {
            start: Instant::now(),
            start_us: wall - EPOCH_UNIX_SECS * 1_000_000,
        }
    }

    pub(crate) fn now_us(&self) -> i64 {
        self.start_us + Instant::now().duration_since(self.start).as_micros() as i64
    }
}

/// One check handed to a store: the base key (`{prefix}{rule}:{key}`), limits and cost.
pub(crate) struct Check<'a> {
    pub key: &'a str,
    pub limits: &'a Limits,
    pub cost: u64,
}

impl MemoryStore {
    /// A store counted against `budget` (unlimited for the Redis limiter's local
    /// fallback).
    pub(crate) fn new(budget: MemoryBudget) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            clock: Clock::new(),
            budget,
        }
    }

    /// Runs `checks` at one instant, each on its own key, in order.
    ///
    /// # Errors
    /// [`Full`] when a check needs a new key and the memory budget has no room; the checks
    /// before it in `checks` have run.
    pub(crate) fn check_many(&self, checks: &[Check<'_>]) -> Result<Vec<Outcome>, Full> {
        let now = self.clock.now_us();
        checks.iter().map(|c| self.check_at(c, now)).collect()
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_at(&self, c: &Check<'_>, now_us: i64) -> Result<Outcome, Full> {
        let budget = &self.budget;
        let now = now_us as f64;
        let l = c.limits;
        match l.algorithm {
            Algorithm::Gcra => {
                let mut shard = self.shard(c.key);
                let stored = match shard.get(c.key, now) {
                    Some(Value::Tat(t)) => Some(t),
                    _ => None,
                };
                let (outcome, write) = algorithm::gcra(l, stored, now_us, c.cost);
                if let Write::Tat { tat, ttl_ms } = write {
                    let expires_at = now + ttl_ms as f64 * 1000.0;
                    shard.put(c.key, Value::Tat(tat), expires_at, now, budget)?;
                }
                Ok(outcome)
            }
            Algorithm::FixedWindow => {
                let window = algorithm::window_index(l, now_us);
                let key = index_key(c.key, window);
                let mut shard = self.shard(c.key);
                let count = shard.count(&key, now);
                let (outcome, write) = algorithm::fixed_window(l, count, now_us, c.cost);
                shard.apply(key, write, now, budget)?;
                Ok(outcome)
            }
            Algorithm::SlidingWindow => {
                let window = algorithm::window_index(l, now_us);
                let prev_key = index_key(c.key, window - 1);
                let key = index_key(c.key, window);
                // Every counter of a base key lives in the base key's shard, so one lock
                // covers both windows.
                let mut shard = self.shard(c.key);
                let prev = shard.count(&prev_key, now);
                let curr = shard.count(&key, now);
                let (outcome, write) = algorithm::sliding_window(l, prev, curr, now_us, c.cost);
                shard.apply(key, write, now, budget)?;
                Ok(outcome)
            }
        }
    }

    /// Number of live entries (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let now = self.clock.now_us() as f64;
        self.shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(|e| e.into_inner());
                s.entries.values().filter(|e| e.expires_at > now).count()
            })
            .sum()
    }
}

/// `key:index`, as `check.lua` writes it.
fn index_key(key: &str, window: i64) -> String {
    format!("{key}:{window}")
}

impl Shard {
    fn get(&self, key: &str, now: f64) -> Option<Value> {
        self.entries
            .get(key)
            .filter(|e| e.expires_at > now)
            .map(|e| e.value)
    }

    fn count(&self, key: &str, now: f64) -> u64 {
        match self.get(key, now) {
            Some(Value::Count(n)) => n,
            _ => 0,
        }
    }

    fn put(
        &mut self,
        key: &str,
        value: Value,
        expires_at: f64,
        now: f64,
        budget: &MemoryBudget,
    ) -> Result<(), Full> {
        let entry = Entry { value, expires_at };
        match self.entries.get_mut(key) {
            Some(e) => *e = entry,
            None => {
                self.reserve(key, now, budget)?;
                self.entries.insert(key.to_owned(), entry);
            }
        }
        self.after_write(now, budget);
        Ok(())
    }

    /// Room for a new key: the budget, after dropping this shard's expired keys if need be.
    fn reserve(&mut self, key: &str, now: f64, budget: &MemoryBudget) -> Result<(), Full> {
        if budget.reserve(weight(key)).is_err() {
            self.sweep(now, budget);
            budget.reserve(weight(key))?;
        }
        Ok(())
    }

    /// `INCRBY`, and `PEXPIRE` when the counter is new.
    fn apply(
        &mut self,
        key: String,
        write: Write,
        now: f64,
        budget: &MemoryBudget,
    ) -> Result<(), Full> {
        let Write::Incr { cost, ttl_ms, .. } = write else {
            return Ok(());
        };
        match self.entries.get_mut(&key) {
            Some(e) if e.expires_at > now => {
                if let Value::Count(n) = &mut e.value {
                    *n += cost;
                }
            }
            found => {
                if found.is_none() {
                    self.reserve(&key, now, budget)?;
                }
                let expires_at = now + ttl_ms as f64 * 1000.0;
                self.entries.insert(
                    key,
                    Entry {
                        value: Value::Count(cost),
                        expires_at,
                    },
                );
            }
        }
        self.after_write(now, budget);
        Ok(())
    }

    /// Drops expired entries every [`SWEEP_EVERY`] writes.
    fn after_write(&mut self, now: f64, budget: &MemoryBudget) {
        self.writes += 1;
        if self.writes >= SWEEP_EVERY {
            self.sweep(now, budget);
        }
    }

    fn sweep(&mut self, now: f64, budget: &MemoryBudget) {
        self.writes = 0;
        self.entries.retain(|key, e| {
            let live = e.expires_at > now;
            if !live {
                budget.release(weight(key));
            }
            live
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn checks_write_the_keys_redis_would_and_limited_checks_write_nothing() {
        let store = MemoryStore::new(MemoryBudget::unlimited());
        let day = 86_400_000_000;
        for algorithm in [
            Algorithm::Gcra,
            Algorithm::FixedWindow,
            Algorithm::SlidingWindow,
        ] {
            let limits = Limits {
                algorithm,
                limit: 2,
                period_us: day,
                burst: 2,
            };
            let key = format!("p:{algorithm:?}:k");
            let check = [Check {
                key: &key,
                limits: &limits,
                cost: 2,
            }];
            assert!(store.check_many(&check).unwrap()[0].allowed);
            assert!(!store.check_many(&check).unwrap()[0].allowed);
        }
        assert_eq!(
            store.len(),
            3,
            "one entry per key, none for the limited checks"
        );
    }
}
