//! Token rows: cached introspection and local JWT verification (RS256, ZITADEL's default,
//! and ES256; key set cached), beside raw `GET`.
//!
//! A stand-in for ZITADEL's `/oauth/v2/introspect` and `/oauth/v2/keys` runs on loopback
//! inside the bench, so the rows need nothing but Redis; they measure cache hits and
//! signature checks, never the issuer.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::routing::{get, post};
use serde_json::{Value, json};

use super::keys::SigningKey;
use super::{Raw, RawBaselines, Row};
use crate::backend::RedisBackend;
use crate::config::{SecretSource, TokensConfig};
use crate::token::{Introspector, JwtVerifier};

/// Distinct tokens the rows spread over.
pub const TOKENS: usize = 1000;

const AUDIENCE: &str = "bench-api";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Starts the stand-in issuer; returns its base URL.
async fn issuer(keys: Vec<Value>) -> Option<String> {
    let exp = unix_now() + 3600;
    let app = axum::Router::new()
        .route(
            "/oauth/v2/introspect",
            post(move || async move {
                axum::Json(json!({"active": true, "sub": "user-1", "exp": exp,
                    "client_id": "bench", "scope": "openid"}))
            }),
        )
        .route(
            "/oauth/v2/keys",
            get(move || {
                let keys = keys.clone();
                async move { axum::Json(json!({ "keys": keys })) }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.ok()?;
    let url = format!("http://{}", listener.local_addr().ok()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Some(url)
}

/// Cached introspection (with and without L1) and ES256 verification rows.
pub async fn token_rows(
    backend: RedisBackend,
    raw: &Raw,
    concurrency: usize,
    duration: Duration,
    prefix: &str,
) -> Vec<Row> {
    let keys = [
        ("bench-rs256", SigningKey::rs256()),
        ("bench-es256", SigningKey::es256()),
    ];
    let Some(url) = issuer(keys.iter().map(|(kid, key)| key.jwk(kid)).collect()).await else {
        eprintln!("token rows skipped: cannot start the stand-in issuer");
        return Vec::new();
    };
    let mut cfg = TokensConfig::default().with_issuer(url.clone());
    cfg.introspection = cfg
        .introspection
        .clone()
        .with_client("bench", SecretSource::value("bench-secret"))
        .with_key_prefix(format!("{prefix}token:"));
    cfg.introspection.enabled = true;
    cfg.jwt.enabled = true;
    cfg.jwt.audiences = vec![AUDIENCE.to_owned()];
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..TOKENS)
            .map(|i| format!("bench-opaque-token-{i:06}-{:016x}", rand::random::<u64>()))
            .collect(),
    );
    let pick = |task: usize, seq: u64| (task as u64 * 7919 + seq) as usize % TOKENS;

    let mut rows = Vec::new();
    let Ok(introspector) = Introspector::redis(&cfg, backend.clone()) else {
        eprintln!("token rows skipped: introspection config refused");
        return rows;
    };
    introspector.ready().await;
    for t in tokens.iter() {
        if let Err(e) = introspector.introspect(t).await {
            eprintln!("token rows skipped: priming the cache failed: {e}");
            return rows;
        }
    }
    {
        let (introspector, tokens) = (introspector.clone(), tokens.clone());
        rows.extend(
            raw.against(
                RawBaselines::GET,
                "token introspect, cached (L1 hit)",
                concurrency,
                duration,
                move |task, seq| {
                    let (i, t) = (introspector.clone(), tokens[pick(task, seq)].clone());
                    async move {
                        let _ = i.introspect(&t).await;
                    }
                },
            )
            .await,
        );
    }

    let Ok(verifier) = JwtVerifier::from_config(&cfg) else {
        eprintln!("token rows skipped: JWT config refused");
        return rows;
    };
    let claims = json!({"iss": url, "sub": "user-1", "aud": AUDIENCE,
        "exp": unix_now() + 3600, "iat": unix_now()});
    for (kid, key) in keys {
        let jwt = key.sign(kid, &claims);
        if let Err(e) = verifier.verify(&jwt).await {
            eprintln!("token rows skipped: the bench JWT does not verify: {e}");
            continue;
        }
        let verifier = verifier.clone();
        rows.extend(
            raw.against(
                RawBaselines::GET,
                &format!("JWT verify, {:?}, key set cached", key.alg),
                concurrency,
                duration,
                move |_, _| {
                    let (v, jwt) = (verifier.clone(), jwt.clone());
                    async move {
                        let _ = v.verify(&jwt).await;
                    }
                },
            )
            .await,
        );
    }
    rows
}
