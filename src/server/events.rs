//! `/v1/events` (publish, stats, dead letters) and `/v1/ingest/zitadel` (ZITADEL Actions v2
//! event executions, authenticated by their signature instead of a bearer token).

use std::time::SystemTime;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::extract::{ApiJson, ApiPath, ApiQuery, json_body};
use super::openapi::json_schema;
use super::problem::{ApiError, Problem};
use crate::events::dead_letter::DeadLetterFilter;
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
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Most entries to return: 1 to 1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
    /// Position in the whole list (oldest first) to start from; the `Link` header of the
    /// previous page gives it.
    #[param(minimum = 0, maximum = 1_000_000_000)]
    pub offset: Option<u64>,
    /// Only events of exactly this type.
    #[serde(rename = "type")]
    #[param(rename = "type", min_length = 1, max_length = 256)]
    pub event_type: Option<String>,
    /// Only events whose `lasterror` contains this text, ignoring case.
    #[param(min_length = 1, max_length = 256)]
    pub contains: Option<String>,
}

/// Which dead letters a bulk operation applies to (query of `DELETE
/// /v1/events/dead-letter`, body of `POST /v1/events/replay`); nothing given means all.
#[derive(Default, Deserialize, utoipa::IntoParams, utoipa::ToSchema)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FilterQuery {
    /// Only events of exactly this type.
    #[serde(rename = "type")]
    #[param(rename = "type", min_length = 1, max_length = 256)]
    #[schema(rename = "type", min_length = 1, max_length = 256)]
    pub event_type: Option<String>,
    /// Only events whose `lasterror` contains this text, ignoring case.
    #[param(min_length = 1, max_length = 256)]
    #[schema(min_length = 1, max_length = 256)]
    pub contains: Option<String>,
}

/// Longest `type` or `contains` of a dead-letter filter, in characters.
const FILTER_MAX: usize = 256;

fn filter_of(
    event_type: Option<String>,
    contains: Option<String>,
) -> Result<DeadLetterFilter, ApiError> {
    for (name, value) in [("type", &event_type), ("contains", &contains)] {
        if let Some(v) = value {
            let n = v.chars().count();
            if n == 0 || n > FILTER_MAX {
                return Err(ApiError::bad_request(format!(
                    "`{name}` holds {n} characters; expected 1 to {FILTER_MAX}"
                )));
            }
        }
    }
    Ok(DeadLetterFilter {
        event_type,
        error_contains: contains,
    })
}

/// `POST /v1/events/replay` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Replayed {
    /// Dead letters put back in their queues.
    pub replayed: u64,
}

/// `{id}` of the dead-letter routes.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DeadLetterId {
    /// The event's id.
    pub id: String,
}

/// The body of `POST /v1/events`: one CloudEvent or an array of them.
pub struct PublishBody;

impl utoipa::PartialSchema for PublishBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        let known = crate::events::KNOWN_ATTRIBUTES.join("|");
        let event = serde_json::json!({
            "type": "object",
            "description": "A CloudEvents 1.0 event in structured JSON form; `null` is the \
                same as an absent optional attribute. Any other attribute is an extension: a \
                lowercase a-z0-9 name of 1 to 20 characters with a string, number or boolean \
                value (`traceparent` continues a trace).",
            "required": ["specversion", "id", "source", "type"],
            "properties": {
                "specversion": { "type": "string", "enum": ["1.0"] },
                "id": { "type": "string", "minLength": 1 },
                "source": { "type": "string", "minLength": 1 },
                "type": { "type": "string", "minLength": 1,
                    "description": "must be one of `events.types`" },
                "time": { "type": ["string", "null"], "format": "date-time" },
                "datacontenttype": { "type": ["string", "null"], "minLength": 1 },
                "dataschema": { "type": ["string", "null"], "minLength": 1 },
                "subject": { "type": ["string", "null"], "minLength": 1 },
                "data": { "description": "the payload, any JSON" },
                "priority": { "type": ["string", "null"], "enum": ["high", "normal", "low", null] },
                "attempt": { "type": ["integer", "null"], "enum": [0, null],
                    "description": "delivery state, set by the workers: 0 or absent" },
            },
            "patternProperties": {
                format!("^(?!({known})$)[a-z0-9]{{1,20}}$"): {
                    "type": ["string", "number", "boolean", "null"]
                }
            },
            "additionalProperties": false,
        });
        json_schema(serde_json::json!({
            "oneOf": [
                event.clone(),
                { "type": "array", "minItems": 1, "items": event },
            ]
        }))
    }
}

impl utoipa::ToSchema for PublishBody {}

/// A dead letter: the event with `attempt`, `lasterror` and `deadat`.
pub struct DeadLetterBody;

impl utoipa::PartialSchema for DeadLetterBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        json_schema(serde_json::json!({
            "type": "object",
            "description": "The event as published, with the extensions `attempt`                 (deliveries tried), `lasterror` (the last failure) and `deadat` (RFC 3339).",
            "required": ["specversion", "id", "source", "type"],
        }))
    }
}

impl utoipa::ToSchema for DeadLetterBody {}

/// `DELETE /v1/events/dead-letter` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Purged {
    /// Dead letters removed.
    pub purged: u64,
}

fn events_of(state: &AppState) -> Result<&crate::events::Events, ApiError> {
    state.runtime.events().ok_or_else(|| {
        ApiError::feature_disabled(
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
        PublishError::Disabled => {
            ApiError::feature_disabled("events-disabled", "Events disabled", &e.to_string())
                .into_response()
        }
        PublishError::StoreFull(full) => ApiError::from(full).into_response(),
        other => ApiError::unavailable(&other).into_response(),
    }
}

/// One CloudEvent or a non-empty array of them.
fn parse_events(body: &[u8]) -> Result<Vec<Event>, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let parsed = match first {
        Some(b'[') => serde_json::from_slice::<Vec<Event>>(body),
        Some(b'{') => serde_json::from_slice::<Event>(body).map(|e| vec![e]),
        _ => {
            return Err(super::extract::invalid_body(
                "expected a CloudEvent (a JSON object) or an array of them".into(),
            ));
        }
    };
    match parsed {
        Ok(events) if events.is_empty() => Err(super::extract::invalid_body(
            "expected at least one event".into(),
        )),
        Ok(events) => Ok(events),
        Err(e) => Err(super::extract::invalid_body(format!("body: {e}"))),
    }
}

/// Publish one CloudEvent (structured JSON) or an array of them.
#[utoipa::path(post, path = "/v1/events", tag = "events", operation_id = "publishEvents",
    security(("bearer" = [])),
    request_body(content = PublishBody, description = "a CloudEvent or an array of them"),
    responses((status = 202, description = "in the queues", body = Accepted),
        (status = 400, description = "`bad-request`: an event of a type not in `events.types`, or more events than `events.performance.eventBufferSize`; nothing published", body = Problem),
        (status = 503, description = "`buffer-full`: the publish buffer is full; `Retry-After` says when to try again", body = Problem)))]
pub async fn publish(State(state): State<AppState>, request: Request) -> Response {
    let events = match events_of(&state) {
        Ok(e) => e,
        Err(e) => return e.into_response(),
    };
    let body = match json_body(request, &()).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let batch = match parse_events(&body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match events.publisher().try_publish_many(batch).await {
        Ok(ids) => {
            state
                .observed
                .events_published
                .fetch_add(ids.len() as u64, std::sync::atomic::Ordering::Relaxed);
            (
                StatusCode::ACCEPTED,
                Json(Accepted {
                    accepted: ids.len(),
                    ids,
                }),
            )
                .into_response()
        }
        Err(e) => publish_error(e),
    }
}

fn queue_error(e: QueueError) -> ApiError {
    ApiError::unavailable(&e)
}

/// Depth, in-flight, retrying and oldest age per queue, and the dead-letter count.
#[utoipa::path(get, path = "/v1/events/stats", tag = "events", operation_id = "eventStats",
    security(("bearer" = [])),
    responses((status = 200, description = "queue numbers", body = Stats)))]
pub async fn stats(State(state): State<AppState>) -> Result<Json<Stats>, ApiError> {
    let events = events_of(&state)?;
    Ok(Json(events.queues().stats().await.map_err(queue_error)?))
}

/// The dead-letter list, oldest first (each entry is the event with `attempt`,
/// `lasterror` and `deadat`), optionally only the entries of a type or with a text in
/// their last error. One page looks at no more than 10 000 entries; when more may follow,
/// `Link: <…>; rel="next"` gives the next page.
#[utoipa::path(get, path = "/v1/events/dead-letter", tag = "events", operation_id = "listDeadLetters",
    security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, description = "dead letters", body = [DeadLetterBody], headers(
        ("Link" = String, description = "`</v1/events/dead-letter?…&offset=N>; rel=\"next\"` when more may follow")))))]
pub async fn dead_letters(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let events = events_of(&state)?;
    let limit = match query.limit {
        None => 100,
        Some(n @ 1..=1000) => usize::try_from(n).expect("at most 1000"),
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "limit: {n} is out of range; expected 1 to 1000"
            )));
        }
    };
    let offset = match query.offset {
        None => 0,
        Some(n @ 0..=1_000_000_000) => usize::try_from(n).unwrap_or(usize::MAX),
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "offset: {n} is out of range; expected 0 to 1000000000"
            )));
        }
    };
    let filter = filter_of(query.event_type, query.contains)?;
    let page = events
        .queues()
        .dead_letter_page(&filter, offset, limit)
        .await
        .map_err(queue_error)?;
    let mut response = Json(page.entries).into_response();
    if let Some(next) = page.next {
        let mut params = vec![("limit", limit.to_string()), ("offset", next.to_string())];
        params.extend(filter.event_type.map(|t| ("type", t)));
        params.extend(filter.error_contains.map(|c| ("contains", c)));
        if let Ok(query) = serde_urlencoded::to_string(&params)
            && let Ok(link) =
                HeaderValue::from_str(&format!("</v1/events/dead-letter?{query}>; rel=\"next\""))
        {
            response.headers_mut().insert(header::LINK, link);
        }
    }
    Ok(response)
}

/// Put the dead letters of a type, or with a text in their last error (or all of them),
/// back in their queues with attempts reset; unreadable entries stay.
#[utoipa::path(post, path = "/v1/events/replay", tag = "events",
    operation_id = "replayDeadLetters", security(("bearer" = [])),
    request_body = FilterQuery,
    responses((status = 200, description = "how many went back", body = Replayed)))]
pub async fn replay_matching(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<FilterQuery>,
) -> Result<Json<Replayed>, ApiError> {
    let events = events_of(&state)?;
    let filter = filter_of(body.event_type, body.contains)?;
    let compress = state.config().events.publishing.compression;
    let replayed = events
        .queues()
        .replay_dead_letters(&filter, events.router(), compress)
        .await
        .map_err(queue_error)?;
    Ok(Json(Replayed { replayed }))
}

fn no_dead_letter(id: &str) -> ApiError {
    ApiError::not_found(format!("no dead letter with id `{id}`"))
}

/// One dead letter: the event with `attempt`, `lasterror` and `deadat`.
#[utoipa::path(get, path = "/v1/events/dead-letter/{id}", tag = "events", operation_id = "showDeadLetter",
    security(("bearer" = [])),
    params(DeadLetterId),
    responses((status = 200, description = "the dead letter", body = DeadLetterBody),
        (status = 404, description = "`not-found`: no such dead letter", body = Problem)))]
pub async fn show_dead(
    State(state): State<AppState>,
    ApiPath(DeadLetterId { id }): ApiPath<DeadLetterId>,
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
#[utoipa::path(post, path = "/v1/events/dead-letter/{id}/replay", tag = "events",
    operation_id = "replayDeadLetter", security(("bearer" = [])),
    params(DeadLetterId),
    responses((status = 202, description = "back in its queue", body = Accepted),
        (status = 404, description = "`not-found`: no such dead letter", body = Problem)))]
pub async fn replay(
    State(state): State<AppState>,
    ApiPath(DeadLetterId { id }): ApiPath<DeadLetterId>,
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
#[utoipa::path(delete, path = "/v1/events/dead-letter/{id}", tag = "events",
    operation_id = "deleteDeadLetter", security(("bearer" = [])),
    params(DeadLetterId),
    responses((status = 204, description = "deleted"),
        (status = 404, description = "`not-found`: no such dead letter", body = Problem)))]
pub async fn delete_dead(
    State(state): State<AppState>,
    ApiPath(DeadLetterId { id }): ApiPath<DeadLetterId>,
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

/// Empty the dead-letter list, or delete only the entries of a type or with a text in
/// their last error.
#[utoipa::path(delete, path = "/v1/events/dead-letter", tag = "events",
    operation_id = "purgeDeadLetters", security(("bearer" = [])),
    params(FilterQuery),
    responses((status = 200, description = "how many were removed", body = Purged)))]
pub async fn purge(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<FilterQuery>,
) -> Result<Json<Purged>, ApiError> {
    let events = events_of(&state)?;
    let filter = filter_of(query.event_type, query.contains)?;
    let purged = if filter.is_empty() {
        events.queues().purge_dead().await
    } else {
        events.queues().delete_dead_letters(&filter).await
    }
    .map_err(queue_error)?;
    Ok(Json(Purged { purged }))
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
#[utoipa::path(post, path = "/v1/ingest/zitadel", tag = "events", operation_id = "ingestZitadel",
    params(("ZITADEL-Signature" = String, Header, description = "`t=<unix s>,v1=<hex HMAC-SHA256 of t.body>`")),
    request_body(content = serde_json::Value, description = "ZITADEL event execution body"),
    responses((status = 202, description = "published (accepted 0: type not mapped, ignored)", body = Accepted),
        (status = 400, description = "`bad-request`: a signed body that is not an event execution", body = Problem),
        (status = 401, description = "`bad-signature`: missing, stale or wrong signature", body = Problem),
        (status = 404, description = "`ingest-not-configured`: no `events.zitadel.signingKey`", body = Problem)))]
pub async fn ingest_zitadel(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match ingest(&state, &headers, &body).await {
        Ok(accepted) => {
            state.observed.events_published.fetch_add(
                accepted.accepted as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            (StatusCode::ACCEPTED, Json(accepted)).into_response()
        }
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
    if !headers.contains_key(SIGNATURE_HEADER) {
        return Err(unauthorized_signature(format!("missing {SIGNATURE_HEADER} header")).into());
    }
    let events = events_of(state)?;
    let cfg = &state.config().events.zitadel;
    let Some(watched) = events.zitadel_key() else {
        return Err(ApiError::feature_disabled(
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
