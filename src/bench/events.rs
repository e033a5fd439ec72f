//! Event rows: enqueue, enqueue → consume → ack, end-to-end latency at a fixed offered
//! rate, and Redis memory per pending event, on events of about 220 bytes.
//!
//! Baselines measured in the same run: `LPUSH` of 100 elements per command (the least a
//! batched enqueue can cost), and a reliable queue built from raw commands (`LPUSH` ×100,
//! then per event `BLMOVE` to a processing list and `LREM` to ack) consumed by as many
//! consumers as BlinkChamber has workers. Batch rows count events, not commands.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use serde_json::value::RawValue;

use super::{Row, measure};
use crate::backend::RedisBackend;
use crate::config::EventsConfig;
use crate::events::{Event, Handler, Publisher, Queues, Workers, encode};

/// Events per enqueue call.
pub const BATCH: usize = 100;
/// Workers (and raw consumers) in the end-to-end rows.
pub const WORKERS: usize = 10;
/// Events each end-to-end row moves through the queue.
pub const E2E_EVENTS: u64 = 300_000;
/// Offered rate of the latency row, events per second.
pub const OFFERED_RATE: u64 = 5_000;

const RAW_BATCH: &str = "raw LPUSH ×100 (per event)";
const RAW_E2E: &str = "raw BLMOVE + LREM queue, 10 consumers (per event)";

/// An event whose stored form is about 220 bytes; `sent` is nanoseconds since the run's
/// start, for latency.
pub(super) fn bench_event(sent: u64) -> Event {
    let data = RawValue::from_string(format!(
        r#"{{"userId":"u-000000000000000000","orgId":"o-00000000000000","sent":{sent}}}"#
    ))
    .expect("JSON");
    Event::new("user.created", "/bench", Some(data))
}

pub(super) fn config(prefix: &str) -> EventsConfig {
    let mut cfg = EventsConfig::default();
    let q = &mut cfg.queues;
    q.high_priority = format!("{prefix}events:high");
    q.normal_priority = format!("{prefix}events:normal");
    q.low_priority = format!("{prefix}events:low");
    q.dead_letter = format!("{prefix}events:dead");
    q.state_prefix = format!("{prefix}events:state:");
    cfg.performance.worker_count = std::num::NonZeroUsize::new(WORKERS).expect("nonzero");
    cfg.performance.flush_interval = Duration::from_millis(100);
    cfg
}

/// Counts handled events and records their latency from `sent`.
struct Counter {
    start: Instant,
    handled: AtomicU64,
    latencies: std::sync::Mutex<Vec<u64>>,
}

impl Handler for Counter {
    fn handle<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), String>> {
        let now = self.start.elapsed().as_nanos() as u64;
        // Only `sent` is read (the rest is skipped, not built into a `Value`): the row
        // measures the queue, not this handler.
        #[derive(serde::Deserialize)]
        struct Sent {
            sent: u64,
        }
        let sent = event
            .data
            .as_ref()
            .and_then(|d| serde_json::from_str::<Sent>(d.get()).ok())
            .map(|d| d.sent);
        if let Some(sent) = sent {
            self.latencies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(now.saturating_sub(sent));
        }
        self.handled.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
}

impl Counter {
    fn new(start: Instant) -> Arc<Self> {
        Arc::new(Self {
            start,
            handled: AtomicU64::new(0),
            latencies: std::sync::Mutex::new(Vec::new()),
        })
    }

    async fn wait_for(&self, n: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.handled.load(Ordering::Relaxed) < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn row(&self, name: &str, elapsed: Duration) -> Row {
        let latencies =
            std::mem::take(&mut *self.latencies.lock().unwrap_or_else(|e| e.into_inner()));
        Row::from_latencies(
            name,
            self.handled.load(Ordering::Relaxed),
            elapsed,
            latencies,
        )
    }
}

/// Deletes every key under `prefix`.
pub(super) async fn cleanup(mut raw: MultiplexedConnection, prefix: &str) {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut raw)
        .await
        .unwrap_or_default();
    for chunk in keys.chunks(500) {
        let _: Result<i64, _> = redis::cmd("UNLINK").arg(chunk).query_async(&mut raw).await;
    }
}

/// Replicas connected to the measured Redis (the `waitReplicas` row needs one).
async fn replicas(mut raw: MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut raw)
        .await
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("connected_slaves:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Scales a per-batch row to events.
fn per_event(mut row: Row, n: usize) -> Row {
    row.ops_per_sec *= n as f64;
    row.cpu = row.cpu.map(|d| d / n as u32);
    row.redis_cpu = row.redis_cpu.map(|d| d / n as u32);
    row
}

/// The event rows of one round.
pub async fn event_rows(
    client: &redis::Client,
    raw: MultiplexedConnection,
    backend: RedisBackend,
    concurrency: usize,
    duration: Duration,
    prefix: &str,
) -> Vec<Row> {
    let prefix = format!("{prefix}ev:");
    let stored = encode(&bench_event(0), false);
    let mut rows = Vec::new();

    let list = format!("{prefix}raw");
    let batch: Vec<Vec<u8>> = vec![stored.clone(); BATCH];
    rows.push(per_event(
        super::raw::lpush_row(RAW_BATCH, raw.clone(), &list, batch, concurrency, duration).await,
        BATCH,
    ));
    cleanup(raw.clone(), &prefix).await;

    let cfg = config(&prefix);
    let queues = Queues::redis(&cfg, backend.clone());
    const ENQUEUE: &str = "event enqueue, batches of 100 (per event)";
    rows.push(
        enqueue_row(ENQUEUE, &cfg, &queues, concurrency, duration)
            .await
            .against(RAW_BATCH),
    );
    cleanup(raw.clone(), &prefix).await;

    if replicas(raw.clone()).await > 0 {
        let mut cfg = cfg.clone();
        cfg.publishing.wait_replicas = 1;
        let name = "event enqueue, batches of 100, waitReplicas 1 (per event)";
        rows.push(
            enqueue_row(name, &cfg, &queues, concurrency, duration)
                .await
                .against(ENQUEUE),
        );
        cleanup(raw.clone(), &prefix).await;
    }

    rows.push(raw_e2e(client, raw.clone(), &list, &stored).await);
    cleanup(raw.clone(), &prefix).await;
    rows.push(e2e(&cfg, queues.clone()).await.against(RAW_E2E));
    cleanup(raw.clone(), &prefix).await;
    rows.push(latency(&cfg, queues, duration).await);
    cleanup(raw, &prefix).await;
    rows
}

/// `publish_many` of [`BATCH`] events from `concurrency` callers, counted per event.
async fn enqueue_row(
    name: &str,
    cfg: &EventsConfig,
    queues: &Queues,
    concurrency: usize,
    duration: Duration,
) -> Row {
    let publisher = Publisher::new(cfg, queues.clone()).expect("valid config");
    let row = measure(name, concurrency, duration, move |_, _| {
        let publisher = publisher.clone();
        async move {
            let events = (0..BATCH).map(|_| bench_event(0)).collect();
            let _ = publisher.publish_many(events).await;
        }
    })
    .await;
    per_event(row, BATCH)
}

/// [`E2E_EVENTS`] through a raw reliable queue: one producer pushing 100 per command,
/// [`WORKERS`] consumers, each on its own connection (a blocking command holds one),
/// moving each event to their processing list and removing it.
async fn raw_e2e(
    client: &redis::Client,
    raw: MultiplexedConnection,
    list: &str,
    stored: &[u8],
) -> Row {
    let mut conns = Vec::with_capacity(WORKERS);
    for _ in 0..WORKERS {
        match client.get_multiplexed_async_connection().await {
            Ok(c) => conns.push(c),
            Err(e) => {
                eprintln!("raw queue row skipped: {e}");
                return Row::from_latencies(RAW_E2E, 0, Duration::from_secs(1), Vec::new());
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let start = Instant::now();
    let handled = Arc::new(AtomicU64::new(0));
    let producer = {
        let (mut c, list, batch) = (raw.clone(), list.to_owned(), vec![stored.to_vec(); BATCH]);
        tokio::spawn(async move {
            for _ in 0..E2E_EVENTS / BATCH as u64 {
                let _: Result<i64, _> = redis::cmd("LPUSH")
                    .arg(&list)
                    .arg(&batch)
                    .query_async(&mut c)
                    .await;
            }
        })
    };
    let consumers: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let (list, handled) = (list.to_owned(), handled.clone());
            let processing = format!("{list}:processing:{i}");
            tokio::spawn(async move {
                while handled.load(Ordering::Relaxed) < E2E_EVENTS && Instant::now() < deadline {
                    let item: Option<Vec<u8>> = redis::cmd("BLMOVE")
                        .arg(&list)
                        .arg(&processing)
                        .arg("RIGHT")
                        .arg("LEFT")
                        .arg(0.05)
                        .query_async(&mut c)
                        .await
                        .unwrap_or(None);
                    let Some(item) = item else { continue };
                    let _: Result<i64, _> = redis::cmd("LREM")
                        .arg(&processing)
                        .arg(1)
                        .arg(item)
                        .query_async(&mut c)
                        .await;
                    handled.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let _ = producer.await;
    for c in consumers {
        let _ = c.await;
    }
    Row::from_latencies(
        RAW_E2E,
        handled.load(Ordering::Relaxed),
        start.elapsed(),
        Vec::new(),
    )
}

/// [`E2E_EVENTS`] published in batches of 100 while [`WORKERS`] workers consume them.
async fn e2e(cfg: &EventsConfig, queues: Queues) -> Row {
    let start = Instant::now();
    let counter = Counter::new(start);
    let workers = Workers::start(cfg, queues.clone(), counter.clone());
    let publisher = Publisher::new(cfg, queues).expect("valid config");
    let producers: Vec<_> = (0..4)
        .map(|_| {
            let publisher = publisher.clone();
            tokio::spawn(async move {
                for _ in 0..E2E_EVENTS / BATCH as u64 / 4 {
                    let events = (0..BATCH)
                        .map(|_| bench_event(start.elapsed().as_nanos() as u64))
                        .collect();
                    let _ = publisher.publish_many(events).await;
                }
            })
        })
        .collect();
    for p in producers {
        let _ = p.await;
    }
    counter.wait_for(E2E_EVENTS, Duration::from_secs(60)).await;
    let elapsed = start.elapsed();
    workers.shutdown().await;
    counter.row(
        "event enqueue → consume → ack, 10 workers (per event)",
        elapsed,
    )
}

/// Events offered at [`OFFERED_RATE`] for `duration` (one publish per event, not
/// waiting for earlier ones); latency from publish to the handler.
async fn latency(cfg: &EventsConfig, queues: Queues, duration: Duration) -> Row {
    let start = Instant::now();
    let counter = Counter::new(start);
    let workers = Workers::start(cfg, queues.clone(), counter.clone());
    let publisher = Publisher::new(cfg, queues).expect("valid config");
    let total = OFFERED_RATE * duration.as_millis() as u64 / 1000;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let began = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        tick.tick().await;
        let due = (began.elapsed().as_micros() as u64 * OFFERED_RATE / 1_000_000).min(total);
        while sent < due {
            let publisher = publisher.clone();
            let event = bench_event(start.elapsed().as_nanos() as u64);
            tokio::spawn(async move {
                let _ = publisher.publish(event).await;
            });
            sent += 1;
        }
    }
    counter.wait_for(total, Duration::from_secs(30)).await;
    let offered = began.elapsed();
    workers.shutdown().await;
    counter.row("event latency at 5k/s offered, publish → handler", offered)
}

/// Redis memory per pending event: `used_memory` before and after [`E2E_EVENTS`] events
/// wait in a queue, next to the stored event's own size.
pub async fn memory_line(
    raw: MultiplexedConnection,
    backend: RedisBackend,
    prefix: &str,
) -> String {
    let prefix = format!("{prefix}mem:");
    let cfg = config(&prefix);
    let queues = Queues::redis(&cfg, backend);
    let publisher = Publisher::new(&cfg, queues).expect("valid config");
    let used = |mut c: MultiplexedConnection| async move {
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(0)
    };
    let before = used(raw.clone()).await;
    let mut size = 0usize;
    for _ in 0..E2E_EVENTS / BATCH as u64 {
        let events: Vec<Event> = (0..BATCH).map(|_| bench_event(0)).collect();
        size += events.iter().map(|e| encode(e, false).len()).sum::<usize>();
        let _ = publisher.publish_many(events).await;
    }
    let after = used(raw.clone()).await;
    cleanup(raw, &prefix).await;
    let per_event = (after - before) as f64 / E2E_EVENTS as f64;
    let payload = size as f64 / E2E_EVENTS as f64;
    format!(
        "Redis memory per pending event: {per_event:.0} B for a {payload:.0} B stored event \
         ({:+.0} B overhead; {} events in one queue, used_memory before and after)\n",
        per_event - payload,
        E2E_EVENTS
    )
}
