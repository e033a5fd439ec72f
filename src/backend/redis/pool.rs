//! A fixed set of multiplexed connections to the current master.
//!
//! One multiplexed connection pipelines any number of concurrent commands, so the pool
//! is `poolSize` slots picked round-robin rather than a checkout pool. A slot reconnects
//! lazily when its connection is older than `maxConnAge`, idle past `idleTimeout`, broken,
//! or opened before the current master epoch.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use super::connect::{self, Role};
use super::topology::Master;
use crate::backend::BackendError;
use crate::config::RedisConfig;

/// The connections of one backend.
pub struct Pool {
    slots: Vec<Slot>,
    next: AtomicUsize,
    ids: AtomicU64,
}

struct Slot {
    live: Mutex<Option<Live>>,
    connecting: tokio::sync::Mutex<()>,
}

struct Live {
    conn: MultiplexedConnection,
    id: u64,
    epoch: u64,
    opened: Instant,
    used: Instant,
}

/// A connection lent for one command, with what is needed to retire it on failure.
pub struct Lease {
    /// The connection.
    pub conn: MultiplexedConnection,
    slot: usize,
    id: u64,
}

impl Pool {
    /// An empty pool of `cfg.poolSize` slots; nothing connects until first use.
    pub fn new(cfg: &RedisConfig) -> Self {
        let size = cfg.pool_size.get() as usize;
        Self {
            slots: (0..size)
                .map(|_| Slot {
                    live: Mutex::new(None),
                    connecting: tokio::sync::Mutex::new(()),
                })
                .collect(),
            next: AtomicUsize::new(0),
            ids: AtomicU64::new(0),
        }
    }

    /// A usable connection to `master`, opening one if the slot has none.
    pub async fn get(&self, cfg: &RedisConfig, master: &Master) -> Result<Lease, BackendError> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let slot = &self.slots[index];
        if let Some(lease) = slot.fresh(index, cfg, master.epoch) {
            return Ok(lease);
        }
        let _connecting = tokio::time::timeout(cfg.pool_timeout, slot.connecting.lock())
            .await
            .map_err(|_| {
                BackendError::Unavailable("timed out waiting for a pooled connection".into())
            })?;
        if let Some(lease) = slot.fresh(index, cfg, master.epoch) {
            return Ok(lease);
        }
        let conn = connect::multiplexed(
            cfg,
            &master.endpoint,
            Role::Data,
            Some(connect::command_timeout(cfg)),
        )
        .await?;
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        *slot.lock() = Some(Live {
            conn: conn.clone(),
            id,
            epoch: master.epoch,
            opened: now,
            used: now,
        });
        Ok(Lease {
            conn,
            slot: index,
            id,
        })
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

    fn fresh(&self, index: usize, cfg: &RedisConfig, epoch: u64) -> Option<Lease> {
        let mut guard = self.lock();
        let live = guard.as_mut()?;
        let now = Instant::now();
        let stale = live.epoch != epoch
            || expired(now, live.opened, cfg.max_conn_age)
            || expired(now, live.used, cfg.idle_timeout);
        if stale {
            *guard = None;
            return None;
        }
        live.used = now;
        Some(Lease {
            conn: live.conn.clone(),
            slot: index,
            id: live.id,
        })
    }
}

fn expired(now: Instant, since: Instant, limit: Duration) -> bool {
    !limit.is_zero() && now.duration_since(since) >= limit
}
