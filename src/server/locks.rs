//! `/v1/locks/{name}`: acquire (`POST`), extend (`PUT`), release (`DELETE`).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::extract::{ApiDuration, ApiJson, ApiPath};
use super::problem::ApiError;
use super::problem::Problem;
use crate::config::types::duration;
use crate::lock::{Lease, LockError};

/// The `{name}` of the lock routes.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct LockName {
    /// The lock's name: 1 to 256 characters, no control characters.
    #[param(
        min_length = 1,
        max_length = 256,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: String,
}

/// `POST /v1/locks/{name}` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AcquireRequest {
    /// Lease length (`"30s"`); defaults to `locks.defaultTtl`, at most `locks.maxTtl`.
    #[serde(default)]
    pub ttl: Option<ApiDuration>,
    /// How long to wait while another owner holds it (`"5s"`); default `0s`, at most
    /// `locks.maxWait`.
    #[serde(default)]
    pub wait: Option<ApiDuration>,
}

/// `PUT /v1/locks/{name}` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtendRequest {
    /// The owner token from the acquisition.
    pub token: String,
    /// New lease length from now; defaults to `locks.defaultTtl`, at most `locks.maxTtl`.
    #[serde(default)]
    pub ttl: Option<ApiDuration>,
}

/// `DELETE /v1/locks/{name}` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The owner token from the acquisition.
    pub token: String,
}

/// A held lock.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaseBody {
    /// The lock name.
    pub name: String,
    /// Owner token for extend and release.
    pub token: String,
    /// Strictly increasing per name across holders; give it to the protected store.
    pub fencing_token: u64,
    /// RFC 3339 time the lease runs out unless extended.
    pub expires_at: String,
}

impl From<Lease> for LeaseBody {
    fn from(lease: Lease) -> Self {
        Self {
            expires_at: humantime::format_rfc3339_millis(lease.expires_at).to_string(),
            name: lease.name,
            token: lease.token,
            fencing_token: lease.fencing_token,
        }
    }
}

/// Acquire a lock, waiting up to `wait` while it is held.
#[utoipa::path(post, path = "/v1/locks/{name}", tag = "locks", operation_id = "acquireLock",
    security(("bearer" = [])),
    params(LockName),
    request_body = AcquireRequest,
    responses((status = 201, description = "acquired", body = LeaseBody),
              (status = 400, description = "`bad-request`: `ttl` above `locks.maxTtl` or below 1ms, `wait` above `locks.maxWait`", body = Problem),
              (status = 409, description = "`lock-busy`: still held after `wait`", body = Problem)))]
pub async fn acquire(
    State(state): State<AppState>,
    ApiPath(LockName { name }): ApiPath<LockName>,
    ApiJson(body): ApiJson<AcquireRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let cfg = state.runtime.locks().config();
    let ttl = bounded(
        "ttl",
        body.ttl.map_or(cfg.default_ttl, |t| t.0),
        cfg.max_ttl,
        "locks.maxTtl",
    )?;
    let wait = bounded(
        "wait",
        body.wait.map(|w| w.0).unwrap_or_default(),
        cfg.max_wait,
        "locks.maxWait",
    )?;
    let lease = state
        .runtime
        .locks()
        .acquire(&name, ttl, wait)
        .await
        .map_err(lock_error)?;
    Ok((StatusCode::CREATED, Json(LeaseBody::from(lease))))
}

/// Extend a held lock.
#[utoipa::path(put, path = "/v1/locks/{name}", tag = "locks", operation_id = "extendLock",
    security(("bearer" = [])),
    params(LockName),
    request_body = ExtendRequest,
    responses((status = 200, description = "extended", body = LeaseBody),
              (status = 400, description = "`bad-request`: `ttl` above `locks.maxTtl` or below 1ms", body = Problem),
              (status = 409, description = "`lock-not-held`: the lease ran out or the token is not the holder's", body = Problem)))]
pub async fn extend(
    State(state): State<AppState>,
    ApiPath(LockName { name }): ApiPath<LockName>,
    ApiJson(body): ApiJson<ExtendRequest>,
) -> Result<Json<LeaseBody>, ApiError> {
    let cfg = state.runtime.locks().config();
    let ttl = bounded(
        "ttl",
        body.ttl.map_or(cfg.default_ttl, |t| t.0),
        cfg.max_ttl,
        "locks.maxTtl",
    )?;
    let lease = state
        .runtime
        .locks()
        .extend(&name, &body.token, ttl)
        .await
        .map_err(lock_error)?;
    Ok(Json(lease.into()))
}

/// Release a held lock.
#[utoipa::path(delete, path = "/v1/locks/{name}", tag = "locks", operation_id = "releaseLock",
    security(("bearer" = [])),
    params(LockName),
    request_body = ReleaseRequest,
    responses((status = 204, description = "released"),
              (status = 409, description = "`lock-not-held`: the lease ran out or the token is not the holder's", body = Problem)))]
pub async fn release(
    State(state): State<AppState>,
    ApiPath(LockName { name }): ApiPath<LockName>,
    ApiJson(body): ApiJson<ReleaseRequest>,
) -> Result<StatusCode, ApiError> {
    state
        .runtime
        .locks()
        .release(&name, &body.token)
        .await
        .map_err(lock_error)?;
    Ok(StatusCode::NO_CONTENT)
}

fn bounded(field: &str, value: Duration, max: Duration, key: &str) -> Result<Duration, ApiError> {
    if value > max {
        return Err(ApiError::bad_request(format!(
            "{field}: {} is above {key} ({})",
            duration::format(&value),
            duration::format(&max)
        )));
    }
    Ok(value)
}

fn lock_error(e: LockError) -> ApiError {
    match e {
        LockError::Busy { .. } => ApiError::new(
            StatusCode::CONFLICT,
            "lock-busy",
            "Lock busy",
            e.to_string(),
        ),
        LockError::NotHeld { .. } | LockError::Lost { .. } => ApiError::new(
            StatusCode::CONFLICT,
            "lock-not-held",
            "Lock not held",
            e.to_string(),
        ),
        LockError::InvalidName(_) | LockError::InvalidTtl => ApiError::bad_request(e.to_string()),
        LockError::Backend(b) => b.into(),
        LockError::StoreFull(full) => full.into(),
    }
}
