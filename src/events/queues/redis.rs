//! The queues in Redis.
//!
//! - `events.queues.{high,normal,low}_priority`: lists; producers `LPUSH`, consumers take
//!   from the other end, so each list is FIFO and `LRANGE … 0 -1` shows it newest first.
//! - `{queue}:retry`: a sorted set per priority of events waiting to be retried, scored by
//!   the Unix millisecond (Redis's clock) they are due; a take moves the due ones back.
//! - `{statePrefix}consumers`: consumer id → lease deadline (Unix ms, Redis's clock).
//! - `{statePrefix}totals`: a hash of events settled so far by every worker: `handled`,
//!   `retried`, `dead` (the console's throughput).
//! - `{statePrefix}leases`: consumer id → `"<lease token> <priority 0|1|2>"`, the lease
//!   of the batch the consumer holds. Renew and settle must present that token, so a worker
//!   whose batch was taken back can neither keep it alive nor settle it.
//! - `{statePrefix}taken:{consumer}:{0|1|2}`: the events a consumer holds, by priority.
//! - `{statePrefix}settled:{token}`: set for twice the lease once a take is settled, so a
//!   settle repeated after a lost reply changes nothing.
//! - `{statePrefix}wake`: a doorbell list; publishes, takes that leave events behind or
//!   promote due retries, reaps and replays push a token; idle consumers block on it
//!   (`BLPOP`) instead of polling.
//! - `{statePrefix}published:{id}`: set for the window when an event is published with
//!   publish-time idempotency (ZITADEL ingestion); a second publish of the id is dropped.
//! - `{statePrefix}seen:{id}`: the de-duplication mark of event `id` (with
//!   `events.consumer.dedupWindow` on): `c <consumer> <token>` while a lease handles it,
//!   `done` for the window once handled.
//! - `events.queues.dead_letter`: a list of events that failed every retry, each with
//!   `lasterror` and `deadat` attributes, newest first (removing one moves the oldest into
//!   its place). Each entry has a position: its distance from the oldest end plus
//!   `{dead_letter}:base` (how many entries left that end so far), so pushes never move
//!   positions. `{dead_letter}:index` maps event id → `"<position> <stored event>"` and
//!   `{dead_letter}:positions` position → event id: show is one `HGET`; replay and delete
//!   write the oldest entry over the removed one with `LSET` (which walks list nodes, not
//!   entries) and pop it, so no entry is ever compared.
//!
//! Every script (in `lua/`, each opening with its KEYS / ARGV / returns) is given every key
//! it touches in `KEYS`. Keys are built from configured names without a hash tag: Redis
//! Cluster would need the names to share one.

use std::time::Duration;

use redis::Script;

use super::{ConsumerLease, QueueError, Settle, SettleOutcome, Stats, Taken, Totals};
use crate::backend::redis::px;
use crate::backend::{RedisBackend, Retry};
use crate::config::EventsConfig;
use crate::events::routing::Priority;

/// The scripts, loaded once.
struct Scripts {
    take: Script,
    renew: Script,
    settle: Script,
    reap: Script,
    claim: Script,
    dead_remove: Script,
    dead_reindex: Script,
    enqueue_once: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            take: Script::new(include_str!("lua/take.lua")),
            renew: Script::new(include_str!("lua/renew.lua")),
            settle: Script::new(include_str!("lua/settle.lua")),
            reap: Script::new(include_str!("lua/reap.lua")),
            claim: Script::new(include_str!("lua/claim.lua")),
            dead_remove: Script::new(include_str!("lua/dead_remove.lua")),
            enqueue_once: Script::new(include_str!("lua/enqueue_once.lua")),
            dead_reindex: Script::new(include_str!("lua/dead_reindex.lua")),
        }
    }
}

/// The Redis queue store.
pub(super) struct RedisQueues {
    backend: RedisBackend,
    queues: [String; 3],
    retry: [String; 3],
    dead: String,
    dead_index: String,
    dead_positions: String,
    dead_base: String,
    dead_indexing: String,
    consumers: String,
    /// `{statePrefix}totals`.
    totals: String,
    leases: String,
    wake: String,
    taken_prefix: String,
    seen_prefix: String,
    settled_prefix: String,
    published_prefix: String,
    scripts: Scripts,
}

impl RedisQueues {
    pub(super) fn new(cfg: &EventsConfig, backend: RedisBackend) -> Self {
        let q = &cfg.queues;
        let queues = [
            q.high_priority.clone(),
            q.normal_priority.clone(),
            q.low_priority.clone(),
        ];
        let retry = queues.clone().map(|name| format!("{name}:retry"));
        let state = &q.state_prefix;
        Self {
            backend,
            retry,
            queues,
            dead: q.dead_letter.clone(),
            dead_index: format!("{}:index", q.dead_letter),
            dead_positions: format!("{}:positions", q.dead_letter),
            dead_base: format!("{}:base", q.dead_letter),
            dead_indexing: format!("{}:indexing", q.dead_letter),
            consumers: format!("{state}consumers"),
            totals: format!("{state}totals"),
            leases: format!("{state}leases"),
            wake: format!("{state}wake"),
            taken_prefix: format!("{state}taken:"),
            seen_prefix: format!("{state}seen:"),
            settled_prefix: format!("{state}settled:"),
            published_prefix: format!("{state}published:"),
            scripts: Scripts::new(),
        }
    }

    fn taken(&self, consumer: &str, priority: Priority) -> String {
        format!("{}{consumer}:{}", self.taken_prefix, priority as usize)
    }

    /// The list holding `priority`'s events.
    pub(super) fn queue(&self, priority: Priority) -> &str {
        &self.queues[priority as usize]
    }

    /// One round trip: each priority's events in one `LPUSH`, a doorbell token, and with
    /// `replicas > 0` a `WAIT` for that many replicas.
    pub(super) async fn enqueue(
        &self,
        batch: &[(Priority, &[u8])],
        replicas: u32,
        wait: Duration,
    ) -> Result<(), QueueError> {
        let mut pipe = redis::pipe();
        for priority in Priority::ALL {
            let items: Vec<&[u8]> = batch
                .iter()
                .filter(|(p, _)| *p == priority)
                .map(|(_, e)| *e)
                .collect();
            if !items.is_empty() {
                pipe.cmd("LPUSH")
                    .arg(self.queue(priority))
                    .arg(items)
                    .ignore();
            }
        }
        pipe.cmd("LPUSH").arg(&self.wake).arg(1).ignore();
        pipe.cmd("LTRIM").arg(&self.wake).arg(0).arg(63).ignore();
        if replicas > 0 {
            pipe.cmd("WAIT").arg(replicas).arg(px(wait));
            let pipe = &pipe;
            let (acked,): (u32,) = self
                .backend
                .run_blocking(Retry::IfNotRun, |mut c| async move {
                    pipe.query_async(&mut c).await
                })
                .await?;
            if acked < replicas {
                return Err(QueueError::Replicas { acked, replicas });
            }
            return Ok(());
        }
        self.backend.pipeline::<()>(Retry::IfNotRun, &pipe).await?;
        Ok(())
    }

    /// Enqueues `event` unless `id` was published within `window` (`enqueue_once.lua`),
    /// then waits for `replicas` replicas; whether it was enqueued. Safe to repeat.
    pub(super) async fn enqueue_once(
        &self,
        priority: Priority,
        id: &str,
        event: &[u8],
        window: Duration,
        replicas: u32,
        wait: Duration,
    ) -> Result<bool, QueueError> {
        let attempt = |mut c: redis::aio::MultiplexedConnection| {
            let mut call = self.scripts.enqueue_once.prepare_invoke();
            call.key(format!("{}{id}", self.published_prefix))
                .key(self.queue(priority))
                .key(&self.wake);
            call.arg(event).arg(px(window));
            async move {
                let stored: i64 = call.invoke_async(&mut c).await?;
                // WAIT covers every write this connection sent, the script's included.
                let acked = if replicas > 0 {
                    redis::cmd("WAIT")
                        .arg(replicas)
                        .arg(px(wait))
                        .query_async(&mut c)
                        .await?
                } else {
                    0
                };
                Ok((stored, acked))
            }
        };
        let (stored, acked): (i64, u32) = if replicas > 0 {
            self.backend
                .run_blocking(Retry::Idempotent, attempt)
                .await?
        } else {
            self.backend.run(Retry::Idempotent, attempt).await?
        };
        if acked < replicas {
            return Err(QueueError::Replicas { acked, replicas });
        }
        Ok(stored == 1)
    }

    /// Leases up to `max` events of the first non-empty queue in `order` to `consumer`
    /// under `token` (`take.lua`). Safe to repeat: a consumer that still holds a batch gets
    /// that batch back.
    pub(super) async fn take(
        &self,
        consumer: &str,
        token: &str,
        order: [Priority; 3],
        max: usize,
        lease: Duration,
    ) -> Result<Taken, QueueError> {
        let order: String = order.iter().map(|p| char::from(b'0' + *p as u8)).collect();
        // The script, then each taken list: the script leaves the events in the taken list
        // of the priority it names, and only this consumer touches that list while its
        // lease, which the script has just extended, runs.
        let mut pipe = redis::pipe();
        {
            let mut call = self.scripts.take.prepare_invoke();
            call.key(&self.consumers).key(&self.leases).key(&self.wake);
            call.key(&self.queues[..]).key(&self.retry[..]);
            for p in Priority::ALL {
                call.key(self.taken(consumer, p));
            }
            call.arg(consumer).arg(token).arg(px(lease)).arg(max);
            call.arg(&order);
            pipe.invoke_script(&call);
        }
        for p in Priority::ALL {
            pipe.cmd("LRANGE")
                .arg(self.taken(consumer, p))
                .arg(0)
                .arg(-1);
        }
        type Events = Vec<Vec<u8>>;
        let (reply, high, normal, low): (Vec<redis::Value>, Events, Events, Events) = self
            .backend
            .pipeline_with_script(&pipe, &self.scripts.take)
            .await?;
        let mut values = reply.into_iter();
        let index: i64 = next_value(&mut values)?;
        if index < 0 {
            let next_due: i64 = next_value(&mut values)?;
            return Ok(Taken::Empty {
                next_due: u64::try_from(next_due).ok().map(Duration::from_millis),
            });
        }
        let _count: i64 = next_value(&mut values)?;
        let _deadline: i64 = next_value(&mut values)?;
        let resumed: i64 = next_value(&mut values)?;
        let priority = usize::try_from(index)
            .ok()
            .and_then(|i| Priority::ALL.get(i).copied())
            .ok_or_else(|| QueueError::Reply(format!("take answered priority {index}")))?;
        // Newest first in the list: handed out oldest first.
        let mut items = [high, normal, low]
            .into_iter()
            .nth(priority as usize)
            .unwrap_or_default();
        items.reverse();
        Ok(Taken::Events {
            priority,
            items,
            resumed: resumed == 1,
        })
    }

    /// Ends `consumer`'s take under `token` (`settle.lua`): fenced by the token, and a
    /// repeat after a lost reply changes nothing, so it is retried like a read.
    pub(super) async fn settle(
        &self,
        consumer: &str,
        token: &str,
        settle: &Settle,
        lease: Duration,
    ) -> Result<SettleOutcome, QueueError> {
        let p = settle.priority;
        let outcome: i64 = self
            .backend
            .run(Retry::Idempotent, |mut c| {
                let mut call = self.scripts.settle.prepare_invoke();
                call.key(&self.consumers)
                    .key(&self.leases)
                    .key(self.taken(consumer, p))
                    .key(&self.retry[p as usize])
                    .key(&self.dead)
                    .key(&self.dead_index)
                    .key(&self.dead_positions)
                    .key(&self.dead_base)
                    .key(format!("{}{token}", self.settled_prefix))
                    .key(&self.totals);
                for id in &settle.seen {
                    call.key(format!("{}{id}", self.seen_prefix));
                }
                call.arg(consumer)
                    .arg(token)
                    .arg(p as usize)
                    .arg(px(lease).saturating_mul(2).max(1))
                    .arg(px(settle.seen_for).max(1));
                call.arg(settle.retries.len());
                for (event, delay) in &settle.retries {
                    call.arg(px(*delay)).arg(event.as_slice());
                }
                call.arg(settle.dead.len());
                for (id, event) in &settle.dead {
                    call.arg(id).arg(event.as_slice());
                }
                async move { call.invoke_async(&mut c).await }
            })
            .await?;
        Ok(match outcome {
            1 => SettleOutcome::Settled,
            2 => SettleOutcome::AlreadySettled,
            _ => SettleOutcome::LeaseLost,
        })
    }

    /// Claims `ids` for handling under `token` (`claim.lua`): per id, whether to handle it.
    pub(super) async fn claim(
        &self,
        consumer: &str,
        token: &str,
        ids: &[&str],
        lease: Duration,
    ) -> Result<Vec<bool>, QueueError> {
        let handle: Vec<i64> = self
            .backend
            .run(Retry::Idempotent, |mut c| {
                let mut call = self.scripts.claim.prepare_invoke();
                call.key(&self.leases);
                for id in ids {
                    call.key(format!("{}{id}", self.seen_prefix));
                }
                call.arg(consumer).arg(token).arg(px(lease).max(1));
                async move { call.invoke_async(&mut c).await }
            })
            .await?;
        Ok(handle.into_iter().map(|h| h == 1).collect())
    }

    /// Pushes `consumer`'s lease deadline to `lease` from now on Redis's clock, if `token`
    /// still holds it; whether it does.
    pub(super) async fn renew(
        &self,
        consumer: &str,
        token: &str,
        lease: Duration,
    ) -> Result<bool, QueueError> {
        let deadline: i64 = self
            .backend
            .run(Retry::Idempotent, |mut c| {
                let mut call = self.scripts.renew.prepare_invoke();
                call.key(&self.consumers).key(&self.leases);
                call.arg(consumer).arg(token).arg(px(lease));
                async move { call.invoke_async(&mut c).await }
            })
            .await?;
        Ok(deadline >= 0)
    }

    /// Returns the events of consumers whose lease ran out to the front of their queues:
    /// the consumers with the earliest deadlines are each reaped by `reap.lua`, which checks
    /// the deadline again on Redis's clock, until one has not run out.
    pub(super) async fn reap(&self) -> Result<u64, QueueError> {
        let earliest: Vec<String> = self
            .backend
            .query(redis::cmd("ZRANGE").arg(&self.consumers).arg(0).arg(15))
            .await?;
        let mut moved = 0;
        for consumer in earliest {
            let reaped: Result<i64, _> = self
                .backend
                .run(Retry::Idempotent, |mut c| {
                    let mut call = self.scripts.reap.prepare_invoke();
                    call.key(&self.consumers).key(&self.leases).key(&self.wake);
                    call.key(&self.queues[..]);
                    for p in Priority::ALL {
                        call.key(self.taken(&consumer, p));
                    }
                    call.arg(&consumer);
                    async move { call.invoke_async(&mut c).await }
                })
                .await;
            let n = match reaped {
                Ok(n) => n,
                // What earlier consumers gave back is counted (and logged) all the same.
                Err(e) if moved > 0 => {
                    tracing::warn!(error = %e, "events: looking for expired leases failed");
                    break;
                }
                Err(e) => return Err(e.into()),
            };
            if n < 0 {
                break;
            }
            moved += n.unsigned_abs();
        }
        Ok(moved)
    }

    /// The Redis handle the queues run on.
    pub(super) fn backend(&self) -> &RedisBackend {
        &self.backend
    }

    /// Waits up to `timeout` for the doorbell, on a connection of its own (`BLPOP` never
    /// shares a pooled connection). `conn` is kept between calls with the master epoch it
    /// was dialled in, and dropped on error, on a client-side deadline (block time +
    /// `readTimeout`: a frozen node answers nothing) and when the master changes, so the
    /// next wait dials the new master.
    pub(super) async fn wait(
        &self,
        conn: &mut Option<(redis::aio::MultiplexedConnection, u64)>,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        let mut master = self.backend.master_watch();
        let epoch = master.borrow_and_update().epoch;
        if conn.as_ref().is_some_and(|(_, e)| *e != epoch) {
            *conn = None;
        }
        if conn.is_none() {
            let (c, m) = self.backend.dedicated().await?;
            *conn = Some((c, m.epoch));
        }
        let Some((c, _)) = conn.as_mut() else {
            return Ok(());
        };
        let secs = timeout.as_secs_f64().max(0.001);
        let deadline = timeout + self.backend.config().read_timeout;
        let mut cmd = redis::cmd("BLPOP");
        cmd.arg(&self.wake).arg(format!("{secs:.3}"));
        let blpop = cmd.query_async::<Option<(String, String)>>(c);
        let waited = tokio::select! {
            waited = tokio::time::timeout(deadline, blpop) => waited,
            _ = master.changed() => {
                *conn = None;
                return Ok(());
            }
        };
        match waited {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                *conn = None;
                Err(crate::BackendError::from(e).into())
            }
            Err(_) => {
                *conn = None;
                Err(crate::BackendError::Unavailable(format!(
                    "no answer to BLPOP within its block time + readTimeout ({deadline:?})"
                ))
                .into())
            }
        }
    }

    /// Depths, in-flight and retrying counts, dead letters and the oldest waiting event of
    /// each queue.
    pub(super) async fn stats(&self) -> Result<Stats, QueueError> {
        let mut pipe = redis::pipe();
        for p in Priority::ALL {
            pipe.cmd("LLEN").arg(self.queue(p));
            pipe.cmd("ZCARD").arg(&self.retry[p as usize]);
            pipe.cmd("LINDEX").arg(self.queue(p)).arg(-1);
        }
        pipe.cmd("LLEN").arg(&self.dead);
        pipe.cmd("ZRANGE")
            .arg(&self.consumers)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES");
        pipe.cmd("HMGET")
            .arg(&self.totals)
            .arg("handled")
            .arg("retried")
            .arg("dead");
        let reply: Vec<redis::Value> = self.backend.pipeline(Retry::Idempotent, &pipe).await?;
        let mut stats = Stats::default();
        let mut values = reply.into_iter();
        for p in Priority::ALL {
            let q = &mut stats.queues[p as usize];
            q.depth = next_value(&mut values)?;
            q.retrying = next_value(&mut values)?;
            let oldest: Option<Vec<u8>> = next_value(&mut values)?;
            q.oldest_age = oldest.as_deref().and_then(super::age_of);
        }
        stats.dead = next_value(&mut values)?;
        let leases: Vec<(String, f64)> = next_value(&mut values)?;
        let totals: Vec<Option<u64>> = next_value(&mut values)?;
        let total = |i: usize| totals.get(i).copied().flatten().unwrap_or(0);
        stats.totals = Totals {
            handled: total(0),
            retried: total(1),
            dead_lettered: total(2),
        };
        stats.consumers = leases
            .iter()
            .map(|(consumer, deadline)| ConsumerLease {
                consumer: consumer.clone(),
                lease_expires_at: super::rfc3339_ms(*deadline as u64),
                held: 0,
            })
            .collect();
        if !leases.is_empty() {
            let mut pipe = redis::pipe();
            for (c, _) in &leases {
                for p in Priority::ALL {
                    pipe.cmd("LLEN").arg(self.taken(c, p));
                }
            }
            let lens: Vec<u64> = self.backend.pipeline(Retry::Idempotent, &pipe).await?;
            for (i, len) in lens.into_iter().enumerate() {
                stats.consumers[i / 3].held += len;
                stats.queues[i % 3].in_flight += len;
            }
        }
        Ok(stats)
    }

    /// Up to `n` events of `list` from the consumption end (the next to be taken first).
    pub(super) async fn peek(
        &self,
        list: &str,
        skip: usize,
        n: usize,
    ) -> Result<Vec<Vec<u8>>, QueueError> {
        let skip = i64::try_from(skip)
            .unwrap_or(i64::MAX / 2)
            .min(i64::MAX / 2);
        let n = i64::try_from(n)
            .unwrap_or(i64::MAX / 2)
            .clamp(1, i64::MAX / 2);
        let mut items: Vec<Vec<u8>> = self
            .backend
            .query(
                redis::cmd("LRANGE")
                    .arg(list)
                    .arg(-(skip + n))
                    .arg(-(skip + 1)),
            )
            .await?;
        items.reverse();
        Ok(items)
    }

    /// The dead-letter list's name.
    pub(super) fn dead_letter(&self) -> &str {
        &self.dead
    }

    /// The stored dead letter with event id `id`: one `HGET` of the index. When it misses
    /// and some entries have no position (written before the index existed), the list is
    /// indexed first.
    pub(super) async fn dead_get(&self, id: &str) -> Result<Option<Vec<u8>>, QueueError> {
        for attempt in 0..2 {
            let indexed: Option<Vec<u8>> = self
                .backend
                .query(redis::cmd("HGET").arg(&self.dead_index).arg(id))
                .await?;
            if let Some(stored) = indexed.as_deref().and_then(strip_position) {
                return Ok(Some(stored.to_vec()));
            }
            if attempt > 0 || !self.reindex_if_needed().await? {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// Gives every dead letter a position when some have none (they were written before
    /// the index existed): reads the list in chunks of 1 000 from the oldest end and indexes
    /// each chunk with `dead_reindex.lua`, under a lock that keeps removals out meanwhile.
    /// Whether it indexed anything.
    async fn reindex_if_needed(&self) -> Result<bool, QueueError> {
        let mut pipe = redis::pipe();
        pipe.cmd("LLEN").arg(&self.dead);
        pipe.cmd("HLEN").arg(&self.dead_positions);
        pipe.cmd("GET").arg(&self.dead_base);
        let (listed, positioned, base): (i64, i64, Option<i64>) =
            self.backend.pipeline(Retry::Idempotent, &pipe).await?;
        if positioned >= listed {
            return Ok(false);
        }
        let token = crate::ids::random_hex64();
        let locked: Option<String> = self
            .backend
            .query(
                redis::cmd("SET")
                    .arg(&self.dead_indexing)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(60_000),
            )
            .await?;
        if locked.is_none() {
            // Another process is indexing.
            return Ok(false);
        }
        tracing::info!(
            entries = listed,
            "events: indexing dead letters written before the index"
        );
        let indexed = self.reindex(&token, base.unwrap_or(0), listed).await;
        let owner: Option<String> = self
            .backend
            .query(redis::cmd("GET").arg(&self.dead_indexing))
            .await?;
        if owner.as_deref() == Some(token.as_str()) {
            let _: i64 = self
                .backend
                .query(redis::cmd("DEL").arg(&self.dead_indexing))
                .await?;
        }
        indexed
    }

    async fn reindex(&self, token: &str, base: i64, listed: i64) -> Result<bool, QueueError> {
        const CHUNK: i64 = 1000;
        let mut from_oldest = 0i64;
        while from_oldest < listed {
            let end = -(from_oldest + 1);
            let chunk: Vec<Vec<u8>> = self
                .backend
                .query(
                    redis::cmd("LRANGE")
                        .arg(&self.dead)
                        .arg(end - CHUNK + 1)
                        .arg(end),
                )
                .await?;
            if chunk.is_empty() {
                break;
            }
            // LRANGE answers newest first; the script takes the chunk oldest first.
            let entries: Vec<(String, &[u8])> = chunk
                .iter()
                .rev()
                .map(|stored| {
                    let id = crate::events::envelope::decode(stored)
                        .map(|e| e.id)
                        .unwrap_or_default();
                    (id, stored.as_slice())
                })
                .collect();
            let done: i64 = self
                .backend
                .run(Retry::Idempotent, |mut c| {
                    let mut call = self.scripts.dead_reindex.prepare_invoke();
                    call.key(&self.dead_index)
                        .key(&self.dead_positions)
                        .key(&self.dead_base)
                        .key(&self.dead_indexing);
                    call.arg(token).arg(base).arg(base + from_oldest);
                    for (id, stored) in &entries {
                        call.arg(id).arg(*stored);
                    }
                    async move { call.invoke_async(&mut c).await }
                })
                .await?;
            if done == 0 {
                return Ok(false);
            }
            from_oldest += chunk.len() as i64;
        }
        Ok(true)
    }

    /// Removes the dead letter `id` if it is still `stored` (empty: whatever the index
    /// holds), and with `replay` pushes that event onto its queue in the same step
    /// (`dead_remove.lua`); whether it was there.
    pub(super) async fn dead_remove(
        &self,
        id: &str,
        stored: &[u8],
        replay: Option<(Priority, &[u8])>,
    ) -> Result<bool, QueueError> {
        let (queue, event) = replay.map_or((self.queue(Priority::Low), &[][..]), |(p, e)| {
            (self.queue(p), e)
        });
        let mut reindexed = false;
        for _ in 0..200 {
            let removed: i64 = self
                .backend
                .run(Retry::IfNotRun, |mut c| {
                    let mut call = self.scripts.dead_remove.prepare_invoke();
                    call.key(&self.dead)
                        .key(&self.dead_index)
                        .key(&self.dead_positions)
                        .key(&self.dead_base)
                        .key(&self.dead_indexing)
                        .key(queue)
                        .key(&self.wake);
                    call.arg(id).arg(stored).arg(event);
                    async move { call.invoke_async(&mut c).await }
                })
                .await?;
            match removed {
                0 | 1 => return Ok(removed == 1),
                -1 if !reindexed => {
                    reindexed = true;
                    if !self.reindex_if_needed().await? {
                        return Ok(false);
                    }
                }
                -1 => return Ok(false),
                // Indexing under way elsewhere.
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        Err(QueueError::Reply(
            "the dead letters are being indexed; try again shortly".into(),
        ))
    }

    /// Empties the dead-letter list and its index; how many events were in it.
    pub(super) async fn purge_dead(&self) -> Result<u64, QueueError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("LLEN")
            .arg(&self.dead)
            .cmd("DEL")
            .arg(&self.dead)
            .arg(&self.dead_index)
            .arg(&self.dead_positions)
            .arg(&self.dead_base)
            .arg(&self.dead_indexing)
            .ignore();
        let (n,): (u64,) = self.backend.pipeline(Retry::Idempotent, &pipe).await?;
        Ok(n)
    }
}

/// The stored event of a dead-letter index value `"<position> <stored event>"`.
fn strip_position(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|b| *b == b' ')?;
    value[..space]
        .iter()
        .all(u8::is_ascii_digit)
        .then(|| &value[space + 1..])
}

/// The next value of a script's or pipeline's reply, converted.
fn next_value<T: redis::FromRedisValue>(
    values: &mut impl Iterator<Item = redis::Value>,
) -> Result<T, QueueError> {
    Ok(redis::from_redis_value(
        values.next().unwrap_or(redis::Value::Nil),
    )?)
}
