//! The `doctor` block: the thresholds of `blinkchamber doctor` and `/v1/diagnostics`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::load::{ConfigError, invalid};
use super::types::duration;

/// The `doctor` block. Shares are fractions (`0.8` is 80 %).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DoctorConfig {
    /// How often `serve` runs the checks in the background to keep the
    /// `blinkchamber_doctor_check` gauges current (`0s`: only when `/v1/diagnostics` is
    /// called).
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Used memory over `maxmemory` from which `memory.used` warns.
    pub memory_warn: f64,
    /// Used memory over `maxmemory` from which `memory.used` fails.
    pub memory_fail: f64,
    /// `mem_fragmentation_ratio` above which `memory.fragmentation` warns (past 64 MiB
    /// used: small instances always look fragmented).
    pub fragmentation_warn: f64,
    /// Connected clients over `maxclients` from which `load.clients` warns.
    pub clients_warn: f64,
    /// A slow-log entry at least this slow makes `load.slowlog` warn.
    #[serde(with = "duration")]
    pub slow_command: Duration,
    /// A replica whose last ack is this old makes its check warn.
    #[serde(with = "duration")]
    pub replica_lag: Duration,
    /// The oldest waiting event this old makes its queue's check warn.
    #[serde(with = "duration")]
    pub queue_age: Duration,
    /// This host's clock this far from Redis's makes `process.clock` warn.
    #[serde(with = "duration")]
    pub clock_offset: Duration,
    /// A Redis server certificate expiring within this makes `tls.expiry` warn.
    #[serde(with = "duration")]
    pub tls_expiry: Duration,
}

impl Default for DoctorConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            memory_warn: 0.80,
            memory_fail: 0.95,
            fragmentation_warn: 1.5,
            clients_warn: 0.80,
            slow_command: Duration::from_millis(100),
            replica_lag: Duration::from_secs(10),
            queue_age: Duration::from_secs(300),
            clock_offset: Duration::from_millis(500),
            tls_expiry: Duration::from_secs(14 * 24 * 3600),
        }
    }
}

impl DoctorConfig {
    /// Checks of the `doctor` block: shares within 0–1, warn below fail.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for the first problem found.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.interval.is_zero() && self.interval < Duration::from_secs(5) {
            return Err(invalid(
                "doctor.interval",
                "expected 0s (off) or at least 5s: each run reads INFO, the slow log and a \
                 bounded SCAN from every server",
            ));
        }
        for (key, share) in [
            ("doctor.memoryWarn", self.memory_warn),
            ("doctor.memoryFail", self.memory_fail),
            ("doctor.clientsWarn", self.clients_warn),
        ] {
            if share.is_nan() || share <= 0.0 || share > 1.0 {
                return Err(invalid(
                    key,
                    format!(
                        "{share} is not a share: expected more than 0 and at most 1 (0.8 is 80 %)"
                    ),
                ));
            }
        }
        if self.memory_warn > self.memory_fail {
            return Err(invalid(
                "doctor.memoryWarn",
                format!("must not exceed doctor.memoryFail ({})", self.memory_fail),
            ));
        }
        if self.fragmentation_warn.is_nan() || self.fragmentation_warn < 1.0 {
            return Err(invalid(
                "doctor.fragmentationWarn",
                "expected a ratio of at least 1 (1.5 warns at 50 % fragmentation)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_thresholds_are_refused_with_their_key() {
        let refused = |edit: fn(&mut DoctorConfig)| {
            let mut cfg = DoctorConfig::default();
            edit(&mut cfg);
            match cfg.validate().unwrap_err() {
                ConfigError::Invalid { key, .. } => key,
                other => panic!("{other}"),
            }
        };
        assert_eq!(
            refused(|c| c.interval = Duration::from_secs(1)),
            "doctor.interval"
        );
        assert_eq!(refused(|c| c.memory_warn = 1.5), "doctor.memoryWarn");
        assert_eq!(refused(|c| c.memory_warn = 0.99), "doctor.memoryWarn");
        assert_eq!(
            refused(|c| c.fragmentation_warn = 0.5),
            "doctor.fragmentationWarn"
        );
        let off = DoctorConfig {
            interval: Duration::ZERO,
            ..DoctorConfig::default()
        };
        off.validate().unwrap();
        DoctorConfig::default().validate().unwrap();
    }
}
