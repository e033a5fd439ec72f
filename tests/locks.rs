//! Distributed locks: the same behaviour on the memory backend and on real Redis, then the
//! HTTP contract through the router in process, and a SIGTERM drain of the binary.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use blinkchamber::config::{LocksConfig, RedisConfig};
use blinkchamber::lock::{LockError, Locks};
use blinkchamber::{Backend, RedisBackend};
use serde_json::{Value, json};
use support::app::{App, json as json_request};
use support::serve::{Served, send};
use support::{RedisProc, Store, wait_for_async};

/// Locks on one store, a second instance on the same store (another process's view), and
/// the Redis process behind them (if any).
struct Fixture {
    locks: Locks,
    other: Locks,
    redis: Option<RedisProc>,
}

async fn fixture(store: Store) -> Fixture {
    let cfg = LocksConfig::default();
    match store {
        Store::Memory => {
            let locks = Locks::from_config(&cfg, &Backend::memory());
            Fixture {
                other: locks.clone(),
                locks,
                redis: None,
            }
        }
        Store::Redis => {
            let redis = RedisProc::start();
            let connect =
                || RedisBackend::connect(RedisConfig::standalone("127.0.0.1", redis.port));
            let locks = Locks::redis(&cfg, connect().await.unwrap());
            let other = Locks::redis(&cfg, connect().await.unwrap());
            locks.ready().await;
            other.ready().await;
            Fixture {
                locks,
                other,
                redis: Some(redis),
            }
        }
    }
}

const LONG: Duration = Duration::from_secs(60);

conformance!(fixture;
    one_holder_at_a_time_with_increasing_fencing_tokens,
    only_the_owner_extends_and_releases,
    an_expired_holder_cannot_release_or_extend,
    a_renewing_holder_keeps_the_lock_across_several_ttls,
    a_panic_inside_with_lock_releases_the_lock,
    a_release_wakes_a_waiting_acquirer,
    bad_names_and_ttls_are_refused,
    names_cannot_reach_other_keys,
    a_cancelled_with_lock_releases_the_lock,
    the_work_is_told_when_its_lease_is_lost,
    renewal_stops_at_the_maximum_hold_time,
);

async fn one_holder_at_a_time_with_increasing_fencing_tokens(f: &Fixture) {
    let inside = Arc::new(AtomicBool::new(false));
    let entered = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (locks, inside, entered) = (f.locks.clone(), inside.clone(), entered.clone());
            tokio::spawn(async move {
                locks
                    .with_lock(
                        "contended",
                        Duration::from_secs(30),
                        LONG,
                        |lease| async move {
                            assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                            entered.lock().unwrap().push(lease.fencing_token);
                            for _ in 0..3 {
                                tokio::task::yield_now().await;
                            }
                            inside.store(false, Ordering::SeqCst);
                        },
                    )
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let fences = entered.lock().unwrap().clone();
    assert_eq!(fences.len(), 200);
    assert!(
        fences.windows(2).all(|w| w[0] < w[1]),
        "fencing tokens must strictly increase in order of holding: {fences:?}"
    );
}

async fn only_the_owner_extends_and_releases(f: &Fixture) {
    let lease = f
        .locks
        .acquire("owned", LONG, Duration::ZERO)
        .await
        .unwrap();
    let other = "0".repeat(32);
    assert!(matches!(
        f.locks.release("owned", &other).await,
        Err(LockError::NotHeld { .. })
    ));
    assert!(matches!(
        f.locks.extend("owned", &other, LONG).await,
        Err(LockError::NotHeld { .. })
    ));
    assert!(matches!(
        f.locks.acquire("owned", LONG, Duration::ZERO).await,
        Err(LockError::Busy { .. })
    ));
    // The token is the owner (128 random bits, hex) and the fencing token it was issued
    // with; a shortened owner holds nothing.
    let (owner, fence) = lease.token.rsplit_once('.').unwrap();
    assert_eq!(owner.len(), 32, "{}", lease.token);
    assert!(owner.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(fence, lease.fencing_token.to_string());
    let shortened = format!("{}.{fence}", &owner[..31]);
    assert!(matches!(
        f.locks.extend("owned", &shortened, LONG).await,
        Err(LockError::NotHeld { .. })
    ));
    // The owner alone cannot be answered a fencing token, so it extends nothing.
    assert!(matches!(
        f.locks.extend("owned", owner, LONG).await,
        Err(LockError::NotHeld { .. })
    ));
    assert!(matches!(
        f.locks.release("owned", &shortened).await,
        Err(LockError::NotHeld { .. })
    ));
    let extended = f.locks.extend("owned", &lease.token, LONG).await.unwrap();
    assert_eq!(extended.fencing_token, lease.fencing_token);
    assert_eq!(extended.token, lease.token);
    f.locks.release("owned", &lease.token).await.unwrap();
    assert!(matches!(
        f.locks.release("owned", &lease.token).await,
        Err(LockError::NotHeld { .. })
    ));
    let next = f
        .locks
        .acquire("owned", LONG, Duration::ZERO)
        .await
        .unwrap();
    assert!(next.fencing_token > lease.fencing_token);
}

async fn an_expired_holder_cannot_release_or_extend(f: &Fixture) {
    let first = f
        .locks
        .acquire("expiring", Duration::from_millis(50), Duration::ZERO)
        .await
        .unwrap();
    let second = wait_for_async("the short lease to expire", || async {
        f.locks.acquire("expiring", LONG, Duration::ZERO).await.ok()
    })
    .await;
    assert!(second.fencing_token > first.fencing_token);
    assert!(matches!(
        f.locks.release("expiring", &first.token).await,
        Err(LockError::NotHeld { .. })
    ));
    assert!(matches!(
        f.locks.extend("expiring", &first.token, LONG).await,
        Err(LockError::NotHeld { .. })
    ));
    f.locks.release("expiring", &second.token).await.unwrap();
}

async fn a_renewing_holder_keeps_the_lock_across_several_ttls(f: &Fixture) {
    // Renewed every ttl / 3: a loaded machine may stall the renewal for a second without
    // the lease running out.
    let ttl = Duration::from_secs(2);
    let busy_answers = Arc::new(AtomicUsize::new(0));
    let counted = busy_answers.clone();
    let locks = f.locks.clone();
    f.locks
        .with_lock("renewed", ttl, Duration::ZERO, |_| async move {
            // Three TTLs pass while the holder works; nobody else gets the lock meanwhile.
            let until = tokio::time::Instant::now() + ttl * 3;
            while tokio::time::Instant::now() < until {
                match locks.acquire("renewed", ttl, Duration::ZERO).await {
                    Err(LockError::Busy { .. }) => counted.fetch_add(1, Ordering::Relaxed),
                    other => panic!("the renewed lock was taken: {other:?}"),
                };
                tokio::time::sleep(ttl / 4).await;
            }
        })
        .await
        .unwrap();
    // About twelve attempts, one every ttl / 4; a slow machine makes fewer.
    assert!(busy_answers.load(Ordering::Relaxed) >= 4);
    let after = f.locks.acquire("renewed", ttl, Duration::ZERO).await;
    assert!(after.is_ok(), "released after the work: {after:?}");
}

async fn the_work_is_told_when_its_lease_is_lost(f: &Fixture) {
    let ttl = Duration::from_millis(600);
    let locks = f.locks.clone();
    let outcome = f
        .locks
        .with_lock_watched(
            "told",
            ttl,
            Duration::ZERO,
            LONG,
            |lease, lost| async move {
                assert!(!lost.is_lost());
                // Someone with the token (an operator, a bug) releases it under the worker.
                locks.release("told", &lease.token).await.unwrap();
                tokio::select! {
                    () = lost.wait() => "stopped",
                    () = tokio::time::sleep(support::PATIENCE) => "never told",
                }
            },
        )
        .await;
    assert!(
        matches!(outcome, Err(LockError::Lost { .. })),
        "the result is withheld: {outcome:?}"
    );
}

async fn renewal_stops_at_the_maximum_hold_time(f: &Fixture) {
    let ttl = Duration::from_millis(600);
    let locks = f.locks.clone();
    let outcome = f
        .locks
        .with_lock_watched("bounded", ttl, Duration::ZERO, ttl, |_, lost| async move {
            lost.wait().await;
            // No longer renewed: the lease runs out and another acquirer gets it while
            // this work is still running.
            wait_for_async("the lease to run out after the maximum hold", || async {
                locks.acquire("bounded", LONG, Duration::ZERO).await.ok()
            })
            .await
        })
        .await;
    assert!(
        matches!(outcome, Err(LockError::Lost { .. })),
        "{outcome:?}"
    );
}

async fn a_panic_inside_with_lock_releases_the_lock(f: &Fixture) {
    let locks = f.locks.clone();
    let joined = tokio::spawn(async move {
        locks
            .with_lock("panicky", LONG, Duration::ZERO, |_| async {
                panic!("work failed");
            })
            .await
    })
    .await;
    assert!(joined.unwrap_err().is_panic());
    let lease = f.locks.acquire("panicky", LONG, Duration::ZERO).await;
    assert!(lease.is_ok(), "the panic released the lock: {lease:?}");
}

async fn a_release_wakes_a_waiting_acquirer(f: &Fixture) {
    // The holder's lease outlives the waiter's patience, so only a wake-up on release lets
    // the waiter in. On Redis the waiter is another instance, as in another process.
    let held = f
        .locks
        .acquire("wakeup", LONG, Duration::ZERO)
        .await
        .unwrap();
    let other = f.other.clone();
    let waiter =
        tokio::spawn(async move { other.acquire("wakeup", LONG, Duration::from_secs(30)).await });
    if let Some(redis) = &f.redis {
        // The waiter has tried once and marked the lease: it is waiting now.
        wait_for_async("the waiter to mark the lease", || async {
            let held: Option<String> = ::redis::cmd("GET")
                .arg("blinkchamber:lock:lease:wakeup")
                .query(&mut redis.conn())
                .unwrap();
            held.filter(|v| v.ends_with('!'))
        })
        .await;
    }
    f.locks.release("wakeup", &held.token).await.unwrap();
    let lease = waiter
        .await
        .unwrap()
        .expect("the waiter acquires after the release");
    assert!(lease.fencing_token > held.fencing_token);
}

async fn names_cannot_reach_other_keys(f: &Fixture) {
    let x = f.locks.acquire("x", LONG, Duration::ZERO).await.unwrap();
    // Names that spell other keys of the lock namespace are just names.
    for name in ["fence", "fence:x", "released", "lease:x", "x!"] {
        let lease = f.locks.acquire(name, LONG, Duration::ZERO).await.unwrap();
        assert!(lease.fencing_token > x.fencing_token, "{name}");
        f.locks.release(name, &lease.token).await.unwrap();
    }
    assert!(matches!(
        f.locks.acquire("x", LONG, Duration::ZERO).await,
        Err(LockError::Busy { .. })
    ));
    f.locks.release("x", &x.token).await.unwrap();
    let again = f.locks.acquire("x", LONG, Duration::ZERO).await.unwrap();
    assert!(again.fencing_token > x.fencing_token);
}

async fn a_cancelled_with_lock_releases_the_lock(f: &Fixture) {
    // A lease far longer than the test's patience: only a release frees it.
    let locks = f.locks.clone();
    let (started, working) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        locks
            .with_lock(
                "cancelled",
                Duration::from_secs(600),
                Duration::ZERO,
                |_| async move {
                    let _ = started.send(());
                    std::future::pending::<()>().await
                },
            )
            .await
    });
    working.await.expect("with_lock runs the work");
    assert!(matches!(
        f.other.acquire("cancelled", LONG, Duration::ZERO).await,
        Err(LockError::Busy { .. })
    ));
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    wait_for_async("the cancelled holder to release", || async {
        f.other
            .acquire("cancelled", LONG, Duration::ZERO)
            .await
            .ok()
    })
    .await;
}

async fn bad_names_and_ttls_are_refused(f: &Fixture) {
    for name in ["", "a\nb", &"x".repeat(300)] {
        assert!(matches!(
            f.locks.acquire(name, LONG, Duration::ZERO).await,
            Err(LockError::InvalidName(_))
        ));
    }
    assert!(matches!(
        f.locks.acquire("ok", Duration::ZERO, Duration::ZERO).await,
        Err(LockError::InvalidTtl)
    ));
}

async fn post(c: &reqwest::Client, url: &str, body: Value) -> (StatusCode, Value) {
    let (status, _, body) = send(c.post(url).json(&body)).await;
    (status, body)
}

#[tokio::test]
async fn http_acquire_extend_release() {
    let app = App::memory().await;
    let url = "/v1/locks/report-job";

    let (status, lease) = app.post_json(url, &json!({"ttl": "10s"})).await.parts();
    assert_eq!(status, StatusCode::CREATED, "{lease}");
    let token = lease["token"].as_str().unwrap().to_owned();
    assert_eq!(
        token,
        format!("{}.1", &token[..32]),
        "owner, then the fencing token"
    );
    assert_eq!(lease["fencingToken"], 1);
    assert!(
        lease["expiresAt"].as_str().unwrap().ends_with('Z'),
        "{lease}"
    );

    let (status, problem) = app.post_json(url, &json!({"wait": "0s"})).await.parts();
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["type"], "lock-busy");

    let (status, problem) = app.put_json(url, &json!({"token": "nope"})).await.parts();
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["type"], "lock-not-held");

    let (status, extended) = app
        .put_json(url, &json!({"token": token, "ttl": "20s"}))
        .await
        .parts();
    assert_eq!(status, StatusCode::OK, "{extended}");
    assert_eq!(extended["fencingToken"], 1);

    let release = || json_request(Method::DELETE, url, &json!({"token": token}));
    let (status, _) = app.send(release()).await.parts();
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, problem) = app.send(release()).await.parts();
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["type"], "lock-not-held");

    let (status, lease) = app.post_json(url, &json!({})).await.parts();
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(lease["fencingToken"], 2);

    let (status, problem) = app.post_json(url, &json!({"ttl": "11m"})).await.parts();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        problem["detail"].as_str().unwrap().contains("locks.maxTtl"),
        "{problem}"
    );

    let (status, problem) = app
        .post_json(url, &json!({"ttl": "5 seconds"}))
        .await
        .parts();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(problem["type"], "invalid-body", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("`ttl`"),
        "{problem}"
    );
}

#[tokio::test]
async fn sigterm_lets_a_waiting_request_finish() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = Served::start(dir.path(), "backend: memory\n", &["--no-auth"]).await;
    let c = support::http();
    let url = format!("{}/v1/locks/drain", served.api);
    let (status, _) = post(&c, &url, json!({"ttl": "1m"})).await;
    assert_eq!(status, StatusCode::CREATED);

    // A second acquirer waits for the lock: a request in flight.
    let waiting = tokio::spawn({
        let (c, url) = (c.clone(), url.clone());
        async move { post(&c, &url, json!({"wait": "2s"})).await }
    });
    let metrics = format!("{}/metrics", served.metrics);
    wait_for_async("the waiting request to reach the server", || {
        let request = c.get(&metrics).send();
        async {
            let text = request.await.ok()?.text().await.ok()?;
            // Registered (at 0) when the locks are made; counted once the waiter tried.
            text.lines()
                .any(|l| l.starts_with("blinkchamber_lock_contention_total") && !l.ends_with(" 0"))
                .then_some(())
        }
    })
    .await;
    let status = tokio::task::spawn_blocking(move || served.terminate())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
    let (code, problem) = waiting.await.unwrap();
    assert_eq!(
        code,
        StatusCode::CONFLICT,
        "the in-flight request was answered: {problem}"
    );
}

/// The lease script's answers, one integer per item, on a real Redis: a fencing token for
/// an acquisition, `-1 - remaining ms` for a name held by someone else (which it marks),
/// 1 or 0 for a release; numbers reserved for attempts that failed are skipped; and the
/// release of a marked lease publishes the name, cut from the lease's key.
/// A lease holds its owner alone (the fencing token travels in the caller's token); a
/// lease stored as `{owner}:{fence}` by an earlier release is still extended, answering
/// its fence, and released by a token that is all owner, as that release issued them.
#[tokio::test]
async fn leases_hold_the_owner_alone_and_earlier_leases_still_work() {
    let f = fixture(Store::Redis).await;
    let mut conn = f.redis.as_ref().unwrap().conn();
    let lease = f
        .locks
        .acquire("layout", LONG, Duration::ZERO)
        .await
        .unwrap();
    let stored: String = ::redis::cmd("GET")
        .arg("blinkchamber:lock:lease:layout")
        .query(&mut conn)
        .unwrap();
    assert_eq!(Some(stored.as_str()), lease.token.split('.').next());
    // The owner alone is refused, and the lease is left as it was.
    assert!(matches!(
        f.locks.extend("layout", &stored, LONG * 10).await,
        Err(LockError::NotHeld { .. })
    ));
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg("blinkchamber:lock:lease:layout")
        .query(&mut conn)
        .unwrap();
    assert!(
        (1..=60_000).contains(&ttl),
        "not extended by the owner alone: PTTL {ttl}"
    );

    let owner = "0123456789abcdef0123456789abcdef";
    let _: () = ::redis::cmd("SET")
        .arg("blinkchamber:lock:lease:earlier")
        .arg(format!("{owner}:7"))
        .arg("PX")
        .arg(5_000)
        .query(&mut conn)
        .unwrap();
    let extended = f.locks.extend("earlier", owner, LONG).await.unwrap();
    assert_eq!(extended.fencing_token, 7);
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg("blinkchamber:lock:lease:earlier")
        .query(&mut conn)
        .unwrap();
    assert!(ttl > 5_000, "extended to a minute from now: PTTL {ttl}");
    assert!(matches!(
        f.other.release("earlier", &owner[..31]).await,
        Err(LockError::NotHeld { .. })
    ));
    f.other.release("earlier", owner).await.unwrap();
    let exists: i64 = ::redis::cmd("EXISTS")
        .arg("blinkchamber:lock:lease:earlier")
        .query(&mut conn)
        .unwrap();
    assert_eq!(exists, 0);
}

#[test]
fn the_lease_script_answers_one_integer_per_item() {
    const LEASES: &str = include_str!("../src/lock/lua/leases.lua");
    let redis = RedisProc::start();
    let mut conn = redis.conn();
    let (fence, channel) = ("t:fence", "t:released");
    let lease = |name: &str| format!("t:lease:{name}");
    let script = ::redis::Script::new(LEASES);
    let call = |conn: &mut ::redis::Connection, items: &[(&str, &str, &str)]| -> Vec<i64> {
        let mut invocation = script.prepare_invoke();
        invocation.key(fence);
        for (name, _, _) in items {
            invocation.key(lease(name));
        }
        invocation.arg(channel);
        for (_, token, ms) in items {
            invocation.arg(*token).arg(*ms);
        }
        invocation.invoke(conn).unwrap()
    };

    let _: () = ::redis::cmd("SET")
        .arg(lease("busy"))
        .arg("other:1")
        .arg("PX")
        .arg(60_000)
        .query(&mut conn)
        .unwrap();
    // Two acquisitions in one call: the free name gets the first reserved number, the held
    // one answers how long it stays held; its number is a gap.
    let answer = call(
        &mut conn,
        &[("free", "me", "30000"), ("busy", "me", "30000")],
    );
    assert_eq!(answer.len(), 2);
    assert!(answer[0] >= 1, "{answer:?}");
    let left: i64 = ::redis::cmd("PTTL")
        .arg(lease("busy"))
        .query(&mut conn)
        .unwrap();
    let held_for = -1 - answer[1];
    assert!(
        (left..=60_000).contains(&held_for),
        "held for {held_for} ms, PTTL now {left}"
    );
    let counter: i64 = ::redis::cmd("GET").arg(fence).query(&mut conn).unwrap();
    assert_eq!(
        counter,
        answer[0] + 1,
        "one number per acquisition in the call"
    );
    let marked: String = ::redis::cmd("GET")
        .arg(lease("busy"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(marked, "other:1!");
    let taken: String = ::redis::cmd("GET")
        .arg(lease("free"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(taken, "me", "the lease is the owner's token alone");
    let next = call(&mut conn, &[("again", "me", "30000")]);
    assert!(next[0] > counter, "{next:?} after {counter}");

    // Releases: only the owner's counts; releasing the marked lease publishes its name.
    let mut listener = redis.conn();
    listener
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut pubsub = listener.as_pubsub();
    pubsub.subscribe(channel).unwrap();
    assert_eq!(
        call(
            &mut conn,
            &[("free", "someone-else", ""), ("free", "me", "")]
        ),
        [0, 1]
    );
    assert_eq!(call(&mut conn, &[("busy", "other", "")]), [1]);
    let message = pubsub.get_message().unwrap();
    assert_eq!(message.get_payload::<String>().unwrap(), "busy");
    let exists: i64 = ::redis::cmd("EXISTS")
        .arg(lease("free"))
        .arg(lease("busy"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(exists, 0);
}
