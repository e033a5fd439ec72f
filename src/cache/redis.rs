//! L2 in Redis, and the backplane that keeps other instances' L1 honest.
//!
//! Keys under `{keyPrefix}` (`cache.keyPrefix`):
//! - `{namespace}:{key}`: the value, or a tombstone for a while after a removal, as laid
//!   out in [`super::stored`], with `PX` set to the TTL;
//! - `~version`: the last version handed out (every write, removal and clear takes a new
//!   one: Redis's clock in microseconds, or one more than the last when the clock is
//!   behind it);
//! - `~tagged:{namespace}:{tag}`: sorted set of the keys stored with the tag, scored by
//!   their expiry, and `~keytags:{namespace}:{key}`: the tags a key is stored with, so a
//!   re-set without a tag or a removal leaves the tag's set and expired members are
//!   dropped: the sets hold live keys only;
//! - `~untagged:{namespace}:{tag}` and `~cleared:{namespace}`: the version of the last
//!   removal by tag and namespace clear, for as long as a load can run;
//! - `~load:` + SHA-256 of `{namespace}:{key}`: the lock of `cache.distributedLoad` (see
//!   [`crate::lock`]).
//!
//! Writes, removals and their notices are scripts (`lua/`), one round trip each. Backplane:
//! channel `{keyPrefix}backplane`, messages `{instance} {sent µs} k {version}
//! {namespace}:{key}` (a write), `… d {version} {namespace}:{key}` (a removal) and `… n
//! {version} {namespace}` (a namespace clear). Every instance applies every notice, its own
//! included, by version (see [`super::coherence`]); after a (re)subscription it flushes its
//! whole L1, since notices may have been missed meanwhile.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use sha2::Digest;
use tokio::sync::watch;

use super::breaker::Breaker;
use super::coherence::Coherence;
use super::stored::{self, Read};
use super::{CacheError, FrameError};
use crate::backend::redis::SubscriptionEvent;
use crate::backend::redis::batch::GetBatcher;
use crate::backend::redis::px;
use crate::backend::{RedisBackend, Retry};
use crate::config::{CacheConfig, CompressionConfig, LocksConfig};
use crate::lock::{Lease, Locks};

/// Keys removed per script call or `UNLINK` while removing by tag or clearing a namespace.
const BATCH: usize = 500;

/// Calls of one script, each adding the keys the previous one said it needed (by tag: the
/// members' keys, then the tag sets their lists name; more if the set changes meanwhile).
const DECLARE_ROUNDS: usize = 5;

/// The keys of a `{'need', key...}` answer.
fn needed_keys(reply: &redis::Value) -> Option<Vec<String>> {
    let redis::Value::Array(items) = reply else {
        return None;
    };
    match items.first() {
        Some(redis::Value::BulkString(first)) if first == b"need" => Some(
            items[1..]
                .iter()
                .filter_map(|v| match v {
                    redis::Value::BulkString(k) => Some(String::from_utf8_lossy(k).into_owned()),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
}

/// A script with `lua/common.lua` in front.
fn script(body: &str) -> Script {
    Script::new(&format!("{}\n{body}", include_str!("lua/common.lua")))
}

struct Scripts {
    set: Script,
    remove: Script,
    mark: Script,
    drop_corrupt: Script,
    unlink_counting: Script,
}

/// How a loader's guarded write ended.
pub(super) enum LoadWrite {
    /// Stored at this version.
    Stored(u64),
    /// A write or removal since the load read Redis won: what is stored now (`None` when
    /// a removal by tag or a clear did).
    Lost(Option<Read>),
}

pub(super) struct RedisLevel {
    backend: RedisBackend,
    /// Concurrent reads share `MGET`s (through `backend`, so within `l2Timeout`).
    reads: GetBatcher,
    prefix: String,
    compression: CompressionConfig,
    max_value: usize,
    /// How long tombstones and markers stay: longer than a load may run.
    tombstone_ttl: Duration,
    /// `None` with the backplane off.
    channel: Option<String>,
    instance: String,
    listener: Option<tokio::task::JoinHandle<()>>,
    subscribed: watch::Receiver<bool>,
    breaker: Breaker,
    scripts: Scripts,
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
    /// The backplane listener applies notices to `coherence`.
    pub(super) fn new(
        cfg: &CacheConfig,
        backend: RedisBackend,
        coherence: Arc<Coherence>,
        tombstone_ttl: Duration,
    ) -> Self {
        let instance = crate::ids::random_hex64();
        let backend_for_locks = backend.clone();
        let (subscribed_tx, subscribed) = watch::channel(!cfg.backplane);
        let (channel, listener) = if cfg.backplane {
            let channel = format!("{}backplane", cfg.key_prefix);
            let subscription = backend.subscribe(vec![channel.clone()]);
            let listener = tokio::spawn(listen(
                subscription,
                coherence,
                instance.clone(),
                subscribed_tx,
            ));
            (Some(channel), Some(listener))
        } else {
            (None, None)
        };
        // Every Redis call of the cache ends by `l2Timeout`: the backend's own deadline (one
        // timer per call), which the breaker counts like any failure.
        let backend = backend.bounded(cfg.l2_timeout);
        Self {
            reads: GetBatcher::new(backend.clone()),
            backend,
            prefix: cfg.key_prefix.clone(),
            compression: cfg.compression.clone(),
            max_value: cfg.max_value_bytes,
            tombstone_ttl,
            channel,
            instance,
            listener,
            subscribed,
            breaker: Breaker::new(cfg),
            scripts: Scripts {
                set: script(include_str!("lua/set.lua")),
                remove: script(include_str!("lua/remove.lua")),
                mark: script(include_str!("lua/mark.lua")),
                drop_corrupt: Script::new(include_str!("lua/drop_corrupt.lua")),
                unlink_counting: Script::new(include_str!("lua/unlink_counting.lua")),
            },
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
        super::join(&[&self.prefix, namespace, ":", key])
    }

    fn version_key(&self) -> String {
        format!("{}~version", self.prefix)
    }

    /// Whether Redis is being skipped after repeated failures.
    pub(super) fn circuit_open(&self) -> bool {
        self.breaker.is_open()
    }

    /// The stored value or tombstone, as a `GET` answers it (concurrent reads share an
    /// `MGET`, which answers a key of another type as absent). A value that cannot be read
    /// (corrupt, or over `cache.maxValueBytes`) is deleted, counted, and reads as absent.
    /// `full` is the Redis key, `{keyPrefix}{namespace}:{key}`.
    pub(super) async fn get_key(&self, full: &str) -> Result<Option<Read>, CacheError> {
        let admitted = self.breaker.start()?;
        let stored = self.reads.get(full.to_owned()).await;
        match admitted.finish(stored.map_err(CacheError::from))? {
            Some(bytes) => Ok(self.decode(full, bytes).await),
            None => Ok(None),
        }
    }

    /// As [`RedisLevel::get`], with the last version handed out (the guard of a loader's
    /// write), in one round trip.
    pub(super) async fn get_for_load(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<(Option<Read>, u64), CacheError> {
        let full = self.key(namespace, key);
        let mut pipe = redis::pipe();
        pipe.cmd("GET")
            .arg(&full)
            .cmd("GET")
            .arg(self.version_key());
        let admitted = self.breaker.start()?;
        let found = self.backend.pipeline(Retry::Idempotent, &pipe).await;
        let (stored, last): (Option<Vec<u8>>, Option<u64>) =
            admitted.finish(found.map_err(CacheError::from))?;
        let read = match stored {
            Some(bytes) => self.decode(&full, bytes).await,
            None => None,
        };
        let since = last
            .unwrap_or(0)
            .max(read.as_ref().map_or(0, |r| r.version));
        Ok((read, since))
    }

    async fn decode(&self, full: &str, bytes: Vec<u8>) -> Option<Read> {
        let now = unix_micros() / 1000;
        match stored::read(&bytes, now, self.max_value) {
            Ok(read) => Some(read),
            Err(error) => {
                Box::pin(self.drop_corrupt(full, &bytes, &error)).await;
                None
            }
        }
    }

    async fn drop_corrupt(&self, full: &str, bytes: &[u8], error: &FrameError) {
        metrics::counter!("blinkchamber_cache_corrupt_values_total").increment(1);
        tracing::warn!(key = full, %error, "cache: deleting a stored value that cannot be read");
        let drop = async {
            let mut call = self.scripts.drop_corrupt.prepare_invoke();
            call.key(full).arg(bytes);
            let _: i64 = self
                .backend
                .run(Retry::Idempotent, |mut c| {
                    let call = &call;
                    async move { call.invoke_async(&mut c).await }
                })
                .await?;
            Ok(())
        };
        if let Err(error) = self.breaker.call(drop).await {
            tracing::debug!(%error, "cache: the unreadable value stays until it expires");
        }
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

    fn tag_set_prefix(&self, namespace: &str) -> String {
        format!("{}~tagged:{namespace}:", self.prefix)
    }

    fn tag_marker(&self, namespace: &str, tag: &str) -> String {
        format!("{}~untagged:{namespace}:{tag}", self.prefix)
    }

    fn clear_marker(&self, namespace: &str) -> String {
        format!("{}~cleared:{namespace}", self.prefix)
    }

    fn notice_head(&self) -> String {
        format!("{} {}", self.instance, unix_micros())
    }

    /// Stores a value under a new version with its tags, and publishes the notice; returns
    /// the version.
    pub(super) async fn set(
        &self,
        namespace: &str,
        key: &str,
        json: &[u8],
        ttl: Duration,
        tags: &[&str],
    ) -> Result<u64, CacheError> {
        match self.write(namespace, key, json, ttl, tags, None).await? {
            LoadWrite::Stored(version) => Ok(version),
            LoadWrite::Lost(_) => unreachable!("an unguarded write always stores"),
        }
    }

    /// Stores a value unless something happened to the key (a write or removal), its
    /// namespace (a clear) or one of `tags` (a removal by tag) after version `since`.
    pub(super) async fn set_guarded(
        &self,
        namespace: &str,
        key: &str,
        json: &[u8],
        ttl: Duration,
        tags: &[&str],
        since: u64,
    ) -> Result<LoadWrite, CacheError> {
        self.write(namespace, key, json, ttl, tags, Some(since))
            .await
    }

    async fn write(
        &self,
        namespace: &str,
        key: &str,
        json: &[u8],
        ttl: Duration,
        tags: &[&str],
        since: Option<u64>,
    ) -> Result<LoadWrite, CacheError> {
        let expires_at = unix_micros() / 1000 + px(ttl);
        let (head, tail) = stored::parts(json, expires_at, &self.compression);
        let mut call = self.scripts.set.prepare_invoke();
        call.key(self.key(namespace, key))
            .key(self.version_key())
            .key(format!("{}~keytags:{namespace}:{key}", self.prefix))
            .key(self.clear_marker(namespace));
        for tag in tags {
            call.key(self.tag_marker(namespace, tag));
        }
        for tag in tags {
            call.key(format!("{}{tag}", self.tag_set_prefix(namespace)));
        }
        call.arg(head)
            .arg(tail)
            .arg(px(ttl))
            .arg(self.tag_set_prefix(namespace))
            .arg(since.map(|v| v.to_string()).unwrap_or_default())
            .arg(self.channel.as_deref().unwrap_or(""))
            .arg(self.notice_head())
            .arg(key)
            .arg(format!("{namespace}:{key}"));
        for tag in tags {
            call.arg(*tag);
        }
        if self.channel.is_some() {
            metrics::counter!("blinkchamber_cache_backplane_sent_total").increment(1);
        }
        let reply: (u64, Option<Vec<u8>>) = self.run_declaring(&mut call).await?;
        match reply {
            (0, Some(current)) => {
                let full = self.key(namespace, key);
                Ok(LoadWrite::Lost(self.decode(&full, current).await))
            }
            (0, None) => Ok(LoadWrite::Lost(None)),
            (version, _) => Ok(LoadWrite::Stored(version)),
        }
    }

    /// Runs a cache script under the breaker; while it answers `need` (keys it found
    /// through data and was not given: it wrote nothing), adds them and runs it again, up
    /// to [`DECLARE_ROUNDS`] times.
    async fn run_declaring<T: redis::FromRedisValue>(
        &self,
        call: &mut redis::ScriptInvocation<'_>,
    ) -> Result<T, CacheError> {
        for _ in 0..DECLARE_ROUNDS {
            let reply = {
                let call = &*call;
                let run = async {
                    let reply: redis::Value = self
                        .backend
                        .run(Retry::Idempotent, |mut c| async move {
                            call.invoke_async(&mut c).await
                        })
                        .await?;
                    Ok(reply)
                };
                self.breaker.call(run).await?
            };
            match needed_keys(&reply) {
                Some(keys) => {
                    for key in keys {
                        call.key(key);
                    }
                }
                None => {
                    return redis::from_redis_value(reply).map_err(|e| {
                        crate::backend::BackendError::MaybeRan(format!(
                            "cache: unexpected script answer: {e}"
                        ))
                        .into()
                    });
                }
            }
        }
        Err(crate::backend::BackendError::Unavailable(
            "cache: the tagged keys kept changing while a script gathered them; try again".into(),
        )
        .into())
    }

    /// Removes `keys` of `namespace` (tombstones), and tells every instance; returns the
    /// version of the removal.
    pub(super) async fn remove(&self, namespace: &str, keys: &[&str]) -> Result<u64, CacheError> {
        let (version, _) = self.run_remove(namespace, None, keys).await?;
        Ok(version)
    }

    /// Removes the keys stored with `tag`, a batch per script call, and tells every
    /// instance; returns each removed key with the version of its removal.
    pub(super) async fn remove_by_tag(
        &self,
        namespace: &str,
        tag: &str,
    ) -> Result<Vec<(String, u64)>, CacheError> {
        let mut removed = Vec::new();
        loop {
            let (version, keys) = self.run_remove(namespace, Some(tag), &[]).await?;
            let done = keys.len() < BATCH;
            removed.extend(keys.into_iter().map(|k| (k, version)));
            if done {
                return Ok(removed);
            }
        }
    }

    async fn run_remove(
        &self,
        namespace: &str,
        tag: Option<&str>,
        keys: &[&str],
    ) -> Result<(u64, Vec<String>), CacheError> {
        let mut call = self.scripts.remove.prepare_invoke();
        call.key(self.version_key());
        if let Some(tag) = tag {
            call.key(format!("{}{tag}", self.tag_set_prefix(namespace)))
                .key(self.tag_marker(namespace, tag));
        }
        call.arg(px(self.tombstone_ttl))
            .arg(format!("{}{namespace}:", self.prefix))
            .arg(format!("{}~keytags:{namespace}:", self.prefix))
            .arg(self.tag_set_prefix(namespace))
            .arg(self.channel.as_deref().unwrap_or(""))
            .arg(self.notice_head())
            .arg(namespace);
        if tag.is_some() {
            call.arg("tag").arg(BATCH);
        } else {
            call.arg("keys");
            for key in keys {
                call.arg(*key)
                    .key(self.key(namespace, key))
                    .key(format!("{}~keytags:{namespace}:{key}", self.prefix));
            }
        }
        let (version, removed): (u64, Vec<String>) = self.run_declaring(&mut call).await?;
        if self.channel.is_some() {
            metrics::counter!("blinkchamber_cache_backplane_sent_total")
                .increment(removed.len().max(keys.len()) as u64);
        }
        Ok((version, removed))
    }

    /// Removes every key of `namespace` (values, tombstones, tag sets and lists) with
    /// `SCAN` + `UNLINK`, each step under the breaker and `cache.l2Timeout`, and tells every
    /// instance; returns how many live values went (tombstones, tag sets and tag lists go
    /// too, uncounted). The clear marker is set first,
    /// so a load that read before the clear cannot store its value afterwards.
    pub(super) async fn clear(&self, namespace: &str) -> Result<u64, CacheError> {
        let mark = async {
            let mut call = self.scripts.mark.prepare_invoke();
            call.key(self.clear_marker(namespace))
                .key(self.version_key())
                .arg(px(self.tombstone_ttl));
            let version: u64 = self
                .backend
                .run(Retry::Idempotent, |mut c| {
                    let call = &call;
                    async move { call.invoke_async(&mut c).await }
                })
                .await?;
            Ok(version)
        };
        let version = self.breaker.call(mark).await?;
        let values = format!("{}{namespace}:", self.prefix);
        let owned = [
            values.clone(),
            self.tag_set_prefix(namespace),
            format!("{}~keytags:{namespace}:", self.prefix),
        ];
        let pattern = format!("{}*", glob_escape(&self.prefix));
        let mut cursor = 0u64;
        let mut removed = 0u64;
        loop {
            let step = async {
                let (next, keys): (u64, Vec<String>) = self
                    .backend
                    .query(
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern)
                            .arg("COUNT")
                            .arg(BATCH),
                    )
                    .await?;
                let keys: Vec<String> = keys
                    .into_iter()
                    .filter(|k| owned.iter().any(|p| k.starts_with(p.as_str())))
                    .collect();
                if keys.is_empty() {
                    return Ok((next, 0));
                }
                let mut call = self.scripts.unlink_counting.prepare_invoke();
                for key in &keys {
                    call.key(key);
                }
                call.arg(&values);
                // Unlinking again after a lost reply changes nothing (the count may be low).
                let live: u64 = self
                    .backend
                    .run(Retry::Idempotent, |mut c| {
                        let call = &call;
                        async move { call.invoke_async(&mut c).await }
                    })
                    .await?;
                Ok((next, live))
            };
            let (next, n) = self.breaker.call(step).await?;
            removed += n;
            if next == 0 {
                break;
            }
            cursor = next;
        }
        if let Some(channel) = &self.channel {
            let publish = async {
                let _: i64 = self
                    .backend
                    .query(
                        redis::cmd("PUBLISH")
                            .arg(channel)
                            .arg(format!("{} n {version} {namespace}", self.notice_head())),
                    )
                    .await?;
                Ok(())
            };
            self.breaker.call(publish).await?;
            metrics::counter!("blinkchamber_cache_backplane_sent_total").increment(1);
        }
        Ok(removed)
    }
}

async fn listen(
    mut subscription: crate::backend::redis::Subscription,
    coherence: Arc<Coherence>,
    instance: String,
    subscribed: watch::Sender<bool>,
) {
    while let Some(event) = subscription.recv().await {
        match event {
            SubscriptionEvent::Interrupted => {
                // From now on notices may be missed: L1 is not served or filled until the
                // backplane is subscribed again (its entries stay as fail-safe copies).
                coherence.interrupt();
                subscribed.send_replace(false);
                metrics::counter!("blinkchamber_cache_backplane_interruptions_total").increment(1);
            }
            SubscriptionEvent::Subscribed(reconnects) => {
                // Notices may have been published while we were not subscribed (also before
                // the first subscription: the cache may already have been used).
                coherence.evict_bulk(None);
                coherence.resume();
                if reconnects > 0 {
                    metrics::counter!("blinkchamber_cache_backplane_flushes_total").increment(1);
                }
                subscribed.send_replace(true);
            }
            SubscriptionEvent::Message { payload, .. } => {
                let text = String::from_utf8_lossy(&payload);
                let mut parts = text.splitn(5, ' ');
                let (Some(from), Some(sent), Some(kind), Some(version), Some(what)) = (
                    parts.next(),
                    parts.next(),
                    parts.next(),
                    parts.next(),
                    parts.next(),
                ) else {
                    continue;
                };
                let Ok(version) = version.parse::<u64>() else {
                    continue;
                };
                if from != instance {
                    metrics::counter!("blinkchamber_cache_backplane_received_total").increment(1);
                    // Across hosts this includes clock skew; on one host it is the lag itself.
                    if let Ok(sent) = sent.parse::<u64>() {
                        let lag = unix_micros().saturating_sub(sent) as f64 / 1e6;
                        metrics::histogram!("blinkchamber_cache_invalidation_lag_seconds")
                            .record(lag);
                    }
                }
                // Own notices too: a write whose reply was lost is applied by its notice.
                match kind {
                    "k" => coherence.evict(what, version, false).await,
                    "d" => coherence.evict(what, version, true).await,
                    "n" => coherence.evict_bulk(Some(what)),
                    _ => {}
                }
            }
        }
    }
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
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("app_*[x]?\\"), "app_\\*\\[x\\]\\?\\\\");
    }
}
