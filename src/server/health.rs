//! `/healthz`, `/readyz` and `/v1/status`.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::AppState;
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
}

/// Version, backend and current Redis master.
#[utoipa::path(get, path = "/v1/status", tag = "operations", operation_id = "getStatus",
    security(("bearer" = [])),
    responses((status = 200, description = "status", body = Status)))]
pub async fn status(State(state): State<AppState>) -> Json<Status> {
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
