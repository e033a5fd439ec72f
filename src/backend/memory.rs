//! The memory backend's size budget (`memory.maxBytes`), shared by the stores of one
//! process: sessions, locks, rate-limit keys and event queues.
//!
//! Each store reserves an estimate of what a new piece of state costs (its bytes plus a
//! fixed allowance for the maps and allocations around it) before storing it, and gives
//! it back when the state goes. A reservation that would pass the budget is refused with
//! [`Full`]: the caller refuses the new state and keeps everything already stored. State
//! that only moves or is replaced (an event retried or dead-lettered, a session
//! re-stored under a new id) is [`MemoryBudget::charge`]d without refusal, so nothing
//! accepted is ever lost to the budget.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Bookkeeping allowed per stored item on top of its own bytes: map slots, allocation
/// headers, timestamps.
pub const ITEM_OVERHEAD: usize = 96;

/// Refused: the memory backend holds `memory.maxBytes` already.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the memory backend is full: {used} of memory.maxBytes ({max}) bytes in use; raise \
     memory.maxBytes, let state expire, or use backend: redis"
)]
pub struct Full {
    /// Bytes in use.
    pub used: usize,
    /// The budget.
    pub max: usize,
}

/// A shared byte budget; cheap to clone.
#[derive(Clone, Debug)]
pub struct MemoryBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    max: usize,
    used: AtomicUsize,
    /// A reservation was refused and nothing was released since.
    refused: AtomicBool,
}

impl Default for MemoryBudget {
    /// The default `memory.maxBytes`.
    fn default() -> Self {
        Self::new(crate::config::MemoryConfig::default().max_bytes)
    }
}

impl MemoryBudget {
    /// A budget of `max_bytes`.
    pub fn new(max_bytes: u64) -> Self {
        let max = usize::try_from(max_bytes).unwrap_or(usize::MAX);
        metrics::gauge!("blinkchamber_memory_max_bytes").set(max as f64);
        Self {
            inner: Arc::new(Inner {
                max,
                used: AtomicUsize::new(0),
                refused: AtomicBool::new(false),
            }),
        }
    }

    /// No limit: state kept beside another backend (the Redis limiter's local fallback).
    pub fn unlimited() -> Self {
        Self {
            inner: Arc::new(Inner {
                max: usize::MAX,
                used: AtomicUsize::new(0),
                refused: AtomicBool::new(false),
            }),
        }
    }

    /// Reserves `bytes` for new state, or refuses (reserving nothing) when that would pass
    /// the budget.
    ///
    /// # Errors
    /// [`Full`], counted in `blinkchamber_memory_refused_total`.
    pub fn reserve(&self, bytes: usize) -> Result<(), Full> {
        let max = self.inner.max;
        let reserved = self
            .inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= max)
            });
        match reserved {
            Ok(used) => {
                self.publish(used + bytes);
                Ok(())
            }
            Err(used) => {
                self.inner.refused.store(true, Ordering::Release);
                metrics::counter!("blinkchamber_memory_refused_total").increment(1);
                Err(Full { used, max })
            }
        }
    }

    /// Adds `bytes` without refusing: accepted state that moved or was replaced.
    pub fn charge(&self, bytes: usize) {
        let used = self.inner.used.fetch_add(bytes, Ordering::AcqRel);
        self.publish(used.saturating_add(bytes));
    }

    /// Gives back `bytes` of state that is gone.
    pub fn release(&self, bytes: usize) {
        self.inner.refused.store(false, Ordering::Release);
        let before = self
            .inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(bytes))
            })
            .unwrap_or(0);
        self.publish(before.saturating_sub(bytes));
    }

    /// Bytes in use.
    pub fn used(&self) -> usize {
        self.inner.used.load(Ordering::Acquire)
    }

    /// The budget.
    pub fn max(&self) -> usize {
        self.inner.max
    }

    /// Whether new state fits (`readyz` reports it).
    ///
    /// # Errors
    /// [`Full`] when the last reservation was refused and nothing was released since, or
    /// when less than one item's allowance is left.
    pub fn check(&self) -> Result<(), Full> {
        let (used, max) = (self.used(), self.max());
        if self.inner.refused.load(Ordering::Acquire) || used.saturating_add(ITEM_OVERHEAD) > max {
            return Err(Full { used, max });
        }
        Ok(())
    }

    fn publish(&self, used: usize) {
        if self.inner.max != usize::MAX {
            metrics::gauge!("blinkchamber_memory_used_bytes").set(used as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_past_the_budget_are_refused_and_reserve_nothing() {
        let budget = MemoryBudget::new(1000);
        budget.reserve(600).unwrap();
        let full = budget.reserve(500).unwrap_err();
        assert_eq!(
            full,
            Full {
                used: 600,
                max: 1000
            }
        );
        assert_eq!(budget.used(), 600);
        assert!(budget.check().is_err(), "full after a refusal");
        budget.release(1);
        budget.check().unwrap();
        budget.reserve(399).unwrap();
        assert!(budget.check().is_err(), "no room for one item");
        budget.release(399);
        budget.charge(700);
        assert_eq!(budget.used(), 1299, "a charge is never refused");
        budget.release(5000);
        assert_eq!(budget.used(), 0);
    }
}
