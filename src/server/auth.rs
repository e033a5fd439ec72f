//! Bearer-token authentication of `/v1`.
//!
//! Tokens live in a file (one per line, `#` comments), written by the Vault agent and
//! re-read when it changes. Tokens are kept and compared as SHA-256 digests, so the
//! comparison time says nothing about how much of a guessed token was right.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::problem::ApiError;
use crate::config::{Secret, SecretError, SecretSource, secret::WatchedSecret};

/// How often the token file's modification time is checked.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// The accepted tokens, or nothing when auth is disabled.
#[derive(Clone)]
pub struct Auth {
    inner: Option<Arc<Tokens>>,
}

struct Tokens {
    source: WatchedSecret,
    digests: Mutex<(Option<Secret>, Vec<[u8; 32]>)>,
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
        Ok(Self {
            inner: Some(Arc::new(Tokens {
                source: WatchedSecret::new(source, RELOAD_CHECK)?,
                digests: Mutex::new((None, Vec::new())),
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
        let current = tokens.source.get();
        let mut cache = tokens.digests.lock().unwrap_or_else(|e| e.into_inner());
        if cache.0.as_ref() != Some(&current) {
            let digests = current
                .expose()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(digest)
                .collect();
            *cache = (Some(current), digests);
        }
        let wanted = digest(presented);
        cache.1.contains(&wanted)
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Middleware: rejects requests without an accepted `Authorization: Bearer` token.
pub async fn require_token(State(auth): State<Auth>, request: Request, next: Next) -> Response {
    if !auth.enabled() {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match presented {
        Some(token) if auth.accepts(token) => next.run(request).await,
        Some(_) => unauthorized("the bearer token is not accepted"),
        None => unauthorized("an `Authorization: Bearer <token>` header is required"),
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
