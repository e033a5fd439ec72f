//! Sessions over HTTP. `POST /v1/sessions` creates; the routes on one session
//! (`/v1/session`, `/v1/session/touch`, `/v1/session/rotate`) take its id in the
//! `Session-Id` header, never in the URL, where proxies and access logs would keep it.
//! `GET|DELETE /v1/sessions?userId=` list or revoke every session of a user; listed
//! sessions are named by handle, and `DELETE /v1/sessions/handles/{handle}` revokes one.
//!
//! An unknown, expired, deleted, rotated-away or revoked id answers the same `404`, so the
//! answer reveals nothing about ids that once existed. A malformed body is a `400
//! invalid-body` naming the field (see [`super::extract`]).

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AppState;
use super::extract::{ApiJson, ApiPath, ApiQuery, whole};
use super::problem::{ApiError, Problem};
use crate::session::{Session, SessionError, SessionInfo, SessionKind};

/// `POST /v1/sessions` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRequest {
    /// Whose session it is: 1 to 256 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub user_id: String,
    /// Application data, any JSON; default `{}`.
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    pub data: Option<Value>,
    /// `user` (default) or `admin`; admin sessions have the stricter `sessions.admin`
    /// timeouts.
    #[serde(default)]
    pub kind: Option<SessionKind>,
}

/// The header that carries a session's id.
pub const SESSION_ID_HEADER: &str = "session-id";

/// The id of the session a request is about, from the `Session-Id` header.
pub struct SessionIdHeader(String);

impl<S: Send + Sync> FromRequestParts<S> for SessionIdHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let value = parts.headers.get(SESSION_ID_HEADER).ok_or_else(|| {
            ApiError::bad_request(
                "missing the Session-Id header: the session's id goes there, never in the URL",
            )
        })?;
        let id = value
            .to_str()
            .map_err(|_| ApiError::bad_request("Session-Id: expected a session id (ASCII)"))?;
        Ok(Self(id.trim().to_owned()))
    }
}

/// `PUT /v1/session` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateRequest {
    /// The new data (replaces the old); any JSON.
    #[schema(value_type = serde_json::Value)]
    pub data: Value,
    /// The version the new data is based on (from the last read); required.
    #[serde(deserialize_with = "whole::u64")]
    #[schema(minimum = 0)]
    pub version: u64,
}

/// `{handle}` of `DELETE /v1/sessions/handles/{handle}`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct HandlePath {
    /// The session's handle, from a list.
    pub handle: String,
}

/// `?userId=` of the per-user routes.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct UserQuery {
    /// The user whose sessions are listed or revoked: 1 to 256 characters, no control
    /// characters.
    #[param(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub user_id: String,
}

/// A live session, as its holder sees it: its id and what a list shows.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionBody {
    /// The id: the session's credential (43 characters, base64url). Send it back in the
    /// `Session-Id` header.
    pub id: String,
    /// Everything else.
    #[serde(flatten)]
    pub session: ListedSession,
}

impl From<Session> for SessionBody {
    fn from(s: Session) -> Self {
        Self {
            id: s.id.clone(),
            session: SessionInfo::from(s).into(),
        }
    }
}

/// A live session as listed: everything but its id.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListedSession {
    /// Names the session in lists and revokes it (`DELETE
    /// /v1/sessions/handles/{handle}`); cannot be used as the id.
    pub handle: String,
    /// Whose session it is.
    pub user_id: String,
    /// `user` or `admin`.
    pub kind: SessionKind,
    /// Application data.
    pub data: Value,
    /// Compare-and-set token for `PUT`; grows by one per update.
    pub version: u64,
    /// RFC 3339 creation time (kept by rotation).
    pub created_at: String,
    /// RFC 3339 absolute end; nothing extends the session past it.
    pub expires_at: String,
    /// RFC 3339 time the session ends unless touched first.
    pub idle_expires_at: String,
}

impl From<SessionInfo> for ListedSession {
    fn from(s: SessionInfo) -> Self {
        let time = |t| humantime::format_rfc3339_millis(t).to_string();
        Self {
            created_at: time(s.created_at),
            expires_at: time(s.expires_at),
            idle_expires_at: time(s.idle_expires_at),
            handle: s.handle,
            user_id: s.user_id,
            kind: s.kind,
            data: s.data,
            version: s.version,
        }
    }
}

/// The live sessions of a user.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionList {
    /// Oldest first.
    pub sessions: Vec<ListedSession>,
}

/// The answer of revoking a user's sessions.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Revoked {
    /// How many sessions were ended.
    pub revoked: usize,
}

/// Create a session.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", operation_id = "createSession",
    security(("bearer" = [])),
    request_body = CreateRequest,
    responses((status = 201, description = "created", body = SessionBody),
              (status = 400, description = "`invalid-body`: missing or bad `userId`, `kind` or `data`", body = Problem),
              (status = 507, description = "`storage-full`: the memory backend is at `memory.maxBytes`", body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateRequest>,
) -> Result<(StatusCode, Json<SessionBody>), ApiError> {
    let data = body
        .data
        .unwrap_or_else(|| Value::Object(Default::default()));
    let session = state
        .runtime
        .sessions()
        .create(&body.user_id, body.kind.unwrap_or_default(), data)
        .await
        .map_err(problem)?;
    Ok((StatusCode::CREATED, Json(session.into())))
}

/// Read a session (does not renew its idle timeout).
#[utoipa::path(get, path = "/v1/session", tag = "sessions", operation_id = "getSession",
    security(("bearer" = [])),
    params(("Session-Id" = String, Header, description = "the session's id")),
    responses((status = 200, description = "the session", body = SessionBody),
              (status = 400, description = "`bad-request`: no `Session-Id` header", body = Problem),
              (status = 404, description = "`not-found`: unknown, expired or revoked", body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    SessionIdHeader(id): SessionIdHeader,
) -> Result<Json<SessionBody>, ApiError> {
    let session = state.runtime.sessions().get(&id).await.map_err(problem)?;
    Ok(Json(session.into()))
}

/// Renew a session's idle timeout (never past its absolute end).
#[utoipa::path(post, path = "/v1/session/touch", tag = "sessions", operation_id = "touchSession",
    security(("bearer" = [])),
    params(("Session-Id" = String, Header, description = "the session's id")),
    responses((status = 200, description = "renewed", body = SessionBody),
              (status = 404, description = "`not-found`: unknown, expired or revoked", body = Problem)))]
pub async fn touch(
    State(state): State<AppState>,
    SessionIdHeader(id): SessionIdHeader,
) -> Result<Json<SessionBody>, ApiError> {
    let session = state.runtime.sessions().touch(&id).await.map_err(problem)?;
    Ok(Json(session.into()))
}

/// Replace a session's data if `version` is still current; the expiry is kept.
#[utoipa::path(put, path = "/v1/session", tag = "sessions", operation_id = "updateSession",
    security(("bearer" = [])),
    params(("Session-Id" = String, Header, description = "the session's id")),
    request_body = UpdateRequest,
    responses((status = 200, description = "updated; the answer has the new version", body = SessionBody),
              (status = 400, description = "`invalid-body`: missing `data` or `version`", body = Problem),
              (status = 404, description = "`not-found`: unknown, expired or revoked", body = Problem),
              (status = 409, description = "`session-version-conflict`: updated concurrently; read again and retry", body = Problem)))]
pub async fn update(
    State(state): State<AppState>,
    SessionIdHeader(id): SessionIdHeader,
    ApiJson(body): ApiJson<UpdateRequest>,
) -> Result<Json<SessionBody>, ApiError> {
    let session = state
        .runtime
        .sessions()
        .update(&id, body.data, body.version)
        .await
        .map_err(problem)?;
    Ok(Json(session.into()))
}

/// Move a session to a new id (on privilege change); the old id stops working at once.
#[utoipa::path(post, path = "/v1/session/rotate", tag = "sessions", operation_id = "rotateSession",
    security(("bearer" = [])),
    params(("Session-Id" = String, Header, description = "the session's id")),
    responses((status = 200, description = "the session under its new id; user, data, version and absolute end are kept", body = SessionBody),
              (status = 404, description = "`not-found`: unknown, expired or revoked", body = Problem)))]
pub async fn rotate(
    State(state): State<AppState>,
    SessionIdHeader(id): SessionIdHeader,
) -> Result<Json<SessionBody>, ApiError> {
    let session = state
        .runtime
        .sessions()
        .rotate(&id)
        .await
        .map_err(problem)?;
    Ok(Json(session.into()))
}

/// End a session (logout).
#[utoipa::path(delete, path = "/v1/session", tag = "sessions", operation_id = "deleteSession",
    security(("bearer" = [])),
    params(("Session-Id" = String, Header, description = "the session's id")),
    responses((status = 204, description = "ended"),
              (status = 404, description = "`not-found`: unknown, expired or revoked", body = Problem)))]
pub async fn delete(
    State(state): State<AppState>,
    SessionIdHeader(id): SessionIdHeader,
) -> Result<StatusCode, ApiError> {
    state
        .runtime
        .sessions()
        .delete(&id)
        .await
        .map_err(problem)?;
    Ok(StatusCode::NO_CONTENT)
}

/// End one session by its handle (from a list), without its id.
#[utoipa::path(delete, path = "/v1/sessions/handles/{handle}", tag = "sessions",
    operation_id = "revokeSessionByHandle", security(("bearer" = [])),
    params(HandlePath),
    responses((status = 204, description = "ended"),
              (status = 404, description = "`not-found`: unknown, expired or revoked", body = Problem)))]
pub async fn revoke(
    State(state): State<AppState>,
    ApiPath(HandlePath { handle }): ApiPath<HandlePath>,
) -> Result<StatusCode, ApiError> {
    state
        .runtime
        .sessions()
        .revoke(&handle)
        .await
        .map_err(problem)?;
    Ok(StatusCode::NO_CONTENT)
}

/// List the live sessions of a user.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", operation_id = "listSessions",
    security(("bearer" = [])),
    params(UserQuery),
    responses((status = 200, description = "the user's live sessions", body = SessionList),
              (status = 400, description = "`bad-request`: missing or bad `userId`", body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<UserQuery>,
) -> Result<Json<SessionList>, ApiError> {
    let sessions = state
        .runtime
        .sessions()
        .list_user(&query.user_id)
        .await
        .map_err(problem)?;
    Ok(Json(SessionList {
        sessions: sessions.into_iter().map(Into::into).collect(),
    }))
}

/// End every session of a user (log out everywhere).
#[utoipa::path(delete, path = "/v1/sessions", tag = "sessions", operation_id = "revokeUserSessions",
    security(("bearer" = [])),
    params(UserQuery),
    responses((status = 200, description = "how many sessions were ended", body = Revoked),
              (status = 400, description = "`bad-request`: missing or bad `userId`", body = Problem)))]
pub async fn revoke_user(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<UserQuery>,
) -> Result<Json<Revoked>, ApiError> {
    let revoked = state
        .runtime
        .sessions()
        .revoke_user(&query.user_id)
        .await
        .map_err(problem)?;
    Ok(Json(Revoked { revoked }))
}

fn problem(e: SessionError) -> ApiError {
    match e {
        SessionError::NotFound => ApiError::not_found(e.to_string()),
        SessionError::VersionConflict { .. } => ApiError::new(
            StatusCode::CONFLICT,
            "session-version-conflict",
            "Session version conflict",
            e.to_string(),
        ),
        SessionError::InvalidUserId(_) => ApiError::bad_request(e.to_string()),
        SessionError::Decode(_) => ApiError::internal(&e),
        SessionError::Backend(b) => b.into(),
        SessionError::StoreFull(full) => full.into(),
    }
}
