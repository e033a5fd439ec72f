//! The `backend` and `memory` blocks: which store backs every capability, and the size
//! budget of the embedded memory backend.

use serde::{Deserialize, Serialize};

use super::load::{ConfigError, invalid};

/// Which store backs every capability.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// In-process maps: single node, lost on restart. The default, so `serve` runs anywhere.
    #[default]
    Memory,
    /// Redis standalone or behind Sentinel.
    Redis,
}

/// The `memory` block: limits of the embedded memory backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Most bytes the memory backend's sessions, locks, rate-limit keys and event queues
    /// may hold together (estimated: their bytes plus bookkeeping); new state past it is
    /// refused, nothing stored is dropped. The cache's L1 has its own `cache.l1.maxBytes`.
    pub max_bytes: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            max_bytes: 256 << 20,
        }
    }
}

impl MemoryConfig {
    /// Checks of the `memory` block: a budget of at least 1 MiB.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when the budget is smaller.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_bytes < 1 << 20 {
            return Err(invalid(
                "memory.maxBytes",
                format!(
                    "{} is too small: expected at least 1048576 (1 MiB)",
                    self.max_bytes
                ),
            ));
        }
        Ok(())
    }
}
