//! `/v1/cache/{namespace}/{key}` (`GET`, `PUT`, `DELETE`) and
//! `POST /v1/cache/{namespace}/invalidate`.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::AppState;
use super::problem::{ApiError, ApiJson};
use crate::cache::{CacheError, SetOptions};
use crate::config::types::duration;

/// `PUT /v1/cache/{namespace}/{key}` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutRequest {
    /// Any JSON value.
    #[schema(value_type = Object)]
    pub value: Box<RawValue>,
    /// Time to live (`"10m"`); without it the category's TTL or `cache.ttl.default`.
    #[serde(default, with = "duration::option")]
    #[schema(value_type = Option<String>, example = "10m")]
    pub ttl: Option<Duration>,
    /// TTL category from `cache.ttl.categories`.
    #[serde(default)]
    pub category: Option<String>,
    /// Tags for invalidation by tag.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `POST /v1/cache/{namespace}/invalidate` body: `{"tags": [...]}` or `{"all": true}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvalidateRequest {
    /// Remove the keys set with any of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Remove every key of the namespace.
    #[serde(default)]
    pub all: bool,
}

/// What an invalidation removed.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvalidateResponse {
    /// Keys removed.
    pub removed: u64,
}

/// Read a cached value: `200 {"value": …}` or `404`.
#[utoipa::path(get, path = "/v1/cache/{namespace}/{key}", tag = "cache", security(("bearer" = [])),
    params(("namespace" = String, Path), ("key" = String, Path)),
    responses((status = 200, description = "`{\"value\": …}`"),
              (status = 404, description = "not cached", body = super::problem::Problem)))]
pub async fn get(
    State(state): State<AppState>,
    Path((namespace, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let Some(json) = state
        .runtime
        .cache()
        .get_json(&namespace, &key)
        .await
        .map_err(cache_error)?
    else {
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
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(body),
    )
        .into_response())
}

/// Store a value.
#[utoipa::path(put, path = "/v1/cache/{namespace}/{key}", tag = "cache", security(("bearer" = [])),
    params(("namespace" = String, Path), ("key" = String, Path)),
    request_body = PutRequest,
    responses((status = 204, description = "stored"),
              (status = 413, description = "value larger than server.maxBodyBytes", body = super::problem::Problem)))]
pub async fn put(
    State(state): State<AppState>,
    Path((namespace, key)): Path<(String, String)>,
    ApiJson(body): ApiJson<PutRequest>,
) -> Result<StatusCode, ApiError> {
    if let Some(category) = &body.category
        && !state.config().cache.ttl.categories.contains_key(category)
    {
        return Err(ApiError::bad_request(format!(
            "`category`: no category `{category}` in cache.ttl.categories"
        )));
    }
    let tags: Vec<&str> = body.tags.iter().map(String::as_str).collect();
    let options = SetOptions {
        ttl: body.ttl,
        category: body.category.as_deref(),
        tags: &tags,
    };
    state
        .runtime
        .cache()
        .set_json(
            &namespace,
            &key,
            body.value.get().as_bytes().to_vec(),
            options,
        )
        .await
        .map_err(cache_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a value (here, in Redis and from every instance's memory).
#[utoipa::path(delete, path = "/v1/cache/{namespace}/{key}", tag = "cache", security(("bearer" = [])),
    params(("namespace" = String, Path), ("key" = String, Path)),
    responses((status = 204, description = "removed (or was not cached)")))]
pub async fn delete(
    State(state): State<AppState>,
    Path((namespace, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state
        .runtime
        .cache()
        .remove(&namespace, &key)
        .await
        .map_err(cache_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove every key of a namespace.
#[utoipa::path(post, path = "/v1/cache/{namespace}/invalidate", tag = "cache", security(("bearer" = [])),
    params(("namespace" = String, Path)),
    request_body = InvalidateRequest,
    responses((status = 200, description = "removed", body = InvalidateResponse)))]
pub async fn invalidate(
    State(state): State<AppState>,
    Path(namespace): Path<String>,
    ApiJson(body): ApiJson<InvalidateRequest>,
) -> Result<Json<InvalidateResponse>, ApiError> {
    let removed = match (body.all, body.tags.is_empty()) {
        (true, true) => state
            .runtime
            .cache()
            .clear(&namespace)
            .await
            .map_err(cache_error)?,
        (false, false) => {
            let mut removed = 0;
            for tag in &body.tags {
                removed += state
                    .runtime
                    .cache()
                    .remove_by_tag(&namespace, tag)
                    .await
                    .map_err(cache_error)?;
            }
            removed
        }
        _ => {
            return Err(ApiError::bad_request(
                "expected either `tags` (a non-empty list) or `all: true`",
            ));
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
