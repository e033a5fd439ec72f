//! Token rows: cached introspection and local JWT verification (RS256, ZITADEL's default,
//! and ES256; key set cached), beside raw `GET`.
//!
//! A stand-in for ZITADEL's `/oauth/v2/introspect` and `/oauth/v2/keys` runs on loopback
//! inside the bench, so the rows need nothing but Redis; they measure cache hits and
//! signature checks, never the issuer.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::EncodePrivateKey;
use serde_json::{Value, json};

use super::{RawBaselines, Row, measure};
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

/// A signing key: what `jsonwebtoken` signs with, and its JWK for the key set.
struct BenchKey {
    alg: Algorithm,
    kid: &'static str,
    encoding: EncodingKey,
    jwk: Value,
}

/// A fresh P-256 key.
fn es256_key() -> Option<BenchKey> {
    let secret = loop {
        if let Ok(k) = p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
            break k;
        }
    };
    let der = secret.to_pkcs8_der().ok()?;
    let point =
        p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&secret.public_key(), false);
    Some(BenchKey {
        alg: Algorithm::ES256,
        kid: "bench-es256",
        encoding: EncodingKey::from_ec_der(der.as_bytes()),
        jwk: json!({"kty": "EC", "use": "sig", "alg": "ES256", "crv": "P-256",
            "kid": "bench-es256", "x": URL_SAFE_NO_PAD.encode(point.x()?),
            "y": URL_SAFE_NO_PAD.encode(point.y()?)}),
    })
}

/// A fresh 2048-bit RSA key.
fn rs256_key() -> Option<BenchKey> {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::traits::PublicKeyParts;
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).ok()?;
    let der = key.to_pkcs1_der().ok()?;
    Some(BenchKey {
        alg: Algorithm::RS256,
        kid: "bench-rs256",
        encoding: EncodingKey::from_rsa_der(der.as_bytes()),
        jwk: json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "bench-rs256",
            "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be())}),
    })
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
    concurrency: usize,
    duration: Duration,
    prefix: &str,
) -> Vec<Row> {
    let (Some(rs), Some(es)) = (rs256_key(), es256_key()) else {
        eprintln!("token rows skipped: cannot build the signing keys");
        return Vec::new();
    };
    let Some(url) = issuer(vec![rs.jwk.clone(), es.jwk.clone()]).await else {
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
        rows.push(
            measure(
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
            .await
            .against(RawBaselines::GET),
        );
    }

    let Ok(verifier) = JwtVerifier::from_config(&cfg) else {
        eprintln!("token rows skipped: JWT config refused");
        return rows;
    };
    let claims = json!({"iss": url, "sub": "user-1", "aud": AUDIENCE,
        "exp": unix_now() + 3600, "iat": unix_now()});
    for key in [rs, es] {
        let mut header = Header::new(key.alg);
        header.kid = Some(key.kid.into());
        let Ok(jwt) = jsonwebtoken::encode(&header, &claims, &key.encoding) else {
            eprintln!("token rows skipped: cannot sign a JWT");
            continue;
        };
        if let Err(e) = verifier.verify(&jwt).await {
            eprintln!("token rows skipped: the bench JWT does not verify: {e}");
            continue;
        }
        let verifier = verifier.clone();
        rows.push(
            measure(
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
            .await
            .against(RawBaselines::GET),
        );
    }
    rows
}
