//! The priority queues, on the memory backend or in Redis, with one set of semantics:
//! an enqueued event waits in its priority's queue; a take leases up to N events of one
//! queue to a consumer; settling a take sends its failed events to a retry set (due later)
//! or the dead-letter list and ends the lease; a lease that runs out (a crashed consumer)
//! puts its events back at the front of their queue.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use super::redis_queues::RedisQueues;
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
}

impl From<redis::ParsingError> for QueueError {
    fn from(e: redis::ParsingError) -> Self {
        Self::Reply(e.to_string())
    }
}

impl From<redis::RedisError> for QueueError {
    fn from(e: redis::RedisError) -> Self {
        Self::Backend(e.into())
    }
}

/// What a take found.
#[derive(Debug)]
pub enum Taken {
    /// Events of one queue, oldest first, now leased to the consumer.
    Events {
        /// The queue they came from.
        priority: Priority,
        /// The stored events.
        items: Vec<Vec<u8>>,
    },
    /// Every queue is empty; the earliest retry is due in `next_due`, if any waits.
    Empty {
        /// Time until the first retry is due.
        next_due: Option<Duration>,
    },
}

/// The outcome of a take's failed events.
#[derive(Debug)]
pub struct Settle {
    /// The queue the take came from.
    pub priority: Priority,
    /// Events to retry (stored form, attempt already counted) and when (Unix ms).
    pub retries: Vec<(Vec<u8>, u64)>,
    /// Events for the dead-letter list (stored form).
    pub dead: Vec<Vec<u8>>,
    /// Ids of events handled in this take, remembered for `seen_for` so a repeat is
    /// skipped (`events.consumer.dedupWindow`; empty when de-duplication is off).
    pub seen: Vec<String>,
    /// How long the ids in `seen` are remembered.
    pub seen_for: Duration,
}

/// One queue's numbers.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueStats {
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
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// By priority: high, normal, low.
    pub queues: [QueueStats; 3],
    /// Events in the dead-letter list.
    pub dead: u64,
}

/// The queue store. Cheap to clone.
#[derive(Clone)]
pub struct Queues {
    store: Arc<Store>,
    names: [String; 3],
}

enum Store {
    Memory(MemoryQueues),
    Redis(RedisQueues),
}

impl Queues {
    /// The queues on the backend the config names (`events.redis` for Redis).
    pub fn from_config(cfg: &EventsConfig, backend: &Backend) -> Self {
        match backend {
            Backend::Memory => Self::memory(cfg),
            Backend::Redis(r) => Self::redis(cfg, r.events.clone()),
        }
    }

    /// In-process queues (single instance, lost on restart).
    pub fn memory(cfg: &EventsConfig) -> Self {
        Self::with_store(cfg, Store::Memory(MemoryQueues::default()))
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
            Store::Memory(m) => {
                m.enqueue(batch);
                Ok(())
            }
            Store::Redis(r) => r.enqueue(batch, replicas, wait).await,
        }
    }

    /// Leases up to `max` events of the first non-empty queue in `order` to `consumer`
    /// (due retries join their queue first).
    ///
    /// # Errors
    /// Redis failures.
    pub async fn take(
        &self,
        consumer: &str,
        order: [Priority; 3],
        max: usize,
        lease: Duration,
    ) -> Result<Taken, QueueError> {
        match &*self.store {
            Store::Memory(m) => Ok(m.take(consumer, order, max, lease)),
            Store::Redis(r) => r.take(consumer, order, max, lease).await,
        }
    }

    /// Ends `consumer`'s lease: failed events to retry or dead-letter, the rest done.
    ///
    /// # Errors
    /// Redis failures (the lease then runs out and the events come back).
    pub async fn settle(&self, consumer: &str, settle: &Settle) -> Result<(), QueueError> {
        match &*self.store {
            Store::Memory(m) => {
                m.settle(consumer, settle);
                Ok(())
            }
            Store::Redis(r) => r.settle(consumer, settle).await,
        }
    }

    /// Which of `ids` were handled within their de-duplication window (one round trip on
    /// Redis), in the order given.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn seen(&self, ids: &[&str]) -> Result<Vec<bool>, QueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        match &*self.store {
            Store::Memory(m) => Ok(m.seen(ids)),
            Store::Redis(r) => r.seen(ids).await,
        }
    }

    /// Extends `consumer`'s lease to `lease` from now.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn renew(&self, consumer: &str, lease: Duration) -> Result<(), QueueError> {
        match &*self.store {
            Store::Memory(m) => {
                m.renew(consumer, lease);
                Ok(())
            }
            Store::Redis(r) => r.renew(consumer, lease).await,
        }
    }

    /// Puts the events of every expired lease back at the front of their queues; returns
    /// how many.
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
        match &*self.store {
            Store::Memory(m) => Ok(m.peek(priority, n)),
            Store::Redis(r) => {
                let list = priority.map_or(r.dead_letter(), |p| r.queue(p)).to_owned();
                r.peek(&list, n).await
            }
        }
    }

    /// Moves one dead letter (its stored bytes) to `priority`'s queue as `event`; whether it
    /// was still there.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn replay(
        &self,
        stored: &[u8],
        priority: Priority,
        event: &[u8],
    ) -> Result<bool, QueueError> {
        match &*self.store {
            Store::Memory(m) => Ok(m.replay(stored, priority, event)),
            Store::Redis(r) => r.replay(stored, priority, event).await,
        }
    }

    /// Removes one dead letter (its stored bytes); whether it was there.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn remove_dead(&self, stored: &[u8]) -> Result<bool, QueueError> {
        match &*self.store {
            Store::Memory(m) => Ok(m.remove_dead(stored)),
            Store::Redis(r) => r.remove_dead(stored).await,
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

    /// Waits up to `timeout` for new events (a doorbell rung by publishes and by takes that
    /// leave events behind). `conn` is the caller's own blocking connection on Redis.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn wait(&self, conn: &mut WaitConn, timeout: Duration) -> Result<(), QueueError> {
        match &*self.store {
            Store::Memory(m) => {
                let _ = tokio::time::timeout(timeout, m.wake.notified()).await;
                Ok(())
            }
            Store::Redis(r) => r.wait(&mut conn.0, timeout).await,
        }
    }
}

/// A consumer's own connection for blocking waits (Redis); opened on first use.
#[derive(Default)]
pub struct WaitConn(Option<redis::aio::MultiplexedConnection>);

/// Wall-clock Unix milliseconds.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Seconds since a stored event's `time`, if it has a readable one.
pub(super) fn age_of(stored: &[u8]) -> Option<f64> {
    let event = super::envelope::decode(stored).ok()?;
    let time = humantime::parse_rfc3339_weak(event.time.as_deref()?).ok()?;
    Some(SystemTime::now().duration_since(time).ok()?.as_secs_f64())
}

/// The memory store: one mutex over everything (single instance).
#[derive(Default)]
struct MemoryQueues {
    state: Mutex<MemoryState>,
    wake: Notify,
}

#[derive(Default)]
struct MemoryState {
    /// Front: next to be taken.
    queues: [VecDeque<Vec<u8>>; 3],
    /// Due Unix ms → events, per priority.
    retry: [BTreeMap<u64, Vec<Vec<u8>>>; 3],
    /// Consumer → (lease deadline in Unix ms, priority, taken events).
    taken: HashMap<String, (u64, Priority, Vec<Vec<u8>>)>,
    /// Front: newest.
    dead: VecDeque<Vec<u8>>,
    /// Handled event id → until when (Unix ms) a repeat is skipped.
    seen: HashMap<String, u64>,
    /// The same marks in the order they were set (so in expiry order: the window is one
    /// value), for pruning from the front instead of scanning the map.
    seen_order: VecDeque<(u64, String)>,
}

impl MemoryQueues {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enqueue(&self, batch: &[(Priority, &[u8])]) {
        let mut state = self.lock();
        for (p, event) in batch {
            state.queues[*p as usize].push_back(event.to_vec());
        }
        drop(state);
        self.wake.notify_waiters();
        self.wake.notify_one();
    }

    fn take(&self, consumer: &str, order: [Priority; 3], max: usize, lease: Duration) -> Taken {
        let now = unix_ms();
        let mut state = self.lock();
        for p in Priority::ALL {
            let i = p as usize;
            let later = state.retry[i].split_off(&(now + 1));
            let due = std::mem::replace(&mut state.retry[i], later);
            for (_, events) in due {
                state.queues[i].extend(events);
            }
        }
        for p in order {
            let queue = &mut state.queues[p as usize];
            if queue.is_empty() {
                continue;
            }
            let n = max.min(queue.len());
            let items: Vec<Vec<u8>> = queue.drain(..n).collect();
            let left = !queue.is_empty();
            let deadline = now + crate::backend::redis::px(lease);
            let entry = state
                .taken
                .entry(consumer.to_owned())
                .or_insert((deadline, p, Vec::new()));
            entry.0 = deadline;
            entry.1 = p;
            entry.2.extend(items.iter().cloned());
            drop(state);
            if left {
                self.wake.notify_one();
            }
            return Taken::Events { priority: p, items };
        }
        let next_due = state
            .retry
            .iter()
            .filter_map(|r| r.keys().next().copied())
            .min()
            .map(|due| Duration::from_millis(due.saturating_sub(now)));
        Taken::Empty { next_due }
    }

    fn settle(&self, consumer: &str, settle: &Settle) {
        let mut state = self.lock();
        state.taken.remove(consumer);
        let i = settle.priority as usize;
        for (event, due) in &settle.retries {
            state.retry[i].entry(*due).or_default().push(event.clone());
        }
        for event in &settle.dead {
            state.dead.push_front(event.clone());
        }
        if !settle.seen.is_empty() {
            let now = unix_ms();
            while let Some((until, _)) = state.seen_order.front()
                && *until <= now
            {
                if let Some((until, id)) = state.seen_order.pop_front()
                    && state.seen.get(&id) == Some(&until)
                {
                    state.seen.remove(&id);
                }
            }
            let until = now + crate::backend::redis::px(settle.seen_for);
            for id in &settle.seen {
                state.seen.insert(id.clone(), until);
                state.seen_order.push_back((until, id.clone()));
            }
        }
    }

    fn seen(&self, ids: &[&str]) -> Vec<bool> {
        let now = unix_ms();
        let state = self.lock();
        ids.iter()
            .map(|id| state.seen.get(*id).is_some_and(|u| *u > now))
            .collect()
    }

    fn renew(&self, consumer: &str, lease: Duration) {
        if let Some(entry) = self.lock().taken.get_mut(consumer) {
            entry.0 = unix_ms() + crate::backend::redis::px(lease);
        }
    }

    fn reap(&self) -> u64 {
        let now = unix_ms();
        let mut state = self.lock();
        let expired: Vec<String> = state
            .taken
            .iter()
            .filter(|(_, (deadline, ..))| *deadline <= now)
            .map(|(c, _)| c.clone())
            .collect();
        let mut moved = 0;
        for consumer in expired {
            if let Some((_, p, items)) = state.taken.remove(&consumer) {
                moved += items.len() as u64;
                let queue = &mut state.queues[p as usize];
                for item in items.into_iter().rev() {
                    queue.push_front(item);
                }
            }
        }
        drop(state);
        if moved > 0 {
            self.wake.notify_waiters();
        }
        moved
    }

    fn stats(&self) -> Stats {
        let state = self.lock();
        let mut stats = Stats {
            dead: state.dead.len() as u64,
            ..Stats::default()
        };
        for p in Priority::ALL {
            let i = p as usize;
            let q = &mut stats.queues[i];
            q.depth = state.queues[i].len() as u64;
            q.retrying = state.retry[i].values().map(|v| v.len() as u64).sum();
            q.oldest_age = state.queues[i].front().and_then(|e| age_of(e));
        }
        for (_, p, items) in state.taken.values() {
            stats.queues[*p as usize].in_flight += items.len() as u64;
        }
        stats
    }

    fn peek(&self, priority: Option<Priority>, n: usize) -> Vec<Vec<u8>> {
        let state = self.lock();
        match priority {
            Some(p) => state.queues[p as usize].iter().take(n).cloned().collect(),
            // The dead-letter list's consumption end is its back (oldest).
            None => state.dead.iter().rev().take(n).cloned().collect(),
        }
    }

    fn replay(&self, stored: &[u8], priority: Priority, event: &[u8]) -> bool {
        let mut state = self.lock();
        let Some(at) = state.dead.iter().position(|e| e.as_slice() == stored) else {
            return false;
        };
        state.dead.remove(at);
        state.queues[priority as usize].push_back(event.to_vec());
        drop(state);
        self.wake.notify_one();
        true
    }

    fn remove_dead(&self, stored: &[u8]) -> bool {
        let mut state = self.lock();
        match state.dead.iter().position(|e| e.as_slice() == stored) {
            Some(at) => {
                state.dead.remove(at);
                true
            }
            None => false,
        }
    }

    fn purge_dead(&self) -> u64 {
        let mut state = self.lock();
        let n = state.dead.len() as u64;
        state.dead.clear();
        n
    }
}
