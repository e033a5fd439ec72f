//! Configuration: one YAML file, every key overridable by `BLINKCHAMBER_…` variables.
//!
//! Key names follow the seeds' Helm values so a platform team can paste them. The file is
//! parsed straight into typed structs so that an unknown key, a wrong type or an
//! impossible value is reported with its file line; environment overrides are layered on
//! top (see `Config::with_env_overrides`). Each top-level key has its own module holding
//! its structs and its checks; [`Config::validate`] runs them in turn, then the checks
//! that span several blocks.

mod backend;
mod cache;
mod doctor;
mod env;
mod events;
pub mod events_bounds;
mod key_spaces;
mod load;
mod locate;
mod locks;
mod rate_limit;
mod redis;
pub mod secret;
mod server;
mod sessions;
mod tokens;
pub mod types;

pub use backend::{BackendKind, MemoryConfig};
pub use cache::{
    CacheConfig, CircuitBreakerConfig, CompressionConfig, DistributedLoadConfig, L1Config,
    TtlConfig,
};
pub use doctor::DoctorConfig;
pub use env::ENV_PREFIX;
pub use events::{
    ConsumerConfig, EventsConfig, PerformanceConfig, PriorityMode, PriorityWeights,
    PublishingConfig, QueuesConfig, RouteRule, SinksConfig, WebhookConfig, ZitadelConfig,
};
pub use load::ConfigError;
use load::invalid;
pub use locks::LocksConfig;
pub use rate_limit::{
    Algorithm, ApiLimitConfig, Descriptor, FailureMode, RateLimitConfig, RuleConfig,
};
pub(crate) use redis::parse_host_port;
pub use redis::{RedisConfig, RedisMode, RedisOverrides, SentinelConfig, TlsConfig};
pub use secret::{Secret, SecretError, SecretSource, WatchedSecret};
pub use server::{AuthConfig, ServerConfig};
pub use sessions::{CookieConfig, SameSite, SessionTimeouts, SessionsConfig};
pub use tokens::{IntrospectionConfig, JWT_ALGORITHMS, JwtConfig, TokensConfig};
pub use types::DbIndex;

use serde::{Deserialize, Serialize};

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
    /// Thresholds of `blinkchamber doctor`.
    pub doctor: DoctorConfig,
    /// Token introspection and JWT verification.
    pub tokens: TokensConfig,
}

impl Config {
    /// Runs every block's checks, in the order of the blocks below, then the checks that
    /// span several blocks (key spaces, and with the Redis backend each effective Redis
    /// block). Some checks read files (token and secret files, TLS files).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for the first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.memory.validate()?;
        self.cache.validate()?;
        self.rate_limit.validate()?;
        self.locks.validate()?;
        self.events.validate()?;
        self.sessions.validate()?;
        self.tokens.validate()?;
        self.doctor.validate()?;
        key_spaces::check(self).map_err(|(key, message)| invalid(&key, message))?;
        if self.backend == BackendKind::Redis {
            for (key, redis) in self.redis_blocks() {
                redis.validate(key)?;
            }
        }
        Ok(())
    }

    /// Every key name in the schema, normalised → spelled as in the file.
    fn key_names(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

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
