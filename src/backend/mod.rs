//! Backends: the embedded memory store or Redis (standalone or Sentinel).
//!
//! Each capability has its own store enum with a memory and a Redis variant; this module
//! owns what they share: the Redis connection layer and the choice between the two
//! ([`Backend`]).

pub mod memory;
pub mod redis;

use crate::config::{BackendKind, Config, RedisMode};

pub use self::memory::{Full, MemoryBudget};
pub use self::redis::{RedisBackend, Retry};

/// Why a backend operation failed. Messages never carry secrets or values.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BackendError {
    /// Redis answered with an error or the connection failed.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// Redis is not reachable right now (no master known, pool timeout, …); the command
    /// was not sent.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// The command was sent, or may have been, and no usable answer came (a deadline
    /// passed, a shared script call failed): Redis may have run it.
    #[error("redis: {0}")]
    MaybeRan(String),
    /// The settings cannot be used (unreadable secret or TLS file, bad address).
    #[error("redis configuration: {0}")]
    Config(String),
}

/// The store behind every capability of one process.
#[derive(Clone)]
pub enum Backend {
    /// In-process: single node, not persistent; its stores share one byte budget.
    Memory(MemoryBudget),
    /// Redis; each capability may use its own database, so there is one handle per
    /// distinct effective `redis` block.
    Redis(RedisBackends),
}

/// Redis handles per capability (they share connections when their settings match).
#[derive(Clone)]
pub struct RedisBackends {
    /// Defaults (`redis`).
    pub default: RedisBackend,
    /// Cache (`cache.redis`).
    pub cache: RedisBackend,
    /// Event queues (`events.redis`).
    pub events: RedisBackend,
}

impl Backend {
    /// The memory backend with the default `memory.maxBytes`.
    pub fn memory() -> Self {
        Self::Memory(MemoryBudget::default())
    }

    /// Builds the backend the config names.
    ///
    /// # Errors
    /// [`BackendError`] when Redis settings are unusable or no Sentinel answers.
    pub async fn from_config(config: &Config) -> Result<Self, BackendError> {
        match config.backend {
            BackendKind::Memory => {
                tracing::warn!(
                    "backend: memory (embedded). Single node, contents are lost on restart; \
                     use `backend: redis` for anything shared or durable"
                );
                Ok(Self::Memory(MemoryBudget::new(config.memory.max_bytes)))
            }
            BackendKind::Redis => {
                let default = RedisBackend::connect(config.redis.clone()).await?;
                let reuse = |cfg: crate::config::RedisConfig| {
                    let default = default.clone();
                    async move {
                        if &cfg == default.config() {
                            Ok(default)
                        } else {
                            RedisBackend::connect(cfg).await
                        }
                    }
                };
                let cache = reuse(config.cache_redis()).await?;
                let events = reuse(config.events_redis()).await?;
                let redis = &config.redis;
                let master = default.master();
                match redis.mode {
                    RedisMode::Standalone => tracing::info!(
                        master = %master.endpoint, tls = redis.tls.enabled,
                        "backend: redis standalone"
                    ),
                    RedisMode::Sentinel => tracing::info!(
                        master = %master.endpoint, name = %redis.sentinel.master_name,
                        sentinels = redis.sentinel.nodes.len(), tls = redis.tls.enabled,
                        "backend: redis through Sentinel"
                    ),
                }
                check_eviction(&default, "locks, sessions, tokens and rate limits").await?;
                if config.events.enabled && events.config() != default.config() {
                    check_eviction(&events, "event queues (events.redis)").await?;
                }
                Ok(Self::Redis(RedisBackends {
                    default,
                    cache,
                    events,
                }))
            }
        }
    }

    /// Whether the backend can serve requests now (`/readyz`).
    ///
    /// # Errors
    /// The first Redis handle that does not answer `PING`.
    pub async fn ready(&self) -> Result<(), BackendError> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::Redis(r) => {
                r.default.ping().await?;
                r.cache.ping().await?;
                r.events.ping().await
            }
        }
    }

    /// `memory` or `redis`.
    pub fn kind(&self) -> BackendKind {
        match self {
            Self::Memory(_) => BackendKind::Memory,
            Self::Redis(_) => BackendKind::Redis,
        }
    }
}

/// Refuses a server whose `maxmemory-policy` may evict keys that must not vanish: lock
/// leases and fencing counters, sessions and their user indexes, rate-limit counters,
/// queued events and their bookkeeping (only the cache may be evicted, and it can live in
/// a server of its own through `cache.redis`). `redis.allowEvictingPolicy` turns the
/// refusal into a warning. A server that cannot be asked (unreachable at start-up, or
/// `CONFIG` renamed away) is warned about, not refused.
async fn check_eviction(backend: &RedisBackend, holds: &str) -> Result<(), BackendError> {
    let endpoint = backend.master().endpoint;
    // Bounded: start-up does not wait for a Redis that is down (readyz reports that).
    let answer = tokio::time::timeout(
        backend.config().dial_timeout,
        backend.query::<Vec<String>>(::redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy")),
    )
    .await
    .unwrap_or_else(|_| Err(BackendError::Unavailable("no answer".into())));
    let policy = match answer {
        Ok(pair) => pair.into_iter().nth(1).unwrap_or_default(),
        Err(error) => {
            tracing::warn!(%endpoint, %error, "could not read maxmemory-policy; an evicting policy would lose {holds}");
            return Ok(());
        }
    };
    if policy.is_empty() || policy == "noeviction" {
        return Ok(());
    }
    let message = format!(
        "redis {endpoint} has maxmemory-policy `{policy}`: when memory runs out Redis may \
         evict the keys of {holds} (fencing tokens go backwards, revoke-all misses sessions, \
         limits reset, queued events vanish). Set `maxmemory-policy noeviction` on that \
         server (give the cache a server of its own through cache.redis if it should be \
         evicted), or set redis.allowEvictingPolicy: true to start with a warning"
    );
    if backend.config().allow_evicting_policy {
        tracing::warn!("{message}");
        return Ok(());
    }
    Err(BackendError::Config(message))
}
