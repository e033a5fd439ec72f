//! Server-side sessions: random ids, absolute and idle timeouts, compare-and-set updates,
//! id rotation, and a per-user index to list and revoke every session of a user.
//!
//! A session is found by its id alone; the id is the credential (see [`id`]). Both
//! timeouts are enforced by the store, never by the client: a session ends
//! `absoluteTimeout` after creation however active it is, and `idleTimeout` after its last
//! touch, whichever comes first. Admin sessions are their own [`SessionKind`] with their
//! own, stricter, timeouts. A session that ended, was deleted, rotated away or revoked is
//! indistinguishable from one that never existed: [`SessionError::NotFound`].
//!
//! Updates are compare-and-set on [`Session::version`], so two writers that both read
//! version 3 cannot both write version 4: the second gets
//! [`SessionError::VersionConflict`] and must read again. An update keeps the session's
//! expiry; only [`Sessions::touch`] (and rotation) renews the idle timeout.
//!
//! # Examples
//!
//! ```
//! # tokio_test_block_on(async {
//! use blinkchamber::config::SessionsConfig;
//! use blinkchamber::session::{SessionKind, Sessions};
//!
//! let sessions = Sessions::memory(&SessionsConfig::default());
//! let s = sessions.create("user-1", SessionKind::User, serde_json::json!({"cart": 1})).await?;
//! let s = sessions.update(&s.id, serde_json::json!({"cart": 2}), s.version).await?;
//! let rotated = sessions.rotate(&s.id).await?;
//! assert!(sessions.get(&s.id).await.is_err());
//! assert_eq!(sessions.get(&rotated.id).await?.data["cart"], 2);
//! # Ok::<(), blinkchamber::session::SessionError>(())
//! # }).unwrap();
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
//! # }
//! ```

pub mod id;
pub mod layer;
mod memory;
mod record;
mod redis;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::backend::{Backend, BackendError, MemoryBudget, RedisBackend};
use crate::config::{SessionTimeouts, SessionsConfig};

pub use layer::{CurrentSession, SessionCookie, SessionLayer};

/// Longest user id accepted, in characters (JSON Schema's `maxLength`).
pub const MAX_USER_ID_LEN: usize = 256;

/// What a session is for; each kind has its own timeouts (`sessions.user`,
/// `sessions.admin`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    /// An ordinary user session.
    #[default]
    User,
    /// An administrator's session: stricter timeouts.
    Admin,
}

impl SessionKind {
    /// `user` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "user" => Some(Self::User),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// One live session.
#[derive(Clone, PartialEq)]
pub struct Session {
    /// The id: the session's only credential. Keep it secret (`Debug` hides it).
    pub id: String,
    /// The handle: names the session in lists and revokes it ([`Sessions::revoke`]), but
    /// cannot be presented as the id. What the stores keep instead of the id.
    pub handle: String,
    /// Whose session it is.
    pub user_id: String,
    /// User or admin.
    pub kind: SessionKind,
    /// Application data (any JSON).
    pub data: Value,
    /// Starts at 1 and grows by one with every update; the compare-and-set token.
    pub version: u64,
    /// When the session was created (a rotated session keeps the original time).
    pub created_at: SystemTime,
    /// The absolute end: no touch extends the session past it.
    pub expires_at: SystemTime,
    /// When the session ends unless touched first (never after `expires_at`).
    pub idle_expires_at: SystemTime,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &"<redacted>")
            .field("handle", &self.handle)
            .field("user_id", &self.user_id)
            .field("kind", &self.kind)
            .field("data", &self.data)
            .field("version", &self.version)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .field("idle_expires_at", &self.idle_expires_at)
            .finish()
    }
}

/// A live session as listed: everything but the id.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionInfo {
    /// Names the session; [`Sessions::revoke`] ends it. Not usable as its id.
    pub handle: String,
    /// Whose session it is.
    pub user_id: String,
    /// User or admin.
    pub kind: SessionKind,
    /// Application data (any JSON).
    pub data: Value,
    /// The compare-and-set version.
    pub version: u64,
    /// When the session was created.
    pub created_at: SystemTime,
    /// The absolute end.
    pub expires_at: SystemTime,
    /// When the session ends unless touched first.
    pub idle_expires_at: SystemTime,
}

impl From<Session> for SessionInfo {
    fn from(s: Session) -> Self {
        Self {
            handle: s.handle,
            user_id: s.user_id,
            kind: s.kind,
            data: s.data,
            version: s.version,
            created_at: s.created_at,
            expires_at: s.expires_at,
            idle_expires_at: s.idle_expires_at,
        }
    }
}

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No live session has this id: unknown, expired, deleted, rotated away or revoked.
    #[error("no such session (unknown, expired or revoked)")]
    NotFound,
    /// The update was based on an older version; read the session again and retry.
    #[error("session was updated concurrently: expected version {expected}, current is {current}")]
    VersionConflict {
        /// The version the update was based on.
        expected: u64,
        /// The version now stored.
        current: u64,
    },
    /// The user id is empty, too long or has control characters.
    #[error("invalid userId: {0}")]
    InvalidUserId(String),
    /// Stored data could not be read back (written by something else).
    #[error("stored session is malformed: {0}")]
    Decode(String),
    /// Redis failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The memory backend has no room for new state (`memory.maxBytes`).
    #[error(transparent)]
    StoreFull(#[from] crate::backend::Full),
}

/// What a store answers for a rotation.
pub(crate) enum Rotated {
    /// Moved; the session under its new handle.
    Done(Box<Session>),
    /// No live session.
    Missing,
    /// The new handle is taken (a 256-bit collision: try another id).
    Taken,
}

/// What a store answers for an update.
pub(crate) enum Updated {
    /// Written; the new state.
    Done(Session),
    /// No live session.
    Missing,
    /// The stored version differs.
    Conflict(u64),
}

enum Store {
    Memory(memory::MemorySessions),
    Redis(Box<redis::RedisSessions>),
}

/// Sessions on the memory or Redis backend. Cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    config: SessionsConfig,
}

impl Sessions {
    /// Sessions on the backend the config names.
    pub fn from_config(cfg: &SessionsConfig, backend: &Backend) -> Self {
        match backend {
            Backend::Memory(budget) => Self::memory_in(cfg, budget.clone()),
            Backend::Redis(r) => Self::redis(cfg, r.default.clone()),
        }
    }

    /// In-process sessions (single instance, lost on restart). Time is Tokio's clock, so
    /// tests can pause and advance it.
    pub fn memory(cfg: &SessionsConfig) -> Self {
        Self::memory_in(cfg, MemoryBudget::default())
    }

    /// In-process sessions counted against `budget` (shared with the other stores of the
    /// memory backend).
    pub fn memory_in(cfg: &SessionsConfig, budget: MemoryBudget) -> Self {
        Self::with_store(cfg, Store::Memory(memory::MemorySessions::new(budget)))
    }

    /// Sessions in Redis, under `cfg.key_prefix`.
    pub fn redis(cfg: &SessionsConfig, backend: RedisBackend) -> Self {
        let store = Store::Redis(Box::new(redis::RedisSessions::new(
            backend,
            &cfg.key_prefix,
        )));
        Self::with_store(cfg, store)
    }

    fn with_store(cfg: &SessionsConfig, store: Store) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                config: cfg.clone(),
            }),
        }
    }

    /// The settings these sessions were built with.
    pub fn config(&self) -> &SessionsConfig {
        &self.inner.config
    }

    /// The timeouts of `kind`.
    pub fn timeouts(&self, kind: SessionKind) -> SessionTimeouts {
        match kind {
            SessionKind::User => self.inner.config.user,
            SessionKind::Admin => self.inner.config.admin,
        }
    }

    /// Creates a session for `user_id` with a fresh random id. A user already at
    /// `sessions.maxPerUser` live sessions first loses the ones closest to their absolute
    /// end.
    ///
    /// # Errors
    /// [`SessionError::InvalidUserId`]; Redis errors.
    pub async fn create(
        &self,
        user_id: &str,
        kind: SessionKind,
        data: Value,
    ) -> Result<Session, SessionError> {
        check_user_id(user_id)?;
        let t = self.timeouts(kind);
        let max = self.inner.config.max_per_user.get();
        let session = loop {
            let id = id::new_id();
            let handle = id::handle(&id);
            let created = match &self.inner.store {
                Store::Memory(m) => m.create(&handle, user_id, kind, data.clone(), t, max)?,
                Store::Redis(r) => r.create(&handle, user_id, kind, &data, t, max).await?,
            };
            // `None`: the handle is taken (a 256-bit collision); draw again.
            if let Some(session) = created {
                break with_id(session, id);
            }
        };
        metrics::counter!("blinkchamber_sessions_created_total", "kind" => kind.as_str())
            .increment(1);
        Ok(session)
    }

    /// The session `id`, without renewing its idle timeout.
    ///
    /// # Errors
    /// [`SessionError::NotFound`]; Redis errors.
    pub async fn get(&self, id: &str) -> Result<Session, SessionError> {
        self.read(id, false).await
    }

    /// The session `id`, its idle timeout renewed from now (capped by its absolute end).
    /// On Redis a renewal within the renewal step (a hundredth of the idle timeout, at
    /// most one second) of the stored deadline is skipped: the session is answered as
    /// stored.
    ///
    /// # Errors
    /// [`SessionError::NotFound`]; Redis errors.
    pub async fn touch(&self, id: &str) -> Result<Session, SessionError> {
        self.read(id, true).await
    }

    async fn read(&self, id: &str, touch: bool) -> Result<Session, SessionError> {
        if !id::is_well_formed(id) {
            return Err(SessionError::NotFound);
        }
        let handle = id::handle(id);
        let found = match &self.inner.store {
            Store::Memory(m) => m.read(&handle, touch),
            Store::Redis(r) => r.read(&handle, touch).await?,
        };
        found
            .map(|s| with_id(s, id.to_owned()))
            .ok_or(SessionError::NotFound)
    }

    /// Replaces the data of session `id` if its version is still `version`, keeping its
    /// expiry. The answer has the new version.
    ///
    /// # Errors
    /// [`SessionError::VersionConflict`] when another update came first;
    /// [`SessionError::NotFound`]; Redis errors.
    pub async fn update(
        &self,
        id: &str,
        data: Value,
        version: u64,
    ) -> Result<Session, SessionError> {
        if !id::is_well_formed(id) {
            return Err(SessionError::NotFound);
        }
        let handle = id::handle(id);
        let outcome = match &self.inner.store {
            Store::Memory(m) => m.update(&handle, data, version)?,
            Store::Redis(r) => r.update(&handle, data, version).await?,
        };
        match outcome {
            Updated::Done(session) => Ok(with_id(session, id.to_owned())),
            Updated::Missing => Err(SessionError::NotFound),
            Updated::Conflict(current) => {
                metrics::counter!("blinkchamber_session_update_conflicts_total").increment(1);
                Err(SessionError::VersionConflict {
                    expected: version,
                    current,
                })
            }
        }
    }

    /// Moves session `id` to a fresh id, atomically: the old id is dead at once; user,
    /// kind, data, version, creation time and absolute end stay; the idle timeout restarts.
    /// Call it whenever the session's privileges change (login, step-up, role change).
    ///
    /// # Errors
    /// [`SessionError::NotFound`]; Redis errors.
    pub async fn rotate(&self, id: &str) -> Result<Session, SessionError> {
        if !id::is_well_formed(id) {
            return Err(SessionError::NotFound);
        }
        let handle = id::handle(id);
        let session = loop {
            let new_id = id::new_id();
            let new_handle = id::handle(&new_id);
            let rotated = match &self.inner.store {
                Store::Memory(m) => m.rotate(&handle, &new_handle),
                Store::Redis(r) => r.rotate(&handle, &new_handle).await?,
            };
            match rotated {
                Rotated::Done(session) => break with_id(*session, new_id),
                Rotated::Missing => return Err(SessionError::NotFound),
                Rotated::Taken => {}
            }
        };
        metrics::counter!("blinkchamber_sessions_rotated_total").increment(1);
        Ok(session)
    }

    /// Ends session `id` (logout).
    ///
    /// # Errors
    /// [`SessionError::NotFound`] when it was not live; Redis errors.
    pub async fn delete(&self, id: &str) -> Result<(), SessionError> {
        if !id::is_well_formed(id) {
            return Err(SessionError::NotFound);
        }
        self.end(&id::handle(id), "delete").await
    }

    /// Ends the session named by `handle` (from [`Sessions::list_user`] or
    /// [`Session::handle`]): an operator revoking one session without holding its id.
    ///
    /// # Errors
    /// [`SessionError::NotFound`] when it was not live; Redis errors.
    pub async fn revoke(&self, handle: &str) -> Result<(), SessionError> {
        if !id::is_well_formed(handle) {
            return Err(SessionError::NotFound);
        }
        self.end(handle, "revoke").await
    }

    async fn end(&self, handle: &str, how: &'static str) -> Result<(), SessionError> {
        let deleted = match &self.inner.store {
            Store::Memory(m) => m.delete(handle),
            Store::Redis(r) => r.delete(handle).await?,
        };
        if !deleted {
            return Err(SessionError::NotFound);
        }
        metrics::counter!("blinkchamber_sessions_revoked_total", "how" => how).increment(1);
        Ok(())
    }

    /// Every live session of `user_id`, oldest first, named by handle (the ids are not
    /// kept anywhere, so they cannot be listed).
    ///
    /// # Errors
    /// [`SessionError::InvalidUserId`]; Redis errors.
    pub async fn list_user(&self, user_id: &str) -> Result<Vec<SessionInfo>, SessionError> {
        check_user_id(user_id)?;
        let sessions = match &self.inner.store {
            Store::Memory(m) => m.list(user_id),
            Store::Redis(r) => r.list(user_id).await?,
        };
        // The stores answer the handle where a session's id would be.
        let mut sessions: Vec<SessionInfo> = sessions
            .into_iter()
            .map(|s| with_id(s, String::new()).into())
            .collect();
        sessions.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then(a.handle.cmp(&b.handle))
        });
        Ok(sessions)
    }

    /// Ends every session of `user_id` (log out everywhere); answers how many were live.
    ///
    /// # Errors
    /// [`SessionError::InvalidUserId`]; Redis errors.
    pub async fn revoke_user(&self, user_id: &str) -> Result<usize, SessionError> {
        check_user_id(user_id)?;
        let revoked = match &self.inner.store {
            Store::Memory(m) => m.revoke_user(user_id),
            Store::Redis(r) => r.revoke_user(user_id).await?,
        };
        metrics::counter!("blinkchamber_sessions_revoked_total", "how" => "revoke_user")
            .increment(revoked as u64);
        Ok(revoked)
    }
}

/// A session as a store answers it (its handle in `id`) with the id the caller knows.
fn with_id(mut stored: Session, id: String) -> Session {
    stored.handle = std::mem::replace(&mut stored.id, id);
    stored
}

/// Counts sessions found ended by a timeout (best effort: a session that ends unseen is
/// counted when the per-user index is next pruned, or never if the index expires first).
pub(crate) fn record_expired(n: u64) {
    if n > 0 {
        metrics::counter!("blinkchamber_sessions_expired_total").increment(n);
    }
}

/// Counts sessions ended because their user reached `sessions.maxPerUser`.
pub(crate) fn record_evicted(n: u64) {
    if n > 0 {
        metrics::counter!("blinkchamber_sessions_revoked_total", "how" => "limit").increment(n);
    }
}

fn check_user_id(user_id: &str) -> Result<(), SessionError> {
    if user_id.is_empty() {
        return Err(SessionError::InvalidUserId("must not be empty".into()));
    }
    let chars = user_id.chars().count();
    if chars > MAX_USER_ID_LEN {
        return Err(SessionError::InvalidUserId(format!(
            "{chars} characters, expected at most {MAX_USER_ID_LEN}"
        )));
    }
    if user_id.chars().any(char::is_control) {
        return Err(SessionError::InvalidUserId(
            "control characters are not allowed".into(),
        ));
    }
    Ok(())
}

/// Milliseconds in `d`, as the stores count time.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
