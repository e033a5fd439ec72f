//! The `locks` block: lease lengths and waits of distributed locks.
//!
//! Locks use the top-level `redis` block; their keys carry their own prefix.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::load::{ConfigError, invalid};
use super::types::duration;

/// The `locks` block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LocksConfig {
    /// Prefix of every lock key in Redis.
    pub key_prefix: String,
    /// Lease length when a request does not give one.
    #[serde(with = "duration")]
    pub default_ttl: Duration,
    /// Longest lease a request may ask for.
    #[serde(with = "duration")]
    pub max_ttl: Duration,
    /// Longest an HTTP request may wait for a held lock.
    #[serde(with = "duration")]
    pub max_wait: Duration,
    /// Longest `with_lock` keeps renewing a lease for its work; then renewal stops, the
    /// work is told through its lost-lease signal, and the lease runs out one TTL later.
    #[serde(with = "duration")]
    pub max_hold: Duration,
}

impl Default for LocksConfig {
    fn default() -> Self {
        Self {
            key_prefix: "blinkchamber:lock:".into(),
            default_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(600),
            max_wait: Duration::from_secs(30),
            max_hold: Duration::from_secs(3600),
        }
    }
}

impl LocksConfig {
    /// Checks of the `locks` block: lease lengths and the longest hold.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for the first problem found.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.default_ttl < Duration::from_millis(1) {
            return Err(invalid("locks.defaultTtl", "expected at least 1ms"));
        }
        if self.max_hold < Duration::from_millis(1) {
            return Err(invalid("locks.maxHold", "expected at least 1ms"));
        }
        if self.default_ttl > self.max_ttl {
            return Err(invalid(
                "locks.defaultTtl",
                format!(
                    "must not exceed locks.maxTtl ({})",
                    duration::format(&self.max_ttl)
                ),
            ));
        }
        Ok(())
    }
}
