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
mod coherence;
pub(crate) mod frame;
mod redis;
mod stored;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use frame::{FrameError, MAGIC};

use crate::backend::{Backend, BackendError, RedisBackend};
use crate::config::CacheConfig;
use coherence::{Coherence, Entry, L1, Ticket};
use stored::{Found, Read};

/// Longest namespace, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 128;

/// Longest key, in characters (JSON Schema's `maxLength`).
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
    /// A value larger than `cache.maxValueBytes`.
    #[error("value of {bytes} bytes, more than cache.maxValueBytes ({max})")]
    ValueTooLarge {
        /// Size of the value's JSON.
        bytes: usize,
        /// `cache.maxValueBytes`.
        max: usize,
    },
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

/// The start of a computation whose result is stored only if nothing changed meanwhile;
/// see [`Cache::mark`].
pub struct WriteMark {
    l1_key: String,
    watch: coherence::Watch,
    /// Redis: the last version handed out when the mark was taken.
    since: Option<u64>,
    taken: Instant,
}

impl std::fmt::Debug for WriteMark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteMark")
            .field("key", &self.l1_key)
            .field("since", &self.since)
            .finish_non_exhaustive()
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

/// The two-level cache. Cheap to clone.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: CacheConfig,
    /// L1 and the rule that orders what goes into it.
    coherence: Arc<Coherence>,
    l2: Option<redis::RedisLevel>,
    /// Hits and misses of L1 and L2, registered once.
    counts: [[metrics::Counter; 2]; 2],
    /// Loads running on this instance, by L1 key; callers of the same key share one.
    loads: std::sync::Mutex<std::collections::HashMap<String, SharedLoad>>,
}

/// A load's outcome, shared by every caller waiting for it.
type SharedLoad = Shared<BoxFuture<'static, Result<Entry, Arc<CacheError>>>>;

/// How long removals are remembered in Redis (tombstones and markers): longer than a load
/// can run, so a load that read before a removal cannot store its value after it.
fn tombstone_ttl(cfg: &CacheConfig) -> Duration {
    let load = if cfg.loader_timeout.is_zero() {
        Duration::from_secs(60)
    } else {
        cfg.loader_timeout + Duration::from_secs(10)
    };
    if cfg.distributed_load.enabled {
        load + cfg.distributed_load.wait
    } else {
        load
    }
}

impl Cache {
    /// The cache on the backend the config names (`cache.redis` for Redis).
    pub fn from_config(cfg: &CacheConfig, backend: &Backend) -> Self {
        match backend {
            Backend::Memory(_) => Self::memory(cfg),
            Backend::Redis(r) => Self::redis(cfg, r.cache.clone()),
        }
    }

    /// L1 only (single instance).
    pub fn memory(cfg: &CacheConfig) -> Self {
        Self::build(cfg, Duration::from_secs(1), |_| None)
    }

    /// L1 in front of Redis, with the backplane when `cache.backplane` is on. Must be called
    /// inside a Tokio runtime.
    pub fn redis(cfg: &CacheConfig, backend: RedisBackend) -> Self {
        let window = cfg.l2_timeout + Duration::from_secs(1);
        Self::build(cfg, window, |coherence| {
            Some(redis::RedisLevel::new(
                cfg,
                backend,
                coherence,
                tombstone_ttl(cfg),
            ))
        })
    }

    fn build(
        cfg: &CacheConfig,
        window: Duration,
        l2: impl FnOnce(Arc<Coherence>) -> Option<redis::RedisLevel>,
    ) -> Self {
        let evictions = metrics::counter!("blinkchamber_cache_evictions_total", "level" => "l1");
        // Weighed in bytes; an entry weighs at least maxBytes / maxEntries, so both bound L1.
        let least = cfg.l1.max_bytes / cfg.l1.max_entries.max(1);
        let l1: L1 = moka::future::Cache::builder()
            .max_capacity(cfg.l1.max_bytes)
            .weigher(move |key: &String, entry: &Entry| {
                let bytes = entry.bytes(key) as u64;
                u32::try_from(bytes.max(least)).unwrap_or(u32::MAX)
            })
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
        let coherence = Arc::new(Coherence::new(l1, window));
        Self {
            inner: Arc::new(Inner {
                cfg: cfg.clone(),
                l2: l2(coherence.clone()),
                coherence,
                counts: [
                    [counter("l1", false), counter("l1", true)],
                    [counter("l2", false), counter("l2", true)],
                ],
                loads: std::sync::Mutex::default(),
            }),
        }
    }

    /// Whether Redis is being skipped after repeated failures (circuit breaker open).
    pub fn l2_circuit_open(&self) -> bool {
        self.inner.l2.as_ref().is_some_and(|l2| l2.circuit_open())
    }

    /// Whether other instances' writes reach this instance now: the backplane is
    /// subscribed (always, without a backplane or on the memory backend). While it is not,
    /// L1 is neither served nor filled; every read goes to Redis.
    pub fn following(&self) -> bool {
        self.inner.coherence.following()
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
        Ok(self
            .lookup_json(namespace, key)
            .await?
            .map(|(json, _)| json))
    }

    /// The JSON of `key`, if cached, and where it came from.
    ///
    /// # Errors
    /// Invalid namespace or key, Redis errors.
    pub async fn lookup_json(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<Option<(Arc<[u8]>, Served)>, CacheError> {
        // One allocation for both keys: Redis's is the L1 key behind `cache.keyPrefix`.
        let prefix = &self.inner.cfg.key_prefix;
        let full = checked_key(prefix, namespace, key)?;
        // With L1 off (`maxEntries: 0`) there is nothing to look up.
        let cached = match self.inner.l1_on() {
            true => self.inner.l1().get(&full[prefix.len()..]).await,
            false => None,
        };
        // While the backplane is lost, another instance's write could be missed: no L1 hits.
        if let Some(entry) = cached
            .as_ref()
            .filter(|e| e.is_fresh() && self.inner.coherence.following())
        {
            self.inner.record(Level::L1, true);
            return Ok(Some((entry.json.clone(), Served::L1)));
        }
        self.inner.record(Level::L1, false);
        let Some(l2) = &self.inner.l2 else {
            return Ok(None);
        };
        // Boxed: the Redis read's future is several kilobytes, which every caller (L1 hits
        // included) would otherwise carry and move.
        Box::pin(self.read_through(l2, full, prefix.len(), cached)).await
    }

    /// An L1 miss: Redis, then L1 by the coherence rule. `full` is the Redis key, whose
    /// L1 key starts at `l1_at`.
    async fn read_through(
        &self,
        l2: &redis::RedisLevel,
        full: String,
        l1_at: usize,
        cached: Option<Entry>,
    ) -> Result<Option<(Arc<[u8]>, Served)>, CacheError> {
        let l1_key = &full[l1_at..];
        let ticket = self.inner.coherence.ticket();
        let read = match l2.get_key(&full).await {
            Ok(read) => read,
            // Redis is failing: the last good value, if it is within the fail-safe window.
            Err(e) => {
                return self
                    .inner
                    .stale_or(cached, e)
                    .map(|json| Some((json, Served::Stale)));
            }
        };
        match read {
            Some(Read {
                version,
                found: Found::Value(json, left),
            }) => {
                self.inner.record(Level::L2, true);
                if self.inner.l1_on() {
                    let entry = self.inner.entry(json.clone(), left, version);
                    self.inner.keep(l1_key.to_owned(), entry, ticket).await;
                }
                Ok(Some((json, Served::L2)))
            }
            Some(Read {
                version,
                found: Found::Removed,
            }) => {
                self.inner.record(Level::L2, false);
                self.inner.coherence.evict(l1_key, version, true).await;
                Ok(None)
            }
            None => {
                self.inner.record(Level::L2, false);
                if let Some(stale) = cached {
                    // Gone from Redis (expired): the copy is not even a fail-safe any more.
                    self.inner
                        .coherence
                        .evict(l1_key, stale.version, true)
                        .await;
                }
                Ok(None)
            }
        }
    }

    /// Stores `value` under `key`.
    ///
    /// # Errors
    /// Invalid namespace or key, a value that does not serialize or is larger than
    /// `cache.maxValueBytes`, Redis errors.
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
    /// Invalid namespace, key, tag or TTL, a value larger than `cache.maxValueBytes`, Redis
    /// errors.
    pub async fn set_json(
        &self,
        namespace: &str,
        key: &str,
        json: Vec<u8>,
        options: SetOptions<'_>,
    ) -> Result<(), CacheError> {
        self.write(namespace, key, json, options, None)
            .await
            .map(|_| ())
    }

    /// Marks the start of a computation whose result may be stored with
    /// [`Cache::set_json_if_unchanged`]: that store is refused if `key` is written or
    /// removed, its namespace cleared or one of its tags removed after this mark, here or
    /// on any instance.
    ///
    /// # Errors
    /// Invalid namespace or key, Redis errors.
    pub async fn mark(&self, namespace: &str, key: &str) -> Result<WriteMark, CacheError> {
        let l1_key = l1_key(namespace, key)?;
        let watch = self.inner.coherence.watch(&l1_key);
        let since = match &self.inner.l2 {
            Some(l2) => match l2.get_for_load(namespace, key).await {
                Ok((_, since)) => Some(since),
                Err(e) => {
                    self.inner.coherence.unwatch(&watch);
                    return Err(e);
                }
            },
            None => None,
        };
        Ok(WriteMark {
            l1_key,
            watch,
            since,
            taken: Instant::now(),
        })
    }

    /// Stores JSON bytes under `key` unless the key, its namespace or one of the tags changed
    /// since `mark` (see [`Cache::mark`]). Returns whether it was stored.
    ///
    /// # Errors
    /// As [`Cache::set_json`].
    pub async fn set_json_if_unchanged(
        &self,
        namespace: &str,
        key: &str,
        json: Vec<u8>,
        options: SetOptions<'_>,
        mark: WriteMark,
    ) -> Result<bool, CacheError> {
        let evicted = self.inner.coherence.unwatch(&mark.watch);
        if evicted || mark.l1_key != l1_key(namespace, key)? {
            return Ok(false);
        }
        // Past the tombstones' lifetime a removal may no longer be visible in Redis.
        if mark.taken.elapsed() + self.inner.cfg.l2_timeout >= self.inner.tombstone_ttl() {
            return Ok(false);
        }
        self.write(namespace, key, json, options, Some(mark)).await
    }

    async fn write(
        &self,
        namespace: &str,
        key: &str,
        json: Vec<u8>,
        options: SetOptions<'_>,
        mark: Option<WriteMark>,
    ) -> Result<bool, CacheError> {
        let l1_key = l1_key(namespace, key)?;
        for tag in options.tags {
            check_name(tag).map_err(|()| CacheError::InvalidTag((*tag).to_owned()))?;
        }
        if let Some(ttl) = options.ttl
            && (ttl.is_zero() || ttl > MAX_TTL)
        {
            return Err(CacheError::InvalidTtl(ttl));
        }
        self.inner.check_size(json.len())?;
        let ttl = self.inner.ttl(options.category, options.ttl);
        let coherence = &self.inner.coherence;
        if mark.is_none() {
            // Dropped first, so a failed or cancelled Redis write cannot leave the old value.
            coherence.drop_before_write(&l1_key).await;
        }
        let ticket = coherence.ticket();
        let json: Arc<[u8]> = json.into();
        let (version, tags) = match &self.inner.l2 {
            Some(l2) => {
                let version = match mark.as_ref().and_then(|m| m.since) {
                    Some(since) => {
                        match l2
                            .set_guarded(namespace, key, &json, ttl, options.tags, since)
                            .await?
                        {
                            redis::LoadWrite::Stored(version) => version,
                            redis::LoadWrite::Lost(_) => return Ok(false),
                        }
                    }
                    None => l2.set(namespace, key, &json, ttl, options.tags).await?,
                };
                (version, None)
            }
            None => {
                let tags: Arc<[String]> = options.tags.iter().map(|t| (*t).to_owned()).collect();
                (coherence.next_local_version(), Some(tags))
            }
        };
        let mut entry = self.inner.entry(json, ttl, version);
        entry.tags = tags;
        self.inner.keep(l1_key, entry, ticket).await;
        Ok(true)
    }

    /// Removes `key` here, in Redis, and from every instance's L1.
    ///
    /// # Errors
    /// Invalid namespace or key, Redis errors.
    pub async fn remove(&self, namespace: &str, key: &str) -> Result<(), CacheError> {
        let l1_key = l1_key(namespace, key)?;
        let coherence = &self.inner.coherence;
        coherence.drop_before_write(&l1_key).await;
        let version = match &self.inner.l2 {
            Some(l2) => l2.remove(namespace, &[key]).await?,
            None => coherence.next_local_version(),
        };
        coherence.evict(&l1_key, version, true).await;
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
        let coherence = &self.inner.coherence;
        let removed: Vec<(String, u64)> = match &self.inner.l2 {
            Some(l2) => l2
                .remove_by_tag(namespace, tag)
                .await?
                .into_iter()
                .map(|(key, version)| (format!("{namespace}:{key}"), version))
                .collect(),
            None => {
                let prefix = format!("{namespace}:");
                let tagged: Vec<String> = self
                    .inner
                    .l1()
                    .iter()
                    .filter(|(k, e)| {
                        k.starts_with(&prefix)
                            && e.tags.as_ref().is_some_and(|t| t.iter().any(|t| t == tag))
                    })
                    .map(|(k, _)| (*k).clone())
                    .collect();
                let version = coherence.next_local_version();
                tagged.into_iter().map(|k| (k, version)).collect()
            }
        };
        for (key, version) in &removed {
            coherence.evict(key, *version, true).await;
        }
        Ok(removed.len() as u64)
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
        let removed = match &self.inner.l2 {
            Some(l2) => l2.clear(namespace).await?,
            None => self
                .inner
                .l1()
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .count() as u64,
        };
        self.inner.coherence.evict_bulk(Some(namespace));
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
        let cached = self.inner.l1().get(&l1_key).await;
        if let Some(entry) = cached
            .as_ref()
            .filter(|e| e.is_fresh() && self.inner.coherence.following())
        {
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

/// Where a cached value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Served {
    /// This process's memory.
    L1,
    /// Redis.
    L2,
    /// A fail-safe copy from L1 while Redis fails.
    Stale,
}

#[derive(Clone, Copy)]
enum Level {
    L1 = 0,
    L2 = 1,
}

/// How a load read Redis.
enum LoadRead {
    /// A value (kept in L1 if nothing newer is known).
    Found(Entry),
    /// None there: the guard for storing the loader's value (`None`: Redis failed, so the
    /// value cannot be guarded).
    Missing(Option<u64>),
}

impl Inner {
    fn l1(&self) -> &L1 {
        &self.coherence.l1
    }

    fn tombstone_ttl(&self) -> Duration {
        tombstone_ttl(&self.cfg)
    }

    /// Whether L1 keeps anything (`cache.l1.maxEntries` above 0).
    fn l1_on(&self) -> bool {
        self.cfg.l1.max_entries > 0
    }

    fn check_size(&self, bytes: usize) -> Result<(), CacheError> {
        let max = self.cfg.max_value_bytes;
        if bytes > max {
            return Err(CacheError::ValueTooLarge { bytes, max });
        }
        Ok(())
    }

    /// Puts `entry` in L1 by the coherence rule (when L1 is on).
    async fn keep(&self, l1_key: String, entry: Entry, ticket: Ticket) {
        if self.l1_on() && entry.stale_until > Instant::now() {
            self.coherence.admit(l1_key, entry, ticket).await;
        }
    }

    /// The running load of `l1_key`, or a new one in a task of its own.
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
        let watch = this.coherence.watch(&l1_key);
        let inner = Arc::clone(this);
        let (namespace, key, category) = (
            namespace.to_owned(),
            key.to_owned(),
            category.map(str::to_owned),
        );
        let task_key = l1_key.clone();
        let task = tokio::spawn(async move {
            let loaded = inner
                .run_load(
                    &task_key,
                    &namespace,
                    &key,
                    category.as_deref(),
                    &watch,
                    loader,
                )
                .await;
            inner.coherence.unwatch(&watch);
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

    /// Reads Redis for a load: a value found is kept in L1 by the coherence rule.
    async fn read_for_load(&self, l1_key: &str, namespace: &str, key: &str) -> LoadRead {
        let Some(l2) = &self.l2 else {
            return LoadRead::Missing(None);
        };
        let ticket = self.coherence.ticket();
        match l2.get_for_load(namespace, key).await {
            Ok((
                Some(Read {
                    version,
                    found: Found::Value(json, left),
                }),
                _,
            )) => {
                self.record(Level::L2, true);
                let entry = self.entry(json, left, version);
                self.keep(l1_key.to_owned(), entry.clone(), ticket).await;
                LoadRead::Found(entry)
            }
            Ok((_, since)) => {
                self.record(Level::L2, false);
                LoadRead::Missing(Some(since))
            }
            Err(e) => {
                // A failing Redis does not stop loads: the loader is the source of truth.
                l2_failed("read", &e);
                LoadRead::Missing(None)
            }
        }
    }

    /// Redis, then (under the load lock, when configured) the loader. The loader's value
    /// goes to Redis only if nothing happened to the key since the load read it (a value
    /// written meanwhile wins; after a removal the value is handed to the callers but not
    /// kept); it goes into L1 by the coherence rule.
    async fn run_load<T, E, F, Fut>(
        &self,
        l1_key: &str,
        namespace: &str,
        key: &str,
        category: Option<&str>,
        watch: &coherence::Watch,
        loader: F,
    ) -> Result<Entry, CacheError>
    where
        T: Serialize,
        E: std::fmt::Display,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut since = match self.read_for_load(l1_key, namespace, key).await {
            LoadRead::Found(entry) => return Ok(entry),
            LoadRead::Missing(since) => since,
        };
        let lease = match &self.l2 {
            Some(l2) if l2.locks_loads() => l2.lock_load(namespace, key).await,
            _ => None,
        };
        if lease.is_some() {
            // Another instance may have loaded it while this one waited for the lock.
            match self.read_for_load(l1_key, namespace, key).await {
                LoadRead::Found(entry) => {
                    if let (Some(l2), Some(lease)) = (&self.l2, lease) {
                        l2.unlock_load(lease).await;
                    }
                    return Ok(entry);
                }
                LoadRead::Missing(again) => since = again,
            }
        }
        let read_at = Instant::now();
        let loaded = self.call_loader(category, loader).await;
        let entry = match loaded {
            Ok((json, ttl)) => Ok(self
                .store_loaded(l1_key, namespace, key, json, ttl, since, read_at, watch)
                .await),
            Err(e) => Err(e),
        };
        if let (Some(l2), Some(lease)) = (&self.l2, lease) {
            l2.unlock_load(lease).await;
        }
        entry
    }

    /// A loader's value: to Redis guarded by `since`, then to L1; without a guard (Redis
    /// failed, or the memory backend) to L1 only if no eviction of the key came during the
    /// load.
    #[allow(clippy::too_many_arguments)]
    async fn store_loaded(
        &self,
        l1_key: &str,
        namespace: &str,
        key: &str,
        json: Vec<u8>,
        ttl: Duration,
        since: Option<u64>,
        read_at: Instant,
        watch: &coherence::Watch,
    ) -> Entry {
        let json: Arc<[u8]> = json.into();
        // Past the tombstones' lifetime a removal may no longer be visible in Redis.
        let guardable = read_at.elapsed() + self.cfg.l2_timeout < self.tombstone_ttl();
        if let (Some(l2), Some(since), true) = (&self.l2, since, guardable) {
            let ticket = self.coherence.ticket();
            match l2.set_guarded(namespace, key, &json, ttl, &[], since).await {
                Ok(redis::LoadWrite::Stored(version)) => {
                    let entry = self.entry(json, ttl, version);
                    self.keep(l1_key.to_owned(), entry.clone(), ticket).await;
                    return entry;
                }
                // Set by someone else meanwhile: that value is newer than the load.
                Ok(redis::LoadWrite::Lost(Some(Read {
                    version,
                    found: Found::Value(existing, left),
                }))) => {
                    let entry = self.entry(existing, left, version);
                    self.keep(l1_key.to_owned(), entry.clone(), ticket).await;
                    return entry;
                }
                // Removed since the load read: the value is the callers', not the cache's.
                Ok(redis::LoadWrite::Lost(_)) => {
                    metrics::counter!("blinkchamber_cache_loads_discarded_total").increment(1);
                    return self.entry(json, ttl, 0);
                }
                Err(e) => l2_failed("write", &e),
            }
        }
        let version = match &self.l2 {
            Some(_) => 0,
            None => self.coherence.next_local_version(),
        };
        let entry = self.entry(json, ttl, version);
        if self.cfg.l1.max_entries > 0 {
            self.coherence.admit_unconfirmed(entry.clone(), watch).await;
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
        if let Err(e) = self.check_size(json.len()) {
            return Err(load_error(e.to_string()));
        }
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

    fn record(&self, level: Level, hit: bool) {
        self.counts[level as usize][usize::from(hit)].increment(1);
    }

    /// An L1 entry fresh for `ttl` (at most `l1.maxTtl` in front of Redis), then kept for
    /// `failSafeMaxDuration` more as a fail-safe copy.
    fn entry(&self, json: Arc<[u8]>, ttl: Duration, version: u64) -> Entry {
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
            version,
            fresh_until,
            stale_until,
            tags: None,
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
    checked_key("", namespace, key)
}

/// `{prefix}namespace:key`, after checking the namespace and key.
fn checked_key(prefix: &str, namespace: &str, key: &str) -> Result<String, CacheError> {
    check_namespace(namespace)?;
    if key.is_empty() {
        return Err(CacheError::InvalidKey("must not be empty".into()));
    }
    // A key of at most MAX_KEY_LEN bytes has at most as many characters.
    if key.len() > MAX_KEY_LEN {
        let chars = key.chars().count();
        if chars > MAX_KEY_LEN {
            return Err(CacheError::InvalidKey(format!(
                "{chars} characters, expected at most {MAX_KEY_LEN}"
            )));
        }
    }
    Ok(join(&[prefix, namespace, ":", key]))
}

/// The concatenation of `parts`, in one allocation of the right size (`format!` grows its
/// buffer as it goes; keys are built on every cache call).
pub(crate) fn join(parts: &[&str]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        out.push_str(part);
    }
    out
}
