//! `/v1/events` (publish, stats, dead letters) and `/v1/ingest/zitadel` (ZITADEL Actions v2
//! event executions, authenticated by their signature instead of a bearer token).

use std::time::SystemTime;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::problem::ApiError;
use crate::events::{
    ActionsEvent, Event, PublishError, QueueError, SIGNATURE_HEADER, Stats, verify,
};

/// `202` answer of a publish.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    /// Events accepted (in Redis).
    pub accepted: usize,
    /// Their ids, in the order given.
    pub ids: Vec<String>,
}

/// `GET /v1/events/dead-letter` query.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// Most entries to return (default 100, at most 1000).
    pub limit: Option<usize>,
}

fn events_of(state: &AppState) -> Result<&crate::events::Events, ApiError> {
    state.runtime.events().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "events-disabled",
            "Events disabled",
            "event streaming is turned off (events.enabled: false)",
        )
    })
}

fn publish_error(e: PublishError) -> Response {
    match e {
        PublishError::Invalid { .. } | PublishError::TooMany(_) => {
            ApiError::bad_request(e.to_string()).into_response()
        }
        PublishError::Full => {
            let mut response = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "buffer-full",
                "Publish buffer full",
                e.to_string(),
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        PublishError::Disabled => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "events-disabled",
            "Events disabled",
            e.to_string(),
        )
        .into_response(),
        PublishError::StoreFull(full) => ApiError::from(full).into_response(),
        other => ApiError::unavailable(&other).into_response(),
    }
}

/// One CloudEvent or an array of them.
fn parse_events(body: &[u8]) -> Result<Vec<Event>, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let parsed = if first == Some(&b'[') {
        serde_json::from_slice::<Vec<Event>>(body)
    } else {
        serde_json::from_slice::<Event>(body).map(|e| vec![e])
    };
    parsed.map_err(|e| ApiError::bad_request(format!("body: {e}")))
}

/// Publish one CloudEvent (structured JSON) or an array of them.
#[utoipa::path(post, path = "/v1/events", tag = "events", security(("bearer" = [])),
    request_body(content = serde_json::Value, description = "a CloudEvent or an array of them"),
    responses((status = 202, description = "in the queues", body = Accepted),
        (status = 400, description = "an invalid event; nothing published", body = super::problem::Problem),
        (status = 503, description = "buffer full (Retry-After) or backend down", body = super::problem::Problem),
        (status = 507, description = "`storage-full`: the memory backend is at `memory.maxBytes`; nothing published", body = super::problem::Problem)))]
pub async fn publish(State(state): State<AppState>, body: Bytes) -> Response {
    let events = match events_of(&state) {
        Ok(e) => e,
        Err(e) => return e.into_response(),
    };
    let batch = match parse_events(&body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match events.publisher().try_publish_many(batch).await {
        Ok(ids) => (
            StatusCode::ACCEPTED,
            Json(Accepted {
                accepted: ids.len(),
                ids,
            }),
        )
            .into_response(),
        Err(e) => publish_error(e),
    }
}

fn queue_error(e: QueueError) -> ApiError {
    ApiError::unavailable(&e)
}

/// Depth, in-flight, retrying and oldest age per queue, and the dead-letter count.
#[utoipa::path(get, path = "/v1/events/stats", tag = "events", security(("bearer" = [])),
    responses((status = 200, description = "queue numbers", body = Stats)))]
pub async fn stats(State(state): State<AppState>) -> Result<Json<Stats>, ApiError> {
    let events = events_of(&state)?;
    Ok(Json(events.queues().stats().await.map_err(queue_error)?))
}

/// The dead-letter list, oldest first (each entry is the event with `attempt`,
/// `lasterror` and `deadat`).
#[utoipa::path(get, path = "/v1/events/dead-letter", tag = "events", security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, description = "dead letters", body = [serde_json::Value])))]
pub async fn dead_letters(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let events = events_of(&state)?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(
        events
            .queues()
            .dead_letters(limit)
            .await
            .map_err(queue_error)?,
    ))
}

fn no_dead_letter(id: &str) -> ApiError {
    ApiError::not_found(format!("no dead letter with id `{id}`"))
}

/// One dead letter: the event with `attempt`, `lasterror` and `deadat`.
#[utoipa::path(get, path = "/v1/events/dead-letter/{id}", tag = "events", security(("bearer" = [])),
    params(("id" = String, Path, description = "event id")),
    responses((status = 200, description = "the dead letter", body = serde_json::Value),
        (status = 404, description = "no such dead letter", body = super::problem::Problem)))]
pub async fn show_dead(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Event>, ApiError> {
    let events = events_of(&state)?;
    match events
        .queues()
        .dead_letter(&id)
        .await
        .map_err(queue_error)?
    {
        Some((_, event)) => Ok(Json(event)),
        None => Err(no_dead_letter(&id)),
    }
}

/// Put a dead letter back in its queue with attempts reset.
#[utoipa::path(post, path = "/v1/events/dead-letter/{id}/replay", tag = "events", security(("bearer" = [])),
    params(("id" = String, Path, description = "event id")),
    responses((status = 202, description = "back in its queue", body = Accepted),
        (status = 404, description = "no such dead letter", body = super::problem::Problem)))]
pub async fn replay(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let events = events_of(&state)?;
    let compress = state.config().events.publishing.compression;
    if !events
        .queues()
        .replay_dead_letter(&id, events.router(), compress)
        .await
        .map_err(queue_error)?
    {
        return Err(no_dead_letter(&id));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            accepted: 1,
            ids: vec![id],
        }),
    ))
}

/// Delete one dead letter.
#[utoipa::path(delete, path = "/v1/events/dead-letter/{id}", tag = "events", security(("bearer" = [])),
    params(("id" = String, Path, description = "event id")),
    responses((status = 204, description = "deleted"),
        (status = 404, description = "no such dead letter", body = super::problem::Problem)))]
pub async fn delete_dead(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let events = events_of(&state)?;
    if events
        .queues()
        .delete_dead_letter(&id)
        .await
        .map_err(queue_error)?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_dead_letter(&id))
    }
}

/// Empty the dead-letter list.
#[utoipa::path(delete, path = "/v1/events/dead-letter", tag = "events", security(("bearer" = [])),
    responses((status = 200, description = "how many were removed", body = serde_json::Value)))]
pub async fn purge(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let events = events_of(&state)?;
    let n = events.queues().purge_dead().await.map_err(queue_error)?;
    Ok(Json(serde_json::json!({ "purged": n })))
}

fn unauthorized_signature(detail: String) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "bad-signature",
        "Bad signature",
        detail,
    )
}

/// A ZITADEL Actions v2 event execution, signed with `ZITADEL-Signature`.
#[utoipa::path(post, path = "/v1/ingest/zitadel", tag = "events",
    request_body(content = serde_json::Value, description = "ZITADEL event execution body"),
    responses((status = 202, description = "published (accepted 0: type not mapped, ignored)", body = Accepted),
        (status = 400, description = "malformed body", body = super::problem::Problem),
        (status = 401, description = "missing, stale or wrong signature", body = super::problem::Problem)))]
pub async fn ingest_zitadel(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match ingest(&state, &headers, &body).await {
        Ok(accepted) => (StatusCode::ACCEPTED, Json(accepted)).into_response(),
        Err(IngestError::Api(e)) => e.into_response(),
        Err(IngestError::Publish(e)) => publish_error(e),
    }
}

enum IngestError {
    Api(ApiError),
    Publish(PublishError),
}

impl From<ApiError> for IngestError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

async fn ingest(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Accepted, IngestError> {
    let events = events_of(state)?;
    let cfg = &state.config().events.zitadel;
    let Some(watched) = events.zitadel_key() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ingest-not-configured",
            "ZITADEL ingestion not configured",
            "events.zitadel.signingKey is not set, so no request can be verified",
        )
        .into());
    };
    let key = watched.get();
    let header = match headers.get(SIGNATURE_HEADER) {
        Some(v) => Some(v.to_str().map_err(|_| {
            unauthorized_signature(format!("{SIGNATURE_HEADER}: not visible ASCII"))
        })?),
        None => None,
    };
    verify(
        header,
        body,
        key.expose().as_bytes(),
        cfg.tolerance,
        SystemTime::now(),
    )
    .map_err(|e| unauthorized_signature(e.to_string()))?;
    let execution = ActionsEvent::parse(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let Some(ours) = events.type_map().map(&execution.event_type) else {
        metrics::counter!("blinkchamber_zitadel_ignored_total").increment(1);
        tracing::debug!(r#type = %execution.event_type, "events: unmapped ZITADEL event ignored");
        return Ok(Accepted {
            accepted: 0,
            ids: Vec::new(),
        });
    };
    let event = execution.to_event(ours, &cfg.source);
    let ids = if cfg.dedup_window.is_zero() {
        events
            .publisher()
            .try_publish_many(vec![event])
            .await
            .map_err(IngestError::Publish)?
    } else {
        let (id, stored) = events
            .publisher()
            .publish_once(event, cfg.dedup_window.max(cfg.tolerance.saturating_mul(2)))
            .await
            .map_err(IngestError::Publish)?;
        if !stored {
            // Acknowledged, so ZITADEL stops redelivering; nothing stored twice.
            metrics::counter!("blinkchamber_zitadel_duplicates_total").increment(1);
            tracing::debug!(%id, "events: ZITADEL execution already ingested; not stored again");
        }
        vec![id]
    };
    metrics::counter!("blinkchamber_zitadel_ingested_total").increment(1);
    Ok(Accepted {
        accepted: ids.len(),
        ids,
    })
}
