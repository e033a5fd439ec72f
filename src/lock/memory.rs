//! Locks in this process: a map of leases and one fencing counter.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use super::Attempt;
use crate::backend::memory::{Full, ITEM_OVERHEAD, MemoryBudget};

struct Held {
    owner: String,
    fence: u64,
    expires: Instant,
}

/// The budget charge of a held lock.
fn weight(name: &str, held: &Held) -> usize {
    name.len() + held.owner.len() + ITEM_OVERHEAD
}

#[derive(Default)]
struct State {
    held: HashMap<String, Held>,
    /// The last fencing token handed out, for every name.
    fence: u64,
    /// Size of `held` after the last sweep of expired leases.
    swept_at: usize,
}

/// The memory store.
pub(super) struct MemoryLocks {
    state: Mutex<State>,
    released: broadcast::Sender<String>,
    budget: MemoryBudget,
}

impl MemoryLocks {
    pub(super) fn new(released: broadcast::Sender<String>, budget: MemoryBudget) -> Self {
        Self {
            state: Mutex::new(State::default()),
            released,
            budget,
        }
    }

    /// Drops expired leases, giving their bytes back.
    fn sweep(&self, state: &mut State, now: Instant) {
        state.held.retain(|name, h| {
            let live = h.expires > now;
            if !live {
                self.budget.release(weight(name, h));
            }
            live
        });
        state.swept_at = state.held.len();
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// # Errors
    /// [`Full`] when the memory budget has no room for a new lease.
    pub(super) fn try_acquire(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<Attempt, Full> {
        let now = Instant::now();
        let mut state = self.state();
        if let Some(held) = state.held.get(name)
            && held.expires > now
        {
            return Ok(Attempt::Held(held.expires - now));
        }
        let held = Held {
            owner: owner.to_owned(),
            fence: state.fence + 1,
            expires: now + ttl,
        };
        let bytes = weight(name, &held);
        if self.budget.reserve(bytes).is_err() {
            self.sweep(&mut state, now);
            self.budget.reserve(bytes)?;
        }
        state.fence += 1;
        let fence = state.fence;
        if let Some(old) = state.held.insert(name.to_owned(), held) {
            self.budget.release(weight(name, &old));
        }
        if state.held.len() > (state.swept_at * 2).max(1024) {
            self.sweep(&mut state, now);
        }
        Ok(Attempt::Acquired(fence))
    }

    pub(super) fn extend(&self, name: &str, owner: &str, ttl: Duration) -> Option<u64> {
        let now = Instant::now();
        let mut state = self.state();
        let held = state.held.get_mut(name)?;
        if held.owner != owner || held.expires <= now {
            return None;
        }
        held.expires = now + ttl;
        Some(held.fence)
    }

    pub(super) fn release(&self, name: &str, owner: &str) -> bool {
        let now = Instant::now();
        let mut state = self.state();
        let owned = state
            .held
            .get(name)
            .is_some_and(|h| h.owner == owner && h.expires > now);
        if owned {
            if let Some(old) = state.held.remove(name) {
                self.budget.release(weight(name, &old));
            }
            drop(state);
            let _ = self.released.send(name.to_owned());
        }
        owned
    }
}
