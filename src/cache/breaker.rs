//! Redis calls of the cache under a deadline and a circuit breaker: after
//! `failureThreshold` failures in a row, Redis is not asked for `openFor`, so a slow or dead
//! Redis costs a request nothing instead of its timeout.

use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::CacheError;
use crate::backend::BackendError;
use crate::config::CacheConfig;
use crate::config::types::duration;

pub(super) struct Breaker {
    timeout: Duration,
    threshold: u32,
    open_for: Duration,
    failures: AtomicU32,
    /// Microseconds after `since` until which the circuit is open (0: closed); an atomic so
    /// that every read does not take a lock.
    open_until: AtomicU64,
    since: Instant,
}

impl Breaker {
    pub(super) fn new(cfg: &CacheConfig) -> Self {
        Self {
            timeout: cfg.l2_timeout,
            threshold: cfg.circuit_breaker.failure_threshold.max(1),
            open_for: cfg.circuit_breaker.open_for,
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            since: Instant::now(),
        }
    }

    /// Whether Redis is being skipped now.
    pub(super) fn is_open(&self) -> bool {
        let until = self.open_until.load(Ordering::Relaxed);
        until != 0 && self.micros_since(Instant::now()) < until
    }

    /// Runs `call` unless the circuit is open, within the deadline.
    pub(super) async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, CacheError>>,
    ) -> Result<T, CacheError> {
        if self.is_open() {
            return Err(BackendError::Unavailable(
                "cache: Redis skipped while the circuit breaker is open".into(),
            )
            .into());
        }
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => {
                self.failures.store(0, Ordering::Relaxed);
                Ok(value)
            }
            Ok(Err(e)) => {
                // Only an unreachable Redis counts; an error reply (a bad argument, a key of
                // another type) says Redis is fine, and must not let a client open the circuit.
                if matches!(&e, CacheError::Backend(b) if b.is_unreachable()) {
                    self.failed();
                }
                Err(e)
            }
            Err(_) => {
                self.failed();
                Err(BackendError::Unavailable(format!(
                    "cache: no answer from Redis within cache.l2Timeout ({})",
                    duration::format(&self.timeout)
                ))
                .into())
            }
        }
    }

    fn micros_since(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.since).as_micros()).unwrap_or(u64::MAX)
    }

    fn failed(&self) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= self.threshold {
            self.failures.store(0, Ordering::Relaxed);
            let until = self.micros_since(Instant::now() + self.open_for);
            self.open_until.store(until.max(1), Ordering::Relaxed);
            metrics::counter!("blinkchamber_cache_circuit_opened_total").increment(1);
            tracing::warn!(
                failures,
                open_for = %duration::format(&self.open_for),
                "cache: Redis keeps failing; skipping it for a while"
            );
        }
    }
}
