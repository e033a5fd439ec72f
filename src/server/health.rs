//! `/healthz`, `/readyz` and `/v1/status`.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use std::sync::atomic::Ordering;

use axum::http::HeaderMap;

use super::AppState;
use super::auth::Access;
use super::problem::ApiError;
use crate::backend::Backend;

/// Liveness and readiness answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", operation_id = "healthz",
    responses((status = 200, description = "alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the backend answers (`PING` on every Redis handle), and the memory backend
/// has room for new state (`memory.maxBytes`).
#[utoipa::path(get, path = "/readyz", tag = "operations", operation_id = "readyz",
    responses((status = 200, description = "ready", body = Health),
              (status = 503, description = "backend unreachable, or the memory backend full (`storage-full`)", body = super::problem::Problem)))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    if let Backend::Memory(budget) = state.runtime.backend() {
        budget.check().map_err(|full| {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "storage-full",
                "Storage full",
                full.to_string(),
            )
        })?;
    }
    state.runtime.backend().ready().await?;
    Ok(Json(Health { status: "ok" }))
}

/// What this instance runs on.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Crate version.
    pub version: &'static str,
    /// `memory` or `redis`.
    pub backend: String,
    /// The Redis master now (`host:port`), for the Redis backend.
    pub master: Option<String>,
    /// How many times the master has changed since start.
    pub master_epoch: Option<u64>,
    /// What the presented token may do: `full`, or `read-only` (only `GET` routes).
    #[schema(example = "full")]
    pub access: &'static str,
    /// When this instance started (RFC 3339).
    pub started_at: String,
    /// The last master change this instance followed (RFC 3339), if any since start.
    pub last_failover: Option<String>,
    /// What this instance's API answered since start.
    pub counters: Counters,
}

/// Counters of this instance's API since start; they only grow, so a rate is the
/// difference of two readings over the time between them.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// `/v1` requests answered.
    pub requests: u64,
    /// `/v1` requests answered with a `4xx` or `5xx` problem.
    pub problems: u64,
    /// Events accepted by `POST /v1/events` and the ZITADEL ingestion.
    pub events_published: u64,
}

/// Version, backend, current Redis master, what the token may do, and this instance's
/// counters.
#[utoipa::path(get, path = "/v1/status", tag = "operations", operation_id = "getStatus",
    security(("bearer" = [])),
    responses((status = 200, description = "status", body = Status)))]
pub async fn status(State(state): State<AppState>, headers: HeaderMap) -> Json<Status> {
    let observed = &state.observed;
    let (master, master_epoch) = match state.runtime.backend() {
        Backend::Memory(_) => (None, None),
        Backend::Redis(r) => {
            let m = r.default.master();
            (Some(m.endpoint.to_string()), Some(m.epoch))
        }
    };
    Json(Status {
        version: env!("CARGO_PKG_VERSION"),
        backend: format!("{:?}", state.runtime.backend().kind()).to_lowercase(),
        master,
        master_epoch,
        access: state
            .auth
            .access_of(&headers)
            .unwrap_or(Access::Full)
            .as_str(),
        started_at: rfc3339(observed.started_at),
        last_failover: observed.last_failover().map(rfc3339),
        counters: Counters {
            requests: observed.requests.load(Ordering::Relaxed),
            problems: observed.problems.load(Ordering::Relaxed),
            events_published: observed.events_published.load(Ordering::Relaxed),
        },
    })
}

/// The checks of `blinkchamber doctor` against this instance's backend, as one report
/// (the same JSON as `doctor --json`); each check is also published as the
/// `blinkchamber_doctor_check{check,status}` gauge.
#[utoipa::path(get, path = "/v1/diagnostics", tag = "operations", operation_id = "getDiagnostics",
    security(("bearer" = [])),
    responses((status = 200, description = "the report; `status` is the worst check", body = crate::doctor::Report)))]
pub async fn diagnostics(State(state): State<AppState>) -> Json<crate::doctor::Report> {
    let mut report = crate::doctor::run(state.config(), &[]).await;
    report.add_process_cache_hits();
    report.record_metrics();
    Json(report)
}

/// `at` as RFC 3339 with milliseconds, in UTC.
pub(super) fn rfc3339(at: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}
