//! The coherence rule of L1: nothing older replaces something newer.
//!
//! Every write and removal of a key has a version (assigned by Redis, or by a local counter
//! on the memory backend) that travels in the stored value and in the backplane notice.
//! An L1 entry carries the version it was read or written at. A notice or an own removal
//! raises the key's *floor* — the newest version known for it — and drops older entries;
//! the floor is kept for [`Coherence::window`], longer than any read or write can be in
//! flight. An insert into L1 (after a write, a read of Redis or a load) is one step for
//! the key that refuses a version older than the floor or the entry already there, and
//! anything started before a bulk eviction (namespace clear, resubscription) or longer
//! ago than the window. So a notice older than what L1 holds is ignored, a newer one
//! always wins, on the writer too, and two writes finishing in either order leave the
//! newer. Loads also watch their key: one that saw an eviction of it is not kept unless
//! Redis confirmed it (see `lua/set.lua`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::ops::compute::Op;

/// One L1 entry: the value's JSON, its version, until when it is fresh, and how long it may
/// stay in memory at all (fresh time plus `failSafeMaxDuration`, to be served if Redis or
/// the loader fails).
#[derive(Clone)]
pub(super) struct Entry {
    pub json: Arc<[u8]>,
    pub version: u64,
    pub fresh_until: Instant,
    /// End of the fail-safe window: the entry leaves memory then, however often it is put
    /// back.
    pub stale_until: Instant,
    /// Memory backend: the tags it was set with.
    pub tags: Option<Arc<[String]>>,
}

impl Entry {
    pub fn is_fresh(&self) -> bool {
        Instant::now() < self.fresh_until
    }

    /// Bytes the entry holds, as weighed against `cache.l1.maxBytes`.
    pub fn bytes(&self, key: &str) -> usize {
        const OVERHEAD: usize = 96;
        let tags = self
            .tags
            .as_ref()
            .map_or(0, |t| t.iter().map(|t| t.len() + 24).sum());
        key.len() + self.json.len() + tags + OVERHEAD
    }
}

/// The in-process level.
pub(super) type L1 = moka::future::Cache<String, Entry>;

/// When an L1 insert's source read or wrote Redis, and the bulk evictions seen then.
#[derive(Clone, Copy)]
pub(super) struct Ticket {
    started: Instant,
    bulk: u64,
}

/// A key watched for evictions while something is computed for it.
pub(super) struct Watch {
    key: String,
    flag: Arc<AtomicBool>,
    start: Ticket,
    coherence: std::sync::Weak<Coherence>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(coherence) = self.coherence.upgrade() {
            coherence.unwatch(self);
        }
    }
}

/// The newest version known for a key, and whether it is a removal.
#[derive(Clone, Copy)]
struct Floor {
    version: u64,
    removed: bool,
    until: Instant,
}

/// Shards of the floor map, so notices for different keys rarely share a lock.
const SHARDS: usize = 32;

#[derive(Default)]
struct Shard {
    floors: HashMap<String, Floor>,
    next_prune: Option<Instant>,
}

/// L1 with its floors, bulk-eviction count and watched loads. Shared by the cache and its
/// backplane listener.
pub(super) struct Coherence {
    pub l1: L1,
    shards: Vec<Mutex<Shard>>,
    /// Namespace clears and backplane (re)subscriptions so far.
    bulk: AtomicU64,
    /// Keys with a load (or a [`super::WriteMark`]) in flight, each with whether an
    /// eviction of the key came meanwhile.
    watched: Mutex<HashMap<String, Vec<Arc<AtomicBool>>>>,
    /// Memory backend: the last version handed out.
    local: AtomicU64,
    /// Whether other instances' notices reach this one (always with no backplane): L1 is
    /// served and filled only then.
    following: AtomicBool,
    window: Duration,
}

impl Coherence {
    /// `window`: longest a Redis read or write of the cache can be in flight (its deadline
    /// with a margin).
    pub fn new(l1: L1, window: Duration) -> Self {
        Self {
            l1,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            bulk: AtomicU64::new(0),
            watched: Mutex::default(),
            local: AtomicU64::new(0),
            following: AtomicBool::new(true),
            window,
        }
    }

    /// Whether notices from other instances reach this one now.
    pub fn following(&self) -> bool {
        self.following.load(Ordering::SeqCst)
    }

    /// The backplane is subscribed again (after [`Coherence::evict_bulk`] of everything).
    pub fn resume(&self) {
        self.following.store(true, Ordering::SeqCst);
    }

    /// The backplane was lost: notices may be missed from now on. L1 is neither served nor
    /// filled (reads and loads in flight are not kept), but its entries stay as fail-safe
    /// copies for when Redis itself fails.
    pub fn interrupt(&self) {
        self.following.store(false, Ordering::SeqCst);
        self.bulk.fetch_add(1, Ordering::SeqCst);
        let watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        for flag in watched.values().flatten() {
            flag.store(true, Ordering::SeqCst);
        }
    }

    /// Taken before a Redis call whose outcome may go into L1.
    pub fn ticket(&self) -> Ticket {
        Ticket {
            started: Instant::now(),
            bulk: self.bulk.load(Ordering::SeqCst),
        }
    }

    /// A version for the memory backend, newer than every one before.
    pub fn next_local_version(&self) -> u64 {
        self.local.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
        self.shards[hash as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn floor(&self, key: &str) -> Option<Floor> {
        let shard = self.shard(key);
        shard
            .floors
            .get(key)
            .filter(|f| f.until > Instant::now())
            .copied()
    }

    fn raise_floor(&self, key: &str, version: u64, removed: bool) {
        let now = Instant::now();
        let mut shard = self.shard(key);
        if shard.next_prune.is_none_or(|at| now >= at) {
            shard.floors.retain(|_, f| f.until > now);
            shard.next_prune = Some(now + self.window);
        }
        let until = now + self.window;
        let floor = shard.floors.entry(key.to_owned()).or_insert(Floor {
            version,
            removed,
            until,
        });
        if version > floor.version || (version == floor.version && removed) {
            floor.version = version;
            floor.removed = removed;
        }
        floor.until = until;
    }

    /// Puts `entry` in L1 unless something newer is known for the key (its floor or the
    /// entry there), a bulk eviction came since `ticket`, or `ticket` is older than the
    /// window. Returns whether it was put.
    pub async fn admit(&self, key: String, entry: Entry, ticket: Ticket) -> bool {
        let bulk = &self.bulk;
        let version = entry.version;
        let check_key = key.clone();
        let result = self
            .l1
            .entry(key)
            .and_compute_with(|existing| {
                let newer_here = existing.is_some_and(|e| e.value().version > version);
                let newer_known = self
                    .floor(&check_key)
                    .is_some_and(|f| f.version > version || (f.version == version && f.removed));
                let outdated = bulk.load(Ordering::SeqCst) != ticket.bulk
                    || ticket.started.elapsed() >= self.window
                    || !self.following();
                let op = if newer_here || newer_known || outdated {
                    Op::Nop
                } else {
                    Op::Put(entry)
                };
                std::future::ready(op)
            })
            .await;
        let put = matches!(
            result,
            moka::ops::compute::CompResult::Inserted(_)
                | moka::ops::compute::CompResult::ReplacedWith(_)
        );
        // A bulk eviction is not ordered with the per-key step: look once more.
        if put && self.bulk.load(Ordering::SeqCst) != ticket.bulk {
            self.l1.invalidate(&check_key).await;
            return false;
        }
        put
    }

    /// A write (`removed` false) or removal of `key` at `version`, seen in a notice or done
    /// here: raises the floor, drops older entries and marks a load of the key in flight.
    pub async fn evict(&self, key: &str, version: u64, removed: bool) {
        self.l1
            .entry(key.to_owned())
            .and_compute_with(|existing| {
                self.raise_floor(key, version, removed);
                self.mark_load(key);
                let drop = existing.is_some_and(|e| {
                    let held = e.value().version;
                    held < version || (held == version && removed)
                });
                std::future::ready(if drop { Op::Remove } else { Op::Nop })
            })
            .await;
    }

    /// Before this instance writes or removes `key`: its current entry leaves L1 (so a write
    /// that fails cannot leave it there) and may not come back.
    pub async fn drop_before_write(&self, key: &str) {
        self.l1
            .entry(key.to_owned())
            .and_compute_with(|existing| {
                self.mark_load(key);
                let op = match existing {
                    Some(e) => {
                        self.raise_floor(key, e.value().version, true);
                        Op::Remove
                    }
                    None => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
    }

    /// Drops every L1 entry (of `namespace`, or all); reads and loads in flight are not
    /// kept.
    pub fn evict_bulk(&self, namespace: Option<&str>) {
        self.bulk.fetch_add(1, Ordering::SeqCst);
        {
            let watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
            for flag in watched.values().flatten() {
                flag.store(true, Ordering::SeqCst);
            }
        }
        match namespace {
            Some(namespace) => {
                let prefix = format!("{namespace}:");
                if self
                    .l1
                    .invalidate_entries_if(move |k, _| k.starts_with(&prefix))
                    .is_err()
                {
                    self.l1.invalidate_all();
                }
            }
            None => self.l1.invalidate_all(),
        }
    }

    /// Starts watching `key` for evictions (a load, or a write mark).
    pub fn watch(self: &Arc<Self>, key: &str) -> Watch {
        let flag = Arc::new(AtomicBool::new(false));
        self.watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_owned())
            .or_default()
            .push(flag.clone());
        Watch {
            key: key.to_owned(),
            flag,
            start: self.ticket(),
            coherence: Arc::downgrade(self),
        }
    }

    /// Stops `watch`; whether an eviction of its key came while watched.
    pub fn unwatch(&self, watch: &Watch) -> bool {
        let mut watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(flags) = watched.get_mut(&watch.key) {
            flags.retain(|f| !Arc::ptr_eq(f, &watch.flag));
            if flags.is_empty() {
                watched.remove(&watch.key);
            }
        }
        watch.flag.load(Ordering::SeqCst)
    }

    fn mark_load(&self, key: &str) {
        let watched = self.watched.lock().unwrap_or_else(|e| e.into_inner());
        for flag in watched.get(key).into_iter().flatten() {
            flag.store(true, Ordering::SeqCst);
        }
    }

    /// Puts a load's value that Redis did not confirm (Redis failed, or the memory backend):
    /// only if nothing evicted the key since the load started, with a version newer than any
    /// known here.
    pub async fn admit_unconfirmed(&self, mut entry: Entry, watch: &Watch) -> bool {
        if self.unwatch(watch) {
            return false;
        }
        let floor = self.floor(&watch.key).map_or(0, |f| f.version);
        entry.version = entry.version.max(floor.saturating_add(1));
        let ticket = Ticket {
            started: Instant::now(),
            bulk: watch.start.bulk,
        };
        self.admit(watch.key.clone(), entry, ticket).await
    }
}
