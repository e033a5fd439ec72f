//! `/v1/locks/{name}`: acquire (`POST`), extend (`PUT`), release (`DELETE`).

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::problem::{ApiError, ApiJson};
use crate::config::types::duration;
use crate::lock::{Lease, LockError};

/// `POST /v1/locks/{name}` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AcquireRequest {
    /// Lease length (`"30s"`); defaults to `locks.defaultTtl`, at most `locks.maxTtl`.
    #[serde(default, with = "duration::option")]
    #[schema(value_type = Option<String>, example = "30s")]
    pub ttl: Option<Duration>,
    /// How long to wait while another owner holds it (`"5s"`); default `0s`, at most
    /// `locks.maxWait`.
    #[serde(default, with = "duration::option")]
    #[schema(value_type = Option<String>, example = "5s")]
    pub wait: Option<Duration>,
}

/// `PUT /v1/locks/{name}` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtendRequest {
    /// The owner token from the acquisition.
    pub token: String,
    /// New lease length from now; defaults to `locks.defaultTtl`.
    #[serde(default, with = "duration::option")]
    #[schema(value_type = Option<String>, example = "30s")]
    pub ttl: Option<Duration>,
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
#[utoipa::path(post, path = "/v1/locks/{name}", tag = "locks", security(("bearer" = [])),
    params(("name" = String, Path, description = "lock name")),
    request_body = AcquireRequest,
    responses((status = 201, description = "acquired", body = LeaseBody),
              (status = 409, description = "`lock-busy`: still held after `wait`", body = super::problem::Problem),
              (status = 400, description = "bad ttl, wait or name", body = super::problem::Problem),
              (status = 507, description = "`storage-full`: the memory backend is at `memory.maxBytes`", body = super::problem::Problem)))]
pub async fn acquire(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<AcquireRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let cfg = state.runtime.locks().config();
    let ttl = bounded(
        "ttl",
        body.ttl.unwrap_or(cfg.default_ttl),
        cfg.max_ttl,
        "locks.maxTtl",
    )?;
    let wait = bounded(
        "wait",
        body.wait.unwrap_or_default(),
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
#[utoipa::path(put, path = "/v1/locks/{name}", tag = "locks", security(("bearer" = [])),
    params(("name" = String, Path, description = "lock name")),
    request_body = ExtendRequest,
    responses((status = 200, description = "extended", body = LeaseBody),
              (status = 409, description = "`lock-not-held`", body = super::problem::Problem)))]
pub async fn extend(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<ExtendRequest>,
) -> Result<Json<LeaseBody>, ApiError> {
    let cfg = state.runtime.locks().config();
    let ttl = bounded(
        "ttl",
        body.ttl.unwrap_or(cfg.default_ttl),
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
#[utoipa::path(delete, path = "/v1/locks/{name}", tag = "locks", security(("bearer" = [])),
    params(("name" = String, Path, description = "lock name")),
    request_body = ReleaseRequest,
    responses((status = 204, description = "released"),
              (status = 409, description = "`lock-not-held`", body = super::problem::Problem)))]
pub async fn release(
    State(state): State<AppState>,
    Path(name): Path<String>,
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
