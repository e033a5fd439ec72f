//! Rate limits: GCRA, fixed window and sliding window, on memory or Redis.
//!
//! A [`RateLimiter`] holds the rules of the `rateLimit` block and answers
//! [`RateLimiter::check`] (one rule, one key, a cost) and [`RateLimiter::check_many`]
//! (several at once, as Envoy's `ShouldRateLimit`). The algorithms are pure functions in
//! [`algorithm`]; the Redis store runs the same arithmetic in one Lua script on Redis's
//! clock, so every instance sharing a Redis shares each key's limit exactly.
//!
//! With Redis, two things sit in front of and behind the round trip:
//!
//! - the *local shed* ([`RateLimitConfig::local_shed`]): keys Redis just said are over
//!   their limit are answered "limited" locally until their `retry_after`, which only ever
//!   denies what Redis would deny;
//! - the *failure mode* of each rule: when Redis certainly cannot be reached (connection
//!   refused, no master, no connection to be had, after the backend's own retries),
//!   `open` answers from an in-memory insurance limiter of this instance applying the same
//!   rule at this instance's share of the limit (`limit / rateLimit.instances`), `closed`
//!   denies. After such a failure, Redis is tried again [`REDIS_RETRY_AFTER`] later;
//!   checks in between go straight to the failure mode.
//! - a *slow* Redis (no answer within `redisTimeout`, or a connection lost after the
//!   check was sent) is not an unreachable one: the script may have run, or may still
//!   run, and other instances keep counting in Redis, so the check is denied (`Retry-After`
//!   1 s) whatever the failure mode. A stall can make a check fail; it never admits past
//!   the limit.

pub mod algorithm;
mod memory;
mod redis;
mod shed;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use self::algorithm::{Limits, Outcome};
use self::memory::{Check, MemoryStore};
use self::redis::{RedisStore, ScriptCheck};
use self::shed::Shed;
use crate::backend::{Backend, RedisBackend};
use crate::config::{Descriptor, FailureMode, RateLimitConfig, RuleConfig};

/// How long checks skip Redis after it failed, before the next check tries it again.
pub const REDIS_RETRY_AFTER: Duration = Duration::from_millis(500);

/// Longest key a check may give, in bytes; keys are stored in Redis and in memory.
pub const MAX_KEY_LEN: usize = 512;

/// `retry_after` of a check denied because Redis is down and the rule fails closed.
pub const FAIL_CLOSED_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a check could not be answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RateLimitError {
    /// No rule with this name in `rateLimit.rules`.
    #[error("no rate-limit rule named `{0}`")]
    UnknownRule(String),
    /// A check must cost at least 1.
    #[error("cost must be at least 1")]
    ZeroCost,
    /// The key is longer than [`MAX_KEY_LEN`] bytes.
    #[error(
        "key for rule `{rule}` is {len} bytes; at most {} are accepted",
        MAX_KEY_LEN
    )]
    KeyTooLong {
        /// The rule.
        rule: String,
        /// The key's length in bytes.
        len: usize,
    },
    /// The cost is larger than the rule could ever admit at once (its burst for GCRA, its
    /// limit for windows), so the check could never pass.
    #[error(
        "cost {cost} can never pass rule `{rule}`: it admits at most {max} at once \
         (its {what})"
    )]
    CostAboveBurst {
        /// The rule.
        rule: String,
        /// The cost asked for.
        cost: u64,
        /// The largest cost the rule admits.
        max: u64,
        /// `burst` or `limit`.
        what: &'static str,
    },
    /// The memory backend has no room for new state (`memory.maxBytes`).
    #[error(transparent)]
    StoreFull(#[from] crate::backend::Full),
}

/// Who answered a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecisionSource {
    /// Redis (the shared limit).
    Redis,
    /// The memory backend.
    Memory,
    /// The local shed: the key was already over its limit, no round trip.
    LocalShed,
    /// Redis was unreachable and the rule fails open: this instance's insurance limiter.
    Insurance,
    /// Redis was unreachable and the rule fails closed: denied.
    FailClosed,
}

impl DecisionSource {
    /// `redis`, `memory`, `localShed`, `insurance` or `failClosed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Memory => "memory",
            Self::LocalShed => "localShed",
            Self::Insurance => "insurance",
            Self::FailClosed => "failClosed",
        }
    }
}

/// The answer to one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the cost was admitted (and consumed).
    pub allowed: bool,
    /// The rule's `limit` (units per period).
    pub limit: u64,
    /// Units a check made right now could still be admitted for (0 when not known, e.g.
    /// answered by the local shed or failing closed).
    pub remaining: u64,
    /// When limited: how long until the same cost can be admitted, without other traffic.
    /// Zero when allowed.
    pub retry_after: Duration,
    /// How long until the key is back to its idle state without further traffic.
    pub reset_after: Duration,
    /// Who answered.
    pub source: DecisionSource,
}

impl Decision {
    /// Denied without an answer from Redis: `retryAfter` [`FAIL_CLOSED_RETRY_AFTER`].
    fn fail_closed(limit: u64) -> Self {
        Self {
            allowed: false,
            limit,
            remaining: 0,
            retry_after: FAIL_CLOSED_RETRY_AFTER,
            reset_after: FAIL_CLOSED_RETRY_AFTER,
            source: DecisionSource::FailClosed,
        }
    }

    fn from_outcome(o: Outcome, limit: u64, source: DecisionSource) -> Self {
        Self {
            allowed: o.allowed,
            limit,
            remaining: o.remaining,
            retry_after: Duration::from_micros(o.retry_after_us),
            reset_after: Duration::from_micros(o.reset_after_us),
            source,
        }
    }
}

/// Index of the most restrictive of `decisions`: among limited ones the longest
/// `retry_after`, else the fewest `remaining` (then the longest `reset_after`).
pub fn most_restrictive(decisions: &[Decision]) -> Option<usize> {
    decisions
        .iter()
        .enumerate()
        .max_by(|(_, a), (_, b)| {
            (!a.allowed)
                .cmp(&!b.allowed)
                .then(a.retry_after.cmp(&b.retry_after))
                .then(b.remaining.cmp(&a.remaining))
                .then(a.reset_after.cmp(&b.reset_after))
                // Ties go to the first.
                .then(std::cmp::Ordering::Greater)
        })
        .map(|(i, _)| i)
}

/// Builds a key from descriptor values in the rule's descriptor order:
/// `user=u1|route=%2Fx`… with `%`, `|` and `=` in values percent-encoded, so distinct
/// values never compose to the same key.
///
/// # Errors
/// The first descriptor of the rule `value` has no value for.
pub fn compose_key<'a>(
    rule: &RuleConfig,
    mut value: impl FnMut(Descriptor) -> Option<&'a str>,
) -> Result<String, Descriptor> {
    let mut key = String::new();
    for (i, d) in rule.descriptor.iter().enumerate() {
        let v = value(*d).ok_or(*d)?;
        if i > 0 {
            key.push('|');
        }
        key.push_str(d.as_str());
        key.push('=');
        for c in v.chars() {
            match c {
                '%' => key.push_str("%25"),
                '|' => key.push_str("%7C"),
                '=' => key.push_str("%3D"),
                c => key.push(c),
            }
        }
    }
    Ok(key)
}

/// Counters of one rule (label `rule`, the configured name only).
struct RuleMetrics {
    allowed: metrics::Counter,
    limited: metrics::Counter,
    near_limit: metrics::Counter,
    shed: metrics::Counter,
    insurance: metrics::Counter,
    fail_closed: metrics::Counter,
    redis_errors: metrics::Counter,
}

impl RuleMetrics {
    fn new(rule: &str) -> Self {
        let name = rule.to_owned();
        let result = |r: &'static str| {
            metrics::counter!("blinkchamber_ratelimit_checks_total",
                "rule" => name.clone(), "result" => r)
        };
        Self {
            allowed: result("allowed"),
            limited: result("limited"),
            near_limit: metrics::counter!("blinkchamber_ratelimit_near_limit_total",
                "rule" => name.clone()),
            shed: metrics::counter!("blinkchamber_ratelimit_shed_total", "rule" => name.clone()),
            insurance: metrics::counter!("blinkchamber_ratelimit_insurance_total",
                "rule" => name.clone()),
            fail_closed: metrics::counter!("blinkchamber_ratelimit_fail_closed_total",
                "rule" => name.clone()),
            redis_errors: metrics::counter!("blinkchamber_ratelimit_redis_errors_total",
                "rule" => name),
        }
    }

    fn record(&self, d: &Decision) {
        if d.allowed {
            self.allowed.increment(1);
            // Near the limit: less than 20 % left.
            if d.remaining.saturating_mul(5) < d.limit {
                self.near_limit.increment(1);
            }
        } else {
            self.limited.increment(1);
        }
        match d.source {
            DecisionSource::LocalShed => self.shed.increment(1),
            DecisionSource::Insurance => self.insurance.increment(1),
            DecisionSource::FailClosed => self.fail_closed.increment(1),
            DecisionSource::Redis | DecisionSource::Memory => {}
        }
    }
}

struct Rule {
    index: usize,
    limits: Limits,
    /// `limits` at a cost of 1 (nearly every check) as `check.lua` takes them.
    script_spec: Arc<[u8]>,
    /// This instance's share of `limits`, for the insurance limiter.
    insurance_limits: Limits,
    failure_mode: FailureMode,
    metrics: RuleMetrics,
}

enum Store {
    Memory(MemoryStore),
    Redis {
        redis: RedisStore,
        shed: Option<Shed>,
        insurance: MemoryStore,
        /// Nanoseconds after `clock_start` before which Redis is not tried (0: try it).
        skip_until: AtomicU64,
        clock_start: Instant,
    },
}

struct Inner {
    cfg: RateLimitConfig,
    rules: HashMap<String, Rule>,
    store: Store,
}

/// The rate limiter of one process; cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

/// One resolved check.
struct Resolved<'a> {
    rule: &'a Rule,
    key: String,
    cost: u64,
}

impl RateLimiter {
    /// The limiter for the configured backend: Redis checks go to the default `redis`
    /// block (`Backend::Redis(..).default`).
    ///
    /// # Errors
    /// [`RateLimitError::UnknownRule`] when `rateLimit.api` names a rule that does not
    /// exist.
    pub fn from_config(cfg: &RateLimitConfig, backend: &Backend) -> Result<Self, RateLimitError> {
        for name in [&cfg.api.per_token, &cfg.api.per_ip].into_iter().flatten() {
            if !cfg.rules.iter().any(|r| &r.name == name) {
                return Err(RateLimitError::UnknownRule(name.clone()));
            }
        }
        Ok(match backend {
            Backend::Memory(budget) => Self::memory_in(cfg, budget.clone()),
            Backend::Redis(r) => Self::redis(cfg, r.default.clone()),
        })
    }

    /// A limiter keeping its state in this process (single node).
    pub fn memory(cfg: &RateLimitConfig) -> Self {
        Self::memory_in(cfg, crate::backend::MemoryBudget::default())
    }

    /// A limiter keeping its state in this process, counted against `budget` (shared with
    /// the other stores of the memory backend).
    pub fn memory_in(cfg: &RateLimitConfig, budget: crate::backend::MemoryBudget) -> Self {
        Self::build(cfg, Store::Memory(MemoryStore::new(budget)))
    }

    /// A limiter keeping its state in Redis, with the local shed when
    /// `cfg.local_shed` is set and an insurance limiter for rules that fail open.
    pub fn redis(cfg: &RateLimitConfig, redis: RedisBackend) -> Self {
        let shed = cfg.local_shed.then(|| Shed::new(cfg.local_shed_capacity));
        Self::build(
            cfg,
            Store::Redis {
                redis: RedisStore::new(redis),
                shed,
                insurance: MemoryStore::new(crate::backend::MemoryBudget::unlimited()),
                skip_until: AtomicU64::new(0),
                clock_start: Instant::now(),
            },
        )
    }

    fn build(cfg: &RateLimitConfig, store: Store) -> Self {
        let mut rules = HashMap::new();
        for (index, r) in cfg.rules.iter().enumerate() {
            let limit = r.limit.get();
            let period_us = u64::try_from(r.period.as_micros())
                .unwrap_or(u64::MAX)
                .max(1000);
            let limits = Limits {
                algorithm: r.algorithm,
                limit,
                period_us,
                burst: r.burst.map_or(limit, |b| b.get()),
            };
            let share = |n: u64| (n / u64::from(cfg.instances.get())).max(1);
            let insurance_limits = Limits {
                limit: share(limits.limit),
                burst: share(limits.burst),
                ..limits
            };
            // The first rule of a name wins (config validation rejects duplicates).
            rules.entry(r.name.clone()).or_insert_with(|| Rule {
                index,
                limits,
                script_spec: limits.script_spec(1).into(),
                insurance_limits,
                failure_mode: r.failure_mode,
                metrics: RuleMetrics::new(&r.name),
            });
        }
        Self {
            inner: Arc::new(Inner {
                cfg: cfg.clone(),
                rules,
                store,
            }),
        }
    }

    /// The `rateLimit` block this limiter was built from.
    pub fn config(&self) -> &RateLimitConfig {
        &self.inner.cfg
    }

    /// The rule named `name`.
    pub fn rule(&self, name: &str) -> Option<&RuleConfig> {
        let rule = self.inner.rules.get(name)?;
        self.inner.cfg.rules.get(rule.index)
    }

    /// Checks `cost` units against rule `rule` for `key`; consumes them when allowed.
    ///
    /// # Errors
    /// An unknown rule, a cost of 0, or a cost the rule could never admit. Redis failures
    /// are not errors: the rule's failure mode answers.
    pub async fn check(
        &self,
        rule: &str,
        key: &str,
        cost: u64,
    ) -> Result<Decision, RateLimitError> {
        let mut decisions = self.check_many(&[(rule, key, cost)]).await?;
        Ok(decisions.pop().unwrap_or(Decision {
            allowed: false,
            limit: 0,
            remaining: 0,
            retry_after: Duration::ZERO,
            reset_after: Duration::ZERO,
            source: DecisionSource::FailClosed,
        }))
    }

    /// Checks several `(rule, key, cost)` descriptors at once, one decision each, in order;
    /// the request is limited if any decision is.
    ///
    /// As in Envoy's rate-limit service, every descriptor is checked on its own and every
    /// descriptor that passes is counted, even when another one is limited: the descriptors
    /// are independent limits, and counting all of them keeps each one exact under
    /// concurrency (no check-then-undo window). A limited descriptor consumes nothing.
    /// With Redis, all descriptors go in one round trip and are decided at one instant of
    /// Redis's clock.
    ///
    /// # Errors
    /// As [`RateLimiter::check`]; nothing is consumed when any descriptor is invalid.
    pub async fn check_many(
        &self,
        checks: &[(&str, &str, u64)],
    ) -> Result<Vec<Decision>, RateLimitError> {
        let resolved = self.resolve(checks)?;
        let decisions = match &self.inner.store {
            Store::Memory(store) => {
                let outcomes = store.check_many(&as_checks(resolved.iter()))?;
                resolved
                    .iter()
                    .zip(outcomes)
                    .map(|(r, o)| {
                        Decision::from_outcome(o, r.rule.limits.limit, DecisionSource::Memory)
                    })
                    .collect()
            }
            Store::Redis { .. } => self.check_redis(&resolved).await,
        };
        for (r, d) in resolved.iter().zip(&decisions) {
            r.rule.metrics.record(d);
        }
        Ok(decisions)
    }

    fn resolve<'a>(
        &'a self,
        checks: &[(&str, &str, u64)],
    ) -> Result<Vec<Resolved<'a>>, RateLimitError> {
        let prefix = &self.inner.cfg.key_prefix;
        checks
            .iter()
            .map(|&(name, key, cost)| {
                let rule = self
                    .inner
                    .rules
                    .get(name)
                    .ok_or_else(|| RateLimitError::UnknownRule(name.to_owned()))?;
                if cost == 0 {
                    return Err(RateLimitError::ZeroCost);
                }
                let max = rule.limits.max_cost();
                if cost > max {
                    return Err(RateLimitError::CostAboveBurst {
                        rule: name.to_owned(),
                        cost,
                        max,
                        what: match rule.limits.algorithm {
                            crate::config::Algorithm::Gcra => "burst",
                            _ => "limit",
                        },
                    });
                }
                if key.len() > MAX_KEY_LEN {
                    return Err(RateLimitError::KeyTooLong {
                        rule: name.to_owned(),
                        len: key.len(),
                    });
                }
                let mut full = String::with_capacity(prefix.len() + name.len() + key.len() + 1);
                full.push_str(prefix);
                full.push_str(name);
                full.push(':');
                full.push_str(key);
                Ok(Resolved {
                    rule,
                    key: full,
                    cost,
                })
            })
            .collect()
    }

    async fn check_redis(&self, resolved: &[Resolved<'_>]) -> Vec<Decision> {
        let Store::Redis {
            redis,
            shed,
            insurance,
            skip_until,
            clock_start,
        } = &self.inner.store
        else {
            unreachable!("check_redis on the memory store");
        };
        let now = Instant::now();
        let mut decisions: Vec<Option<Decision>> = vec![None; resolved.len()];
        let mut pending = Vec::with_capacity(resolved.len());
        for (i, r) in resolved.iter().enumerate() {
            let blocked = shed.as_ref().and_then(|s| s.blocked(&r.key, r.cost, now));
            match blocked {
                Some(b) => {
                    decisions[i] = Some(Decision {
                        allowed: false,
                        limit: r.rule.limits.limit,
                        remaining: 0,
                        retry_after: b.retry_after,
                        reset_after: b.reset_after,
                        source: DecisionSource::LocalShed,
                    });
                }
                None => pending.push(i),
            }
        }
        if pending.is_empty() {
            return decisions.into_iter().flatten().collect();
        }
        let elapsed = |at: Instant| at.duration_since(*clock_start).as_nanos() as u64;
        let skip = skip_until.load(Ordering::Relaxed);
        // After a failure, one check probes Redis when the pause is over; the others keep
        // using the failure mode meanwhile instead of all waiting on a dead Redis.
        let ask_redis = skip == 0
            || (elapsed(now) >= skip
                && skip_until
                    .compare_exchange(
                        skip,
                        elapsed(now + REDIS_RETRY_AFTER),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_ok());
        let answered = if !ask_redis {
            None
        } else {
            let checks: Vec<ScriptCheck<'_>> = pending
                .iter()
                .map(|&i| ScriptCheck {
                    key: &resolved[i].key,
                    spec: &resolved[i].rule.script_spec,
                    limits: &resolved[i].rule.limits,
                    cost: resolved[i].cost,
                })
                .collect();
            let timeout = self.inner.cfg.redis_timeout;
            let result = match tokio::time::timeout(timeout, redis.check_many(&checks)).await {
                Ok(result) => result,
                Err(_) => Err(crate::backend::BackendError::MaybeRan(format!(
                    "no answer within rateLimit.redisTimeout ({})",
                    crate::config::types::duration::format(&timeout)
                ))),
            };
            match result {
                Ok(outcomes) => {
                    skip_until.store(0, Ordering::Relaxed);
                    Some(Ok(outcomes))
                }
                Err(e) if !e.certainly_not_run() => {
                    // Slow, not gone: the script may have run (or still run) in Redis,
                    // where the other instances keep counting. Deny rather than admit
                    // from a limiter that knows nothing of that.
                    tracing::debug!(error = %e, "rate limits: no answer from Redis in time; denied");
                    for &i in &pending {
                        resolved[i].rule.metrics.redis_errors.increment(1);
                    }
                    Some(Err(()))
                }
                Err(e) => {
                    let until = elapsed(Instant::now() + REDIS_RETRY_AFTER);
                    let previous = skip_until.swap(until, Ordering::Relaxed);
                    if previous == 0 {
                        tracing::warn!(error = %e, master = %redis.backend().master().endpoint,
                            "rate limits: Redis unreachable; answering by each rule's failure mode");
                    }
                    for &i in &pending {
                        resolved[i].rule.metrics.redis_errors.increment(1);
                    }
                    None
                }
            }
        };
        match answered {
            Some(Err(())) => {
                for &i in &pending {
                    decisions[i] = Some(Decision::fail_closed(resolved[i].rule.limits.limit));
                }
            }
            Some(Ok(outcomes)) => {
                // `now` was taken before the call, so it is no later than Redis's TIME: the
                // shed stops denying no later than Redis would.
                for (&i, o) in pending.iter().zip(outcomes) {
                    let r = &resolved[i];
                    let d = Decision::from_outcome(o, r.rule.limits.limit, DecisionSource::Redis);
                    if !d.allowed
                        && let Some(shed) = shed
                    {
                        shed.limited(&r.key, r.cost, d.retry_after, d.reset_after, now);
                    }
                    decisions[i] = Some(d);
                }
            }
            None => {
                let open: Vec<usize> = pending
                    .iter()
                    .copied()
                    .filter(|&i| resolved[i].rule.failure_mode == FailureMode::Open)
                    .collect();
                let checks: Vec<Check<'_>> = open
                    .iter()
                    .map(|&i| {
                        let r = &resolved[i];
                        Check {
                            key: &r.key,
                            limits: &r.rule.insurance_limits,
                            cost: r.cost,
                        }
                    })
                    .collect();
                // Unlimited: the local fallback is bounded by its rules, not a budget.
                let outcomes = insurance.check_many(&checks).unwrap_or_default();
                for (&i, o) in open.iter().zip(outcomes) {
                    // The limit this instance enforces now: its share.
                    let limit = resolved[i].rule.insurance_limits.limit;
                    decisions[i] =
                        Some(Decision::from_outcome(o, limit, DecisionSource::Insurance));
                }
                for &i in &pending {
                    if decisions[i].is_none() {
                        decisions[i] = Some(Decision::fail_closed(resolved[i].rule.limits.limit));
                    }
                }
            }
        }
        decisions.into_iter().flatten().collect()
    }
}

fn as_checks<'a, 'b: 'a>(resolved: impl Iterator<Item = &'a Resolved<'b>>) -> Vec<Check<'a>> {
    resolved
        .map(|r| Check {
            key: &r.key,
            limits: &r.rule.limits,
            cost: r.cost,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;

    use super::*;
    use crate::config::Algorithm;

    fn rule(name: &str, algorithm: Algorithm, limit: u64, period: Duration) -> RuleConfig {
        RuleConfig {
            name: name.into(),
            descriptor: vec![Descriptor::User, Descriptor::Route],
            algorithm,
            limit: NonZeroU64::new(limit).unwrap(),
            period,
            burst: None,
            failure_mode: FailureMode::Open,
        }
    }

    fn config(rules: Vec<RuleConfig>) -> RateLimitConfig {
        RateLimitConfig {
            rules,
            ..RateLimitConfig::default()
        }
    }

    #[test]
    fn keys_compose_in_descriptor_order_and_escape_separators() {
        let r = rule("r", Algorithm::Gcra, 1, Duration::from_secs(1));
        let key = compose_key(&r, |d| match d {
            Descriptor::User => Some("a|route=b"),
            Descriptor::Route => Some("/x%"),
            _ => None,
        })
        .unwrap();
        assert_eq!(key, "user=a%7Croute%3Db|route=/x%25");
        assert_eq!(
            compose_key(&r, |d| (d == Descriptor::User).then_some("u")),
            Err(Descriptor::Route)
        );
    }

    #[test]
    fn the_most_restrictive_decision_is_the_longest_wait_then_the_least_left() {
        let d = |allowed, remaining, retry_ms| Decision {
            allowed,
            limit: 10,
            remaining,
            retry_after: Duration::from_millis(retry_ms),
            reset_after: Duration::ZERO,
            source: DecisionSource::Memory,
        };
        assert_eq!(most_restrictive(&[]), None);
        assert_eq!(
            most_restrictive(&[d(true, 5, 0), d(true, 2, 0), d(true, 2, 0)]),
            Some(1)
        );
        assert_eq!(
            most_restrictive(&[d(true, 0, 0), d(false, 0, 10), d(false, 0, 30)]),
            Some(2)
        );
    }

    #[tokio::test]
    async fn invalid_checks_are_errors_and_consume_nothing() {
        let limiter = RateLimiter::memory(&config(vec![rule(
            "r",
            Algorithm::FixedWindow,
            2,
            Duration::from_secs(3600),
        )]));
        assert!(matches!(
            limiter.check("nope", "k", 1).await,
            Err(RateLimitError::UnknownRule(n)) if n == "nope"
        ));
        assert!(matches!(
            limiter.check("r", "k", 0).await,
            Err(RateLimitError::ZeroCost)
        ));
        let err = limiter.check("r", "k", 3).await.unwrap_err();
        assert!(err.to_string().contains("`r`"), "{err}");
        assert!(
            limiter
                .check_many(&[("r", "k", 1), ("nope", "k", 1)])
                .await
                .is_err()
        );
        let d = limiter.check("r", "k", 2).await.unwrap();
        assert!(d.allowed, "the failed calls consumed nothing");
        assert_eq!(d.source, DecisionSource::Memory);
    }

    #[test]
    fn from_config_rejects_api_limits_naming_unknown_rules() {
        let mut cfg = config(vec![]);
        cfg.api.per_ip = Some("missing".into());
        assert!(matches!(
            RateLimiter::from_config(&cfg, &Backend::memory()),
            Err(RateLimitError::UnknownRule(n)) if n == "missing"
        ));
    }
}
