//! The cache's coherence under concurrency, on real Redis with several instances: after
//! the writes complete and one backplane round trip, every instance answers what Redis
//! holds. The races are made to happen: writes to the same keys from two instances at
//! once, removals while a loader is held at a gate, removals by tag under a stream of
//! reads.

mod support;

use std::sync::Arc;
use std::time::Duration;

use blinkchamber::RedisBackend;
use blinkchamber::cache::{Cache, CacheError, SetOptions};
use blinkchamber::config::{CacheConfig, RedisConfig};
use futures_util::StreamExt;
use futures_util::future::join_all;
use serde_json::{Value, json};
use support::{RedisProc, wait_for_async};
use tokio::sync::Notify;

const PREFIX: &str = "coh:";

fn config() -> CacheConfig {
    CacheConfig {
        key_prefix: PREFIX.into(),
        // Deadlines are not what these tests are about; a loaded machine must not fail them.
        l2_timeout: Duration::from_secs(10),
        ..CacheConfig::default()
    }
}

async fn instance(redis: &RedisProc, cfg: &CacheConfig) -> Cache {
    let backend = RedisBackend::connect(RedisConfig::standalone("127.0.0.1", redis.port))
        .await
        .unwrap();
    let cache = Cache::redis(cfg, backend);
    cache.ready().await;
    cache
}

/// One backplane round trip: a write on each instance is seen by every other one. Notices
/// are delivered in order, so every notice published before has been applied then.
async fn round_trip(instances: &[&Cache]) {
    for (i, writer) in instances.iter().enumerate() {
        let stamp = format!("{i}-{}", rand_u64());
        writer
            .set("sync", "stamp", &stamp, SetOptions::default())
            .await
            .unwrap();
        for reader in instances {
            wait_for_async("the backplane round trip", || async {
                (reader.get::<String>("sync", "stamp").await.ok()?? == stamp).then_some(())
            })
            .await;
        }
    }
}

fn rand_u64() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// The value Redis holds for `key` of namespace `ns`, as the cache reads it with an empty
/// L1 (a fresh instance).
async fn in_redis(fresh: &Cache, ns: &str, key: &str) -> Option<Value> {
    fresh.get::<Value>(ns, key).await.unwrap()
}

/// Keys on which some instance disagrees with Redis.
async fn disagreements(
    instances: &[&Cache],
    fresh: &Cache,
    ns: &str,
    keys: &[String],
) -> Vec<String> {
    let mut wrong = Vec::new();
    for key in keys {
        let truth = in_redis(fresh, ns, key).await;
        for cache in instances {
            if cache.get::<Value>(ns, key).await.unwrap() != truth {
                wrong.push(format!("{key}: Redis {truth:?}"));
            }
        }
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_put_and_delete_on_two_instances_converge() {
    let redis = RedisProc::start();
    let cfg = config();
    let (a, b) = (instance(&redis, &cfg).await, instance(&redis, &cfg).await);
    let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    for round in 0..3 {
        // Both hold every key in L1 first, so a lost eviction would show.
        for key in &keys {
            a.set(
                "race",
                key,
                &json!({"round": round, "v": "old"}),
                SetOptions::default(),
            )
            .await
            .unwrap();
            b.get::<Value>("race", key).await.unwrap();
        }
        let ops = keys.iter().map(|key| {
            let (a, b) = (a.clone(), b.clone());
            let key = key.clone();
            async move {
                let value = json!({"round": round, "v": "new"});
                let put = a.set("race", &key, &value, SetOptions::default());
                let delete = b.remove("race", &key);
                let (put, delete) = tokio::join!(put, delete);
                put.unwrap();
                delete.unwrap();
                // Read right away on both, so reads race the notices too.
                let _ = tokio::join!(a.get::<Value>("race", &key), b.get::<Value>("race", &key));
            }
        });
        join_all(ops).await;
        round_trip(&[&a, &b]).await;
        let fresh = instance(&redis, &cfg).await;
        let wrong = disagreements(&[&a, &b], &fresh, "race", &keys).await;
        assert!(
            wrong.is_empty(),
            "round {round}: {} disagree: {wrong:?}",
            wrong.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_on_one_instance_and_another_converge() {
    let redis = RedisProc::start();
    let cfg = config();
    let (a, b) = (instance(&redis, &cfg).await, instance(&redis, &cfg).await);
    let keys: Vec<String> = (0..200).map(|i| format!("w{i}")).collect();
    let ops = keys.iter().map(|key| {
        let (a, b) = (a.clone(), b.clone());
        let key = key.clone();
        async move {
            // Two writes on one instance and one on the other, all at once.
            let (x, y, z) = tokio::join!(
                a.set("multi", &key, &"a1", SetOptions::default()),
                a.set("multi", &key, &"a2", SetOptions::default()),
                b.set("multi", &key, &"b1", SetOptions::default()),
            );
            x.unwrap();
            y.unwrap();
            z.unwrap();
        }
    });
    join_all(ops).await;
    round_trip(&[&a, &b]).await;
    let fresh = instance(&redis, &cfg).await;
    let wrong = disagreements(&[&a, &b], &fresh, "multi", &keys).await;
    assert!(wrong.is_empty(), "{} disagree: {wrong:?}", wrong.len());
}

/// A loader that says it started, then waits at `gate`, then returns `value`.
fn gated(
    started: Arc<Notify>,
    gate: Arc<Notify>,
    value: &'static str,
) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + Send>>
+ Send
+ 'static {
    move || {
        Box::pin(async move {
            started.notify_one();
            gate.notified().await;
            Ok(value.to_owned())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_during_a_load_keeps_the_loaded_value_out_of_every_cache() {
    let redis = RedisProc::start();
    let cfg = config();
    let (a, b) = (instance(&redis, &cfg).await, instance(&redis, &cfg).await);
    // "Update the database, then remove from the cache", while a load that read the old
    // row is still running: on the loading instance, then on another one.
    for remover in [&a, &b] {
        let (started, gate) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let load = tokio::spawn({
            let a = a.clone();
            let loader = gated(started.clone(), gate.clone(), "old row");
            async move {
                a.get_or_load::<String, _, _, _>("rows", "r1", None, loader)
                    .await
            }
        });
        // The load has read Redis (a miss) once its loader runs.
        started.notified().await;
        remover.remove("rows", "r1").await.unwrap();
        gate.notify_one();
        // The callers of the load get what the loader returned ...
        assert_eq!(load.await.unwrap().unwrap(), "old row");
        round_trip(&[&a, &b]).await;
        // ... but no cache keeps it: Redis holds the removal, every L1 agrees.
        let fresh = instance(&redis, &cfg).await;
        assert_eq!(in_redis(&fresh, "rows", "r1").await, None);
        assert_eq!(a.get::<String>("rows", "r1").await.unwrap(), None);
        assert_eq!(b.get::<String>("rows", "r1").await.unwrap(), None);
        // The next load, after the removal, is cached as usual.
        let next: String = a
            .get_or_load("rows", "r1", None, || async {
                Ok::<_, String>("new row".into())
            })
            .await
            .unwrap();
        assert_eq!(next, "new row");
        assert_eq!(in_redis(&fresh, "rows", "r1").await, Some(json!("new row")));
        a.remove("rows", "r1").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clear_or_tag_removal_during_a_load_keeps_its_value_out() {
    let redis = RedisProc::start();
    let cfg = config();
    let (a, b) = (instance(&redis, &cfg).await, instance(&redis, &cfg).await);
    for by_tag in [false, true] {
        // A computation (an introspection) starts, then another instance removes by tag or
        // clears the namespace, then the computation's result is offered to the cache.
        let mark = a.mark("tokens", "t1").await.unwrap();
        if by_tag {
            b.remove_by_tag("tokens", "sub-1").await.unwrap();
        } else {
            b.clear("tokens").await.unwrap();
        }
        let options = SetOptions {
            ttl: Some(Duration::from_secs(60)),
            tags: &["sub-1"],
            ..SetOptions::default()
        };
        let stored = a
            .set_json_if_unchanged(
                "tokens",
                "t1",
                br#"{"active":true}"#.to_vec(),
                options,
                mark,
            )
            .await
            .unwrap();
        assert!(!stored, "stored after a removal by tag={by_tag}");
        let fresh = instance(&redis, &cfg).await;
        assert_eq!(in_redis(&fresh, "tokens", "t1").await, None);
        // Without anything in between, it is stored.
        let mark = a.mark("tokens", "t1").await.unwrap();
        assert!(
            a.set_json_if_unchanged(
                "tokens",
                "t1",
                br#"{"active":true}"#.to_vec(),
                options,
                mark
            )
            .await
            .unwrap()
        );
        a.remove("tokens", "t1").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remove_by_tag_racing_reads_leaves_no_instance_with_a_removed_value() {
    let redis = RedisProc::start();
    let cfg = config();
    let (a, b) = (instance(&redis, &cfg).await, instance(&redis, &cfg).await);
    let keys: Vec<String> = (0..200).map(|i| format!("s{i}")).collect();
    for key in &keys {
        let options = SetOptions {
            tags: &["user-7"],
            ..SetOptions::default()
        };
        a.set("sessions", key, &"active", options).await.unwrap();
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .flat_map(|cache| {
            let keys = keys.clone();
            let stop = stop.clone();
            (0..2).map(move |r| {
                let (cache, keys, stop) = (cache.clone(), keys.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut i = r;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let _ = cache.get::<String>("sessions", &keys[i % keys.len()]).await;
                        i += 7;
                        tokio::task::yield_now().await;
                    }
                })
            })
        })
        .collect();
    let removed = a.remove_by_tag("sessions", "user-7").await.unwrap();
    assert_eq!(removed, keys.len() as u64);
    // The remover's own L1 agrees at once, while the reads go on.
    for key in &keys {
        assert_eq!(
            a.get::<String>("sessions", key).await.unwrap(),
            None,
            "{key}"
        );
    }
    round_trip(&[&a, &b]).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    let fresh = instance(&redis, &cfg).await;
    let wrong = disagreements(&[&a, &b], &fresh, "sessions", &keys).await;
    assert!(wrong.is_empty(), "{} disagree: {wrong:?}", wrong.len());
    // A second removal by the same tag finds nothing: the set held live keys only.
    assert_eq!(a.remove_by_tag("sessions", "user-7").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tag_sets_hold_only_live_tagged_keys_over_many_writes() {
    let redis = RedisProc::start();
    let cfg = config();
    let cache = instance(&redis, &cfg).await;
    let mut conn = redis.conn();
    let members = |conn: &mut ::redis::Connection, tag: &str| -> u64 {
        ::redis::cmd("ZCARD")
            .arg(format!("{PREFIX}~tagged:docs:{tag}"))
            .query(conn)
            .unwrap()
    };
    // 100 000 writes over 1 000 keys; each round of 1 000 tags every key with one of two
    // tags (re-set without the other), and every tenth key is removed instead.
    futures_util::stream::iter(0..100_000u32)
        .for_each_concurrent(64, |i| {
            let cache = cache.clone();
            async move { write_one(&cache, i).await }
        })
        .await;
    // The last round (i in 99 000..100 000) tagged every key "odd" and removed every tenth.
    let live_odd = (0..1000).filter(|k| k % 10 != 9).count() as u64;
    assert_eq!(members(&mut conn, "odd"), live_odd);
    assert_eq!(members(&mut conn, "even"), 0);
    let keytags: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{PREFIX}~keytags:docs:*"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(keytags.len() as u64, live_odd);
    // Clear removes the tag sets and lists with the values; only its marker stays (for
    // as long as a load can run).
    cache.clear("docs").await.unwrap();
    let left: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{PREFIX}*docs*"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(left, [format!("{PREFIX}~cleared:docs")]);
}

async fn write_one(cache: &Cache, i: u32) {
    let key = format!("d{}", i % 1000);
    let tag = if (i / 1000).is_multiple_of(2) {
        "even"
    } else {
        "odd"
    };
    if i % 10 == 9 {
        cache.remove("docs", &key).await.unwrap();
    } else {
        let options = SetOptions {
            tags: &[tag],
            ..SetOptions::default()
        };
        cache.set("docs", &key, &i, options).await.unwrap();
    }
}

#[tokio::test]
async fn a_corrupt_value_is_deleted_and_counted_and_oversized_values_are_refused() {
    let redis = RedisProc::start();
    let cfg = CacheConfig {
        max_value_bytes: 1000,
        ..config()
    };
    let cache = instance(&redis, &cfg).await;
    let mut conn = redis.conn();
    let _: () = ::redis::cmd("SET")
        .arg(format!("{PREFIX}blobs:bad"))
        .arg(b"\0BC2:1:\xff\xff".as_slice())
        .query(&mut conn)
        .unwrap();
    let loaded: String = cache
        .get_or_load("blobs", "bad", None, || async {
            Ok::<_, String>("fresh".into())
        })
        .await
        .unwrap();
    assert_eq!(loaded, "fresh");
    // The unreadable value was replaced by the loader's, and is read back from Redis.
    let fresh = instance(&redis, &cfg).await;
    assert_eq!(in_redis(&fresh, "blobs", "bad").await, Some(json!("fresh")));

    let big = "x".repeat(2000);
    let refused = cache.set("blobs", "big", &big, SetOptions::default()).await;
    assert!(
        matches!(refused, Err(CacheError::ValueTooLarge { max: 1000, .. })),
        "{refused:?}"
    );
    // Written by an instance with a larger limit: this one treats it as absent.
    let roomy = instance(
        &redis,
        &CacheConfig {
            max_value_bytes: 1 << 20,
            ..config()
        },
    )
    .await;
    roomy
        .set("blobs", "big", &big, SetOptions::default())
        .await
        .unwrap();
    assert_eq!(cache.get::<String>("blobs", "big").await.unwrap(), None);
    let too_big_load = cache
        .get_or_load("blobs", "huge", None, move || async move {
            Ok::<_, String>("y".repeat(5000))
        })
        .await;
    assert!(
        matches!(too_big_load, Err(CacheError::Load(_))),
        "{too_big_load:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_put_and_delete_on_two_serve_instances_converge() {
    let redis = RedisProc::start();
    let config = format!(
        "backend: redis\nredis:\n  host: 127.0.0.1\n  port: {}\ncache:\n  l2Timeout: 10s\n",
        redis.port
    );
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = support::serve::Served::start(dir_a.path(), &config, &["--no-auth"]).await;
    let b = support::serve::Served::start(dir_b.path(), &config, &["--no-auth"]).await;
    let http = support::http();
    let url =
        |served: &support::serve::Served, key: &str| format!("{}/v1/cache/users/{key}", served.api);
    let get = |served: &support::serve::Served, key: &str| {
        let request = http.get(url(served, key));
        async move {
            let response = request.send().await.unwrap();
            match response.status() {
                reqwest::StatusCode::NOT_FOUND => None,
                reqwest::StatusCode::OK => Some(response.json::<Value>().await.unwrap()),
                other => panic!("GET answered {other}"),
            }
        }
    };
    let keys: Vec<String> = (0..300).map(|i| format!("u{i}")).collect();
    for key in &keys {
        let put = http
            .put(url(&a, key))
            .json(&json!({"value": "old"}))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), reqwest::StatusCode::NO_CONTENT);
        get(&b, key).await;
    }
    let ops = keys.iter().map(|key| {
        let put = http.put(url(&a, key)).json(&json!({"value": "new"})).send();
        let delete = http.delete(url(&b, key)).send();
        async move {
            let (put, delete) = tokio::join!(put, delete);
            assert_eq!(put.unwrap().status(), reqwest::StatusCode::NO_CONTENT);
            assert!(delete.unwrap().status().is_success());
        }
    });
    join_all(ops).await;
    // One backplane round trip each way.
    for (writer, reader) in [(&a, &b), (&b, &a)] {
        let stamp = rand_u64().to_string();
        http.put(url(writer, "stamp"))
            .json(&json!({"value": stamp}))
            .send()
            .await
            .unwrap();
        wait_for_async("the backplane round trip", || async {
            (get(reader, "stamp").await? == json!({"value": stamp})).then_some(())
        })
        .await;
    }
    // What Redis holds, read by an instance with an empty L1 and serve's prefix.
    let fresh = instance(&redis, &config_with_default_prefix()).await;
    let mut wrong = Vec::new();
    for key in &keys {
        let truth = fresh
            .get::<Value>("users", key)
            .await
            .unwrap()
            .map(|v| json!({ "value": v }));
        let (on_a, on_b) = (get(&a, key).await, get(&b, key).await);
        if on_a != truth || on_b != truth {
            wrong.push(format!("{key}: Redis {truth:?}, A {on_a:?}, B {on_b:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of 300 disagree: {wrong:?}",
        wrong.len()
    );
}

fn config_with_default_prefix() -> CacheConfig {
    CacheConfig {
        l2_timeout: Duration::from_secs(10),
        ..CacheConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_backplane_is_found_and_no_stale_l1_entry_outlives_it() {
    let redis = RedisProc::start();
    let proxy = support::proxy::Proxy::start(redis.port).await;
    // Instance A reaches Redis through the proxy; B directly.
    let mut via_proxy = RedisConfig::standalone("127.0.0.1", proxy.port);
    via_proxy.read_timeout = Duration::from_millis(300);
    via_proxy.max_retries = 0;
    let cfg = CacheConfig {
        l2_timeout: Duration::from_millis(500),
        circuit_breaker: blinkchamber::config::CircuitBreakerConfig {
            failure_threshold: 1000,
            ..Default::default()
        },
        ..config()
    };
    let a = Cache::redis(&cfg, RedisBackend::connect(via_proxy).await.unwrap());
    a.ready().await;
    let b = instance(&redis, &cfg).await;
    a.set("half", "k", &"v1", SetOptions::default())
        .await
        .unwrap();
    assert_eq!(
        a.get::<String>("half", "k").await.unwrap().as_deref(),
        Some("v1")
    );

    // The path goes silent: connections stay open, nothing comes back. B writes v2; its
    // notice never reaches A.
    proxy.set_mode(support::proxy::Mode::SwallowReplies);
    b.set("half", "k", &"v2", SetOptions::default())
        .await
        .unwrap();
    // A finds out from its unanswered PING and stops serving L1.
    wait_for_async("A to notice the silent backplane", || async {
        (!a.following()).then_some(())
    })
    .await;
    // The path comes back: A resubscribes, flushes L1 and reads what Redis holds, although
    // l1.maxTtl (5 minutes) has not passed.
    proxy.set_mode(support::proxy::Mode::Pass);
    wait_for_async("A to follow again", || async {
        a.following().then_some(())
    })
    .await;
    assert_eq!(
        a.get::<String>("half", "k").await.unwrap().as_deref(),
        Some("v2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_reply_is_lost_still_converges_on_every_instance() {
    let redis = RedisProc::start();
    let proxy = support::proxy::Proxy::start(redis.port).await;
    let mut via_proxy = RedisConfig::standalone("127.0.0.1", proxy.port);
    via_proxy.read_timeout = Duration::from_millis(300);
    via_proxy.max_retries = 2;
    let cfg = CacheConfig {
        l2_timeout: Duration::from_millis(500),
        ..config()
    };
    let a = Cache::redis(&cfg, RedisBackend::connect(via_proxy).await.unwrap());
    a.ready().await;
    let b = instance(&redis, &cfg).await;
    a.set("lost", "k", &"v1", SetOptions::default())
        .await
        .unwrap();
    assert_eq!(
        b.get::<String>("lost", "k").await.unwrap().as_deref(),
        Some("v1")
    );

    // Redis runs A's write, but its reply (and the notice A would hear) never comes back.
    proxy.set_mode(support::proxy::Mode::SwallowReplies);
    let lost = a.set("lost", "k", &"v2", SetOptions::default()).await;
    assert!(lost.is_err(), "the write's reply was swallowed: {lost:?}");
    let fresh = instance(&redis, &cfg).await;
    assert_eq!(in_redis(&fresh, "lost", "k").await, Some(json!("v2")));
    // B heard the notice the script published and dropped its copy of v1.
    assert_eq!(
        b.get::<String>("lost", "k").await.unwrap().as_deref(),
        Some("v2")
    );

    // The silent path fails (as TCP eventually does), then comes back. A, once it follows
    // the backplane again, answers what Redis holds, not the v1 it had before.
    proxy.set_mode(support::proxy::Mode::Reset);
    wait_for_async("A to notice the lost backplane", || async {
        (!a.following()).then_some(())
    })
    .await;
    proxy.set_mode(support::proxy::Mode::Pass);
    wait_for_async("A to follow the backplane again", || async {
        a.following().then_some(())
    })
    .await;
    assert_eq!(
        a.get::<String>("lost", "k").await.unwrap().as_deref(),
        Some("v2")
    );
}
