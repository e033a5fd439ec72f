//! L2 in Redis, and the backplane that keeps other instances' L1 honest.
//!
//! Values: `{keyPrefix}{namespace}:{key}`, stored as [`super::frame`] encodes them, with
//! `PX` set to the TTL. Backplane: channel `{keyPrefix}backplane`, messages
//! `{instance} {sent µs} k {namespace}:{key}` (evict a key) and
//! `{instance} {sent µs} n {namespace}` (evict a namespace). An instance ignores its own messages; after a reconnect it flushes its
//! whole L1, since messages may have been missed meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::breaker::Breaker;
use super::{CacheError, L1, evict_namespace, frame};
use crate::backend::redis::SubscriptionEvent;
use crate::backend::redis::px;
use crate::backend::{RedisBackend, Retry};
use crate::config::{CacheConfig, CompressionConfig};

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
        }
    }

    pub(super) async fn subscribed(&self) {
        let mut rx = self.subscribed.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    fn key(&self, namespace: &str, key: &str) -> String {
        format!("{}{namespace}:{key}", self.prefix)
    }

    /// Whether Redis is being skipped after repeated failures.
    pub(super) fn circuit_open(&self) -> bool {
        self.breaker.is_open()
    }

    /// The stored JSON and how long Redis keeps it (`GET` and `PTTL` in one round trip),
    /// so another instance's L1 never keeps a value longer than Redis does.
    pub(super) async fn get(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<Option<(Vec<u8>, Duration)>, CacheError> {
        let full = self.key(namespace, key);
        let get = async {
            let mut pipe = redis::pipe();
            pipe.cmd("GET").arg(&full).cmd("PTTL").arg(&full);
            let (stored, pttl): (Option<Vec<u8>>, i64) = self
                .backend
                .run(Retry::Idempotent, |mut c| {
                    let pipe = pipe.clone();
                    async move { pipe.query_async(&mut c).await }
                })
                .await?;
            Ok((stored, pttl))
        };
        let (stored, pttl) = self.breaker.call(get).await?;
        Ok(match stored {
            // -1: no expiry (written by something else); -2: expired between the two.
            Some(bytes) if pttl != -2 => {
                let left = u64::try_from(pttl).map_or(Duration::MAX, Duration::from_millis);
                Some((frame::decode(bytes)?, left))
            }
            _ => None,
        })
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
        let stored = frame::encode(json, &self.compression);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.key(namespace, key))
            .arg(stored)
            .arg("PX")
            .arg(px(ttl))
            .ignore();
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
        self.breaker.call(self.send(pipe)).await
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
            let (keys,): (Vec<String>,) = self
                .backend
                .run(Retry::Idempotent, |mut c| {
                    let take = take.clone();
                    async move { take.query_async(&mut c).await }
                })
                .await?;
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
            .run(Retry::Idempotent, |mut c| {
                let pipe = pipe.clone();
                async move { pipe.query_async::<()>(&mut c).await }
            })
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
