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

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Every route (and every route when auth is disabled).
    Full,
    /// `GET` and `HEAD` only (`server.auth.readOnlyTokens`).
    ReadOnly,
}

impl Access {
    /// `full` or `read-only`, as `/v1/status` says.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::ReadOnly => "read-only",
        }
    }
}

struct Tokens {
    full: TokenFile,
    read_only: Option<TokenFile>,
    started: Instant,
    /// Milliseconds after `started` when the sources are next asked whether they changed;
    /// until then a request only reads the digests.
    next_check: AtomicU64,
}

/// One token file and the digests of its tokens.
struct TokenFile {
    source: WatchedSecret,
    digests: RwLock<(Secret, Vec<[u8; 32]>)>,
}

impl TokenFile {
    fn new(source: SecretSource) -> Result<Self, SecretError> {
        let source = WatchedSecret::new(source, RELOAD_CHECK)?;
        let current = source.get();
        let digests = digests_of(&current);
        Ok(Self {
            source,
            digests: RwLock::new((current, digests)),
        })
    }

    fn refresh(&self) {
        let current = self.source.get();
        let stale = self.digests.read().unwrap_or_else(|e| e.into_inner()).0 != current;
        if stale {
            let digests = digests_of(&current);
            *self.digests.write().unwrap_or_else(|e| e.into_inner()) = (current, digests);
        }
    }

    fn contains(&self, wanted: &[u8; 32]) -> bool {
        self.digests
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .contains(wanted)
    }
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
        Self::with_roles(source, None)
    }

    /// Tokens from `full`, and read-only tokens from `read_only`.
    ///
    /// # Errors
    /// When a source cannot be read now.
    pub fn with_roles(
        full: SecretSource,
        read_only: Option<SecretSource>,
    ) -> Result<Self, SecretError> {
        Ok(Self {
            inner: Some(Arc::new(Tokens {
                full: TokenFile::new(full)?,
                read_only: read_only.map(TokenFile::new).transpose()?,
                started: Instant::now(),
                next_check: AtomicU64::new(0),
            })),
        })
    }

    /// Whether `/v1` requires a token.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// What `presented` may do: `None` when it is not a configured token (always
    /// [`Access::Full`] with auth disabled). A token in both files has full access.
    pub(crate) fn access(&self, presented: &str) -> Option<Access> {
        let Some(tokens) = &self.inner else {
            return Some(Access::Full);
        };
        let now = u64::try_from(tokens.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if now >= tokens.next_check.load(Ordering::Relaxed) {
            tokens
                .next_check
                .store(now.saturating_add(RELOAD_CHECK_MS), Ordering::Relaxed);
            tokens.full.refresh();
            if let Some(read_only) = &tokens.read_only {
                read_only.refresh();
            }
        }
        let wanted = digest(presented);
        if tokens.full.contains(&wanted) {
            Some(Access::Full)
        } else if tokens
            .read_only
            .as_ref()
            .is_some_and(|r| r.contains(&wanted))
        {
            Some(Access::ReadOnly)
        } else {
            None
        }
    }

    /// What the request's bearer token may do (see [`Auth::access`]); `None` without one.
    pub fn access_of(&self, headers: &HeaderMap) -> Option<Access> {
        if !self.enabled() {
            return Some(Access::Full);
        }
        self.access(presented(headers)?)
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

/// The bearer token of `headers`, if any.
fn presented(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// Why a request was not let in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token that is not configured.
    NotAccepted,
}

impl IntoResponse for Refused {
    /// `401` with `WWW-Authenticate: Bearer`.
    fn into_response(self) -> Response {
        match self {
            Self::Missing => unauthorized("an `Authorization: Bearer <token>` header is required"),
            Self::NotAccepted => unauthorized("the bearer token is not accepted"),
        }
    }
}

/// What the request may do, unless it lacks an accepted `Authorization: Bearer` token
/// (always [`Access::Full`] with auth disabled).
///
/// # Errors
/// [`Refused`] when the token is missing or not accepted.
pub fn check(auth: &Auth, headers: &HeaderMap) -> Result<Access, Refused> {
    if !auth.enabled() {
        return Ok(Access::Full);
    }
    match presented(headers) {
        Some(token) => auth.access(token).ok_or(Refused::NotAccepted),
        None => Err(Refused::Missing),
    }
}

/// The `403` answer to a read-only token asking for more than a read.
pub fn read_only_refusal() -> Response {
    ApiError::new(
        axum::http::StatusCode::FORBIDDEN,
        "read-only-token",
        "Read-only token",
        "this token may only read (`GET`); this request changes state",
    )
    .into_response()
}

fn unauthorized(detail: &str) -> Response {
    let mut response = ApiError::unauthorized(detail).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}
