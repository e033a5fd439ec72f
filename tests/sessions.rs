//! Sessions: the same behaviour on the memory backend and on real Redis, timeouts on a
//! paused clock (memory) and on Redis's own clock, the HTTP contract through the
//! router in process, and the cookie layer.

mod support;

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Method, StatusCode};
use blinkchamber::config::{RedisConfig, SessionsConfig};
use blinkchamber::server::request_id;
use blinkchamber::session::{SessionError, SessionKind, Sessions};
use blinkchamber::{Backend, RedisBackend};
use serde_json::{Value, json};
use support::app::{App, request, with_json};
use support::{RedisProc, Store, wait_for_async};

/// Sessions on one store, a second instance on the same store (another process's view),
/// and the Redis process behind them (if any).
struct Fixture {
    sessions: Sessions,
    other: Sessions,
    redis: Option<RedisProc>,
}

async fn fixture(store: Store) -> Fixture {
    fixture_with(store, SessionsConfig::default()).await
}

async fn fixture_with(store: Store, cfg: SessionsConfig) -> Fixture {
    match store {
        Store::Memory => {
            let sessions = Sessions::from_config(&cfg, &Backend::memory());
            Fixture {
                other: sessions.clone(),
                sessions,
                redis: None,
            }
        }
        Store::Redis => {
            let redis = RedisProc::start();
            let connect =
                || RedisBackend::connect(RedisConfig::standalone("127.0.0.1", redis.port));
            Fixture {
                sessions: Sessions::redis(&cfg, connect().await.unwrap()),
                other: Sessions::redis(&cfg, connect().await.unwrap()),
                redis: Some(redis),
            }
        }
    }
}

conformance!(fixture;
    a_created_session_reads_back_with_its_timeouts,
    unknown_and_malformed_ids_are_not_found,
    concurrent_compare_and_set_updates_never_lose_a_write,
    a_stale_version_is_a_conflict_and_changes_nothing,
    an_update_keeps_the_expiry,
    rotation_kills_the_old_id_and_keeps_the_rest,
    revoke_all_removes_every_session_of_the_user_and_only_theirs,
    a_deleted_session_is_gone,
    touch_renews_the_idle_deadline,
    invalid_user_ids_are_refused,
    a_user_at_the_limit_loses_the_sessions_closest_to_their_end,
);

async fn a_created_session_reads_back_with_its_timeouts(f: &Fixture) {
    let data = json!({"roles": ["viewer"], "n": 1, "nested": {"x": [1, 2.5, null]}});
    let s = f
        .sessions
        .create("alice", SessionKind::User, data.clone())
        .await
        .unwrap();
    assert_eq!(s.id.len(), 43);
    assert_eq!(
        (s.user_id.as_str(), s.kind, s.version),
        ("alice", SessionKind::User, 1)
    );
    assert_eq!(s.data, data);
    let cfg = SessionsConfig::default();
    assert_eq!(
        s.expires_at.duration_since(s.created_at).unwrap(),
        cfg.user.absolute_timeout
    );
    let idle = s.idle_expires_at.duration_since(s.created_at).unwrap();
    assert!(
        idle <= cfg.user.idle_timeout && idle + Duration::from_secs(5) > cfg.user.idle_timeout,
        "{idle:?}"
    );

    let read = f.other.get(&s.id).await.unwrap();
    assert_eq!(
        (
            &read.id,
            &read.data,
            read.version,
            read.created_at,
            read.expires_at
        ),
        (&s.id, &data, 1, s.created_at, s.expires_at)
    );

    let admin = f
        .sessions
        .create("alice", SessionKind::Admin, json!(null))
        .await
        .unwrap();
    assert_eq!(admin.kind, SessionKind::Admin);
    assert_eq!(
        admin.expires_at.duration_since(admin.created_at).unwrap(),
        cfg.admin.absolute_timeout
    );
    assert!(
        admin
            .idle_expires_at
            .duration_since(admin.created_at)
            .unwrap()
            <= cfg.admin.idle_timeout
    );
    assert_ne!(admin.id, s.id);
    let listed: Vec<String> = f
        .other
        .list_user("alice")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.handle)
        .collect();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&s.handle) && listed.contains(&admin.handle));
    // A handle is not an id: presented as one, it finds nothing.
    assert!(matches!(
        f.sessions.get(&s.handle).await,
        Err(SessionError::NotFound)
    ));
}

async fn unknown_and_malformed_ids_are_not_found(f: &Fixture) {
    let unknown = blinkchamber::session::id::new_id();
    assert!(matches!(
        f.sessions.get(&unknown).await,
        Err(SessionError::NotFound)
    ));
    assert!(matches!(
        f.sessions.touch(&unknown).await,
        Err(SessionError::NotFound)
    ));
    assert!(matches!(
        f.sessions.rotate(&unknown).await,
        Err(SessionError::NotFound)
    ));
    assert!(matches!(
        f.sessions.delete(&unknown).await,
        Err(SessionError::NotFound)
    ));
    assert!(matches!(
        f.sessions.update(&unknown, json!({}), 1).await,
        Err(SessionError::NotFound)
    ));
    for id in ["", "x", "../../etc", &"*".repeat(43)] {
        assert!(
            matches!(f.sessions.get(id).await, Err(SessionError::NotFound)),
            "{id}"
        );
    }
}

async fn concurrent_compare_and_set_updates_never_lose_a_write(f: &Fixture) {
    const TASKS: u64 = 20;
    const EACH: u64 = 10;
    let s = f
        .sessions
        .create("counter", SessionKind::User, json!({"count": 0}))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            // Half the writers go through the second instance.
            let sessions = if i % 2 == 0 {
                f.sessions.clone()
            } else {
                f.other.clone()
            };
            let id = s.id.clone();
            tokio::spawn(async move {
                let mut conflicts = 0u64;
                for _ in 0..EACH {
                    loop {
                        let current = sessions.get(&id).await.unwrap();
                        let count = current.data["count"].as_u64().unwrap();
                        match sessions
                            .update(&id, json!({"count": count + 1}), current.version)
                            .await
                        {
                            Ok(_) => break,
                            Err(SessionError::VersionConflict { expected, current }) => {
                                assert!(current > expected);
                                conflicts += 1;
                            }
                            Err(e) => panic!("update failed: {e}"),
                        }
                        tokio::task::yield_now().await;
                    }
                }
                conflicts
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let last = f.sessions.get(&s.id).await.unwrap();
    assert_eq!(last.data["count"], TASKS * EACH);
    assert_eq!(last.version, 1 + TASKS * EACH);
}

async fn a_stale_version_is_a_conflict_and_changes_nothing(f: &Fixture) {
    let s = f
        .sessions
        .create("bob", SessionKind::User, json!({"v": "a"}))
        .await
        .unwrap();
    let first = f
        .sessions
        .update(&s.id, json!({"v": "b"}), 1)
        .await
        .unwrap();
    assert_eq!((first.version, &first.data), (2, &json!({"v": "b"})));
    match f.other.update(&s.id, json!({"v": "c"}), 1).await {
        Err(SessionError::VersionConflict {
            expected: 1,
            current: 2,
        }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    match f.other.update(&s.id, json!({"v": "c"}), 7).await {
        Err(SessionError::VersionConflict {
            expected: 7,
            current: 2,
        }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    let read = f.sessions.get(&s.id).await.unwrap();
    assert_eq!((read.version, &read.data), (2, &json!({"v": "b"})));
}

async fn an_update_keeps_the_expiry(f: &Fixture) {
    let s = f
        .sessions
        .create("carol", SessionKind::User, json!(1))
        .await
        .unwrap();
    // Let time pass, so a renewed idle deadline would be visibly later.
    wait_for_async("200ms to pass", || async {
        (SystemTime::now() > s.created_at + Duration::from_millis(200)).then_some(())
    })
    .await;
    let updated = f.sessions.update(&s.id, json!(2), 1).await.unwrap();
    assert_eq!(updated.expires_at, s.expires_at);
    assert_eq!(updated.created_at, s.created_at);
    let drift = updated
        .idle_expires_at
        .duration_since(s.idle_expires_at)
        .unwrap_or_else(|e| e.duration());
    assert!(
        drift < Duration::from_millis(100),
        "idle deadline moved by {drift:?}"
    );
}

async fn rotation_kills_the_old_id_and_keeps_the_rest(f: &Fixture) {
    let s = f
        .sessions
        .create("dave", SessionKind::Admin, json!({"a": 1}))
        .await
        .unwrap();
    let s = f.sessions.update(&s.id, json!({"a": 2}), 1).await.unwrap();
    let rotated = f.other.rotate(&s.id).await.unwrap();
    assert_ne!(rotated.id, s.id);
    assert_eq!(rotated.id.len(), 43);
    assert_eq!(
        (
            &rotated.user_id,
            rotated.kind,
            &rotated.data,
            rotated.version
        ),
        (&s.user_id, s.kind, &s.data, s.version)
    );
    assert_eq!(
        (rotated.created_at, rotated.expires_at),
        (s.created_at, s.expires_at)
    );

    assert!(matches!(
        f.sessions.get(&s.id).await,
        Err(SessionError::NotFound)
    ));
    assert!(matches!(
        f.sessions.touch(&s.id).await,
        Err(SessionError::NotFound)
    ));
    assert!(matches!(
        f.sessions.rotate(&s.id).await,
        Err(SessionError::NotFound)
    ));
    assert!(matches!(
        f.sessions.update(&s.id, json!(0), 2).await,
        Err(SessionError::NotFound)
    ));
    assert!(matches!(
        f.sessions.delete(&s.id).await,
        Err(SessionError::NotFound)
    ));

    assert_eq!(
        f.sessions.get(&rotated.id).await.unwrap().data,
        json!({"a": 2})
    );
    let listed: Vec<String> = f
        .sessions
        .list_user("dave")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.handle)
        .collect();
    assert_eq!(listed, vec![rotated.handle.clone()]);
    // Revoking the user reaches the rotated session.
    assert_eq!(f.sessions.revoke_user("dave").await.unwrap(), 1);
    assert!(matches!(
        f.sessions.get(&rotated.id).await,
        Err(SessionError::NotFound)
    ));
}

async fn revoke_all_removes_every_session_of_the_user_and_only_theirs(f: &Fixture) {
    let mut erin = Vec::new();
    for kind in [SessionKind::User, SessionKind::Admin, SessionKind::User] {
        erin.push(f.sessions.create("erin", kind, json!({})).await.unwrap().id);
    }
    let mut frank = HashSet::new();
    for _ in 0..2 {
        frank.insert(
            f.sessions
                .create("frank", SessionKind::User, json!({}))
                .await
                .unwrap()
                .id,
        );
    }
    // A user id that extends erin's must not be caught by her revocation.
    let erin2 = f
        .sessions
        .create("erin2", SessionKind::User, json!({}))
        .await
        .unwrap()
        .id;

    assert_eq!(f.other.revoke_user("erin").await.unwrap(), 3);
    for id in &erin {
        assert!(matches!(
            f.sessions.get(id).await,
            Err(SessionError::NotFound)
        ));
    }
    assert!(f.sessions.list_user("erin").await.unwrap().is_empty());
    let left: HashSet<String> = f
        .sessions
        .list_user("frank")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.handle)
        .collect();
    let frank_handles: HashSet<String> = frank
        .iter()
        .map(|id| blinkchamber::session::id::handle(id))
        .collect();
    assert_eq!(left, frank_handles);
    for id in frank.iter().chain([&erin2]) {
        f.sessions.get(id).await.unwrap();
    }
    assert_eq!(f.sessions.revoke_user("erin").await.unwrap(), 0);
    assert_eq!(f.sessions.revoke_user("nobody").await.unwrap(), 0);

    // Erin can sign in again after logging out everywhere.
    let again = f
        .sessions
        .create("erin", SessionKind::User, json!({}))
        .await
        .unwrap();
    assert_eq!(f.sessions.list_user("erin").await.unwrap().len(), 1);
    f.sessions.get(&again.id).await.unwrap();
}

async fn a_deleted_session_is_gone(f: &Fixture) {
    let keep = f
        .sessions
        .create("gina", SessionKind::User, json!({}))
        .await
        .unwrap();
    let s = f
        .sessions
        .create("gina", SessionKind::User, json!({}))
        .await
        .unwrap();
    f.other.delete(&s.id).await.unwrap();
    assert!(matches!(
        f.sessions.get(&s.id).await,
        Err(SessionError::NotFound)
    ));
    assert!(matches!(
        f.sessions.delete(&s.id).await,
        Err(SessionError::NotFound)
    ));
    let listed: Vec<String> = f
        .sessions
        .list_user("gina")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.handle)
        .collect();
    assert_eq!(listed, vec![keep.handle.clone()]);
    if let Some(redis) = &f.redis {
        let mut conn = redis.conn();
        let exists: bool = ::redis::cmd("EXISTS")
            .arg(format!("blinkchamber:session:s:{}", s.handle))
            .query(&mut conn)
            .unwrap();
        let indexed: Option<f64> = ::redis::cmd("ZSCORE")
            .arg("blinkchamber:session:u:gina")
            .arg(&s.handle)
            .query(&mut conn)
            .unwrap();
        assert!(
            !exists && indexed.is_none(),
            "the deleted session left a trace"
        );
    }
}

async fn touch_renews_the_idle_deadline(f: &Fixture) {
    let s = f
        .sessions
        .create("hank", SessionKind::User, json!({}))
        .await
        .unwrap();
    // Past the renewal step (at most a second): a touch within it writes nothing.
    wait_for_async("1200ms to pass", || async {
        (SystemTime::now() > s.created_at + Duration::from_millis(1200)).then_some(())
    })
    .await;
    // A plain read does not renew.
    let read = f.sessions.get(&s.id).await.unwrap();
    let drift = read
        .idle_expires_at
        .duration_since(s.idle_expires_at)
        .unwrap_or_else(|e| e.duration());
    assert!(
        drift < Duration::from_millis(100),
        "a read moved the deadline by {drift:?}"
    );
    let touched = f.other.touch(&s.id).await.unwrap();
    assert!(
        touched.idle_expires_at >= s.idle_expires_at + Duration::from_millis(1100),
        "{:?} -> {:?}",
        s.idle_expires_at,
        touched.idle_expires_at
    );
    assert_eq!((touched.version, touched.expires_at), (1, s.expires_at));
}

async fn invalid_user_ids_are_refused(f: &Fixture) {
    for user in ["", "a\nb", &"u".repeat(300)] {
        assert!(matches!(
            f.sessions.create(user, SessionKind::User, json!({})).await,
            Err(SessionError::InvalidUserId(_))
        ));
        assert!(matches!(
            f.sessions.list_user(user).await,
            Err(SessionError::InvalidUserId(_))
        ));
        assert!(matches!(
            f.sessions.revoke_user(user).await,
            Err(SessionError::InvalidUserId(_))
        ));
    }
}

/// Sessions on the fixture's store with at most `max` sessions per user.
async fn limited(f: &Fixture, max: u32) -> Sessions {
    let cfg = SessionsConfig::default()
        .with_key_prefix("limited:")
        .with_max_per_user(std::num::NonZeroU32::new(max).unwrap());
    match &f.redis {
        None => Sessions::memory(&cfg),
        Some(redis) => {
            let backend = RedisBackend::connect(RedisConfig::standalone("127.0.0.1", redis.port));
            Sessions::redis(&cfg, backend.await.unwrap())
        }
    }
}

async fn a_user_at_the_limit_loses_the_sessions_closest_to_their_end(f: &Fixture) {
    let sessions = limited(f, 3).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let s = sessions
            .create("quinn", SessionKind::User, json!({}))
            .await
            .unwrap();
        // Distinct creation times, so the oldest is also the one closest to its end.
        wait_for_async("the clock to move on", || async {
            (SystemTime::now() > s.created_at + Duration::from_millis(5)).then_some(())
        })
        .await;
        ids.push(s.id);
    }
    let others: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(
                sessions
                    .create("rita", SessionKind::User, json!({}))
                    .await
                    .unwrap()
                    .id,
            );
        }
        v
    };
    let fourth = sessions
        .create("quinn", SessionKind::User, json!({}))
        .await
        .unwrap();
    assert!(matches!(
        sessions.get(&ids[0]).await,
        Err(SessionError::NotFound)
    ));
    for id in ids[1..].iter().chain([&fourth.id]).chain(&others) {
        sessions.get(id).await.unwrap();
    }
    assert_eq!(sessions.list_user("quinn").await.unwrap().len(), 3);

    // Under the limit again after a logout: nothing more is ended.
    sessions.delete(&ids[1]).await.unwrap();
    let fifth = sessions
        .create("quinn", SessionKind::User, json!({}))
        .await
        .unwrap();
    for id in [&ids[2], &fourth.id, &fifth.id] {
        sessions.get(id).await.unwrap();
    }
}

// ---- Timeouts on a paused clock (memory) ----

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn memory_idle_timeout_ends_an_untouched_session() {
    let sessions = Sessions::memory(&SessionsConfig::default());
    let s = sessions
        .create("ivy", SessionKind::User, json!({}))
        .await
        .unwrap();
    tokio::time::advance(29 * MINUTE).await;
    sessions.touch(&s.id).await.unwrap();
    tokio::time::advance(29 * MINUTE).await;
    // 58 minutes old, 29 since the touch: alive; reads do not renew.
    sessions.get(&s.id).await.unwrap();
    tokio::time::advance(2 * MINUTE).await;
    assert!(matches!(
        sessions.get(&s.id).await,
        Err(SessionError::NotFound)
    ));
    assert!(matches!(
        sessions.touch(&s.id).await,
        Err(SessionError::NotFound)
    ));
    assert!(sessions.list_user("ivy").await.unwrap().is_empty());
    assert_eq!(sessions.revoke_user("ivy").await.unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn memory_absolute_timeout_ends_an_active_session() {
    let sessions = Sessions::memory(&SessionsConfig::default());
    let s = sessions
        .create("jack", SessionKind::User, json!({}))
        .await
        .unwrap();
    // Touched every 20 minutes: the idle timeout never ends it, the absolute one does.
    let mut last = s.clone();
    for _ in 0..(24 * 3 - 1) {
        tokio::time::advance(20 * MINUTE).await;
        last = sessions.touch(&s.id).await.unwrap();
        assert!(last.idle_expires_at <= s.expires_at);
    }
    assert_eq!(
        last.idle_expires_at, s.expires_at,
        "the idle deadline is capped"
    );
    tokio::time::advance(20 * MINUTE).await;
    assert!(matches!(
        sessions.touch(&s.id).await,
        Err(SessionError::NotFound)
    ));
}

#[tokio::test(start_paused = true)]
async fn memory_admin_sessions_have_stricter_timeouts() {
    let sessions = Sessions::memory(&SessionsConfig::default());
    let user = sessions
        .create("kim", SessionKind::User, json!({}))
        .await
        .unwrap();
    let admin = sessions
        .create("kim", SessionKind::Admin, json!({}))
        .await
        .unwrap();
    tokio::time::advance(16 * MINUTE).await;
    assert!(matches!(
        sessions.get(&admin.id).await,
        Err(SessionError::NotFound)
    ));
    sessions.touch(&user.id).await.unwrap();

    let admin = sessions
        .create("kim", SessionKind::Admin, json!({}))
        .await
        .unwrap();
    for _ in 0..(8 * 6 - 1) {
        tokio::time::advance(10 * MINUTE).await;
        sessions.touch(&admin.id).await.unwrap();
    }
    tokio::time::advance(10 * MINUTE).await;
    assert!(matches!(
        sessions.touch(&admin.id).await,
        Err(SessionError::NotFound)
    ));
}

#[tokio::test(start_paused = true)]
async fn memory_rotation_keeps_the_absolute_end() {
    let sessions = Sessions::memory(&SessionsConfig::default());
    let s = sessions
        .create("lee", SessionKind::Admin, json!({}))
        .await
        .unwrap();
    let mut id = s.id.clone();
    for _ in 0..(8 * 6 - 1) {
        tokio::time::advance(10 * MINUTE).await;
        id = sessions.rotate(&id).await.unwrap().id;
    }
    tokio::time::advance(10 * MINUTE).await;
    assert!(matches!(
        sessions.get(&id).await,
        Err(SessionError::NotFound)
    ));
}

// ---- Timeouts on Redis's clock ----

fn short(absolute: Duration, idle: Duration) -> SessionsConfig {
    SessionsConfig::default().with_user_timeouts(absolute, idle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_idle_timeout_ends_an_untouched_session_and_prunes_the_index() {
    let f = fixture_with(
        Store::Redis,
        short(Duration::from_secs(3600), Duration::from_secs(1)),
    )
    .await;
    let redis = f.redis.as_ref().unwrap();
    let s = f
        .sessions
        .create("mia", SessionKind::User, json!({}))
        .await
        .unwrap();
    let index = "blinkchamber:session:u:mia";
    let pttl: i64 = ::redis::cmd("PTTL")
        .arg(index)
        .query(&mut redis.conn())
        .unwrap();
    assert!(pttl > 0, "the index expires: {pttl}");
    wait_for_async("the idle session to end", || async {
        matches!(f.sessions.get(&s.id).await, Err(SessionError::NotFound)).then_some(())
    })
    .await;
    // Dead members leave the index when the user's sessions are listed.
    let fresh = f
        .sessions
        .create("mia", SessionKind::User, json!({}))
        .await
        .unwrap();
    let listed = f.sessions.list_user("mia").await.unwrap();
    assert_eq!(listed.len(), 1);
    let members: Vec<String> = ::redis::cmd("ZRANGE")
        .arg(index)
        .arg(0)
        .arg(-1)
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(members, vec![fresh.handle]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_touch_within_the_renewal_step_writes_nothing() {
    // Idle timeout 10 minutes: the renewal step is its hundredth, capped at one second.
    let f = fixture_with(
        Store::Redis,
        short(Duration::from_secs(3600), Duration::from_secs(600)),
    )
    .await;
    let redis = f.redis.as_ref().unwrap();
    let s = f
        .sessions
        .create("ola", SessionKind::User, json!({"n": 1}))
        .await
        .unwrap();
    let key = format!("blinkchamber:session:s:{}", s.handle);
    let redis_ms = || -> u64 {
        let (secs, micros): (u64, u64) = ::redis::cmd("TIME").query(&mut redis.conn()).unwrap();
        secs * 1000 + micros / 1000
    };
    // Writes `deadline` into the stored value (its offset in the layout) and answers what
    // a touch then reports, with Redis's clock before and after.
    let touch_with = |deadline: u64| {
        let key = key.clone();
        let sessions = f.sessions.clone();
        let id = s.id.clone();
        async move {
            let _: i64 = ::redis::cmd("SETRANGE")
                .arg(&key)
                .arg(66)
                .arg(format!("{deadline:013}"))
                .query(&mut redis.conn())
                .unwrap();
            let touched = sessions.touch(&id).await.unwrap();
            let ms = touched
                .idle_expires_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            (ms, touched.data)
        }
    };
    // Half a step short of a full renewal: answered as stored, unwritten. Only decided
    // when Redis's clock moved less than half a step meanwhile.
    wait_for_async("a touch within half a step of the clock", || async {
        let before = redis_ms();
        let stored = before + 600_000 - 500;
        let (answered, data) = touch_with(stored).await;
        if redis_ms() - before >= 500 {
            return None;
        }
        assert_eq!(answered, stored, "a touch within the step wrote");
        assert_eq!(data, json!({"n": 1}));
        let value: Vec<u8> = ::redis::cmd("GET")
            .arg(&key)
            .query(&mut redis.conn())
            .unwrap();
        assert_eq!(&value[66..79], format!("{stored:013}").as_bytes());
        Some(())
    })
    .await;
    // Two steps short: renewed to a full idle timeout from now, and the PTTL with it.
    let _: i64 = ::redis::cmd("PEXPIRE")
        .arg(&key)
        .arg(10_000)
        .query(&mut redis.conn())
        .unwrap();
    let before = redis_ms();
    let (answered, data) = touch_with(before + 600_000 - 2000).await;
    assert!(
        answered >= before + 600_000,
        "not renewed: {answered} < {before} + 10 min"
    );
    assert_eq!(data, json!({"n": 1}));
    let pttl: u64 = ::redis::cmd("PTTL")
        .arg(&key)
        .query(&mut redis.conn())
        .unwrap();
    assert!(pttl > 500_000, "the PTTL did not move: {pttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_absolute_timeout_ends_a_touched_session() {
    let f = fixture_with(
        Store::Redis,
        short(Duration::from_secs(1), Duration::from_secs(3600)),
    )
    .await;
    let s = f
        .sessions
        .create("ned", SessionKind::User, json!({}))
        .await
        .unwrap();
    assert!(s.idle_expires_at <= s.expires_at);
    // Touched all the time: only the absolute end can end it.
    wait_for_async("the session to reach its absolute end", || async {
        match f.sessions.touch(&s.id).await {
            Ok(t) => {
                assert!(
                    t.idle_expires_at <= s.expires_at,
                    "touch went past the absolute end"
                );
                None
            }
            Err(SessionError::NotFound) => Some(()),
            Err(e) => panic!("{e}"),
        }
    })
    .await;
    assert!(f.sessions.list_user("ned").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_updates_of_any_length_keep_the_expiry_and_leave_no_stale_bytes() {
    let f = fixture(Store::Redis).await;
    let redis = f.redis.as_ref().unwrap();
    let mut conn = redis.conn();
    let s = f
        .sessions
        .create("quinn", SessionKind::User, json!({"note": "aaaa"}))
        .await
        .unwrap();
    let key = format!("blinkchamber:session:s:{}", s.handle);
    let value = |conn: &mut ::redis::Connection| -> String {
        ::redis::cmd("GET").arg(&key).query(conn).unwrap()
    };
    let before = value(&mut conn);
    // A short expiry, so a write that dropped it or set a new one shows.
    let _: i64 = ::redis::cmd("PEXPIRE")
        .arg(&key)
        .arg(600_000)
        .query(&mut conn)
        .unwrap();
    // The same length (written in place), longer, then shorter than before.
    let mut version = s.version;
    for note in ["bbbb", "a much longer note than before", "c"] {
        let data = json!({ "note": note });
        let updated = f
            .sessions
            .update(&s.id, data.clone(), version)
            .await
            .unwrap();
        version = updated.version;
        let stored = value(&mut conn);
        let (head, body) = stored.split_once('\n').unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(body).unwrap(),
            data,
            "{stored}"
        );
        assert_eq!(
            head.split(' ').nth(1),
            Some(format!("{version:020}").as_str())
        );
        assert_eq!(f.other.get(&s.id).await.unwrap().data, data);
        let pttl: i64 = ::redis::cmd("PTTL").arg(&key).query(&mut conn).unwrap();
        assert!(
            pttl > 0 && pttl <= 600_000,
            "{note}: the expiry moved: {pttl}"
        );
    }
    assert!(value(&mut conn).len() < before.len());

    // A header longer than the script reads at first (a long user id) is read whole.
    let user = "u".repeat(200);
    let long = f
        .sessions
        .create(&user, SessionKind::User, json!({"note": "aaaa"}))
        .await
        .unwrap();
    let data = json!({"note": "b"});
    let updated = f
        .sessions
        .update(&long.id, data.clone(), long.version)
        .await
        .unwrap();
    assert_eq!(updated.user_id, user);
    assert_eq!(updated.version, long.version + 1);
    let read = f.other.get(&long.id).await.unwrap();
    assert_eq!((read.data, read.user_id), (data, user));

    // A value at the expected version but with no header is reported, not overwritten.
    let broken = f
        .sessions
        .create("rae", SessionKind::User, json!({}))
        .await
        .unwrap();
    let key = format!("blinkchamber:session:s:{}", broken.handle);
    let stored = format!("s1 {:020} no header here", broken.version);
    let _: () = ::redis::cmd("SET")
        .arg(&key)
        .arg(&stored)
        .query(&mut conn)
        .unwrap();
    let refused = f
        .sessions
        .update(&broken.id, json!({"note": "x"}), broken.version)
        .await;
    assert!(
        matches!(refused, Err(SessionError::Decode(_))),
        "{refused:?}"
    );
    let after: String = ::redis::cmd("GET").arg(&key).query(&mut conn).unwrap();
    assert_eq!(after, stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keys_are_readable_and_hold_no_session_id() {
    let f = fixture(Store::Redis).await;
    let redis = f.redis.as_ref().unwrap();
    let s = f
        .sessions
        .create("olga", SessionKind::Admin, json!({"theme": "dark"}))
        .await
        .unwrap();
    let mut conn = redis.conn();
    assert_eq!(s.handle, blinkchamber::session::id::handle(&s.id));
    let key = format!("blinkchamber:session:s:{}", s.handle);
    let value: String = ::redis::cmd("GET").arg(&key).query(&mut conn).unwrap();
    // `s1 <version> <created> <expires> <idle> <deadline> <kind> <user>\n<data>`
    let (head, data) = value.split_once('\n').unwrap();
    let fields: Vec<&str> = head.splitn(8, ' ').collect();
    assert_eq!(fields[0], "s1", "{value}");
    assert_eq!(fields[1].parse::<u64>().unwrap(), 1, "{value}");
    let [created, expires, idle, deadline] =
        [fields[2], fields[3], fields[4], fields[5]].map(|n| n.parse::<u64>().unwrap());
    assert_eq!(idle, 15 * 60 * 1000, "{value}");
    assert!(created < deadline && deadline <= expires, "{value}");
    assert_eq!((fields[6], fields[7]), ("admin", "olga"), "{value}");
    assert_eq!(
        serde_json::from_str::<Value>(data).unwrap(),
        json!({"theme": "dark"})
    );
    let pttl: i64 = ::redis::cmd("PTTL").arg(&key).query(&mut conn).unwrap();
    assert!(pttl > 0 && pttl <= 15 * 60 * 1000, "{pttl}");
    let score: f64 = ::redis::cmd("ZSCORE")
        .arg("blinkchamber:session:u:olga")
        .arg(&s.handle)
        .query(&mut conn)
        .unwrap();
    assert_eq!(score as u64, expires);
    // After every operation, the id appears nowhere at rest: not in a key name, not in a
    // value, not in an index.
    let s = f
        .sessions
        .update(&s.id, json!({"theme": "light"}), 1)
        .await
        .unwrap();
    f.sessions.touch(&s.id).await.unwrap();
    let rotated = f.sessions.rotate(&s.id).await.unwrap();
    f.sessions
        .create("olga", SessionKind::User, json!({}))
        .await
        .unwrap();
    let dump = support::dump_keys(&mut conn);
    for id in [&s.id, &rotated.id] {
        assert!(!dump.contains(id.as_str()), "a session id at rest:\n{dump}");
    }
    assert!(dump.contains(&rotated.handle), "{dump}");
}

// ---- HTTP ----

/// Every request of these tests carries this request id, so problem details of two
/// requests (which echo it as `requestId`) compare equal as a whole.
const REQUEST_ID: &str = "sessions-http";

/// `method path`, naming the session `id` in its header when given.
fn req(method: Method, path: &str, id: Option<&str>) -> axum::http::request::Builder {
    let builder = request(method, path).header(request_id::HEADER, REQUEST_ID);
    match id {
        Some(id) => builder.header("Session-Id", id),
        None => builder,
    }
}

async fn send(app: &App, builder: axum::http::request::Builder) -> (StatusCode, Value) {
    app.send(builder.body(Body::empty()).unwrap()).await.parts()
}

async fn send_json(
    app: &App,
    builder: axum::http::request::Builder,
    body: Value,
) -> (StatusCode, Value) {
    app.send(with_json(builder, &body)).await.parts()
}

#[tokio::test]
async fn http_session_lifecycle() {
    let app = App::memory().await;
    let base = "/v1/sessions";

    let (status, s) = send_json(
        &app,
        req(Method::POST, base, None),
        json!({"userId": "u1", "data": {"cart": []}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    let id = s["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 43);
    assert_eq!(
        (s["userId"].clone(), s["kind"].clone(), s["version"].clone()),
        (json!("u1"), json!("user"), json!(1))
    );
    assert_eq!(s["data"], json!({"cart": []}));
    for field in ["createdAt", "expiresAt", "idleExpiresAt"] {
        let t = s[field].as_str().unwrap();
        assert!(
            humantime::parse_rfc3339(t).is_ok() && t.ends_with('Z'),
            "{field}: {t}"
        );
    }
    // The routes on one session take its id in a header, never in the URL.
    let one = "/v1/session";
    assert!(!s["handle"].as_str().unwrap().is_empty());

    let (status, read) = send(&app, req(Method::GET, one, Some(&id))).await;
    assert_eq!(
        (status, read["id"].as_str()),
        (StatusCode::OK, Some(id.as_str()))
    );

    let (status, updated) = send_json(
        &app,
        req(Method::PUT, one, Some(&id)),
        json!({"data": {"cart": [1]}, "version": 1}),
    )
    .await;
    assert_eq!(
        (status, updated["version"].clone()),
        (StatusCode::OK, json!(2)),
        "{updated}"
    );
    let (status, problem) = send_json(
        &app,
        req(Method::PUT, one, Some(&id)),
        json!({"data": {"cart": [2]}, "version": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["type"], "session-version-conflict");
    assert!(
        problem["detail"].as_str().unwrap().contains("current is 2"),
        "{problem}"
    );

    let (status, touched) = send(&app, req(Method::POST, "/v1/session/touch", Some(&id))).await;
    assert_eq!(
        (status, touched["version"].clone()),
        (StatusCode::OK, json!(2))
    );

    let (status, rotated) = send(&app, req(Method::POST, "/v1/session/rotate", Some(&id))).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_id = rotated["id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, id);
    assert_eq!(rotated["data"], json!({"cart": [1]}));
    assert_eq!(rotated["expiresAt"], s["expiresAt"]);

    // Rotated away, unknown and deleted answer the same 404.
    let (status, gone) = send(&app, req(Method::GET, one, Some(&id))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let unknown = blinkchamber::session::id::new_id();
    let (status, never) = send(&app, req(Method::GET, one, Some(&unknown))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(gone, never);
    assert_eq!(never["type"], "not-found");
    // Without the header: a 400 naming it.
    let (status, problem) = send(&app, req(Method::GET, one, None)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        problem["detail"].as_str().unwrap().contains("Session-Id"),
        "{problem}"
    );

    let (_, admin) = send_json(
        &app,
        req(Method::POST, base, None),
        json!({"userId": "u1", "kind": "admin"}),
    )
    .await;
    assert_eq!(
        (admin["kind"].clone(), admin["data"].clone()),
        (json!("admin"), json!({}))
    );
    let (_, other) = send_json(&app, req(Method::POST, base, None), json!({"userId": "u2"})).await;
    let (status, list) = send(&app, req(Method::GET, "/v1/sessions?userId=u1", None)).await;
    assert_eq!(status, StatusCode::OK);
    // Listed sessions are named by handle; no id is ever listed.
    let listed = list["sessions"].as_array().unwrap();
    assert!(listed.iter().all(|s| s.get("id").is_none()), "{list}");
    let mut handles: Vec<&str> = listed
        .iter()
        .map(|s| s["handle"].as_str().unwrap())
        .collect();
    handles.sort_unstable();
    let mut expected = vec![
        rotated["handle"].as_str().unwrap(),
        admin["handle"].as_str().unwrap(),
    ];
    expected.sort_unstable();
    assert_eq!(handles, expected);
    // A handle presented as an id finds nothing.
    let (status, _) = send(&app, req(Method::GET, one, Some(expected[0]))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Revoke one session by its handle.
    let by_handle = format!("{base}/handles/{}", admin["handle"].as_str().unwrap());
    assert_eq!(
        send(&app, req(Method::DELETE, &by_handle, None)).await.0,
        StatusCode::NO_CONTENT
    );
    let admin_id = admin["id"].as_str().unwrap();
    assert_eq!(
        send(&app, req(Method::GET, one, Some(admin_id))).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, again) = send(&app, req(Method::DELETE, &by_handle, None)).await;
    assert_eq!((status, &again), (StatusCode::NOT_FOUND, &never));

    let (status, revoked) = send(&app, req(Method::DELETE, "/v1/sessions?userId=u1", None)).await;
    assert_eq!((status, revoked), (StatusCode::OK, json!({"revoked": 1})));
    let (status, revoked_body) = send(&app, req(Method::GET, one, Some(&new_id))).await;
    assert_eq!((status, &revoked_body), (StatusCode::NOT_FOUND, &never));
    let other_id = other["id"].as_str().unwrap();
    assert_eq!(
        send(&app, req(Method::GET, one, Some(other_id))).await.0,
        StatusCode::OK
    );

    assert_eq!(
        send(&app, req(Method::DELETE, one, Some(other_id))).await.0,
        StatusCode::NO_CONTENT
    );
    let (status, deleted) = send(&app, req(Method::DELETE, one, Some(other_id))).await;
    assert_eq!((status, &deleted), (StatusCode::NOT_FOUND, &never));

    // Every session route is in the OpenAPI document.
    let (_, doc) = send(&app, req(Method::GET, "/openapi.json", None)).await;
    for path in [
        "/v1/sessions",
        "/v1/sessions/handles/{handle}",
        "/v1/session",
        "/v1/session/touch",
        "/v1/session/rotate",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from /openapi.json"
        );
    }
    assert!(doc["paths"]["/v1/sessions"]["delete"].is_object());
}

#[tokio::test]
async fn http_bad_input_is_a_400_naming_the_field() {
    let app = App::memory().await;
    let base = "/v1/sessions";
    for (body, names) in [
        (json!({}), "userId"),
        (json!({"data": {}}), "userId"),
        (json!({"userId": 7}), "userId"),
        (json!({"userId": ""}), "userId"),
        (json!({"userId": "u", "kind": "root"}), "kind"),
        (json!({"userId": "u", "kind": 1}), "kind"),
        (json!({"userId": "u", "extra": 1}), "extra"),
    ] {
        let (status, problem) = send_json(&app, req(Method::POST, base, None), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
        assert!(["invalid-body", "bad-request"].contains(&problem["type"].as_str().unwrap()));
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(names), "{body}: {detail}");
    }
    let (status, problem) = app
        .send(
            req(Method::POST, base, None)
                .header("content-type", "application/json")
                .body(Body::from("{not json"))
                .unwrap(),
        )
        .await
        .parts();
    assert_eq!(
        (status, problem["type"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid-body"))
    );

    let (_, s) = send_json(&app, req(Method::POST, base, None), json!({"userId": "u"})).await;
    let url = "/v1/session";
    let id = s["id"].as_str().unwrap().to_owned();
    for (body, names) in [
        (json!({"data": {}}), "version"),
        (json!({"data": {}, "version": "1"}), "version"),
        (json!({"data": {}, "version": -1}), "version"),
        (json!({"version": 1}), "data"),
    ] {
        let (status, problem) =
            send_json(&app, req(Method::PUT, url, Some(&id)), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(names),
            "{body}: {problem}"
        );
    }
    // Nothing was changed by the rejected updates.
    assert_eq!(
        send(&app, req(Method::GET, url, Some(&id))).await.1["version"],
        1
    );

    for method in [Method::GET, Method::DELETE] {
        let (status, problem) = send(&app, req(method, base, None)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            problem["detail"].as_str().unwrap().contains("userId"),
            "{problem}"
        );
    }
}

#[tokio::test]
async fn http_an_idle_session_answers_404_like_an_unknown_one() {
    let config = "backend: memory\nsessions:\n  user: { absoluteTimeout: 1h, idleTimeout: 1s }\n";
    let app = App::from_yaml(config).await;
    let (status, s) = send_json(
        &app,
        req(Method::POST, "/v1/sessions", None),
        json!({"userId": "u"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let url = "/v1/session";
    let id = s["id"].as_str().unwrap().to_owned();
    let unknown = blinkchamber::session::id::new_id();
    let (_, never) = send(&app, req(Method::GET, url, Some(&unknown))).await;
    let expired = wait_for_async("the idle session to end", || async {
        let (status, body) = send(&app, req(Method::GET, url, Some(&id))).await;
        (status == StatusCode::NOT_FOUND).then_some(body)
    })
    .await;
    assert_eq!(expired, never);
    assert_eq!(
        send(&app, req(Method::POST, "/v1/session/touch", Some(&id)))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn http_session_config_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, key) in [
        (
            "sessions:\n  user: { absoluteTimeout: 1h, idleTimeout: 2h }\n",
            "sessions.user.idleTimeout",
        ),
        (
            "sessions:\n  admin: { absoluteTimeout: 0s, idleTimeout: 0s }\n",
            "sessions.admin.absoluteTimeout",
        ),
        (
            "sessions:\n  cookie: { name: \"a b\" }\n",
            "sessions.cookie.name",
        ),
        (
            "sessions:\n  cookie: { sameSite: none, secure: false }\n",
            "sessions.cookie.sameSite",
        ),
        (
            "sessions:\n  user: { absoluteTimeout: 1 day, idleTimeout: 1h }\n",
            "sessions.user.absoluteTimeout",
        ),
        (
            "sessions:\n  admin: { absoluteTimeout: 3651d, idleTimeout: 1h }\n",
            "sessions.admin.absoluteTimeout",
        ),
        ("sessions:\n  maxAge: 1h\n", "maxAge"),
        ("sessions:\n  maxPerUser: 0\n", "sessions.maxPerUser"),
    ] {
        let file = support::serve::write(
            dir.path(),
            "c.yaml",
            &format!("server: {{ auth: {{ enabled: false }} }}\n{yaml}"),
        );
        let out = support::serve::run(&["config", "check", file.to_str().unwrap()], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{yaml} was accepted");
        assert!(stderr.contains(key), "{yaml}: {stderr}");
    }
    let file = support::serve::write(
        dir.path(),
        "ok.yaml",
        "server: { auth: { enabled: false } }\nsessions:\n  keyPrefix: \"app:sess:\"\n  admin: { absoluteTimeout: 4h, idleTimeout: 10m }\n  cookie: { name: sid, sameSite: strict }\n",
    );
    let out = support::serve::run(&["config", "check", file.to_str().unwrap()], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- The cookie layer ----

#[tokio::test]
async fn the_layer_finds_the_session_named_by_the_cookie() {
    use axum::Router;
    use axum::http::header::SET_COOKIE;
    use axum::routing::{get, post};
    use blinkchamber::session::{CurrentSession, SessionCookie, SessionLayer};

    let sessions = Sessions::memory(&SessionsConfig::default());
    let cookie = SessionCookie::new(sessions.config().cookie.clone());
    let login = {
        let (sessions, cookie) = (sessions.clone(), cookie.clone());
        move || async move {
            let s = sessions
                .create("pat", SessionKind::User, json!({"n": 1}))
                .await
                .unwrap();
            [(SET_COOKIE, cookie.set(&s))]
        }
    };
    let app = Router::new()
        .route(
            "/me",
            get(|CurrentSession(s): CurrentSession| async move { s.user_id }),
        )
        .route(
            "/maybe",
            get(|s: Option<CurrentSession>| async move {
                s.map_or("anonymous".to_owned(), |s| s.0.user_id)
            }),
        )
        .route("/login", post(login))
        .layer(SessionLayer::new(sessions.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let c = support::http();

    let response = c.get(format!("{base}/me")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        c.get(format!("{base}/maybe"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "anonymous"
    );

    let response = c.post(format!("{base}/login")).send().await.unwrap();
    let set = response.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(set.contains(attribute), "{attribute} missing: {set}");
    }
    // The browser keeps the cookie until the absolute end (24 h), give or take a second.
    let max_age: u64 = set
        .split("Max-Age=")
        .nth(1)
        .and_then(|v| v.split(';').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Max-Age: {set}"));
    assert!((86_390..=86_400).contains(&max_age), "{set}");
    let pair = set.split(';').next().unwrap().to_owned();
    let (name, id) = pair.split_once('=').unwrap();
    assert_eq!(name, "blinkchamber_session");

    let me = c
        .get(format!("{base}/me"))
        .header("cookie", format!("theme=dark; {pair}"))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(me.text().await.unwrap(), "pat");

    // An ended session: 401, and the stale cookie is removed.
    sessions.delete(id).await.unwrap();
    let me = c
        .get(format!("{base}/me"))
        .header("cookie", &pair)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    let cleared = me.headers()[SET_COOKIE].to_str().unwrap();
    assert!(
        cleared.starts_with("blinkchamber_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_touch_and_update_work_after_scripts_are_flushed() {
    let f = fixture(Store::Redis).await;
    let redis = f.redis.as_ref().unwrap();
    let s = f
        .sessions
        .create("pia", SessionKind::User, json!({"n": 1}))
        .await
        .unwrap();
    // A restarted or failed-over Redis has no scripts: the touch loads its script and
    // still renews and answers the session.
    let _: () = ::redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut redis.conn())
        .unwrap();
    let touched = f.sessions.touch(&s.id).await.unwrap();
    assert_eq!(touched.data, json!({"n": 1}));
    assert_eq!(touched.version, s.version);
    assert!(touched.idle_expires_at >= s.idle_expires_at);
    let _: () = ::redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut redis.conn())
        .unwrap();
    let updated = f
        .sessions
        .update(&touched.id, json!({"n": 2}), touched.version)
        .await
        .unwrap();
    assert_eq!(updated.version, s.version + 1);
    assert_eq!(updated.user_id, "pia");
    assert_eq!(updated.created_at, s.created_at);
    assert_eq!(f.sessions.get(&s.id).await.unwrap().data, json!({"n": 2}));
}

/// Stores a session the way releases before the string layout did: a hash of its fields,
/// its PTTL at the idle deadline, and its handle in the user's index.
fn store_as_hash(conn: &mut ::redis::Connection, user: &str, data: &str) -> String {
    let id = blinkchamber::session::id::new_id();
    let handle = blinkchamber::session::id::handle(&id);
    let key = format!("blinkchamber:session:s:{handle}");
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let (expires, idle) = (now + 3_600_000, 600_000);
    let _: () = ::redis::cmd("HSET")
        .arg(&key)
        .arg(&[
            ("user", user.to_owned()),
            ("kind", "user".to_owned()),
            ("data", data.to_owned()),
            ("version", "4".to_owned()),
            ("created", now.to_string()),
            ("expires", expires.to_string()),
            ("idle", idle.to_string()),
            ("deadline", (now + idle).to_string()),
        ])
        .query(conn)
        .unwrap();
    let _: () = ::redis::cmd("PEXPIRE")
        .arg(&key)
        .arg(idle)
        .query(conn)
        .unwrap();
    let _: () = ::redis::cmd("ZADD")
        .arg(format!("blinkchamber:session:u:{user}"))
        .arg(expires)
        .arg(&handle)
        .query(conn)
        .unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sessions_stored_as_hashes_by_an_earlier_release_are_upgraded_in_place() {
    let f = fixture(Store::Redis).await;
    let mut conn = f.redis.as_ref().unwrap().conn();
    let key_type = |conn: &mut ::redis::Connection, id: &str| -> String {
        let key = format!(
            "blinkchamber:session:s:{}",
            blinkchamber::session::id::handle(id)
        );
        ::redis::cmd("TYPE").arg(key).query(conn).unwrap()
    };

    // A plain read meets the hash (WRONGTYPE to a GET), upgrades it and answers it.
    let read = store_as_hash(&mut conn, "quinn", r#"{"theme":"dark"}"#);
    let s = f.sessions.get(&read).await.unwrap();
    assert_eq!(
        (s.user_id.as_str(), s.kind, s.version, &s.data),
        ("quinn", SessionKind::User, 4, &json!({"theme": "dark"}))
    );
    assert_eq!(key_type(&mut conn, &read), "string");
    let pttl: i64 = ::redis::cmd("PTTL")
        .arg(format!("blinkchamber:session:s:{}", s.handle))
        .query(&mut conn)
        .unwrap();
    assert!(
        pttl > 0 && pttl <= 600_000,
        "the upgrade kept no expiry: {pttl}"
    );
    assert_eq!(f.sessions.get(&read).await.unwrap().data, s.data);

    // Every script meets hashes too: touch, update, rotate, list and delete.
    let touched = store_as_hash(&mut conn, "quinn", "{}");
    assert_eq!(f.sessions.touch(&touched).await.unwrap().version, 4);
    let updated = store_as_hash(&mut conn, "quinn", "{}");
    let after = f
        .sessions
        .update(&updated, json!({"n": 1}), 4)
        .await
        .unwrap();
    assert_eq!((after.version, after.user_id.as_str()), (5, "quinn"));
    assert_eq!(
        f.sessions.get(&updated).await.unwrap().data,
        json!({"n": 1})
    );
    let rotated = store_as_hash(&mut conn, "quinn", "{}");
    let new = f.sessions.rotate(&rotated).await.unwrap();
    assert!(matches!(
        f.sessions.get(&rotated).await,
        Err(SessionError::NotFound)
    ));
    assert_eq!(f.sessions.get(&new.id).await.unwrap().version, 4);
    let listed = store_as_hash(&mut conn, "quinn", "{}");
    let deleted = store_as_hash(&mut conn, "quinn", "{}");
    assert_eq!(f.sessions.list_user("quinn").await.unwrap().len(), 6);
    assert_eq!(key_type(&mut conn, &listed), "string");
    f.sessions.delete(&deleted).await.unwrap();
    assert_eq!(key_type(&mut conn, &deleted), "none");
    assert_eq!(f.sessions.list_user("quinn").await.unwrap().len(), 5);
}
