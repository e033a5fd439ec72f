//! The `sessions` block: timeouts per session kind, the Redis key prefix, the cookie.
//!
//! Sessions use the top-level `redis` block, like locks; their keys carry their own prefix.

use std::num::NonZeroU32;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::load::{ConfigError, invalid};
use super::types::duration;

/// The `sessions` block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// Prefix of every session key in Redis.
    pub key_prefix: String,
    /// Most live sessions per user; creating one more first ends the user's sessions
    /// closest to their absolute end. Bounds the work of every per-user operation.
    pub max_per_user: NonZeroU32,
    /// Timeouts of ordinary user sessions.
    pub user: SessionTimeouts,
    /// Timeouts of admin sessions (stricter by default).
    pub admin: SessionTimeouts,
    /// The cookie read by the session layer (`session::SessionLayer`).
    pub cookie: CookieConfig,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            key_prefix: "blinkchamber:session:".into(),
            max_per_user: NonZeroU32::new(100).expect("nonzero"),
            user: SessionTimeouts {
                absolute_timeout: Duration::from_secs(24 * 3600),
                idle_timeout: Duration::from_secs(30 * 60),
            },
            admin: SessionTimeouts {
                absolute_timeout: Duration::from_secs(8 * 3600),
                idle_timeout: Duration::from_secs(15 * 60),
            },
            cookie: CookieConfig::default(),
        }
    }
}

impl SessionsConfig {
    /// The same settings with another key prefix.
    #[must_use]
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// The same settings with another per-user limit.
    #[must_use]
    pub fn with_max_per_user(mut self, max: NonZeroU32) -> Self {
        self.max_per_user = max;
        self
    }

    /// The same settings with other user-session timeouts.
    #[must_use]
    pub fn with_user_timeouts(mut self, absolute: Duration, idle: Duration) -> Self {
        self.user = SessionTimeouts {
            absolute_timeout: absolute,
            idle_timeout: idle,
        };
        self
    }

    /// The same settings with other admin-session timeouts.
    #[must_use]
    pub fn with_admin_timeouts(mut self, absolute: Duration, idle: Duration) -> Self {
        self.admin = SessionTimeouts {
            absolute_timeout: absolute,
            idle_timeout: idle,
        };
        self
    }
}

/// The `sessions.user` and `sessions.admin` blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionTimeouts {
    /// A session ends this long after its creation, however active it is. Rotation keeps
    /// the original end.
    #[serde(with = "duration")]
    pub absolute_timeout: Duration,
    /// A session ends after this long without a touch (never past its absolute end).
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
}

/// The `sessions.cookie` block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CookieConfig {
    /// Cookie name (an RFC 6265 token: no spaces, separators or control characters).
    pub name: String,
    /// Send the cookie over HTTPS only (`Secure`). Turn off for plain-HTTP development only.
    pub secure: bool,
    /// `SameSite` attribute: `strict`, `lax` or `none` (`none` requires `secure`).
    pub same_site: SameSite,
    /// `Path` attribute.
    pub path: String,
    /// `Domain` attribute; unset, the cookie goes back to the issuing host only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

impl Default for CookieConfig {
    fn default() -> Self {
        Self {
            name: "blinkchamber_session".into(),
            secure: true,
            same_site: SameSite::Lax,
            path: "/".into(),
            domain: None,
        }
    }
}

/// The cookie's `SameSite` attribute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SameSite {
    /// Sent on same-site requests only.
    Strict,
    /// Also sent on top-level navigations from other sites.
    #[default]
    Lax,
    /// Sent on cross-site requests too (needs `secure`).
    None,
}

/// The longest timeout: a session's times are stored as 13-digit unix milliseconds
/// (`src/session/record.rs`), which hold any end within ten years of now until 2276.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3650 * 24 * 3600);

impl SessionsConfig {
    /// Checks of the `sessions` block: the timeouts of each kind and the cookie.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for the first problem found.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        use duration::format;
        for (kind, t) in [("user", &self.user), ("admin", &self.admin)] {
            let key = |k: &str| format!("sessions.{kind}.{k}");
            for (k, d) in [
                ("absoluteTimeout", t.absolute_timeout),
                ("idleTimeout", t.idle_timeout),
            ] {
                if d < Duration::from_secs(1) {
                    return Err(invalid(&key(k), "expected at least 1s"));
                }
                if d > MAX_TIMEOUT {
                    return Err(invalid(
                        &key(k),
                        format!("expected at most {}", format(&MAX_TIMEOUT)),
                    ));
                }
            }
            if t.idle_timeout > t.absolute_timeout {
                return Err(invalid(
                    &key("idleTimeout"),
                    format!(
                        "must not exceed sessions.{kind}.absoluteTimeout ({})",
                        format(&t.absolute_timeout)
                    ),
                ));
            }
        }
        let cookie = &self.cookie;
        let separator =
            |c: char| "()<>@,;:\\\"/[]?={} \t".contains(c) || c.is_control() || !c.is_ascii();
        if cookie.name.is_empty() || cookie.name.chars().any(separator) {
            return Err(invalid(
                "sessions.cookie.name",
                "expected a cookie token: letters, digits and `!#$%&'*+-.^_`|~`",
            ));
        }
        if cookie.same_site == SameSite::None && !cookie.secure {
            return Err(invalid(
                "sessions.cookie.sameSite",
                "`none` requires sessions.cookie.secure: true (browsers drop such cookies otherwise)",
            ));
        }
        Ok(())
    }
}
