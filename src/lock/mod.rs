//! Distributed locks: leases with an owner token and a fencing token.
//!
//! A lease names its owner by a random token; only that token can extend or release it.
//! Every successful acquisition of a name gets a fencing token higher than every one handed
//! out before it for that name, so a storage system that remembers the highest token it
//! has seen can refuse a write from a holder whose lease expired while it was paused.
//!
//! With Redis the lease lives on the master only. Replication is asynchronous: if the
//! master fails after granting a lease and before a replica has it, the promoted replica
//! does not know the lease and a second holder can acquire the name. The fencing counter
//! can then also repeat a number. The lock is therefore an efficiency lock (it keeps
//! duplicate work rare); correctness must come from fencing tokens checked by the store
//! being protected. See `docs/locks.md`, "What the lock guarantees and what it does not".
//!
//! Waiting acquirers are woken by a release message (Redis pub/sub, or an in-process
//! channel for the memory backend) and otherwise retry when the current lease would
//! expire, so a crashed holder delays them by at most its TTL. There is no queue: woken
//! waiters and newcomers race for the name, so the lock is not fair (a waiter can be
//! overtaken), and a waiter gives up when its `wait` runs out.
//!
//! [`Locks::with_lock_watched`] hands the work a [`LeaseLost`] signal that fires when a
//! renewal finds the lease gone or the maximum hold time is reached, so the work can stop
//! (`tokio::select!` on [`LeaseLost::wait`]) instead of writing under a lease it no longer
//! has.

mod memory;
mod redis;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::backend::{Backend, BackendError, RedisBackend};
use crate::config::LocksConfig;

/// Longest lock name accepted, in characters (JSON Schema's `maxLength`).
pub const MAX_NAME_LEN: usize = 256;

/// A held lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The lock name.
    pub name: String,
    /// Proof of ownership for [`Locks::extend`] and [`Locks::release`]; keep it secret.
    /// It is `{owner}.{fencing token}`: 128 random bits in hex that prove ownership, and
    /// the fencing token it was issued with, which `extend` answers again.
    pub token: String,
    /// Strictly increasing per name across holders; pass it to the protected store.
    pub fencing_token: u64,
    /// When the lease runs out unless extended (wall clock of this instance).
    pub expires_at: SystemTime,
}

/// Why a lock operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another owner still held the lock when the wait ran out.
    #[error("lock `{name}` is held by another owner")]
    Busy {
        /// The lock name.
        name: String,
    },
    /// The token does not own the lock: the lease expired, was released, or was never
    /// this token's.
    #[error("lock `{name}` is not held by this token (expired, released or never acquired)")]
    NotHeld {
        /// The lock name.
        name: String,
    },
    /// [`Locks::with_lock`]: the lease was lost while the closure ran (a renewal found it
    /// expired or taken); the closure's result is withheld because another holder may have
    /// run concurrently.
    #[error("lock `{name}` was lost while held; another holder may have run concurrently")]
    Lost {
        /// The lock name.
        name: String,
    },
    /// The name is empty, too long or has control characters.
    #[error("invalid lock name: {0}")]
    InvalidName(String),
    /// A zero TTL.
    #[error("invalid ttl: expected at least 1ms")]
    InvalidTtl,
    /// Redis failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The memory backend has no room for new state (`memory.maxBytes`).
    #[error(transparent)]
    StoreFull(#[from] crate::backend::Full),
}

/// The answer of one acquisition attempt.
pub(crate) enum Attempt {
    /// Acquired with this fencing token.
    Acquired(u64),
    /// Held by someone else for about this long.
    Held(Duration),
}

/// The answer of the Redis store to an extension.
pub(crate) enum Extended {
    /// The owner does not hold the lease.
    NotHeld,
    /// Extended; the lease (stored by an earlier release) names its fencing token.
    Stored(u64),
    /// Extended; the fencing token is the one the owner's token was issued with.
    Issued,
}

enum Store {
    Memory(memory::MemoryLocks),
    Redis(redis::RedisLocks),
}

/// Distributed locks on the memory or Redis backend. Cheap to clone.
#[derive(Clone)]
pub struct Locks {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    released: broadcast::Sender<String>,
    config: LocksConfig,
    metrics: LockMetrics,
}

/// The metrics of every acquire and release, resolved once: looking a labelled metric up
/// by name on every call costs more than the increment.
struct LockMetrics {
    acquired: metrics::Counter,
    busy: metrics::Counter,
    contention: metrics::Counter,
    wait: metrics::Histogram,
    released: metrics::Counter,
    not_held: metrics::Counter,
}

impl LockMetrics {
    fn new() -> Self {
        const ACQUISITIONS: &str = "blinkchamber_lock_acquisitions_total";
        const RELEASES: &str = "blinkchamber_lock_releases_total";
        Self {
            acquired: metrics::counter!(ACQUISITIONS, "result" => "acquired"),
            busy: metrics::counter!(ACQUISITIONS, "result" => "busy"),
            contention: metrics::counter!("blinkchamber_lock_contention_total"),
            wait: metrics::histogram!("blinkchamber_lock_wait_seconds"),
            released: metrics::counter!(RELEASES, "result" => "released"),
            not_held: metrics::counter!(RELEASES, "result" => "not_held"),
        }
    }
}

/// A wake-up for every waiter, sent when releases may have been missed.
pub(crate) const WAKE_ALL: &str = "";

impl Locks {
    /// Locks on the backend the config names.
    pub fn from_config(cfg: &LocksConfig, backend: &Backend) -> Self {
        match backend {
            Backend::Memory(budget) => Self::memory_in(cfg, budget.clone()),
            Backend::Redis(r) => Self::redis(cfg, r.default.clone()),
        }
    }

    /// In-process locks (single instance).
    pub fn memory(cfg: &LocksConfig) -> Self {
        Self::memory_in(cfg, crate::backend::MemoryBudget::default())
    }

    /// In-process locks counted against `budget` (shared with the other stores of the
    /// memory backend).
    pub fn memory_in(cfg: &LocksConfig, budget: crate::backend::MemoryBudget) -> Self {
        let (released, _) = broadcast::channel(1024);
        let store = Store::Memory(memory::MemoryLocks::new(released.clone(), budget));
        Self::with_store(cfg, store, released)
    }

    /// Locks in Redis. Must be called inside a Tokio runtime (it subscribes to release
    /// messages).
    pub fn redis(cfg: &LocksConfig, backend: RedisBackend) -> Self {
        let (released, _) = broadcast::channel(1024);
        let store = Store::Redis(redis::RedisLocks::new(
            backend,
            &cfg.key_prefix,
            released.clone(),
        ));
        Self::with_store(cfg, store, released)
    }

    fn with_store(cfg: &LocksConfig, store: Store, released: broadcast::Sender<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                released,
                config: cfg.clone(),
                metrics: LockMetrics::new(),
            }),
        }
    }

    /// Resolves once waiting acquirers will be woken by releases on other instances (the
    /// Redis release channel is subscribed). Acquiring works before that; waiters then
    /// only notice a release when the holder's lease would have expired.
    pub async fn ready(&self) {
        if let Store::Redis(r) = &self.inner.store {
            r.subscribed().await;
        }
    }

    /// The settings these locks were built with.
    pub fn config(&self) -> &LocksConfig {
        &self.inner.config
    }

    /// Acquires `name` for `ttl`, waiting up to `wait` while another owner holds it.
    ///
    /// # Errors
    /// [`LockError::Busy`] when still held after `wait`; invalid name or TTL; Redis errors.
    pub async fn acquire(
        &self,
        name: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockError> {
        check_name(name)?;
        let ttl = check_ttl(ttl)?;
        let owner = new_owner();
        let started = Instant::now();
        let deadline = started + wait;
        // Subscribe before the first attempt so a release in between is not missed.
        let mut released = self.inner.released.subscribe();
        loop {
            // The lease starts no earlier than the request is sent.
            let sent = SystemTime::now();
            match self.attempt(name, &owner, ttl).await? {
                Attempt::Acquired(fencing_token) => {
                    let m = &self.inner.metrics;
                    m.acquired.increment(1);
                    m.wait.record(started.elapsed().as_secs_f64());
                    return Ok(Lease {
                        name: name.to_owned(),
                        token: format!("{owner}.{fencing_token}"),
                        fencing_token,
                        expires_at: sent + ttl,
                    });
                }
                Attempt::Held(remaining) => {
                    self.inner.metrics.contention.increment(1);
                    let now = Instant::now();
                    if now >= deadline {
                        self.inner.metrics.busy.increment(1);
                        return Err(LockError::Busy {
                            name: name.to_owned(),
                        });
                    }
                    let nap = remaining.max(Duration::from_millis(1)).min(deadline - now);
                    tokio::select! {
                        () = released_name(&mut released, name) => {}
                        () = tokio::time::sleep(nap) => {}
                    }
                }
            }
        }
    }

    /// Extends the lease of `token` on `name` to `ttl` from now.
    ///
    /// # Errors
    /// [`LockError::NotHeld`] when `token` does not own `name`; Redis errors.
    pub async fn extend(&self, name: &str, token: &str, ttl: Duration) -> Result<Lease, LockError> {
        check_name(name)?;
        let ttl = check_ttl(ttl)?;
        let sent = SystemTime::now();
        let (owner, issued) = owner_of(token);
        // A lease is extended only when the answer's fencing token is known: from the token,
        // or from a Redis lease of an earlier release, which stores it.
        let fence = match &self.inner.store {
            Store::Memory(m) => issued.and_then(|fence| m.extend(name, owner, ttl).map(|_| fence)),
            Store::Redis(r) => match r.extend(name, owner, issued.is_some(), ttl).await? {
                Extended::NotHeld => None,
                Extended::Stored(fence) => Some(fence),
                Extended::Issued => issued,
            },
        };
        match fence {
            Some(fencing_token) => Ok(Lease {
                name: name.to_owned(),
                token: token.to_owned(),
                fencing_token,
                expires_at: sent + ttl,
            }),
            None => Err(LockError::NotHeld {
                name: name.to_owned(),
            }),
        }
    }

    /// Releases `name` if `token` owns it, waking waiting acquirers.
    ///
    /// # Errors
    /// [`LockError::NotHeld`] when `token` does not own `name`; Redis errors.
    pub async fn release(&self, name: &str, token: &str) -> Result<(), LockError> {
        check_name(name)?;
        let (owner, _) = owner_of(token);
        let released = match &self.inner.store {
            Store::Memory(m) => m.release(name, owner),
            Store::Redis(r) => r.release(name, owner).await?,
        };
        let m = &self.inner.metrics;
        if released { &m.released } else { &m.not_held }.increment(1);
        if released {
            Ok(())
        } else {
            Err(LockError::NotHeld {
                name: name.to_owned(),
            })
        }
    }

    /// Runs `work` while holding `name`: acquires (waiting up to `wait`), renews the lease
    /// every `ttl / 3` while `work` runs, for at most `locks.maxHold`, and releases it
    /// afterwards, also when `work` panics (the panic then continues). See
    /// [`Locks::with_lock_watched`] for work that should stop when the lease is lost.
    ///
    /// # Errors
    /// Those of [`Locks::acquire`], and [`LockError::Lost`] when a renewal or the release
    /// found the lease gone (the result of `work` is then withheld).
    pub async fn with_lock<T, F, Fut>(
        &self,
        name: &str,
        ttl: Duration,
        wait: Duration,
        work: F,
    ) -> Result<T, LockError>
    where
        F: FnOnce(Lease) -> Fut,
        Fut: Future<Output = T>,
    {
        let max_hold = self.inner.config.max_hold;
        self.with_lock_watched(name, ttl, wait, max_hold, |lease, _| work(lease))
            .await
    }

    /// [`Locks::with_lock`] with a bound and a signal: renewal stops after `max_hold`, and
    /// `work` gets a [`LeaseLost`] that fires when a renewal finds the lease gone or
    /// `max_hold` is reached. The lease stays valid for up to one `ttl` after its last
    /// renewal, which is the time the work has to stop.
    ///
    /// # Examples
    /// ```
    /// # use std::time::Duration;
    /// # use blinkchamber::lock::Locks;
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let locks = Locks::memory(&Default::default());
    /// let done = locks
    ///     .with_lock_watched("report", Duration::from_secs(30), Duration::ZERO,
    ///         Duration::from_secs(600), |lease, lost| async move {
    ///         tokio::select! {
    ///             () = lost.wait() => None,              // stop: someone else may hold it
    ///             n = async { lease.fencing_token } => Some(n),
    ///         }
    ///     })
    ///     .await
    ///     .unwrap();
    /// assert!(done.is_some());
    /// # });
    /// ```
    ///
    /// # Errors
    /// As [`Locks::with_lock`].
    pub async fn with_lock_watched<T, F, Fut>(
        &self,
        name: &str,
        ttl: Duration,
        wait: Duration,
        max_hold: Duration,
        work: F,
    ) -> Result<T, LockError>
    where
        F: FnOnce(Lease, LeaseLost) -> Fut,
        Fut: Future<Output = T>,
    {
        let lease = self.acquire(name, ttl, wait).await?;
        let lost = Arc::new(AtomicBool::new(false));
        let (signal, watched) = watch::channel(false);
        let mut held = Held {
            renewer: tokio::spawn(renew(
                self.clone(),
                lease.clone(),
                ttl,
                max_hold,
                lost.clone(),
                signal,
            )),
            locks: self.clone(),
            lease: Some(lease.clone()),
        };
        let outcome = AssertUnwindSafe(work(lease.clone(), LeaseLost(watched)))
            .catch_unwind()
            .await;
        held.renewer.abort();
        held.lease = None;
        let released = self.release(&lease.name, &lease.token).await;
        match outcome {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(_)
                if lost.load(Ordering::Relaxed)
                    || matches!(released, Err(LockError::NotHeld { .. })) =>
            {
                Err(LockError::Lost { name: lease.name })
            }
            Ok(value) => {
                if let Err(e) = released {
                    tracing::warn!(lock = %lease.name, error = %e,
                        "release after with_lock failed; the lease will expire");
                }
                Ok(value)
            }
        }
    }

    async fn attempt(&self, name: &str, owner: &str, ttl: Duration) -> Result<Attempt, LockError> {
        Ok(match &self.inner.store {
            Store::Memory(m) => m.try_acquire(name, owner, ttl)?,
            Store::Redis(r) => r.try_acquire(name, owner, ttl).await?,
        })
    }
}

/// What [`Locks::with_lock`] holds while the work runs. If the `with_lock` future is
/// dropped mid-work (a timeout, a `select!`, a disconnected client), renewal stops and the
/// lease is released in the background instead of being renewed forever.
struct Held {
    renewer: tokio::task::JoinHandle<()>,
    locks: Locks,
    lease: Option<Lease>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.renewer.abort();
        if let Some(lease) = self.lease.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let locks = self.locks.clone();
            runtime.spawn(async move {
                let _ = locks.release(&lease.name, &lease.token).await;
            });
        }
    }
}

/// Fires when the lease of [`Locks::with_lock_watched`] is lost or its maximum hold time
/// is reached. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LeaseLost(watch::Receiver<bool>);

impl LeaseLost {
    /// Resolves once the work should stop (immediately if it already should).
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        // An error means the renewer is gone: the work is over, nothing to wait for.
        let _ = rx.wait_for(|lost| *lost).await;
    }

    /// Whether the work should stop now.
    pub fn is_lost(&self) -> bool {
        *self.0.borrow()
    }
}

/// Keeps `lease` alive until aborted, until it is found lost, or for `max_hold`; `signal`
/// tells the work when either ends it.
async fn renew(
    locks: Locks,
    lease: Lease,
    ttl: Duration,
    max_hold: Duration,
    lost: Arc<AtomicBool>,
    signal: watch::Sender<bool>,
) {
    let every = (ttl / 3).max(Duration::from_millis(1));
    let until = Instant::now() + max_hold;
    loop {
        if Instant::now() + every > until {
            tokio::time::sleep_until(until).await;
            metrics::counter!("blinkchamber_lock_max_hold_reached_total").increment(1);
            tracing::warn!(lock = %lease.name, "locks.maxHold reached; no longer renewing");
            signal.send_replace(true);
            return;
        }
        tokio::time::sleep(every).await;
        match locks.extend(&lease.name, &lease.token, ttl).await {
            Ok(_) => metrics::counter!("blinkchamber_lock_renewals_total").increment(1),
            Err(LockError::NotHeld { .. }) => {
                metrics::counter!("blinkchamber_lock_expired_while_held_total").increment(1);
                tracing::warn!(lock = %lease.name, "lease lost while held");
                lost.store(true, Ordering::Relaxed);
                signal.send_replace(true);
                return;
            }
            // Redis unreachable: keep trying; the lease may still be valid.
            Err(e) => tracing::warn!(lock = %lease.name, error = %e, "lease renewal failed"),
        }
    }
}

/// Resolves when a release of `name` (or a wake-all) is announced.
async fn released_name(rx: &mut broadcast::Receiver<String>, name: &str) {
    loop {
        match rx.recv().await {
            Ok(n) if n == name || n == WAKE_ALL => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

fn check_name(name: &str) -> Result<(), LockError> {
    if name.is_empty() {
        return Err(LockError::InvalidName("must not be empty".into()));
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_LEN {
        return Err(LockError::InvalidName(format!(
            "{chars} characters, expected at most {MAX_NAME_LEN}"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(LockError::InvalidName(
            "control characters are not allowed".into(),
        ));
    }
    Ok(())
}

fn check_ttl(ttl: Duration) -> Result<Duration, LockError> {
    if ttl < Duration::from_millis(1) {
        return Err(LockError::InvalidTtl);
    }
    Ok(ttl)
}

/// 128 random bits, hex: the part of a token that proves ownership.
fn new_owner() -> String {
    crate::ids::random_hex128()
}

/// The owner part of a lease token and the fencing token it was issued with. A token
/// without one (as earlier releases issued them) is all owner.
fn owner_of(token: &str) -> (&str, Option<u64>) {
    match token.rsplit_once('.') {
        Some((owner, fence)) => match fence.parse() {
            Ok(fence) => (owner, Some(fence)),
            Err(_) => (token, None),
        },
        None => (token, None),
    }
}
