//! Up to `poolSize` multiplexed connections to the current master.
//!
//! One multiplexed connection pipelines any number of concurrent commands, and fewer
//! connections batch more commands per system call, so a command goes to the open
//! connection with the fewest commands in flight, and another connection is opened only
//! when every open one already carries [`SPREAD_AT`] commands. `poolSize` is therefore the
//! most connections the pool opens, as in other Redis clients, not how many it keeps.
//! A slot reconnects lazily when its connection is older than `maxConnAge`, idle past
//! `idleTimeout`, broken, or opened before the current master epoch.
//!
//! A call that blocks its connection in Redis (`WAIT`, which Redis answers only when the
//! replicas have acknowledged or its timeout ends, holding back everything sent after it
//! on that connection) goes to a connection with nothing in flight, opening one when none
//! is idle, and the pool keeps other calls off that connection until it returns.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use super::connect;
use super::topology::Topology;
use crate::backend::BackendError;
use crate::config::RedisConfig;

/// Commands in flight on every open connection before the pool opens another one.
///
/// Measured with `blinkchamber bench` on 2 cores: at 50 commands in flight one connection
/// gave 0.94–1.05 × the raw single-connection client's GET throughput, two connections
/// 0.8 ×, ten 0.6 × (more system calls, less batching on both sides). Extra connections
/// help against head-of-line blocking by large replies and on many-core clients, so the
/// pool still spreads, but only under heavy concurrency.
pub const SPREAD_AT: usize = 256;

/// A lease that has to wait for room or a dial first.
pub type LeaseFuture<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<Lease<'a>, BackendError>> + Send + 'a>>;

/// The connections of one backend.
pub struct Pool {
    slots: Vec<Slot>,
    /// `maxInFlight`: commands in flight on one connection; past it on every connection
    /// callers wait (back-pressure) until their call's deadline.
    max_in_flight: usize,
    /// Callers waiting for a connection below `max_in_flight`, woken by `freed`.
    waiting: AtomicUsize,
    freed: tokio::sync::Notify,
    /// Slots in use, `1..=slots.len()`; grows under load, never shrinks.
    opened: AtomicUsize,
    ids: AtomicU64,
    /// The newest master epoch any caller has asked for: connections only move forward.
    newest: AtomicU64,
}

struct Slot {
    live: Mutex<Option<Live>>,
    connecting: tokio::sync::Mutex<()>,
    in_flight: AtomicUsize,
    /// Calls in flight that block the connection in Redis (`WAIT`): Redis answers nothing
    /// else sent on it until they return.
    blocking: AtomicUsize,
}

struct Live {
    conn: MultiplexedConnection,
    id: u64,
    epoch: u64,
    opened: Instant,
    used: Instant,
    /// `maxConnAge` less up to a tenth, drawn per connection, so connections opened
    /// together (at start-up, after a failover) are not all replaced at the same moment.
    max_age: std::time::Duration,
}

/// A connection lent for one command, with what is needed to retire it on failure.
/// Counts as in flight on its slot until dropped.
pub struct Lease<'a> {
    conn: Option<MultiplexedConnection>,
    slot: usize,
    id: u64,
    /// Counted in its slot's `blocking` too.
    blocks: bool,
    pool: &'a Pool,
}

impl Lease<'_> {
    /// The connection, for the command (taken once; the lease still counts it in flight).
    pub fn take_conn(&mut self) -> MultiplexedConnection {
        self.conn
            .take()
            .expect("the connection of a lease is taken once")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let slot = &self.pool.slots[self.slot];
        if self.blocks {
            slot.blocking.fetch_sub(1, Ordering::AcqRel);
        }
        slot.in_flight.fetch_sub(1, Ordering::AcqRel);
        if self.pool.waiting.load(Ordering::Acquire) > 0 {
            self.pool.freed.notify_one();
        }
    }
}

impl Pool {
    /// An empty pool of `cfg.poolSize` slots; nothing connects until first use.
    pub fn new(cfg: &RedisConfig) -> Self {
        let size = cfg.pool_size.get() as usize;
        Self {
            max_in_flight: cfg.max_in_flight.get() as usize,
            waiting: AtomicUsize::new(0),
            freed: tokio::sync::Notify::new(),
            slots: (0..size)
                .map(|_| Slot {
                    live: Mutex::new(None),
                    connecting: tokio::sync::Mutex::new(()),
                    in_flight: AtomicUsize::new(0),
                    blocking: AtomicUsize::new(0),
                })
                .collect(),
            opened: AtomicUsize::new(1),
            ids: AtomicU64::new(0),
            newest: AtomicU64::new(0),
        }
    }

    /// A usable connection to the master of `epoch`, opening one if the slot has none;
    /// waiting for a slot and dialling both end by `deadline` (the call's) at the latest.
    /// `now` is the caller's clock reading. `blocks`: the call blocks its connection in
    /// Redis (`WAIT`), so it goes to a connection with nothing in flight where the pool
    /// has or may open one, and other calls keep off its connection meanwhile.
    ///
    /// Most calls find a connection ready: that case is [`Pool::ready`], without a
    /// future. Waiting for room and dialling are rare; boxed, their futures (kilobytes for
    /// a dial) are not carried, and moved, by every call.
    pub fn get<'a>(
        &'a self,
        cfg: &'a RedisConfig,
        topology: &'a Topology,
        epoch: u64,
        blocks: bool,
        now: tokio::time::Instant,
        deadline: tokio::time::Instant,
    ) -> Result<Lease<'a>, LeaseFuture<'a>> {
        self.newest.fetch_max(epoch, Ordering::SeqCst);
        let Some(index) = self.claim(blocks) else {
            return Err(Box::pin(async move {
                let index = self.wait_for_room(blocks, deadline).await?;
                match self.ready(index, cfg, epoch, blocks, now) {
                    Ok(lease) => Ok(lease),
                    Err(lease) => self.dial_into(lease, cfg, topology, epoch, deadline).await,
                }
            }));
        };
        match self.ready(index, cfg, epoch, blocks, now) {
            Ok(lease) => Ok(lease),
            Err(lease) => Err(Box::pin(
                self.dial_into(lease, cfg, topology, epoch, deadline),
            )),
        }
    }

    /// The lease of claimed slot `index`, with its connection if that is fresh; else the
    /// lease without one (it still counts the command in flight on the slot, and gives it
    /// back however it ends).
    fn ready(
        &self,
        index: usize,
        cfg: &RedisConfig,
        epoch: u64,
        blocks: bool,
        now: tokio::time::Instant,
    ) -> Result<Lease<'_>, Lease<'_>> {
        let mut lease = Lease {
            conn: None,
            slot: index,
            id: u64::MAX,
            blocks,
            pool: self,
        };
        match self.slots[index].fresh(cfg, epoch, now.into_std()) {
            Some((conn, id)) => {
                lease.conn = Some(conn);
                lease.id = id;
                Ok(lease)
            }
            None => Err(lease),
        }
    }

    /// Opens the connection of `lease`'s slot. The lease counts the command in flight from
    /// the start, so every way out (an error, or the caller dropping this future mid-dial,
    /// as on a failover) gives the slot back.
    async fn dial_into<'a>(
        &'a self,
        mut lease: Lease<'a>,
        cfg: &'a RedisConfig,
        topology: &'a Topology,
        epoch: u64,
        deadline: tokio::time::Instant,
    ) -> Result<Lease<'a>, BackendError> {
        let slot = &self.slots[lease.slot];
        let (conn, id) = self
            .connection(slot, cfg, topology, epoch, deadline)
            .await?;
        lease.conn = Some(conn);
        lease.id = id;
        Ok(lease)
    }

    /// A slot with room, counted as in flight on it; `None` when every connection the
    /// pool may open has `maxInFlight` commands in flight.
    fn claim(&self, blocks: bool) -> Option<usize> {
        let index = self.pick(blocks);
        let slot = &self.slots[index];
        let in_flight = &slot.in_flight;
        if in_flight.fetch_add(1, Ordering::AcqRel) < self.max_in_flight {
            if blocks {
                slot.blocking.fetch_add(1, Ordering::AcqRel);
            }
            return Some(index);
        }
        in_flight.fetch_sub(1, Ordering::AcqRel);
        None
    }

    /// Back-pressure: waits until a command finishes somewhere, up to `deadline`.
    async fn wait_for_room(
        &self,
        blocks: bool,
        deadline: tokio::time::Instant,
    ) -> Result<usize, BackendError> {
        // Counted while waiting, however the wait ends (the caller may drop it).
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let waiting = Waiting(&self.waiting);
        let waited = tokio::time::timeout_at(deadline, async {
            loop {
                let freed = self.freed.notified();
                tokio::pin!(freed);
                freed.as_mut().enable();
                if let Some(index) = self.claim(blocks) {
                    return index;
                }
                freed.await;
            }
        })
        .await;
        drop(waiting);
        waited.map_err(|_| {
            BackendError::Unavailable(
                "every pooled connection had redis.maxInFlight commands in flight until the \
                 call's deadline"
                    .into(),
            )
        })
    }

    /// The open slot with the fewest commands in flight; a slot held by a blocking call
    /// counts as full. Another slot is opened when every open one has [`SPREAD_AT`]
    /// commands in flight, or, for a blocking call, when none is idle.
    fn pick(&self, blocks: bool) -> usize {
        let opened = self.opened.load(Ordering::Relaxed);
        let (best, load) = self.slots[..opened]
            .iter()
            .enumerate()
            .map(|(i, s)| match s.blocking.load(Ordering::Relaxed) {
                0 => (i, s.in_flight.load(Ordering::Relaxed)),
                _ => (i, usize::MAX),
            })
            .min_by_key(|(_, load)| *load)
            .unwrap_or((0, 0));
        let enough = if blocks {
            1
        } else {
            SPREAD_AT.min(self.max_in_flight)
        };
        if load < enough || opened == self.slots.len() {
            return best;
        }
        match self
            .opened
            .compare_exchange(opened, opened + 1, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => opened,
            Err(_) => best,
        }
    }

    async fn connection(
        &self,
        slot: &Slot,
        cfg: &RedisConfig,
        topology: &Topology,
        epoch: u64,
        deadline: tokio::time::Instant,
    ) -> Result<(MultiplexedConnection, u64), BackendError> {
        let master = topology.current();
        if master.epoch != epoch {
            return Err(BackendError::Unavailable(
                "the Redis master changed while connecting".into(),
            ));
        }
        let wait_until = deadline.min(tokio::time::Instant::now() + cfg.pool_timeout);
        let _connecting = tokio::time::timeout_at(wait_until, slot.connecting.lock())
            .await
            .map_err(|_| {
                BackendError::Unavailable("timed out waiting for a pooled connection".into())
            })?;
        if let Some(found) = slot.fresh(cfg, master.epoch, Instant::now()) {
            return Ok(found);
        }
        // Waited behind a dial while the master moved on: do not dial the old one.
        if self.newest.load(Ordering::SeqCst) > master.epoch {
            return Err(BackendError::Unavailable(
                "the Redis master changed while connecting".into(),
            ));
        }
        let conn = tokio::time::timeout_at(deadline, connect::pooled(cfg, &master.endpoint))
            .await
            .map_err(|_| {
                BackendError::Unavailable(format!(
                    "connecting to {} outlasted redis.callTimeout",
                    master.endpoint
                ))
            })??;
        // The master moved while this caller dialled the one it knew: that connection may
        // lead to a demoted node. Not installed, and nothing ran: the caller retries.
        if self.newest.load(Ordering::SeqCst) > master.epoch {
            return Err(BackendError::Unavailable(
                "the Redis master changed while connecting".into(),
            ));
        }
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut live = slot.lock();
        if live.as_ref().is_some_and(|l| l.epoch > master.epoch) {
            return Err(BackendError::Unavailable(
                "the Redis master changed while connecting".into(),
            ));
        }
        *live = Some(Live {
            conn: conn.clone(),
            id,
            epoch: master.epoch,
            opened: now,
            used: now,
            max_age: cfg.max_conn_age.mul_f64(1.0 - rand::random_range(0.0..0.1)),
        });
        Ok((conn, id))
    }

    /// Drops the lease's connection so the slot reconnects on next use.
    pub fn retire(&self, lease: &Lease) {
        let mut live = self.slots[lease.slot].lock();
        if live.as_ref().is_some_and(|l| l.id == lease.id) {
            *live = None;
        }
    }

    /// Drops every connection (after a password change, or for tests).
    pub fn clear(&self) {
        for slot in &self.slots {
            *slot.lock() = None;
        }
    }
}

impl Slot {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh(
        &self,
        cfg: &RedisConfig,
        epoch: u64,
        now: Instant,
    ) -> Option<(MultiplexedConnection, u64)> {
        let mut guard = self.lock();
        let live = guard.as_mut()?;
        // Only forward: a caller with an older view of the master than the connection's does
        // not drop it (and dials nothing it could install: see `connection`).
        if live.epoch > epoch {
            return None;
        }
        let stale = live.epoch < epoch
            || expired(now, live.opened, live.max_age)
            || expired(now, live.used, cfg.idle_timeout);
        if stale {
            *guard = None;
            return None;
        }
        live.used = now;
        Some((live.conn.clone(), live.id))
    }
}

fn expired(now: Instant, since: Instant, limit: Duration) -> bool {
    !limit.is_zero() && now.duration_since(since) >= limit
}
