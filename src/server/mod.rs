//! The HTTP API of `blinkchamber serve`.
//!
//! [`router`] builds the routes from an [`AppState`] so handler tests can drive it with
//! `oneshot`; [`run`] serves it on a bound listener until a shutdown future resolves, so
//! the binary, tests and benchmarks start the server the same way.

pub mod auth;
pub mod cache;
pub mod events;
pub mod extract;
mod health;
pub mod locks;
mod openapi;
pub mod problem;
pub mod ratelimit;
pub mod request_id;
pub mod sessions;
pub mod tokens;

use std::future::Future;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::config::Config;
use crate::runtime::Runtime;
use auth::Auth;
use problem::ApiError;

pub use openapi::ApiDoc;

/// What every handler can reach: the [`Runtime`] and the `/v1` token check.
#[derive(Clone)]
pub struct AppState {
    /// The backend and every capability.
    pub runtime: Runtime,
    /// `/v1` authentication.
    pub auth: Auth,
}

impl AppState {
    /// State for `config`: every capability ([`Runtime::from_config`]) and the token
    /// source.
    ///
    /// # Errors
    /// When the runtime cannot be built or the token file cannot be read.
    pub async fn from_config(config: Config) -> anyhow::Result<Self> {
        let auth = match (&config.server.auth.tokens, config.server.auth.enabled) {
            (Some(source), true) => Auth::tokens(source.clone())?,
            _ => Auth::disabled(),
        };
        Ok(Self {
            runtime: Runtime::from_config(&config).await?,
            auth,
        })
    }

    /// The effective configuration.
    pub fn config(&self) -> &Config {
        self.runtime.config()
    }
}

/// All routes: `/healthz`, `/readyz`, `/openapi.json`, and `/v1/…` behind the token check.
pub fn router(state: AppState) -> Router {
    let limit = state.config().server.max_body_bytes;
    let v1 = Router::new()
        .route("/status", get(health::status))
        .route("/diagnostics", get(health::diagnostics))
        .route("/ratelimit/check", post(ratelimit::check))
        .route(
            "/cache/{namespace}/{key}",
            get(cache::get).put(cache::put).delete(cache::delete),
        )
        .route("/cache/{namespace}/invalidate", post(cache::invalidate))
        .route(
            "/locks/{name}",
            post(locks::acquire)
                .put(locks::extend)
                .delete(locks::release),
        )
        .route("/events", post(events::publish))
        .route("/events/stats", get(events::stats))
        .route(
            "/events/dead-letter",
            get(events::dead_letters).delete(events::purge),
        )
        .route(
            "/events/dead-letter/{id}",
            get(events::show_dead).delete(events::delete_dead),
        )
        .route("/events/dead-letter/{id}/replay", post(events::replay))
        .route(
            "/sessions",
            post(sessions::create)
                .get(sessions::list)
                .delete(sessions::revoke_user),
        )
        .route("/sessions/handles/{handle}", delete(sessions::revoke))
        .route(
            "/session",
            get(sessions::get)
                .put(sessions::update)
                .delete(sessions::delete),
        )
        .route("/session/touch", post(sessions::touch))
        .route("/session/rotate", post(sessions::rotate))
        .route("/tokens/introspect", post(tokens::introspect))
        .route("/tokens/revoke", post(tokens::revoke))
        .route("/tokens/verify", post(tokens::verify))
        .route_layer(middleware::from_fn_with_state(
            state.auth.clone(),
            auth::require_token,
        ))
        // Signed by ZITADEL instead of a bearer token.
        .route("/ingest/zitadel", post(events::ingest_zitadel))
        // Outside the token check, so the per-IP limit also slows down token guessing.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            ratelimit::protect_api,
        ));
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(|| async { Json(openapi::document()) }))
        .nest("/v1", v1)
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(middleware::from_fn_with_state(limit, reject_large_bodies))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

/// Serves `router(state)` on `listener` until `shutdown` resolves, then drains in-flight
/// requests.
///
/// # Errors
/// I/O errors of the listener.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves Prometheus text on `/metrics` until `shutdown` resolves.
///
/// # Errors
/// I/O errors of the listener.
pub async fn run_metrics(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = crate::metrics::install();
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    handle.render(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Answers `413` from `Content-Length` before any body is read.
async fn reject_large_bodies(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return ApiError::too_large(limit).into_response();
    }
    next.run(request).await
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

/// Gives the request its id (see [`request_id`]) and a span (`request`: method, route
/// template, id), echoes the id, and counts requests by route template and status and
/// times them.
async fn observe(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let id = request_id::of(request.headers());
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        route = %route,
        request_id = %id,
    );
    if let Some(traceparent) = request.headers().get("traceparent")
        && let Ok(traceparent) = traceparent.to_str()
    {
        crate::telemetry::continue_trace(&span, traceparent);
    }
    let started = Instant::now();
    let mut response = request_id::scope(id.clone(), next.run(request).instrument(span)).await;
    if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        response = method_not_allowed(response);
    }
    response
        .headers_mut()
        .insert(request_id::HEADER, request_id::header_value(&id));
    let status = response.status().as_u16().to_string();
    metrics::counter!("blinkchamber_http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("blinkchamber_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
