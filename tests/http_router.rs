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

#[tokio::test]
async fn bodies_follow_one_set_of_rules_and_405_is_a_problem() {
    let app = app().await;
    let post = |uri: &str, content_type: Option<&str>, body: &str| {
        let mut request = Request::post(uri);
        if let Some(t) = content_type {
            request = request.header("content-type", t);
        }
        request.body(Body::from(body.to_owned())).unwrap()
    };
    // No Content-Type is read as JSON; a non-JSON one is 415.
    let (status, _, lease) = send(&app, post("/v1/locks/a", None, "{}")).await;
    assert_eq!(status, StatusCode::CREATED, "{lease}");
    let (status, _, problem) = send(&app, post("/v1/locks/b", Some("text/plain"), "{}")).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{problem}");
    assert_eq!(problem["type"], "unsupported-media-type");
    // An array where an object belongs, and a wrong field type: 400 naming the field.
    let (status, _, problem) = send(&app, post("/v1/locks/c", None, "[null, null]")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(problem["type"], "invalid-body");
    let (status, _, problem) = send(&app, post("/v1/locks/c", None, r#"{"ttl": 5}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("`ttl`"),
        "{problem}"
    );
    // A whole number written as a float is a whole number.
    let (status, _, session) = send(
        &app,
        post(
            "/v1/sessions",
            Some("application/json"),
            r#"{"userId": "u-1"}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let update = Request::put("/v1/session")
        .header("session-id", session["id"].as_str().unwrap())
        .body(Body::from(r#"{"data": {"a": 1}, "version": 1.0}"#))
        .unwrap();
    let (status, _, updated) = send(&app, update).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["version"], 2);

    let request = Request::delete("/v1/events/stats")
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = response
        .headers()
        .get("allow")
        .expect("Allow")
        .to_str()
        .unwrap();
    assert!(allow.contains("GET"), "{allow}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

#[tokio::test]
async fn serve_answers_pipelined_http1_and_h2c() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut config = Config::default();
    config.server.auth.enabled = false;
    let state = AppState::from_config(config).await.expect("state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(blinkchamber::server::run(
        listener,
        state,
        std::future::pending(),
    ));

    // Three requests written at once on one connection: three answers, in order.
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n\
              GET /v1/no-such-route HTTP/1.1\r\nHost: t\r\n\r\n\
              GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answers = String::new();
    stream.read_to_string(&mut answers).await.unwrap();
    let statuses: Vec<&str> = answers
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &answers[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "404", "200"], "{answers}");

    // HTTP/2 over cleartext, with prior knowledge.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
}
