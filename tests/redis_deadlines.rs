//! Every call has an overall deadline (`redis.callTimeout`): when nothing answers — a
//! server behind a proxy that swallows every reply, or a whole Sentinel group frozen with
//! SIGSTOP — calls fail by their deadline instead of retrying for a minute or more.
//!
//! The bound asserted is the deadline plus a generous grace for a loaded machine: without
//! the deadline these calls would take `maxRetries` (50) attempts of at least 600 ms.
//! Commands past `redis.maxInFlight` wait for a slot and are never sent if none frees up
//! before their deadline.

mod support;

use std::time::{Duration, Instant};

use blinkchamber::config::{DbIndex, RedisConfig};
use blinkchamber::{RedisBackend, Retry};
use support::proxy::{Mode, Proxy};
use support::{RedisProc, SentinelGroup};

const CALL_TIMEOUT: Duration = Duration::from_secs(2);
const GRACE: Duration = Duration::from_secs(3);

/// Short attempts and many retries: only `callTimeout` can end a call early.
fn bounded(mut cfg: RedisConfig) -> RedisConfig {
    cfg.dial_timeout = Duration::from_millis(300);
    cfg.read_timeout = Duration::from_millis(300);
    cfg.write_timeout = Duration::from_millis(300);
    cfg.pool_timeout = Duration::from_millis(300);
    cfg.max_retries = 50;
    cfg.max_retry_backoff = Duration::from_millis(50);
    cfg.call_timeout = CALL_TIMEOUT;
    cfg
}

/// Runs a read, a script that may not be repeated, and a transaction at once, and returns
/// how long each took to fail.
async fn calls_fail_in_time(backend: &RedisBackend) -> Vec<(&'static str, Duration)> {
    let read = Box::pin(async {
        backend
            .query::<Option<String>>(redis::cmd("GET").arg("deadline:k"))
            .await
            .is_err()
    });
    let script = Box::pin(async {
        backend
            .run(Retry::IfNotRun, |mut c| async move {
                redis::cmd("EVAL")
                    .arg("return redis.call('INCR', KEYS[1])")
                    .arg(1)
                    .arg("deadline:n")
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await
            .is_err()
    });
    let mut tx = redis::pipe();
    tx.atomic()
        .cmd("INCR")
        .arg("deadline:a")
        .cmd("INCR")
        .arg("deadline:b");
    let transaction = Box::pin(async {
        backend
            .pipeline::<(i64, i64)>(Retry::IfNotRun, &tx)
            .await
            .is_err()
    });
    let (a, b, c) = tokio::join!(
        timed("GET", read),
        timed("EVAL", script),
        timed("MULTI", transaction)
    );
    vec![a, b, c]
}

/// How long `call` took to fail; panics if it succeeded.
async fn timed(
    name: &'static str,
    call: futures_util::future::BoxFuture<'_, bool>,
) -> (&'static str, Duration) {
    let started = Instant::now();
    let failed = call.await;
    assert!(failed, "{name} succeeded although nothing answers");
    (name, started.elapsed())
}

fn assert_within_deadline(what: &str, took: &[(&'static str, Duration)]) {
    for (name, elapsed) in took {
        assert!(
            *elapsed < CALL_TIMEOUT + GRACE,
            "{what}: {name} took {elapsed:?}, past callTimeout {CALL_TIMEOUT:?}"
        );
    }
    eprintln!("{what}: calls failed after {took:?} (callTimeout {CALL_TIMEOUT:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_call_outlasts_its_deadline_when_every_reply_is_swallowed() {
    let redis = RedisProc::start();
    let proxy = Proxy::start(redis.port).await;
    let backend = RedisBackend::connect(bounded(RedisConfig::standalone("127.0.0.1", proxy.port)))
        .await
        .unwrap();
    backend.ping().await.unwrap();

    // Open connections stay open and new ones are accepted; nothing is ever answered.
    proxy.set_mode(Mode::SwallowReplies);
    let took = calls_fail_in_time(&backend).await;
    assert!(proxy.swallowed() > 0, "the proxy swallowed nothing");
    assert_within_deadline("replies swallowed", &took);

    // Answers again: the same backend recovers.
    proxy.set_mode(Mode::Pass);
    support::wait_for_async("calls to succeed again", || async {
        backend.ping().await.ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_call_outlasts_its_deadline_when_the_whole_sentinel_group_freezes() {
    let mut group = tokio::task::spawn_blocking(SentinelGroup::start)
        .await
        .unwrap();
    let backend = RedisBackend::connect(bounded(RedisConfig::sentinel(
        "mymaster",
        group.sentinel_nodes(),
    )))
    .await
    .unwrap();
    backend.ping().await.unwrap();

    for node in group.nodes.iter_mut().chain(group.sentinels.iter_mut()) {
        node.pause();
    }
    let took = calls_fail_in_time(&backend).await;
    // A second backend on the same group (another database) shares the supervisor: it
    // starts at once instead of asking frozen Sentinels.
    let other = RedisBackend::connect(
        bounded(RedisConfig::sentinel("mymaster", group.sentinel_nodes()))
            .with_database(DbIndex::new(1).unwrap()),
    )
    .await
    .expect("the running supervisor is shared");
    let more = calls_fail_in_time(&other).await;
    for node in group.nodes.iter_mut().chain(group.sentinels.iter_mut()) {
        node.resume();
    }
    assert_within_deadline("Sentinel group frozen", &took);
    assert_within_deadline("Sentinel group frozen, second backend", &more);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_past_max_in_flight_wait_and_are_never_sent() {
    let redis = RedisProc::start();
    let proxy = Proxy::start(redis.port).await;
    let mut cfg = RedisConfig::standalone("127.0.0.1", proxy.port);
    cfg.pool_size = 1.try_into().unwrap();
    cfg.max_in_flight = 2.try_into().unwrap();
    cfg.max_retries = 0;
    // Long enough that the two commands below hold their slots for the whole test.
    cfg.read_timeout = Duration::from_secs(60);
    cfg.call_timeout = Duration::from_secs(120);
    let backend = RedisBackend::connect(cfg).await.unwrap();
    backend.ping().await.unwrap();

    let incr = |backend: RedisBackend| async move {
        backend
            .run(Retry::IfNotRun, |mut c| async move {
                redis::cmd("INCR")
                    .arg("inflight")
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await
    };
    proxy.set_mode(Mode::SwallowReplies);
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(incr(backend.clone())))
        .collect();
    let ran = || {
        redis::cmd("GET")
            .arg("inflight")
            .query::<Option<i64>>(&mut redis.conn())
            .unwrap()
    };
    support::wait_for("Redis to run both commands in flight", || {
        (ran() == Some(2)).then_some(())
    });

    // A third waits for a slot; by its deadline it gives up, certainly not sent.
    let third = incr(backend.bounded(Duration::from_millis(500)))
        .await
        .unwrap_err();
    assert!(third.to_string().contains("maxInFlight"), "{third}");
    assert!(third.certainly_not_run(), "{third}");
    assert_eq!(ran(), Some(2), "the third command reached Redis");
    for call in held {
        call.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dropped_while_dialling_gives_its_slot_back() {
    let redis = RedisProc::start();
    let proxy = Proxy::start(redis.port).await;
    let mut cfg = RedisConfig::standalone("127.0.0.1", proxy.port);
    cfg.pool_size = 1.try_into().unwrap();
    cfg.max_in_flight = 1.try_into().unwrap();
    let backend = RedisBackend::connect(cfg).await.unwrap();

    // Dials hang (the handshake is never answered) and their callers give up, as a
    // failover or a caller's timeout does.
    proxy.set_mode(Mode::SwallowReplies);
    for _ in 0..3 {
        let dropped = tokio::time::timeout(Duration::from_millis(200), backend.ping()).await;
        assert!(
            dropped.is_err(),
            "the ping finished although nothing answers"
        );
    }
    // The one slot is free again: had a dropped call kept it, this would wait for room
    // until its deadline and fail naming maxInFlight.
    proxy.set_mode(Mode::Pass);
    backend
        .bounded(Duration::from_secs(5))
        .ping()
        .await
        .expect("the slot was given back");
}
