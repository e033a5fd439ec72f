//! The HTTP API in process: `server::router(state)` driven with `tower::ServiceExt::oneshot`,
//! no listener and no child process.
//!
//! Requests go through every layer `serve` puts in front of the routes (request id, body
//! limit, per-IP limit, token check). Each request carries the peer address the listener
//! would give it (`ConnectInfo`), loopback unless the test sets its own.

use std::net::SocketAddr;
use std::path::Path;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use blinkchamber::server::{AppState, router};
use blinkchamber::{Config, Runtime};
use serde_json::Value;
use tower::ServiceExt;

use super::RedisProc;

/// The content type of problem details.
pub const PROBLEM: &str = "application/problem+json";

/// The peer address of requests that do not set their own.
pub const LOOPBACK_PEER: &str = "127.0.0.1:40000";

/// The router of one [`AppState`].
pub struct App {
    /// The state the routes share (runtime and token check).
    pub state: AppState,
    router: Router,
}

impl App {
    /// `config` as given (not validated): for tests that build a [`Config`] in code.
    pub async fn new(config: Config) -> Self {
        let state = AppState::from_config(config).await.expect("app state");
        let router = router(state.clone());
        Self { state, router }
    }

    /// A YAML configuration as `serve --no-auth` runs it: parsed, `/v1` open, validated.
    pub async fn from_yaml(yaml: &str) -> Self {
        let mut config = Config::from_yaml(yaml, Path::new("test.yaml")).expect("config");
        config.server.auth.enabled = false;
        config.validate().expect("valid config");
        Self::new(config).await
    }

    /// `backend: memory` and nothing else.
    pub async fn memory() -> Self {
        Self::from_yaml("backend: memory\n").await
    }

    /// `backend: redis` on `redis`, with `extra` YAML appended after the `redis:` block
    /// (indented by two spaces it adds to that block).
    pub async fn redis(redis: &RedisProc, extra: &str) -> Self {
        Self::from_yaml(&format!(
            "backend: redis\nredis:\n  host: 127.0.0.1\n  port: {}\n{extra}",
            redis.port
        ))
        .await
    }

    /// The runtime behind the routes.
    pub fn runtime(&self) -> &Runtime {
        &self.state.runtime
    }

    /// Sends `request` through the router and reads the whole answer.
    pub async fn send(&self, mut request: Request<Body>) -> Answer {
        if request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .is_none()
        {
            let peer: SocketAddr = LOOPBACK_PEER.parse().unwrap();
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("response body");
        Answer {
            status,
            headers,
            body,
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Answer {
        self.send(empty(Method::GET, path)).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Answer {
        self.send(empty(Method::DELETE, path)).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> Answer {
        self.send(json(Method::POST, path, body)).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put_json(&self, path: &str, body: &Value) -> Answer {
        self.send(json(Method::PUT, path, body)).await
    }
}

/// A request builder for `method path`, to add headers to.
pub fn request(method: Method, path: &str) -> axum::http::request::Builder {
    Request::builder().method(method).uri(path)
}

/// `method path` without a body.
pub fn empty(method: Method, path: &str) -> Request<Body> {
    request(method, path).body(Body::empty()).unwrap()
}

/// `method path` with `body` as JSON.
pub fn json(method: Method, path: &str, body: &Value) -> Request<Body> {
    with_json(request(method, path), body)
}

/// Finishes `builder` with `body` as JSON, with its `Content-Length` as an HTTP client
/// sends it.
pub fn with_json(builder: axum::http::request::Builder, body: &Value) -> Request<Body> {
    let bytes = serde_json::to_vec(body).unwrap();
    builder
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, bytes.len())
        .body(Body::from(bytes))
        .unwrap()
}

/// A request as seen from `peer` (the address the per-IP limit counts).
pub fn from_peer(mut request: Request<Body>, peer: SocketAddr) -> Request<Body> {
    request.extensions_mut().insert(ConnectInfo(peer));
    request
}

/// A whole answer of the router.
#[derive(Debug)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON, `null` when it is empty or not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Status and JSON body.
    pub fn parts(&self) -> (StatusCode, Value) {
        (self.status, self.json())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The value of header `name`, which must be present.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("{name} header missing"))
            .to_str()
            .unwrap()
    }

    /// The body as problem details: checks the content type, that `status` matches the
    /// answer's and that `type` and `title` are there.
    pub fn problem(&self) -> Value {
        let content_type = self
            .headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        assert!(
            content_type.starts_with(PROBLEM),
            "content-type {content_type} (status {})",
            self.status
        );
        let body: Value = serde_json::from_slice(&self.body).expect("problem JSON");
        assert_eq!(body["status"], self.status.as_u16(), "{body}");
        assert!(
            body["type"].is_string() && body["title"].is_string(),
            "{body}"
        );
        body
    }
}
