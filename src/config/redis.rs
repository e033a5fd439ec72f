//! The `redis` block: where Redis is and how to talk to it.
//!
//! The top-level `redis` block holds the defaults; each capability may override any field
//! in its own `redis` block (`cache.redis.database`, `events.redis.poolSize`, …), as the
//! seeds' Helm values do. Both structs come from one field list so they cannot drift.
//! The checks of an effective block and the `host:port` parser of Sentinel addresses
//! (shared with the topology code) live here too.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::load::{ConfigError, invalid};
use super::secret::SecretSource;
use super::types::{DbIndex, duration};

/// How the master is found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    /// One server at `host:port`.
    #[default]
    Standalone,
    /// Ask the Sentinels in `sentinel.nodes` for the master of `sentinel.masterName`.
    Sentinel,
}

/// The `redis.sentinel` block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SentinelConfig {
    /// The master group name Sentinel monitors (`sentinel monitor <name> …`).
    pub master_name: String,
    /// Sentinel addresses, `host:port`.
    pub nodes: Vec<String>,
    /// ACL user for the Sentinels, if they require one.
    pub username: Option<String>,
    /// Password for the Sentinels (`requirepass` in sentinel.conf), if set.
    pub password: Option<SecretSource>,
}

impl Default for SentinelConfig {
    fn default() -> Self {
        Self {
            master_name: "mymaster".into(),
            nodes: Vec::new(),
            username: None,
            password: None,
        }
    }
}

/// The `redis.tls` block.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Connect with TLS.
    pub enabled: bool,
    /// PEM file of the CA that signed the server certificate (system roots when unset).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `certFile`.
    pub key_file: Option<PathBuf>,
}

macro_rules! redis_fields {
    ($( $(#[$doc:meta])* $field:ident : $ty:ty = $default:expr $(, with $with:literal, $owith:literal)? ;)*) => {
        /// Connection settings for Redis (the top-level `redis` block).
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields, default)]
        pub struct RedisConfig {
            $( $(#[$doc])* $(#[serde(with = $with)])? pub $field: $ty, )*
        }

        impl Default for RedisConfig {
            fn default() -> Self {
                Self { $( $field: $default, )* }
            }
        }

        /// A capability's `redis` block: any field set here replaces the top-level one.
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields, default)]
        pub struct RedisOverrides {
            $( $(#[$doc])* #[serde(skip_serializing_if = "Option::is_none")]
               $(#[serde(with = $owith)])? pub $field: Option<$ty>, )*
        }

        impl RedisConfig {
            /// These settings with every field set in `overrides` replaced.
            pub fn merged(&self, overrides: &RedisOverrides) -> Self {
                Self { $( $field: overrides.$field.clone().unwrap_or_else(|| self.$field.clone()), )* }
            }
        }
    };
}

redis_fields! {
    /// `standalone` or `sentinel`.
    mode: RedisMode = RedisMode::Standalone;
    /// Host of the standalone server (ignored in Sentinel mode).
    host: String = "127.0.0.1".into();
    /// Port of the standalone server.
    port: u16 = 6379;
    /// Sentinel settings, used when `mode: sentinel`.
    sentinel: SentinelConfig = SentinelConfig::default();
    /// ACL user name (Redis 6+), if any.
    username: Option<String> = None;
    /// Password; re-read for every new connection so a rotated file takes effect.
    password: Option<SecretSource> = None;
    /// TLS settings.
    tls: TlsConfig = TlsConfig::default();
    /// Logical database, 0–15.
    database: DbIndex = DbIndex::default();
    /// Most multiplexed connections opened to the master; more are opened only while
    /// the ones open carry many commands in flight.
    pool_size: NonZeroU32 = NonZeroU32::new(10).expect("nonzero");
    /// Retries of a failed command, with exponential backoff, before the error is returned.
    max_retries: u32 = 3;
    /// First retry backoff; doubles per retry up to `maxRetryBackoff`.
    min_retry_backoff: Duration = Duration::from_millis(8), with "duration", "duration::option";
    /// Longest retry backoff.
    max_retry_backoff: Duration = Duration::from_millis(512), with "duration", "duration::option";
    /// Time allowed to open a TCP (and TLS) connection and authenticate.
    dial_timeout: Duration = Duration::from_secs(5), with "duration", "duration::option";
    /// Time allowed for a reply once a command is written.
    read_timeout: Duration = Duration::from_secs(3), with "duration", "duration::option";
    /// Time allowed to write a command; the command deadline is write + read timeout.
    write_timeout: Duration = Duration::from_secs(3), with "duration", "duration::option";
    /// Time a command may wait for a pooled connection to become usable.
    pool_timeout: Duration = Duration::from_secs(4), with "duration", "duration::option";
    /// A connection unused this long is closed and reopened on next use.
    idle_timeout: Duration = Duration::from_secs(300), with "duration", "duration::option";
    /// A connection older than this is replaced (spreads load after topology changes).
    max_conn_age: Duration = Duration::from_secs(1800), with "duration", "duration::option";
    /// Overall deadline of one call, retries and waits for a new master included: past
    /// it the call fails (as "may have run" when a command was already sent). At least
    /// `writeTimeout + readTimeout`, so one attempt can always complete.
    call_timeout: Duration = Duration::from_secs(10), with "duration", "duration::option";
    /// Commands in flight on one pooled connection; when every connection the pool may
    /// open is full, more wait (back-pressure, bounded by `callTimeout`) instead of
    /// queueing without limit.
    max_in_flight: NonZeroU32 = NonZeroU32::new(1000).expect("nonzero");
    /// Start even when the server's `maxmemory-policy` may evict keys (only a warning).
    /// Off: an evicting policy on a server holding locks, sessions, rate limits or event
    /// queues stops start-up, naming the policy.
    allow_evicting_policy: bool = false;
}

impl RedisConfig {
    /// Settings for a standalone server at `host:port`.
    pub fn standalone(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            ..Self::default()
        }
    }

    /// Settings for a Sentinel-managed master.
    pub fn sentinel(master_name: impl Into<String>, nodes: Vec<String>) -> Self {
        Self {
            mode: RedisMode::Sentinel,
            sentinel: SentinelConfig {
                master_name: master_name.into(),
                nodes,
                ..SentinelConfig::default()
            },
            ..Self::default()
        }
    }

    /// Sets the password source.
    pub fn with_password(mut self, password: SecretSource) -> Self {
        self.password = Some(password);
        self
    }

    /// Sets the database.
    pub fn with_database(mut self, database: DbIndex) -> Self {
        self.database = database;
        self
    }

    /// Sets the pool size.
    pub fn with_pool_size(mut self, size: NonZeroU32) -> Self {
        self.pool_size = size;
        self
    }

    /// Sets the retry budget.
    pub fn with_max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Every secret source in this block, with its key path relative to the block.
    pub(crate) fn secrets_mut(&mut self) -> Vec<(&'static str, &mut SecretSource)> {
        let mut out = Vec::new();
        if let Some(p) = self.password.as_mut() {
            out.push(("password", p));
        }
        if let Some(p) = self.sentinel.password.as_mut() {
            out.push(("sentinel.password", p));
        }
        out
    }
}

impl RedisOverrides {
    /// Every secret source in this block, with its key path relative to the block.
    pub(crate) fn secrets_mut(&mut self) -> Vec<(&'static str, &mut SecretSource)> {
        let mut out = Vec::new();
        if let Some(Some(p)) = self.password.as_mut() {
            out.push(("password", p));
        }
        if let Some(s) = self.sentinel.as_mut()
            && let Some(p) = s.password.as_mut()
        {
            out.push(("sentinel.password", p));
        }
        out
    }
}

impl RedisConfig {
    /// Checks of one effective Redis block, named `prefix` in messages (`redis`,
    /// `cache.redis`, `events.redis`): the master's address, deadlines and backoffs,
    /// secrets, TLS files.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for the first problem found.
    pub(super) fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{prefix}.{k}");
        if self.mode == RedisMode::Sentinel {
            if self.sentinel.nodes.is_empty() {
                return Err(invalid(
                    &key("sentinel.nodes"),
                    "at least one `host:port` is required when mode is sentinel",
                ));
            }
            for node in &self.sentinel.nodes {
                parse_host_port(node)
                    .map_err(|m| invalid(&key("sentinel.nodes"), format!("`{node}`: {m}")))?;
            }
            if self.sentinel.master_name.is_empty() {
                return Err(invalid(&key("sentinel.masterName"), "must not be empty"));
            }
        } else if self.host.is_empty() {
            return Err(invalid(&key("host"), "must not be empty"));
        }
        for (k, value) in [
            ("dialTimeout", self.dial_timeout),
            ("readTimeout", self.read_timeout),
            ("writeTimeout", self.write_timeout),
            ("poolTimeout", self.pool_timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(&key(k), "must be above 0s"));
            }
        }
        let attempt = self.write_timeout + self.read_timeout;
        if self.call_timeout < attempt {
            return Err(invalid(
                &key("callTimeout"),
                format!(
                    "{} is shorter than one attempt (writeTimeout + readTimeout = {}): expected at least that",
                    humantime::format_duration(self.call_timeout),
                    humantime::format_duration(attempt)
                ),
            ));
        }
        if self.max_retry_backoff < self.min_retry_backoff {
            return Err(invalid(
                &key("maxRetryBackoff"),
                "must not be shorter than minRetryBackoff",
            ));
        }
        for (k, secret) in self.clone().secrets_mut() {
            secret.read().map_err(|e| invalid(&key(k), e.to_string()))?;
        }
        let tls = &self.tls;
        if tls.enabled {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return Err(invalid(
                    &key("tls.certFile"),
                    "certFile and keyFile must be set together for mutual TLS",
                ));
            }
            for (k, file) in [
                ("tls.caFile", &tls.ca_file),
                ("tls.certFile", &tls.cert_file),
                ("tls.keyFile", &tls.key_file),
            ] {
                if let Some(file) = file {
                    std::fs::read(file).map_err(|e| {
                        invalid(&key(k), format!("cannot read {}: {e}", file.display()))
                    })?;
                }
            }
        }
        Ok(())
    }
}

/// Splits `host:port`.
///
/// # Errors
/// A message saying what was expected.
pub(crate) fn parse_host_port(text: &str) -> Result<(String, u16), String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok((addr.ip().to_string(), addr.port()));
    }
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| "expected host:port".to_owned())?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("invalid port `{port}`: expected 1-65535"))?;
    if host.is_empty() {
        return Err("expected host:port".into());
    }
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_is_checked() {
        assert_eq!(parse_host_port("a:1").unwrap(), ("a".into(), 1));
        assert!(parse_host_port("a").is_err());
        assert!(parse_host_port("a:99999").unwrap_err().contains("99999"));
    }
}
