//! Per-capability blocks (`cache`, `events`), with the seeds' key names and defaults.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::redis::RedisOverrides;
use super::secret::SecretSource;
use super::types::{DbIndex, duration};
use crate::events::Priority;

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

/// The `events` block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Turn event streaming on.
    pub enabled: bool,
    /// Overrides of the top-level `redis` block for the event queues.
    pub redis: RedisOverrides,
    /// Publishing (producer side).
    pub publishing: PublishingConfig,
    /// Accepted event types: exact names or globs with `*` (`user.*`). An empty list
    /// accepts every type.
    pub types: Vec<String>,
    /// Priority by event type: the first rule whose `match` fits the type wins; a type no
    /// rule matches is `low`. A published event's own `priority` attribute overrides
    /// routing only with `publishing.honourPriority`.
    /// Setting the list replaces the default rules.
    pub routing: Vec<RouteRule>,
    /// Queue (Redis list) names per priority.
    pub queues: QueuesConfig,
    /// Worker pool and buffering.
    pub performance: PerformanceConfig,
    /// How workers take, lease and retry events.
    pub consumer: ConsumerConfig,
    /// ZITADEL Actions v2 ingestion (`POST /v1/ingest/zitadel`).
    pub zitadel: ZitadelConfig,
    /// Where `blinkchamber worker` delivers events.
    pub sinks: SinksConfig,
}

/// The `events.sinks` block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SinksConfig {
    /// Log every event (structured, target `blinkchamber::events`).
    pub log: bool,
    /// HTTP webhooks; an event goes to every webhook whose `match` fits its type.
    pub webhooks: Vec<WebhookConfig>,
}

impl Default for SinksConfig {
    fn default() -> Self {
        Self {
            log: true,
            webhooks: Vec::new(),
        }
    }
}

/// One `events.sinks.webhooks[]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookConfig {
    /// Event type pattern: an exact type or a glob with `*`.
    #[serde(rename = "match")]
    pub pattern: String,
    /// `http://` or `https://` URL the event is `POST`ed to.
    pub url: String,
    /// Key of the `BlinkChamber-Signature` header (`t=<unix>,v1=<hex HMAC-SHA256(key,
    /// "<t>.<body>")>`, as ZITADEL signs); no header without one.
    #[serde(default)]
    pub signing_key: Option<SecretSource>,
    /// Longest wait for the answer; past it the delivery failed and is retried.
    #[serde(with = "duration", default = "default_webhook_timeout")]
    pub timeout: Duration,
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(5)
}

/// One `events.routing[]` rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// Event type pattern: an exact type or a glob where `*` matches any run of
    /// characters (`auth.*`, `*.deleted`, `*`).
    #[serde(rename = "match")]
    pub pattern: String,
    /// `high`, `normal` or `low`.
    pub priority: Priority,
}

impl RouteRule {
    /// A rule sending types that match `pattern` to `priority`.
    pub fn new(pattern: impl Into<String>, priority: Priority) -> Self {
        Self {
            pattern: pattern.into(),
            priority,
        }
    }
}

/// The `events.zitadel` block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ZitadelConfig {
    /// The Actions v2 target's signing key, which checks the `ZITADEL-Signature` header.
    pub signing_key: Option<SecretSource>,
    /// How far the signature's timestamp may be from now, either way.
    #[serde(with = "duration")]
    pub tolerance: Duration,
    /// `source` of the events built from ZITADEL bodies.
    pub source: String,
    /// ZITADEL event type (exact, or a glob with `*`) → one of `events.types`. An exact key
    /// wins over globs; a type with no entry is ignored. Setting the map replaces the
    /// default table.
    pub type_map: BTreeMap<String, String>,
    /// Publish-time idempotency: an execution whose event id (stable in ZITADEL:
    /// instance, aggregate, sequence) was ingested within this window is acknowledged and
    /// not stored again, so a redelivery or a captured request replayed inside the
    /// signature tolerance is one event. Twice `tolerance` is used when that is longer (a
    /// signed call can be replayed for that long); `0s`: off.
    #[serde(with = "duration")]
    pub dedup_window: Duration,
}

impl Default for ZitadelConfig {
    fn default() -> Self {
        Self {
            signing_key: None,
            dedup_window: Duration::from_secs(600),
            tolerance: crate::events::DEFAULT_TOLERANCE,
            source: "zitadel".into(),
            type_map: crate::events::zitadel::default_type_map(),
        }
    }
}

impl Default for EventsConfig {
    fn default() -> Self {
        let types = [
            "user.created",
            "user.updated",
            "user.deleted",
            "org.created",
            "org.updated",
            "org.deleted",
            "project.created",
            "project.updated",
            "project.deleted",
            "app.created",
            "app.updated",
            "app.deleted",
            "auth.login",
            "auth.logout",
            "auth.failed",
            "policy.created",
            "policy.updated",
            "policy.deleted",
            "role.created",
            "role.updated",
            "role.deleted",
        ];
        Self {
            enabled: true,
            redis: RedisOverrides {
                database: Some(DbIndex::new(1).expect("valid")),
                pool_size: Some(std::num::NonZeroU32::new(20).expect("nonzero")),
                max_retries: Some(5),
                dial_timeout: Some(Duration::from_secs(3)),
                read_timeout: Some(Duration::from_secs(2)),
                write_timeout: Some(Duration::from_secs(2)),
                pool_timeout: Some(Duration::from_secs(3)),
                idle_timeout: Some(Duration::from_secs(600)),
                max_conn_age: Some(Duration::from_secs(3600)),
                ..RedisOverrides::default()
            },
            publishing: PublishingConfig::default(),
            types: types.into_iter().map(String::from).collect(),
            routing: vec![
                RouteRule::new("auth.*", Priority::High),
                RouteRule::new("*.created", Priority::Normal),
                RouteRule::new("*.updated", Priority::Normal),
                RouteRule::new("*.deleted", Priority::Normal),
            ],
            queues: QueuesConfig::default(),
            performance: PerformanceConfig::default(),
            consumer: ConsumerConfig::default(),
            zitadel: ZitadelConfig::default(),
            sinks: SinksConfig::default(),
        }
    }
}

/// The `events.publishing` block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PublishingConfig {
    /// Accept events for publishing.
    pub enabled: bool,
    /// Most events per Redis round trip. A batch is sent as soon as a write slot is free,
    /// never held back to fill up, so events only batch while earlier writes are in flight.
    pub batch_size: NonZeroUsize,
    /// Longest a publish waits for its batch to be written, retries included; past it the
    /// publish fails (the events may still have been written: delivery is at least once).
    #[serde(with = "duration")]
    pub batch_timeout: Duration,
    /// Retries of a failed batch write.
    pub max_retries: u32,
    /// First retry delay; doubles per retry.
    #[serde(with = "duration")]
    pub retry_delay: Duration,
    /// Compress large events (self-identifying frames; small ones stay plain JSON).
    pub compression: bool,
    /// Acknowledge a publish only once this many replicas have its batch (`WAIT`).
    pub wait_replicas: u32,
    /// Longest `WAIT` for `waitReplicas`; fewer replicas in time fails the publish.
    #[serde(with = "duration")]
    pub wait_timeout: Duration,
    /// Let a published event's `priority` attribute choose its queue. Off by default:
    /// routing by type decides and the attribute is dropped, so no publisher can put its
    /// events ahead of everyone else's under strict priority.
    pub honour_priority: bool,
}

impl Default for PublishingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            batch_size: NonZeroUsize::new(100).expect("nonzero"),
            batch_timeout: Duration::from_secs(1),
            max_retries: 3,
            retry_delay: Duration::from_millis(100),
            compression: true,
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
            honour_priority: false,
        }
    }
}

/// The `events.queues` block (snake_case keys, as in the seeds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueuesConfig {
    /// List of high-priority events.
    pub high_priority: String,
    /// List of normal-priority events.
    pub normal_priority: String,
    /// List of low-priority events.
    pub low_priority: String,
    /// List of events that failed every retry.
    pub dead_letter: String,
    /// Prefix of the consumers' bookkeeping keys (leases, taken events, the doorbell).
    pub state_prefix: String,
}

impl Default for QueuesConfig {
    fn default() -> Self {
        Self {
            high_priority: "zitadel:events:high".into(),
            normal_priority: "zitadel:events:normal".into(),
            low_priority: "zitadel:events:low".into(),
            dead_letter: "zitadel:events:dead_letter".into(),
            state_prefix: "zitadel:events:state:".into(),
        }
    }
}

/// The `events.consumer` block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ConsumerConfig {
    /// `strict`: high, then normal, then low; `weighted`: by `weights`.
    pub priority: PriorityMode,
    /// Share of takes per priority in `weighted` mode (an empty queue passes its turn on).
    pub weights: PriorityWeights,
    /// Most events a worker takes per round trip.
    pub batch_size: NonZeroUsize,
    /// How long taken events stay leased to a worker that stops renewing (a crashed one);
    /// then they go back to their queue.
    #[serde(with = "duration")]
    pub lease: Duration,
    /// Retries of a failing event before it goes to the dead-letter list.
    pub max_retries: u32,
    /// First retry delay; doubles per attempt, up to `maxRetryDelay`.
    #[serde(with = "duration")]
    pub retry_delay: Duration,
    /// Longest retry delay.
    #[serde(with = "duration")]
    pub max_retry_delay: Duration,
    /// Window for skipping an event whose id was already handled successfully (`0s`: off).
    /// It narrows repeats (a producer publishing twice, ZITADEL redelivering); it cannot
    /// remove them all (a worker that dies after handling, before settling), so handlers
    /// must still tolerate one.
    #[serde(with = "duration")]
    pub dedup_window: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            priority: PriorityMode::Strict,
            weights: PriorityWeights::default(),
            batch_size: NonZeroUsize::new(200).expect("nonzero"),
            lease: Duration::from_secs(30),
            max_retries: 3,
            retry_delay: Duration::from_secs(1),
            max_retry_delay: Duration::from_secs(300),
            dedup_window: Duration::ZERO,
        }
    }
}

/// How workers choose between the priority queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PriorityMode {
    /// Always the highest non-empty queue.
    Strict,
    /// Each take picks a queue at random by weight.
    Weighted,
}

/// The `events.consumer.weights` block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PriorityWeights {
    /// Weight of the high-priority queue.
    pub high: u32,
    /// Weight of the normal-priority queue.
    pub normal: u32,
    /// Weight of the low-priority queue.
    pub low: u32,
}

impl Default for PriorityWeights {
    fn default() -> Self {
        Self {
            high: 6,
            normal: 3,
            low: 1,
        }
    }
}

/// The `events.performance` block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PerformanceConfig {
    /// Concurrent consumers in `blinkchamber worker`.
    pub worker_count: NonZeroUsize,
    /// Events being published or handled at once.
    pub max_concurrent_events: NonZeroUsize,
    /// Events the publish buffer holds before callers are pushed back.
    pub event_buffer_size: NonZeroUsize,
    /// Longest an idle worker waits on Redis before it looks for expired leases and due
    /// retries (new events wake it at once).
    #[serde(with = "duration")]
    pub flush_interval: Duration,
    /// Export the event metrics (`blinkchamber_events_*`, `blinkchamber_zitadel_*`) on
    /// `/metrics` of `serve` and `worker`.
    pub enable_metrics: bool,
}

impl Default for PerformanceConfig {
    fn default() -> Self {
        Self {
            worker_count: NonZeroUsize::new(10).expect("nonzero"),
            max_concurrent_events: NonZeroUsize::new(1000).expect("nonzero"),
            event_buffer_size: NonZeroUsize::new(5000).expect("nonzero"),
            flush_interval: Duration::from_millis(500),
            enable_metrics: true,
        }
    }
}
