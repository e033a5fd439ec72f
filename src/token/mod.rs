//! Tokens issued by ZITADEL: introspection with a cache, and local JWT verification.
//!
//! - [`introspect`] — [`Introspector`]: RFC 7662 introspection at
//!   `{issuer}/oauth/v2/introspect`, active results cached until their `exp` (never past
//!   it, never without it) on the memory or the Redis backend, concurrent lookups of one
//!   token coalesced into one call, eviction by token, by user (`sub`) and by ZITADEL
//!   session (`sid`).
//! - [`logout`] — [`EvictOnLogout`]: an event [`Handler`](crate::events::Handler) that
//!   drops the cached results of a user or session when an `auth.logout` event arrives.
//! - [`jwks`] — the issuer's signing keys (`{issuer}/oauth/v2/keys`), fetched once, kept
//!   for `jwksMaxAge`, refetched on an unknown `kid` at most once per `jwksRefreshMin`.
//! - [`verify`] — [`JwtVerifier`]: signature, `exp`, `nbf`, `iss` and `aud` checks with a
//!   clock-skew allowance; each failure names its [`Reason`].
//!
//! A raw token is a bearer credential: it is never stored, logged or used as a metric
//! label. The cache is keyed by [`token_hash`], its SHA-256.

pub mod introspect;
pub mod jwks;
pub mod logout;
pub mod verify;

use sha2::{Digest, Sha256};

pub use introspect::{IntrospectError, Introspection, Introspector};
pub use jwks::Jwks;
pub use logout::EvictOnLogout;
pub use verify::{JwtVerifier, Reason, VerifyError};

/// Longest token accepted, in bytes (ZITADEL's JWTs are well under 4 KiB).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Lowercase hex SHA-256 of `token`: the only form of a token that is kept anywhere.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// `Ok` for a token worth sending anywhere: non-empty, at most [`MAX_TOKEN_LEN`] bytes,
/// printable ASCII without spaces.
fn check_token(token: &str) -> Result<(), &'static str> {
    if token.is_empty() {
        return Err("the token is empty");
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err("the token is longer than 16 KiB");
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token has characters other than printable ASCII");
    }
    Ok(())
}

/// Seconds since the Unix epoch, as a float (sub-second precision for TTLs).
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_sha256_hex() {
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn tokens_are_checked() {
        assert!(check_token("").is_err());
        assert!(check_token("a b").is_err());
        assert!(check_token(&"a".repeat(MAX_TOKEN_LEN + 1)).is_err());
        assert!(check_token("eyJ.a-b_c.d").is_ok());
    }
}
