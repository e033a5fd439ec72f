//! Locks in this process: a map of leases and one fencing counter.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use super::Attempt;

struct Held {
    token: String,
    fence: u64,
    expires: Instant,
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
}

impl MemoryLocks {
    pub(super) fn new(released: broadcast::Sender<String>) -> Self {
        Self {
            state: Mutex::new(State::default()),
            released,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn try_acquire(&self, name: &str, token: &str, ttl: Duration) -> Attempt {
        let now = Instant::now();
        let mut state = self.state();
        if let Some(held) = state.held.get(name)
            && held.expires > now
        {
            return Attempt::Held(held.expires - now);
        }
        state.fence += 1;
        let fence = state.fence;
        state.held.insert(
            name.to_owned(),
            Held {
                token: token.to_owned(),
                fence,
                expires: now + ttl,
            },
        );
        if state.held.len() > (state.swept_at * 2).max(1024) {
            state.held.retain(|_, h| h.expires > now);
            state.swept_at = state.held.len();
        }
        Attempt::Acquired(fence)
    }

    pub(super) fn extend(&self, name: &str, token: &str, ttl: Duration) -> Option<u64> {
        let now = Instant::now();
        let mut state = self.state();
        let held = state.held.get_mut(name)?;
        if held.token != token || held.expires <= now {
            return None;
        }
        held.expires = now + ttl;
        Some(held.fence)
    }

    pub(super) fn release(&self, name: &str, token: &str) -> bool {
        let now = Instant::now();
        let mut state = self.state();
        let owned = state
            .held
            .get(name)
            .is_some_and(|h| h.token == token && h.expires > now);
        if owned {
            state.held.remove(name);
            drop(state);
            let _ = self.released.send(name.to_owned());
        }
        owned
    }
}
