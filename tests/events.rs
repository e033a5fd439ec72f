//! Event queues: one suite on the memory backend and on real Redis (publish, consume,
//! retries, dead letters, replay, priorities, leases, back-pressure).

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, header};
use blinkchamber::RedisBackend;
use blinkchamber::config::{EventsConfig, PriorityMode, RedisConfig};
use blinkchamber::events::queues::Taken;
use blinkchamber::events::{
    Event, Handler, Priority, PublishError, Publisher, Queues, Workers, decode,
};
use futures_util::future::BoxFuture;
use serde_json::value::to_raw_value;
use support::app::{App, request};
use support::{RedisProc, Store, wait_for_async};

struct Fixture {
    queues: Queues,
    cfg: EventsConfig,
    _redis: Option<RedisProc>,
}

fn config() -> EventsConfig {
    let mut cfg = support::events::config("test:events");
    cfg.types.push("analytics.page_viewed".into());
    cfg
}

async fn fixture(store: Store) -> Fixture {
    let cfg = config();
    let (queues, redis) = support::events::queues(store, &cfg).await;
    Fixture {
        queues,
        cfg,
        _redis: redis,
    }
}

conformance!(fixture;
    published_events_are_each_handled,
    a_failing_event_is_retried_then_dead_lettered_and_replay_brings_it_back,
    strict_priority_drains_high_before_normal_before_low,
    weighted_priority_serves_every_queue,
    events_of_a_consumer_that_vanished_come_back_after_the_lease,
    takes_hand_out_the_oldest_first_and_a_batch_taken_back_keeps_its_order,
    invalid_events_are_refused_and_nothing_of_the_call_is_published,
    a_repeated_id_is_handled_once_within_the_dedup_window,
);

fn event(ty: &str, n: usize) -> Event {
    Event::new(ty, "/test", Some(to_raw_value(&n).unwrap()))
}

/// Records every handled event; fails those whose type is in `failing`.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(String, String, u32)>>,
    failing: Vec<String>,
}

impl Recorder {
    fn failing(types: &[&str]) -> Self {
        Self {
            failing: types.iter().map(|t| (*t).to_owned()).collect(),
            ..Self::default()
        }
    }

    fn ids(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(id, ..)| id.clone())
            .collect()
    }

    fn types(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, t, _)| t.clone())
            .collect()
    }
}

impl Handler for Recorder {
    fn handle<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.seen
                .lock()
                .unwrap()
                .push((event.id.clone(), event.ty.clone(), event.attempt));
            if self.failing.contains(&event.ty) {
                return Err(format!("cannot handle {}", event.ty));
            }
            Ok(())
        })
    }
}

async fn published_events_are_each_handled(f: &Fixture) {
    let publisher = Publisher::new(&f.cfg, f.queues.clone()).unwrap();
    let mut ids = Vec::new();
    for chunk in 0..5 {
        let events = (0..100)
            .map(|i| event("user.created", chunk * 100 + i))
            .collect();
        ids.extend(publisher.publish_many(events).await.unwrap());
    }
    ids.push(publisher.publish(event("auth.login", 0)).await.unwrap());
    let recorder = Arc::new(Recorder::default());
    let workers = Workers::start(&f.cfg, f.queues.clone(), recorder.clone());
    wait_for_async("every event to be handled", || async {
        (recorder.ids().len() >= ids.len()).then_some(())
    })
    .await;
    workers.shutdown().await;
    let mut handled = recorder.ids();
    handled.sort();
    ids.sort();
    assert_eq!(handled, ids, "each event handled exactly once here");
    let stats = f.queues.stats().await.unwrap();
    for q in &stats.queues {
        assert_eq!((q.depth, q.in_flight, q.retrying), (0, 0, 0), "{stats:?}");
    }
}

async fn a_failing_event_is_retried_then_dead_lettered_and_replay_brings_it_back(f: &Fixture) {
    let publisher = Publisher::new(&f.cfg, f.queues.clone()).unwrap();
    let id = publisher.publish(event("user.deleted", 1)).await.unwrap();
    publisher.publish(event("user.updated", 2)).await.unwrap();
    let recorder = Arc::new(Recorder::failing(&["user.deleted"]));
    let workers = Workers::start(&f.cfg, f.queues.clone(), recorder.clone());
    wait_for_async(
        "the failing event to reach the dead-letter list",
        || async { (f.queues.stats().await.unwrap().dead == 1).then_some(()) },
    )
    .await;
    workers.shutdown().await;
    let attempts: Vec<u32> = recorder
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(i, ..)| *i == id)
        .map(|(.., a)| *a)
        .collect();
    let max = f.cfg.consumer.max_retries;
    assert_eq!(
        attempts,
        (0..=max).collect::<Vec<_>>(),
        "one try, then exactly maxRetries retries"
    );
    let dead = f.queues.peek(None, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    let letter = decode(&dead[0]).unwrap();
    assert_eq!((letter.id.as_str(), letter.attempt), (id.as_str(), max + 1));
    assert_eq!(
        letter.extensions["lasterror"],
        serde_json::json!("cannot handle user.deleted")
    );
    // Replay: back in its queue with attempts reset, handled by a healthy worker.
    let mut replayed = letter.clone();
    replayed.attempt = 0;
    replayed.extensions.clear();
    assert!(
        f.queues
            .dead_remove(
                &id,
                &dead[0],
                Some((
                    Priority::Normal,
                    &blinkchamber::events::encode(&replayed, false)
                ))
            )
            .await
            .unwrap()
    );
    assert!(
        !f.queues
            .dead_remove(&id, &dead[0], Some((Priority::Normal, b"{}")))
            .await
            .unwrap(),
        "replayed once"
    );
    assert_eq!(f.queues.stats().await.unwrap().dead, 0);
    let healthy = Arc::new(Recorder::default());
    let workers = Workers::start(&f.cfg, f.queues.clone(), healthy.clone());
    wait_for_async("the replayed event to be handled", || async {
        healthy.ids().contains(&id).then_some(())
    })
    .await;
    workers.shutdown().await;
    assert_eq!(healthy.seen.lock().unwrap()[0].2, 0, "attempts reset");
}

async fn strict_priority_drains_high_before_normal_before_low(f: &Fixture) {
    let publisher = Publisher::new(&f.cfg, f.queues.clone()).unwrap();
    // Published low first, so arrival order alone would serve low first.
    for ty in ["analytics.page_viewed", "user.created", "auth.login"] {
        publisher
            .publish_many((0..20).map(|i| event(ty, i)).collect())
            .await
            .unwrap();
    }
    let mut cfg = f.cfg.clone();
    cfg.performance.worker_count = 1.try_into().unwrap();
    cfg.consumer.batch_size = 5.try_into().unwrap();
    let recorder = Arc::new(Recorder::default());
    let workers = Workers::start(&cfg, f.queues.clone(), recorder.clone());
    wait_for_async("every event to be handled", || async {
        (recorder.ids().len() == 60).then_some(())
    })
    .await;
    workers.shutdown().await;
    let types = recorder.types();
    let expected: Vec<&str> = ["auth.login", "user.created", "analytics.page_viewed"]
        .iter()
        .flat_map(|t| std::iter::repeat_n(*t, 20))
        .collect();
    assert_eq!(types, expected);
}

async fn weighted_priority_serves_every_queue(f: &Fixture) {
    let publisher = Publisher::new(&f.cfg, f.queues.clone()).unwrap();
    for ty in ["analytics.page_viewed", "user.created", "auth.login"] {
        publisher
            .publish_many((0..300).map(|i| event(ty, i)).collect())
            .await
            .unwrap();
    }
    let mut cfg = f.cfg.clone();
    cfg.consumer.priority = PriorityMode::Weighted;
    cfg.performance.worker_count = 1.try_into().unwrap();
    cfg.consumer.batch_size = 1.try_into().unwrap();
    let recorder = Arc::new(Recorder::default());
    let workers = Workers::start(&cfg, f.queues.clone(), recorder.clone());
    wait_for_async("300 events to be handled", || async {
        (recorder.ids().len() >= 300).then_some(())
    })
    .await;
    workers.shutdown().await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in recorder.types().into_iter().take(300) {
        *counts.entry(t).or_default() += 1;
    }
    // Weights 6:3:1 → about 180 / 90 / 30 of the first 300; with all three queues full,
    // every queue is served and high the most (bounds far from the expected counts).
    let (high, normal, low) = (
        counts.get("auth.login").copied().unwrap_or(0),
        counts.get("user.created").copied().unwrap_or(0),
        counts.get("analytics.page_viewed").copied().unwrap_or(0),
    );
    assert!(low >= 5 && normal > low && high > normal, "{counts:?}");
}

async fn events_of_a_consumer_that_vanished_come_back_after_the_lease(f: &Fixture) {
    let publisher = Publisher::new(&f.cfg, f.queues.clone()).unwrap();
    let ids = publisher
        .publish_many((0..10).map(|i| event("user.created", i)).collect())
        .await
        .unwrap();
    // A consumer takes them on a short lease and is never heard of again.
    let taken = f
        .queues
        .take(
            "crashed",
            "t1",
            Priority::ALL,
            100,
            Duration::from_millis(100),
        )
        .await
        .unwrap();
    assert!(
        matches!(taken, Taken::Events { ref items, .. } if items.len() == 10),
        "{taken:?}"
    );
    assert_eq!(f.queues.stats().await.unwrap().queues[1].in_flight, 10);
    let recorder = Arc::new(Recorder::default());
    let workers = Workers::start(&f.cfg, f.queues.clone(), recorder.clone());
    wait_for_async("the leased events to come back and be handled", || async {
        (recorder.ids().len() >= 10).then_some(())
    })
    .await;
    workers.shutdown().await;
    let mut handled = recorder.ids();
    handled.sort();
    let mut ids = ids;
    ids.sort();
    assert_eq!(handled, ids);
}

/// The ids of `taken`'s events, in the order handed out.
fn taken_ids(taken: &Taken) -> Vec<String> {
    match taken {
        Taken::Events { items, .. } => items.iter().map(|i| decode(i).unwrap().id).collect(),
        Taken::Empty { .. } => Vec::new(),
    }
}

async fn takes_hand_out_the_oldest_first_and_a_batch_taken_back_keeps_its_order(f: &Fixture) {
    let publisher = Publisher::new(&f.cfg, f.queues.clone()).unwrap();
    let ids = publisher
        .publish_many((0..10).map(|i| event("user.created", i)).collect())
        .await
        .unwrap();
    let lease = Duration::from_millis(200);
    // Part of a longer queue, then a whole queue (Redis renames that one instead of
    // moving its events one by one).
    let first = f
        .queues
        .take("a", "t1", Priority::ALL, 4, lease)
        .await
        .unwrap();
    assert_eq!(taken_ids(&first), ids[..4]);
    let second = f
        .queues
        .take("b", "t2", Priority::ALL, 100, lease)
        .await
        .unwrap();
    assert_eq!(taken_ids(&second), ids[4..]);
    // A lost reply: the same consumer asks again and gets the same batch, same order.
    let again = f
        .queues
        .take("b", "t3", Priority::ALL, 100, lease)
        .await
        .unwrap();
    assert!(
        matches!(again, Taken::Events { resumed: true, .. }),
        "{again:?}"
    );
    assert_eq!(taken_ids(&again), ids[4..]);

    // Both consumers vanish; their batches go back, each in its own order.
    wait_for_async("both leases to be taken back", || async {
        f.queues.reap().await.unwrap();
        (f.queues.stats().await.unwrap().queues[1].depth == 10).then_some(())
    })
    .await;
    let all = taken_ids(
        &f.queues
            .take("c", "t4", Priority::ALL, 100, lease)
            .await
            .unwrap(),
    );
    let mut sorted = all.clone();
    sorted.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(sorted, want, "every event once");
    let at = |id: &String| all.iter().position(|x| x == id).unwrap();
    for batch in [&ids[..4], &ids[4..]] {
        let positions: Vec<usize> = batch.iter().map(at).collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "a batch keeps its order: {positions:?} in {all:?}"
        );
    }
}

async fn all_settled(queues: &Queues) -> bool {
    let stats = queues.stats().await.unwrap();
    stats
        .queues
        .iter()
        .all(|q| (q.depth, q.in_flight, q.retrying) == (0, 0, 0))
}

async fn a_repeated_id_is_handled_once_within_the_dedup_window(f: &Fixture) {
    let mut cfg = f.cfg.clone();
    cfg.consumer.dedup_window = Duration::from_secs(600);
    let publisher = Publisher::new(&cfg, f.queues.clone()).unwrap();
    let mut repeated = event("user.created", 1);
    repeated.id = "dup-1".into();
    // Two copies in one batch, and (below) a third after the first was handled.
    publisher
        .publish_many(vec![repeated.clone(), repeated.clone()])
        .await
        .unwrap();
    let recorder = Arc::new(Recorder::default());
    let workers = Workers::start(&cfg, f.queues.clone(), recorder.clone());
    wait_for_async("both copies to be settled", || async {
        (all_settled(&f.queues).await && !recorder.ids().is_empty()).then_some(())
    })
    .await;
    let other = publisher.publish(event("user.created", 2)).await.unwrap();
    publisher.publish(repeated.clone()).await.unwrap();
    wait_for_async("the later events to be settled", || async {
        (all_settled(&f.queues).await && recorder.ids().contains(&other)).then_some(())
    })
    .await;
    workers.shutdown().await;
    let handled = recorder.ids();
    assert_eq!(
        handled.iter().filter(|id| *id == "dup-1").count(),
        1,
        "{handled:?}"
    );
    assert_eq!(handled.len(), 2, "{handled:?}");
}

async fn invalid_events_are_refused_and_nothing_of_the_call_is_published(f: &Fixture) {
    let publisher = Publisher::new(&f.cfg, f.queues.clone()).unwrap();
    let mut bad = event("user.exploded", 1);
    bad.id = "x".into();
    let err = publisher
        .publish_many(vec![event("user.created", 0), bad])
        .await
        .unwrap_err();
    match err {
        PublishError::Invalid { index, error } => {
            assert_eq!(index, 1);
            assert!(error.to_string().contains("user.exploded"), "{error}");
        }
        other => panic!("expected an invalid event, got {other:?}"),
    }
    let too_many = (0..f.cfg.performance.event_buffer_size.get() + 1)
        .map(|i| event("user.created", i))
        .collect();
    assert!(matches!(
        publisher.publish_many(too_many).await,
        Err(PublishError::TooMany(_))
    ));
    let stats = f.queues.stats().await.unwrap();
    assert!(stats.queues.iter().all(|q| q.depth == 0), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_pushes_back_without_losing_events() {
    let mut redis = RedisProc::start();
    let mut cfg = config();
    cfg.performance.event_buffer_size = 100.try_into().unwrap();
    cfg.publishing.batch_timeout = Duration::from_secs(60);
    let backend = RedisBackend::connect(RedisConfig::standalone("127.0.0.1", redis.port))
        .await
        .unwrap();
    let queues = Queues::redis(&cfg, backend);
    let publisher = Publisher::new(&cfg, queues.clone()).unwrap();
    // Redis stops answering: the first writes hang and fill the buffer.
    redis.pause();
    let pending: Vec<_> = (0..10)
        .map(|n| {
            let publisher = publisher.clone();
            tokio::spawn(async move {
                publisher
                    .publish_many((0..10).map(|i| event("user.created", n * 10 + i)).collect())
                    .await
            })
        })
        .collect();
    wait_for_async("the buffer to fill", || async {
        (publisher.buffered() == 100).then_some(())
    })
    .await;
    assert!(matches!(
        publisher
            .try_publish_many(vec![event("user.created", 0)])
            .await,
        Err(PublishError::Full)
    ));
    redis.resume();
    let mut ids = Vec::new();
    for p in pending {
        ids.extend(p.await.unwrap().unwrap());
    }
    assert_eq!(ids.len(), 100);
    let stats = queues.stats().await.unwrap();
    assert_eq!(
        stats.queues[1].depth, 100,
        "every accepted event is in Redis"
    );
}

#[tokio::test]
async fn http_publish_stats_and_signed_zitadel_ingestion() {
    let app = App::from_yaml(
        "backend: memory\nevents:\n  zitadel:\n    signingKey:\n      value: s3cret\n",
    )
    .await;
    // What `serve` does on the memory backend (it consumes its own queues), with a
    // handler that records what it is given.
    let handled = Arc::new(Recorder::default());
    app.runtime().start_workers_with(handled.clone()).unwrap();
    let url = |path: &str| format!("/v1/{path}");

    let one = serde_json::json!({"specversion": "1.0", "id": "e1", "source": "/app",
        "type": "user.created", "data": {"userId": "u1"}});
    let (status, body) = app.post_json(&url("events"), &one).await.parts();
    assert_eq!(status, 202);
    assert_eq!(body, serde_json::json!({"accepted": 1, "ids": ["e1"]}));
    // A batch with one bad event is refused whole, naming it.
    let batch = serde_json::json!([one, {"specversion": "1.0", "id": "e2", "source": "/app",
        "type": "user.exploded"}]);
    let (status, problem) = app.post_json(&url("events"), &batch).await.parts();
    assert_eq!(status, 400);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("event 1: type"),
        "{problem}"
    );
    wait_for_async("e1 to be handled", || async {
        handled.ids().contains(&"e1".to_owned()).then_some(())
    })
    .await;

    // ZITADEL: a correctly signed execution is mapped and published.
    let body = br#"{"aggregateID":"123","aggregateType":"user","resourceOwner":"o1","instanceID":"i1","version":"v2","sequence":7,"event_type":"session.terminated","created_at":"2026-11-23T10:00:00.123Z","userID":"u1","event_payload":{"sessionId":"s1"}}"#;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signed = |key: &[u8], t: u64| blinkchamber::events::sign(key, t, body);
    let post = |sig: Option<String>, body: &'static [u8]| {
        let mut builder = request(Method::POST, &url("ingest/zitadel"))
            .header(header::CONTENT_LENGTH, body.len());
        if let Some(sig) = sig {
            builder = builder.header("ZITADEL-Signature", sig);
        }
        app.send(builder.body(Body::from(body)).unwrap())
    };
    let (status, accepted) = post(Some(signed(b"s3cret", now)), body).await.parts();
    assert_eq!(status, 202);
    assert_eq!(accepted["ids"], serde_json::json!(["zitadel:i1:123:7"]));
    // The same signed call captured and sent again inside the tolerance (or redelivered by
    // ZITADEL) is acknowledged and stored once (events.zitadel.dedupWindow).
    let r = post(Some(signed(b"s3cret", now)), body).await;
    assert_eq!(r.status, 202);
    // A publisher may not set delivery state.
    let retried = serde_json::json!({"specversion": "1.0", "id": "e9", "source": "/app",
        "type": "user.created", "attempt": 3});
    let (status, problem) = app.post_json(&url("events"), &retried).await.parts();
    assert_eq!(status, 400);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("event 0: attempt: is delivery state"),
        "{problem}"
    );
    // Each kind of bad request is refused and enqueues nothing.
    for (sig, status) in [
        (None, 401),
        (Some(signed(b"wrong", now)), 401),
        (Some(signed(b"s3cret", now - 3600)), 401),
        (Some("t=abc,v1=00".to_owned()), 401),
    ] {
        let (code, problem) = post(sig.clone(), body).await.parts();
        assert_eq!(code, status, "{sig:?}");
        assert_eq!(
            problem["type"].as_str().unwrap().rsplit('/').next(),
            Some("bad-signature")
        );
    }
    let malformed: &'static [u8] = br#"{"aggregateID":"1","sequence":"x"}"#;
    let r = post(
        Some(blinkchamber::events::sign(b"s3cret", now, malformed)),
        malformed,
    )
    .await;
    assert_eq!(r.status, 400);
    wait_for_async("the signed logout to be handled", || async {
        handled
            .ids()
            .contains(&"zitadel:i1:123:7".to_owned())
            .then_some(())
    })
    .await;
    let stats = app.get(&url("events/stats")).await.json();
    for q in stats["queues"].as_array().unwrap() {
        assert_eq!(q["depth"], 0, "{stats}");
    }
    assert_eq!(
        handled.ids(),
        ["e1", "zitadel:i1:123:7"],
        "only e1 and the signed logout, once"
    );
    app.runtime().shutdown().await;
}

#[tokio::test]
async fn event_metrics_follow_enable_metrics() {
    let c = support::http();
    let one = serde_json::json!({"specversion": "1.0", "id": "m1", "source": "/app",
        "type": "user.created"});
    for (enabled, config) in [
        (true, "backend: memory\n"),
        (
            false,
            "backend: memory\nevents:\n  performance:\n    enableMetrics: false\n",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let served = support::serve::Served::start(dir.path(), config, &["--no-auth"]).await;
        let r = c
            .post(format!("{}/v1/events", served.api))
            .json(&one)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        wait_for_async("the event to be handled", || async {
            served.logs().contains("id=m1").then_some(())
        })
        .await;
        let text = served.metrics_text().await;
        assert!(
            text.contains("blinkchamber_http_requests_total"),
            "other metrics stay: {text}"
        );
        assert_eq!(
            text.contains("blinkchamber_events_published_total"),
            enabled,
            "enableMetrics: {enabled}: {text}"
        );
    }
}
