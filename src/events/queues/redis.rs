//! The queues in Redis.
//!
//! - `events.queues.{high,normal,low}_priority`: lists; producers `LPUSH`, consumers take
//!   from the other end, so each list is FIFO and `LRANGE … 0 -1` shows it newest first.
//! - `{queue}:retry`: a sorted set per priority of events waiting to be retried, scored by
//!   the Unix millisecond they are due; a take moves the due ones back into the queue.
//! - `{statePrefix}consumers`: consumer id → lease deadline (Unix ms); a consumer's taken
//!   events are the list `{statePrefix}taken:{consumer}:{0|1|2}` (by priority).
//! - `{statePrefix}wake`: a doorbell list; a publish pushes a token, idle consumers block
//!   on it (`BLPOP`) instead of polling, and a take that leaves events behind rings it for
//!   the next idle consumer.
//! - `{statePrefix}seen:{id}`: set, with a TTL of `events.consumer.dedupWindow`, when the
//!   event `id` was handled (only with de-duplication on); a repeat within it is skipped.
//! - `events.queues.dead_letter`: a list of events that failed every retry, each with
//!   `lasterror` and `deadat` attributes.
//!
//! Take and reap are scripts, so moving an event from a queue to a consumer's taken list
//! (and back, when its lease runs out) is atomic: an event is always in exactly one list.
//! Keys are built from configured names without a hash tag: Redis Cluster would need the
//! names to share one.

use std::time::Duration;

use redis::Script;

use super::queues::{QueueError, Settle, Stats, Taken};
use super::routing::Priority;
use crate::backend::redis::px;
use crate::backend::{RedisBackend, Retry};
use crate::config::EventsConfig;

const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local consumer, lease, max = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 0, 2 do
  local retry = KEYS[6 + i]
  local due = redis.call('ZRANGE', retry, '-inf', now, 'BYSCORE', 'LIMIT', 0, 500)
  if #due > 0 then
    redis.call('LPUSH', KEYS[3 + i], unpack(due))
    redis.call('ZREM', retry, unpack(due))
  end
end
for i = 0, 2 do
  local items = redis.call('RPOP', KEYS[3 + i], max)
  if items then
    redis.call('RPUSH', KEYS[9 + i], unpack(items))
    redis.call('ZADD', KEYS[1], now + lease, consumer)
    if redis.call('LLEN', KEYS[3 + i]) > 0 then
      redis.call('LPUSH', KEYS[2], 1)
      redis.call('LTRIM', KEYS[2], 0, 63)
    end
    return {i, items}
  end
end
local next_due = -1
for i = 0, 2 do
  local first = redis.call('ZRANGE', KEYS[6 + i], 0, 0, 'WITHSCORES')
  if first[2] then
    local due = math.max(0, tonumber(first[2]) - now)
    if next_due < 0 or due < next_due then next_due = due end
  end
end
return {-1, next_due}
";

const REAP: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, 16)
local moved = 0
for _, consumer in ipairs(expired) do
  for i = 0, 2 do
    local taken = ARGV[1] .. consumer .. ':' .. i
    local items = redis.call('LRANGE', taken, 0, -1)
    if #items > 0 then
      local back = {}
      for j = #items, 1, -1 do back[#back + 1] = items[j] end
      redis.call('RPUSH', KEYS[2 + i], unpack(back))
      moved = moved + #items
    end
    redis.call('DEL', taken)
  end
  redis.call('ZREM', KEYS[1], consumer)
end
return moved
";

/// The Redis queue store.
pub(super) struct RedisQueues {
    backend: RedisBackend,
    queues: [String; 3],
    retry: [String; 3],
    dead: String,
    consumers: String,
    wake: String,
    taken_prefix: String,
    seen_prefix: String,
    take: Script,
    reap: Script,
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
        Self {
            backend,
            retry,
            queues,
            dead: q.dead_letter.clone(),
            consumers: format!("{}consumers", q.state_prefix),
            wake: format!("{}wake", q.state_prefix),
            taken_prefix: format!("{}taken:", q.state_prefix),
            seen_prefix: format!("{}seen:", q.state_prefix),
            take: Script::new(TAKE),
            reap: Script::new(REAP),
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
            let (acked,): (u32,) = self.backend.pipeline(Retry::IfNotRun, &pipe).await?;
            if acked < replicas {
                return Err(QueueError::Replicas { acked, replicas });
            }
            return Ok(());
        }
        self.backend.pipeline::<()>(Retry::IfNotRun, &pipe).await?;
        Ok(())
    }

    /// Moves up to `max` events of the first non-empty queue in `order` to `consumer`'s
    /// taken list, leased for `lease`.
    pub(super) async fn take(
        &self,
        consumer: &str,
        order: [Priority; 3],
        max: usize,
        lease: Duration,
    ) -> Result<Taken, QueueError> {
        let reply: (i64, redis::Value) = self
            .backend
            .run(Retry::IfNotRun, |mut c| {
                let mut call = self.take.prepare_invoke();
                call.key(&self.consumers).key(&self.wake);
                for p in order {
                    call.key(self.queue(p));
                }
                for p in order {
                    call.key(&self.retry[p as usize]);
                }
                for p in order {
                    call.key(self.taken(consumer, p));
                }
                call.arg(consumer).arg(px(lease)).arg(max);
                async move { call.invoke_async(&mut c).await }
            })
            .await?;
        let (index, value) = reply;
        if index < 0 {
            let next_due: i64 = redis::from_redis_value(value).unwrap_or(-1);
            return Ok(Taken::Empty {
                next_due: u64::try_from(next_due).ok().map(Duration::from_millis),
            });
        }
        let items: Vec<Vec<u8>> = redis::from_redis_value(value)?;
        let priority = order[usize::try_from(index).unwrap_or(0).min(2)];
        Ok(Taken::Events { priority, items })
    }

    /// Ends a take: failed events to their retry set or the dead-letter list, and the
    /// consumer's taken list dropped, in one transaction.
    pub(super) async fn settle(&self, consumer: &str, settle: &Settle) -> Result<(), QueueError> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (event, due_ms) in &settle.retries {
            pipe.cmd("ZADD")
                .arg(&self.retry[settle.priority as usize])
                .arg(*due_ms)
                .arg(event.as_slice())
                .ignore();
        }
        if !settle.dead.is_empty() {
            pipe.cmd("LPUSH").arg(&self.dead).arg(&settle.dead).ignore();
        }
        for id in &settle.seen {
            pipe.cmd("SET")
                .arg(format!("{}{id}", self.seen_prefix))
                .arg(1)
                .arg("PX")
                .arg(px(settle.seen_for).max(1))
                .ignore();
        }
        pipe.cmd("DEL")
            .arg(self.taken(consumer, settle.priority))
            .ignore();
        pipe.cmd("ZREM").arg(&self.consumers).arg(consumer).ignore();
        self.backend
            .pipeline::<()>(Retry::Idempotent, &pipe)
            .await?;
        Ok(())
    }

    /// Which of `ids` have a `seen` mark, in one `EXISTS` per id in one round trip.
    pub(super) async fn seen(&self, ids: &[&str]) -> Result<Vec<bool>, QueueError> {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("EXISTS").arg(format!("{}{id}", self.seen_prefix));
        }
        Ok(self.backend.pipeline(Retry::Idempotent, &pipe).await?)
    }

    /// Pushes `consumer`'s lease deadline to `lease` from now.
    pub(super) async fn renew(&self, consumer: &str, lease: Duration) -> Result<(), QueueError> {
        let deadline = super::queues::unix_ms() + px(lease);
        let _: i64 = self
            .backend
            .query(
                redis::cmd("ZADD")
                    .arg(&self.consumers)
                    .arg("XX")
                    .arg(deadline)
                    .arg(consumer),
            )
            .await?;
        Ok(())
    }

    /// Returns the events of consumers whose lease ran out to the front of their queues.
    pub(super) async fn reap(&self) -> Result<u64, QueueError> {
        let moved: u64 = self
            .backend
            .run(Retry::Idempotent, |mut c| {
                let mut call = self.reap.prepare_invoke();
                call.key(&self.consumers);
                for q in &self.queues {
                    call.key(q);
                }
                call.arg(&self.taken_prefix);
                async move { call.invoke_async(&mut c).await }
            })
            .await?;
        Ok(moved)
    }

    /// Waits up to `timeout` for the doorbell, on a connection of its own (`BLPOP` never
    /// shares a pooled connection). `conn` is kept between calls and dropped on error.
    pub(super) async fn wait(
        &self,
        conn: &mut Option<redis::aio::MultiplexedConnection>,
        timeout: Duration,
    ) -> Result<(), QueueError> {
        if conn.is_none() {
            *conn = Some(self.backend.dedicated().await?.0);
        }
        let Some(c) = conn.as_mut() else {
            return Ok(());
        };
        let secs = timeout.as_secs_f64().max(0.001);
        let waited: Result<Option<(String, String)>, _> = redis::cmd("BLPOP")
            .arg(&self.wake)
            .arg(format!("{secs:.3}"))
            .query_async(c)
            .await;
        if let Err(e) = waited {
            *conn = None;
            return Err(crate::BackendError::from(e).into());
        }
        Ok(())
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
        pipe.cmd("ZRANGE").arg(&self.consumers).arg(0).arg(-1);
        let reply: Vec<redis::Value> = self.backend.pipeline(Retry::Idempotent, &pipe).await?;
        let mut stats = Stats::default();
        let mut values = reply.into_iter();
        for p in Priority::ALL {
            let q = &mut stats.queues[p as usize];
            q.depth = redis::from_redis_value(values.next().unwrap_or(redis::Value::Nil))?;
            q.retrying = redis::from_redis_value(values.next().unwrap_or(redis::Value::Nil))?;
            let oldest: Option<Vec<u8>> =
                redis::from_redis_value(values.next().unwrap_or(redis::Value::Nil))?;
            q.oldest_age = oldest.as_deref().and_then(super::queues::age_of);
        }
        stats.dead = redis::from_redis_value(values.next().unwrap_or(redis::Value::Nil))?;
        let consumers: Vec<String> =
            redis::from_redis_value(values.next().unwrap_or(redis::Value::Nil))?;
        if !consumers.is_empty() {
            let mut pipe = redis::pipe();
            for c in &consumers {
                for p in Priority::ALL {
                    pipe.cmd("LLEN").arg(self.taken(c, p));
                }
            }
            let lens: Vec<u64> = self.backend.pipeline(Retry::Idempotent, &pipe).await?;
            for (i, len) in lens.into_iter().enumerate() {
                stats.queues[i % 3].in_flight += len;
            }
        }
        Ok(stats)
    }

    /// Up to `n` events of `list` from the consumption end (the next to be taken first).
    pub(super) async fn peek(&self, list: &str, n: usize) -> Result<Vec<Vec<u8>>, QueueError> {
        let n = i64::try_from(n).unwrap_or(i64::MAX).max(1);
        let mut items: Vec<Vec<u8>> = self
            .backend
            .query(redis::cmd("LRANGE").arg(list).arg(-n).arg(-1))
            .await?;
        items.reverse();
        Ok(items)
    }

    /// The dead-letter list's name.
    pub(super) fn dead_letter(&self) -> &str {
        &self.dead
    }

    /// Removes one stored dead letter (by its exact bytes); whether it was there.
    pub(super) async fn remove_dead(&self, stored: &[u8]) -> Result<bool, QueueError> {
        let n: u64 = self
            .backend
            .query(redis::cmd("LREM").arg(&self.dead).arg(1).arg(stored))
            .await?;
        Ok(n > 0)
    }

    /// Moves a dead letter back to a queue in one transaction; whether it was there.
    pub(super) async fn replay(
        &self,
        stored: &[u8],
        priority: Priority,
        event: &[u8],
    ) -> Result<bool, QueueError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("LREM")
            .arg(&self.dead)
            .arg(1)
            .arg(stored)
            .cmd("LPUSH")
            .arg(self.queue(priority))
            .arg(event)
            .ignore()
            .cmd("LPUSH")
            .arg(&self.wake)
            .arg(1)
            .ignore();
        let (removed,): (u64,) = self.backend.pipeline(Retry::IfNotRun, &pipe).await?;
        if removed == 0 {
            // Someone else replayed or purged it meanwhile: undo the push.
            let _: u64 = self
                .backend
                .query(
                    redis::cmd("LREM")
                        .arg(self.queue(priority))
                        .arg(1)
                        .arg(event),
                )
                .await?;
        }
        Ok(removed > 0)
    }

    /// Empties the dead-letter list; how many events were in it.
    pub(super) async fn purge_dead(&self) -> Result<u64, QueueError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("LLEN")
            .arg(&self.dead)
            .cmd("DEL")
            .arg(&self.dead)
            .ignore();
        let (n,): (u64,) = self.backend.pipeline(Retry::Idempotent, &pipe).await?;
        Ok(n)
    }
}
