//! Rate-limit rows: a check through the whole limiter against a raw `EVALSHA`, and a check
//! of a key already over its limit (answered by the local shed) against a raw `GET`.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Raw, RawBaselines, Row};
use crate::backend::RedisBackend;
use crate::config::{Algorithm, Descriptor, FailureMode, RateLimitConfig, RuleConfig};
use crate::ratelimit::RateLimiter;

/// Distinct keys of the "10k keys" row.
const KEYS: u64 = 10_000;

/// Runs the rate-limit scenarios; keys live under `{prefix}rl:<run>:` and expire by
/// themselves (the shed row's one key is deleted at the end).
pub async fn ratelimit_rows(
    backend: RedisBackend,
    raw: &Raw,
    concurrency: usize,
    duration: Duration,
    prefix: &str,
) -> Vec<Row> {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let rule = |name: &str, limit: u64, period: Duration| RuleConfig {
        name: name.into(),
        descriptor: vec![Descriptor::User],
        algorithm: Algorithm::Gcra,
        limit: NonZeroU64::new(limit).unwrap_or(NonZeroU64::MIN),
        period,
        burst: None,
        failure_mode: FailureMode::Open,
    };
    let cfg = RateLimitConfig {
        key_prefix: format!("{prefix}rl:{run}:"),
        rules: vec![
            // Far above what one key sees in a run: nearly every check is admitted, and
            // every one still runs the whole script.
            rule("bench", 1_000_000, Duration::from_secs(1)),
            rule("bench-shed", 1, Duration::from_secs(60)),
        ],
        ..RateLimitConfig::default()
    };
    let limiter = RateLimiter::redis(&cfg, backend.clone());

    let mut rows = Vec::new();
    {
        let limiter = limiter.clone();
        rows.extend(
            raw.against(
                RawBaselines::EVALSHA,
                "rate-limit check, 10k keys",
                concurrency,
                duration,
                move |task, seq| {
                    let limiter = limiter.clone();
                    let key = ((task as u64 * 1_000_003 + seq) % KEYS).to_string();
                    async move {
                        let _ = limiter.check("bench", &key, 1).await;
                    }
                },
            )
            .await,
        );
    }
    {
        // One admitted check, one limited: from then on the shed answers.
        let _ = limiter.check("bench-shed", "hot", 1).await;
        let _ = limiter.check("bench-shed", "hot", 1).await;
        let limiter = limiter.clone();
        rows.extend(
            raw.against(
                RawBaselines::GET,
                "rate-limit over limit, shed locally",
                concurrency,
                duration,
                move |_, _| {
                    let limiter = limiter.clone();
                    async move {
                        let _ = limiter.check("bench-shed", "hot", 1).await;
                    }
                },
            )
            .await,
        );
    }
    let _: Result<i64, _> = backend
        .query(redis::cmd("DEL").arg(format!("{}bench-shed:hot", cfg.key_prefix)))
        .await;
    rows
}
