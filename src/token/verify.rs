//! Local JWT verification against the issuer's JWKS.
//!
//! The signature is checked before any claim, so a forged token is reported as a bad
//! signature whatever its claims say. Then `exp` and `nbf` (each with the `clockSkew`
//! allowance), `iss` (the configured issuer) and `aud` (one of the configured audiences);
//! `exp`, `iss` and `aud` are required. Only the configured asymmetric algorithms are
//! accepted, and a key published for one algorithm is never used with another.

use std::str::FromStr;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::check_token;
use super::jwks::{Jwks, KeyError};
use crate::config::TokensConfig;

/// Why a token was rejected; [`Reason::as_str`] is the stable name used in HTTP answers
/// and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// Not a JWT, or a claim of the wrong type, or no `exp`.
    Malformed,
    /// `exp` is in the past (beyond the clock skew).
    Expired,
    /// `nbf` is in the future (beyond the clock skew).
    NotYetValid,
    /// `iss` is missing or not the configured issuer.
    WrongIssuer,
    /// `aud` is missing or names none of the configured audiences.
    WrongAudience,
    /// The signature does not match the key.
    BadSignature,
    /// The `kid` is not in the issuer's JWKS.
    UnknownKey,
    /// The header's `alg` is not in `tokens.jwt.algorithms`.
    DisallowedAlgorithm,
    /// The JWKS could not be fetched (not the token's fault).
    KeysUnavailable,
}

impl Reason {
    /// `malformed`, `expired`, `not-yet-valid`, `wrong-issuer`, `wrong-audience`,
    /// `bad-signature`, `unknown-key`, `disallowed-algorithm`, `keys-unavailable`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Expired => "expired",
            Self::NotYetValid => "not-yet-valid",
            Self::WrongIssuer => "wrong-issuer",
            Self::WrongAudience => "wrong-audience",
            Self::BadSignature => "bad-signature",
            Self::UnknownKey => "unknown-key",
            Self::DisallowedAlgorithm => "disallowed-algorithm",
            Self::KeysUnavailable => "keys-unavailable",
        }
    }
}

/// A rejected token: the reason and a sentence about it (never the token).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {detail}", reason.as_str())]
pub struct VerifyError {
    /// Why.
    pub reason: Reason,
    /// What exactly, for people.
    pub detail: String,
}

impl VerifyError {
    fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// Verifies JWTs issued by the configured issuer. Cheap to clone.
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    jwks: Jwks,
    validation: Validation,
    /// `tokens.jwt.clockSkew`, applied to `exp` and `nbf` to the millisecond.
    skew: std::time::Duration,
}

impl JwtVerifier {
    /// A verifier for `cfg.issuer`, `cfg.jwt.audiences` and `cfg.jwt.algorithms`.
    ///
    /// # Errors
    /// An unknown algorithm name, or an HTTP client that cannot be built.
    pub fn from_config(cfg: &TokensConfig) -> Result<Self, VerifyError> {
        let jwt = &cfg.jwt;
        let algorithms = jwt
            .algorithms
            .iter()
            .map(|a| {
                Algorithm::from_str(a).map_err(|_| {
                    VerifyError::new(
                        Reason::DisallowedAlgorithm,
                        format!("unknown algorithm {a}"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.algorithms = algorithms;
        // exp and nbf are checked below with the skew in milliseconds (the library's
        // leeway is whole seconds).
        validation.leeway = 0;
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let mut issuers = vec![cfg.issuer.clone()];
        if cfg.issuer_base() != cfg.issuer {
            issuers.push(cfg.issuer_base().to_owned());
        }
        validation.set_issuer(&issuers);
        validation.set_audience(&jwt.audiences);
        let jwks = Jwks::from_config(cfg)
            .map_err(|e| VerifyError::new(Reason::KeysUnavailable, e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                jwks,
                validation,
                skew: jwt.clock_skew,
            }),
        })
    }

    /// The token's claims when it is valid now.
    ///
    /// # Errors
    /// [`VerifyError`] with the [`Reason`].
    pub async fn verify(&self, token: &str) -> Result<Map<String, Value>, VerifyError> {
        let verified = self.check(token).await;
        match &verified {
            Ok(_) => {
                metrics::counter!("blinkchamber_token_verifications_total", "result" => "valid")
                    .increment(1)
            }
            Err(e) => {
                metrics::counter!("blinkchamber_token_verifications_total", "result" => "invalid")
                    .increment(1);
                metrics::counter!("blinkchamber_token_verification_failures_total", "reason" => e.reason.as_str())
                    .increment(1);
            }
        }
        verified
    }

    async fn check(&self, token: &str) -> Result<Map<String, Value>, VerifyError> {
        check_token(token).map_err(|m| VerifyError::new(Reason::Malformed, m))?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| VerifyError::new(Reason::Malformed, format!("not a JWT: {e}")))?;
        let inner = &self.inner;
        if !inner.validation.algorithms.contains(&header.alg) {
            return Err(VerifyError::new(
                Reason::DisallowedAlgorithm,
                format!("{:?} is not in tokens.jwt.algorithms", header.alg),
            ));
        }
        let key = inner
            .jwks
            .key(header.kid.as_deref(), header.alg)
            .await
            .map_err(|e| match e {
                KeyError::Unavailable(_) => {
                    VerifyError::new(Reason::KeysUnavailable, e.to_string())
                }
                _ => VerifyError::new(Reason::UnknownKey, e.to_string()),
            })?;
        if let Some(published) = &key.jwk.common.key_algorithm
            && format!("{published:?}") != format!("{:?}", header.alg)
        {
            return Err(VerifyError::new(
                Reason::BadSignature,
                format!(
                    "the key is published for {published:?}, the token says {:?}",
                    header.alg
                ),
            ));
        }
        if key.decoding.family() != header.alg.family() {
            return Err(VerifyError::new(
                Reason::BadSignature,
                format!("the key cannot verify {:?}", header.alg),
            ));
        }
        // The library wants every listed algorithm to fit the key: list only this one
        // (already checked against the configured list above).
        let mut validation = inner.validation.clone();
        validation.algorithms = vec![header.alg];
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| self.explain(e.into_kind()))?;
        self.check_times(&claims)?;
        Ok(claims)
    }

    /// `exp` (required) and `nbf` (when present) against now, allowing `clockSkew`.
    fn check_times(&self, claims: &Map<String, Value>) -> Result<(), VerifyError> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        let skew_ms = self.inner.skew.as_secs_f64() * 1000.0;
        let skew = crate::config::types::duration::format(&self.inner.skew);
        let seconds = |name: &str| -> Result<Option<f64>, VerifyError> {
            match claims.get(name) {
                None => Ok(None),
                Some(v) => v.as_f64().map(Some).ok_or_else(|| {
                    VerifyError::new(Reason::Malformed, format!("{name} is not a number"))
                }),
            }
        };
        match seconds("exp")? {
            Some(exp) if exp * 1000.0 + skew_ms < now_ms => {
                return Err(VerifyError::new(
                    Reason::Expired,
                    format!("exp is in the past ({skew} clock skew allowed)"),
                ));
            }
            Some(_) => {}
            None => return Err(VerifyError::new(Reason::Malformed, "no exp claim")),
        }
        if let Some(nbf) = seconds("nbf")?
            && nbf * 1000.0 - skew_ms > now_ms
        {
            return Err(VerifyError::new(
                Reason::NotYetValid,
                format!("nbf is in the future ({skew} clock skew allowed)"),
            ));
        }
        Ok(())
    }

    fn explain(&self, kind: jsonwebtoken::errors::ErrorKind) -> VerifyError {
        use jsonwebtoken::errors::ErrorKind as K;
        let skew = crate::config::types::duration::format(&self.inner.skew);
        match kind {
            K::InvalidSignature => {
                VerifyError::new(Reason::BadSignature, "the signature does not match the key")
            }
            K::ExpiredSignature => VerifyError::new(
                Reason::Expired,
                format!("exp is in the past ({skew} clock skew allowed)"),
            ),
            K::ImmatureSignature => VerifyError::new(
                Reason::NotYetValid,
                format!("nbf is in the future ({skew} clock skew allowed)"),
            ),
            K::InvalidIssuer => VerifyError::new(Reason::WrongIssuer, "iss is not tokens.issuer"),
            K::InvalidAudience => VerifyError::new(
                Reason::WrongAudience,
                "aud names none of tokens.jwt.audiences",
            ),
            K::MissingRequiredClaim(claim) => match claim.as_str() {
                "iss" => VerifyError::new(Reason::WrongIssuer, "no iss claim"),
                "aud" => VerifyError::new(Reason::WrongAudience, "no aud claim"),
                other => VerifyError::new(Reason::Malformed, format!("no {other} claim")),
            },
            K::InvalidAlgorithm => VerifyError::new(
                Reason::DisallowedAlgorithm,
                "the algorithm is not in tokens.jwt.algorithms",
            ),
            K::InvalidEcdsaKey | K::InvalidRsaKey(_) | K::InvalidKeyFormat => {
                VerifyError::new(Reason::BadSignature, "the key cannot verify this token")
            }
            other => VerifyError::new(Reason::Malformed, format!("{other:?}")),
        }
    }
}
