//! The `rateLimit` block: the rules, and the limits on BlinkChamber's own API.
//!
//! Rate limits use the top-level `redis` block; their keys carry their own prefix.

use std::collections::HashSet;
use std::num::NonZeroU64;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::load::{ConfigError, invalid};
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

impl RateLimitConfig {
    /// Checks of the `rateLimit` block: the Redis timeout, each rule, and the rules named
    /// by `rateLimit.api`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for the first problem found.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.redis_timeout < Duration::from_millis(1) {
            return Err(invalid("rateLimit.redisTimeout", "expected at least 1ms"));
        }
        let mut seen = HashSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let key = |k: &str| format!("rateLimit.rules[{i}].{k}");
            if rule.name.is_empty() {
                return Err(invalid(&key("name"), "must not be empty"));
            }
            if rule.name.contains(':') {
                return Err(invalid(
                    &key("name"),
                    format!(
                        "`{}` contains `:`, which separates rule and key in Redis",
                        rule.name
                    ),
                ));
            }
            if rule.limit.get() > 1 << 53 {
                return Err(invalid(&key("limit"), "expected at most 2^53"));
            }
            if !seen.insert(rule.name.as_str()) {
                return Err(invalid(
                    &key("name"),
                    format!(
                        "`{}` is defined twice; rule names must be unique",
                        rule.name
                    ),
                ));
            }
            if rule.descriptor.is_empty() {
                return Err(invalid(
                    &key("descriptor"),
                    "expected at least one of user, org, apiKey, ip, route",
                ));
            }
            let distinct: HashSet<_> = rule.descriptor.iter().collect();
            if distinct.len() != rule.descriptor.len() {
                return Err(invalid(&key("descriptor"), "lists a part twice"));
            }
            if rule.period < Duration::from_millis(1) {
                return Err(invalid(&key("period"), "expected at least 1ms"));
            }
            if rule.burst.is_some() && rule.algorithm != Algorithm::Gcra {
                return Err(invalid(
                    &key("burst"),
                    "only the gcra algorithm has a burst",
                ));
            }
        }
        for (k, name) in [
            ("perToken", &self.api.per_token),
            ("perIp", &self.api.per_ip),
        ] {
            if let Some(name) = name
                && !seen.contains(name.as_str())
            {
                return Err(invalid(
                    &format!("rateLimit.api.{k}"),
                    format!("no rule named `{name}` in rateLimit.rules"),
                ));
            }
        }
        Ok(())
    }
}
