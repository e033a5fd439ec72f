//! L2 in Redis, and the backplane that keeps other instances' L1 honest.
//!
//! Values: `{keyPrefix}{namespace}:{key}` holds `{"expiresAt":<unix ms>,"value":<json>}`
//! (still readable with `redis-cli GET`), encoded by [`super::frame`], with `PX` set to the
//! TTL. The expiry travels with the value so that a read is a single `GET` and another
//! instance's L1 never keeps a value longer than Redis does (up to clock skew between
//! hosts). A value without the wrapper (written by something else) is read as it is.
//! With `cache.distributedLoad`, a loader runs under the lock `{keyPrefix}~load:` +
//! SHA-256 of `{namespace}:{key}` (see [`crate::lock`]). Backplane: channel `{keyPrefix}backplane`, messages
//! `{instance} {sent µs} k {namespace}:{key}` (evict a key) and
//! `{instance} {sent µs} n {namespace}` (evict a namespace). An instance ignores its own messages; after a reconnect it flushes its
//! whole L1, since messages may have been missed meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::Digest;

use tokio::sync::watch;

use super::breaker::Breaker;
use super::{CacheError, L1, evict_namespace, frame};
use crate::backend::redis::SubscriptionEvent;
use crate::backend::redis::px;
use crate::backend::{RedisBackend, Retry};
use crate::config::{CacheConfig, CompressionConfig, LocksConfig};
use crate::lock::{Lease, Locks};

/// A value read from Redis: its JSON, and how long Redis keeps it.
pub(super) type Stored = (Arc<[u8]>, Duration);

/// Start of a stored value, before its expiry in Unix milliseconds.
const HEAD: &[u8] = b"{\"expiresAt\":";
/// Between the expiry and the value's JSON; the stored value ends with `}`.
const VALUE: &[u8] = b",\"value\":";

/// Keys removed per `UNLINK` while clearing a namespace.
const CLEAR_BATCH: usize = 1000;

pub(super) struct RedisLevel {
    backend: RedisBackend,
    prefix: String,
    compression: CompressionConfig,
    /// `None` with the backplane off.
    channel: Option<String>,
    instance: String,
    listener: Option<tokio::task::JoinHandle<()>>,
    subscribed: watch::Receiver<bool>,
    breaker: Breaker,
    /// With `cache.distributedLoad` on: the locks loaders run under.
    load_locks: Option<(Locks, Duration, Duration)>,
}

impl Drop for RedisLevel {
    fn drop(&mut self) {
        if let Some(listener) = &self.listener {
            listener.abort();
        }
    }
}

impl RedisLevel {
    /// `evictions` is bumped before every eviction the backplane applies, so readers can
    /// tell that one happened while they were reading Redis.
    pub(super) fn new(
        cfg: &CacheConfig,
        backend: RedisBackend,
        l1: L1,
        evictions: Arc<AtomicU64>,
    ) -> Self {
        let instance = format!("{:016x}", rand::random::<u64>());
        let backend_for_locks = backend.clone();
        let (subscribed_tx, subscribed) = watch::channel(!cfg.backplane);
        let (channel, listener) = if cfg.backplane {
            let channel = format!("{}backplane", cfg.key_prefix);
            let subscription = backend.subscribe(vec![channel.clone()]);
            let listener = tokio::spawn(listen(
                subscription,
                l1,
                evictions,
                instance.clone(),
                subscribed_tx,
            ));
            (Some(channel), Some(listener))
        } else {
            (None, None)
        };
        Self {
            backend,
            prefix: cfg.key_prefix.clone(),
            compression: cfg.compression.clone(),
            channel,
            instance,
            listener,
            subscribed,
            breaker: Breaker::new(cfg),
            load_locks: cfg.distributed_load.enabled.then(|| {
                let lock = &cfg.distributed_load;
                let locks_cfg = LocksConfig {
                    key_prefix: format!("{}~load:", cfg.key_prefix),
                    default_ttl: lock.lock_ttl,
                    max_ttl: lock.lock_ttl,
                    max_wait: lock.wait,
                    ..LocksConfig::default()
                };
                (
                    Locks::redis(&locks_cfg, backend_for_locks),
                    lock.lock_ttl,
                    lock.wait,
                )
            }),
        }
    }

    pub(super) async fn subscribed(&self) {
        let mut rx = self.subscribed.clone();
        let _ = rx.wait_for(|s| *s).await;
        if let Some((locks, ..)) = &self.load_locks {
            locks.ready().await;
        }
    }

    fn key(&self, namespace: &str, key: &str) -> String {
        format!("{}{namespace}:{key}", self.prefix)
    }

    /// Whether Redis is being skipped after repeated failures.
    pub(super) fn circuit_open(&self) -> bool {
        self.breaker.is_open()
    }

    /// The stored JSON and how long Redis keeps it, in one `GET`.
    pub(super) async fn get(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<Option<Stored>, CacheError> {
        let full = self.key(namespace, key);
        let get = async {
            let stored: Option<Vec<u8>> = self.backend.query(redis::cmd("GET").arg(&full)).await?;
            Ok(stored)
        };
        self.breaker.call(get).await?.map(read_stored).transpose()
    }

    /// Whether loads take a Redis lock first.
    pub(super) fn locks_loads(&self) -> bool {
        self.load_locks.is_some()
    }

    /// Takes the load lock of `key`, waiting up to `cache.distributedLoad.wait` for another
    /// instance's load. `None` when that wait ran out or Redis failed: the caller loads
    /// anyway (the lock only saves work, it does not make anything correct).
    pub(super) async fn lock_load(&self, namespace: &str, key: &str) -> Option<Lease> {
        let (locks, ttl, wait) = self.load_locks.as_ref()?;
        let digest = sha2::Sha256::digest(format!("{namespace}:{key}").as_bytes());
        let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        match locks.acquire(&name, *ttl, *wait).await {
            Ok(lease) => Some(lease),
            Err(error) => {
                metrics::counter!("blinkchamber_cache_load_lock_skipped_total").increment(1);
                tracing::debug!(%error, "cache: loading without the load lock");
                None
            }
        }
    }

    /// Releases a lock from [`RedisLevel::lock_load`] (expiry covers a failed release).
    pub(super) async fn unlock_load(&self, lease: Lease) {
        if let Some((locks, ..)) = &self.load_locks
            && let Err(error) = locks.release(&lease.name, &lease.token).await
        {
            tracing::debug!(%error, "cache: load lock not released; it expires on its own");
        }
    }

    /// `{prefix}~tags:{namespace}:{tag}`: the keys set with `tag` (namespaces cannot
    /// contain `~`, so no namespace's keys can collide with it).
    fn tag_key(&self, namespace: &str, tag: &str) -> String {
        format!("{}~tags:{namespace}:{tag}", self.prefix)
    }

    /// `SET … PX`, the tag sets and the eviction notice, in one round trip.
    pub(super) async fn set(
        &self,
        namespace: &str,
        key: &str,
        json: &[u8],
        ttl: Duration,
        tags: &[&str],
    ) -> Result<(), CacheError> {
        let pipe = self.set_pipe(namespace, key, json, ttl, tags, false);
        self.breaker.call(self.send(pipe)).await
    }

    /// A loader's result: `SET … NX GET PX`, so a value set meanwhile by anyone else wins.
    /// Returns that value when there was one (then nothing was written).
    pub(super) async fn set_loaded(
        &self,
        namespace: &str,
        key: &str,
        json: &[u8],
        ttl: Duration,
    ) -> Result<Option<Stored>, CacheError> {
        let pipe = self.set_pipe(namespace, key, json, ttl, &[], true);
        let set = async {
            let (existing,): (Option<Vec<u8>>,) =
                self.backend.pipeline(Retry::Idempotent, &pipe).await?;
            Ok(existing)
        };
        self.breaker.call(set).await?.map(read_stored).transpose()
    }

    fn set_pipe(
        &self,
        namespace: &str,
        key: &str,
        json: &[u8],
        ttl: Duration,
        tags: &[&str],
        if_absent: bool,
    ) -> redis::Pipeline {
        let expires_at = unix_micros() / 1000 + px(ttl);
        let stored = frame::encode(&wrap(json, expires_at), &self.compression);
        let mut pipe = redis::pipe();
        let set = pipe.cmd("SET").arg(self.key(namespace, key)).arg(stored);
        if if_absent {
            set.arg("NX").arg("GET");
        }
        set.arg("PX").arg(px(ttl));
        if !if_absent {
            set.ignore();
        }
        for tag in tags {
            // The set lives as long as its longest-lived member.
            let tag_key = self.tag_key(namespace, tag);
            pipe.cmd("SADD").arg(&tag_key).arg(key).ignore();
            pipe.cmd("PEXPIRE")
                .arg(&tag_key)
                .arg(px(ttl))
                .arg("NX")
                .ignore();
            pipe.cmd("PEXPIRE")
                .arg(&tag_key)
                .arg(px(ttl))
                .arg("GT")
                .ignore();
        }
        self.notify(&mut pipe, 'k', &format!("{namespace}:{key}"));
        pipe
    }

    /// Removes the keys of a tag set (and the set), and tells the other instances; returns
    /// the keys that were tagged.
    pub(super) async fn remove_by_tag(
        &self,
        namespace: &str,
        tag: &str,
    ) -> Result<Vec<String>, CacheError> {
        let tag_key = self.tag_key(namespace, tag);
        // Read and drop the set in one transaction, so a key tagged meanwhile is either in
        // this removal or in the next set.
        let take = async {
            let mut take = redis::pipe();
            take.atomic()
                .cmd("SMEMBERS")
                .arg(&tag_key)
                .cmd("UNLINK")
                .arg(&tag_key)
                .ignore();
            let (keys,): (Vec<String>,) = self.backend.pipeline(Retry::Idempotent, &take).await?;
            Ok(keys)
        };
        let keys = self.breaker.call(take).await?;
        if keys.is_empty() {
            return Ok(keys);
        }
        let mut pipe = redis::pipe();
        for chunk in keys.chunks(CLEAR_BATCH) {
            let full: Vec<String> = chunk.iter().map(|k| self.key(namespace, k)).collect();
            pipe.cmd("UNLINK").arg(full).ignore();
        }
        for key in &keys {
            self.notify(&mut pipe, 'k', &format!("{namespace}:{key}"));
        }
        self.send(pipe).await?;
        Ok(keys)
    }

    async fn send(&self, pipe: redis::Pipeline) -> Result<(), CacheError> {
        self.backend
            .pipeline::<()>(Retry::Idempotent, &pipe)
            .await?;
        Ok(())
    }

    pub(super) async fn remove(&self, namespace: &str, key: &str) -> Result<(), CacheError> {
        let mut pipe = redis::pipe();
        pipe.cmd("UNLINK").arg(self.key(namespace, key)).ignore();
        self.notify(&mut pipe, 'k', &format!("{namespace}:{key}"));
        self.breaker.call(self.send(pipe)).await
    }

    /// `SCAN` + `UNLINK` over the namespace; returns how many keys went.
    pub(super) async fn clear(&self, namespace: &str) -> Result<u64, CacheError> {
        let pattern = format!("{}{namespace}:*", glob_escape(&self.prefix));
        let mut cursor = 0u64;
        let mut removed = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .backend
                .query(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(CLEAR_BATCH),
                )
                .await?;
            if !keys.is_empty() {
                let n: u64 = self.backend.query(redis::cmd("UNLINK").arg(&keys)).await?;
                removed += n;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut pipe = redis::pipe();
        self.notify(&mut pipe, 'n', namespace);
        self.send(pipe).await?;
        Ok(removed)
    }

    fn notify(&self, pipe: &mut redis::Pipeline, kind: char, what: &str) {
        if let Some(channel) = &self.channel {
            pipe.cmd("PUBLISH")
                .arg(channel)
                .arg(format!("{} {} {kind} {what}", self.instance, unix_micros()))
                .ignore();
            metrics::counter!("blinkchamber_cache_backplane_sent_total").increment(1);
        }
    }
}

async fn listen(
    mut subscription: crate::backend::redis::Subscription,
    l1: L1,
    evictions: Arc<AtomicU64>,
    instance: String,
    subscribed: watch::Sender<bool>,
) {
    while let Some(event) = subscription.recv().await {
        match event {
            SubscriptionEvent::Subscribed(reconnects) => {
                // Evictions may have been published while we were not subscribed (also before
                // the first subscription: the cache may already have been used).
                evictions.fetch_add(1, Ordering::SeqCst);
                l1.invalidate_all();
                if reconnects > 0 {
                    metrics::counter!("blinkchamber_cache_backplane_flushes_total").increment(1);
                }
                subscribed.send_replace(true);
            }
            SubscriptionEvent::Message { payload, .. } => {
                let text = String::from_utf8_lossy(&payload);
                let mut parts = text.splitn(4, ' ');
                let (Some(from), Some(sent), Some(kind), Some(what)) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                if from == instance {
                    continue;
                }
                metrics::counter!("blinkchamber_cache_backplane_received_total").increment(1);
                // Across hosts this includes clock skew; on one host it is the lag itself.
                if let Ok(sent) = sent.parse::<u64>() {
                    let lag = unix_micros().saturating_sub(sent) as f64 / 1e6;
                    metrics::histogram!("blinkchamber_cache_invalidation_lag_seconds").record(lag);
                }
                match kind {
                    // Counted and removed in one step for the key (see keep_if_unchanged).
                    "k" => {
                        let evictions = &evictions;
                        l1.entry(what.to_owned())
                            .and_compute_with(|_| async move {
                                evictions.fetch_add(1, Ordering::SeqCst);
                                moka::ops::compute::Op::Remove
                            })
                            .await;
                    }
                    "n" => {
                        evictions.fetch_add(1, Ordering::SeqCst);
                        evict_namespace(&l1, what);
                    }
                    _ => {}
                }
            }
        }
    }
}

/// `{"expiresAt":<ms>,"value":<json>}`.
fn wrap(json: &[u8], expires_at_ms: u64) -> Vec<u8> {
    let at = expires_at_ms.to_string();
    let mut out = Vec::with_capacity(HEAD.len() + at.len() + VALUE.len() + json.len() + 1);
    out.extend_from_slice(HEAD);
    out.extend_from_slice(at.as_bytes());
    out.extend_from_slice(VALUE);
    out.extend_from_slice(json);
    out.push(b'}');
    out
}

/// The value's JSON and its expiry in Unix milliseconds, if `stored` is wrapped.
fn unwrap(stored: &[u8]) -> Option<(&[u8], u64)> {
    let rest = stored.strip_prefix(HEAD)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let at = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let json = rest[digits..].strip_prefix(VALUE)?.strip_suffix(b"}")?;
    Some((json, at))
}

/// Bytes from Redis → JSON and time left (`Duration::MAX` when the expiry is unknown).
fn read_stored(bytes: Vec<u8>) -> Result<Stored, CacheError> {
    let plain = frame::decode(bytes)?;
    Ok(match unwrap(&plain) {
        Some((json, at)) => {
            let left = at.saturating_sub(unix_micros() / 1000);
            (json.into(), Duration::from_millis(left))
        }
        None => (plain.into(), Duration::MAX),
    })
}

/// `text` with the glob characters of `SCAN MATCH` escaped.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Wall-clock microseconds since the Unix epoch (0 if the clock is before it).
fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_carry_their_expiry() {
        let stored = wrap(br#"{"a":[1,2]}"#, 1_700_000_000_123);
        assert_eq!(
            stored,
            br#"{"expiresAt":1700000000123,"value":{"a":[1,2]}}"#.to_vec()
        );
        assert_eq!(
            unwrap(&stored),
            Some((br#"{"a":[1,2]}"#.as_slice(), 1_700_000_000_123))
        );
        assert_eq!(unwrap(br#"{"a":1}"#), None);
        assert_eq!(unwrap(br#"{"expiresAt":x,"value":1}"#), None);
        let (json, left) = read_stored(br#"[1]"#.to_vec()).unwrap();
        assert_eq!((&*json, left), (b"[1]".as_slice(), Duration::MAX));
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("app_*[x]?\\"), "app_\\*\\[x\\]\\?\\\\");
    }
}
