//! The memory backend's size budget (`memory.maxBytes`): sessions, locks, rate-limit keys
//! and event queues share it; past it new state is refused with a clear error, nothing
//! already stored is dropped, and freeing state makes room again.

mod support;

use std::num::NonZeroU64;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use blinkchamber::backend::MemoryBudget;
use blinkchamber::config::{
    Algorithm, Descriptor, EventsConfig, FailureMode, LocksConfig, RateLimitConfig, RuleConfig,
    SessionsConfig,
};
use blinkchamber::events::{Event, PublishError, Publisher, Queues};
use blinkchamber::lock::{LockError, Locks};
use blinkchamber::ratelimit::{RateLimitError, RateLimiter};
use blinkchamber::session::{SessionError, SessionKind, Sessions};
use serde_json::json;
use support::app::{App, json as json_request, request};

fn limiter(budget: &MemoryBudget) -> RateLimiter {
    let cfg = RateLimitConfig {
        rules: vec![RuleConfig {
            name: "api".into(),
            descriptor: vec![Descriptor::User],
            algorithm: Algorithm::Gcra,
            limit: NonZeroU64::new(100).unwrap(),
            period: Duration::from_secs(60),
            burst: None,
            failure_mode: FailureMode::Closed,
        }],
        ..RateLimitConfig::default()
    };
    RateLimiter::memory_in(&cfg, budget.clone())
}

fn event(n: usize) -> Event {
    Event::new(
        "user.created",
        "/budget",
        Some(serde_json::value::to_raw_value(&n).unwrap()),
    )
}

#[tokio::test]
async fn the_stores_share_the_budget_refuse_past_it_and_keep_what_they_hold() {
    let budget = MemoryBudget::new(1 << 20);
    let sessions = Sessions::memory_in(&SessionsConfig::default(), budget.clone());
    let locks = Locks::memory_in(&LocksConfig::default(), budget.clone());
    let limits = limiter(&budget);
    let events = EventsConfig::default();
    let queues = Queues::memory_in(&events, budget.clone());
    let publisher = Publisher::new(&events, queues.clone()).unwrap();

    // State of every kind before the budget is used up.
    let lease = locks
        .acquire("held", Duration::from_secs(60), Duration::ZERO)
        .await
        .unwrap();
    assert!(limits.check("api", "user=before", 1).await.unwrap().allowed);
    publisher.publish(event(0)).await.unwrap();

    // Sessions of 2 KiB each until the budget refuses one.
    let data = json!({ "blob": "x".repeat(2048) });
    let mut created = Vec::new();
    let full = loop {
        assert!(created.len() < 2000, "1 MiB never filled");
        let user = format!("user-{}", created.len());
        match sessions
            .create(&user, SessionKind::User, data.clone())
            .await
        {
            Ok(session) => created.push(session),
            Err(SessionError::StoreFull(full)) => break full,
            Err(e) => panic!("unexpected error: {e}"),
        }
    };
    assert_eq!(full.max, 1 << 20);
    assert!(full.used <= full.max, "{full:?}");
    assert!(full.to_string().contains("memory.maxBytes"), "{full}");
    assert!(
        created.len() > 100,
        "only {} sessions fitted",
        created.len()
    );
    // The smallest state there is, rate-limit keys, until even those are refused: every
    // larger piece of new state is refused from here on.
    let mut keys = 0;
    loop {
        assert!(keys < 20_000, "small keys never filled the rest");
        match limits.check("api", &format!("user=k{keys}"), 1).await {
            Ok(_) => keys += 1,
            Err(RateLimitError::StoreFull(_)) => break,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    // Every store refuses new state now, naming the budget.
    match publisher.publish(event(1)).await {
        Err(PublishError::StoreFull(_)) => {}
        other => panic!("publish past the budget: {other:?}"),
    }
    let another = "another-".repeat(20);
    match locks
        .acquire(&another, Duration::from_secs(60), Duration::ZERO)
        .await
    {
        Err(LockError::StoreFull(_)) => {}
        other => panic!("lock past the budget: {other:?}"),
    }
    match limits.check("api", "user=after", 1).await {
        Err(RateLimitError::StoreFull(_)) => {}
        other => panic!("new limiter key past the budget: {other:?}"),
    }

    // Nothing stored was dropped, and existing state keeps working.
    for session in &created {
        assert_eq!(sessions.get(&session.id).await.unwrap().data, data);
    }
    locks
        .extend("held", &lease.token, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(limits.check("api", "user=before", 1).await.unwrap().allowed);
    assert_eq!(queues.stats().await.unwrap().queues[1].depth, 1);

    // A larger update of a stored session is refused and leaves it as it was.
    let grown = json!({ "blob": "y".repeat(64 * 1024) });
    let first = &created[0];
    match sessions.update(&first.id, grown, first.version).await {
        Err(SessionError::StoreFull(_)) => {}
        other => panic!("a larger update past the budget: {other:?}"),
    }
    assert_eq!(sessions.get(&first.id).await.unwrap().data, data);

    // Deleting sessions gives their room back to every store.
    let used = budget.used();
    for session in created.drain(..20) {
        sessions.delete(&session.id).await.unwrap();
    }
    assert!(budget.used() < used);
    publisher.publish(event(2)).await.unwrap();
    locks
        .acquire(&another, Duration::from_secs(60), Duration::ZERO)
        .await
        .unwrap();
    assert!(limits.check("api", "user=after", 1).await.unwrap().allowed);
}

#[tokio::test]
async fn serve_answers_507_when_full_and_readyz_says_so() {
    // What the `/metrics` listener renders: the process-wide recorder, installed before
    // anything is counted.
    let metrics = blinkchamber::metrics::install();
    let app = App::from_yaml("backend: memory\nmemory:\n  maxBytes: 1048576\n").await;
    let create = |n: usize| {
        json_request(
            Method::POST,
            "/v1/sessions",
            &json!({ "userId": format!("u{n}"), "data": { "blob": "x".repeat(4096) } }),
        )
    };
    let with_id = |method: Method, id: &str| {
        request(method, "/v1/session")
            .header("Session-Id", id)
            .body(Body::empty())
            .unwrap()
    };
    let mut ids = Vec::new();
    let problem = loop {
        assert!(ids.len() < 1000, "1 MiB never filled over HTTP");
        let (status, body) = app.send(create(ids.len())).await.parts();
        match status {
            StatusCode::CREATED | StatusCode::OK => {
                ids.push(body["id"].as_str().unwrap().to_owned());
            }
            StatusCode::INSUFFICIENT_STORAGE => break body,
            other => panic!("unexpected {other}: {body}"),
        }
    };
    assert_eq!(problem["type"], "storage-full", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("memory.maxBytes"),
        "{problem}"
    );
    let (status, body) = app.get("/readyz").await.parts();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["type"], "storage-full", "{body}");

    // Every session accepted is still there.
    for id in &ids {
        let status = app.send(with_id(Method::GET, id)).await.status;
        assert_eq!(status, StatusCode::OK);
    }
    let text = metrics.render();
    assert!(text.contains("blinkchamber_memory_refused_total"), "{text}");

    // Freed room: ready again, and new sessions are accepted.
    for id in ids.drain(..10) {
        let status = app.send(with_id(Method::DELETE, &id)).await.status;
        assert!(status.is_success(), "{status}");
    }
    let (status, body) = app.get("/readyz").await.parts();
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app.send(create(10_000)).await.parts();
    assert!(status.is_success(), "{status} {body}");
}

/// Counts handled events; fails the first attempt of every third one, so some are retried.
#[derive(Default)]
struct Flaky(std::sync::Mutex<std::collections::HashMap<String, u32>>);

impl blinkchamber::events::Handler for Flaky {
    fn handle<'a>(
        &'a self,
        event: &'a Event,
    ) -> futures_util::future::BoxFuture<'a, Result<(), String>> {
        let mut seen = self.0.lock().unwrap();
        let tries = seen.entry(event.id.clone()).or_default();
        *tries += 1;
        let fail = *tries == 1 && event.id.as_bytes()[0].is_multiple_of(3);
        Box::pin(async move {
            if fail {
                Err("first try".into())
            } else {
                Ok(())
            }
        })
    }
}

#[tokio::test]
async fn handled_events_give_their_room_back() {
    let budget = MemoryBudget::new(1 << 20);
    let mut cfg = EventsConfig::default();
    cfg.consumer.retry_delay = Duration::from_millis(10);
    let queues = Queues::memory_in(&cfg, budget.clone());
    let publisher = Publisher::new(&cfg, queues.clone()).unwrap();
    publisher
        .publish_many((0..200).map(event).collect())
        .await
        .unwrap();
    assert!(
        budget.used() > 200 * 100,
        "{} bytes for 200 events",
        budget.used()
    );
    let handled = std::sync::Arc::new(Flaky::default());
    let workers = blinkchamber::events::Workers::start(&cfg, queues.clone(), handled.clone());
    support::wait_for_async("every event handled and the room given back", || async {
        let stats = queues.stats().await.ok()?;
        let idle = stats
            .queues
            .iter()
            .all(|q| q.depth == 0 && q.in_flight == 0 && q.retrying == 0);
        (idle && budget.used() == 0).then_some(())
    })
    .await;
    workers.shutdown().await;
    assert_eq!(handled.0.lock().unwrap().len(), 200);
}
