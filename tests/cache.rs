//! The two-level cache: one suite on the memory backend and on real Redis, then what only
//! Redis has (L2, the backplane between instances, compression, reconnects).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use blinkchamber::cache::{Cache, CacheError, SetOptions};
use blinkchamber::config::{CacheConfig, RedisConfig};
use blinkchamber::{Backend, RedisBackend};
use serde_json::{Value, json};
use support::app::App;
use support::{RedisProc, Store, wait_for_async};

struct Fixture {
    cache: Cache,
    _redis: Option<RedisProc>,
}

/// A cache that waits for Redis as long as it takes: on a loaded machine an L2 call can
/// outlast the default `l2Timeout` (250 ms) without any fault, and five in a row would
/// open the circuit breaker; the tests of a slow Redis set their own.
fn config() -> CacheConfig {
    CacheConfig {
        key_prefix: "test:cache:".into(),
        l2_timeout: Duration::from_secs(10),
        ..CacheConfig::default()
    }
}

async fn connect(redis: &RedisProc) -> RedisBackend {
    RedisBackend::connect(RedisConfig::standalone("127.0.0.1", redis.port))
        .await
        .unwrap()
}

async fn redis_cache(redis: &RedisProc, cfg: &CacheConfig) -> Cache {
    let cache = Cache::redis(cfg, connect(redis).await);
    cache.ready().await;
    cache
}

/// Waits until `cache` no longer has `namespace`/`key`.
async fn wait_until_absent(cache: &Cache, namespace: &str, key: &str, what: &str) {
    wait_for_async(what, || async {
        cache
            .get::<Value>(namespace, key)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}

/// Calls `get_or_load` with a failing loader until the loader has run (the value expired),
/// asserting that every answer is `expected`, the last good value.
async fn stale_is_served_until_the_loader_runs(cache: &Cache, key: &str, expected: &str) {
    let runs = Arc::new(AtomicUsize::new(0));
    wait_for_async("the value to expire and the loader to run", || async {
        let counter = runs.clone();
        let got: String = cache
            .get_or_load("resource", key, None, move || async move {
                counter.fetch_add(1, Ordering::SeqCst);
                Err::<String, _>("source down")
            })
            .await
            .expect("the fail-safe serves the stale value");
        assert_eq!(got, expected);
        (runs.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
}

async fn fixture(store: Store) -> Fixture {
    match store {
        Store::Memory => Fixture {
            cache: Cache::from_config(&config(), &Backend::memory()),
            _redis: None,
        },
        Store::Redis => {
            let redis = RedisProc::start();
            Fixture {
                cache: redis_cache(&redis, &config()).await,
                _redis: Some(redis),
            }
        }
    }
}

conformance!(fixture;
    values_round_trip_and_are_removed,
    concurrent_misses_run_the_loader_once,
    failing_or_panicking_loaders_cache_nothing,
    clear_removes_one_namespace_only,
    entries_expire_after_their_ttl,
    bad_namespaces_and_keys_are_refused,
    a_failing_loader_gets_the_stale_value_within_the_fail_safe_window,
    remove_by_tag_removes_exactly_the_tagged_keys,
    a_removed_value_is_not_served_by_the_fail_safe,
    ttls_out_of_range_are_refused,
);

async fn a_removed_value_is_not_served_by_the_fail_safe(f: &Fixture) {
    let short = SetOptions {
        ttl: Some(Duration::from_millis(30)),
        ..SetOptions::default()
    };
    f.cache.set("resource", "gone", &1, short).await.unwrap();
    // Expired, so the failing loader runs and its caller gets the stale copy: the
    // fail-safe holds one.
    let runs = Arc::new(AtomicUsize::new(0));
    wait_for_async(
        "the value to expire and its stale copy to be served",
        || async {
            let counter = runs.clone();
            let got = f
                .cache
                .get_or_load("resource", "gone", None, move || async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    Err::<u32, _>("down")
                })
                .await;
            (runs.load(Ordering::SeqCst) > 0).then(|| assert_eq!(got.unwrap(), 1))
        },
    )
    .await;
    f.cache.remove("resource", "gone").await.unwrap();
    let loaded = f
        .cache
        .get_or_load("resource", "gone", None, || async { Err::<u32, _>("down") })
        .await;
    assert!(matches!(loaded, Err(CacheError::Load(_))), "{loaded:?}");
}

async fn ttls_out_of_range_are_refused(f: &Fixture) {
    for ttl in [Duration::ZERO, Duration::from_secs(367 * 24 * 3600)] {
        let options = SetOptions {
            ttl: Some(ttl),
            ..SetOptions::default()
        };
        assert!(matches!(
            f.cache.set("ns", "k", &1, options).await,
            Err(CacheError::InvalidTtl(_))
        ));
    }
}

async fn values_round_trip_and_are_removed(f: &Fixture) {
    let c = &f.cache;
    assert_eq!(c.get::<Value>("users", "u1").await.unwrap(), None);
    let user = json!({"id": "u1", "roles": ["admin"], "n": 3});
    c.set("users", "u1", &user, SetOptions::default())
        .await
        .unwrap();
    assert_eq!(c.get::<Value>("users", "u1").await.unwrap(), Some(user));
    c.set("users", "u1", &json!("replaced"), SetOptions::default())
        .await
        .unwrap();
    assert_eq!(
        c.get::<String>("users", "u1").await.unwrap().as_deref(),
        Some("replaced")
    );
    assert!(matches!(
        c.get::<u64>("users", "u1").await,
        Err(CacheError::Json(_))
    ));
    c.remove("users", "u1").await.unwrap();
    assert_eq!(c.get::<Value>("users", "u1").await.unwrap(), None);
}

async fn concurrent_misses_run_the_loader_once(f: &Fixture) {
    let runs = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (cache, runs) = (f.cache.clone(), runs.clone());
            tokio::spawn(async move {
                cache
                    .get_or_load("resource", "hot", Some("resource"), || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        // Stay in flight while the other callers arrive.
                        for _ in 0..50 {
                            tokio::task::yield_now().await;
                        }
                        Ok::<_, std::io::Error>(json!({"loaded": true}))
                    })
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), json!({"loaded": true}));
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the loader ran more than once"
    );
    // Later callers are served from the cache.
    let again: Value = f
        .cache
        .get_or_load("resource", "hot", None, || async {
            Err::<Value, _>("must not run")
        })
        .await
        .unwrap();
    assert_eq!(again, json!({"loaded": true}));
}

async fn failing_or_panicking_loaders_cache_nothing(f: &Fixture) {
    let failed = f
        .cache
        .get_or_load("resource", "flaky", None, || async {
            Err::<Value, _>("upstream 503")
        })
        .await;
    match failed {
        Err(CacheError::Load(m)) => assert!(m.contains("upstream 503"), "{m}"),
        other => panic!("expected a load error, got {other:?}"),
    }
    let panicked = f
        .cache
        .get_or_load("resource", "flaky", None, || async {
            if true {
                panic!("loader bug");
            }
            Ok::<Value, String>(Value::Null)
        })
        .await;
    match panicked {
        Err(CacheError::Load(m)) => assert!(m.contains("loader bug"), "{m}"),
        other => panic!("expected a load error, got {other:?}"),
    }
    // A closure that panics before it even returns its future.
    let early = f
        .cache
        .get_or_load::<Value, String, _, _>("resource", "flaky", None, || {
            panic!("loader bug before the future");
            #[allow(unreachable_code)]
            async {
                Ok(Value::Null)
            }
        })
        .await;
    match early {
        Err(CacheError::Load(m)) => assert!(m.contains("before the future"), "{m}"),
        other => panic!("expected a load error, got {other:?}"),
    }
    assert_eq!(
        f.cache.get::<Value>("resource", "flaky").await.unwrap(),
        None
    );
    let loaded: u32 = f
        .cache
        .get_or_load("resource", "flaky", None, || async { Ok::<_, String>(7) })
        .await
        .unwrap();
    assert_eq!(loaded, 7);
}

async fn clear_removes_one_namespace_only(f: &Fixture) {
    let c = &f.cache;
    for i in 0..30 {
        c.set("search", &format!("q{i}"), &i, SetOptions::default())
            .await
            .unwrap();
    }
    c.set("search2", "q1", &1, SetOptions::default())
        .await
        .unwrap();
    c.set("lineage", "x", &"kept", SetOptions::default())
        .await
        .unwrap();
    // Removed values leave tombstones behind in Redis; a clear counts live values only,
    // the same on both backends.
    for i in 30..35 {
        c.set("search", &format!("q{i}"), &i, SetOptions::default())
            .await
            .unwrap();
        c.remove("search", &format!("q{i}")).await.unwrap();
    }
    assert_eq!(c.clear("search").await.unwrap(), 30);
    for i in 0..30 {
        assert_eq!(
            c.get::<u32>("search", &format!("q{i}")).await.unwrap(),
            None
        );
    }
    assert_eq!(c.get::<u32>("search2", "q1").await.unwrap(), Some(1));
    assert_eq!(
        c.get::<String>("lineage", "x").await.unwrap().as_deref(),
        Some("kept")
    );
}

async fn entries_expire_after_their_ttl(f: &Fixture) {
    let short = SetOptions {
        ttl: Some(Duration::from_secs(5)),
        ..SetOptions::default()
    };
    f.cache.set("session-like", "k", &1, short).await.unwrap();
    assert_eq!(
        f.cache.get::<u32>("session-like", "k").await.unwrap(),
        Some(1)
    );
    wait_until_absent(&f.cache, "session-like", "k", "the entry to expire").await;
}

async fn a_failing_loader_gets_the_stale_value_within_the_fail_safe_window(f: &Fixture) {
    let short = SetOptions {
        ttl: Some(Duration::from_millis(50)),
        ..SetOptions::default()
    };
    f.cache
        .set("resource", "r1", &"last good", short)
        .await
        .unwrap();
    // Until the value expires it is served fresh and the loader does not run; after, the
    // loader runs, fails, and the last good value is served instead of the error.
    stale_is_served_until_the_loader_runs(&f.cache, "r1", "last good").await;
    // Once the loader succeeds, the new value replaces the stale one.
    let fresh: String = f
        .cache
        .get_or_load("resource", "r1", None, || async {
            Ok::<_, String>("new".into())
        })
        .await
        .unwrap();
    assert_eq!(fresh, "new");
}

async fn remove_by_tag_removes_exactly_the_tagged_keys(f: &Fixture) {
    let c = &f.cache;
    let tagged = |tags: &'static [&'static str]| SetOptions {
        tags,
        ..SetOptions::default()
    };
    c.set("docs", "a", &1, tagged(&["org-1", "public"]))
        .await
        .unwrap();
    c.set("docs", "b", &2, tagged(&["org-1"])).await.unwrap();
    c.set("docs", "c", &3, tagged(&["org-2"])).await.unwrap();
    c.set("docs", "d", &4, SetOptions::default()).await.unwrap();
    c.set("other", "a", &5, tagged(&["org-1"])).await.unwrap();
    assert_eq!(c.remove_by_tag("docs", "org-1").await.unwrap(), 2);
    for (key, expected) in [("a", None), ("b", None), ("c", Some(3)), ("d", Some(4))] {
        assert_eq!(c.get::<u32>("docs", key).await.unwrap(), expected, "{key}");
    }
    assert_eq!(
        c.get::<u32>("other", "a").await.unwrap(),
        Some(5),
        "other namespace"
    );
    assert_eq!(
        c.remove_by_tag("docs", "org-1").await.unwrap(),
        0,
        "the tag is gone"
    );
    assert!(matches!(
        c.set("docs", "e", &1, tagged(&["bad tag"])).await,
        Err(CacheError::InvalidTag(_))
    ));
}

async fn bad_namespaces_and_keys_are_refused(f: &Fixture) {
    for ns in ["", "a:b", "a b", "a*", &"n".repeat(129)] {
        assert!(
            matches!(
                f.cache.get::<Value>(ns, "k").await,
                Err(CacheError::InvalidNamespace(_))
            ),
            "{ns:?}"
        );
    }
    for key in ["", &"k".repeat(1025)] {
        assert!(matches!(
            f.cache.set("ns", key, &1, SetOptions::default()).await,
            Err(CacheError::InvalidKey(_))
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_instance_evicts_the_other_instances_l1() {
    let redis = RedisProc::start();
    let cfg = config();
    let (a, b) = (
        redis_cache(&redis, &cfg).await,
        redis_cache(&redis, &cfg).await,
    );
    b.set("users", "u1", &"v1", SetOptions::default())
        .await
        .unwrap();
    // A reads it into its L1.
    assert_eq!(
        a.get::<String>("users", "u1").await.unwrap().as_deref(),
        Some("v1")
    );
    b.set("users", "u1", &"v2", SetOptions::default())
        .await
        .unwrap();
    wait_for_async("A to see B's write", || async {
        (a.get::<String>("users", "u1").await.unwrap().as_deref() == Some("v2")).then_some(())
    })
    .await;
    // Once evicted, A never goes back to the old value.
    for _ in 0..20 {
        assert_eq!(
            a.get::<String>("users", "u1").await.unwrap().as_deref(),
            Some("v2")
        );
    }
    b.remove("users", "u1").await.unwrap();
    wait_until_absent(&a, "users", "u1", "A to see B's removal").await;
    a.set("users", "u2", &1, SetOptions::default())
        .await
        .unwrap();
    assert_eq!(b.get::<u32>("users", "u2").await.unwrap(), Some(1));
    a.clear("users").await.unwrap();
    wait_until_absent(&b, "users", "u2", "B to see A's clear").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_instance_keeps_a_value_no_longer_than_redis_does() {
    let redis = RedisProc::start();
    let cfg = config();
    let (a, b) = (
        redis_cache(&redis, &cfg).await,
        redis_cache(&redis, &cfg).await,
    );
    let short = SetOptions {
        ttl: Some(Duration::from_secs(5)),
        ..SetOptions::default()
    };
    b.set("tokens", "t1", &"v", short).await.unwrap();
    // A reads it from Redis; l1.maxTtl is 5 min, but Redis drops it after 5 s.
    assert_eq!(
        a.get::<String>("tokens", "t1").await.unwrap().as_deref(),
        Some("v")
    );
    wait_until_absent(&a, "tokens", "t1", "A to drop the value with Redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backplane_reconnect_flushes_l1() {
    let mut redis = RedisProc::start();
    let cache = redis_cache(&redis, &config()).await;
    cache
        .set("users", "u1", &"before", SetOptions::default())
        .await
        .unwrap();
    assert_eq!(
        cache.get::<String>("users", "u1").await.unwrap().as_deref(),
        Some("before")
    );
    // While the instance is cut off, someone changes the value; the eviction notice is
    // lost with the connection.
    redis.kill();
    redis.restart();
    let _: () = ::redis::cmd("SET")
        .arg("test:cache:users:u1")
        .arg("\"after\"")
        .query(&mut redis.conn())
        .unwrap();
    // L1 holds "before" for up to l1.maxTtl (5 min) unless the reconnect flushes it.
    wait_for_async("the reconnect to flush L1", || async {
        (cache.get::<String>("users", "u1").await.ok()?.as_deref() == Some("after")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn without_the_fail_safe_a_failing_loader_is_an_error() {
    let cfg = CacheConfig {
        fail_safe_max_duration: Duration::ZERO,
        ..config()
    };
    let cache = Cache::memory(&cfg);
    let short = SetOptions {
        ttl: Some(Duration::from_millis(50)),
        ..SetOptions::default()
    };
    cache.set("resource", "r1", &"old", short).await.unwrap();
    wait_for_async("the value to expire", || async {
        cache
            .get_or_load("resource", "r1", None, || async {
                Err::<String, _>("down")
            })
            .await
            .err()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_loader_past_the_loader_timeout_fails_and_the_stale_value_is_served() {
    // Tokio's clock is paused: the 2 s loader timeout passes as soon as the loader waits.
    let cfg = CacheConfig {
        loader_timeout: Duration::from_secs(2),
        ..config()
    };
    let cache = Cache::memory(&cfg);
    let runs = Arc::new(AtomicUsize::new(0));
    let hanging = |runs: Arc<AtomicUsize>| {
        move || async move {
            runs.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
            Ok::<u32, String>(0)
        }
    };
    match cache
        .get_or_load("resource", "slow", None, hanging(runs.clone()))
        .await
    {
        Err(CacheError::Load(m)) => assert!(m.contains("loaderTimeout"), "{m}"),
        other => panic!("expected a load timeout, got {other:?}"),
    }
    // With a last good value, a hanging loader gets it served instead.
    let short = SetOptions {
        ttl: Some(Duration::from_millis(1)),
        ..SetOptions::default()
    };
    cache.set("resource", "slow", &7u32, short).await.unwrap();
    let before = runs.load(Ordering::SeqCst);
    wait_for_async("the value to expire and the loader to run", || async {
        let got: u32 = cache
            .get_or_load("resource", "slow", None, hanging(runs.clone()))
            .await
            .expect("the stale value is served");
        assert_eq!(got, 7);
        (runs.load(Ordering::SeqCst) > before).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_serves_stale_values_and_loads_still_run_then_recovers() {
    let mut redis = RedisProc::start();
    let cache = redis_cache(&redis, &config()).await;
    let short = SetOptions {
        ttl: Some(Duration::from_millis(50)),
        ..SetOptions::default()
    };
    cache
        .set("resource", "r1", &"last good", short)
        .await
        .unwrap();
    redis.kill();
    // Reads keep answering: fresh from L1, then stale once expired (Redis cannot be asked).
    stale_is_served_until_the_loader_runs(&cache, "r1", "last good").await;
    assert_eq!(
        cache
            .get::<String>("resource", "r1")
            .await
            .unwrap()
            .as_deref(),
        Some("last good")
    );
    // A working loader is enough, even with Redis down.
    let loaded: String = cache
        .get_or_load("resource", "r2", None, || async {
            Ok::<_, String>("from the loader".into())
        })
        .await
        .unwrap();
    assert_eq!(loaded, "from the loader");
    // Redis back: writes reach it again.
    redis.restart();
    wait_for_async("writes to reach Redis again", || async {
        cache
            .set("resource", "r3", &3, SetOptions::default())
            .await
            .ok()
    })
    .await;
    let stored: String = ::redis::cmd("GET")
        .arg("test:cache:resource:r3")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(stored_value(&stored), json!(3));
}

/// The value in a stored `{"version": …, "expiresAt": <unix ms>, "value": …}`, checking
/// the version and the expiry.
fn stored_value(stored: &str) -> Value {
    let stored: Value = serde_json::from_str(stored).expect("stored values are JSON");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        stored["version"].as_u64().is_some_and(|v| v > 0),
        "{stored}"
    );
    let expires_at = stored["expiresAt"].as_u64().expect("an expiry in ms");
    assert!(expires_at > now_ms, "{stored}");
    stored["value"].clone()
}

#[tokio::test]
async fn large_values_are_compressed_in_redis_and_small_ones_stay_readable() {
    let redis = RedisProc::start();
    let cache = redis_cache(&redis, &config()).await;
    let big = json!({"text": "lorem ipsum ".repeat(500)});
    cache
        .set("docs", "big", &big, SetOptions::default())
        .await
        .unwrap();
    cache
        .set("docs", "small", &json!({"a": 1}), SetOptions::default())
        .await
        .unwrap();
    let mut conn = redis.conn();
    let raw_big: Vec<u8> = ::redis::cmd("GET")
        .arg("test:cache:docs:big")
        .query(&mut conn)
        .unwrap();
    assert!(
        raw_big.starts_with(b"\0BC2") && raw_big.len() < 1000,
        "{} bytes",
        raw_big.len()
    );
    let raw_small: String = ::redis::cmd("GET")
        .arg("test:cache:docs:small")
        .query(&mut conn)
        .unwrap();
    assert_eq!(stored_value(&raw_small), json!({"a": 1}));
    // A fresh instance (empty L1) reads both back from Redis.
    let other = redis_cache(&redis, &config()).await;
    assert_eq!(other.get::<Value>("docs", "big").await.unwrap(), Some(big));
    assert_eq!(
        other.get::<Value>("docs", "small").await.unwrap(),
        Some(json!({"a": 1}))
    );
    // Keys of other applications in the same database are left alone by clear.
    let _: () = ::redis::cmd("SET")
        .arg("docs:unrelated")
        .arg(1)
        .query(&mut conn)
        .unwrap();
    cache.clear("docs").await.unwrap();
    let kept: Option<u32> = ::redis::cmd("GET")
        .arg("docs:unrelated")
        .query(&mut conn)
        .unwrap();
    assert_eq!(kept, Some(1));
}

#[tokio::test]
async fn http_put_get_delete_and_invalidate() {
    let app = App::from_yaml("backend: memory\nserver:\n  maxBodyBytes: 4096\n").await;
    let url = |path: &str| format!("/v1/cache/{path}");

    let put = app
        .put_json(
            &url("users/u1"),
            &json!({"value": {"name": "Ada", "tags": [1, 2]}, "ttl": "10m"}),
        )
        .await;
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    let got = app.get(&url("users/u1")).await.json();
    assert_eq!(got, json!({"value": {"name": "Ada", "tags": [1, 2]}}));

    let missing = app.get(&url("users/nobody")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let problem = missing.json();
    assert_eq!(problem["type"], "not-found");

    let too_big = app
        .put_json(&url("users/big"), &json!({"value": "x".repeat(5000)}))
        .await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        app.get(&url("users/big")).await.status,
        StatusCode::NOT_FOUND,
        "nothing of the refused value was stored"
    );

    let bad_category = app
        .put_json(&url("users/u2"), &json!({"value": 1, "category": "nope"}))
        .await;
    assert_eq!(bad_category.status, StatusCode::BAD_REQUEST);
    let problem = bad_category.json();
    assert!(
        problem["detail"].as_str().unwrap().contains("`nope`"),
        "{problem}"
    );

    for ttl in ["0s", "400d"] {
        let bad_ttl = app
            .put_json(&url("users/u3"), &json!({"value": 1, "ttl": ttl}))
            .await;
        assert_eq!(bad_ttl.status, StatusCode::BAD_REQUEST, "{ttl}");
        let problem = bad_ttl.json();
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .starts_with("ttl: invalid ttl"),
            "{problem}"
        );
    }

    let bad_namespace = app.get(&url("a*b/k")).await;
    assert_eq!(bad_namespace.status, StatusCode::BAD_REQUEST);

    let deleted = app.delete(&url("users/u1")).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&url("users/u1")).await.status,
        StatusCode::NOT_FOUND
    );

    for (k, tag) in [("a", "t1"), ("b", "t2"), ("c", "t2")] {
        app.put_json(
            &url(&format!("search/{k}")),
            &json!({"value": k, "tags": [tag]}),
        )
        .await;
    }
    let by_tag = app
        .post_json(&url("search/invalidate"), &json!({"tags": ["t2"]}))
        .await
        .json();
    assert_eq!(by_tag, json!({"removed": 2}));
    let neither = app.post_json(&url("search/invalidate"), &json!({})).await;
    assert_eq!(neither.status, StatusCode::BAD_REQUEST);
    let cleared = app
        .post_json(&url("search/invalidate"), &json!({"all": true}))
        .await
        .json();
    assert_eq!(cleared, json!({"removed": 1}));
    assert_eq!(
        app.get(&url("search/a")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_redis_costs_a_read_only_the_l2_timeout() {
    let redis = RedisProc::start();
    let mut redis_cfg = RedisConfig::standalone("127.0.0.1", redis.port);
    // Far beyond the test's patience: only cache.l2Timeout can end the read.
    redis_cfg.read_timeout = Duration::from_secs(600);
    let mut cfg = CacheConfig {
        l2_timeout: Duration::from_millis(100),
        ..config()
    };
    // Reads that outlast 100 ms on a loaded machine before the pause must not open it.
    cfg.circuit_breaker.failure_threshold = 1_000;
    let cache = Cache::redis(&cfg, RedisBackend::connect(redis_cfg).await.unwrap());
    cache.ready().await;
    let before = wait_for_async("a read before the pause", || async {
        cache.get::<u32>("ns", "k").await.ok()
    })
    .await;
    assert_eq!(before, None);
    // A paused Redis accepts commands and answers nothing.
    let _: () = ::redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(5_000)
        .arg("ALL")
        .query(&mut redis.conn())
        .unwrap();
    let read = tokio::time::timeout(support::PATIENCE, cache.get::<u32>("ns", "k2"))
        .await
        .expect("the read ends at cache.l2Timeout");
    match read {
        Err(CacheError::Backend(e)) => assert!(e.to_string().contains("l2Timeout"), "{e}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_redis_is_skipped_for_a_while_then_asked_again() {
    let mut redis = RedisProc::start();
    let mut cfg = config();
    cfg.circuit_breaker.failure_threshold = 3;
    cfg.circuit_breaker.open_for = Duration::from_secs(5);
    let cache = redis_cache(&redis, &cfg).await;
    redis.kill();
    for i in 0..3 {
        assert!(
            matches!(
                cache.get::<u32>("ns", &format!("k{i}")).await,
                Err(CacheError::Backend(_))
            ),
            "read {i} while Redis is down"
        );
    }
    assert!(cache.l2_circuit_open());
    let skipped = cache.get::<u32>("ns", "k").await.unwrap_err();
    assert!(skipped.to_string().contains("circuit breaker"), "{skipped}");
    redis.restart();
    wait_for_async("the cache to use Redis again", || async {
        cache.get::<u32>("ns", "k").await.ok()
    })
    .await;
    assert!(!cache.l2_circuit_open());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_racing_writes_on_another_instance_never_keep_an_old_value() {
    // Readers on A keep reading while B writes; a read of Redis that started before an
    // eviction must not put its (old) value in A's L1 after the eviction. If it did, A would
    // serve that old value for l1.maxTtl (5 min) and the final wait would time out.
    let redis = RedisProc::start();
    let cfg = config();
    let (a, b) = (
        redis_cache(&redis, &cfg).await,
        redis_cache(&redis, &cfg).await,
    );
    b.set("race", "k", &0u32, SetOptions::default())
        .await
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (a, stop) = (a.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = a.get::<u32>("race", "k").await;
                    // L1 hits complete without waiting: let the writer and the backplane run.
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for i in 1..=300u32 {
        b.set("race", "k", &i, SetOptions::default()).await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    wait_for_async("A to see the last write", || async {
        (a.get::<u32>("race", "k").await.unwrap() == Some(300)).then_some(())
    })
    .await;
    for _ in 0..50 {
        assert_eq!(a.get::<u32>("race", "k").await.unwrap(), Some(300));
    }
}

/// A loader that counts its runs and returns `value` once `gate` is opened.
fn gated_loader(
    runs: &Arc<AtomicUsize>,
    gate: &Arc<tokio::sync::Notify>,
    value: &'static str,
) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + Send>>
+ Send
+ 'static {
    let (runs, gate) = (runs.clone(), gate.clone());
    move || {
        Box::pin(async move {
            runs.fetch_add(1, Ordering::SeqCst);
            gate.notified().await;
            Ok(value.to_owned())
        })
    }
}

#[tokio::test]
async fn past_the_soft_timeout_the_stale_value_is_served_and_the_load_finishes_in_the_background() {
    let cfg = CacheConfig {
        loader_soft_timeout: Duration::from_millis(20),
        ..config()
    };
    let cache = Cache::memory(&cfg);
    let short = SetOptions {
        ttl: Some(Duration::from_millis(20)),
        ..SetOptions::default()
    };
    cache.set("resource", "soft", &"old", short).await.unwrap();
    wait_until_absent(&cache, "resource", "soft", "the value to go stale").await;
    let (runs, gate) = (Arc::default(), Arc::default());
    for _ in 0..3 {
        let got: String = cache
            .get_or_load("resource", "soft", None, gated_loader(&runs, &gate, "new"))
            .await
            .unwrap();
        assert_eq!(
            got, "old",
            "the stale value is served while the loader runs"
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "callers share one load");
    gate.notify_one();
    wait_for_async("the background load to be cached", || async {
        let got = cache.get::<String>("resource", "soft").await.unwrap();
        (got.as_deref() == Some("new")).then_some(())
    })
    .await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_distributed_load_one_instance_loads_and_the_others_wait_for_its_value() {
    let redis = RedisProc::start();
    let mut cfg = config();
    cfg.distributed_load.enabled = true;
    let (a, b) = (
        redis_cache(&redis, &cfg).await,
        redis_cache(&redis, &cfg).await,
    );
    let (runs, gate) = (Arc::<AtomicUsize>::default(), Arc::default());
    let loading = {
        let (a, loader) = (a.clone(), gated_loader(&runs, &gate, "from a"));
        tokio::spawn(async move {
            a.get_or_load::<String, _, _, _>("resource", "k", None, loader)
                .await
        })
    };
    wait_for_async("instance a to start loading", || async {
        (runs.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    let waiting = {
        let (b, loader) = (b.clone(), gated_loader(&runs, &gate, "from b"));
        tokio::spawn(async move {
            b.get_or_load::<String, _, _, _>("resource", "k", None, loader)
                .await
        })
    };
    // The lock marks its lease when someone waits for it: b is waiting, not loading.
    wait_for_async("instance b to wait for the load lock", || async {
        let mut conn = redis.conn();
        let leases: Vec<String> = ::redis::cmd("KEYS")
            .arg("test:cache:~load:lease:*")
            .query(&mut conn)
            .unwrap();
        let lease = leases.first()?;
        let held: String = ::redis::cmd("GET").arg(lease).query(&mut conn).ok()?;
        held.ends_with('!').then_some(())
    })
    .await;
    gate.notify_one();
    assert_eq!(loading.await.unwrap().unwrap(), "from a");
    assert_eq!(waiting.await.unwrap().unwrap(), "from a");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "b's loader must not run");
}

#[tokio::test]
async fn a_value_set_during_a_load_wins_over_the_loaded_one() {
    let redis = RedisProc::start();
    let cache = redis_cache(&redis, &config()).await;
    let (runs, gate) = (Arc::<AtomicUsize>::default(), Arc::default());
    let loading = {
        let (cache, loader) = (cache.clone(), gated_loader(&runs, &gate, "loaded"));
        tokio::spawn(async move {
            cache
                .get_or_load::<String, _, _, _>("resource", "k", None, loader)
                .await
        })
    };
    wait_for_async("the loader to start", || async {
        (runs.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    cache
        .set("resource", "k", &"set meanwhile", SetOptions::default())
        .await
        .unwrap();
    gate.notify_one();
    assert_eq!(loading.await.unwrap().unwrap(), "set meanwhile");
    let other = redis_cache(&redis, &config()).await;
    assert_eq!(
        other
            .get::<String>("resource", "k")
            .await
            .unwrap()
            .as_deref(),
        Some("set meanwhile")
    );
}
