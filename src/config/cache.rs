//! The `cache` block: the two-level cache's Redis overrides, key prefix, TTLs, L1,
//! fail-safe, loaders and circuit breaker, with the block's checks.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::load::{ConfigError, invalid};
use super::redis::RedisOverrides;
use super::types::{DbIndex, duration};

/// The `cache` block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Overrides of the top-level `redis` block for the cache.
    pub redis: RedisOverrides,
    /// Prefix of every cache key in Redis (the seeds' `InstanceName`).
    pub key_prefix: String,
    /// Value compression.
    pub compression: CompressionConfig,
    /// Time to live, by category.
    pub ttl: TtlConfig,
    /// Each TTL is shortened by a random amount up to this percentage, so entries written
    /// together do not expire together.
    pub jitter_percent: u8,
    /// The in-process level.
    pub l1: L1Config,
    /// Evict L1 entries on every instance when one instance writes or removes (Redis
    /// pub/sub); off, other instances serve their L1 copy until it expires.
    pub backplane: bool,
    /// How long past its expiry a value is still served when Redis or the loader fails
    /// (`0s` turns the fail-safe off).
    #[serde(with = "duration")]
    pub fail_safe_max_duration: Duration,
    /// Deadline of each Redis read or write of the cache.
    #[serde(with = "duration")]
    pub l2_timeout: Duration,
    /// Longest a loader may run; past it the load fails (and the fail-safe copy is served
    /// if there is one). `0s`: no limit.
    #[serde(with = "duration")]
    pub loader_timeout: Duration,
    /// How long a caller waits for a loader when a stale fail-safe copy exists; past it the
    /// stale copy is served and the loader finishes in the background, caching its result.
    /// `0s`: always wait (up to `loaderTimeout`).
    #[serde(with = "duration")]
    pub loader_soft_timeout: Duration,
    /// Run a key's loader on one instance at a time (a short Redis lock), so a miss on many
    /// instances at once loads once; the others wait and read the value from Redis.
    pub distributed_load: DistributedLoadConfig,
    /// When to stop asking a failing Redis for a while.
    pub circuit_breaker: CircuitBreakerConfig,
    /// Largest value (its JSON) that may be stored or read back; larger ones are refused
    /// on write and treated as corrupt on read.
    pub max_value_bytes: usize,
}

/// The `cache.circuitBreaker` block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CircuitBreakerConfig {
    /// Failed or timed-out Redis calls in a row that open the circuit.
    pub failure_threshold: u32,
    /// How long Redis is skipped once the circuit is open.
    #[serde(with = "duration")]
    pub open_for: Duration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(5),
        }
    }
}

/// The `cache.distributedLoad` block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DistributedLoadConfig {
    /// Take the lock before loading a key missing from Redis (Redis backend only).
    pub enabled: bool,
    /// Lease of the lock; a loader running longer lets another instance load too.
    #[serde(with = "duration")]
    pub lock_ttl: Duration,
    /// Longest an instance waits for another's load before loading itself.
    #[serde(with = "duration")]
    pub wait: Duration,
}

impl Default for DistributedLoadConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            lock_ttl: Duration::from_secs(10),
            wait: Duration::from_secs(5),
        }
    }
}

/// The `cache.l1` block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct L1Config {
    /// Most entries kept in memory (`0`: no L1).
    pub max_entries: u64,
    /// Most bytes kept in memory: keys, values and bookkeeping.
    pub max_bytes: u64,
    /// Longest an entry read from Redis stays in memory (entries written by this instance
    /// keep their own TTL when shorter).
    #[serde(with = "duration")]
    pub max_ttl: Duration,
}

impl Default for L1Config {
    fn default() -> Self {
        Self {
            max_entries: 100_000,
            max_bytes: 256 << 20,
            max_ttl: Duration::from_secs(300),
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            redis: RedisOverrides {
                database: Some(DbIndex::default()),
                ..RedisOverrides::default()
            },
            key_prefix: "aikernel_".into(),
            compression: CompressionConfig::default(),
            ttl: TtlConfig::default(),
            jitter_percent: 10,
            l1: L1Config::default(),
            backplane: true,
            fail_safe_max_duration: Duration::from_secs(600),
            l2_timeout: Duration::from_millis(250),
            loader_timeout: Duration::from_secs(30),
            loader_soft_timeout: Duration::ZERO,
            distributed_load: DistributedLoadConfig::default(),
            circuit_breaker: CircuitBreakerConfig::default(),
            max_value_bytes: 8 << 20,
        }
    }
}

/// The `cache.compression` block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CompressionConfig {
    /// Compress values above the threshold.
    pub enabled: bool,
    /// Values of this many bytes or fewer are stored as they are.
    pub threshold_bytes: usize,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold_bytes: 1024,
        }
    }
}

/// The `cache.ttl` block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TtlConfig {
    /// TTL of a value whose category has no entry.
    #[serde(with = "duration")]
    pub default: Duration,
    /// TTL per category.
    #[serde(with = "duration_map")]
    pub categories: BTreeMap<String, Duration>,
}

impl Default for TtlConfig {
    fn default() -> Self {
        let categories = [
            ("resource", 300),
            ("search", 600),
            ("version_history", 3600),
            ("lineage", 900),
            ("relationship", 600),
        ]
        .into_iter()
        .map(|(k, s)| (k.to_owned(), Duration::from_secs(s)))
        .collect();
        Self {
            default: Duration::from_secs(300),
            categories,
        }
    }
}

mod duration_map {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<String, Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(k, v)| (k, duration::format(v))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Duration>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                duration::parse(&v)
                    .map(|d| (k.clone(), d))
                    .map_err(|e| serde::de::Error::custom(format!("category `{k}`: {e}")))
            })
            .collect()
    }
}

impl CacheConfig {
    /// Checks of the `cache` block: TTLs and deadlines, value sizes, the L1 budget and the
    /// loader timeouts.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for the first problem found.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let at_least_1ms = |key: &str, d: Duration| {
            if d < Duration::from_millis(1) {
                Err(invalid(key, "expected at least 1ms"))
            } else {
                Ok(())
            }
        };
        at_least_1ms("cache.ttl.default", self.ttl.default)?;
        for (name, ttl) in &self.ttl.categories {
            at_least_1ms(&format!("cache.ttl.categories.{name}"), *ttl)?;
        }
        at_least_1ms("cache.l1.maxTtl", self.l1.max_ttl)?;
        at_least_1ms("cache.l2Timeout", self.l2_timeout)?;
        if self.jitter_percent > 100 {
            return Err(invalid("cache.jitterPercent", "expected 0 to 100"));
        }
        let max_value = crate::cache::frame::MAX_DECOMPRESSED;
        if self.max_value_bytes == 0 || self.max_value_bytes > max_value {
            return Err(invalid(
                "cache.maxValueBytes",
                format!("expected 1 to {max_value} (64 MiB)"),
            ));
        }
        if self.l1.max_entries > 0 && self.l1.max_bytes < 1 << 20 {
            return Err(invalid(
                "cache.l1.maxBytes",
                "expected at least 1048576 (1 MiB) while cache.l1.maxEntries is above 0",
            ));
        }
        let soft = self.loader_soft_timeout;
        if !soft.is_zero() && !self.loader_timeout.is_zero() && soft >= self.loader_timeout {
            return Err(invalid(
                "cache.loaderSoftTimeout",
                format!(
                    "must be shorter than cache.loaderTimeout ({}), or 0s",
                    duration::format(&self.loader_timeout)
                ),
            ));
        }
        if self.distributed_load.enabled {
            at_least_1ms(
                "cache.distributedLoad.lockTtl",
                self.distributed_load.lock_ttl,
            )?;
        }
        Ok(())
    }
}
