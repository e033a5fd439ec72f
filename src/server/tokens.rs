//! `/v1/tokens/…`: introspect (cached), drop a cached result, verify a JWT locally.
//!
//! A token arrives in the JSON body, never in the URL, so it stays out of access logs.
//! Errors never echo it. A rejected JWT is a `401 invalid-token` whose detail starts with
//! the reason (`expired: …`, `wrong-audience: …`), so clients can match on the first word.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::AppState;
use super::extract::{ApiJson, invalid_body};
use super::problem::{ApiError, Problem};
use crate::token::{IntrospectError, Introspector, Reason};

/// Header of an introspection answer: `hit` when it came from the cache, else `miss`.
pub const CACHE_HEADER: &str = "x-cache";

/// Body of every token route.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenRequest {
    /// The access token (opaque or JWT), as the client presented it: 1 to 16384 printable
    /// ASCII characters.
    #[schema(pattern = "^[!-~]{1,16384}$")]
    pub token: String,
}

/// A valid JWT.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Verified {
    /// Always `true` (an invalid token is a `401`).
    pub valid: bool,
    /// The token's claims.
    #[schema(value_type = Object)]
    pub claims: Map<String, Value>,
}

/// Introspect a token at the issuer, through the cache.
#[utoipa::path(post, path = "/v1/tokens/introspect", tag = "tokens", operation_id = "introspectToken",
    security(("bearer" = [])),
    request_body = TokenRequest,
    responses((status = 200, description = "the issuer's RFC 7662 answer (`active`, `sub`, `exp`, `scope`, `client_id`, `aud`, …); header `x-cache: hit|miss`", body = Object),
              (status = 400, description = "`invalid-body`: no usable `token`", body = Problem),
              (status = 502, description = "`issuer-unavailable`: the issuer failed or refused us", body = Problem),
              (status = 404, description = "`tokens-disabled`: tokens.introspection.enabled is false", body = Problem)))]
pub async fn introspect(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<TokenRequest>,
) -> Result<Response, ApiError> {
    let introspector = introspector_of(&state)?;
    let answer = introspector
        .introspect(&body.token)
        .await
        .map_err(introspect_problem)?;
    let mut response = Json(answer.response).into_response();
    response.headers_mut().insert(
        HeaderName::from_static(CACHE_HEADER),
        HeaderValue::from_static(if answer.cached { "hit" } else { "miss" }),
    );
    Ok(response)
}

/// Drop the cached introspection of a token (on every instance). The issuer is not told:
/// revoke the token itself at ZITADEL's revocation endpoint.
#[utoipa::path(post, path = "/v1/tokens/revoke", tag = "tokens", operation_id = "revokeToken",
    security(("bearer" = [])),
    request_body = TokenRequest,
    responses((status = 204, description = "no cached result is left"),
              (status = 400, description = "`invalid-body`: no usable `token`", body = Problem),
              (status = 404, description = "`tokens-disabled`: tokens.introspection.enabled is false", body = Problem)))]
pub async fn revoke(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<TokenRequest>,
) -> Result<StatusCode, ApiError> {
    let introspector = introspector_of(&state)?;
    introspector
        .evict(&body.token)
        .await
        .map_err(introspect_problem)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Verify a JWT locally: signature (issuer's JWKS), `exp`, `nbf`, `iss`, `aud`.
#[utoipa::path(post, path = "/v1/tokens/verify", tag = "tokens", operation_id = "verifyToken",
    security(("bearer" = [])),
    request_body = TokenRequest,
    responses((status = 200, description = "valid", body = Verified),
              (status = 400, description = "`invalid-body`: no `token` field", body = Problem),
              (status = 401, description = "`invalid-token`: the detail starts with the reason: `malformed`, `expired`, `not-yet-valid`, `wrong-issuer`, `wrong-audience`, `bad-signature`, `unknown-key`, `disallowed-algorithm`", body = Problem),
              (status = 502, description = "`issuer-unavailable`: the JWKS could not be fetched", body = Problem),
              (status = 404, description = "`tokens-disabled`: tokens.jwt.enabled is false", body = Problem)))]
pub async fn verify(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<TokenRequest>,
) -> Result<Json<Verified>, ApiError> {
    let verifier = state.runtime.verifier().ok_or_else(|| {
        disabled("local JWT verification is turned off (tokens.jwt.enabled: false)")
    })?;
    match verifier.verify(&body.token).await {
        Ok(claims) => Ok(Json(Verified {
            valid: true,
            claims,
        })),
        Err(e) if e.reason == Reason::KeysUnavailable => {
            tracing::warn!(
                error = %e,
                request_id = super::request_id::current().as_deref(),
                "tokens: cannot verify without the issuer's keys"
            );
            Err(issuer_unavailable())
        }
        Err(e) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid-token",
            "Invalid token",
            e.to_string(),
        )),
    }
}

fn introspector_of(state: &AppState) -> Result<&Introspector, ApiError> {
    state.runtime.introspector().ok_or_else(|| {
        disabled("token introspection is turned off (tokens.introspection.enabled: false)")
    })
}

fn disabled(detail: &str) -> ApiError {
    ApiError::feature_disabled("tokens-disabled", "Tokens disabled", detail)
}

fn issuer_unavailable() -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "issuer-unavailable",
        "Issuer unavailable",
        "the token issuer could not be asked; retry later",
    )
}

fn introspect_problem(e: IntrospectError) -> ApiError {
    match e {
        IntrospectError::InvalidToken(m) => invalid_body(format!("`token`: {m}")),
        IntrospectError::Upstream(_) | IntrospectError::Secret(_) => {
            // The cause was logged where it happened.
            issuer_unavailable()
        }
        other => ApiError::unavailable(&other),
    }
}
