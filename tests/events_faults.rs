//! Event queues under faults: repeated and lost replies, leases that run out under a slow
//! worker, dead letters by id at scale, the largest batch size. Each test counts what was
//! acknowledged against what was delivered. The lease and settle rules run on the memory
//! backend and on real Redis; lost replies are injected with a loopback proxy in front of
//! a real `redis-server`.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blinkchamber::RedisBackend;
use blinkchamber::config::{EventsConfig, RedisConfig};
use blinkchamber::events::dead_letter::DeadLetterFilter;
use blinkchamber::events::queues::{Settle, Taken};
use blinkchamber::events::{
    Event, Handler, Priority, Publisher, Queues, Router, SettleOutcome, Workers, decode, encode,
};
use futures_util::future::BoxFuture;
use serde_json::value::to_raw_value;
use support::proxy::{Mode, Proxy};
use support::{RedisProc, Store, wait_for_async};

struct Fixture {
    queues: Queues,
    cfg: EventsConfig,
    _redis: Option<RedisProc>,
}

fn config() -> EventsConfig {
    let mut cfg = support::events::config("faults");
    cfg.publishing.compression = false;
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
    a_repeated_take_answers_the_batch_already_held,
    a_stale_lease_can_neither_renew_nor_settle,
    a_repeated_settle_changes_nothing,
    dead_letters_are_found_replayed_and_deleted_by_id,
    an_id_published_once_within_the_window_is_stored_once,
    an_id_dead_lettered_again_replaces_its_dead_letter,
    dead_letters_are_paged_filtered_and_handled_in_bulk,
    settles_are_counted_and_leases_listed,
);

fn event(ty: &str, n: usize) -> Event {
    Event::new(ty, "/test", Some(to_raw_value(&n).unwrap()))
}

async fn publish(f: &Fixture, n: usize) -> Vec<String> {
    let publisher = Publisher::new(&f.cfg, f.queues.clone()).unwrap();
    publisher
        .publish_many((0..n).map(|i| event("user.created", i)).collect())
        .await
        .unwrap()
}

fn ids_of(items: &[Vec<u8>]) -> Vec<String> {
    items.iter().map(|s| decode(s).unwrap().id).collect()
}

fn done(priority: Priority) -> Settle {
    Settle {
        priority,
        retries: Vec::new(),
        dead: Vec::new(),
        seen: Vec::new(),
        seen_for: Duration::ZERO,
    }
}

fn dead_all(priority: Priority, items: &[Vec<u8>]) -> Settle {
    Settle {
        dead: items
            .iter()
            .map(|s| (decode(s).unwrap().id, s.clone()))
            .collect(),
        ..done(priority)
    }
}

const LEASE: Duration = Duration::from_secs(30);

async fn take(
    f: &Fixture,
    consumer: &str,
    token: &str,
    lease: Duration,
) -> (Priority, Vec<Vec<u8>>, bool) {
    match f
        .queues
        .take(consumer, token, Priority::ALL, 100, lease)
        .await
        .unwrap()
    {
        Taken::Events {
            priority,
            items,
            resumed,
        } => (priority, items, resumed),
        Taken::Empty { .. } => panic!("nothing to take"),
    }
}

async fn a_repeated_take_answers_the_batch_already_held(f: &Fixture) {
    let published = publish(f, 10).await;
    let (p, first, resumed) = take(f, "c1", "t1", LEASE).await;
    assert!(!resumed);
    assert_eq!(ids_of(&first), published);
    // The same consumer takes again (its first reply was lost, or it gave the take up):
    // it gets the batch it holds, not another, and the new token now owns the lease.
    let (p2, again, resumed) = take(f, "c1", "t2", LEASE).await;
    assert!(resumed);
    assert_eq!((p2, ids_of(&again)), (p, published.clone()));
    assert_eq!(f.queues.stats().await.unwrap().queues[1].in_flight, 10);
    assert_eq!(
        f.queues.settle("c1", "t1", &done(p), LEASE).await.unwrap(),
        SettleOutcome::LeaseLost,
        "the superseded token cannot settle"
    );
    assert_eq!(
        f.queues.settle("c1", "t2", &done(p), LEASE).await.unwrap(),
        SettleOutcome::Settled
    );
    let stats = f.queues.stats().await.unwrap();
    assert_eq!((stats.queues[1].in_flight, stats.queues[1].depth), (0, 0));
    assert!(matches!(
        f.queues
            .take("c1", "t3", Priority::ALL, 100, LEASE)
            .await
            .unwrap(),
        Taken::Empty { .. }
    ));
}

async fn a_stale_lease_can_neither_renew_nor_settle(f: &Fixture) {
    let published = publish(f, 5).await;
    let (p, items, _) = take(f, "slow", "ts", Duration::from_millis(200)).await;
    assert!(
        f.queues
            .renew("slow", "ts", Duration::from_millis(200))
            .await
            .unwrap()
    );
    wait_for_async("the short lease to be reaped", || async {
        (f.queues.reap().await.unwrap() > 0).then_some(())
    })
    .await;
    let (_, again, resumed) = take(f, "other", "to", LEASE).await;
    assert!(!resumed);
    assert_eq!(
        ids_of(&again),
        published,
        "the same events, in the same order"
    );
    assert!(
        !f.queues.renew("slow", "ts", LEASE).await.unwrap(),
        "a lease taken back cannot be renewed"
    );
    assert_eq!(
        f.queues
            .settle("slow", "ts", &dead_all(p, &items), LEASE)
            .await
            .unwrap(),
        SettleOutcome::LeaseLost
    );
    assert_eq!(
        f.queues.stats().await.unwrap().dead,
        0,
        "a stale settle dead-letters nothing"
    );
    assert_eq!(
        f.queues
            .settle("other", "to", &done(p), LEASE)
            .await
            .unwrap(),
        SettleOutcome::Settled
    );
}

async fn a_repeated_settle_changes_nothing(f: &Fixture) {
    publish(f, 3).await;
    let (p, items, _) = take(f, "c", "t", LEASE).await;
    let mut settle = dead_all(p, &items[..1]);
    settle.retries = items[1..]
        .iter()
        .map(|s| (s.clone(), Duration::from_secs(3600)))
        .collect();
    assert_eq!(
        f.queues.settle("c", "t", &settle, LEASE).await.unwrap(),
        SettleOutcome::Settled
    );
    // The reply was lost and the worker settles again.
    assert_eq!(
        f.queues.settle("c", "t", &settle, LEASE).await.unwrap(),
        SettleOutcome::AlreadySettled
    );
    let stats = f.queues.stats().await.unwrap();
    assert_eq!((stats.dead, stats.queues[1].retrying), (1, 2));
}

async fn dead_letters_are_found_replayed_and_deleted_by_id(f: &Fixture) {
    let ids = publish(f, 300).await;
    let (mut dead_ids, mut token) = (Vec::new(), 0);
    loop {
        token += 1;
        let taken = f
            .queues
            .take("c", &token.to_string(), Priority::ALL, 100, LEASE)
            .await
            .unwrap();
        let Taken::Events {
            priority, items, ..
        } = taken
        else {
            break;
        };
        dead_ids.extend(ids_of(&items));
        f.queues
            .settle("c", &token.to_string(), &dead_all(priority, &items), LEASE)
            .await
            .unwrap();
    }
    assert_eq!(dead_ids, ids);
    assert_eq!(f.queues.stats().await.unwrap().dead, 300);
    // Oldest, newest and middle are all reachable by id.
    for id in [&ids[0], &ids[299], &ids[150]] {
        let (_, event) = f.queues.dead_letter(id).await.unwrap().expect("found");
        assert_eq!(&event.id, id);
    }
    assert!(f.queues.dead_letter("no-such-id").await.unwrap().is_none());
    let router = Router::default();
    assert!(
        f.queues
            .replay_dead_letter(&ids[150], &router, false)
            .await
            .unwrap()
    );
    assert!(
        !f.queues
            .replay_dead_letter(&ids[150], &router, false)
            .await
            .unwrap()
    );
    assert!(f.queues.delete_dead_letter(&ids[10]).await.unwrap());
    assert!(!f.queues.delete_dead_letter(&ids[10]).await.unwrap());
    let stats = f.queues.stats().await.unwrap();
    assert_eq!((stats.dead, stats.queues[1].depth), (298, 1));
    // Removing entries moved others (the oldest fills the gap): each is still found.
    for (i, id) in ids.iter().enumerate() {
        let found = f.queues.dead_letter(id).await.unwrap();
        assert_eq!(found.is_some(), i != 10 && i != 150, "dead letter {i}");
    }
    assert_eq!(
        f.queues
            .replay_all_dead_letters(&router, false)
            .await
            .unwrap(),
        298
    );
    let stats = f.queues.stats().await.unwrap();
    assert_eq!((stats.dead, stats.queues[1].depth), (0, 299));
}

/// `items` dead-lettered with `error(i)` as each one's `lasterror`.
fn dead_with_errors(
    priority: Priority,
    items: &[Vec<u8>],
    error: impl Fn(usize) -> String,
) -> Settle {
    Settle {
        dead: items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut e = decode(s).unwrap();
                e.extensions
                    .insert("lasterror".into(), serde_json::json!(error(i)));
                (e.id.clone(), encode(&e, false))
            })
            .collect(),
        ..done(priority)
    }
}

/// Every entry `filter` matches, read page by page; the pages' `next` positions.
async fn all_pages(
    f: &Fixture,
    filter: &DeadLetterFilter,
    limit: usize,
) -> (Vec<String>, Vec<usize>) {
    let (mut ids, mut nexts, mut offset) = (Vec::new(), Vec::new(), 0);
    loop {
        let page = f
            .queues
            .dead_letter_page(filter, offset, limit)
            .await
            .unwrap();
        ids.extend(
            page.entries
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned()),
        );
        match page.next {
            Some(next) => {
                assert!(next > offset, "pages move forward");
                nexts.push(next);
                offset = next;
            }
            None => return (ids, nexts),
        }
    }
}

async fn dead_letters_are_paged_filtered_and_handled_in_bulk(f: &Fixture) {
    let publisher = Publisher::new(&f.cfg, f.queues.clone()).unwrap();
    let ids = publisher
        .publish_many(
            (0..50)
                .map(|i| {
                    event(
                        if i < 30 {
                            "user.created"
                        } else {
                            "user.deleted"
                        },
                        i,
                    )
                })
                .collect(),
        )
        .await
        .unwrap();
    let (priority, items, _) = take(f, "c", "t1", LEASE).await;
    assert_eq!(items.len(), 50);
    let error = |i: usize| {
        if i.is_multiple_of(2) {
            format!("webhook answered HTTP 503 ({i})")
        } else {
            format!("Timeout after 5s ({i})")
        }
    };
    let settle = dead_with_errors(priority, &items, error);
    f.queues.settle("c", "t1", &settle, LEASE).await.unwrap();
    assert_eq!(f.queues.stats().await.unwrap().dead, 50);

    // Unfiltered: pages of 20, oldest first, each id once.
    let all = DeadLetterFilter::default();
    let (listed, nexts) = all_pages(f, &all, 20).await;
    assert_eq!(listed, ids);
    assert_eq!(nexts, [20, 40]);
    // By type, and by text in the error (ignoring case), across pages.
    let deleted = DeadLetterFilter {
        event_type: Some("user.deleted".into()),
        error_contains: None,
    };
    let (listed, _) = all_pages(f, &deleted, 7).await;
    assert_eq!(listed, ids[30..]);
    let unavailable = DeadLetterFilter {
        event_type: None,
        error_contains: Some("http 503".into()),
    };
    let (listed, _) = all_pages(f, &unavailable, 1000).await;
    assert_eq!(listed.len(), 25);
    assert!(
        listed
            .iter()
            .all(|id| ids.iter().position(|i| i == id).unwrap().is_multiple_of(2))
    );

    // Delete the deleted-user events that timed out; replay the 503s; replay the rest.
    let deleted_timeouts = DeadLetterFilter {
        event_type: Some("user.deleted".into()),
        error_contains: Some("TIMEOUT".into()),
    };
    assert_eq!(
        f.queues
            .delete_dead_letters(&deleted_timeouts)
            .await
            .unwrap(),
        10
    );
    assert_eq!(f.queues.stats().await.unwrap().dead, 40);
    let router = Router::default();
    assert_eq!(
        f.queues
            .replay_dead_letters(&unavailable, &router, false)
            .await
            .unwrap(),
        25
    );
    let stats = f.queues.stats().await.unwrap();
    assert_eq!((stats.dead, stats.queues[1].depth), (15, 25));
    let (left, _) = all_pages(f, &all, 100).await;
    assert_eq!(left.len(), 15);
    assert!(
        f.queues
            .dead_letter_page(&unavailable, 0, 10)
            .await
            .unwrap()
            .entries
            .is_empty()
    );
    assert_eq!(
        f.queues
            .replay_all_dead_letters(&router, false)
            .await
            .unwrap(),
        15
    );
    let stats = f.queues.stats().await.unwrap();
    assert_eq!((stats.dead, stats.queues[1].depth), (0, 40));
}

async fn settles_are_counted_and_leases_listed(f: &Fixture) {
    publish(f, 10).await;
    let (priority, items, _) = take(f, "worker-a", "t1", LEASE).await;
    let stats = f.queues.stats().await.unwrap();
    assert_eq!(stats.consumers.len(), 1);
    assert_eq!(stats.consumers[0].consumer, "worker-a");
    assert_eq!(stats.consumers[0].held, 10);
    assert!(stats.consumers[0].lease_expires_at.ends_with('Z'));
    let settle = Settle {
        retries: items[..3]
            .iter()
            .map(|s| (s.clone(), Duration::from_secs(60)))
            .collect(),
        dead: items[3..5]
            .iter()
            .map(|s| (decode(s).unwrap().id, s.clone()))
            .collect(),
        ..done(priority)
    };
    f.queues
        .settle("worker-a", "t1", &settle, LEASE)
        .await
        .unwrap();
    // A repeated settle (lost reply) counts nothing twice.
    f.queues
        .settle("worker-a", "t1", &settle, LEASE)
        .await
        .unwrap();
    let stats = f.queues.stats().await.unwrap();
    assert!(stats.consumers.is_empty());
    assert_eq!(
        (
            stats.totals.handled,
            stats.totals.retried,
            stats.totals.dead_lettered
        ),
        (5, 3, 2)
    );
}

async fn an_id_published_once_within_the_window_is_stored_once(f: &Fixture) {
    let publisher = Publisher::new(&f.cfg, f.queues.clone()).unwrap();
    let e = event("user.created", 1);
    let window = Duration::from_secs(600);
    let (id, stored) = publisher.publish_once(e.clone(), window).await.unwrap();
    assert!(stored);
    let (again, stored) = publisher.publish_once(e, window).await.unwrap();
    assert_eq!((again, stored), (id.clone(), false));
    let other = publisher
        .publish_once(event("user.created", 2), window)
        .await
        .unwrap();
    assert!(other.1);
    assert_eq!(f.queues.stats().await.unwrap().queues[1].depth, 2);
    let mut with_attempt = event("user.created", 3);
    with_attempt.attempt = 2;
    let refused = publisher.publish(with_attempt).await.unwrap_err();
    assert!(refused.to_string().contains("attempt"), "{refused}");
}

async fn an_id_dead_lettered_again_replaces_its_dead_letter(f: &Fixture) {
    let publisher = Publisher::new(&f.cfg, f.queues.clone()).unwrap();
    let first = event("user.deleted", 1);
    let id = first.id.clone();
    publisher.publish(first.clone()).await.unwrap();
    // Two other dead letters around it, so the repeat is not at an end of the list.
    publish(f, 1).await;
    for round in 0..2 {
        if round == 1 {
            let mut again = first.clone();
            again
                .extensions
                .insert("note".into(), "second failure".into());
            publisher.publish(again).await.unwrap();
            publish(f, 1).await;
        }
        loop {
            let token = format!("r{round}-{}", rand_token());
            let Taken::Events {
                priority, items, ..
            } = f
                .queues
                .take("c", &token, Priority::ALL, 100, LEASE)
                .await
                .unwrap()
            else {
                break;
            };
            f.queues
                .settle("c", &token, &dead_all(priority, &items), LEASE)
                .await
                .unwrap();
        }
    }
    let stats = f.queues.stats().await.unwrap();
    assert_eq!(stats.dead, 3, "one dead letter per id");
    let (_, latest) = f.queues.dead_letter(&id).await.unwrap().expect("found");
    assert_eq!(
        latest.extensions["note"],
        serde_json::json!("second failure")
    );
    let router = Router::default();
    assert_eq!(
        f.queues
            .replay_all_dead_letters(&router, false)
            .await
            .unwrap(),
        3
    );
    assert_eq!(f.queues.stats().await.unwrap().dead, 0);
}

fn rand_token() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedup_mark_written_by_an_older_version_counts_as_handled() {
    let mut cfg = config();
    cfg.consumer.dedup_window = Duration::from_secs(60);
    let (redis, queues) = redis_queues(&cfg).await;
    let handled_before = event("user.created", 1);
    let fresh = event("user.created", 2);
    let () = ::redis::cmd("SET")
        .arg(format!("faults:state:seen:{}", handled_before.id))
        .arg(1)
        .query(&mut redis.conn())
        .unwrap();
    let publisher = Publisher::new(&cfg, queues.clone()).unwrap();
    publisher
        .publish_many(vec![handled_before.clone(), fresh.clone()])
        .await
        .unwrap();
    let count = Arc::new(Count::default());
    let workers = Workers::start(&cfg, queues.clone(), count.clone());
    wait_for_async("the batch to be settled", || async {
        let s = queues.stats().await.unwrap();
        (s.queues[1].depth == 0 && s.queues[1].in_flight == 0).then_some(())
    })
    .await;
    workers.shutdown().await;
    assert_eq!(count.distinct(), HashSet::from([fresh.id]));
}

/// Handles events only when released; records what it handled.
#[derive(Default)]
struct Gate {
    started: std::sync::atomic::AtomicUsize,
    handled: Mutex<Vec<String>>,
}

impl Handler for Gate {
    fn handle<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.started
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // Never finishes on its own: only losing the lease ends it.
            std::future::pending::<()>().await;
            self.handled.lock().unwrap().push(event.id.clone());
            Ok(())
        })
    }
}

/// Records what it handled.
#[derive(Default)]
struct Count(Mutex<Vec<String>>);

impl Count {
    fn distinct(&self) -> HashSet<String> {
        self.0.lock().unwrap().iter().cloned().collect()
    }
}

impl Handler for Count {
    fn handle<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.0.lock().unwrap().push(event.id.clone());
            Ok(())
        })
    }
}

/// Real Redis, with a second set of queues reaching it through a fault proxy.
struct Proxied {
    redis: RedisProc,
    proxy: Proxy,
    direct: Queues,
    proxied: Queues,
    cfg: EventsConfig,
}

async fn proxied() -> Proxied {
    let redis = RedisProc::start();
    let proxy = Proxy::start(redis.port).await;
    let cfg = config();
    let direct = Queues::redis(
        &cfg,
        RedisBackend::connect(RedisConfig::standalone("127.0.0.1", redis.port))
            .await
            .unwrap(),
    );
    let mut slow = RedisConfig::standalone("127.0.0.1", proxy.port);
    slow.read_timeout = Duration::from_millis(300);
    slow.write_timeout = Duration::from_millis(300);
    slow.pool_size = 1.try_into().unwrap();
    let proxied = Queues::redis(&cfg, RedisBackend::connect(slow).await.unwrap());
    Proxied {
        redis,
        proxy,
        direct,
        proxied,
        cfg,
    }
}

/// A fresh `redis-server` and queues on it.
async fn redis_queues(cfg: &EventsConfig) -> (RedisProc, Queues) {
    let redis = RedisProc::start();
    let backend = RedisBackend::connect(RedisConfig::standalone("127.0.0.1", redis.port))
        .await
        .unwrap();
    (redis, Queues::redis(cfg, backend))
}

async fn publish_to(queues: &Queues, cfg: &EventsConfig, n: usize) -> Vec<String> {
    let publisher = Publisher::new(cfg, queues.clone()).unwrap();
    let mut ids = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        ids.extend(
            publisher
                .publish_many(chunk.iter().map(|i| event("user.created", *i)).collect())
                .await
                .unwrap(),
        );
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_take_whose_reply_is_lost_is_answered_again_and_orphans_nothing() {
    let p = proxied().await;
    // Load the script first: a lost NOSCRIPT answer would keep it from running at all.
    assert!(matches!(
        p.proxied
            .take("warm", "w", Priority::ALL, 1, LEASE)
            .await
            .unwrap(),
        Taken::Empty { .. }
    ));
    let published = publish_to(&p.direct, &p.cfg, 10).await;
    p.proxy.set_mode(Mode::SwallowReplies);
    let queues = p.proxied.clone();
    let take = tokio::spawn(async move { queues.take("c", "t1", Priority::ALL, 100, LEASE).await });
    // Redis ran the take, and its reply was dropped (not merely still in the proxy).
    wait_for_async("Redis to run the take and its reply to be lost", || async {
        let in_flight = p.direct.stats().await.unwrap().queues[1].in_flight;
        (in_flight == 10 && p.proxy.swallowed() > 0).then_some(())
    })
    .await;
    p.proxy.set_mode(Mode::Pass);
    let Taken::Events {
        items,
        resumed,
        priority,
    } = take.await.unwrap().unwrap()
    else {
        panic!("the repeated take found nothing: the batch was orphaned");
    };
    assert!(p.proxy.swallowed() > 0, "a reply was really lost");
    assert!(resumed, "the repeat answers the batch Redis already leased");
    assert_eq!(ids_of(&items), published);
    assert_eq!(
        p.proxied
            .settle("c", "t1", &done(priority), LEASE)
            .await
            .unwrap(),
        SettleOutcome::Settled
    );
    let stats = p.direct.stats().await.unwrap();
    assert_eq!((stats.queues[1].depth, stats.queues[1].in_flight), (0, 0));
    drop(p.redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_whose_reply_is_lost_is_not_applied_twice() {
    let p = proxied().await;
    publish_to(&p.direct, &p.cfg, 7).await;
    let Taken::Events {
        priority, items, ..
    } = p
        .proxied
        .take("c", "t1", Priority::ALL, 100, LEASE)
        .await
        .unwrap()
    else {
        panic!("nothing taken");
    };
    // Load the script first (a stale token changes nothing).
    assert_eq!(
        p.proxied
            .settle("c", "stale", &done(priority), LEASE)
            .await
            .unwrap(),
        SettleOutcome::LeaseLost
    );
    p.proxy.set_mode(Mode::SwallowReplies);
    let queues = p.proxied.clone();
    let settle = dead_all(priority, &items);
    let settling = tokio::spawn(async move { queues.settle("c", "t1", &settle, LEASE).await });
    // Ran, and its reply swallowed (not merely still on its way through the proxy).
    wait_for_async(
        "Redis to run the settle and its reply to be lost",
        || async {
            let dead = p.direct.stats().await.unwrap().dead;
            (dead == 7 && p.proxy.swallowed() > 0).then_some(())
        },
    )
    .await;
    p.proxy.set_mode(Mode::Pass);
    // Normally the repeat recognises the settle that ran. On a loaded machine the first
    // attempt can time out inside the proxy before reaching Redis; then a later attempt
    // is the one that ran, and answers `Settled`. Either way it ran once.
    let outcome = settling.await.unwrap().unwrap();
    assert!(
        matches!(
            outcome,
            SettleOutcome::AlreadySettled | SettleOutcome::Settled
        ),
        "{outcome:?}"
    );
    let stats = p.direct.stats().await.unwrap();
    assert_eq!(stats.dead, 7, "each dead letter once");
    assert_eq!(stats.queues[1].in_flight, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cut_off_past_its_lease_abandons_its_batch_and_another_delivers_it() {
    let p = proxied().await;
    let published = publish_to(&p.direct, &p.cfg, 20).await;
    let mut cfg = p.cfg.clone();
    cfg.performance.worker_count = 1.try_into().unwrap();
    cfg.consumer.lease = Duration::from_secs(1);
    let gate = Arc::new(Gate::default());
    let stalled = Workers::start(&cfg, p.proxied.clone(), gate.clone());
    wait_for_async("the first worker to hold the batch", || async {
        (gate.started.load(std::sync::atomic::Ordering::SeqCst) == 20).then_some(())
    })
    .await;
    // Its renewals stop reaching Redis: the lease runs out and the events go back.
    p.proxy.set_mode(Mode::SwallowReplies);
    let healthy = Arc::new(Count::default());
    let workers = Workers::start(&cfg, p.direct.clone(), healthy.clone());
    wait_for_async("another worker to deliver the batch", || async {
        (healthy.distinct().len() == 20).then_some(())
    })
    .await;
    // The first worker hears again that its lease is gone, and stops.
    p.proxy.set_mode(Mode::Pass);
    let stalled_done = tokio::spawn(stalled.shutdown());
    tokio::time::timeout(support::PATIENCE, stalled_done)
        .await
        .expect("the stalled worker stops once its lease is refused")
        .unwrap();
    workers.shutdown().await;
    assert!(gate.handled.lock().unwrap().is_empty());
    let delivered = healthy.distinct();
    assert!(published.iter().all(|id| delivered.contains(id)));
    let stats = p.direct.stats().await.unwrap();
    assert_eq!(
        (stats.dead, stats.queues[1].depth, stats.queues[1].in_flight),
        (0, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_batch_size_delivers_every_event() {
    let mut cfg = config();
    cfg.consumer.batch_size = blinkchamber::config::events_bounds::MAX_BATCH
        .try_into()
        .unwrap();
    cfg.performance.worker_count = 2.try_into().unwrap();
    let (_redis, queues) = redis_queues(&cfg).await;
    let published = publish_to(&queues, &cfg, 25_000).await;
    let count = Arc::new(Count::default());
    let workers = Workers::start(&cfg, queues.clone(), count.clone());
    wait_for_async("every event to be delivered", || async {
        (count.distinct().len() == published.len()).then_some(())
    })
    .await;
    workers.shutdown().await;
    let stats = queues.stats().await.unwrap();
    assert_eq!(
        (stats.dead, stats.queues[1].depth, stats.queues[1].in_flight),
        (0, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_dead_letters_are_each_reachable_by_id() {
    let (redis, queues) = redis_queues(&config()).await;
    const N: usize = 1_000_000;
    let mut conn = redis.conn();
    let mut ids = Vec::with_capacity(N);
    for chunk in (0..N).collect::<Vec<_>>().chunks(20_000) {
        let mut pipe = ::redis::pipe();
        for i in chunk {
            let mut e = event("user.deleted", *i);
            e.attempt = 4;
            let stored = encode(&e, false);
            // As settle leaves them: pushed at the newest end, positioned from the oldest.
            pipe.cmd("LPUSH").arg("faults:dead").arg(&stored).ignore();
            let mut indexed = format!("{i} ").into_bytes();
            indexed.extend_from_slice(&stored);
            pipe.cmd("HSET")
                .arg("faults:dead:index")
                .arg(&e.id)
                .arg(indexed)
                .ignore();
            pipe.cmd("HSET")
                .arg("faults:dead:positions")
                .arg(*i)
                .arg(&e.id)
                .ignore();
            ids.push(e.id);
        }
        let () = pipe.query(&mut conn).unwrap();
    }
    assert_eq!(queues.stats().await.unwrap().dead, N as u64);
    for id in [&ids[0], &ids[N / 2], &ids[N - 1]] {
        let (_, e) = queues.dead_letter(id).await.unwrap().expect("reachable");
        assert_eq!(&e.id, id);
    }
    let router = Router::default();
    assert!(
        queues
            .replay_dead_letter(&ids[N / 2], &router, false)
            .await
            .unwrap()
    );
    assert!(queues.delete_dead_letter(&ids[N / 3]).await.unwrap());
    let stats = queues.stats().await.unwrap();
    assert_eq!((stats.dead, stats.queues[1].depth), (N as u64 - 2, 1));
    // The oldest two filled the gaps and are still found by id.
    for id in [&ids[0], &ids[1], &ids[N - 1]] {
        let (_, e) = queues.dead_letter(id).await.unwrap().expect("reachable");
        assert_eq!(&e.id, id);
    }
    assert!(queues.dead_letter(&ids[N / 3]).await.unwrap().is_none());
    let replayed = queues.peek(Some(Priority::Normal), 1).await.unwrap();
    let replayed = decode(&replayed[0]).unwrap();
    assert_eq!(
        (replayed.id.as_str(), replayed.attempt),
        (ids[N / 2].as_str(), 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_written_before_the_index_are_still_reachable() {
    let (redis, queues) = redis_queues(&config()).await;
    let mut conn = redis.conn();
    let mut ids = Vec::new();
    for i in 0..2500 {
        let e = event("user.deleted", i);
        let () = ::redis::cmd("LPUSH")
            .arg("faults:dead")
            .arg(encode(&e, false))
            .query(&mut conn)
            .unwrap();
        ids.push(e.id);
    }
    let (_, e) = queues
        .dead_letter(&ids[1200])
        .await
        .unwrap()
        .expect("found by reading the list");
    assert_eq!(e.id, ids[1200]);
    assert!(queues.delete_dead_letter(&ids[5]).await.unwrap());
    let router = Router::default();
    assert_eq!(
        queues
            .replay_all_dead_letters(&router, false)
            .await
            .unwrap(),
        2499
    );
    assert_eq!(queues.stats().await.unwrap().dead, 0);
}
