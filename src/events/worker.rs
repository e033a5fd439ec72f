//! Consumers: `workerCount` loops that take a batch, hand its events to the [`Handler`]
//! concurrently (at most `maxConcurrentEvents` at once across the process), and settle
//! the batch (failures to retry with backoff, or to the dead-letter list after
//! `maxRetries`). Each take has its own lease token. The lease is renewed every third of
//! `lease` while a batch is handled, so only a worker that stopped (crashed, hung, lost
//! Redis) lets its events go back; a worker that learns on renewal that its lease is gone
//! stops handling that batch at once and does not settle it.
//! An idle worker blocks on the doorbell (`BLPOP` on its own connection) for at most
//! `flushInterval`, or until the next retry is due, and looks for expired leases between.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::envelope::{Event, decode, encode};
use super::queues::{Queues, Settle, SettleOutcome, Taken, WaitConn};
use super::routing::Priority;
use crate::config::{EventsConfig, PriorityMode};

/// What consumes events. An `Err` is the reason the event failed; it is retried, then
/// dead-lettered with that reason.
pub trait Handler: Send + Sync + 'static {
    /// Handles one event.
    fn handle<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), String>>;
}

/// Logs each event (`tracing`, target `blinkchamber::events`): the structured log sink.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogSink;

impl Handler for LogSink {
    fn handle<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            tracing::info!(
                target: "blinkchamber::events",
                id = %event.id,
                r#type = %event.ty,
                source = %event.source,
                subject = event.subject.as_deref().unwrap_or(""),
                attempt = event.attempt,
                data = event.data_json().unwrap_or("null"),
                "event"
            );
            Ok(())
        })
    }
}

/// A running worker pool.
pub struct Workers {
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl Workers {
    /// Starts `events.performance.workerCount` workers on `queues`.
    pub fn start(cfg: &EventsConfig, queues: Queues, handler: Arc<dyn Handler>) -> Self {
        let (stop, stopped) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(cfg.performance.max_concurrent_events.get()));
        let tasks = (0..cfg.performance.worker_count.get())
            .map(|_| {
                let worker = Worker {
                    consumer: crate::ids::random_hex64(),
                    queues: queues.clone(),
                    handler: handler.clone(),
                    cfg: cfg.clone(),
                    stop: stopped.clone(),
                    permits: permits.clone(),
                    handle_seconds: metrics::histogram!("blinkchamber_events_handle_seconds"),
                };
                tokio::spawn(worker.run())
            })
            .collect();
        Self { tasks, stop }
    }

    /// Lets each worker finish and settle the batch it holds, then waits for all of them.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

struct Worker {
    consumer: String,
    queues: Queues,
    handler: Arc<dyn Handler>,
    cfg: EventsConfig,
    stop: watch::Receiver<bool>,
    /// Events being handled at once in this process (`maxConcurrentEvents`).
    permits: Arc<Semaphore>,
    /// Resolved once: recorded for every event.
    handle_seconds: metrics::Histogram,
}

/// A fresh lease token.
fn new_token() -> String {
    crate::ids::random_hex64()
}

impl Worker {
    async fn run(mut self) {
        let mut conn = WaitConn::default();
        let idle = self
            .cfg
            .performance
            .flush_interval
            .max(Duration::from_millis(10));
        let mut last_reap: Option<Instant> = None;
        let mut failures = 0u32;
        let mut masters = self.queues.master_watch();
        while !*self.stop.borrow() {
            if last_reap.is_none_or(|at| at.elapsed() >= idle) {
                last_reap = Some(Instant::now());
                if let Err(error) = self.queues.reap().await {
                    tracing::warn!(%error, "events: looking for expired leases failed");
                }
            }
            let c = &self.cfg.consumer;
            let token = new_token();
            let taken = self
                .queues
                .take(
                    &self.consumer,
                    &token,
                    self.order(),
                    c.batch_size.get(),
                    c.lease,
                )
                .await;
            match taken {
                Ok(Taken::Events {
                    priority,
                    items,
                    resumed,
                }) => {
                    failures = 0;
                    if resumed {
                        metrics::counter!("blinkchamber_events_take_resumed_total").increment(1);
                        tracing::info!(
                            events = items.len(),
                            "events: resuming a batch this worker already held (a lost reply)"
                        );
                    }
                    self.handle_batch(&token, priority, items).await;
                }
                Ok(Taken::Empty { next_due }) => {
                    failures = 0;
                    let wait = next_due.map_or(idle, |d| d.min(idle));
                    tokio::select! {
                        waited = self.queues.wait(&mut conn, wait) => {
                            if let Err(error) = waited {
                                tracing::warn!(%error, "events: waiting for events failed");
                                self.pause(Duration::from_millis(100)).await;
                            }
                        }
                        _ = self.stop.changed() => {}
                    }
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(%error, "events: taking events failed");
                    let backoff = crate::backoff::exponential(
                        Duration::from_millis(50),
                        failures,
                        Duration::from_millis(1600),
                    );
                    // A new master ends the backoff: the failures were most likely the old
                    // one's.
                    let moved = async {
                        match masters.as_mut() {
                            Some(m) => {
                                if m.changed().await.is_err() {
                                    std::future::pending::<()>().await;
                                }
                            }
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        () = self.pause(backoff) => {}
                        () = moved => failures = 0,
                    }
                }
            }
        }
    }

    async fn pause(&mut self, d: Duration) {
        tokio::select! {
            () = tokio::time::sleep(d) => {}
            _ = self.stop.changed() => {}
        }
    }

    /// Queue order of the next take: strict, or one queue picked by weight first.
    fn order(&self) -> [Priority; 3] {
        let c = &self.cfg.consumer;
        if c.priority == PriorityMode::Strict {
            return Priority::ALL;
        }
        let w = [c.weights.high, c.weights.normal, c.weights.low];
        let total: u32 = w.iter().sum();
        if total == 0 {
            return Priority::ALL;
        }
        let mut pick = rand::random_range(0..total);
        let mut first = Priority::Low;
        for (p, weight) in Priority::ALL.into_iter().zip(w) {
            if pick < weight {
                first = p;
                break;
            }
            pick -= weight;
        }
        let mut order = [first; 3];
        let mut i = 1;
        for p in Priority::ALL {
            if p != first {
                order[i] = p;
                i += 1;
            }
        }
        order
    }

    async fn handle_batch(&mut self, token: &str, priority: Priority, items: Vec<Vec<u8>>) {
        let labels = [("priority", priority.as_str())];
        metrics::counter!("blinkchamber_events_consumed_total", &labels)
            .increment(items.len() as u64);
        let lease = self.cfg.consumer.lease;
        let work = self.handle_all(token, priority, &items);
        tokio::pin!(work);
        // The first renewal a third of the lease from now. (Not `interval` and a first
        // `tick`: that tick waits for the timer wheel's next millisecond, which cost every
        // batch about a millisecond before its first event was handled.)
        let mut renew =
            tokio::time::interval_at(tokio::time::Instant::now() + lease / 3, lease / 3);
        let settle = loop {
            tokio::select! {
                settle = &mut work => break settle,
                _ = renew.tick() => match self.queues.renew(&self.consumer, token, lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        // The batch went back to its queue and may be handled elsewhere:
                        // stop, and do not settle what is no longer ours.
                        metrics::counter!("blinkchamber_events_lease_lost_total").increment(1);
                        tracing::warn!(
                            events = items.len(),
                            "events: lease lost while handling a batch; abandoning it"
                        );
                        return;
                    }
                    Err(error) => tracing::warn!(%error, "events: renewing a lease failed"),
                },
            }
        };
        // Settling must succeed before the next take (the consumer holds one batch, and a
        // take would answer this one again); repeating it is safe, and it stops by itself
        // once the lease is gone.
        let mut backoff = Duration::from_millis(20);
        let outcome = loop {
            match self
                .queues
                .settle(&self.consumer, token, &settle, lease)
                .await
            {
                Ok(outcome) => break outcome,
                Err(error) => {
                    tracing::warn!(%error, "events: settling a batch failed; retrying");
                    if *self.stop.borrow() {
                        return;
                    }
                    tokio::time::sleep(crate::backoff::jittered(backoff)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        };
        match outcome {
            SettleOutcome::Settled | SettleOutcome::AlreadySettled => {
                let acked = items.len() - settle.retries.len() - settle.dead.len();
                metrics::counter!("blinkchamber_events_acked_total", &labels)
                    .increment(acked as u64);
                metrics::counter!("blinkchamber_events_retried_total", &labels)
                    .increment(settle.retries.len() as u64);
                metrics::counter!("blinkchamber_events_dead_lettered_total", &labels)
                    .increment(settle.dead.len() as u64);
            }
            SettleOutcome::LeaseLost => {
                metrics::counter!("blinkchamber_events_lease_lost_total").increment(1);
                tracing::warn!(
                    events = items.len(),
                    "events: the lease ran out before the batch was settled; its events are \
                     back in the queue and will be handled again"
                );
            }
        }
    }

    /// Per event, whether de-duplication skips it: its id was handled within
    /// `dedupWindow`, is being handled under another live lease, or appears earlier in the
    /// same batch. All `false` when the window is zero, and when Redis cannot say
    /// (delivery stays at least once).
    async fn duplicates(&self, token: &str, events: &[Event]) -> Vec<bool> {
        if self.cfg.consumer.dedup_window.is_zero() {
            return vec![false; events.len()];
        }
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        let handle = self
            .queues
            .claim(
                &self.consumer,
                token,
                &ids,
                self.cfg.consumer.lease.max(self.cfg.consumer.dedup_window),
            )
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "events: de-duplication claim failed; handling the batch as is");
                vec![true; ids.len()]
            });
        let mut in_batch = std::collections::HashSet::new();
        ids.iter()
            .zip(handle)
            .map(|(id, handle)| !handle || !in_batch.insert(*id))
            .collect()
    }

    async fn handle_all(&self, token: &str, priority: Priority, items: &[Vec<u8>]) -> Settle {
        let c = &self.cfg.consumer;
        let compress = self.cfg.publishing.compression;
        let mut settle = Settle {
            priority,
            retries: Vec::new(),
            dead: Vec::new(),
            seen: Vec::new(),
            seen_for: c.dedup_window,
        };
        let mut events = Vec::with_capacity(items.len());
        for stored in items {
            match decode(stored) {
                Ok(event) => events.push(event),
                Err(error) => {
                    tracing::warn!(%error, "events: an unreadable entry goes to the dead-letter list");
                    settle.dead.push((String::new(), stored.clone()));
                }
            }
        }
        let skip = self.duplicates(token, &events).await;
        // The futures borrow their event (no event is moved into a task), and the event is
        // copied only when it failed.
        let mut handling = futures_util::stream::FuturesUnordered::new();
        for (event, skip) in events.iter().zip(skip) {
            if skip {
                tracing::debug!(id = %event.id, "events: already handled within the de-duplication window; skipped");
                metrics::counter!("blinkchamber_events_duplicates_total").increment(1);
                continue;
            }
            handling.push(async move {
                // The semaphore is never closed.
                let _permit = self.permits.acquire().await.ok();
                let started = Instant::now();
                let outcome = self.handler.handle(event).instrument(span_of(event)).await;
                self.handle_seconds.record(started.elapsed().as_secs_f64());
                (event, outcome)
            });
        }
        while let Some((event, outcome)) = handling.next().await {
            let Err(reason) = outcome else {
                if !settle.seen_for.is_zero() {
                    settle.seen.push(event.id.clone());
                }
                continue;
            };
            let mut event = event.clone();
            event.attempt = event.attempt.saturating_add(1);
            if event.attempt > c.max_retries {
                let reason: String = reason.chars().take(1000).collect();
                tracing::warn!(id = %event.id, r#type = %event.ty, attempts = event.attempt, %reason, "events: dead-lettered");
                event.extensions.insert("lasterror".into(), reason.into());
                let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
                event
                    .extensions
                    .insert("deadat".into(), now.to_string().into());
                settle
                    .dead
                    .push((event.id.clone(), encode(&event, compress)));
            } else {
                let delay = crate::backoff::at_least(
                    crate::backoff::doubled(c.retry_delay, event.attempt - 1, c.max_retry_delay),
                    c.max_retry_delay,
                );
                tracing::debug!(id = %event.id, attempt = event.attempt, %reason, "events: retrying later");
                settle.retries.push((encode(&event, compress), delay));
            }
        }
        settle
    }
}

/// The span an event is handled in. An event that carries a W3C `traceparent` continues
/// that trace: its span is at `info` with the trace and parent span ids, so the
/// handler's log lines (and an exporter) tie it to the publisher. Others get a `debug`
/// span, which costs nothing unless debug logging is on.
fn span_of(event: &Event) -> tracing::Span {
    match event.trace_context() {
        Some(trace) => {
            let span = tracing::info_span!(
                "event",
                id = %event.id,
                r#type = %event.ty,
                attempt = event.attempt,
                trace_id = trace.trace_id,
                parent_span_id = trace.parent_id,
            );
            if let Some(traceparent) = event.extensions.get("traceparent").and_then(|v| v.as_str())
            {
                crate::telemetry::continue_trace(&span, traceparent);
            }
            span
        }
        None => tracing::debug_span!(
            "event",
            id = %event.id,
            r#type = %event.ty,
            attempt = event.attempt,
        ),
    }
}
