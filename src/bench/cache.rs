//! Cache rows: L1 hits, L2 hits, and how soon another instance sees a write.

use std::time::Duration;

use serde_json::json;

use super::{Raw, RawBaselines, Row, measure};
use crate::backend::RedisBackend;
use crate::cache::{Cache, SetOptions};
use crate::config::CacheConfig;

/// Keys the hit rows spread over.
pub const KEYS: u64 = 1000;

/// L1 hits (`get_json`, no deserialisation), L2 hits (an L1 that keeps nothing, so every
/// read goes to Redis), and invalidation seen by a second instance.
pub async fn cache_rows(
    backend: RedisBackend,
    raw: &Raw,
    concurrency: usize,
    duration: Duration,
    prefix: &str,
) -> Vec<Row> {
    let cfg = CacheConfig {
        key_prefix: format!("{prefix}cache:"),
        ..CacheConfig::default()
    };
    let value = json!({"id": "user-1", "name": "x".repeat(180)});
    let cache = Cache::redis(&cfg, backend.clone());
    cache.ready().await;
    for i in 0..KEYS {
        let _ = cache
            .set("bench", &format!("k{i}"), &value, SetOptions::default())
            .await;
    }
    let mut rows = Vec::new();

    rows.extend(
        get_row(
            "cache get, L1 hit",
            cache.clone(),
            raw,
            concurrency,
            duration,
        )
        .await,
    );
    let no_l1 = CacheConfig {
        l1: crate::config::L1Config {
            max_entries: 0,
            ..cfg.l1.clone()
        },
        backplane: false,
        ..cfg.clone()
    };
    let l2 = Cache::redis(&no_l1, backend.clone());
    rows.extend(get_row("cache get, L2 hit", l2, raw, concurrency, duration).await);

    // One writer, one reader instance: write, then read on the other until the new value
    // shows (its L1 copy was evicted by the backplane).
    let reader = Cache::redis(&cfg, backend);
    reader.ready().await;
    let writer = cache;
    rows.push(
        measure(
            "cache write seen by another instance",
            1,
            duration,
            move |_, seq| {
                let (writer, reader) = (writer.clone(), reader.clone());
                async move {
                    let _ = reader.get_json("bench", "shared").await;
                    let _ = writer
                        .set("bench", "shared", &seq, SetOptions::default())
                        .await;
                    while reader.get::<u64>("bench", "shared").await.ok().flatten() != Some(seq) {
                        tokio::task::yield_now().await;
                    }
                }
            },
        )
        .await,
    );
    rows
}

/// `get_json` of the preloaded keys, spread over [`KEYS`], against raw `GET`.
async fn get_row(
    name: &str,
    cache: Cache,
    raw: &Raw,
    concurrency: usize,
    duration: Duration,
) -> Vec<Row> {
    // Names made once: the row measures the cache, not `format!`.
    let keys: std::sync::Arc<[String]> = (0..KEYS).map(|i| format!("k{i}")).collect();
    raw.against(
        RawBaselines::GET,
        name,
        concurrency,
        duration,
        move |task, seq| {
            let (cache, keys) = (cache.clone(), keys.clone());
            async move {
                let key = &keys[((task as u64 * 7919 + seq) % KEYS) as usize];
                let _ = cache.get_json("bench", key).await;
            }
        },
    )
    .await
}
