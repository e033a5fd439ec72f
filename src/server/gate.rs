//! What every request passes through, once: its id and span, the body-size check, the
//! API's own rate limit and the bearer token for `/v1`, and the request metrics.
//!
//! One middleware instead of a stack of them: axum clones a route's whole service stack
//! for every request at every middleware level, so each layer costs an allocation and a
//! drop per request. Here there is one level, and the metric handles of each route and
//! status are looked up once, then kept.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Histogram};
use tracing::Instrument;

use super::auth::Access;
use super::problem::ApiError;
use super::{AppState, auth, ratelimit, request_id};

/// W3C trace context, continued by the request's span.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The one route under `/v1` that takes a signature instead of a bearer token.
const SIGNED_ROUTE: &str = "/v1/ingest/zitadel";

/// The gate's state: the app and the metric handles seen so far.
#[derive(Clone)]
pub struct Gate {
    state: AppState,
    metrics: Arc<RouteMetrics>,
}

impl Gate {
    /// A gate for `state`.
    pub fn new(state: AppState) -> Self {
        Self {
            state,
            metrics: Arc::default(),
        }
    }
}

/// The gate itself (`axum::middleware::from_fn_with_state`).
pub async fn gate(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let id = request_id::of(request.headers());
    let api = request.uri().path().starts_with("/v1/");
    // At debug level, as tower-http's trace layer makes it: formatting the span's fields
    // for the log layer was a tenth of a cache hit's server time. Warnings and errors a
    // request causes carry its id themselves (`ApiError`).
    let span = tracing::debug_span!(
        target: "blinkchamber::request",
        "request",
        method = %request.method(),
        route = %route,
        request_id = id.to_str().unwrap_or_default(),
    );
    if let Some(traceparent) = request.headers().get(&TRACEPARENT)
        && let Ok(traceparent) = traceparent.to_str()
    {
        crate::telemetry::continue_trace(&span, traceparent);
    }
    let started = Instant::now();
    let mut response = request_id::scope(
        id.clone(),
        admit(&gate.state, route, request, next).instrument(span),
    )
    .await;
    if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        response = method_not_allowed(response);
    }
    response.headers_mut().insert(request_id::HEADER, id);
    if api {
        gate.state.observed.answered(response.status().as_u16());
    }
    gate.metrics
        .record(route, response.status(), started.elapsed().as_secs_f64());
    response
}

/// The checks, then the route.
async fn admit(state: &AppState, route: &str, request: Request, next: Next) -> Response {
    let limit = state.config().server.max_body_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return ApiError::too_large(limit).into_response();
    }
    if !route.starts_with("/v1/") {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    // The token is checked once; its answer is sent after the API limit, so the per-IP
    // limit also slows down token guessing.
    let access = auth::check(&state.auth, &parts.headers);
    let token_accepted = state.auth.enabled() && access.is_ok();
    if let Some(limited) = ratelimit::api_limit(state, &parts, token_accepted).await {
        return limited;
    }
    if route != SIGNED_ROUTE {
        match access {
            Err(refused) => return refused.into_response(),
            Ok(Access::ReadOnly) if !matches!(parts.method, Method::GET | Method::HEAD) => {
                return auth::read_only_refusal();
            }
            Ok(_) => {}
        }
    }
    next.run(Request::from_parts(parts, body)).await
}

/// The router's `405` (an empty body; the router adds `Allow`) as a problem.
fn method_not_allowed(response: Response) -> Response {
    let (parts, _) = response.into_parts();
    let mut problem = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "this route does not answer this method; `Allow` lists those it does",
    )
    .into_response();
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        problem.headers_mut().insert(header::ALLOW, allow.clone());
    }
    problem
}

/// `blinkchamber_http_requests_total{route,status}` and
/// `blinkchamber_http_request_duration_seconds{route}`, by route template.
#[derive(Default)]
struct RouteMetrics {
    routes: RwLock<HashMap<Arc<str>, RouteHandles>>,
}

struct RouteHandles {
    duration: Histogram,
    by_status: Vec<(StatusCode, Counter)>,
}

impl RouteMetrics {
    fn record(&self, route: &str, status: StatusCode, seconds: f64) {
        {
            let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
            if let Some(handles) = routes.get(route)
                && let Some((_, counter)) = handles.by_status.iter().find(|(s, _)| *s == status)
            {
                counter.increment(1);
                handles.duration.record(seconds);
                return;
            }
        }
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        let handles = routes
            .entry(Arc::from(route))
            .or_insert_with(|| RouteHandles {
                duration: metrics::histogram!(
                    "blinkchamber_http_request_duration_seconds",
                    "route" => route.to_string()
                ),
                by_status: Vec::new(),
            });
        let counter = match handles.by_status.iter().find(|(s, _)| *s == status) {
            Some((_, counter)) => counter.clone(),
            None => {
                let counter = metrics::counter!(
                    "blinkchamber_http_requests_total",
                    "route" => route.to_string(),
                    "status" => status.as_u16().to_string()
                );
                handles.by_status.push((status, counter.clone()));
                counter
            }
        };
        counter.increment(1);
        handles.duration.record(seconds);
    }
}
