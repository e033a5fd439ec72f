//! The `tokens` block: the ZITADEL issuer, token introspection and local JWT verification.
//!
//! Both halves are off by default, since neither works without an issuer. Introspection
//! results are cached on the `cache.redis` block (they are cache data: losing them costs
//! one more call to the issuer), under their own key prefix.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::load::{ConfigError, invalid};
use super::secret::SecretSource;
use super::types::duration;

/// Signature algorithms a JWKS key may be used with (asymmetric only: a JWKS is public).
pub const JWT_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// The `tokens` block.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TokensConfig {
    /// Base URL of the issuer (`https://zitadel.example.com`): introspection calls
    /// `{issuer}/oauth/v2/introspect`, keys come from `{issuer}/oauth/v2/keys`, and a JWT's
    /// `iss` must equal it.
    pub issuer: String,
    /// Token introspection (RFC 7662) with a cache.
    pub introspection: IntrospectionConfig,
    /// Local JWT verification against the issuer's JWKS.
    pub jwt: JwtConfig,
}

impl TokensConfig {
    /// The same settings with another issuer.
    #[must_use]
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// The issuer without a trailing `/`, to which endpoint paths are appended.
    pub fn issuer_base(&self) -> &str {
        self.issuer.trim_end_matches('/')
    }
}

/// The `tokens.introspection` block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct IntrospectionConfig {
    /// Serve `POST /v1/tokens/introspect` (requires `tokens.issuer` and the client).
    pub enabled: bool,
    /// Client id of the API application that may introspect (HTTP Basic user).
    pub client_id: String,
    /// Its client secret (HTTP Basic password), usually `valueFromFile`.
    pub client_secret: Option<SecretSource>,
    /// Deadline of one call to the issuer.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Longest an active result is cached, even when its `exp` is later.
    #[serde(with = "duration")]
    pub max_ttl: Duration,
    /// Prefix of the cache's Redis keys.
    pub key_prefix: String,
}

impl Default for IntrospectionConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            client_id: String::new(),
            client_secret: None,
            timeout: Duration::from_secs(5),
            max_ttl: Duration::from_secs(300),
            key_prefix: "blinkchamber:token:".into(),
        }
    }
}

impl IntrospectionConfig {
    /// The same settings, enabled, with this client.
    #[must_use]
    pub fn with_client(mut self, client_id: impl Into<String>, secret: SecretSource) -> Self {
        self.enabled = true;
        self.client_id = client_id.into();
        self.client_secret = Some(secret);
        self
    }

    /// The same settings with another key prefix.
    #[must_use]
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// The same settings with another cap on the cache time.
    #[must_use]
    pub fn with_max_ttl(mut self, max_ttl: Duration) -> Self {
        self.max_ttl = max_ttl;
        self
    }
}

/// The `tokens.jwt` block.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct JwtConfig {
    /// Serve `POST /v1/tokens/verify` (requires `tokens.issuer` and `audiences`).
    pub enabled: bool,
    /// Accepted `aud` values; a token must name at least one of them.
    pub audiences: Vec<String>,
    /// Allowance for clocks that disagree, applied to `exp` and `nbf`.
    #[serde(with = "duration")]
    pub clock_skew: Duration,
    /// Least time between two fetches of the JWKS caused by unknown `kid`s, so forged
    /// tokens cannot make us hammer the issuer.
    #[serde(with = "duration")]
    pub jwks_refresh_min: Duration,
    /// How long fetched keys are used before they are fetched again (so retired keys stop
    /// verifying).
    #[serde(with = "duration")]
    pub jwks_max_age: Duration,
    /// How long keys older than `jwksMaxAge` keep verifying while the issuer cannot be
    /// reached; past it verification fails closed (`keys-unavailable`). Refetches while
    /// stale back off from `jwksRefreshMin`, doubling, one at a time.
    #[serde(with = "duration")]
    pub jwks_max_stale: Duration,
    /// Deadline of one JWKS fetch.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Accepted signature algorithms (of [`JWT_ALGORITHMS`]).
    pub algorithms: Vec<String>,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            audiences: Vec::new(),
            clock_skew: Duration::from_secs(60),
            jwks_refresh_min: Duration::from_secs(30),
            jwks_max_age: Duration::from_secs(3600),
            jwks_max_stale: Duration::from_secs(3600),
            timeout: Duration::from_secs(5),
            algorithms: vec!["RS256".into(), "ES256".into()],
        }
    }
}

impl JwtConfig {
    /// The same settings, enabled, accepting these audiences.
    #[must_use]
    pub fn with_audiences<S: Into<String>>(
        mut self,
        audiences: impl IntoIterator<Item = S>,
    ) -> Self {
        self.enabled = true;
        self.audiences = audiences.into_iter().map(Into::into).collect();
        self
    }

    /// The same settings with another least time between JWKS refreshes.
    #[must_use]
    pub fn with_jwks_refresh_min(mut self, min: Duration) -> Self {
        self.jwks_refresh_min = min;
        self
    }

    /// The same settings with another clock-skew allowance.
    #[must_use]
    pub fn with_clock_skew(mut self, skew: Duration) -> Self {
        self.clock_skew = skew;
        self
    }
}

impl TokensConfig {
    /// Checks of the `tokens` block: the issuer, the introspection client and its secret,
    /// deadlines and cache times, audiences and algorithms.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for the first problem found.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let (introspection, jwt) = (&self.introspection, &self.jwt);
        if introspection.enabled || jwt.enabled || !self.issuer.is_empty() {
            check_issuer(&self.issuer).map_err(|m| invalid("tokens.issuer", m))?;
        }
        if introspection.enabled {
            if introspection.client_id.is_empty() {
                return Err(invalid(
                    "tokens.introspection.clientId",
                    "required while tokens.introspection.enabled is true",
                ));
            }
            let Some(secret) = &introspection.client_secret else {
                return Err(invalid(
                    "tokens.introspection.clientSecret",
                    "required while tokens.introspection.enabled is true",
                ));
            };
            secret
                .read()
                .map_err(|e| invalid("tokens.introspection.clientSecret", e.to_string()))?;
        }
        for (key, value) in [
            ("tokens.introspection.timeout", introspection.timeout),
            ("tokens.introspection.maxTtl", introspection.max_ttl),
            ("tokens.jwt.jwksMaxAge", jwt.jwks_max_age),
            ("tokens.jwt.jwksMaxStale", jwt.jwks_max_stale),
            ("tokens.jwt.timeout", jwt.timeout),
        ] {
            if value.is_zero() {
                return Err(invalid(key, "expected more than 0s"));
            }
        }
        if introspection.max_ttl > crate::cache::MAX_TTL {
            return Err(invalid(
                "tokens.introspection.maxTtl",
                "expected at most 366d",
            ));
        }
        if introspection.key_prefix.is_empty() {
            return Err(invalid(
                "tokens.introspection.keyPrefix",
                "must not be empty",
            ));
        }
        if jwt.enabled && jwt.audiences.is_empty() {
            return Err(invalid(
                "tokens.jwt.audiences",
                "at least one audience is required while tokens.jwt.enabled is true",
            ));
        }
        if let Some(i) = jwt.audiences.iter().position(String::is_empty) {
            return Err(invalid(
                &format!("tokens.jwt.audiences[{i}]"),
                "must not be empty",
            ));
        }
        if jwt.clock_skew > Duration::from_secs(600) {
            return Err(invalid("tokens.jwt.clockSkew", "expected at most 10m"));
        }
        if jwt.algorithms.is_empty() {
            return Err(invalid(
                "tokens.jwt.algorithms",
                "expected at least one algorithm",
            ));
        }
        for (i, alg) in jwt.algorithms.iter().enumerate() {
            if !JWT_ALGORITHMS.contains(&alg.as_str()) {
                return Err(invalid(
                    &format!("tokens.jwt.algorithms[{i}]"),
                    format!(
                        "unsupported algorithm `{alg}`: expected one of {}",
                        JWT_ALGORITHMS.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// An `http` or `https` URL with a host and nothing after the path.
fn check_issuer(issuer: &str) -> Result<(), String> {
    if issuer.is_empty() {
        return Err("required while tokens.introspection or tokens.jwt is enabled".into());
    }
    let rest = issuer
        .strip_prefix("https://")
        .or_else(|| issuer.strip_prefix("http://"))
        .ok_or_else(|| format!("`{issuer}` is not an http(s) URL"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || rest.contains(['?', '#', ' ']) {
        return Err(format!(
            "`{issuer}` is not a base URL (expected https://host[:port][/path])"
        ));
    }
    Ok(())
}
