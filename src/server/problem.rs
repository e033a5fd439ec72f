//! RFC 9457 problem details: the one error type every handler returns.
//!
//! `type` is a stable relative URI (`lock-not-held`, `unauthorized`, …) that clients can
//! match on. A 5xx carries a generic detail; the cause goes to the log, never the client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answered as `application/problem+json`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: String,
}

/// The body of a problem response.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Stable problem type, e.g. `unauthorized`, `payload-too-large`, `lock-not-held`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the type.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What went wrong with this request.
    pub detail: String,
    /// The request's id (`X-Request-Id`), to find its log lines.
    #[serde(rename = "requestId", skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl ApiError {
    /// A problem with a stable `kind`.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            title,
            detail: detail.into(),
        }
    }

    /// `400 bad-request`.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            detail,
        )
    }

    /// `401 unauthorized`.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            detail,
        )
    }

    /// `404 not-found`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// `404` with `kind` (`events-disabled`, `tokens-disabled`, …): a capability this
    /// deployment's config switches off. Not a `5xx`: asking again will not help.
    pub fn feature_disabled(kind: &'static str, title: &'static str, detail: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, kind, title, detail)
    }

    /// `413 payload-too-large`.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
            format!("request body exceeds the limit of {limit} bytes (server.maxBodyBytes)"),
        )
    }

    /// `507 storage-full`: the memory backend has no room for new state; what it
    /// already holds is kept.
    pub fn storage_full(full: &crate::backend::Full) -> Self {
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "storage-full",
            "Storage full",
            full.to_string(),
        )
    }

    /// `503 backend-unavailable`; the cause is logged, not returned.
    pub fn unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, request_id = super::request_id::current().as_deref(), "backend unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "backend-unavailable",
            "Backend unavailable",
            "the backend is not reachable; retry later",
        )
    }

    /// `500 internal`; the cause is logged, not returned.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, request_id = super::request_id::current().as_deref(), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the server failed to handle the request",
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            kind: self.kind.into(),
            title: self.title.into(),
            status: self.status.as_u16(),
            detail: self.detail,
            request_id: super::request_id::current().map(|id| id.to_string()),
        };
        let mut response = (self.status, Json(body)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

impl From<crate::backend::Full> for ApiError {
    fn from(full: crate::backend::Full) -> Self {
        Self::storage_full(&full)
    }
}

impl From<crate::backend::BackendError> for ApiError {
    fn from(e: crate::backend::BackendError) -> Self {
        Self::unavailable(&e)
    }
}
