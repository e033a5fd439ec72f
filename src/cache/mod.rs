//! Two-level cache: an in-process L1 (moka) in front of Redis (L2).
//!
//! Values are JSON (serde). A read looks in L1, then Redis; a Redis hit is kept in L1 for
//! at most `cache.l1.maxTtl`. A write goes to Redis, then L1, and tells the other
//! instances to drop their L1 copy through the backplane (Redis pub/sub; the value is not
//! broadcast). [`Cache::get_or_load`] runs the loader once for any number of concurrent
//! callers of the same key on this instance. On the memory backend L1 is the only level,
//! with the same API and the same TTLs.
//!
//! Keys are `(namespace, key)`. In Redis a value lives at `{keyPrefix}{namespace}:{key}`;
//! [`Cache::clear`] removes a namespace with `SCAN` + `UNLINK`, never `FLUSHDB`, so the
//! database can be shared.

mod breaker;
pub(crate) mod frame;
mod redis;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use frame::{FrameError, MAGIC};

use crate::backend::{Backend, BackendError, RedisBackend};
use crate::config::CacheConfig;

/// Longest namespace, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 128;

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// Longest TTL a value may be given.
pub const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// Why a cache operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The namespace is empty, too long, or has characters other than letters, digits,
    /// `_`, `-` and `.`.
    #[error("invalid namespace `{0}`: expected 1-128 of A-Z a-z 0-9 _ - .")]
    InvalidNamespace(String),
    /// A tag is empty, too long, or has characters other than letters, digits, `_`, `-`
    /// and `.`.
    #[error("invalid tag `{0}`: expected 1-128 of A-Z a-z 0-9 _ - .")]
    InvalidTag(String),
    /// A TTL of zero or above [`MAX_TTL`].
    #[error("invalid ttl {}: expected 1ms to 366d", crate::config::types::duration::format(.0))]
    InvalidTtl(Duration),
    /// The key is empty or longer than [`MAX_KEY_LEN`] bytes.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The value could not be serialized, or a stored value not read as the asked type.
    #[error("value is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A stored value is not a valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The loader failed or panicked; nothing was cached.
    #[error("loader failed: {0}")]
    Load(String),
    /// Redis failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// How [`Cache::set`] stores a value.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetOptions<'a> {
    /// Time to live; without it, the category's TTL (or `cache.ttl.default`).
    pub ttl: Option<Duration>,
    /// TTL category (`cache.ttl.categories`).
    pub category: Option<&'a str>,
    /// Tags for [`Cache::remove_by_tag`] (same characters as namespaces).
    pub tags: &'a [&'a str],
}

/// One L1 entry: the value's JSON, until when it is fresh, and how long it may stay in
/// memory at all (fresh time plus `failSafeMaxDuration`, to be served if Redis or the
/// loader fails).
#[derive(Clone)]
struct Entry {
    json: Arc<[u8]>,
    fresh_until: Instant,
    /// End of the fail-safe window: the entry leaves memory then, however often it is put
    /// back.
    stale_until: Instant,
}

impl Entry {
    fn is_fresh(&self) -> bool {
        Instant::now() < self.fresh_until
    }
}

struct EntryExpiry;

impl moka::Expiry<String, Entry> for EntryExpiry {
    fn expire_after_create(&self, _: &String, entry: &Entry, now: Instant) -> Option<Duration> {
        Some(entry.stale_until.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _: &String,
        entry: &Entry,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.stale_until.saturating_duration_since(now))
    }
}

type L1 = moka::future::Cache<String, Entry>;

/// The two-level cache. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: CacheConfig,
    l1: L1,
    l2: Option<redis::RedisLevel>,
    /// Hits and misses of L1 and L2, registered once.
    counts: [[metrics::Counter; 2]; 2],
    /// Evictions applied from the backplane so far (see [`Inner::read_l2`]).
    evictions: Arc<AtomicU64>,
    /// Memory backend: `namespace:tag` → keys (Redis keeps this in sets).
    tags: std::sync::Mutex<HashMap<String, HashSet<String>>>,
    /// Loads running on this instance, by L1 key; callers of the same key share one.
    loads: std::sync::Mutex<HashMap<String, SharedLoad>>,
}

/// A load's outcome, shared by every caller waiting for it.
type SharedLoad = Shared<BoxFuture<'static, Result<Entry, Arc<CacheError>>>>;

impl Cache {
    /// The cache on the backend the config names (`cache.redis` for Redis).
    pub fn from_config(cfg: &CacheConfig, backend: &Backend) -> Self {
        match backend {
            Backend::Memory => Self::memory(cfg),
            Backend::Redis(r) => Self::redis(cfg, r.cache.clone()),
        }
    }

    /// L1 only (single instance).
    pub fn memory(cfg: &CacheConfig) -> Self {
        Self::build(cfg, |_, _| None)
    }

    /// L1 in front of Redis, with the backplane when `cache.backplane` is on. Must be called
    /// inside a Tokio runtime.
    pub fn redis(cfg: &CacheConfig, backend: RedisBackend) -> Self {
        Self::build(cfg, |l1, evictions| {
            Some(redis::RedisLevel::new(cfg, backend, l1, evictions))
        })
    }

    fn build(
        cfg: &CacheConfig,
        l2: impl FnOnce(L1, Arc<AtomicU64>) -> Option<redis::RedisLevel>,
    ) -> Self {
        let evictions = metrics::counter!("blinkchamber_cache_evictions_total", "level" => "l1");
        let l1: L1 = moka::future::Cache::builder()
            .max_capacity(cfg.l1.max_entries)
            .expire_after(EntryExpiry)
            .support_invalidation_closures()
            .eviction_listener(move |_, _, cause| {
                // Capacity evictions only: expiry and explicit removal are not pressure.
                if cause == moka::notification::RemovalCause::Size {
                    evictions.increment(1);
                }
            })
            .build();
        let counter = |level: &'static str, hit: bool| {
            if hit {
                metrics::counter!("blinkchamber_cache_hits_total", "level" => level)
            } else {
                metrics::counter!("blinkchamber_cache_misses_total", "level" => level)
            }
        };
        let evictions = Arc::new(AtomicU64::new(0));
        Self {
            inner: Arc::new(Inner {
                cfg: cfg.clone(),
                l2: l2(l1.clone(), evictions.clone()),
                evictions,
                l1,
                counts: [
                    [counter("l1", false), counter("l1", true)],
                    [counter("l2", false), counter("l2", true)],
                ],
                tags: std::sync::Mutex::default(),
                loads: std::sync::Mutex::default(),
            }),
        }
    }

    /// Whether Redis is being skipped after repeated failures (circuit breaker open).
    pub fn l2_circuit_open(&self) -> bool {
        self.inner.l2.as_ref().is_some_and(|l2| l2.circuit_open())
    }

    /// Resolves once other instances' writes evict this instance's L1 (the backplane is
    /// subscribed). Reads and writes work before that.
    pub async fn ready(&self) {
        if let Some(l2) = &self.inner.l2 {
            l2.subscribed().await;
        }
    }

    /// The value of `key`, if cached.
    ///
    /// # Errors
    /// Invalid namespace or key, a value that is not a `T`, Redis errors.
    pub async fn get<T: DeserializeOwned>(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<Option<T>, CacheError> {
        match self.get_json(namespace, key).await? {
            Some(json) => Ok(Some(serde_json::from_slice(&json)?)),
            None => Ok(None),
        }
    }

    /// The JSON of `key`, if cached.
    ///
    /// # Errors
    /// Invalid namespace or key, Redis errors.
    pub async fn get_json(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<Option<Arc<[u8]>>, CacheError> {
        let l1_key = l1_key(namespace, key)?;
        let cached = self.inner.l1.get(&l1_key).await;
        if let Some(entry) = cached.as_ref().filter(|e| e.is_fresh()) {
            self.inner.record(Level::L1, true);
            return Ok(Some(entry.json.clone()));
        }
        self.inner.record(Level::L1, false);
        let Some(l2) = &self.inner.l2 else {
            return Ok(None);
        };
        let (found, seen, stable) = match self.inner.read_l2(l2, namespace, key).await {
            Ok(read) => read,
            // Redis is failing: the last good value, if it is within the fail-safe window.
            Err(e) => return self.inner.stale_or(cached, e).map(Some),
        };
        self.inner.record(Level::L2, found.is_some());
        match found {
            Some((json, left)) => {
                if stable && self.inner.cfg.l1.max_entries > 0 {
                    let entry = self.inner.entry(json.clone(), left);
                    self.inner
                        .keep_if_unchanged(l1_key.clone(), entry, seen)
                        .await;
                    self.inner.recheck(&l1_key, seen).await;
                }
                Ok(Some(json))
            }
            None => {
                if cached.is_some() {
                    self.inner.l1.invalidate(&l1_key).await;
                }
                Ok(None)
            }
        }
    }

    /// Stores `value` under `key`.
    ///
    /// # Errors
    /// Invalid namespace or key, a value that does not serialize, Redis errors.
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        namespace: &str,
        key: &str,
        value: &T,
        options: SetOptions<'_>,
    ) -> Result<(), CacheError> {
        self.set_json(namespace, key, serde_json::to_vec(value)?, options)
            .await
    }

    /// Stores JSON bytes under `key` (the caller vouches they are JSON).
    ///
    /// # Errors
    /// Invalid namespace or key, Redis errors.
    pub async fn set_json(
        &self,
        namespace: &str,
        key: &str,
        json: Vec<u8>,
        options: SetOptions<'_>,
    ) -> Result<(), CacheError> {
        let l1_key = l1_key(namespace, key)?;
        for tag in options.tags {
            check_name(tag).map_err(|()| CacheError::InvalidTag((*tag).to_owned()))?;
        }
        if let Some(ttl) = options.ttl
            && (ttl.is_zero() || ttl > MAX_TTL)
        {
            return Err(CacheError::InvalidTtl(ttl));
        }
        let ttl = self.inner.ttl(options.category, options.ttl);
        // Dropped first, so a failed or cancelled Redis write cannot leave the old value here.
        self.inner.replace(l1_key.clone(), None).await;
        match &self.inner.l2 {
            Some(l2) => l2.set(namespace, key, &json, ttl, options.tags).await?,
            None => self.inner.tag_locally(namespace, key, options.tags),
        }
        let entry = self.inner.entry(json.into(), ttl);
        self.inner.replace(l1_key, Some(entry)).await;
        Ok(())
    }

    /// Removes `key` here, in Redis, and from every instance's L1.
    ///
    /// # Errors
    /// Invalid namespace or key, Redis errors.
    pub async fn remove(&self, namespace: &str, key: &str) -> Result<(), CacheError> {
        let l1_key = l1_key(namespace, key)?;
        // First here, so a failed or cancelled Redis call cannot leave the old value in L1.
        self.inner.replace(l1_key.clone(), None).await;
        if let Some(l2) = &self.inner.l2 {
            l2.remove(namespace, key).await?;
        }
        self.inner.replace(l1_key, None).await;
        Ok(())
    }

    /// Removes every key of `namespace` set with `tag`, here, in Redis and from every
    /// instance's L1. Returns how many keys were removed.
    ///
    /// # Errors
    /// Invalid namespace or tag, Redis errors.
    pub async fn remove_by_tag(&self, namespace: &str, tag: &str) -> Result<u64, CacheError> {
        check_namespace(namespace)?;
        check_name(tag).map_err(|()| CacheError::InvalidTag(tag.to_owned()))?;
        let keys = match &self.inner.l2 {
            Some(l2) => l2.remove_by_tag(namespace, tag).await?,
            None => self.inner.untag_locally(namespace, tag),
        };
        for key in &keys {
            self.inner
                .l1
                .invalidate(&format!("{namespace}:{key}"))
                .await;
        }
        Ok(keys.len() as u64)
    }

    /// Removes every key of `namespace` (in Redis with `SCAN` + `UNLINK`) and tells the
    /// other instances. Returns how many Redis keys were removed (L1 entries on the memory
    /// backend).
    ///
    /// # Errors
    /// Invalid namespace, Redis errors.
    pub async fn clear(&self, namespace: &str) -> Result<u64, CacheError> {
        check_namespace(namespace)?;
        let prefix = format!("{namespace}:");
        let mut removed = 0;
        if let Some(l2) = &self.inner.l2 {
            removed = l2.clear(namespace).await?;
        } else {
            removed += self
                .inner
                .l1
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .count() as u64;
        }
        self.inner.evictions.fetch_add(1, Ordering::SeqCst);
        evict_namespace(&self.inner.l1, namespace);
        self.inner
            .tags
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|tagged, _| !tagged.starts_with(&prefix));
        Ok(removed)
    }

    /// The cached value of `key`, or `loader`'s, which is then cached. Concurrent callers
    /// of the same key on this instance share one loader run (with
    /// `cache.distributedLoad`, across instances too); a failing or panicking loader caches
    /// nothing and every waiting caller gets [`CacheError::Load`], or the fail-safe copy.
    ///
    /// The loader runs in a task of its own: it finishes and caches its value even if every
    /// caller has gone. A caller holding a stale fail-safe copy waits at most
    /// `cache.loaderSoftTimeout` for it, then gets the stale copy.
    ///
    /// # Errors
    /// Those of [`Cache::get`] and [`Cache::set`], and [`CacheError::Load`].
    pub async fn get_or_load<T, E, F, Fut>(
        &self,
        namespace: &str,
        key: &str,
        category: Option<&str>,
        loader: F,
    ) -> Result<T, CacheError>
    where
        T: Serialize + DeserializeOwned + Send + 'static,
        E: std::fmt::Display + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let l1_key = l1_key(namespace, key)?;
        let cached = self.inner.l1.get(&l1_key).await;
        if let Some(entry) = cached.as_ref().filter(|e| e.is_fresh()) {
            self.inner.record(Level::L1, true);
            return Ok(serde_json::from_slice(&entry.json)?);
        }
        self.inner.record(Level::L1, false);
        let load = Inner::load(&self.inner, l1_key, namespace, key, category, loader);
        // A stale copy stays in L1 during the load, for the fail-safe and the soft timeout.
        let stale = cached.filter(|e| Instant::now() < e.stale_until);
        let soft = self.inner.cfg.loader_soft_timeout;
        let loaded = match &stale {
            Some(stale) if !soft.is_zero() => match tokio::time::timeout(soft, load).await {
                Ok(loaded) => loaded,
                Err(_) => {
                    metrics::counter!("blinkchamber_cache_soft_timeouts_total").increment(1);
                    self.inner.record_stale();
                    return Ok(serde_json::from_slice(&stale.json)?);
                }
            },
            _ => load.await,
        };
        let json = match loaded {
            Ok(entry) => entry.json,
            Err(shared) => {
                let error = Arc::try_unwrap(shared)
                    .unwrap_or_else(|shared| CacheError::Load(shared.to_string()));
                self.inner.stale_or(stale, error)?
            }
        };
        Ok(serde_json::from_slice(&json)?)
    }
}

fn l2_failed(what: &str, error: &CacheError) {
    metrics::counter!("blinkchamber_cache_l2_errors_total").increment(1);
    tracing::warn!(%error, "cache: Redis {what} failed during a load; carrying on without L2");
}

fn load_error(message: String) -> CacheError {
    metrics::counter!("blinkchamber_cache_load_errors_total").increment(1);
    CacheError::Load(message)
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into());
    format!("loader panicked: {detail}")
}

/// Drops every L1 entry of `namespace`.
fn evict_namespace(l1: &L1, namespace: &str) {
    let prefix = format!("{namespace}:");
    if l1
        .invalidate_entries_if(move |k, _| k.starts_with(&prefix))
        .is_err()
    {
        l1.invalidate_all();
    }
}

#[derive(Clone, Copy)]
enum Level {
    L1 = 0,
    L2 = 1,
}

/// Reads of Redis retried when an eviction arrives meanwhile, before giving up on caching.
const STABLE_READ_ATTEMPTS: usize = 3;

impl Inner {
    /// Reads `key` from Redis, with the eviction count seen before the read and whether
    /// none arrived during it (then the value may be kept in L1). When one did, the value
    /// read may be the one it replaced: it is read again, and after a few tries returned
    /// uncached.
    async fn read_l2(
        &self,
        l2: &redis::RedisLevel,
        namespace: &str,
        key: &str,
    ) -> Result<(Option<redis::Stored>, u64, bool), CacheError> {
        let mut attempt = 0;
        loop {
            let before = self.evictions.load(Ordering::SeqCst);
            let found = l2.get(namespace, key).await?;
            attempt += 1;
            let stable = self.evictions.load(Ordering::SeqCst) == before;
            if stable || attempt == STABLE_READ_ATTEMPTS {
                return Ok((found, before, stable));
            }
        }
    }

    /// The running load of `l1_key`, or a new one in a task of its own. The task puts its
    /// value in L1 unless an eviction came meanwhile.
    fn load<T, E, F, Fut>(
        this: &Arc<Self>,
        l1_key: String,
        namespace: &str,
        key: &str,
        category: Option<&str>,
        loader: F,
    ) -> SharedLoad
    where
        T: Serialize + Send + 'static,
        E: std::fmt::Display + Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        let mut loads = this.loads.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(running) = loads.get(&l1_key) {
            return running.clone();
        }
        let seen = this.evictions.load(Ordering::SeqCst);
        let inner = Arc::clone(this);
        let (namespace, key, category) = (
            namespace.to_owned(),
            key.to_owned(),
            category.map(str::to_owned),
        );
        let task_key = l1_key.clone();
        let task = tokio::spawn(async move {
            let loaded = inner
                .run_load(&namespace, &key, category.as_deref(), seen, loader)
                .await;
            if let Ok(entry) = &loaded
                && entry.stale_until > Instant::now()
                && inner.cfg.l1.max_entries > 0
            {
                inner
                    .keep_if_unchanged(task_key.clone(), entry.clone(), seen)
                    .await;
                inner.recheck(&task_key, seen).await;
            }
            inner
                .loads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&task_key);
            loaded.map_err(Arc::new)
        });
        let cleanup = (Arc::clone(this), l1_key.clone());
        let shared = async move {
            task.await.unwrap_or_else(|e| {
                // The task died before it could forget its load: do it here, so the next
                // caller loads again.
                let (inner, key) = cleanup;
                inner
                    .loads
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
                Err(Arc::new(load_error(format!("the load task failed: {e}"))))
            })
        }
        .boxed()
        .shared();
        loads.insert(l1_key, shared.clone());
        shared
    }

    /// Redis, then (under the load lock, when configured) the loader; the loader's value
    /// goes to Redis unless a value was set there meanwhile, which then wins.
    async fn run_load<T, E, F, Fut>(
        &self,
        namespace: &str,
        key: &str,
        category: Option<&str>,
        seen: u64,
        loader: F,
    ) -> Result<Entry, CacheError>
    where
        T: Serialize,
        E: std::fmt::Display,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let read = async || -> Option<Entry> {
            let l2 = self.l2.as_ref()?;
            // A failing Redis does not stop loads: the loader is the source of truth.
            match self.read_l2(l2, namespace, key).await {
                Ok((found, before, stable)) => {
                    self.record(Level::L2, found.is_some());
                    let (json, left) = found?;
                    // An unstable read is handed to the callers but not kept.
                    let ttl = if stable && before == seen {
                        left
                    } else {
                        Duration::ZERO
                    };
                    Some(self.entry(json, ttl))
                }
                Err(e) => {
                    l2_failed("read", &e);
                    None
                }
            }
        };
        if let Some(entry) = read().await {
            return Ok(entry);
        }
        let lease = match &self.l2 {
            Some(l2) if l2.locks_loads() => l2.lock_load(namespace, key).await,
            _ => None,
        };
        if lease.is_some()
            && let Some(entry) = read().await
        {
            // Another instance loaded it while this one waited for the lock.
            if let (Some(l2), Some(lease)) = (&self.l2, lease) {
                l2.unlock_load(lease).await;
            }
            return Ok(entry);
        }
        let loaded = self.call_loader(category, loader).await;
        let entry = match loaded {
            Ok((json, ttl)) => match &self.l2 {
                Some(l2) => match l2.set_loaded(namespace, key, &json, ttl).await {
                    Ok(None) => Ok(self.entry(json.into(), ttl)),
                    // Set by someone else meanwhile: that value is newer than the load.
                    Ok(Some((existing, left))) => Ok(self.entry(existing, left)),
                    Err(e) => {
                        l2_failed("write", &e);
                        Ok(self.entry(json.into(), ttl))
                    }
                },
                None => Ok(self.entry(json.into(), ttl)),
            },
            Err(e) => Err(e),
        };
        if let (Some(l2), Some(lease)) = (&self.l2, lease) {
            l2.unlock_load(lease).await;
        }
        entry
    }

    /// Runs the loader under `cache.loaderTimeout`, catching panics; its value as JSON and
    /// the TTL to store it with.
    async fn call_loader<T, E, F, Fut>(
        &self,
        category: Option<&str>,
        loader: F,
    ) -> Result<(Vec<u8>, Duration), CacheError>
    where
        T: Serialize,
        E: std::fmt::Display,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let started = Instant::now();
        metrics::counter!("blinkchamber_cache_loads_total").increment(1);
        // A closure that panics before it returns its future is caught too: otherwise the
        // load task dies and the key answers "the load task failed" until a restart.
        let load = match std::panic::catch_unwind(AssertUnwindSafe(loader)) {
            Ok(future) => AssertUnwindSafe(future).catch_unwind(),
            Err(panic) => return Err(load_error(panic_message(&panic))),
        };
        let hard = self.cfg.loader_timeout;
        let loaded = if hard.is_zero() {
            Some(load.await)
        } else {
            tokio::time::timeout(hard, load).await.ok()
        };
        metrics::histogram!("blinkchamber_cache_load_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        let value = match loaded {
            Some(Ok(Ok(value))) => value,
            Some(Ok(Err(e))) => return Err(load_error(e.to_string())),
            Some(Err(panic)) => return Err(load_error(panic_message(&panic))),
            None => {
                return Err(load_error(format!(
                    "no value within cache.loaderTimeout ({})",
                    crate::config::types::duration::format(&hard)
                )));
            }
        };
        let json = serde_json::to_vec(&value)?;
        Ok((json, self.ttl(category, None)))
    }

    /// `ttl`, else the category's TTL, else `cache.ttl.default`; shortened by up to
    /// `jitterPercent`.
    fn ttl(&self, category: Option<&str>, ttl: Option<Duration>) -> Duration {
        let cfg = &self.cfg;
        let base = ttl.unwrap_or_else(|| {
            category
                .and_then(|c| cfg.ttl.categories.get(c))
                .copied()
                .unwrap_or(cfg.ttl.default)
        });
        let jitter = f64::from(cfg.jitter_percent.min(100)) / 100.0;
        if jitter == 0.0 {
            return base;
        }
        base.mul_f64(1.0 - rand::random::<f64>() * jitter)
            .max(Duration::from_millis(1))
    }

    fn record_stale(&self) {
        metrics::counter!("blinkchamber_cache_stale_served_total").increment(1);
    }

    /// Puts `entry` in L1 unless an eviction was applied since `seen` (the eviction count
    /// before the value was read). Check and insert are one step for the key, ordered with
    /// [`Inner::replace`] and the backplane's per-key evictions, so a value read before an
    /// eviction never lands in L1 after it.
    async fn keep_if_unchanged(&self, l1_key: String, entry: Entry, seen: u64) {
        let evictions = &self.evictions;
        self.l1
            .entry(l1_key)
            .and_compute_with(|_| async move {
                if evictions.load(Ordering::SeqCst) == seen {
                    moka::ops::compute::Op::Put(entry)
                } else {
                    moka::ops::compute::Op::Nop
                }
            })
            .await;
    }

    /// After [`Inner::keep_if_unchanged`]: a namespace clear or a reconnect flush is not
    /// ordered with the per-key step, so check once more and drop the entry if one came.
    async fn recheck(&self, l1_key: &str, seen: u64) {
        if self.evictions.load(Ordering::SeqCst) != seen {
            self.l1.invalidate(l1_key).await;
        }
    }

    /// This instance's own write or removal (after Redis has it): counts as an eviction for
    /// concurrent readers, then puts or removes the entry in one step for the key.
    async fn replace(&self, l1_key: String, entry: Option<Entry>) {
        let evictions = &self.evictions;
        self.l1
            .entry(l1_key)
            .and_compute_with(|_| async move {
                evictions.fetch_add(1, Ordering::SeqCst);
                match entry {
                    Some(entry) => moka::ops::compute::Op::Put(entry),
                    None => moka::ops::compute::Op::Remove,
                }
            })
            .await;
    }

    fn tag_locally(&self, namespace: &str, key: &str, tags: &[&str]) {
        if tags.is_empty() {
            return;
        }
        let mut index = self.tags.lock().unwrap_or_else(|e| e.into_inner());
        for tag in tags {
            index
                .entry(format!("{namespace}:{tag}"))
                .or_default()
                .insert(key.to_owned());
        }
        // Keys leave L1 by expiry and eviction without telling the index: prune it whenever
        // it has grown past the number of entries L1 can hold.
        let members: usize = index.values().map(HashSet::len).sum();
        if members as u64 > self.cfg.l1.max_entries.max(1024) {
            index.retain(|tagged, keys| {
                let namespace = tagged.split_once(':').map_or("", |(ns, _)| ns);
                keys.retain(|k| self.l1.contains_key(&format!("{namespace}:{k}")));
                !keys.is_empty()
            });
        }
    }

    /// The keys tagged `tag` that are still cached, and forgets the tag.
    fn untag_locally(&self, namespace: &str, tag: &str) -> Vec<String> {
        let keys = self
            .tags
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&format!("{namespace}:{tag}"))
            .unwrap_or_default();
        keys.into_iter()
            .filter(|k| self.l1.contains_key(&format!("{namespace}:{k}")))
            .collect()
    }

    fn record(&self, level: Level, hit: bool) {
        self.counts[level as usize][usize::from(hit)].increment(1);
    }

    /// An L1 entry fresh for `ttl` (at most `l1.maxTtl` in front of Redis), then kept for
    /// `failSafeMaxDuration` more as a fail-safe copy.
    fn entry(&self, json: Arc<[u8]>, ttl: Duration) -> Entry {
        let fresh = match self.l2 {
            Some(_) => ttl.min(self.cfg.l1.max_ttl),
            None => ttl,
        };
        let now = Instant::now();
        let fresh_until = now + fresh;
        let stale_until = if fresh.is_zero() {
            now
        } else {
            fresh_until + self.cfg.fail_safe_max_duration
        };
        Entry {
            json,
            fresh_until,
            stale_until,
        }
    }

    /// The stale copy when Redis or the loader failed and there is one (moka already dropped
    /// it if the fail-safe window is over); otherwise the error.
    fn stale_or(&self, cached: Option<Entry>, error: CacheError) -> Result<Arc<[u8]>, CacheError> {
        match cached {
            Some(stale) if Instant::now() < stale.stale_until => {
                self.record_stale();
                tracing::warn!(%error, "cache: serving a stale value (fail-safe)");
                Ok(stale.json)
            }
            _ => Err(error),
        }
    }
}

/// Namespaces and tags: 1-128 of `A-Z a-z 0-9 _ - .`.
fn check_name(name: &str) -> Result<(), ()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAMESPACE_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok { Ok(()) } else { Err(()) }
}

fn check_namespace(namespace: &str) -> Result<(), CacheError> {
    check_name(namespace).map_err(|()| {
        CacheError::InvalidNamespace(namespace.chars().take(MAX_NAMESPACE_LEN).collect())
    })
}

/// `namespace:key`, after checking both (the namespace has no `:`, so this is unambiguous).
fn l1_key(namespace: &str, key: &str) -> Result<String, CacheError> {
    check_namespace(namespace)?;
    if key.is_empty() {
        return Err(CacheError::InvalidKey("must not be empty".into()));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(CacheError::InvalidKey(format!(
            "{} bytes, expected at most {MAX_KEY_LEN}",
            key.len()
        )));
    }
    Ok(format!("{namespace}:{key}"))
}
