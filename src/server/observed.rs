//! What this instance's API has seen since start, for `/v1/status`, `/v1/cache/stats` and
//! `/v1/ratelimit/top` (the console reads them; Prometheus has the same and more on
//! `/metrics`).

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cache::Served;

use super::limited_keys::LimitedKeys;

/// Most cache namespaces counted one by one; the rest share [`OTHER_NAMESPACES`].
pub const MAX_NAMESPACES: usize = 1000;

/// Where reads of namespaces beyond [`MAX_NAMESPACES`] are counted.
pub const OTHER_NAMESPACES: &str = "(other)";

/// Counters of this instance since start.
pub struct Observed {
    /// When the process started serving.
    pub started_at: SystemTime,
    /// `/v1` requests answered.
    pub requests: AtomicU64,
    /// `/v1` requests answered with a `4xx` or `5xx`.
    pub problems: AtomicU64,
    /// Events accepted by `POST /v1/events` and the ZITADEL ingestion.
    pub events_published: AtomicU64,
    /// Unix milliseconds of the last master change seen (0: none since start).
    last_failover_ms: AtomicU64,
    /// Rate-limit denials by key.
    pub limited: LimitedKeys,
    /// Cache reads by namespace: L1 hits, L2 hits, misses.
    namespaces: RwLock<HashMap<String, [AtomicU64; 3]>>,
}

impl Default for Observed {
    fn default() -> Self {
        Self {
            started_at: SystemTime::now(),
            requests: AtomicU64::new(0),
            problems: AtomicU64::new(0),
            events_published: AtomicU64::new(0),
            last_failover_ms: AtomicU64::new(0),
            limited: LimitedKeys::default(),
            namespaces: RwLock::default(),
        }
    }
}

/// One namespace's reads through the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceReads {
    /// The namespace.
    pub namespace: String,
    /// Answered from this process's memory.
    pub l1_hits: u64,
    /// Answered from Redis (fail-safe copies included).
    pub l2_hits: u64,
    /// Not cached.
    pub misses: u64,
}

impl Observed {
    /// Counts one `/v1` answer with `status`.
    pub fn answered(&self, status: u16) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 400 {
            self.problems.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Notes a master change now.
    pub fn failover(&self, at: SystemTime) {
        let ms = at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        self.last_failover_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// The last master change seen since start.
    pub fn last_failover(&self) -> Option<SystemTime> {
        match self.last_failover_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(UNIX_EPOCH + std::time::Duration::from_millis(ms)),
        }
    }

    /// Counts one cache read of `namespace`: served from where, or a miss (`None`).
    pub fn cache_read(&self, namespace: &str, served: Option<Served>) {
        let slot = match served {
            Some(Served::L1) => 0,
            Some(Served::L2 | Served::Stale) => 1,
            None => 2,
        };
        {
            let map = self.namespaces.read().unwrap_or_else(|e| e.into_inner());
            if let Some(counts) = map.get(namespace) {
                counts[slot].fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let mut map = self.namespaces.write().unwrap_or_else(|e| e.into_inner());
        let name = if map.len() < MAX_NAMESPACES || map.contains_key(namespace) {
            namespace
        } else {
            OTHER_NAMESPACES
        };
        map.entry(name.to_owned()).or_default()[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// Reads per namespace, by name.
    pub fn cache_reads(&self) -> Vec<NamespaceReads> {
        let map = self.namespaces.read().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<NamespaceReads> = map
            .iter()
            .map(|(namespace, c)| NamespaceReads {
                namespace: namespace.clone(),
                l1_hits: c[0].load(Ordering::Relaxed),
                l2_hits: c[1].load(Ordering::Relaxed),
                misses: c[2].load(Ordering::Relaxed),
            })
            .collect();
        rows.sort_by(|a, b| a.namespace.cmp(&b.namespace));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_problems_and_reads_per_namespace() {
        let o = Observed::default();
        o.answered(200);
        o.answered(404);
        o.answered(503);
        assert_eq!(o.requests.load(Ordering::Relaxed), 3);
        assert_eq!(o.problems.load(Ordering::Relaxed), 2);
        o.cache_read("users", Some(Served::L1));
        o.cache_read("users", Some(Served::L2));
        o.cache_read("users", None);
        o.cache_read("orgs", Some(Served::Stale));
        let rows = o.cache_reads();
        assert_eq!(rows[0].namespace, "orgs");
        assert_eq!(rows[0].l2_hits, 1);
        assert_eq!(
            (rows[1].l1_hits, rows[1].l2_hits, rows[1].misses),
            (1, 1, 1)
        );
        assert!(o.last_failover().is_none());
        o.failover(UNIX_EPOCH + std::time::Duration::from_secs(5));
        assert_eq!(
            o.last_failover(),
            Some(UNIX_EPOCH + std::time::Duration::from_secs(5))
        );
    }

    #[test]
    fn namespaces_beyond_the_bound_share_one_row() {
        let o = Observed::default();
        for i in 0..MAX_NAMESPACES + 5 {
            o.cache_read(&format!("ns{i}"), None);
        }
        let rows = o.cache_reads();
        assert_eq!(rows.len(), MAX_NAMESPACES + 1);
        let other = rows
            .iter()
            .find(|r| r.namespace == OTHER_NAMESPACES)
            .unwrap();
        assert_eq!(other.misses, 5);
    }
}
