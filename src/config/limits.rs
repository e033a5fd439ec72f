//! The `rateLimit` and `locks` blocks.
//!
//! Both use the top-level `redis` block; their keys carry their own prefixes.

use std::num::NonZeroU64;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::types::duration;

/// The `rateLimit` block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Prefix of every rate-limit key in Redis.
    pub key_prefix: String,
    /// Answer checks of keys already over their limit from this instance's memory until
    /// their reset, without a Redis round trip.
    pub local_shed: bool,
    /// Most keys remembered by the local shed cache.
    pub local_shed_capacity: u64,
    /// How long a check waits for Redis before the rule's failure mode answers (a Redis
    /// that stops answering must not stall every request for the full read timeout).
    #[serde(with = "duration")]
    pub redis_timeout: Duration,
    /// The rules, by name.
    pub rules: Vec<RuleConfig>,
    /// Limits on BlinkChamber's own `/v1` API.
    pub api: ApiLimitConfig,
    /// How many instances share the limits. While Redis cannot be reached, each
    /// instance's insurance limiter admits at most `limit / instances` (at least 1) per
    /// rule and key, so together they stay within the limit.
    pub instances: std::num::NonZeroU32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            key_prefix: "blinkchamber:rl:".into(),
            local_shed: true,
            local_shed_capacity: 100_000,
            redis_timeout: Duration::from_millis(250),
            rules: Vec::new(),
            api: ApiLimitConfig::default(),
            instances: std::num::NonZeroU32::MIN,
        }
    }
}

/// One rate-limit rule (`rateLimit.rules[]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleConfig {
    /// Name clients use (`rule` in a check) and the `rule` label of metrics; no `:`, which
    /// separates the rule from the key in Redis.
    pub name: String,
    /// What the key is made of, in order: `user`, `org`, `apiKey`, `ip`, `route`
    /// (one or several). Checks give a value for each.
    pub descriptor: Vec<Descriptor>,
    /// `gcra` (default), `fixedWindow` or `slidingWindow`.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Requests (cost units) admitted per `period`, at most 2^53 (exact in the script's
    /// double arithmetic).
    pub limit: NonZeroU64,
    /// The period, from `1s` to days (quotas).
    #[serde(with = "duration")]
    pub period: Duration,
    /// GCRA only: requests that may arrive at the same instant on an idle key. Defaults to
    /// `limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<NonZeroU64>,
    /// What a check answers when Redis cannot be reached.
    #[serde(default)]
    pub failure_mode: FailureMode,
}

/// A part of a rate-limit key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Descriptor {
    /// The end user (ZITADEL subject).
    User,
    /// The organisation.
    Org,
    /// An API key or service account.
    ApiKey,
    /// The client IP address.
    Ip,
    /// The route or operation.
    Route,
}

impl Descriptor {
    /// The name as written in config and in check requests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Org => "org",
            Self::ApiKey => "apiKey",
            Self::Ip => "ip",
            Self::Route => "route",
        }
    }
}

/// Rate-limit algorithm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Algorithm {
    /// Generic cell rate algorithm: smooth spacing of `period / limit` with a burst.
    #[default]
    Gcra,
    /// At most `limit` per calendar-aligned window of `period`.
    #[serde(alias = "fixed_window")]
    FixedWindow,
    /// At most `limit` in any `period`, the previous window weighted by its overlap.
    #[serde(alias = "sliding_window")]
    SlidingWindow,
}

/// What a check answers when Redis cannot be reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FailureMode {
    /// Keep limiting with the in-memory insurance limiter of this instance.
    #[default]
    Open,
    /// Refuse every check until Redis answers again.
    Closed,
}

/// The `rateLimit.api` block: limits on BlinkChamber's own `/v1` API.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ApiLimitConfig {
    /// Rule applied per bearer token (keyed by a digest of the token), by rule name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_token: Option<String>,
    /// Rule applied per client IP, by rule name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_ip: Option<String>,
    /// Header holding the client IP when behind a proxy (e.g. `X-Real-IP`); without it
    /// the peer address is used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip_header: Option<String>,
}

/// The `locks` block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LocksConfig {
    /// Prefix of every lock key in Redis.
    pub key_prefix: String,
    /// Lease length when a request does not give one.
    #[serde(with = "duration")]
    pub default_ttl: Duration,
    /// Longest lease a request may ask for.
    #[serde(with = "duration")]
    pub max_ttl: Duration,
    /// Longest an HTTP request may wait for a held lock.
    #[serde(with = "duration")]
    pub max_wait: Duration,
    /// Longest `with_lock` keeps renewing a lease for its work; then renewal stops, the
    /// work is told through its lost-lease signal, and the lease runs out one TTL later.
    #[serde(with = "duration")]
    pub max_hold: Duration,
}

impl Default for LocksConfig {
    fn default() -> Self {
        Self {
            key_prefix: "blinkchamber:lock:".into(),
            default_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(600),
            max_wait: Duration::from_secs(30),
            max_hold: Duration::from_secs(3600),
        }
    }
}
