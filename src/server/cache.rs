//! `/v1/cache/{namespace}/{key}` (`GET`, `PUT`, `DELETE`) and
//! `POST /v1/cache/{namespace}/invalidate`.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::AppState;
use super::extract::{ApiDuration, ApiJson, ApiPath};
use super::openapi::json_schema;
use super::problem::{ApiError, Problem};
use crate::cache::{CacheError, SetOptions};

/// JSON Schema of namespaces and tags.
const NAME_PATTERN: &str = "^[A-Za-z0-9_.-]{1,128}$";

/// Most tags one request may name.
pub const MAX_TAGS: usize = 100;

/// `{namespace}/{key}` of the value routes.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ValuePath {
    /// 1 to 128 of `A-Z a-z 0-9 _ - .`.
    #[param(pattern = "^[A-Za-z0-9_.-]{1,128}$")]
    pub namespace: String,
    /// 1 to 1024 characters; not `invalidate`, which is the invalidation route's path
    /// (the library reaches such a key, HTTP does not).
    #[param(
        min_length = 1,
        max_length = 1024,
        pattern = r"^(?!invalidate$)[\s\S]*$"
    )]
    pub key: String,
}

/// `{namespace}` of the invalidation route.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct NamespacePath {
    /// 1 to 128 of `A-Z a-z 0-9 _ - .`.
    #[param(pattern = "^[A-Za-z0-9_.-]{1,128}$")]
    pub namespace: String,
}

/// A tag: 1 to 128 of `A-Z a-z 0-9 _ - .`.
#[derive(Deserialize)]
#[serde(transparent)]
pub struct Tag(pub String);

impl utoipa::PartialSchema for Tag {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        json_schema(serde_json::json!({ "type": "string", "pattern": NAME_PATTERN }))
    }
}

impl utoipa::ToSchema for Tag {}

/// `PUT /v1/cache/{namespace}/{key}` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutRequest {
    /// Any JSON value.
    #[schema(value_type = serde_json::Value)]
    pub value: Box<RawValue>,
    /// Time to live, 1ms to 366d; without it the category's TTL or `cache.ttl.default`.
    #[serde(default)]
    pub ttl: Option<ApiDuration>,
    /// TTL category from `cache.ttl.categories`.
    #[serde(default)]
    pub category: Option<String>,
    /// Tags for invalidation by tag (at most 100).
    #[serde(default)]
    #[schema(max_items = 100)]
    pub tags: Vec<Tag>,
}

/// `POST /v1/cache/{namespace}/invalidate` body: `{"tags": [...]}` or `{"all": true}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvalidateRequest {
    /// Remove the keys set with any of these tags (1 to 100).
    #[serde(default)]
    pub tags: Option<Vec<Tag>>,
    /// `true`: remove every key of the namespace.
    #[serde(default)]
    pub all: Option<bool>,
}

impl utoipa::PartialSchema for InvalidateRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        json_schema(serde_json::json!({
            "description": "Either `tags` or `all: true`.",
            "oneOf": [
                {
                    "type": "object",
                    "required": ["tags"],
                    "additionalProperties": false,
                    "properties": { "tags": {
                        "type": "array", "minItems": 1, "maxItems": MAX_TAGS,
                        "items": { "type": "string", "pattern": NAME_PATTERN },
                        "description": "remove the keys set with any of these tags",
                    } },
                },
                {
                    "type": "object",
                    "required": ["all"],
                    "additionalProperties": false,
                    "properties": { "all": {
                        "type": "boolean", "enum": [true],
                        "description": "remove every key of the namespace",
                    } },
                },
            ],
        }))
    }
}

impl utoipa::ToSchema for InvalidateRequest {}

/// A cached value, as `GET` answers it.
pub struct ValueBody;

impl utoipa::PartialSchema for ValueBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        json_schema(serde_json::json!({
            "type": "object",
            "required": ["value"],
            "properties": { "value": { "description": "the stored JSON value, as it was put" } },
        }))
    }
}

impl utoipa::ToSchema for ValueBody {}

/// What an invalidation removed.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvalidateResponse {
    /// Keys removed.
    pub removed: u64,
}

/// Read a cached value: `200 {"value": …}` or `404`.
#[utoipa::path(get, path = "/v1/cache/{namespace}/{key}", tag = "cache", operation_id = "getCache",
    security(("bearer" = [])),
    params(ValuePath),
    responses((status = 200, description = "the value", body = ValueBody),
              (status = 404, description = "`not-found`: not cached", body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(ValuePath { namespace, key }): ApiPath<ValuePath>,
) -> Result<Response, ApiError> {
    read(&state, &namespace, &key).await
}

async fn read(state: &AppState, namespace: &str, key: &str) -> Result<Response, ApiError> {
    let found = state
        .runtime
        .cache()
        .lookup_json(namespace, key)
        .await
        .map_err(cache_error)?;
    state
        .observed
        .cache_read(namespace, found.as_ref().map(|(_, served)| *served));
    let Some((json, _)) = found else {
        return Err(ApiError::not_found(format!(
            "`{key}` is not cached in namespace `{namespace}`"
        )));
    };
    // `{"value": <stored JSON>}` around the stored bytes, once they are known to be one
    // JSON value (the database may be shared, and `set_json` trusts its caller).
    if serde_json::from_slice::<&RawValue>(&json).is_err() {
        return Err(ApiError::internal(&format!(
            "stored value of `{key}` in `{namespace}` is not JSON"
        )));
    }
    let mut body = Vec::with_capacity(json.len() + 10);
    body.extend_from_slice(b"{\"value\":");
    body.extend_from_slice(&json);
    body.push(b'}');
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Body::from(body),
    )
        .into_response())
}

/// Store a value.
#[utoipa::path(put, path = "/v1/cache/{namespace}/{key}", tag = "cache", operation_id = "putCache",
    security(("bearer" = [])),
    params(ValuePath),
    request_body = PutRequest,
    responses((status = 204, description = "stored"),
              (status = 400, description = "`bad-request`: `ttl` of zero or above 366d, or a `category` not in `cache.ttl.categories`", body = Problem),
              (status = 413, description = "`payload-too-large`: the value is over `cache.maxValueBytes`", body = Problem)))]
pub async fn put(
    State(state): State<AppState>,
    ApiPath(ValuePath { namespace, key }): ApiPath<ValuePath>,
    ApiJson(body): ApiJson<PutRequest>,
) -> Result<StatusCode, ApiError> {
    store(&state, &namespace, &key, body).await
}

async fn store(
    state: &AppState,
    namespace: &str,
    key: &str,
    body: PutRequest,
) -> Result<StatusCode, ApiError> {
    if let Some(category) = &body.category
        && !state.config().cache.ttl.categories.contains_key(category)
    {
        return Err(ApiError::bad_request(format!(
            "`category`: no category `{category}` in cache.ttl.categories"
        )));
    }
    let tags: Vec<&str> = body.tags.iter().map(|t| t.0.as_str()).collect();
    let options = SetOptions {
        ttl: body.ttl.map(|t| t.0),
        category: body.category.as_deref(),
        tags: &tags,
    };
    state
        .runtime
        .cache()
        .set_json(
            namespace,
            key,
            body.value.get().as_bytes().to_vec(),
            options,
        )
        .await
        .map_err(cache_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a value (here, in Redis and from every instance's memory).
#[utoipa::path(delete, path = "/v1/cache/{namespace}/{key}", tag = "cache", security(("bearer" = [])),
    operation_id = "deleteCache",
    params(ValuePath),
    responses((status = 204, description = "removed (or was not cached)")))]
pub async fn delete(
    State(state): State<AppState>,
    ApiPath(ValuePath { namespace, key }): ApiPath<ValuePath>,
) -> Result<StatusCode, ApiError> {
    remove(&state, &namespace, &key).await
}

async fn remove(state: &AppState, namespace: &str, key: &str) -> Result<StatusCode, ApiError> {
    state
        .runtime
        .cache()
        .remove(namespace, key)
        .await
        .map_err(cache_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove every key of a namespace.
#[utoipa::path(post, path = "/v1/cache/{namespace}/invalidate", tag = "cache",
    operation_id = "invalidateCache", security(("bearer" = [])),
    params(NamespacePath),
    request_body = InvalidateRequest,
    responses((status = 200, description = "removed", body = InvalidateResponse)))]
pub async fn invalidate(
    State(state): State<AppState>,
    ApiPath(NamespacePath { namespace }): ApiPath<NamespacePath>,
    ApiJson(body): ApiJson<InvalidateRequest>,
) -> Result<Json<InvalidateResponse>, ApiError> {
    let removed = match (body.all, body.tags) {
        (Some(true), None) => state
            .runtime
            .cache()
            .clear(&namespace)
            .await
            .map_err(cache_error)?,
        (None, Some(tags)) if (1..=MAX_TAGS).contains(&tags.len()) => {
            let mut removed = 0;
            for tag in &tags {
                removed += state
                    .runtime
                    .cache()
                    .remove_by_tag(&namespace, &tag.0)
                    .await
                    .map_err(cache_error)?;
            }
            removed
        }
        _ => {
            return Err(super::extract::invalid_body(format!(
                "expected either `tags` (1 to {MAX_TAGS} tags) or `all: true`"
            )));
        }
    };
    Ok(Json(InvalidateResponse { removed }))
}

fn cache_error(e: CacheError) -> ApiError {
    match e {
        CacheError::InvalidNamespace(_) | CacheError::InvalidKey(_) | CacheError::InvalidTag(_) => {
            ApiError::bad_request(e.to_string())
        }
        // The body's `ttl` field, out of range.
        CacheError::InvalidTtl(_) => ApiError::bad_request(format!("ttl: {e}")),
        // The body's `value` field, over cache.maxValueBytes.
        CacheError::ValueTooLarge { .. } => ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
            format!("value: {e}"),
        ),
        CacheError::Backend(b) => b.into(),
        other => ApiError::internal(&other),
    }
}

/// One namespace's reads through this instance's API since start.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceStats {
    /// The namespace (`(other)`: every namespace beyond the first 1000 seen).
    pub namespace: String,
    /// Answered from this instance's memory.
    pub l1_hits: u64,
    /// Answered from Redis.
    pub l2_hits: u64,
    /// Not cached.
    pub misses: u64,
}

/// `GET /v1/cache/stats` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CacheStats {
    /// Every namespace read through this instance's API, by name.
    pub namespaces: Vec<NamespaceStats>,
}

/// Reads per namespace and level through this instance's API since start (the
/// `blinkchamber_cache_*` metrics count every caller, without namespaces).
#[utoipa::path(get, path = "/v1/cache/stats", tag = "cache", operation_id = "cacheStats",
    security(("bearer" = [])),
    responses((status = 200, description = "reads per namespace", body = CacheStats)))]
pub async fn stats(State(state): State<AppState>) -> Json<CacheStats> {
    let namespaces = state
        .observed
        .cache_reads()
        .into_iter()
        .map(|r| NamespaceStats {
            namespace: r.namespace,
            l1_hits: r.l1_hits,
            l2_hits: r.l2_hits,
            misses: r.misses,
        })
        .collect();
    Json(CacheStats { namespaces })
}
