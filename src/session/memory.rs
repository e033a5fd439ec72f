//! Sessions in this process: a map of sessions by handle and a map of user → handles.
//!
//! Time is [`tokio::time::Instant`], so tests pause and advance the clock instead of
//! sleeping; wall-clock times in answers are derived from one anchor taken at start, so
//! they move with that clock too. Ended sessions are dropped when they are looked at, when
//! their user's sessions are listed, and by a sweep whenever the map has doubled.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::time::Instant;

use super::{Rotated, Session, SessionKind, Updated, record_evicted, record_expired};
use crate::backend::memory::{Full, MemoryBudget};
use crate::config::SessionTimeouts;

struct Entry {
    user: String,
    kind: SessionKind,
    data: Value,
    version: u64,
    created: Instant,
    absolute: Instant,
    idle: Duration,
    idle_deadline: Instant,
    /// What the entry is charged to the memory budget.
    bytes: usize,
}

/// Bookkeeping of one session beyond its strings: the entry, both maps' slots and their
/// spare capacity, the user's index set, allocator rounding. Measured: 214 689 sessions
/// with two-field data took 220 MB of resident memory, about 1 000 bytes each.
const SESSION_OVERHEAD: usize = 800;

/// The budget charge of a session: its handle twice (the map and the user's index), the
/// user id twice, its data (parsed JSON takes about twice its text), and bookkeeping.
fn weight(handle: &str, user: &str, data: &Value) -> usize {
    let data = serde_json::to_vec(data).map_or(0, |v| v.len());
    2 * handle.len() + 2 * user.len() + 2 * data + SESSION_OVERHEAD
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        now < self.idle_deadline && now < self.absolute
    }

    fn renew(&mut self, now: Instant) {
        self.idle_deadline = (now + self.idle).min(self.absolute);
    }
}

struct State {
    sessions: HashMap<String, Entry>,
    by_user: HashMap<String, HashSet<String>>,
    /// Size of `sessions` after the last sweep.
    swept_at: usize,
    budget: MemoryBudget,
}

impl State {
    /// Removes `id` from both maps, giving its bytes back to the budget.
    fn remove(&mut self, id: &str) -> Option<Entry> {
        let entry = self.sessions.remove(id)?;
        self.budget.release(entry.bytes);
        if let Some(ids) = self.by_user.get_mut(&entry.user) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_user.remove(&entry.user);
            }
        }
        Some(entry)
    }

    /// The live entry `id`; an ended one is dropped.
    fn live(&mut self, id: &str, now: Instant) -> Option<&mut Entry> {
        if self.sessions.get(id).is_some_and(|e| !e.live(now)) {
            self.remove(id);
            record_expired(1);
        }
        self.sessions.get_mut(id)
    }

    /// Ends sessions of `user` until a new one fits under `max`: ended ones first, then
    /// those closest to their absolute end.
    fn make_room(&mut self, user: &str, max: usize, now: Instant) {
        let Some(ids) = self.by_user.get(user) else {
            return;
        };
        if ids.len() < max {
            return;
        }
        let mut ids: Vec<String> = ids.iter().cloned().collect();
        ids.retain(|id| self.live(id, now).is_some());
        if ids.len() < max {
            return;
        }
        ids.sort_by_key(|id| (self.sessions[id].absolute, id.clone()));
        let over = ids.len() + 1 - max;
        for id in &ids[..over] {
            self.remove(id);
        }
        record_evicted(over as u64);
    }

    fn sweep(&mut self, now: Instant) {
        let dead: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, e)| !e.live(now))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &dead {
            self.remove(id);
        }
        record_expired(dead.len() as u64);
        self.swept_at = self.sessions.len();
    }

    fn publish_gauge(&self) {
        metrics::gauge!("blinkchamber_sessions_active").set(self.sessions.len() as f64);
    }
}

/// The memory store.
pub(super) struct MemorySessions {
    state: Mutex<State>,
    /// The same moment on both clocks, to report wall-clock times.
    anchor: (Instant, SystemTime),
}

impl MemorySessions {
    pub(super) fn new(budget: MemoryBudget) -> Self {
        Self {
            state: Mutex::new(State {
                sessions: HashMap::new(),
                by_user: HashMap::new(),
                swept_at: 0,
                budget,
            }),
            anchor: (Instant::now(), SystemTime::now()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wall(&self, at: Instant) -> SystemTime {
        self.anchor.1 + at.saturating_duration_since(self.anchor.0)
    }

    fn session(&self, id: &str, e: &Entry) -> Session {
        Session {
            id: id.to_owned(),
            handle: String::new(),
            user_id: e.user.clone(),
            kind: e.kind,
            data: e.data.clone(),
            version: e.version,
            created_at: self.wall(e.created),
            expires_at: self.wall(e.absolute),
            idle_expires_at: self.wall(e.idle_deadline),
        }
    }

    /// `None` when `id` (a handle) is taken.
    ///
    /// # Errors
    /// [`Full`] when the memory budget has no room for it, after dropping ended sessions.
    pub(super) fn create(
        &self,
        id: &str,
        user: &str,
        kind: SessionKind,
        data: Value,
        t: SessionTimeouts,
        max_per_user: u32,
    ) -> Result<Option<Session>, Full> {
        let now = Instant::now();
        let absolute = now + t.absolute_timeout;
        let bytes = weight(id, user, &data);
        let entry = Entry {
            user: user.to_owned(),
            kind,
            data,
            version: 1,
            created: now,
            absolute,
            idle: t.idle_timeout,
            idle_deadline: (now + t.idle_timeout).min(absolute),
            bytes,
        };
        let session = self.session(id, &entry);
        let mut state = self.state();
        if state.sessions.contains_key(id) {
            return Ok(None);
        }
        state.make_room(user, max_per_user as usize, now);
        if state.budget.reserve(bytes).is_err() {
            // Ended sessions still count until swept: sweep, then try once more.
            state.sweep(now);
            state.budget.reserve(bytes)?;
        }
        state.sessions.insert(id.to_owned(), entry);
        state
            .by_user
            .entry(user.to_owned())
            .or_default()
            .insert(id.to_owned());
        if state.sessions.len() > (state.swept_at * 2).max(1024) {
            state.sweep(now);
        }
        state.publish_gauge();
        Ok(Some(session))
    }

    pub(super) fn read(&self, id: &str, touch: bool) -> Option<Session> {
        let now = Instant::now();
        let mut state = self.state();
        let entry = state.live(id, now)?;
        if touch {
            entry.renew(now);
        }
        Some(self.session(id, entry))
    }

    /// # Errors
    /// [`Full`] when the new data is larger and the memory budget has no room for the
    /// difference; the session keeps its data.
    pub(super) fn update(&self, id: &str, data: Value, version: u64) -> Result<Updated, Full> {
        let now = Instant::now();
        let mut state = self.state();
        let budget = state.budget.clone();
        let Some(entry) = state.live(id, now) else {
            return Ok(Updated::Missing);
        };
        if entry.version != version {
            return Ok(Updated::Conflict(entry.version));
        }
        let bytes = weight(id, &entry.user, &data);
        match bytes.checked_sub(entry.bytes) {
            Some(more) => budget.reserve(more)?,
            None => budget.release(entry.bytes - bytes),
        }
        entry.bytes = bytes;
        entry.data = data;
        entry.version += 1;
        Ok(Updated::Done(self.session(id, entry)))
    }

    pub(super) fn rotate(&self, id: &str, new_id: &str) -> Rotated {
        let now = Instant::now();
        let mut state = self.state();
        if state.live(id, now).is_none() {
            return Rotated::Missing;
        }
        if state.sessions.contains_key(new_id) {
            return Rotated::Taken;
        }
        let Some(mut entry) = state.remove(id) else {
            return Rotated::Missing;
        };
        entry.renew(now);
        // The same session under a new handle of the same length: moved, not new.
        state.budget.charge(entry.bytes);
        let new_id = new_id.to_owned();
        let session = self.session(&new_id, &entry);
        state
            .by_user
            .entry(entry.user.clone())
            .or_default()
            .insert(new_id.clone());
        state.sessions.insert(new_id, entry);
        Rotated::Done(Box::new(session))
    }

    pub(super) fn delete(&self, id: &str) -> bool {
        let now = Instant::now();
        let mut state = self.state();
        let live = state.live(id, now).is_some();
        if live {
            state.remove(id);
            state.publish_gauge();
        }
        live
    }

    pub(super) fn list(&self, user: &str) -> Vec<Session> {
        let now = Instant::now();
        let mut state = self.state();
        let ids: Vec<String> = state
            .by_user
            .get(user)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(entry) = state.live(&id, now) {
                out.push(self.session(&id, entry));
            }
        }
        state.publish_gauge();
        out
    }

    pub(super) fn revoke_user(&self, user: &str) -> usize {
        let now = Instant::now();
        let mut state = self.state();
        let ids = state.by_user.remove(user).unwrap_or_default();
        let mut live = 0;
        for id in ids {
            if let Some(entry) = state.sessions.remove(&id) {
                state.budget.release(entry.bytes);
                if entry.live(now) {
                    live += 1;
                } else {
                    record_expired(1);
                }
            }
        }
        state.publish_gauge();
        live
    }
}
