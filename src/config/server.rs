//! The `server` block: listeners, authentication and request limits of `blinkchamber serve`,
//! with the block's checks.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::load::{ConfigError, invalid};
use super::secret::SecretSource;
use super::types::duration;

/// The `server` block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the HTTP API (`/v1`, `/healthz`, `/readyz`, `/openapi.json`).
    pub listen: SocketAddr,
    /// Address of the Prometheus `/metrics` listener, kept apart from the API.
    pub metrics_listen: SocketAddr,
    /// Bearer-token authentication of `/v1`.
    pub auth: AuthConfig,
    /// Largest request body accepted; larger bodies get `413`.
    pub max_body_bytes: usize,
    /// How long SIGTERM waits for in-flight requests before exiting anyway.
    #[serde(with = "duration")]
    pub shutdown_timeout: Duration,
    /// The operator console at `/ui`.
    pub console: ConsoleConfig,
}

/// The `server.console` block.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the operator console at `/ui` (its pages call `/v1` with the operator's
    /// token). Off by default.
    pub enabled: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8080).into(),
            metrics_listen: ([127, 0, 0, 1], 9090).into(),
            auth: AuthConfig::default(),
            max_body_bytes: 1024 * 1024,
            shutdown_timeout: Duration::from_secs(30),
            console: ConsoleConfig::default(),
        }
    }
}

/// The `server.auth` block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Require a bearer token on `/v1`. Turning it off is refused on non-loopback listeners.
    pub enabled: bool,
    /// Accepted tokens, one per line (`#` starts a comment); the file is re-read on change.
    pub tokens: Option<SecretSource>,
    /// Tokens that may only read: `GET` routes of `/v1` (the console hides its buttons that
    /// change state); anything else answers `403 read-only-token`. Same format as `tokens`.
    pub read_only_tokens: Option<SecretSource>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            tokens: None,
            read_only_tokens: None,
        }
    }
}

impl ServerConfig {
    /// Checks of the `server` block: auth is on with a readable token file, or off on a
    /// loopback listener only; the body limit is at least one byte.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for the first problem found.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.auth.enabled && self.auth.tokens.is_none() {
            return Err(invalid(
                "server.auth.tokens",
                "required while server.auth.enabled is true (set a token file, or disable \
                 auth explicitly with `server.auth.enabled: false` / `--no-auth` on a loopback \
                 address)",
            ));
        }
        if !self.auth.enabled && !self.listen.ip().is_loopback() {
            return Err(invalid(
                "server.auth.enabled",
                format!(
                    "auth cannot be disabled while listening on non-loopback address {}",
                    self.listen
                ),
            ));
        }
        if self.max_body_bytes == 0 {
            return Err(invalid("server.maxBodyBytes", "expected at least 1 byte"));
        }
        if self.auth.enabled {
            for (key, source) in [
                ("server.auth.tokens", &self.auth.tokens),
                ("server.auth.readOnlyTokens", &self.auth.read_only_tokens),
            ] {
                if let Some(source) = source {
                    source.read().map_err(|e| invalid(key, e.to_string()))?;
                }
            }
        }
        Ok(())
    }
}
