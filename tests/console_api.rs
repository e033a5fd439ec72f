//! The routes the operator console reads and acts through: read-only tokens, the instance
//! counters of `/v1/status`, consumer leases and settle totals, paged and filtered dead
//! letters with bulk replay and delete, rate-limit rules and the most-denied keys, cache
//! reads per namespace, and `/ui` itself. In process, through every layer `serve` puts in
//! front of the routes.

mod support;

use std::time::Duration;

use axum::http::{Method, StatusCode, header};
use blinkchamber::Config;
use blinkchamber::config::SecretSource;
use blinkchamber::events::queues::{Settle, Taken};
use blinkchamber::events::{Priority, decode, encode};
use serde_json::{Value, json};
use support::RedisProc;
use support::app::{Answer, App, empty, request, with_json};

const FULL: &str = "full-token-1";
const READ_ONLY: &str = "read-only-token-1";

/// The memory backend with a full and a read-only token, and `yaml` merged in.
async fn app_with_tokens(yaml: &str) -> App {
    let mut config =
        Config::from_yaml(&format!("backend: memory\n{yaml}"), "t.yaml".as_ref()).unwrap();
    config.server.auth.tokens = Some(SecretSource::value(format!("{FULL}\n")));
    config.server.auth.read_only_tokens = Some(SecretSource::value(format!("{READ_ONLY}\n")));
    config.validate().unwrap();
    App::new(config).await
}

async fn as_token(
    app: &App,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Answer {
    let builder =
        request(method.clone(), path).header(header::AUTHORIZATION, format!("Bearer {token}"));
    let request = match body {
        Some(body) => with_json(builder, &body),
        None => builder.body(axum::body::Body::empty()).unwrap(),
    };
    app.send(request).await
}

#[tokio::test]
async fn a_read_only_token_reads_and_is_refused_every_change() {
    let app = app_with_tokens("").await;
    let status = as_token(&app, READ_ONLY, Method::GET, "/v1/status", None).await;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(status.json()["access"], "read-only");
    let full = as_token(&app, FULL, Method::GET, "/v1/status", None).await;
    assert_eq!(full.json()["access"], "full");
    for path in [
        "/v1/events/stats",
        "/v1/events/dead-letter",
        "/v1/ratelimit/rules",
        "/v1/cache/stats",
    ] {
        let answer = as_token(&app, READ_ONLY, Method::GET, path, None).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text());
    }
    let changes: [(Method, &str, Option<Value>); 5] = [
        (Method::DELETE, "/v1/events/dead-letter", None),
        (Method::POST, "/v1/events/replay", Some(json!({}))),
        (Method::DELETE, "/v1/sessions?userId=u1", None),
        (
            Method::POST,
            "/v1/cache/users/invalidate",
            Some(json!({"all": true})),
        ),
        (Method::PUT, "/v1/cache/users/1", Some(json!({"value": 1}))),
    ];
    for (method, path, body) in changes {
        let answer = as_token(&app, READ_ONLY, method.clone(), path, body.clone()).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(answer.problem()["type"], "read-only-token");
        let allowed = as_token(&app, FULL, method.clone(), path, body).await;
        assert!(
            allowed.status.is_success(),
            "{method} {path} with the full token: {}",
            allowed.text()
        );
    }
    let wrong = as_token(&app, "nope", Method::GET, "/v1/status", None).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn status_counts_requests_problems_and_published_events() {
    let app = App::memory().await;
    let before = app.get("/v1/status").await.json();
    assert!(before["startedAt"].as_str().unwrap().ends_with('Z'));
    assert!(before["lastFailover"].is_null());
    assert_eq!(
        app.get("/v1/no-such-route").await.status,
        StatusCode::NOT_FOUND
    );
    let event = json!({"specversion": "1.0", "id": "e1", "source": "/t", "type": "user.created"});
    let published = app.post_json("/v1/events", &json!([event, {"specversion": "1.0", "id": "e2", "source": "/t", "type": "user.created"}])).await;
    assert_eq!(
        published.status,
        StatusCode::ACCEPTED,
        "{}",
        published.text()
    );
    let after = app.get("/v1/status").await.json();
    let count = |v: &Value, k: &str| v["counters"][k].as_u64().unwrap();
    // The status call itself, the 404 and the publish.
    assert_eq!(count(&after, "requests") - count(&before, "requests"), 3);
    assert_eq!(count(&after, "problems") - count(&before, "problems"), 1);
    assert_eq!(
        count(&after, "eventsPublished") - count(&before, "eventsPublished"),
        2
    );
}

/// Publishes `n` events (types alternating) and dead-letters them all, each with a
/// `lasterror` naming its index; answers their ids, oldest first.
async fn dead_letters(app: &App, n: usize) -> Vec<String> {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            json!({"specversion": "1.0", "id": format!("ev-{i:03}"), "source": "/t",
                   "type": if i.is_multiple_of(2) { "user.created" } else { "user.deleted" }})
        })
        .collect();
    let published = app.post_json("/v1/events", &Value::Array(events)).await;
    let ids: Vec<String> = published.json()["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let queues = app.runtime().events().unwrap().queues().clone();
    let Taken::Events {
        priority, items, ..
    } = queues
        .take("c", "t", Priority::ALL, 1000, Duration::from_secs(30))
        .await
        .unwrap()
    else {
        panic!("events expected");
    };
    let dead = items
        .iter()
        .map(|s| {
            let mut e = decode(s).unwrap();
            let error = format!(
                "webhook answered {} for {}",
                if e.id.ends_with('0') { 503 } else { 400 },
                e.id
            );
            e.extensions.insert("lasterror".into(), json!(error));
            (e.id.clone(), encode(&e, false))
        })
        .collect();
    let settle = Settle {
        priority,
        retries: Vec::new(),
        dead,
        seen: Vec::new(),
        seen_for: Duration::ZERO,
    };
    queues
        .settle("c", "t", &settle, Duration::from_secs(30))
        .await
        .unwrap();
    ids
}

/// The `rel="next"` target of a `Link` header, if any.
fn next_link(answer: &Answer) -> Option<String> {
    let link = answer.headers.get(header::LINK)?.to_str().unwrap();
    let target = link.strip_prefix('<')?.split_once(">; rel=\"next\"")?.0;
    Some(target.to_owned())
}

#[tokio::test]
async fn dead_letters_are_paged_by_link_filtered_and_handled_in_bulk() {
    let app = App::memory().await;
    let ids = dead_letters(&app, 45).await;
    // Every page through `Link`, oldest first.
    let (mut seen, mut path, mut pages) = (
        Vec::new(),
        Some("/v1/events/dead-letter?limit=20".to_owned()),
        0,
    );
    while let Some(p) = path {
        let answer = app.get(&p).await;
        assert_eq!(answer.status, StatusCode::OK, "{p}: {}", answer.text());
        seen.extend(
            answer
                .json()
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned()),
        );
        path = next_link(&answer);
        pages += 1;
    }
    assert_eq!((seen, pages), (ids.clone(), 3));
    // A filter travels in the link; `contains` ignores case.
    let first = app
        .get("/v1/events/dead-letter?limit=2&type=user.deleted&contains=WEBHOOK%20answered%20400")
        .await;
    let page: Vec<String> = first
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(page, ["ev-001", "ev-003"]);
    let next = next_link(&first).expect("more follow");
    assert!(
        next.contains("type=user.deleted") && next.contains("contains=WEBHOOK+answered+400"),
        "{next}"
    );
    let bad = app.get("/v1/events/dead-letter?type=").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    // Bulk: delete the 503s of created users, replay the deleted users, purge the rest.
    let deleted = app
        .delete("/v1/events/dead-letter?type=user.created&contains=503")
        .await;
    assert_eq!(deleted.parts(), (StatusCode::OK, json!({"purged": 5})));
    let replayed = app
        .post_json("/v1/events/replay", &json!({"type": "user.deleted"}))
        .await;
    assert_eq!(replayed.parts(), (StatusCode::OK, json!({"replayed": 22})));
    let stats = app.get("/v1/events/stats").await.json();
    assert_eq!(stats["dead"], 18);
    assert_eq!(stats["totals"]["deadLettered"], 45);
    let unknown = app
        .post_json("/v1/events/replay", &json!({"kind": "x"}))
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        app.delete("/v1/events/dead-letter").await.json(),
        json!({"purged": 18})
    );
}

#[tokio::test]
async fn rules_are_listed_and_the_most_denied_keys_ranked() {
    let app = App::from_yaml(
        "backend: memory\nrateLimit:\n  rules:\n    - name: login\n      descriptor: [user]\n      algorithm: fixedWindow\n      limit: 1\n      period: 1d\n",
    )
    .await;
    let rules = app.get("/v1/ratelimit/rules").await.json();
    assert_eq!(
        rules["rules"][0],
        json!({"name": "login", "descriptor": ["user"], "algorithm": "fixedWindow", "limit": 1,
               "period": "1day", "burst": null, "failureMode": "open"})
    );
    for (key, checks) in [("user=a", 4), ("user=b", 2), ("user=c", 1)] {
        for _ in 0..checks {
            app.post_json("/v1/ratelimit/check", &json!({"rule": "login", "key": key}))
                .await;
        }
    }
    // Two minutes, so a minute starting between the checks and the query loses nothing.
    let top = app.get("/v1/ratelimit/top?window=2m").await.json();
    let ranked: Vec<(String, u64)> = top["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["key"].as_str().unwrap().to_owned(),
                k["denied"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ranked, [("user=a".to_owned(), 3), ("user=b".to_owned(), 1)]);
    assert_eq!(top["window"], "2m");
    for bad in ["0m", "16m", "5s", "05m", "m"] {
        let answer = app.get(&format!("/v1/ratelimit/top?window={bad}")).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn cache_reads_are_counted_per_namespace_and_level() {
    let redis = RedisProc::start();
    // Exact counts: a read that outlasts the default l2Timeout on a loaded machine would
    // count as a miss.
    let patient = "cache:\n  l2Timeout: 10s\n";
    let writer = App::redis(&redis, patient).await;
    let reader = App::redis(&redis, patient).await;
    // L1 answers only while the backplane is followed.
    reader.runtime().cache().ready().await;
    assert_eq!(
        writer
            .put_json("/v1/cache/users/1", &json!({"value": {"n": 1}}))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    // Redis, then this instance's memory, then a miss.
    for path in [
        "/v1/cache/users/1",
        "/v1/cache/users/1",
        "/v1/cache/users/2",
        "/v1/cache/orgs/9",
    ] {
        reader.get(path).await;
    }
    let stats = reader.get("/v1/cache/stats").await.json();
    assert_eq!(
        stats["namespaces"],
        json!([
            {"namespace": "orgs", "l1Hits": 0, "l2Hits": 0, "misses": 1},
            {"namespace": "users", "l1Hits": 1, "l2Hits": 1, "misses": 1},
        ])
    );
}

#[tokio::test]
async fn the_console_is_served_only_when_enabled() {
    let off = App::memory().await;
    assert_eq!(
        off.send(empty(Method::GET, "/ui")).await.status,
        StatusCode::NOT_FOUND
    );
    let on = App::from_yaml("backend: memory\nserver:\n  console:\n    enabled: true\n").await;
    for (path, kind) in [
        ("/ui", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let answer = on.get(path).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert!(answer.header("content-type").starts_with(kind), "{path}");
        let csp = answer.header("content-security-policy");
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert!(!answer.body.is_empty(), "{path}");
    }
    // The files need no token; the API behind them does.
    let with_auth = app_with_tokens("server:\n  console:\n    enabled: true\n").await;
    assert_eq!(with_auth.get("/ui").await.status, StatusCode::OK);
    assert_eq!(
        with_auth.get("/v1/status").await.status,
        StatusCode::UNAUTHORIZED
    );
}
