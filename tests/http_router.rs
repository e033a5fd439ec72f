//! HTTP behaviour checked in process: `server::router(state)` driven with `oneshot`, no
//! listener, no child process.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use blinkchamber::Config;
use blinkchamber::server::{AppState, request_id, router};
use serde_json::Value;
use tower::ServiceExt;

async fn app() -> axum::Router {
    let mut config = Config::default();
    config.server.auth.enabled = false;
    router(AppState::from_config(config).await.expect("state"))
}

async fn send(app: &axum::Router, request: Request<Body>) -> (StatusCode, String, Value) {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let id = response
        .headers()
        .get(request_id::HEADER)
        .expect("every response carries the request id")
        .to_str()
        .unwrap()
        .to_owned();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, id, body)
}

#[tokio::test]
async fn a_request_id_is_kept_or_made_and_shows_in_problems() {
    let app = app().await;
    let (status, id, body) = send(
        &app,
        Request::get("/v1/no-such-route")
            .header(request_id::HEADER, "trace-42")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(id, "trace-42");
    assert_eq!(body["requestId"], "trace-42", "{body}");

    // None, or one that is not a usable id: a fresh one, different each time.
    let mut seen = Vec::new();
    for sent in [None, Some("has space")] {
        let mut request = Request::get("/v1/no-such-route");
        if let Some(v) = sent {
            request = request.header(request_id::HEADER, v);
        }
        let (_, id, body) = send(&app, request.body(Body::empty()).unwrap()).await;
        assert_eq!(id.len(), 32, "{id}");
        assert_eq!(body["requestId"], id.as_str(), "{body}");
        seen.push(id);
    }
    assert_ne!(seen[0], seen[1]);

    // Successful answers carry it in the header only.
    let (status, id, body) = send(
        &app,
        Request::get("/healthz")
            .header(request_id::HEADER, "ok-1")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!((status, id.as_str()), (StatusCode::OK, "ok-1"));
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn diagnostics_answer_the_doctor_report() {
    let app = app().await;
    let (status, _, body) = send(
        &app,
        Request::get("/v1/diagnostics").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["backend"], "memory", "{body}");
    // This app runs without auth, which the report names as a risk.
    assert_eq!(body["status"], "warn", "{body}");
    assert_eq!(body["reachable"], true, "{body}");
    assert_eq!(body["checks"][0]["check"], "process.config", "{body}");
    assert_eq!(body["checks"][1]["check"], "topology.backend", "{body}");

    let (_, _, doc) = send(
        &app,
        Request::get("/openapi.json").body(Body::empty()).unwrap(),
    )
    .await;
    assert!(doc["paths"]["/v1/diagnostics"]["get"].is_object());
    for schema in ["Report", "Check", "CheckStatus", "CheckGroup", "Status"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
}
