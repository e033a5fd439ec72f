//! Configuration: one YAML file, every key overridable by `BLINKCHAMBER_…` variables.
//!
//! Key names follow the seeds' Helm values so a platform team can paste them. The file is
//! parsed straight into typed structs so that an unknown key, a wrong type or an
//! impossible value is reported with its file line; environment overrides are layered on
//! top (see `Config::with_env_overrides`); checks that span several keys run last ([`Config::validate`]).

mod capabilities;
mod env;
pub mod events_bounds;
mod key_spaces;
mod limits;
mod load;
mod redis;
pub mod secret;
mod server;
mod sessions;
mod tokens;
pub mod types;

use serde::{Deserialize, Serialize};

pub use capabilities::{
    CacheConfig, CircuitBreakerConfig, CompressionConfig, ConsumerConfig, DistributedLoadConfig,
    EventsConfig, L1Config, PerformanceConfig, PriorityMode, PriorityWeights, PublishingConfig,
    QueuesConfig, RouteRule, SinksConfig, TtlConfig, WebhookConfig, ZitadelConfig,
};
pub use env::ENV_PREFIX;
pub use limits::{
    Algorithm, ApiLimitConfig, Descriptor, FailureMode, LocksConfig, RateLimitConfig, RuleConfig,
};
pub use load::ConfigError;
pub(crate) use load::parse_host_port;
pub use redis::{RedisConfig, RedisMode, RedisOverrides, SentinelConfig, TlsConfig};
pub use secret::{Secret, SecretError, SecretSource, WatchedSecret};
pub use server::{AuthConfig, ServerConfig};
pub use sessions::{CookieConfig, SameSite, SessionTimeouts, SessionsConfig};
pub use tokens::{IntrospectionConfig, JWT_ALGORITHMS, JwtConfig, TokensConfig};
pub use types::DbIndex;

/// Which store backs every capability.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// In-process maps: single node, lost on restart. The default, so `serve` runs anywhere.
    #[default]
    Memory,
    /// Redis standalone or behind Sentinel.
    Redis,
}

/// The `memory` block: limits of the embedded memory backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Most bytes the memory backend's sessions, locks, rate-limit keys and event queues
    /// may hold together (estimated: their bytes plus bookkeeping); new state past it is
    /// refused, nothing stored is dropped. The cache's L1 has its own `cache.l1.maxBytes`.
    pub max_bytes: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            max_bytes: 256 << 20,
        }
    }
}

/// The whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// HTTP listeners and auth.
    pub server: ServerConfig,
    /// `memory` or `redis`.
    pub backend: BackendKind,
    /// The memory backend's size budget.
    pub memory: MemoryConfig,
    /// Redis defaults shared by every capability.
    pub redis: RedisConfig,
    /// Two-level cache.
    pub cache: CacheConfig,
    /// Event streaming.
    pub events: EventsConfig,
    /// Rate-limit rules.
    pub rate_limit: RateLimitConfig,
    /// Distributed locks.
    pub locks: LocksConfig,
    /// Sessions.
    pub sessions: SessionsConfig,
    /// Token introspection and JWT verification.
    pub tokens: TokensConfig,
}

impl Config {
    /// Effective Redis settings of the cache (top-level `redis` with `cache.redis` applied).
    pub fn cache_redis(&self) -> RedisConfig {
        self.redis.merged(&self.cache.redis)
    }

    /// Effective Redis settings of the event queues.
    pub fn events_redis(&self) -> RedisConfig {
        self.redis.merged(&self.events.redis)
    }

    /// Every Redis block with its key path, after per-capability overrides.
    pub fn redis_blocks(&self) -> Vec<(&'static str, RedisConfig)> {
        vec![
            ("redis", self.redis.clone()),
            ("cache.redis", self.cache_redis()),
            ("events.redis", self.events_redis()),
        ]
    }

    /// A copy with every inline secret value replaced, for `config print`.
    pub fn redacted(&self) -> Self {
        let mut copy = self.clone();
        for (_, secret) in copy.secrets_mut() {
            *secret = secret.redacted();
        }
        copy
    }

    /// Every secret source in the file with its full key path.
    pub(crate) fn secrets_mut(&mut self) -> Vec<(String, &mut SecretSource)> {
        let mut out: Vec<(String, &mut SecretSource)> = Vec::new();
        if let Some(t) = self.server.auth.tokens.as_mut() {
            out.push(("server.auth.tokens".into(), t));
        }
        if let Some(k) = self.events.zitadel.signing_key.as_mut() {
            out.push(("events.zitadel.signingKey".into(), k));
        }
        for (i, hook) in self.events.sinks.webhooks.iter_mut().enumerate() {
            if let Some(k) = hook.signing_key.as_mut() {
                out.push((format!("events.sinks.webhooks[{i}].signingKey"), k));
            }
        }
        if let Some(s) = self.tokens.introspection.client_secret.as_mut() {
            out.push(("tokens.introspection.clientSecret".into(), s));
        }
        let blocks = [
            ("redis", self.redis.secrets_mut()),
            ("cache.redis", self.cache.redis.secrets_mut()),
            ("events.redis", self.events.redis.secrets_mut()),
        ];
        for (prefix, secrets) in blocks {
            for (key, s) in secrets {
                out.push((format!("{prefix}.{key}"), s));
            }
        }
        out
    }
}
