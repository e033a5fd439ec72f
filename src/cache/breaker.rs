//! Redis calls of the cache under a circuit breaker (their deadline, `l2Timeout`, is the
//! backend's, see `RedisBackend::bounded`): after
//! `failureThreshold` failures in a row, Redis is not asked for `openFor`, so a slow or dead
//! Redis costs a request nothing instead of its timeout. Then the circuit is half-open:
//! one call goes to Redis as a probe while the others are still skipped; its success
//! closes the circuit, its failure opens it for another `openFor`. So a Redis that is still
//! down costs one timeout per `openFor`, not one per call in flight.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::CacheError;
use crate::backend::BackendError;
use crate::config::CacheConfig;
use crate::config::types::duration;

pub(super) struct Breaker {
    /// `l2Timeout`, named in the error of a call that reached it.
    timeout: Duration,
    threshold: u32,
    open_for: Duration,
    failures: AtomicU32,
    /// Microseconds after `since` until which the circuit is open (0: closed); an atomic so
    /// that every read does not take a lock.
    open_until: AtomicU64,
    /// A half-open probe is in flight.
    probing: AtomicBool,
    since: Instant,
}

/// What the breaker lets a call do.
#[derive(PartialEq)]
enum Admission {
    /// Closed: go ahead.
    Go,
    /// Half-open, and this call is the probe.
    Probe,
    /// Open (or half-open with a probe in flight): skip Redis.
    Skip,
}

impl Breaker {
    pub(super) fn new(cfg: &CacheConfig) -> Self {
        Self {
            timeout: cfg.l2_timeout,
            threshold: cfg.circuit_breaker.failure_threshold.max(1),
            open_for: cfg.circuit_breaker.open_for,
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            since: Instant::now(),
        }
    }

    /// Whether Redis is being skipped now (open, or half-open with a probe in flight).
    pub(super) fn is_open(&self) -> bool {
        let until = self.open_until.load(Ordering::Relaxed);
        until != 0
            && (self.micros_since(Instant::now()) < until || self.probing.load(Ordering::Relaxed))
    }

    fn admit(&self) -> Admission {
        let until = self.open_until.load(Ordering::Relaxed);
        if until == 0 {
            return Admission::Go;
        }
        if self.micros_since(Instant::now()) < until {
            return Admission::Skip;
        }
        match self
            .probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => Admission::Probe,
            Err(_) => Admission::Skip,
        }
    }

    /// Runs `call` unless the circuit is open. `call` must be bounded by its own deadline.
    pub(super) async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, CacheError>>,
    ) -> Result<T, CacheError> {
        let admitted = self.start()?;
        admitted.finish(call.await)
    }

    /// Admits one call unless the circuit is open; the caller awaits its call, then hands
    /// the outcome to [`Admitted::finish`]. (The hot reads use this directly: a future
    /// passed to [`Breaker::call`] is kept twice in its state, once as the argument and
    /// once as what is awaited.)
    pub(super) fn start(&self) -> Result<Admitted<'_>, CacheError> {
        let admission = self.admit();
        if admission == Admission::Skip {
            return Err(BackendError::Unavailable(
                "cache: Redis skipped while the circuit breaker is open".into(),
            )
            .into());
        }
        let probe = admission == Admission::Probe;
        // A probe dropped mid-call (its caller cancelled) must not leave the circuit
        // half-open with no probe: count it as failed.
        Ok(Admitted {
            breaker: self,
            probe: ProbeGuard(probe.then_some(self)),
        })
    }

    /// Closes the circuit after a probe that Redis answered.
    fn close(&self) {
        self.open_until.store(0, Ordering::Relaxed);
        self.probing.store(false, Ordering::Release);
    }

    fn reopen(&self) {
        let until = self.micros_since(Instant::now() + self.open_for);
        self.open_until.store(until.max(1), Ordering::Relaxed);
        self.probing.store(false, Ordering::Release);
    }

    fn micros_since(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.since).as_micros()).unwrap_or(u64::MAX)
    }

    fn failed(&self) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= self.threshold {
            self.failures.store(0, Ordering::Relaxed);
            self.reopen();
            metrics::counter!("blinkchamber_cache_circuit_opened_total").increment(1);
            tracing::warn!(
                failures,
                open_for = %duration::format(&self.open_for),
                "cache: Redis keeps failing; skipping it for a while"
            );
        }
    }
}

/// A call the breaker let through, until its outcome is known.
pub(super) struct Admitted<'a> {
    breaker: &'a Breaker,
    /// Armed when this call is the half-open probe.
    probe: ProbeGuard<'a>,
}

impl Admitted<'_> {
    /// Counts `outcome` (a success closes a half-open circuit, an unreachable Redis counts
    /// towards opening it) and hands it back, a timeout named as `l2Timeout`.
    pub(super) fn finish<T>(mut self, outcome: Result<T, CacheError>) -> Result<T, CacheError> {
        let breaker = self.breaker;
        // Disarmed here: nothing below can be cancelled.
        let probe = self.probe.0.take().is_some();
        let outcome = match outcome {
            Ok(value) => {
                // Read first: a store on every success would bounce this line between
                // cores on every call.
                if breaker.failures.load(Ordering::Relaxed) != 0 {
                    breaker.failures.store(0, Ordering::Relaxed);
                }
                if probe {
                    breaker.close();
                    tracing::info!("cache: Redis answers again; circuit closed");
                }
                return Ok(value);
            }
            // Only an unreachable Redis counts; an error reply (a bad argument, a key of
            // another type) says Redis is fine, and must not let a client open the circuit.
            // The backend's deadline is `l2Timeout` (see `RedisBackend::bounded`).
            Err(CacheError::Backend(BackendError::Redis(e))) if e.is_timeout() => {
                Err(BackendError::Unavailable(format!(
                    "cache: no answer from Redis within cache.l2Timeout ({})",
                    duration::format(&breaker.timeout)
                ))
                .into())
            }
            Err(e) if matches!(&e, CacheError::Backend(b) if b.is_unreachable()) => Err(e),
            Err(e) => {
                if probe {
                    breaker.close();
                }
                return Err(e);
            }
        };
        if probe {
            breaker.reopen();
        } else {
            breaker.failed();
        }
        outcome
    }
}

/// Reopens the circuit if a probe is dropped before it finished.
struct ProbeGuard<'a>(Option<&'a Breaker>);

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if let Some(breaker) = self.0.take() {
            breaker.reopen();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn breaker() -> Breaker {
        let mut cfg = CacheConfig::default();
        cfg.circuit_breaker.failure_threshold = 1;
        cfg.circuit_breaker.open_for = Duration::from_millis(50);
        cfg.l2_timeout = Duration::from_secs(30);
        Breaker::new(&cfg)
    }

    fn down() -> CacheError {
        BackendError::Unavailable("down".into()).into()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_open_for_one_probe_goes_through_and_its_success_closes_the_circuit() {
        let breaker = Arc::new(breaker());
        let ran = Arc::new(AtomicUsize::new(0));
        assert!(breaker.call(async { Err::<(), _>(down()) }).await.is_err());
        assert!(breaker.is_open());
        // Wait (polling, not guessing) until the probe slot is offered.
        let release = Arc::new(tokio::sync::Notify::new());
        let probe = {
            let (breaker, ran, release) = (breaker.clone(), ran.clone(), release.clone());
            tokio::spawn(async move {
                loop {
                    let r = breaker
                        .call(async {
                            ran.fetch_add(1, Ordering::SeqCst);
                            release.notified().await;
                            Ok::<_, CacheError>(())
                        })
                        .await;
                    if r.is_ok() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        while ran.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // While the probe is in flight, every other call is skipped without running.
        for _ in 0..20 {
            let skipped = breaker
                .call(async {
                    ran.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, CacheError>(())
                })
                .await;
            assert!(skipped.is_err());
        }
        assert_eq!(
            ran.load(Ordering::SeqCst),
            1,
            "only the probe reached Redis"
        );
        release.notify_one();
        probe.await.unwrap();
        assert!(!breaker.is_open(), "the probe's success closed the circuit");
        assert!(
            breaker
                .call(async { Ok::<_, CacheError>(()) })
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_failed_probe_opens_the_circuit_again() {
        let breaker = breaker();
        assert!(breaker.call(async { Err::<(), _>(down()) }).await.is_err());
        let probed = loop {
            let ran = AtomicUsize::new(0);
            let r = breaker
                .call(async {
                    ran.fetch_add(1, Ordering::SeqCst);
                    Err::<(), _>(down())
                })
                .await;
            assert!(r.is_err());
            if ran.load(Ordering::SeqCst) == 1 {
                break true;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert!(probed);
        assert!(breaker.is_open(), "reopened for another openFor");
    }
}
