//! The `events` block: publishing, accepted types, routing, queues, workers, ZITADEL
//! ingestion and sinks, with the block's checks (numeric ranges in
//! [`events_bounds`](super::events_bounds)).

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::load::{ConfigError, invalid};
use super::redis::RedisOverrides;
use super::secret::SecretSource;
use super::types::{DbIndex, duration};
use crate::events::{Pattern, Priority, TypeFilter};

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

impl EventsConfig {
    /// Checks of the `events` block: patterns, queue names, numeric ranges
    /// ([`events_bounds`](super::events_bounds)), ZITADEL ingestion, sinks and their secrets.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for the first problem found.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (i, ty) in self.types.iter().enumerate() {
            Pattern::new(ty).map_err(|e| invalid(&format!("events.types[{i}]"), e.to_string()))?;
        }
        for (i, rule) in self.routing.iter().enumerate() {
            Pattern::new(&rule.pattern)
                .map_err(|e| invalid(&format!("events.routing[{i}].match"), e.to_string()))?;
        }
        let queues = [
            ("high_priority", &self.queues.high_priority),
            ("normal_priority", &self.queues.normal_priority),
            ("low_priority", &self.queues.low_priority),
            ("dead_letter", &self.queues.dead_letter),
        ];
        for (i, (key, name)) in queues.iter().enumerate() {
            let key = format!("events.queues.{key}");
            if name.is_empty() {
                return Err(invalid(&key, "must not be empty"));
            }
            if let Some((other, _)) = queues[..i].iter().find(|(_, n)| n == name) {
                return Err(invalid(
                    &key,
                    format!(
                        "`{name}` is also events.queues.{other}; each queue needs its own list"
                    ),
                ));
            }
        }
        super::events_bounds::check(self).map_err(|(key, message)| invalid(&key, message))?;
        let publishing = &self.publishing;
        if publishing.batch_size > self.performance.event_buffer_size {
            return Err(invalid(
                "events.publishing.batchSize",
                format!(
                    "{} exceeds events.performance.eventBufferSize ({}); a batch must fit in \
                 the buffer",
                    publishing.batch_size, self.performance.event_buffer_size
                ),
            ));
        }
        let zitadel = &self.zitadel;
        if zitadel.tolerance < Duration::from_secs(1) {
            return Err(invalid("events.zitadel.tolerance", "expected at least 1s"));
        }
        if zitadel.source.is_empty() {
            return Err(invalid("events.zitadel.source", "must not be empty"));
        }
        let accepted =
            TypeFilter::new(&self.types).map_err(|e| invalid("events.types", e.to_string()))?;
        for (from, to) in &zitadel.type_map {
            let key = format!("events.zitadel.typeMap.{from:?}");
            Pattern::new(from).map_err(|e| invalid(&key, format!("key {e}")))?;
            if !accepted.accepts(to) {
                return Err(invalid(
                    &key,
                    format!(
                        "`{to}` is not an accepted event type: expected one of events.types ({})",
                        self.types.join(", ")
                    ),
                ));
            }
        }
        if self.enabled
            && let Some(key) = &zitadel.signing_key
        {
            key.read()
                .map_err(|e| invalid("events.zitadel.signingKey", e.to_string()))?;
        }
        for (i, hook) in self.sinks.webhooks.iter().enumerate() {
            let key = |field: &str| format!("events.sinks.webhooks[{i}].{field}");
            Pattern::new(&hook.pattern).map_err(|e| invalid(&key("match"), e.to_string()))?;
            crate::events::webhook::parse_url(&hook.url).map_err(|e| invalid(&key("url"), e))?;
            if hook.timeout.is_zero() {
                return Err(invalid(&key("timeout"), "expected more than 0s"));
            }
            if self.enabled
                && let Some(secret) = &hook.signing_key
            {
                secret
                    .read()
                    .map_err(|e| invalid(&key("signingKey"), e.to_string()))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const NO_AUTH: &str = "server:\n  auth:\n    enabled: false\n";

    /// Loads `yaml` (after the no-auth preamble) from a file named `bc.yaml`.
    fn load(yaml: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bc.yaml");
        std::fs::write(&path, format!("{NO_AUTH}{yaml}")).unwrap();
        Config::load(Some(&path)).map_err(|e| e.to_string())
    }

    #[test]
    fn events_routing_and_type_map_load_from_yaml() {
        let config = load(
            "events:\n  routing:\n    - match: \"billing.*\"\n      priority: high\n    - match: \"*\"\n      priority: normal\n  zitadel:\n    source: zitadel-prod\n    tolerance: 2m\n    typeMap:\n      user.human.added: user.created\n      \"user.human.*.changed\": user.updated\n",
        )
        .unwrap();
        let events = &config.events;
        assert_eq!(
            events.routing,
            [
                RouteRule::new("billing.*", Priority::High),
                RouteRule::new("*", Priority::Normal),
            ]
        );
        assert_eq!(events.zitadel.source, "zitadel-prod");
        assert_eq!(events.zitadel.tolerance, Duration::from_secs(120));
        let map = &events.zitadel.type_map;
        assert_eq!(map.len(), 2, "{map:?}");
        assert_eq!(map["user.human.added"], "user.created");
        assert_eq!(map["user.human.*.changed"], "user.updated");
        let types = crate::events::TypeMap::new(map).unwrap();
        assert_eq!(types.map("user.human.email.changed"), Some("user.updated"));
    }

    #[test]
    fn default_events_config_is_valid() {
        let config = load("").unwrap();
        assert_eq!(config.events.routing.len(), 4);
        assert_eq!(config.events.zitadel.tolerance, Duration::from_secs(300));
        assert!(config.events.zitadel.type_map.len() > 20);
    }

    #[test]
    fn a_bad_routing_priority_names_key_and_line() {
        let err = load(
            "events:\n  routing:\n    - match: auth.*\n      priority: high\n    - match: \"*.viewed\"\n      priority: urgent\n",
        )
        .unwrap_err();
        assert!(err.contains("bc.yaml:9"), "{err}");
        assert!(err.contains("events.routing[1].priority"), "{err}");
        assert!(err.contains("urgent"), "{err}");
    }

    #[test]
    fn a_bad_routing_pattern_names_key_and_line() {
        let err = load(
            "events:\n  routing:\n    - match: auth.*\n      priority: high\n    - match: \"user.[ab]\"\n      priority: low\n",
        )
        .unwrap_err();
        assert!(err.contains(":8: events.routing[1].match"), "{err}");
        assert!(err.contains("only `*`"), "{err}");
        let err = load("events:\n  types: [user.created, \"\"]\n").unwrap_err();
        assert!(
            err.contains(":5: events.types[1]: \"\": must not be empty"),
            "{err}"
        );
    }

    #[test]
    fn a_type_map_value_must_be_an_accepted_type() {
        let err = load(
            "events:\n  types: [user.created, auth.*]\n  zitadel:\n    typeMap:\n      user.human.added: user.created\n      session.terminated: auth.logout\n      user.removed: user.gone\n",
        )
        .unwrap_err();
        assert!(
            err.contains(":10: events.zitadel.typeMap.\"user.removed\": `user.gone` is not an accepted event type"),
            "{err}"
        );
        assert!(err.contains("events.types (user.created, auth.*)"), "{err}");
    }

    #[test]
    fn queue_names_must_be_distinct_and_non_empty() {
        let err = load("events:\n  queues:\n    high_priority: q:main\n    low_priority: q:main\n")
            .unwrap_err();
        assert!(err.contains(":7: events.queues.low_priority"), "{err}");
        assert!(
            err.contains("`q:main` is also events.queues.high_priority"),
            "{err}"
        );
        let err = load("events:\n  queues:\n    dead_letter: \"\"\n").unwrap_err();
        assert!(
            err.contains(":6: events.queues.dead_letter: must not be empty"),
            "{err}"
        );
    }

    #[test]
    fn a_batch_must_fit_in_the_buffer() {
        let err = load(
            "events:\n  publishing:\n    batchSize: 500\n  performance:\n    eventBufferSize: 100\n",
        )
        .unwrap_err();
        assert!(err.contains(":6: events.publishing.batchSize"), "{err}");
        assert!(err.contains("eventBufferSize (100)"), "{err}");
    }

    #[test]
    fn zitadel_settings_are_checked() {
        let err = load("events:\n  zitadel:\n    tolerance: 0s\n").unwrap_err();
        assert!(
            err.contains("events.zitadel.tolerance: expected at least 1s"),
            "{err}"
        );
        let err = load(
            "events:\n  zitadel:\n    signingKey:\n      valueFromFile: /nonexistent/zitadel-key\n",
        )
        .unwrap_err();
        assert!(err.contains(":6: events.zitadel.signingKey"), "{err}");
        assert!(err.contains("/nonexistent/zitadel-key"), "{err}");
    }

    #[test]
    fn the_signing_key_is_redacted() {
        let config =
            load("events:\n  zitadel:\n    signingKey:\n      value: s3cr3t-signing-key\n")
                .unwrap();
        let printed = serde_saphyr::to_string(&config.redacted()).unwrap();
        assert!(!printed.contains("s3cr3t-signing-key"), "{printed}");
        assert!(printed.contains("<redacted>"), "{printed}");
        assert!(!format!("{config:?}").contains("s3cr3t-signing-key"));
    }
}
