//! `blinkchamber serve`: as a process (the metrics listener, bearer tokens with file
//! rotation, refusals at start, logs, SIGTERM), and in process through the router
//! (problem details, the body limit, readiness against a real Redis).

mod support;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::Value;
use support::app::{App, request};
use support::serve::{Served, problem, run, send, write};
use support::{RedisProc, wait_for_async};

fn client() -> reqwest::Client {
    support::http()
}

async fn get_json(c: &reqwest::Client, url: String) -> Value {
    send(c.get(url)).await.2
}

#[tokio::test]
async fn memory_backend_answers_health_metrics_and_openapi() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), "backend: memory\n", &["--no-auth"]).await;
    let c = client();

    let ready = c
        .get(format!("{}/readyz", served.api))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::OK);

    let status = get_json(&c, format!("{}/v1/status", served.api)).await;
    assert_eq!(status["backend"], "memory");

    let doc = get_json(&c, format!("{}/openapi.json", served.api)).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    assert!(doc["paths"]["/v1/status"].is_object(), "{doc}");

    let metrics = served.metrics_text().await;
    assert!(
        metrics.contains("blinkchamber_http_requests_total{route=\"/v1/status\",status=\"200\"}"),
        "{metrics}"
    );
    // The API listener does not serve metrics.
    let on_api = c
        .get(format!("{}/metrics", served.api))
        .send()
        .await
        .unwrap();
    assert_eq!(on_api.status(), StatusCode::NOT_FOUND);

    let logs = served.logs();
    assert!(logs.contains("backend: memory"), "{logs}");
    assert!(
        logs.contains("Single node") && logs.contains("lost on restart"),
        "{logs}"
    );
}

#[tokio::test]
async fn v1_needs_a_token_and_follows_the_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = write(dir.path(), "tokens", "# API clients\nfirst-token\n");
    let config = format!(
        "backend: memory\nserver:\n  auth:\n    tokens:\n      valueFromFile: {}\n",
        tokens.display()
    );
    let served = Served::start(dir.path(), &config, &[]).await;
    let c = client();
    let status_url = format!("{}/v1/status", served.api);
    let with = |token: &str| c.get(&status_url).bearer_auth(token).send();

    let (code, body) = problem(c.get(&status_url).send().await.unwrap()).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{body}");
    let (code, _) = problem(with("wrong-token").await.unwrap()).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert_eq!(with("first-token").await.unwrap().status(), StatusCode::OK);
    // Health endpoints stay open for the kubelet.
    let healthz = c
        .get(format!("{}/healthz", served.api))
        .send()
        .await
        .unwrap();
    assert_eq!(healthz.status(), StatusCode::OK);

    // The agent rewrites the file: the new token works without a restart, the old one stops.
    write(dir.path(), "tokens.new", "second-token\n");
    std::fs::rename(dir.path().join("tokens.new"), &tokens).unwrap();
    wait_for_async("the rotated token to be accepted", || {
        let request = with("second-token");
        async { request.await.ok().filter(|r| r.status() == StatusCode::OK) }
    })
    .await;
    assert_eq!(
        with("first-token").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    // Tokens never reach the logs.
    let logs = served.logs();
    assert!(
        !logs.contains("first-token") && !logs.contains("second-token"),
        "{logs}"
    );
}

#[tokio::test]
async fn errors_are_problem_details_and_bodies_are_limited() {
    let app = App::from_yaml("backend: memory\nserver:\n  maxBodyBytes: 1024\n").await;

    let answer = app.get("/v1/no-such-route").await;
    let body = answer.problem();
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{body}");

    let big = vec![b'x'; 4096];
    let answer = app
        .send(
            request(Method::POST, "/v1/status")
                .header("content-type", "application/json")
                .header("content-length", big.len())
                .body(Body::from(big))
                .unwrap(),
        )
        .await;
    let body = answer.problem();
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("1024"), "{body}");
}

#[tokio::test]
async fn readyz_follows_redis_without_exposing_internals() {
    let redis = RedisProc::start();
    let app = App::redis(&redis, "  maxRetries: 1\n  dialTimeout: 200ms\n").await;
    assert_eq!(app.get("/readyz").await.status, StatusCode::OK);

    let port = redis.port;
    drop(redis);
    let answer = wait_for_async("/readyz to report Redis down", || async {
        let answer = app.get("/readyz").await;
        (answer.status == StatusCode::SERVICE_UNAVAILABLE).then_some(answer)
    })
    .await;
    let body = answer.problem();
    let text = body.to_string();
    assert!(
        !text.contains(&port.to_string()),
        "internals exposed: {text}"
    );
    assert_eq!(
        body["type"].as_str().unwrap().rsplit('/').next(),
        Some("backend-unavailable")
    );
}

#[tokio::test]
async fn sigterm_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = Served::start(dir.path(), "backend: memory\n", &["--no-auth"]).await;
    let status = served.terminate();
    assert!(status.success(), "exit status {status}");
    let logs = served.logs();
    assert!(logs.contains("stopped"), "{logs}");
}

#[test]
fn no_auth_on_a_public_address_is_refused() {
    let out = run(
        &["serve", "--no-auth"],
        &[("BLINKCHAMBER_SERVER__LISTEN", "0.0.0.0:0")],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.auth.enabled"), "{stderr}");
    assert!(stderr.contains("0.0.0.0"), "{stderr}");
}

#[tokio::test]
async fn an_evicting_maxmemory_policy_is_refused_unless_allowed() {
    let redis = RedisProc::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "backend: redis\nredis:\n  host: 127.0.0.1\n  port: {}\n",
        redis.port
    );
    let file = write(dir.path(), "evicting.yaml", &config);
    let out = run(
        &["serve", "--no-auth", "--config", file.to_str().unwrap()],
        &[
            ("BLINKCHAMBER_SERVER__LISTEN", "127.0.0.1:0"),
            ("BLINKCHAMBER_SERVER__METRICS_LISTEN", "127.0.0.1:0"),
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("maxmemory-policy `allkeys-lru`"),
        "{stderr}"
    );
    assert!(stderr.contains("redis.allowEvictingPolicy"), "{stderr}");

    // Downgraded to a warning on request.
    let served = Served::start(
        dir.path(),
        &format!("{config}  allowEvictingPolicy: true\n"),
        &["--no-auth"],
    )
    .await;
    let logs = served.logs();
    assert!(logs.contains("maxmemory-policy `allkeys-lru`"), "{logs}");
    assert!(logs.contains("backend: redis standalone"), "{logs}");
}

#[tokio::test]
async fn log_format_json_writes_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(
        dir.path(),
        "backend: memory\n",
        &["--no-auth", "--log-format", "json"],
    )
    .await;
    let text = std::fs::read_to_string(&served.log).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let listening = lines
        .iter()
        .find(|l| l["fields"]["message"] == "listening")
        .unwrap_or_else(|| panic!("no `listening` line in:\n{text}"));
    assert_eq!(listening["level"], "INFO", "{listening}");
    assert!(listening["fields"]["api"].is_string(), "{listening}");
}
