//! Delivery beyond one process: the webhook sink (signed requests, failures retried and
//! dead-lettered), `blinkchamber worker` killed in the middle of a batch, and the
//! `blinkchamber events` command line against real Redis.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use blinkchamber::RedisBackend;
use blinkchamber::config::{EventsConfig, RedisConfig, SecretSource, WebhookConfig};
use blinkchamber::events::{
    Event, Publisher, Queues, Sinks, WEBHOOK_SIGNATURE_HEADER, Workers, verify,
};
use serde_json::value::to_raw_value;
use support::serve::{blinkchamber, write};
use support::{RedisProc, free_port, wait_for_async};
use tokio::sync::watch;

/// A webhook receiver on loopback: records every request, answers `500` for the types in
/// `failing`, and holds requests while `hold` is `true`.
#[derive(Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    failing: Arc<Vec<String>>,
    hold: watch::Receiver<bool>,
}

impl Receiver {
    /// Starts it; returns it, its URL and the switch that releases held requests.
    async fn start(failing: &[&str], hold: bool) -> (Self, String, watch::Sender<bool>) {
        let (release, held) = watch::channel(hold);
        let receiver = Self {
            got: Arc::default(),
            failing: Arc::new(failing.iter().map(|t| (*t).to_owned()).collect()),
            hold: held,
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(Self::receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url, release)
    }

    async fn receive(State(me): State<Self>, headers: HeaderMap, body: Bytes) -> StatusCode {
        let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        me.got.lock().unwrap().push((headers, body));
        let mut hold = me.hold.clone();
        let _ = hold.wait_for(|held| !held).await;
        let ty = event["type"].as_str().unwrap_or_default();
        if me.failing.iter().any(|t| t == ty) {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        }
    }

    fn ids(&self) -> Vec<String> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, body)| {
                let event: serde_json::Value = serde_json::from_slice(body).unwrap();
                event["id"].as_str().unwrap().to_owned()
            })
            .collect()
    }
}

fn event(ty: &str, n: usize) -> Event {
    Event::new(ty, "/test", Some(to_raw_value(&n).unwrap()))
}

fn webhook(pattern: &str, url: &str, key: Option<&str>) -> WebhookConfig {
    WebhookConfig {
        pattern: pattern.into(),
        url: url.into(),
        signing_key: key.map(SecretSource::value),
        timeout: Duration::from_secs(30),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_sink_posts_signed_events_and_failures_end_in_the_dead_letter_list() {
    let (receiver, url, _release) = Receiver::start(&["user.deleted"], false).await;
    let mut cfg = EventsConfig::default();
    cfg.consumer.retry_delay = Duration::from_millis(1);
    cfg.consumer.max_retry_delay = Duration::from_millis(5);
    cfg.consumer.max_retries = 2;
    cfg.sinks.log = false;
    cfg.sinks.webhooks = vec![
        webhook("user.*", &url, Some("hook-key")),
        // Matches nothing published: never called.
        webhook("org.*", "http://127.0.0.1:9/never", None),
    ];
    let queues = Queues::memory(&cfg);
    let publisher = Publisher::new(&cfg, queues.clone()).unwrap();
    let created = publisher.publish(event("user.created", 1)).await.unwrap();
    let deleted = publisher.publish(event("user.deleted", 2)).await.unwrap();
    let login = publisher.publish(event("auth.login", 3)).await.unwrap();
    let sinks = Sinks::from_config(&cfg.sinks).unwrap();
    let workers = Workers::start(&cfg, queues.clone(), Arc::new(sinks));
    wait_for_async("the failing event to be dead-lettered", || async {
        (queues.stats().await.unwrap().dead == 1).then_some(())
    })
    .await;
    workers.shutdown().await;

    let ids = receiver.ids();
    assert_eq!(
        ids.iter().filter(|id| **id == created).count(),
        1,
        "{ids:?}"
    );
    assert_eq!(
        ids.iter().filter(|id| **id == deleted).count(),
        3,
        "1 + maxRetries attempts: {ids:?}"
    );
    assert!(!ids.contains(&login), "auth.login matches no webhook");
    for (headers, body) in receiver.got.lock().unwrap().iter() {
        assert_eq!(
            headers["content-type"], "application/cloudevents+json",
            "{headers:?}"
        );
        let signature = headers[WEBHOOK_SIGNATURE_HEADER].to_str().unwrap();
        verify(
            Some(signature),
            body,
            b"hook-key",
            Duration::from_secs(300),
            SystemTime::now(),
        )
        .unwrap();
        assert!(
            verify(
                Some(signature),
                body,
                b"other-key",
                Duration::from_secs(300),
                SystemTime::now()
            )
            .is_err()
        );
    }
    let (_, dead) = queues.dead_letter(&deleted).await.unwrap().unwrap();
    let reason = dead.extensions["lasterror"].as_str().unwrap().to_owned();
    assert!(reason.contains("answered 500"), "{reason}");
    assert!(reason.contains(&url), "{reason}");
}

const QUEUES: &str = "  queues:\n    high_priority: t:high\n    normal_priority: t:normal\n    \
                      low_priority: t:low\n    dead_letter: t:dead\n    state_prefix: 't:state:'\n";

fn queues_config() -> EventsConfig {
    let mut cfg = EventsConfig::default();
    let q = &mut cfg.queues;
    q.high_priority = "t:high".into();
    q.normal_priority = "t:normal".into();
    q.low_priority = "t:low".into();
    q.dead_letter = "t:dead".into();
    q.state_prefix = "t:state:".into();
    cfg
}

async fn redis_queues(redis: &RedisProc, cfg: &EventsConfig) -> Queues {
    let backend = RedisBackend::connect(RedisConfig::standalone("127.0.0.1", redis.port))
        .await
        .unwrap();
    Queues::redis(cfg, backend)
}

fn start_worker(dir: &Path, config: &Path, name: &str) -> Child {
    blinkchamber()
        .arg("worker")
        .arg("--config")
        .arg(config)
        .env(
            "BLINKCHAMBER_SERVER__METRICS_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
        .spawn()
        .expect("spawn worker")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_loses_nothing() {
    let redis = RedisProc::start();
    let dir = tempfile::tempdir().unwrap();
    let (receiver, url, release) = Receiver::start(&[], true).await;
    let config = write(
        dir.path(),
        "worker.yaml",
        &format!(
            "server:\n  auth:\n    enabled: false\nbackend: redis\nredis:\n  port: {port}\nevents:\n  redis:\n    database: 0\n\
             {QUEUES}  consumer:\n    lease: 3s\n    batchSize: 20\n  performance:\n    \
             workerCount: 2\n    flushInterval: 100ms\n  sinks:\n    log: false\n    webhooks:\n      \
             - match: '*'\n        url: {url}\n        timeout: 2s\n",
            port = redis.port
        ),
    );
    let cfg = queues_config();
    let queues = redis_queues(&redis, &cfg).await;
    let publisher = Publisher::new(&cfg, queues.clone()).unwrap();
    let mut ids = Vec::new();
    for chunk in 0..3 {
        let events = (0..100).map(|i| event("user.created", chunk * 100 + i));
        ids.extend(publisher.publish_many(events.collect()).await.unwrap());
    }

    let mut first = start_worker(dir.path(), &config, "first");
    wait_for_async(
        "the first worker to be in the middle of its batches",
        || async {
            let in_flight: u64 = queues
                .stats()
                .await
                .unwrap()
                .queues
                .iter()
                .map(|q| q.in_flight)
                .sum();
            (receiver.ids().len() >= 2 && in_flight >= 2).then_some(())
        },
    )
    .await;
    first.kill().unwrap();
    first.wait().unwrap();
    let stats = queues.stats().await.unwrap();
    let leased: u64 = stats.queues.iter().map(|q| q.in_flight).sum();
    assert!(
        leased >= 2,
        "the killed worker's batches stay leased: {stats:?}"
    );
    let killed: Vec<String> = stats
        .consumers
        .iter()
        .filter(|c| c.held > 0)
        .map(|c| c.consumer.clone())
        .collect();
    assert!(
        !killed.is_empty(),
        "the killed worker holds leases: {stats:?}"
    );

    release.send(false).unwrap();
    let mut second = start_worker(dir.path(), &config, "second");
    let want: HashSet<String> = ids.iter().cloned().collect();
    wait_for_async("every event to be delivered and settled", || async {
        let got: HashSet<String> = receiver.ids().into_iter().collect();
        let stats = queues.stats().await.unwrap();
        let idle = stats
            .queues
            .iter()
            .all(|q| (q.depth, q.in_flight, q.retrying) == (0, 0, 0));
        (idle && want.is_subset(&got)).then_some(())
    })
    .await;
    second.kill().unwrap();
    second.wait().unwrap();
    let delivered = receiver.ids();
    assert!(
        delivered.len() >= ids.len(),
        "at least once: {}",
        delivered.len()
    );
    let stats = queues.stats().await.unwrap();
    assert_eq!(stats.dead, 0);
    // Taken back from the killed worker's expired leases (by the second worker: nothing
    // else reaps), not merely delivered twice.
    assert!(
        stats
            .consumers
            .iter()
            .all(|c| !killed.contains(&c.consumer)),
        "the killed worker's leases were reaped: {killed:?} in {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_command_shows_queues_and_operates_dead_letters() {
    let redis = RedisProc::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "events.yaml",
        &format!(
            "server:\n  auth:\n    enabled: false\nbackend: redis\nredis:\n  port: {port}\nevents:\n  redis:\n    database: 0\n{QUEUES}",
            port = redis.port
        ),
    );
    let cfg = queues_config();
    let queues = redis_queues(&redis, &cfg).await;
    let publisher = Publisher::new(&cfg, queues.clone()).unwrap();
    publisher.publish(event("auth.login", 1)).await.unwrap();
    publisher.publish(event("user.created", 2)).await.unwrap();
    // Two dead letters, as a worker leaves them.
    let mut dead_ids = Vec::new();
    for n in 0..2 {
        let mut e = event("user.deleted", n);
        e.attempt = 4;
        e.extensions
            .insert("lasterror".into(), "webhook answered 500".into());
        dead_ids.push(e.id.clone());
        let stored = blinkchamber::events::encode(&e, false);
        let mut conn = redis.conn();
        let _: () = redis::cmd("LPUSH")
            .arg("t:dead")
            .arg(stored)
            .query(&mut conn)
            .unwrap();
    }
    let run = |args: &[&str]| {
        let mut all = vec!["events", "--config", config.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = support::serve::run(&all, &[]);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), stdout, stderr)
    };

    let (ok, stats, err) = run(&["stats", "--json"]);
    assert!(ok, "{err}");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["queues"][0]["depth"], 1, "{stats}");
    assert_eq!(stats["queues"][1]["depth"], 1, "{stats}");
    assert_eq!(stats["dead"], 2, "{stats}");
    let (ok, table, err) = run(&["stats"]);
    assert!(ok, "{err}");
    assert!(table.contains("t:high"), "{table}");

    let (ok, peeked, err) = run(&["peek", "high"]);
    assert!(ok, "{err}");
    let line: serde_json::Value = serde_json::from_str(peeked.trim()).unwrap();
    assert_eq!(line["type"], "auth.login");

    let (ok, listed, err) = run(&["dead-letter", "list"]);
    assert!(ok, "{err}");
    assert_eq!(listed.lines().count(), 2, "{listed}");
    let (ok, shown, err) = run(&["dead-letter", "show", &dead_ids[0]]);
    assert!(ok, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["lasterror"], "webhook answered 500");
    assert_eq!(shown["attempt"], 4);

    let (ok, _, err) = run(&["dead-letter", "show", "no-such-id"]);
    assert!(!ok);
    assert!(err.contains("no dead letter with id `no-such-id`"), "{err}");

    let (ok, out, err) = run(&["dead-letter", "replay", &dead_ids[0]]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "replayed 1");
    let normal = queues
        .peek(Some(blinkchamber::events::Priority::Normal), 10)
        .await
        .unwrap();
    let replayed = normal
        .iter()
        .map(|s| blinkchamber::events::decode(s).unwrap())
        .find(|e| e.id == dead_ids[0])
        .expect("the replayed event is back in the normal queue");
    assert_eq!(replayed.attempt, 0);
    assert!(!replayed.extensions.contains_key("lasterror"));

    let (ok, _, err) = run(&["dead-letter", "purge"]);
    assert!(!ok);
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(queues.stats().await.unwrap().dead, 1, "nothing purged yet");
    let (ok, out, err) = run(&["dead-letter", "purge", "--yes"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "purged 1");
    assert_eq!(queues.stats().await.unwrap().dead, 0);
}
