//! Bearer-token authentication of `/v1`.
//!
//! Tokens live in a file (one per line, `#` comments), written by the Vault agent and
//! re-read when it changes. Tokens are kept and compared as SHA-256 digests, so the
//! comparison time says nothing about how much of a guessed token was right.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::problem::ApiError;
use crate::config::{Secret, SecretError, SecretSource, secret::WatchedSecret};

/// How often the token file's modification time is checked.
const RELOAD_CHECK: Duration = Duration::from_secs(1);
const RELOAD_CHECK_MS: u64 = 1000;

/// The accepted tokens, or nothing when auth is disabled.
#[derive(Clone)]
pub struct Auth {
    inner: Option<Arc<Tokens>>,
}

struct Tokens {
    source: WatchedSecret,
    started: Instant,
    /// Milliseconds after `started` when the source is next asked whether it changed;
    /// until then a request only reads `digests`.
    next_check: AtomicU64,
    digests: RwLock<(Secret, Vec<[u8; 32]>)>,
}

impl Auth {
    /// No authentication.
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// Tokens from `source`.
    ///
    /// # Errors
    /// When the source cannot be read now.
    pub fn tokens(source: SecretSource) -> Result<Self, SecretError> {
        let source = WatchedSecret::new(source, RELOAD_CHECK)?;
        let current = source.get();
        let digests = digests_of(&current);
        Ok(Self {
            inner: Some(Arc::new(Tokens {
                source,
                started: Instant::now(),
                next_check: AtomicU64::new(0),
                digests: RwLock::new((current, digests)),
            })),
        })
    }

    /// Whether `/v1` requires a token.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Whether `presented` is one of the configured tokens (always, with auth disabled).
    pub(crate) fn accepts(&self, presented: &str) -> bool {
        let Some(tokens) = &self.inner else {
            return true;
        };
        let now = u64::try_from(tokens.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if now >= tokens.next_check.load(Ordering::Relaxed) {
            tokens
                .next_check
                .store(now.saturating_add(RELOAD_CHECK_MS), Ordering::Relaxed);
            let current = tokens.source.get();
            let stale = tokens.digests.read().unwrap_or_else(|e| e.into_inner()).0 != current;
            if stale {
                let digests = digests_of(&current);
                *tokens.digests.write().unwrap_or_else(|e| e.into_inner()) = (current, digests);
            }
        }
        let wanted = digest(presented);
        tokens
            .digests
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .contains(&wanted)
    }
}

fn digests_of(secret: &Secret) -> Vec<[u8; 32]> {
    secret
        .expose()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(digest)
        .collect()
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The `401` answer unless the request carries an accepted `Authorization: Bearer` token
/// (always `None` with auth disabled).
pub fn refusal(auth: &Auth, headers: &HeaderMap) -> Option<Response> {
    if !auth.enabled() {
        return None;
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match presented {
        Some(token) if auth.accepts(token) => None,
        Some(_) => Some(unauthorized("the bearer token is not accepted")),
        None => Some(unauthorized(
            "an `Authorization: Bearer <token>` header is required",
        )),
    }
}

fn unauthorized(detail: &str) -> Response {
    let mut response = ApiError::unauthorized(detail).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}
