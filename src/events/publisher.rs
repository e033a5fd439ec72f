//! Publishing: validate, route, encode in the caller's task; batch in one flusher task;
//! acknowledge each caller once its batch is in Redis.
//!
//! The buffer is bounded by `events.performance.eventBufferSize` events (a semaphore):
//! [`Publisher::publish_many`] waits for room, [`Publisher::try_publish_many`] refuses at
//! once (HTTP answers 503 with `Retry-After`). The flusher never holds a batch back to fill
//! it: it sends whatever is queued (up to `batchSize`) as soon as one of its write slots is
//! free, with `maxConcurrentEvents / batchSize` writes in flight, so a lone event costs one
//! round trip and a burst shares them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::envelope::{Event, EventError, encode};
use super::queues::{QueueError, Queues};
use super::routing::{Priority, Router, TypeFilter};
use crate::config::types::duration;
use crate::config::{EventsConfig, PublishingConfig};

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// Event `index` of the call is not acceptable; nothing of the call was published.
    #[error("event {index}: {error}")]
    Invalid {
        /// Position in the call (0 for a single event).
        index: usize,
        /// What is wrong.
        error: EventError,
    },
    /// The buffer is full (only from [`Publisher::try_publish_many`]); nothing was published.
    #[error("the publish buffer is full (events.performance.eventBufferSize); retry later")]
    Full,
    /// More events in one call than the buffer holds.
    #[error("{0} events in one call, more than events.performance.eventBufferSize")]
    TooMany(usize),
    /// Publishing is turned off (`events.enabled` or `events.publishing.enabled`).
    #[error("publishing is disabled (events.enabled / events.publishing.enabled)")]
    Disabled,
    /// The batch could not be written within `batchTimeout` and `maxRetries`. The events may
    /// still have been written (delivery is at least once; ids let consumers de-duplicate).
    #[error("the batch was not acknowledged: {0}")]
    Write(String),
    /// The memory backend has no room for the events (`memory.maxBytes`); nothing of the
    /// call was published.
    #[error(transparent)]
    StoreFull(#[from] crate::backend::Full),
}

/// Why a batch failed, as handed to each of its callers.
#[derive(Clone, Debug, thiserror::Error)]
enum BatchFailure {
    #[error("{0}")]
    Write(String),
    #[error(transparent)]
    Full(crate::backend::Full),
}

impl From<BatchFailure> for PublishError {
    fn from(f: BatchFailure) -> Self {
        match f {
            BatchFailure::Write(e) => Self::Write(e),
            BatchFailure::Full(full) => Self::StoreFull(full),
        }
    }
}

struct Pending {
    items: Vec<(Priority, Vec<u8>)>,
    done: oneshot::Sender<Result<(), BatchFailure>>,
    permits: tokio::sync::OwnedSemaphorePermit,
}

/// Publishes events into the priority queues. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::UnboundedSender<Pending>,
    buffer: Arc<Semaphore>,
    capacity: usize,
    enabled: bool,
    compress: bool,
    router: Router,
    accepted: TypeFilter,
    /// `events.publishing.honourPriority`: a published `priority` attribute picks the queue.
    honour_priority: bool,
    /// For [`Publisher::publish_once`], which writes directly.
    queues: Queues,
    wait_replicas: u32,
    wait_timeout: Duration,
    batch_timeout: Duration,
}

impl Publisher {
    /// A publisher writing to `queues`, with its flusher task. Must be called inside a
    /// Tokio runtime.
    ///
    /// # Errors
    /// A routing rule or accepted type that is not a valid pattern (config validation
    /// catches these first).
    pub fn new(cfg: &EventsConfig, queues: Queues) -> Result<Self, super::routing::PatternError> {
        let router = Router::new(&cfg.routing)?;
        let accepted = TypeFilter::new(&cfg.types)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let capacity = cfg.performance.event_buffer_size.get();
        let slots =
            (cfg.performance.max_concurrent_events.get() / cfg.publishing.batch_size.get()).max(1);
        tokio::spawn(flush(
            rx,
            queues.clone(),
            Arc::new(cfg.publishing.clone()),
            slots,
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                tx,
                buffer: Arc::new(Semaphore::new(capacity)),
                capacity,
                enabled: cfg.enabled && cfg.publishing.enabled,
                compress: cfg.publishing.compression,
                router,
                accepted,
                honour_priority: cfg.publishing.honour_priority,
                queues,
                wait_replicas: cfg.publishing.wait_replicas,
                wait_timeout: cfg.publishing.wait_timeout,
                batch_timeout: cfg.publishing.batch_timeout,
            }),
        })
    }

    /// Priority by event type (`events.routing`), as this publisher routes.
    pub fn router(&self) -> &Router {
        &self.inner.router
    }

    /// Publishes one event; returns its id once it is in Redis.
    ///
    /// # Errors
    /// See [`PublishError`].
    pub async fn publish(&self, event: Event) -> Result<String, PublishError> {
        Ok(self.publish_many(vec![event]).await?.remove(0))
    }

    /// Publishes events, waiting for room in the buffer; returns their ids once all are in
    /// Redis. All or nothing is accepted: one invalid event refuses the call.
    ///
    /// # Errors
    /// See [`PublishError`].
    pub async fn publish_many(&self, events: Vec<Event>) -> Result<Vec<String>, PublishError> {
        self.send(events, true).await
    }

    /// As [`Publisher::publish_many`], but refuses with [`PublishError::Full`] instead of
    /// waiting for room.
    ///
    /// # Errors
    /// See [`PublishError`].
    pub async fn try_publish_many(&self, events: Vec<Event>) -> Result<Vec<String>, PublishError> {
        self.send(events, false).await
    }

    /// Events waiting in the buffer or being written.
    pub fn buffered(&self) -> usize {
        self.inner.capacity - self.inner.buffer.available_permits()
    }

    /// Validates one event, refuses delivery state, applies routing: its queue, stored
    /// form and id.
    fn prepare(
        &self,
        index: usize,
        mut event: Event,
    ) -> Result<(Priority, Vec<u8>, String), PublishError> {
        let inner = &*self.inner;
        event
            .validate(&inner.accepted)
            .map_err(|error| PublishError::Invalid { index, error })?;
        // Delivery state belongs to the queues: a publisher may not skip retries.
        if event.attempt != 0 {
            return Err(PublishError::Invalid {
                index,
                error: EventError::Invalid {
                    attribute: "attempt".into(),
                    message: "is delivery state, set by the workers; publish without it".into(),
                },
            });
        }
        if !inner.honour_priority {
            // Routing decides (events.publishing.honourPriority is off).
            event.priority = None;
        }
        let priority = inner.router.priority(&event);
        Ok((priority, encode(&event, inner.compress), event.id))
    }

    /// Publishes one event unless an event with the same id was published this way within
    /// `window` (publish-time idempotency, for producers whose ids are stable, such as
    /// ZITADEL): returns its id and whether it was stored (`false`: a repeat, dropped).
    /// One round trip of its own, not batched; safe to repeat after a lost reply.
    ///
    /// # Errors
    /// See [`PublishError`].
    pub async fn publish_once(
        &self,
        event: Event,
        window: Duration,
    ) -> Result<(String, bool), PublishError> {
        let inner = &*self.inner;
        if !inner.enabled {
            return Err(PublishError::Disabled);
        }
        let (priority, stored, id) = self.prepare(0, event)?;
        let once = inner.queues.enqueue_once(
            priority,
            &id,
            &stored,
            window,
            inner.wait_replicas,
            inner.wait_timeout,
        );
        let written = tokio::time::timeout(inner.batch_timeout, once)
            .await
            .map_err(|_| {
                PublishError::Write(format!(
                    "no acknowledgement within events.publishing.batchTimeout ({})",
                    duration::format(&inner.batch_timeout)
                ))
            })?
            .map_err(|e| match e {
                QueueError::StoreFull(full) => PublishError::StoreFull(full),
                e => PublishError::Write(e.to_string()),
            })?;
        if written {
            metrics::counter!("blinkchamber_events_published_total").increment(1);
        } else {
            metrics::counter!("blinkchamber_events_publish_duplicates_total").increment(1);
        }
        Ok((id, written))
    }

    async fn send(&self, events: Vec<Event>, wait: bool) -> Result<Vec<String>, PublishError> {
        let inner = &*self.inner;
        if !inner.enabled {
            return Err(PublishError::Disabled);
        }
        if events.len() > inner.capacity {
            return Err(PublishError::TooMany(events.len()));
        }
        let mut ids = Vec::with_capacity(events.len());
        let mut items = Vec::with_capacity(events.len());
        for (index, event) in events.into_iter().enumerate() {
            let (priority, stored, id) = self.prepare(index, event)?;
            items.push((priority, stored));
            ids.push(id);
        }
        if items.is_empty() {
            return Ok(ids);
        }
        let n = u32::try_from(items.len()).unwrap_or(u32::MAX);
        let permits = if wait {
            inner
                .buffer
                .clone()
                .acquire_many_owned(n)
                .await
                .map_err(|_| PublishError::Disabled)?
        } else {
            inner
                .buffer
                .clone()
                .try_acquire_many_owned(n)
                .map_err(|_| PublishError::Full)?
        };
        let (done, answer) = oneshot::channel();
        inner
            .tx
            .send(Pending {
                items,
                done,
                permits,
            })
            .map_err(|_| PublishError::Write("the publisher has stopped".into()))?;
        match answer.await {
            Ok(Ok(())) => Ok(ids),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(PublishError::Write("the publisher has stopped".into())),
        }
    }
}

/// The flusher: gathers what is queued into batches and writes them, `slots` at a time.
async fn flush(
    mut rx: mpsc::UnboundedReceiver<Pending>,
    queues: Queues,
    cfg: Arc<PublishingConfig>,
    slots: usize,
) {
    let slots = Arc::new(Semaphore::new(slots));
    let max = cfg.batch_size.get();
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // Wait for a write slot first: whatever arrives meanwhile joins this batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        let mut size = batch[0].items.len();
        while size < max {
            match rx.try_recv() {
                Ok(p) if size + p.items.len() <= max => {
                    size += p.items.len();
                    batch.push(p);
                }
                Ok(p) => {
                    carry = Some(p);
                    break;
                }
                Err(_) => break,
            }
        }
        let (queues, cfg) = (queues.clone(), cfg.clone());
        tokio::spawn(async move {
            let result = write(&queues, &cfg, &batch).await;
            drop(slot);
            for pending in batch {
                drop(pending.permits);
                let _ = pending.done.send(result.clone());
            }
        });
    }
}

/// One batch: one round trip, retried with `retryDelay` backoff up to `maxRetries`, all
/// within `batchTimeout`.
async fn write(
    queues: &Queues,
    publishing: &PublishingConfig,
    batch: &[Pending],
) -> Result<(), BatchFailure> {
    let items: Vec<(Priority, &[u8])> = batch
        .iter()
        .flat_map(|p| {
            p.items
                .iter()
                .map(|(priority, e)| (*priority, e.as_slice()))
        })
        .collect();
    let started = Instant::now();
    let attempts = async {
        let mut attempt = 0;
        loop {
            match queues
                .enqueue(&items, publishing.wait_replicas, publishing.wait_timeout)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) if attempt < publishing.max_retries && retryable(&e) => {
                    metrics::counter!("blinkchamber_events_publish_retries_total").increment(1);
                    let delay = crate::backoff::exponential(
                        publishing.retry_delay,
                        attempt,
                        Duration::from_secs(30),
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(QueueError::StoreFull(full)) => return Err(BatchFailure::Full(full)),
                Err(e) => return Err(BatchFailure::Write(e.to_string())),
            }
        }
    };
    let result = match tokio::time::timeout(publishing.batch_timeout, attempts).await {
        Ok(result) => result,
        Err(_) => Err(BatchFailure::Write(format!(
            "no acknowledgement within events.publishing.batchTimeout ({})",
            duration::format(&publishing.batch_timeout)
        ))),
    };
    metrics::histogram!("blinkchamber_events_publish_seconds")
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("blinkchamber_events_publish_batches_total").increment(1);
    match &result {
        Ok(()) => {
            metrics::counter!("blinkchamber_events_published_total").increment(items.len() as u64);
        }
        Err(error) => {
            metrics::counter!("blinkchamber_events_publish_failures_total")
                .increment(items.len() as u64);
            tracing::warn!(%error, events = items.len(), "events: a batch was not acknowledged");
        }
    }
    result
}

fn retryable(e: &QueueError) -> bool {
    match e {
        QueueError::Backend(b) => b.is_unreachable() || b.is_transient(),
        QueueError::Replicas { .. } | QueueError::Reply(_) | QueueError::StoreFull(_) => false,
    }
}
