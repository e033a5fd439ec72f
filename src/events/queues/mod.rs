//! The priority queues, on the memory backend or in Redis, with one set of semantics:
//! an enqueued event waits in its priority's queue; a take leases up to N events of one
//! queue to a consumer under a fresh lease token; renewing and settling present that token,
//! so a consumer whose lease ran out (and whose events were taken back and handed to
//! another) can neither keep them nor settle them; settling sends failed events to a retry
//! set (due later, on the store's clock) or the dead-letter list and ends the lease.
//!
//! Every operation is safe to repeat after a lost reply: a take answers the batch the
//! consumer already holds, a settle that already ran answers
//! [`SettleOutcome::AlreadySettled`], and renewing is a compare-and-set.
//!
//! - [`memory`]: one mutex over in-process state (single instance).
//! - [`redis`]: lists, sorted sets and scripts; its docs give the key layout.

mod memory;
mod redis;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use self::memory::MemoryQueues;
use self::redis::RedisQueues;
use super::routing::Priority;
use crate::backend::{Backend, BackendError};
use crate::config::EventsConfig;

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// Redis failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Fewer replicas than `events.publishing.waitReplicas` acknowledged a batch in time.
    #[error(
        "only {acked} of {replicas} replicas acknowledged the batch within events.publishing.waitTimeout"
    )]
    Replicas {
        /// Replicas that acknowledged.
        acked: u32,
        /// Replicas asked for.
        replicas: u32,
    },
    /// Redis answered something the queues did not write (another tool used the keys?).
    #[error("unexpected reply from Redis: {0}")]
    Reply(String),
    /// The memory backend has no room for new events (`memory.maxBytes`).
    #[error(transparent)]
    StoreFull(#[from] crate::backend::Full),
}

impl From<::redis::ParsingError> for QueueError {
    fn from(e: ::redis::ParsingError) -> Self {
        Self::Reply(e.to_string())
    }
}

impl From<::redis::RedisError> for QueueError {
    fn from(e: ::redis::RedisError) -> Self {
        Self::Backend(e.into())
    }
}

/// What a take found.
#[derive(Debug)]
pub enum Taken {
    /// Events of one queue, oldest first, now leased to the consumer under the take's
    /// token.
    Events {
        /// The queue they came from.
        priority: Priority,
        /// The stored events.
        items: Vec<Vec<u8>>,
        /// The consumer already held these events (the reply to the take that leased them
        /// was lost, or that take was given up); they are now under the new token.
        resumed: bool,
    },
    /// Every queue is empty; the earliest retry is due in `next_due`, if any waits.
    Empty {
        /// Time until the first retry is due.
        next_due: Option<Duration>,
    },
}

/// The outcome of a take's events.
#[derive(Debug)]
pub struct Settle {
    /// The queue the take came from.
    pub priority: Priority,
    /// Events to retry (stored form, attempt already counted) and their delay, counted
    /// from the settle on the store's clock.
    pub retries: Vec<(Vec<u8>, Duration)>,
    /// Events for the dead-letter list: their id (empty for an unreadable entry) and
    /// stored form.
    pub dead: Vec<(String, Vec<u8>)>,
    /// Ids of events handled in this take, remembered for `seen_for` so a repeat is
    /// skipped (`events.consumer.dedupWindow`; empty when de-duplication is off).
    pub seen: Vec<String>,
    /// How long the ids in `seen` are remembered.
    pub seen_for: Duration,
}

/// What a settle did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettleOutcome {
    /// The take is settled.
    Settled,
    /// This token's take had been settled already (a repeat after a lost reply); nothing
    /// changed.
    AlreadySettled,
    /// The token no longer holds the lease (it ran out and the events went back to their
    /// queue); nothing changed.
    LeaseLost,
}

/// One queue's numbers.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueStats {
    /// Which queue: `high`, `normal` or `low`.
    #[schema(value_type = String, example = "high")]
    pub priority: Priority,
    /// Events waiting.
    pub depth: u64,
    /// Events taken by consumers and not settled yet.
    pub in_flight: u64,
    /// Events waiting for a retry.
    pub retrying: u64,
    /// How long the next event to be taken has waited (from its `time`), in seconds.
    pub oldest_age: Option<f64>,
}

/// Numbers for every queue.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// One entry per queue, highest priority first (`high`, `normal`, `low`), each named
    /// by its `priority`.
    pub queues: [QueueStats; 3],
    /// Events in the dead-letter list.
    pub dead: u64,
    /// Consumers holding a lease now, soonest expiry first.
    pub consumers: Vec<ConsumerLease>,
    /// What every worker of this backend settled since the queues were created.
    pub totals: Totals,
}

/// A consumer holding a batch.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerLease {
    /// The consumer id (`<host>-<pid>-<n>`).
    pub consumer: String,
    /// When its lease runs out unless renewed (RFC 3339, the backend's clock).
    pub lease_expires_at: String,
    /// Events it holds.
    pub held: u64,
}

/// Settled events, counted by every worker of the backend; they only grow, so a rate is
/// the difference of two readings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Handled (delivered to every sink, or skipped as a duplicate).
    pub handled: u64,
    /// Sent back for a retry.
    pub retried: u64,
    /// Dead-lettered.
    pub dead_lettered: u64,
}

/// Unix milliseconds as RFC 3339.
pub(crate) fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

impl Default for Stats {
    /// Every queue empty.
    fn default() -> Self {
        Self {
            queues: Priority::ALL.map(|priority| QueueStats {
                priority,
                depth: 0,
                in_flight: 0,
                retrying: 0,
                oldest_age: None,
            }),
            dead: 0,
            consumers: Vec::new(),
            totals: Totals::default(),
        }
    }
}

/// The queue store. Cheap to clone.
#[derive(Clone)]
pub struct Queues {
    store: Arc<Store>,
    names: [String; 3],
}

// One per `Queues`, behind an `Arc`: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Store {
    Memory(MemoryQueues),
    Redis(RedisQueues),
}

impl Queues {
    /// The queues on the backend the config names (`events.redis` for Redis).
    pub fn from_config(cfg: &EventsConfig, backend: &Backend) -> Self {
        match backend {
            Backend::Memory(budget) => Self::memory_in(cfg, budget.clone()),
            Backend::Redis(r) => Self::redis(cfg, r.events.clone()),
        }
    }

    /// In-process queues (single instance, lost on restart).
    pub fn memory(cfg: &EventsConfig) -> Self {
        Self::memory_in(cfg, crate::backend::MemoryBudget::default())
    }

    /// In-process queues counted against `budget` (shared with the other stores of the
    /// memory backend): a publish that does not fit is refused, and nothing already
    /// queued is dropped.
    pub fn memory_in(cfg: &EventsConfig, budget: crate::backend::MemoryBudget) -> Self {
        Self::with_store(cfg, Store::Memory(MemoryQueues::new(budget)))
    }

    /// Queues in Redis.
    pub fn redis(cfg: &EventsConfig, backend: crate::RedisBackend) -> Self {
        Self::with_store(cfg, Store::Redis(RedisQueues::new(cfg, backend)))
    }

    fn with_store(cfg: &EventsConfig, store: Store) -> Self {
        let q = &cfg.queues;
        Self {
            store: Arc::new(store),
            names: [
                q.high_priority.clone(),
                q.normal_priority.clone(),
                q.low_priority.clone(),
            ],
        }
    }

    /// The configured name of `priority`'s queue.
    pub fn name(&self, priority: Priority) -> &str {
        &self.names[priority as usize]
    }

    /// Appends stored events to their queues in one step (one round trip on Redis), then
    /// waits for `replicas` replicas (Redis only).
    ///
    /// # Errors
    /// Redis failures; too few replicas.
    pub async fn enqueue(
        &self,
        batch: &[(Priority, &[u8])],
        replicas: u32,
        wait: Duration,
    ) -> Result<(), QueueError> {
        match &*self.store {
            Store::Memory(m) => Ok(m.enqueue(batch)?),
            Store::Redis(r) => r.enqueue(batch, replicas, wait).await,
        }
    }

    /// Enqueues one stored event unless an event with the same `id` was enqueued this way
    /// within `window` (publish-time idempotency), then waits for `replicas` replicas
    /// (Redis only); whether it was enqueued. Safe to repeat after a lost reply.
    ///
    /// # Errors
    /// Redis failures; too few replicas.
    pub async fn enqueue_once(
        &self,
        priority: Priority,
        id: &str,
        event: &[u8],
        window: Duration,
        replicas: u32,
        wait: Duration,
    ) -> Result<bool, QueueError> {
        match &*self.store {
            Store::Memory(m) => Ok(m.enqueue_once(priority, id, event, window)?),
            Store::Redis(r) => {
                r.enqueue_once(priority, id, event, window, replicas, wait)
                    .await
            }
        }
    }

    /// Leases up to `max` events of the first non-empty queue in `order` to `consumer`
    /// under `token` (due retries join their queue first). If the consumer still holds a
    /// batch, that batch is answered again under `token` ([`Taken::Events::resumed`]), so
    /// repeating a take whose reply was lost loses nothing.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn take(
        &self,
        consumer: &str,
        token: &str,
        order: [Priority; 3],
        max: usize,
        lease: Duration,
    ) -> Result<Taken, QueueError> {
        match &*self.store {
            Store::Memory(m) => Ok(m.take(consumer, token, order, max, lease)),
            Store::Redis(r) => r.take(consumer, token, order, max, lease).await,
        }
    }

    /// Ends the take `token` of `consumer`: failed events to retry or dead-letter, the
    /// rest done. Refused, changing nothing, when `token` no longer holds the lease.
    /// `lease` bounds how long a repeat is recognised as one.
    ///
    /// # Errors
    /// Redis failures (repeating the call is safe).
    pub async fn settle(
        &self,
        consumer: &str,
        token: &str,
        settle: &Settle,
        lease: Duration,
    ) -> Result<SettleOutcome, QueueError> {
        match &*self.store {
            Store::Memory(m) => Ok(m.settle(consumer, token, settle)),
            Store::Redis(r) => r.settle(consumer, token, settle, lease).await,
        }
    }

    /// Claims the events `ids` for handling under `token` (de-duplication): per id, in
    /// order, `false` when it was handled within its window or is being handled under
    /// another live lease, else `true` (and the claim is recorded, for `lease`).
    ///
    /// # Errors
    /// Redis failures.
    pub async fn claim(
        &self,
        consumer: &str,
        token: &str,
        ids: &[&str],
        lease: Duration,
    ) -> Result<Vec<bool>, QueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        match &*self.store {
            Store::Memory(m) => Ok(m.claim(consumer, token, ids, lease)),
            Store::Redis(r) => r.claim(consumer, token, ids, lease).await,
        }
    }

    /// Extends `consumer`'s lease to `lease` from now if `token` still holds it; `false`
    /// means the lease is gone (its events went back to the queue) and the batch must not
    /// be handled further.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn renew(
        &self,
        consumer: &str,
        token: &str,
        lease: Duration,
    ) -> Result<bool, QueueError> {
        match &*self.store {
            Store::Memory(m) => Ok(m.renew(consumer, token, lease)),
            Store::Redis(r) => r.renew(consumer, token, lease).await,
        }
    }

    /// Puts the events of every expired lease back at the front of their queues (and
    /// rings the doorbell); returns how many.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn reap(&self) -> Result<u64, QueueError> {
        let moved = match &*self.store {
            Store::Memory(m) => m.reap(),
            Store::Redis(r) => r.reap().await?,
        };
        if moved > 0 {
            metrics::counter!("blinkchamber_events_lease_expired_total").increment(moved);
            tracing::warn!(
                moved,
                "events: leases ran out; their events are back in the queues"
            );
        }
        Ok(moved)
    }

    /// Numbers for `events stats` and the queue gauges.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn stats(&self) -> Result<Stats, QueueError> {
        match &*self.store {
            Store::Memory(m) => Ok(m.stats()),
            Store::Redis(r) => r.stats().await,
        }
    }

    /// Up to `n` stored events of `priority`'s queue (`None`: the dead-letter list), next to
    /// be taken first.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn peek(
        &self,
        priority: Option<Priority>,
        n: usize,
    ) -> Result<Vec<Vec<u8>>, QueueError> {
        self.peek_from(priority, 0, n).await
    }

    /// Like [`Queues::peek`], after skipping the first `skip` entries.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn peek_from(
        &self,
        priority: Option<Priority>,
        skip: usize,
        n: usize,
    ) -> Result<Vec<Vec<u8>>, QueueError> {
        match &*self.store {
            Store::Memory(m) => Ok(m.peek(priority, skip, n)),
            Store::Redis(r) => {
                let list = priority.map_or(r.dead_letter(), |p| r.queue(p)).to_owned();
                r.peek(&list, skip, n).await
            }
        }
    }

    /// The stored dead letter whose event id is `id` (one index lookup).
    ///
    /// # Errors
    /// Redis failures.
    pub async fn dead_get(&self, id: &str) -> Result<Option<Vec<u8>>, QueueError> {
        match &*self.store {
            Store::Memory(m) => Ok(m.dead_get(id)),
            Store::Redis(r) => r.dead_get(id).await,
        }
    }

    /// Removes the dead letter `id` if it is still `stored` and, with `replay`, enqueues
    /// that event in the same step; whether it was removed.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn dead_remove(
        &self,
        id: &str,
        stored: &[u8],
        replay: Option<(Priority, &[u8])>,
    ) -> Result<bool, QueueError> {
        match &*self.store {
            Store::Memory(m) => Ok(m.dead_remove(id, stored, replay)),
            Store::Redis(r) => r.dead_remove(id, stored, replay).await,
        }
    }

    /// Empties the dead-letter list; how many there were.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn purge_dead(&self) -> Result<u64, QueueError> {
        match &*self.store {
            Store::Memory(m) => Ok(m.purge_dead()),
            Store::Redis(r) => r.purge_dead().await,
        }
    }

    /// A receiver that changes whenever the Redis master does (`None` on the memory
    /// store): a consumer backing off after failures tries again at once.
    pub fn master_watch(
        &self,
    ) -> Option<tokio::sync::watch::Receiver<crate::backend::redis::Master>> {
        match &*self.store {
            Store::Memory(_) => None,
            Store::Redis(r) => Some(r.backend().master_watch()),
        }
    }

    /// Waits up to `timeout` for new events (a doorbell rung by publishes, reaps, due
    /// retries and takes that leave events behind). `conn` is the caller's own blocking
    /// connection on Redis.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn wait(&self, conn: &mut WaitConn, timeout: Duration) -> Result<(), QueueError> {
        match &*self.store {
            Store::Memory(m) => {
                m.wait(timeout).await;
                Ok(())
            }
            Store::Redis(r) => r.wait(&mut conn.0, timeout).await,
        }
    }
}

/// A consumer's own connection for blocking waits (Redis); opened on first use.
#[derive(Default)]
pub struct WaitConn(Option<(::redis::aio::MultiplexedConnection, u64)>);

/// Wall-clock Unix milliseconds.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Seconds since a stored event's `time`, if it has a readable one.
pub(super) fn age_of(stored: &[u8]) -> Option<f64> {
    let event = super::envelope::decode(stored).ok()?;
    let time = super::envelope::parse_rfc3339(event.time.as_deref()?).ok()?;
    Some(SystemTime::now().duration_since(time).ok()?.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored_at(time: &str) -> Vec<u8> {
        let mut event = crate::events::Event::new("user.created", "/test", None);
        event.time = Some(time.to_owned());
        crate::events::encode(&event, false)
    }

    #[test]
    fn age_reads_every_offset_the_validation_accepts() {
        let hour_ago = SystemTime::now() - std::time::Duration::from_secs(3600);
        let utc = time::OffsetDateTime::from(hour_ago);
        for offset in [0i8, 2, -5] {
            let local = utc.to_offset(time::UtcOffset::from_hms(offset, 0, 0).unwrap());
            let text = local
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
            let age = age_of(&stored_at(&text)).unwrap_or_else(|| panic!("{text}: no age"));
            assert!((3599.0..3700.0).contains(&age), "{text}: {age}");
        }
    }
}
