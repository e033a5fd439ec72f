//! Tokens: cached introspection on the memory backend and on real Redis, JWT verification
//! with key rotation, and the HTTP contract (in process, and through the binary for its logs), all against
//! a ZITADEL stand-in served on loopback by the test itself (real keys, real HTTP).

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use blinkchamber::config::{
    IntrospectionConfig, JwtConfig, RedisConfig, SecretSource, TokensConfig,
};
use blinkchamber::events::{Event, Handler};
use blinkchamber::token::{EvictOnLogout, Introspector, JwtVerifier, Reason, token_hash};
use blinkchamber::{Backend, RedisBackend};
use futures_util::future::BoxFuture;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::app::App;
use support::serve::{Served, send};
use support::{RedisProc, Store, wait_for_async};
use tokio::sync::watch;

const CLIENT_ID: &str = "api-client@blinkchamber";
const CLIENT_SECRET: &str = "s3cret+with/odd:chars";
const AUDIENCE: &str = "blinkchamber-api";

// ---- the ZITADEL stand-in ----

/// What the stand-in knows and counts.
struct StubState {
    /// token → introspection answer (unknown tokens are inactive).
    answers: Mutex<HashMap<String, Value>>,
    /// Introspection calls with good client credentials.
    introspections: AtomicUsize,
    /// Introspection calls with bad or missing credentials.
    refused: AtomicUsize,
    /// JWKS fetches.
    key_fetches: AtomicUsize,
    /// The published JWKS.
    jwks: Mutex<Vec<Value>>,
    /// The JWKS endpoint answers 503 while this is set.
    jwks_down: std::sync::atomic::AtomicBool,
    /// Introspection answers wait while this is `false`.
    gate: watch::Sender<bool>,
}

struct Stub {
    url: String,
    state: Arc<StubState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stub {
    async fn start() -> Self {
        let state = Arc::new(StubState {
            answers: Mutex::default(),
            introspections: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            key_fetches: AtomicUsize::new(0),
            jwks: Mutex::new(vec![keys().rsa1.jwk("rsa-1"), keys().ec1.jwk("ec-1")]),
            jwks_down: std::sync::atomic::AtomicBool::new(false),
            gate: watch::channel(true).0,
        });
        let app = Router::new()
            .route("/oauth/v2/introspect", post(stub_introspect))
            .route("/oauth/v2/keys", get(stub_keys))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, state, task }
    }

    fn answer(&self, token: &str, answer: Value) {
        self.state
            .answers
            .lock()
            .unwrap()
            .insert(token.to_owned(), answer);
    }

    fn calls(&self) -> usize {
        self.state.introspections.load(Ordering::SeqCst)
    }

    fn key_fetches(&self) -> usize {
        self.state.key_fetches.load(Ordering::SeqCst)
    }

    fn publish(&self, jwk: Value) {
        self.state.jwks.lock().unwrap().push(jwk);
    }
}

async fn stub_introspect(
    State(state): State<Arc<StubState>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let credentials = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let authorised = credentials
        .as_deref()
        .and_then(|c| c.split_once(':'))
        .is_some_and(|(id, secret)| {
            form_decode(id) == CLIENT_ID && form_decode(secret) == CLIENT_SECRET
        });
    if !authorised {
        state.refused.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::UNAUTHORIZED, "bad client").into_response();
    }
    state.introspections.fetch_add(1, Ordering::SeqCst);
    let mut gate = state.gate.subscribe();
    let _ = gate.wait_for(|open| *open).await;
    let token = form.get("token").cloned().unwrap_or_default();
    let answer = state.answers.lock().unwrap().get(&token).cloned();
    match answer {
        Some(Value::String(s)) if s == "fail" => {
            (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response()
        }
        Some(answer) => Json(answer).into_response(),
        None => Json(json!({"active": false})).into_response(),
    }
}

async fn stub_keys(State(state): State<Arc<StubState>>) -> Response {
    state.key_fetches.fetch_add(1, Ordering::SeqCst);
    if state.jwks_down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    Json(json!({"keys": state.jwks.lock().unwrap().clone()})).into_response()
}

/// `application/x-www-form-urlencoded` decoding of one value.
fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

// ---- keys ----

use blinkchamber::bench::keys::SigningKey as TestKey;

struct Keys {
    rsa1: TestKey,
    rsa2: TestKey,
    rsa3: TestKey,
    forger: TestKey,
    ec1: TestKey,
}

/// Generated once per test binary (RSA generation is the slow part).
fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        rsa1: TestKey::rs256(),
        rsa2: TestKey::rs256(),
        rsa3: TestKey::rs256(),
        forger: TestKey::rs256(),
        ec1: TestKey::es256(),
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Claims of a token valid for an hour, for the stub's issuer and our audience.
fn claims(issuer: &str) -> Value {
    json!({"iss": issuer, "sub": "user-1", "aud": [AUDIENCE, "other"], "iat": now(),
           "exp": now() + 3600, "scope": "openid"})
}

/// A token string that is unique per test run and recognisable in a dump.
fn secret_token(name: &str) -> String {
    format!("tok-{name}-{:016x}", rand::random::<u64>())
}

// ---- introspection on both stores ----

struct Fixture {
    stub: Stub,
    introspector: Introspector,
    redis: Option<RedisProc>,
    prefix: String,
    _dir: tempfile::TempDir,
}

fn tokens_config(stub: &Stub, dir: &std::path::Path) -> TokensConfig {
    let secret = dir.join("client_secret");
    std::fs::write(&secret, format!("{CLIENT_SECRET}\n")).unwrap();
    let mut cfg = TokensConfig::default().with_issuer(format!("{}/", stub.url));
    cfg.introspection = IntrospectionConfig::default()
        .with_client(CLIENT_ID, SecretSource::file(secret))
        .with_key_prefix("test:token:");
    cfg.jwt = JwtConfig::default()
        .with_audiences([AUDIENCE])
        .with_jwks_refresh_min(Duration::from_secs(600));
    cfg
}

async fn fixture(store: Store) -> Fixture {
    let stub = Stub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = tokens_config(&stub, dir.path());
    let (introspector, redis) = match store {
        Store::Memory => (
            Introspector::from_config(&cfg, &Backend::memory()).unwrap(),
            None,
        ),
        Store::Redis => {
            let redis = RedisProc::start();
            let backend = RedisBackend::connect(RedisConfig::standalone("127.0.0.1", redis.port))
                .await
                .unwrap();
            (Introspector::redis(&cfg, backend).unwrap(), Some(redis))
        }
    };
    introspector.ready().await;
    Fixture {
        stub,
        introspector,
        redis,
        prefix: cfg.introspection.key_prefix,
        _dir: dir,
    }
}

impl Fixture {
    /// The Redis key of a token's cached answer.
    fn key(&self, token: &str) -> String {
        format!("{}introspect:{}", self.prefix, token_hash(token))
    }

    /// `PTTL` of a token's entry (Redis only).
    fn pttl(&self, token: &str) -> Option<i64> {
        let redis = self.redis.as_ref()?;
        let ttl: i64 = ::redis::cmd("PTTL")
            .arg(self.key(token))
            .query(&mut redis.conn())
            .unwrap();
        Some(ttl)
    }

    /// The stored form of `token`'s cache entry (Redis only).
    fn stored(&self, token: &str) -> Option<Option<String>> {
        let redis = self.redis.as_ref()?;
        let stored: Option<String> = ::redis::cmd("GET")
            .arg(self.key(token))
            .query(&mut redis.conn())
            .unwrap();
        Some(stored)
    }
}

conformance!(fixture;
    an_active_answer_is_cached_until_exp_and_no_longer,
    the_cache_time_is_capped_by_max_ttl,
    answers_without_exp_inactive_or_echoing_the_token_are_not_cached,
    concurrent_lookups_of_one_token_make_one_call,
    revoke_evicts_the_answer,
    a_logout_event_evicts_the_users_and_the_sessions_answers,
    the_raw_token_is_never_stored,
    a_failing_issuer_is_an_error_and_nothing_is_cached,
);

async fn an_active_answer_is_cached_until_exp_and_no_longer(f: &Fixture) {
    let token = secret_token("short");
    // Whole seconds: the answer lives 5–6 s, time for two lookups on a loaded machine.
    let exp = now() + 6;
    let answer = json!({"active": true, "sub": "user-1", "exp": exp, "scope": "openid",
                        "client_id": "app", "aud": ["app"]});
    f.stub.answer(&token, answer.clone());
    let before_ms = now_ms();

    let first = f.introspector.introspect(&token).await.unwrap();
    assert!(!first.cached && first.active());
    assert_eq!(Value::Object(first.response.clone()), answer);
    assert_eq!(f.stub.calls(), 1);
    let second = f.introspector.introspect(&token).await.unwrap();
    assert!(second.cached, "the second lookup is a cache hit");
    assert_eq!(second.response, first.response);
    assert_eq!(f.stub.calls(), 1, "a hit makes no call");
    if let Some(ttl) = f.pttl(&token) {
        let most = (exp * 1000).saturating_sub(before_ms) as i64;
        assert!(
            ttl > 0 && ttl <= most,
            "PTTL {ttl} ms, exp is {most} ms away"
        );
    }

    // Gone once exp has passed, and never served after it.
    wait_for_async("the entry to expire", || async {
        let asked_at = now_ms();
        let cached = f.introspector.cached(&token).await;
        if cached.is_some() {
            assert!(asked_at < exp * 1000 + 1000, "served past exp");
        }
        cached.is_none().then_some(())
    })
    .await;
    if let Some(redis) = &f.redis {
        wait_for_async("Redis to drop the key", || async {
            let exists: bool = ::redis::cmd("EXISTS")
                .arg(f.key(&token))
                .query(&mut redis.conn())
                .unwrap();
            (!exists).then_some(())
        })
        .await;
    }
    let after = f.introspector.introspect(&token).await.unwrap();
    assert!(!after.cached);
    assert_eq!(f.stub.calls(), 2, "after exp the issuer is asked again");
}

async fn the_cache_time_is_capped_by_max_ttl(f: &Fixture) {
    let token = secret_token("long");
    f.stub.answer(
        &token,
        json!({"active": true, "sub": "u", "exp": now() + 86_400}),
    );
    f.introspector.introspect(&token).await.unwrap();
    assert!(f.introspector.introspect(&token).await.unwrap().cached);
    if let Some(ttl) = f.pttl(&token) {
        let cap = IntrospectionConfig::default().max_ttl.as_millis() as i64;
        assert!(ttl > 0 && ttl <= cap, "PTTL {ttl} ms above maxTtl {cap} ms");
    }
}

async fn answers_without_exp_inactive_or_echoing_the_token_are_not_cached(f: &Fixture) {
    let no_exp = secret_token("noexp");
    f.stub.answer(&no_exp, json!({"active": true, "sub": "u"}));
    let inactive = secret_token("inactive");
    f.stub
        .answer(&inactive, json!({"active": false, "exp": now() + 3600}));
    let expired = secret_token("expired");
    f.stub.answer(
        &expired,
        json!({"active": true, "sub": "u", "exp": now() - 10}),
    );
    let echo = secret_token("echo");
    f.stub.answer(
        &echo,
        json!({"active": true, "sub": "u", "exp": now() + 3600, "token": echo}),
    );
    let unknown = secret_token("unknown");
    let mut calls = 0;
    for token in [&no_exp, &inactive, &expired, &echo, &unknown] {
        for _ in 0..2 {
            let answer = f.introspector.introspect(token).await.unwrap();
            calls += 1;
            assert!(!answer.cached, "{token} was served from the cache");
            assert_eq!(
                f.stub.calls(),
                calls,
                "{token}: every lookup asks the issuer"
            );
        }
        assert!(f.introspector.cached(token).await.is_none());
    }
    let inactive_answer = f.introspector.introspect(&unknown).await.unwrap();
    assert!(!inactive_answer.active());
    if let Some(redis) = &f.redis {
        let keys: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("{}*", f.prefix))
            .query(&mut redis.conn())
            .unwrap();
        assert!(keys.is_empty(), "{keys:?}");
    }
}

async fn concurrent_lookups_of_one_token_make_one_call(f: &Fixture) {
    let token = secret_token("busy");
    f.stub.answer(
        &token,
        json!({"active": true, "sub": "u", "exp": now() + 3600}),
    );
    f.stub.state.gate.send_replace(false);
    let lookups: Vec<_> = (0..20)
        .map(|_| {
            let introspector = f.introspector.clone();
            let token = token.clone();
            tokio::spawn(async move { introspector.introspect(&token).await })
        })
        .collect();
    wait_for_async("the first call to reach the issuer", || async {
        (f.stub.calls() >= 1).then_some(())
    })
    .await;
    // Give the other lookups time to pile up behind the held call; one that comes later
    // finds the cached answer, so this wait cannot make the test fail, only prove more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.stub.state.gate.send_replace(true);
    for lookup in lookups {
        let answer = lookup.await.unwrap().unwrap();
        assert!(answer.active());
        assert_eq!(answer.sub(), Some("u"));
    }
    assert_eq!(f.stub.calls(), 1, "20 concurrent lookups, one call");
}

async fn revoke_evicts_the_answer(f: &Fixture) {
    let token = secret_token("revoked");
    f.stub.answer(
        &token,
        json!({"active": true, "sub": "u", "exp": now() + 3600}),
    );
    f.introspector.introspect(&token).await.unwrap();
    assert!(f.introspector.cached(&token).await.is_some());
    f.introspector.evict(&token).await.unwrap();
    assert!(f.introspector.cached(&token).await.is_none());
    if let Some(stored) = f.stored(&token) {
        // A tombstone, so a lookup in flight elsewhere cannot store its answer back.
        let stored = stored.expect("a tombstone");
        assert!(stored.ends_with(r#","removed":true}"#), "{stored}");
    }
    assert!(!f.introspector.introspect(&token).await.unwrap().cached);
    assert_eq!(f.stub.calls(), 2);
}

/// Records the events it is handed, to show the wrapper passes them on.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Handler for Recorder {
    fn handle<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.0.lock().unwrap().push(event.ty.clone());
            Ok(())
        })
    }
}

fn logout_event(subject: &str, aggregate: &str) -> Event {
    serde_json::from_value(json!({
        "specversion": "1.0", "id": format!("zitadel:1:{subject}:9"), "source": "zitadel",
        "type": "auth.logout", "subject": subject, "zitadelaggregatetype": aggregate,
    }))
    .unwrap()
}

async fn a_logout_event_evicts_the_users_and_the_sessions_answers(f: &Fixture) {
    let exp = now() + 3600;
    let tokens: Vec<(String, Value)> = [
        ("a", json!({"active": true, "sub": "u-1", "exp": exp})),
        (
            "b",
            json!({"active": true, "sub": "u-1", "sid": "s-1", "exp": exp}),
        ),
        (
            "c",
            json!({"active": true, "sub": "u-2", "sid": "s-2", "exp": exp}),
        ),
        (
            "d",
            json!({"active": true, "sub": "u-2", "sid": "s-3", "exp": exp}),
        ),
    ]
    .into_iter()
    .map(|(name, answer)| (secret_token(name), answer))
    .collect();
    for (token, answer) in &tokens {
        f.stub.answer(token, answer.clone());
        f.introspector.introspect(token).await.unwrap();
    }
    let cached = async |i: usize| f.introspector.cached(&tokens[i].0).await.is_some();
    let recorder = Arc::new(Recorder::default());
    let handler = EvictOnLogout::new(f.introspector.clone(), recorder.clone());

    handler.handle(&logout_event("u-1", "user")).await.unwrap();
    assert_eq!(
        (
            cached(0).await,
            cached(1).await,
            cached(2).await,
            cached(3).await
        ),
        (false, false, true, true),
        "user u-1 logged out"
    );
    handler
        .handle(&logout_event("s-2", "session"))
        .await
        .unwrap();
    assert_eq!(
        (cached(2).await, cached(3).await),
        (false, true),
        "session s-2 terminated"
    );
    let mut login = logout_event("u-2", "user");
    login.ty = "auth.login".into();
    handler.handle(&login).await.unwrap();
    assert!(cached(3).await, "other event types evict nothing");
    assert_eq!(
        *recorder.0.lock().unwrap(),
        ["auth.logout", "auth.logout", "auth.login"]
    );
    let dropped = f.introspector.evict_subject("u-2").await.unwrap();
    assert!(
        dropped >= 1,
        "the library call reports what it dropped: {dropped}"
    );
    assert!(!cached(3).await);
}

async fn the_raw_token_is_never_stored(f: &Fixture) {
    let exp = now() + 3600;
    let tokens: Vec<String> = (0..3)
        .map(|i| secret_token(&format!("stored{i}")))
        .collect();
    for (i, token) in tokens.iter().enumerate() {
        f.stub.answer(
            token,
            json!({"active": true, "sub": format!("user-{i}"), "sid": format!("sess-{i}"),
                   "exp": exp, "scope": "openid profile"}),
        );
        f.introspector.introspect(token).await.unwrap();
        assert!(f.introspector.introspect(token).await.unwrap().cached);
    }
    let Some(redis) = &f.redis else { return };
    let mut conn = redis.conn();
    let dump = support::dump_keys(&mut conn);
    for token in &tokens {
        assert!(
            dump.contains(&token_hash(token)),
            "the entry of {token} is keyed by its hash:\n{dump}"
        );
        assert!(!dump.contains(token.as_str()), "{token} stored:\n{dump}");
    }
    assert!(dump.contains("user-1"), "the answers are there:\n{dump}");
}

async fn a_failing_issuer_is_an_error_and_nothing_is_cached(f: &Fixture) {
    let token = secret_token("fail");
    f.stub.answer(&token, json!("fail"));
    let err = f.introspector.introspect(&token).await.unwrap_err();
    assert!(err.to_string().contains("500"), "{err}");
    assert!(!err.to_string().contains(&token));
    assert!(f.introspector.cached(&token).await.is_none());
    assert!(f.introspector.introspect("").await.is_err());
}

#[tokio::test]
async fn wrong_client_credentials_are_an_error() {
    let stub = Stub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tokens_config(&stub, dir.path());
    cfg.introspection.client_secret = Some(SecretSource::value("wrong"));
    let introspector = Introspector::memory(&cfg).unwrap();
    let err = introspector.introspect("some-token").await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    assert_eq!(
        (stub.calls(), stub.state.refused.load(Ordering::SeqCst)),
        (0, 1)
    );
}

// ---- JWT verification ----

#[tokio::test]
async fn rs256_and_es256_tokens_verify_and_claims_come_back() {
    let stub = Stub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let verifier = JwtVerifier::from_config(&tokens_config(&stub, dir.path())).unwrap();
    let rs = keys().rsa1.sign("rsa-1", &claims(&stub.url));
    let claims_back = verifier.verify(&rs).await.unwrap();
    assert_eq!(claims_back["sub"], "user-1");
    assert_eq!(claims_back["scope"], "openid");
    let es = keys().ec1.sign("ec-1", &claims(&stub.url));
    assert_eq!(verifier.verify(&es).await.unwrap()["sub"], "user-1");
    assert_eq!(stub.key_fetches(), 1, "the JWKS is fetched once and kept");
}

#[tokio::test]
async fn a_rotated_key_is_fetched_once_and_refreshes_are_rate_limited() {
    let stub = Stub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let verifier = JwtVerifier::from_config(&tokens_config(&stub, dir.path())).unwrap();
    let k = keys();
    verifier
        .verify(&k.rsa1.sign("rsa-1", &claims(&stub.url)))
        .await
        .unwrap();
    assert_eq!(stub.key_fetches(), 1);

    // The issuer rotates: a token signed by the new key names a kid we do not hold.
    stub.publish(k.rsa2.jwk("rsa-2"));
    let rotated = k.rsa2.sign("rsa-2", &claims(&stub.url));
    assert_eq!(verifier.verify(&rotated).await.unwrap()["sub"], "user-1");
    assert_eq!(stub.key_fetches(), 2, "one refresh for the unknown kid");
    assert_eq!(verifier.verify(&rotated).await.unwrap()["sub"], "user-1");
    assert_eq!(stub.key_fetches(), 2);

    // Right after, another unknown kid does not refetch (even though it now exists).
    stub.publish(k.rsa3.jwk("rsa-3"));
    let err = verifier
        .verify(&k.rsa3.sign("rsa-3", &claims(&stub.url)))
        .await
        .unwrap_err();
    assert_eq!(err.reason, Reason::UnknownKey, "{err}");
    assert_eq!(stub.key_fetches(), 2, "the refresh is rate-limited");
    // Keys already held keep working.
    verifier
        .verify(&k.rsa1.sign("rsa-1", &claims(&stub.url)))
        .await
        .unwrap();
}

/// Each bad token, the reason it must be rejected with.
fn bad_tokens(issuer: &str) -> Vec<(&'static str, String)> {
    let k = keys();
    let with = |changes: Value| {
        let mut c = claims(issuer);
        for (key, value) in changes.as_object().unwrap() {
            c[key] = value.clone();
        }
        c
    };
    let good = k.rsa1.sign("rsa-1", &claims(issuer));
    let forged = k.forger.sign("rsa-1", &claims(issuer));
    // A valid header and signature from one token with the claims of another.
    let parts: Vec<&str> = good.split('.').collect();
    let other = k.rsa1.sign("rsa-1", &with(json!({"sub": "admin"})));
    let spliced = format!(
        "{}.{}.{}",
        parts[0],
        other.split('.').nth(1).unwrap(),
        parts[2]
    );
    vec![
        ("bad-signature", forged),
        ("bad-signature", spliced),
        (
            "expired",
            k.rsa1.sign(
                "rsa-1",
                &with(json!({"exp": now() - 3600, "iat": now() - 7200})),
            ),
        ),
        (
            "not-yet-valid",
            k.ec1.sign("ec-1", &with(json!({"nbf": now() + 3600}))),
        ),
        (
            "wrong-audience",
            k.rsa1.sign("rsa-1", &with(json!({"aud": "someone-else"}))),
        ),
        (
            "wrong-issuer",
            k.rsa1
                .sign("rsa-1", &with(json!({"iss": "https://evil.example.com"}))),
        ),
        ("malformed", "not-a-jwt".to_owned()),
        ("unknown-key", k.rsa3.sign("nobody", &claims(issuer))),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_keys_verify_for_jwks_max_stale_with_backed_off_refetches_then_fail_closed() {
    let stub = Stub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tokens_config(&stub, dir.path());
    cfg.jwt.jwks_max_age = Duration::from_millis(300);
    cfg.jwt.jwks_max_stale = Duration::from_secs(3);
    cfg.jwt.jwks_refresh_min = Duration::from_millis(100);
    let verifier = JwtVerifier::from_config(&cfg).unwrap();
    let token = keys().rsa1.sign("rsa-1", &claims(&stub.url));
    verifier.verify(&token).await.unwrap();
    assert_eq!(stub.state.key_fetches.load(Ordering::SeqCst), 1);
    // The issuer goes down; once the keys are stale, verifications keep working from them
    // and refetches back off instead of one per verification.
    stub.state.jwks_down.store(true, Ordering::SeqCst);
    wait_for_async("the keys to be stale and a refetch to fail", || async {
        verifier.verify(&token).await.unwrap();
        (stub.state.key_fetches.load(Ordering::SeqCst) >= 2).then_some(())
    })
    .await;
    let before = stub.state.key_fetches.load(Ordering::SeqCst);
    let concurrent =
        futures_util::future::join_all((0..200).map(|_| verifier.verify(&token))).await;
    assert!(
        concurrent.iter().all(Result::is_ok),
        "stale keys still verify"
    );
    let fetched = stub.state.key_fetches.load(Ordering::SeqCst) - before;
    assert!(fetched <= 2, "200 verifications caused {fetched} refetches");
    // Past jwksMaxAge + jwksMaxStale, verification fails closed, naming why.
    let err = wait_for_async("stale keys to stop verifying", || async {
        verifier.verify(&token).await.err()
    })
    .await;
    assert_eq!(err.reason, Reason::KeysUnavailable, "{err}");
    assert!(err.to_string().contains("jwksMaxStale"), "{err}");
}

#[tokio::test]
async fn forged_and_ambiguous_tokens_are_rejected() {
    let stub = Stub::start().await;
    // Several RSA keys: a token without a `kid` cannot say which one it means.
    stub.publish(keys().rsa2.jwk("rsa-2"));
    let dir = tempfile::tempdir().unwrap();
    let verifier = JwtVerifier::from_config(&tokens_config(&stub, dir.path())).unwrap();
    let k = keys();
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(&stub.url)).unwrap());
    let b64 = |v: Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).unwrap());
    // `alg: none`, with and without an empty signature.
    let none_header = b64(json!({"alg": "none", "typ": "JWT", "kid": "rsa-1"}));
    // HS256 keyed with the RSA public key's bytes (the key confusion attack).
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("rsa-1".into());
    let confused = jsonwebtoken::encode(
        &hs,
        &claims(&stub.url),
        &EncodingKey::from_secret(&k.rsa1.public.0),
    )
    .unwrap();
    // A valid RS256 signature by a published key, without a `kid`.
    let no_kid = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims(&stub.url),
        &k.rsa1.encoding,
    )
    .unwrap();
    // ES256 (allowed) naming a key published for RS256.
    let mismatched = k.ec1.sign("rsa-1", &claims(&stub.url));
    for (reason, token) in [
        ("malformed", format!("{none_header}.{payload}.")),
        ("malformed", format!("{none_header}.{payload}")),
        ("disallowed-algorithm", confused),
        ("unknown-key", no_kid),
        ("bad-signature", mismatched),
    ] {
        let err = verifier.verify(&token).await.unwrap_err();
        assert_eq!(err.reason.as_str(), reason, "{err}");
    }
}

#[tokio::test]
async fn bad_tokens_are_rejected_with_their_reason() {
    let stub = Stub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let verifier = JwtVerifier::from_config(&tokens_config(&stub, dir.path())).unwrap();
    for (reason, token) in bad_tokens(&stub.url) {
        let err = verifier.verify(&token).await.unwrap_err();
        assert_eq!(err.reason.as_str(), reason, "{err}");
    }
    // Within the clock-skew allowance a token is still accepted.
    let mut c = claims(&stub.url);
    c["exp"] = json!(now() - 5);
    c["nbf"] = json!(now() + 5);
    verifier
        .verify(&keys().rsa1.sign("rsa-1", &c))
        .await
        .unwrap();
}

// ---- HTTP ----
//
// What the logs must (not) hold needs the binary's stderr; the rest runs in process.

fn serve_config(stub: &Stub, dir: &std::path::Path) -> String {
    let secret = dir.join("client_secret");
    std::fs::write(&secret, CLIENT_SECRET).unwrap();
    format!(
        "backend: memory\ntokens:\n  issuer: \"{}\"\n  introspection:\n    enabled: true\n    \
         clientId: \"{CLIENT_ID}\"\n    clientSecret: {{ valueFromFile: \"{}\" }}\n  jwt:\n    \
         enabled: true\n    audiences: [\"{AUDIENCE}\"]\n",
        stub.url,
        secret.display()
    )
}

#[tokio::test]
async fn http_introspect_caches_revokes_and_never_logs_the_token() {
    let stub = Stub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path(), &serve_config(&stub, dir.path()), &["--no-auth"]).await;
    let c = support::http();
    let url = |path: &str| format!("{}/v1/tokens/{path}", served.api);
    let token = secret_token("http");
    let answer = json!({"active": true, "sub": "u-9", "exp": now() + 3600, "scope": "openid",
                        "client_id": "app", "aud": ["app"]});
    stub.answer(&token, answer.clone());

    let (status, headers, body) =
        send(c.post(url("introspect")).json(&json!({"token": token}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, answer);
    assert_eq!(headers["x-cache"], "miss");
    let (status, headers, body) =
        send(c.post(url("introspect")).json(&json!({"token": token}))).await;
    assert_eq!((status, &body), (StatusCode::OK, &answer));
    assert_eq!(headers["x-cache"], "hit");
    assert_eq!(stub.calls(), 1);

    let (status, _, _) = send(c.post(url("revoke")).json(&json!({"token": token}))).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, headers, _) = send(c.post(url("introspect")).json(&json!({"token": token}))).await;
    assert_eq!(headers["x-cache"], "miss");
    assert_eq!(stub.calls(), 2);

    let inactive = secret_token("http-inactive");
    let (status, _, body) = send(c.post(url("introspect")).json(&json!({"token": inactive}))).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"active": false})));

    let failing = secret_token("http-fail");
    stub.answer(&failing, json!("fail"));
    let (status, _, body) = send(c.post(url("introspect")).json(&json!({"token": failing}))).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["type"], "issuer-unavailable");
    assert!(!body.to_string().contains(&failing));

    let (status, _, body) = send(c.post(url("introspect")).json(&json!({"tok": token}))).await;
    assert_eq!(
        (status, body["type"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid-body"))
    );
    assert!(!body.to_string().contains(&token));
    let (status, _, body) = send(c.post(url("introspect")).json(&json!({"token": ""}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (_, _, doc) = send(c.get(format!("{}/openapi.json", served.api))).await;
    for path in [
        "/v1/tokens/introspect",
        "/v1/tokens/revoke",
        "/v1/tokens/verify",
    ] {
        assert!(
            doc["paths"][path]["post"].is_object(),
            "{path} not documented"
        );
    }

    let logs = served.logs();
    assert!(
        logs.contains("introspection call failed"),
        "the failure is logged:\n{logs}"
    );
    for t in [&token, &inactive, &failing] {
        assert!(!logs.contains(t.as_str()), "{t} in the logs:\n{logs}");
    }
}

#[tokio::test]
async fn http_verify_answers_claims_or_a_401_naming_the_reason() {
    let stub = Stub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = App::from_yaml(&serve_config(&stub, dir.path())).await;
    let url = "/v1/tokens/verify";

    let good = keys().ec1.sign("ec-1", &claims(&stub.url));
    let (status, body) = app.post_json(url, &json!({"token": good})).await.parts();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["valid"], true);
    assert_eq!(body["claims"]["sub"], "user-1");
    assert_eq!(body["claims"]["aud"], json!([AUDIENCE, "other"]));

    for (reason, token) in bad_tokens(&stub.url) {
        let answer = app.post_json(url, &json!({"token": token})).await;
        let body = answer.json();
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{reason}: {body}");
        assert_eq!(answer.headers["content-type"], "application/problem+json");
        assert_eq!(body["type"], "invalid-token");
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.starts_with(&format!("{reason}:")),
            "{reason}: {detail}"
        );
        assert!(!detail.contains(&token));
    }
}

#[tokio::test]
async fn http_token_routes_answer_404_while_disabled() {
    let app = App::memory().await;
    for path in ["introspect", "revoke", "verify"] {
        let (status, body) = app
            .post_json(&format!("/v1/tokens/{path}"), &json!({"token": "x"}))
            .await
            .parts();
        // Switched off in config: not a transient failure, so not a 5xx.
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["type"], "tokens-disabled");
    }
}

// ---- configuration ----

#[test]
fn token_config_errors_name_the_key_and_the_secret_is_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let base = "server: { auth: { enabled: false } }\n";
    for (yaml, key) in [
        (
            "tokens:\n  introspection: { enabled: true, clientId: a, clientSecret: { value: b } }\n",
            "tokens.issuer",
        ),
        ("tokens:\n  issuer: \"ftp://x\"\n", "tokens.issuer"),
        (
            "tokens:\n  issuer: \"https://z.example.com\"\n  introspection: { enabled: true, clientSecret: { value: b } }\n",
            "tokens.introspection.clientId",
        ),
        (
            "tokens:\n  issuer: \"https://z.example.com\"\n  introspection: { enabled: true, clientId: a }\n",
            "tokens.introspection.clientSecret",
        ),
        (
            "tokens:\n  issuer: \"https://z.example.com\"\n  jwt: { enabled: true }\n",
            "tokens.jwt.audiences",
        ),
        (
            "tokens:\n  jwt: { algorithms: [RS256, HS256] }\n",
            "tokens.jwt.algorithms[1]",
        ),
        (
            "tokens:\n  introspection: { maxTtl: 0s }\n",
            "tokens.introspection.maxTtl",
        ),
        (
            "tokens:\n  jwt: { clockSkew: 1 minute }\n",
            "tokens.jwt.clockSkew",
        ),
        ("tokens:\n  audience: x\n", "audience"),
    ] {
        let file = support::serve::write(dir.path(), "c.yaml", &format!("{base}{yaml}"));
        let out = support::serve::run(&["config", "check", file.to_str().unwrap()], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{yaml} was accepted");
        assert!(stderr.contains(key), "{yaml}: expected {key} in: {stderr}");
    }

    let file = support::serve::write(
        dir.path(),
        "ok.yaml",
        &format!(
            "{base}tokens:\n  issuer: \"https://z.example.com\"\n  introspection: {{ enabled: true, \
             clientId: a, clientSecret: {{ value: very-secret-value }} }}\n  jwt: {{ enabled: true, \
             audiences: [api] }}\n"
        ),
    );
    let out = support::serve::run(&["config", "check", file.to_str().unwrap()], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = support::serve::run(
        &["config", "print", "--config", file.to_str().unwrap()],
        &[],
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("clientSecret"), "{printed}");
    assert!(!printed.contains("very-secret-value"), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_or_logout_on_another_instance_keeps_an_answer_in_flight_out_of_the_cache() {
    let f = fixture(Store::Redis).await;
    let redis = f.redis.as_ref().unwrap();
    let cfg = tokens_config(&f.stub, f._dir.path());
    let backend = RedisBackend::connect(RedisConfig::standalone("127.0.0.1", redis.port))
        .await
        .unwrap();
    let other = Introspector::redis(&cfg, backend).unwrap();
    other.ready().await;
    for (i, how) in ["revoke", "logout"].into_iter().enumerate() {
        let token = secret_token(&format!("in-flight-{how}"));
        f.stub.answer(
            &token,
            json!({"active": true, "sub": "u-9", "exp": now() + 3600}),
        );
        // The issuer holds its answer while the other instance revokes the token or logs
        // the user out.
        f.stub.state.gate.send_replace(false);
        let lookup = tokio::spawn({
            let introspector = f.introspector.clone();
            let token = token.clone();
            async move { introspector.introspect(&token).await }
        });
        wait_for_async("the lookup to reach the issuer", || async {
            (f.stub.calls() > i).then_some(())
        })
        .await;
        match how {
            "revoke" => other.evict(&token).await.unwrap(),
            _ => {
                other.evict_subject("u-9").await.unwrap();
            }
        }
        f.stub.state.gate.send_replace(true);
        // The caller gets the answer it asked for ...
        assert!(lookup.await.unwrap().unwrap().active());
        // ... but no instance caches it, and Redis does not hold it.
        assert!(f.introspector.cached(&token).await.is_none(), "{how}");
        assert!(other.cached(&token).await.is_none(), "{how}");
        let stored = f.stored(&token).unwrap().unwrap_or_default();
        assert!(!stored.contains("active"), "{how}: {stored}");
    }
}
