//! The memory queue store: one mutex over everything (single instance), with the same
//! semantics as the Redis store — one batch per consumer, lease tokens that fence renew
//! and settle, a dead-letter index by event id.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

use super::{Settle, SettleOutcome, Stats, Taken, age_of, unix_ms};
use crate::backend::memory::{Full, ITEM_OVERHEAD, MemoryBudget};
use crate::backend::redis::px;
use crate::events::routing::Priority;

/// How many settled lease tokens are remembered to recognise a repeated settle.
const SETTLED_REMEMBERED: usize = 4096;

pub(super) struct MemoryQueues {
    state: Mutex<MemoryState>,
    wake: Notify,
    budget: MemoryBudget,
}

/// The budget charge of a stored event.
fn event_weight(event: &[u8]) -> usize {
    event.len() + ITEM_OVERHEAD
}

/// The budget charge of an id kept in a map and its expiry order.
fn id_weight(id: &str) -> usize {
    2 * id.len() + ITEM_OVERHEAD
}

/// A consumer's batch.
struct Lease {
    token: String,
    deadline: u64,
    priority: Priority,
    items: Vec<Vec<u8>>,
}

/// A de-duplication mark.
#[derive(Clone, PartialEq)]
enum Mark {
    /// Being handled under this consumer's lease token.
    Claimed { consumer: String, token: String },
    /// Handled.
    Done,
}

#[derive(Default)]
struct MemoryState {
    /// Front: next to be taken.
    queues: [VecDeque<Vec<u8>>; 3],
    /// Due Unix ms → events, per priority.
    retry: [BTreeMap<u64, Vec<Vec<u8>>>; 3],
    /// Consumer → the batch it holds.
    leases: HashMap<String, Lease>,
    /// Settled events since start.
    totals: super::Totals,
    /// Recently settled lease tokens, oldest first.
    settled: VecDeque<String>,
    /// Front: newest; each with its event id.
    dead: VecDeque<(String, Vec<u8>)>,
    /// De-duplication marks: event id → (mark, until when in Unix ms).
    seen: HashMap<String, (Mark, u64)>,
    /// The marks in the order they were set, for pruning from the front.
    seen_order: VecDeque<(u64, String)>,
    /// Publish-time idempotency: event id → published until (Unix ms).
    published: HashMap<String, u64>,
    /// The same in the order they were set.
    published_order: VecDeque<(u64, String)>,
}

impl MemoryState {
    /// Charged per entry of the expiry order, given back as it is pruned.
    fn mark(&mut self, id: &str, mark: Mark, until: u64, budget: &MemoryBudget) {
        budget.charge(id_weight(id));
        self.seen.insert(id.to_owned(), (mark, until));
        self.seen_order.push_back((until, id.to_owned()));
    }

    fn prune_marks(&mut self, now: u64, budget: &MemoryBudget) {
        while let Some((until, _)) = self.seen_order.front()
            && *until <= now
        {
            if let Some((until, id)) = self.seen_order.pop_front() {
                budget.release(id_weight(&id));
                if self.seen.get(&id).is_some_and(|(_, u)| *u == until) {
                    self.seen.remove(&id);
                }
            }
        }
    }

    fn lease_is(&self, consumer: &str, token: &str) -> bool {
        self.leases.get(consumer).is_some_and(|l| l.token == token)
    }
}

impl MemoryQueues {
    pub(super) fn new(budget: MemoryBudget) -> Self {
        Self {
            state: Mutex::default(),
            wake: Notify::new(),
            budget,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ring(&self) {
        self.wake.notify_waiters();
        self.wake.notify_one();
    }

    pub(super) async fn wait(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.wake.notified()).await;
    }

    /// # Errors
    /// [`Full`] when the batch does not fit in the memory budget; nothing of it is queued.
    pub(super) fn enqueue(&self, batch: &[(Priority, &[u8])]) -> Result<(), Full> {
        self.budget
            .reserve(batch.iter().map(|(_, e)| event_weight(e)).sum())?;
        let mut state = self.lock();
        for (p, event) in batch {
            state.queues[*p as usize].push_back(event.to_vec());
        }
        drop(state);
        self.ring();
        Ok(())
    }

    pub(super) fn enqueue_once(
        &self,
        priority: Priority,
        id: &str,
        event: &[u8],
        window: Duration,
    ) -> Result<bool, Full> {
        let now = unix_ms();
        let mut state = self.lock();
        while let Some((until, _)) = state.published_order.front()
            && *until <= now
        {
            if let Some((until, id)) = state.published_order.pop_front() {
                self.budget.release(id_weight(&id));
                if state.published.get(&id) == Some(&until) {
                    state.published.remove(&id);
                }
            }
        }
        if state.published.get(id).is_some_and(|until| *until > now) {
            return Ok(false);
        }
        self.budget.reserve(event_weight(event) + id_weight(id))?;
        let until = now + px(window);
        state.published.insert(id.to_owned(), until);
        state.published_order.push_back((until, id.to_owned()));
        state.queues[priority as usize].push_back(event.to_vec());
        drop(state);
        self.ring();
        Ok(true)
    }

    pub(super) fn take(
        &self,
        consumer: &str,
        token: &str,
        order: [Priority; 3],
        max: usize,
        lease: Duration,
    ) -> Taken {
        let now = unix_ms();
        let deadline = now + px(lease);
        let mut state = self.lock();
        if let Some(held) = state.leases.get_mut(consumer) {
            held.token = token.to_owned();
            held.deadline = deadline;
            return Taken::Events {
                priority: held.priority,
                items: held.items.clone(),
                resumed: true,
            };
        }
        let mut promoted = false;
        for p in Priority::ALL {
            let i = p as usize;
            let later = state.retry[i].split_off(&(now + 1));
            let due = std::mem::replace(&mut state.retry[i], later);
            for (_, events) in due {
                promoted = true;
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
            state.leases.insert(
                consumer.to_owned(),
                Lease {
                    token: token.to_owned(),
                    deadline,
                    priority: p,
                    items: items.clone(),
                },
            );
            drop(state);
            if left || promoted {
                self.ring();
            }
            return Taken::Events {
                priority: p,
                items,
                resumed: false,
            };
        }
        let next_due = state
            .retry
            .iter()
            .filter_map(|r| r.keys().next().copied())
            .min()
            .map(|due| Duration::from_millis(due.saturating_sub(now)));
        Taken::Empty { next_due }
    }

    pub(super) fn settle(&self, consumer: &str, token: &str, settle: &Settle) -> SettleOutcome {
        let mut state = self.lock();
        if state.settled.iter().any(|t| t == token) {
            return SettleOutcome::AlreadySettled;
        }
        if !state.lease_is(consumer, token) {
            return SettleOutcome::LeaseLost;
        }
        // The batch leaves; what is retried or dead-lettered comes back, re-encoded. Never
        // refused: these events were accepted already.
        if let Some(lease) = state.leases.remove(consumer) {
            self.budget
                .release(lease.items.iter().map(|e| event_weight(e)).sum());
            let failed = (settle.retries.len() + settle.dead.len()) as u64;
            state.totals.handled += (lease.items.len() as u64).saturating_sub(failed);
        }
        state.totals.retried += settle.retries.len() as u64;
        state.totals.dead_lettered += settle.dead.len() as u64;
        if state.settled.len() >= SETTLED_REMEMBERED {
            state.settled.pop_front();
        }
        state.settled.push_back(token.to_owned());
        let now = unix_ms();
        let i = settle.priority as usize;
        for (event, delay) in &settle.retries {
            self.budget.charge(event_weight(event));
            state.retry[i]
                .entry(now + px(*delay))
                .or_default()
                .push(event.clone());
        }
        for (id, event) in &settle.dead {
            // An id already dead-lettered is replaced where it stands, as in Redis.
            match state
                .dead
                .iter_mut()
                .find(|(i, _)| !id.is_empty() && i == id)
            {
                Some(entry) => {
                    self.budget.release(event_weight(&entry.1));
                    self.budget.charge(event_weight(event));
                    entry.1 = event.clone();
                }
                None => {
                    self.budget.charge(event_weight(event) + id.len());
                    state.dead.push_front((id.clone(), event.clone()));
                }
            }
        }
        if !settle.seen.is_empty() {
            state.prune_marks(now, &self.budget);
            let until = now + px(settle.seen_for);
            for id in &settle.seen {
                state.mark(id, Mark::Done, until, &self.budget);
            }
        }
        SettleOutcome::Settled
    }

    pub(super) fn claim(
        &self,
        consumer: &str,
        token: &str,
        ids: &[&str],
        lease: Duration,
    ) -> Vec<bool> {
        let now = unix_ms();
        let mut state = self.lock();
        state.prune_marks(now, &self.budget);
        let mine = Mark::Claimed {
            consumer: consumer.to_owned(),
            token: token.to_owned(),
        };
        ids.iter()
            .map(|id| {
                let handle = match state.seen.get(*id) {
                    Some((Mark::Done, until)) => *until <= now,
                    Some((mark @ Mark::Claimed { consumer, token }, until)) if *until > now => {
                        *mark == mine || !state.lease_is(consumer, token)
                    }
                    _ => true,
                };
                if handle {
                    state.mark(id, mine.clone(), now + px(lease), &self.budget);
                }
                handle
            })
            .collect()
    }

    pub(super) fn renew(&self, consumer: &str, token: &str, lease: Duration) -> bool {
        let mut state = self.lock();
        match state.leases.get_mut(consumer) {
            Some(held) if held.token == token => {
                held.deadline = unix_ms() + px(lease);
                true
            }
            _ => false,
        }
    }

    pub(super) fn reap(&self) -> u64 {
        let now = unix_ms();
        let mut state = self.lock();
        let expired: Vec<String> = state
            .leases
            .iter()
            .filter(|(_, l)| l.deadline <= now)
            .map(|(c, _)| c.clone())
            .collect();
        let mut moved = 0;
        for consumer in expired {
            if let Some(lease) = state.leases.remove(&consumer) {
                moved += lease.items.len() as u64;
                let queue = &mut state.queues[lease.priority as usize];
                for item in lease.items.into_iter().rev() {
                    queue.push_front(item);
                }
            }
        }
        drop(state);
        if moved > 0 {
            self.ring();
        }
        moved
    }

    pub(super) fn stats(&self) -> Stats {
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
        for (consumer, lease) in &state.leases {
            stats.queues[lease.priority as usize].in_flight += lease.items.len() as u64;
            stats.consumers.push(super::ConsumerLease {
                consumer: consumer.clone(),
                lease_expires_at: super::rfc3339_ms(lease.deadline),
                held: lease.items.len() as u64,
            });
        }
        stats
            .consumers
            .sort_by(|a, b| a.lease_expires_at.cmp(&b.lease_expires_at));
        stats.totals = state.totals;
        stats
    }

    pub(super) fn peek(&self, priority: Option<Priority>, skip: usize, n: usize) -> Vec<Vec<u8>> {
        let state = self.lock();
        match priority {
            Some(p) => state.queues[p as usize]
                .iter()
                .skip(skip)
                .take(n)
                .cloned()
                .collect(),
            // The dead-letter list's consumption end is its back (oldest).
            None => state
                .dead
                .iter()
                .rev()
                .skip(skip)
                .take(n)
                .map(|(_, e)| e.clone())
                .collect(),
        }
    }

    pub(super) fn dead_get(&self, id: &str) -> Option<Vec<u8>> {
        let state = self.lock();
        state
            .dead
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, e)| e.clone())
    }

    pub(super) fn dead_remove(
        &self,
        id: &str,
        stored: &[u8],
        replay: Option<(Priority, &[u8])>,
    ) -> bool {
        let mut state = self.lock();
        let Some(at) = state
            .dead
            .iter()
            .position(|(i, e)| i == id && e.as_slice() == stored)
        else {
            return false;
        };
        if let Some((id, removed)) = state.dead.remove(at) {
            self.budget.release(event_weight(&removed) + id.len());
        }
        if let Some((p, event)) = replay {
            self.budget.charge(event_weight(event));
            state.queues[p as usize].push_back(event.to_vec());
            drop(state);
            self.ring();
        }
        true
    }

    pub(super) fn purge_dead(&self) -> u64 {
        let mut state = self.lock();
        let n = state.dead.len() as u64;
        for (id, event) in state.dead.drain(..) {
            self.budget.release(event_weight(&event) + id.len());
        }
        n
    }
}
