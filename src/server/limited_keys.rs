//! The most-denied rate-limit keys of the last minutes, as this instance's API saw them
//! (`GET /v1/ratelimit/top`, the console's rate-limit page).
//!
//! Each key keeps one count per minute for the last [`MINUTES`] minutes. At most
//! [`MAX_KEYS`] keys are followed at once: keys with no denial in the last [`MINUTES`]
//! minutes are dropped first, and while the table is still full a new key is not
//! followed (the keys already there are the ones being denied). Only denials are
//! recorded, so an allowed check costs nothing here.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest window, in minutes.
pub const MINUTES: u64 = 15;

/// Most keys followed at once.
pub const MAX_KEYS: usize = 10_000;

/// Keys answered by [`LimitedKeys::top`].
pub const TOP: usize = 20;

/// One key's denials.
struct Counts {
    /// Denials per minute; slot `minute % MINUTES`, valid when `minutes[slot] == minute`.
    per_minute: [u32; MINUTES as usize],
    minutes: [u64; MINUTES as usize],
    last_denied: SystemTime,
}

/// One row of [`LimitedKeys::top`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limited {
    /// Rule name.
    pub rule: String,
    /// The key as checked.
    pub key: String,
    /// Denials within the window.
    pub denied: u64,
    /// The latest denial.
    pub last_denied: SystemTime,
}

/// The table of denied keys. Cheap to share behind an `Arc`.
#[derive(Default)]
pub struct LimitedKeys {
    keys: Mutex<HashMap<(String, String), Counts>>,
}

fn minute_of(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / 60
}

impl LimitedKeys {
    /// Records one denial of `key` by `rule` at `at`.
    pub fn record(&self, rule: &str, key: &str, at: SystemTime) {
        let minute = minute_of(at);
        let slot = (minute % MINUTES) as usize;
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let id = (rule.to_owned(), key.to_owned());
        if !keys.contains_key(&id) && keys.len() >= MAX_KEYS {
            keys.retain(|_, c| minute_of(c.last_denied) + MINUTES > minute);
            if keys.len() >= MAX_KEYS {
                return;
            }
        }
        let counts = keys.entry(id).or_insert(Counts {
            per_minute: [0; MINUTES as usize],
            minutes: [0; MINUTES as usize],
            last_denied: at,
        });
        if counts.minutes[slot] != minute {
            counts.minutes[slot] = minute;
            counts.per_minute[slot] = 0;
        }
        counts.per_minute[slot] = counts.per_minute[slot].saturating_add(1);
        counts.last_denied = counts.last_denied.max(at);
    }

    /// The [`TOP`] keys denied most within `window` (whole minutes, 1 to [`MINUTES`],
    /// the current minute included) before `now`, most denied first.
    pub fn top(&self, window: Duration, now: SystemTime) -> Vec<Limited> {
        let minutes = (window.as_secs() / 60).clamp(1, MINUTES);
        let current = minute_of(now);
        let first = current.saturating_sub(minutes - 1);
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<Limited> = keys
            .iter()
            .filter_map(|((rule, key), c)| {
                let denied: u64 = c
                    .minutes
                    .iter()
                    .zip(c.per_minute)
                    .filter(|(m, _)| (first..=current).contains(*m))
                    .map(|(_, n)| u64::from(n))
                    .sum();
                (denied > 0).then(|| Limited {
                    rule: rule.clone(),
                    key: key.clone(),
                    denied,
                    last_denied: c.last_denied,
                })
            })
            .collect();
        rows.sort_by(|a, b| {
            b.denied
                .cmp(&a.denied)
                .then(b.last_denied.cmp(&a.last_denied))
        });
        rows.truncate(TOP);
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: u64, second: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(minute * 60 + second)
    }

    #[test]
    fn most_denied_first_within_the_window() {
        let t = LimitedKeys::default();
        for _ in 0..3 {
            t.record("login", "user=a", at(100, 1));
        }
        t.record("login", "user=b", at(100, 2));
        for _ in 0..5 {
            t.record("login", "user=c", at(90, 0));
        }
        let top = t.top(Duration::from_secs(300), at(100, 30));
        let keys: Vec<(&str, u64)> = top.iter().map(|r| (r.key.as_str(), r.denied)).collect();
        assert_eq!(keys, [("user=a", 3), ("user=b", 1)]);
        let wide = t.top(Duration::from_secs(15 * 60), at(100, 30));
        assert_eq!(wide[0].key, "user=c");
        assert_eq!(wide[0].denied, 5);
        assert_eq!(wide[0].last_denied, at(90, 0));
    }

    #[test]
    fn a_reused_slot_starts_again() {
        let t = LimitedKeys::default();
        t.record("r", "k", at(100, 0));
        t.record("r", "k", at(100 + MINUTES, 0));
        let top = t.top(Duration::from_secs(60), at(100 + MINUTES, 10));
        assert_eq!(top[0].denied, 1);
    }

    #[test]
    fn a_full_table_drops_keys_gone_quiet_and_then_refuses_new_ones() {
        let t = LimitedKeys::default();
        for i in 0..MAX_KEYS {
            t.record("r", &format!("old-{i}"), at(100, 0));
        }
        t.record("r", "new", at(100, 1));
        assert!(
            t.top(Duration::from_secs(60), at(100, 2))
                .iter()
                .all(|r| r.key != "new")
        );
        t.record("r", "later", at(100 + MINUTES, 0));
        let top = t.top(Duration::from_secs(60), at(100 + MINUTES, 1));
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].key, "later");
    }
}
