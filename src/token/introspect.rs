//! Token introspection (RFC 7662) against ZITADEL, with a cache.
//!
//! The client authenticates with HTTP Basic (`client_id` / `client_secret`, each
//! form-encoded first as RFC 6749 §2.3.1 asks). ZITADEL also accepts `private_key_jwt`;
//! Basic needs only a secret file from the Vault agent and no key handling here.
//!
//! Results live in a [`Cache`] of their own (`tokens.introspection.keyPrefix`, namespace
//! `introspect`, key = [`token_hash`]), so the memory backend, Redis, L1 and the backplane
//! behave as for any cached value. What is cached, and for how long, is decided here:
//!
//! - only `active: true` results with a numeric `exp`, for `exp − now` capped by
//!   `maxTtl` (an entry is never served past `exp`: the cache drops it, and a hit is
//!   checked against `exp` again);
//! - entries are tagged with their `sub` and `sid` (hashed, so any id fits a tag), which
//!   is how a logout drops them;
//! - an eviction that happens while a lookup is running stops that lookup from caching
//!   its (older) answer.
//!
//! Concurrent lookups of one token on this instance share one call to the issuer. A cache
//! that fails (Redis down) is skipped: the issuer is the source of truth.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use serde_json::{Map, Value};

use super::{check_token, token_hash, unix_now};
use crate::backend::{Backend, RedisBackend};
use crate::cache::{Cache, CacheError, SetOptions, WriteMark};
use crate::config::secret::WatchedSecret;
use crate::config::{CacheConfig, TokensConfig};

/// Cache namespace of introspection results.
pub const NAMESPACE: &str = "introspect";

/// How often the client secret file is checked for a new value.
const SECRET_RECHECK: Duration = Duration::from_secs(5);

/// Why an introspection or an eviction failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IntrospectError {
    /// The token cannot be a token (empty, too long, spaces or control characters).
    #[error("invalid token: {0}")]
    InvalidToken(&'static str),
    /// The issuer could not be reached, refused our client, or answered something that is
    /// not an introspection response.
    #[error("introspection failed: {0}")]
    Upstream(String),
    /// The client secret could not be read.
    #[error("tokens.introspection.clientSecret: {0}")]
    Secret(#[from] crate::config::SecretError),
    /// The cache failed while evicting.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// An introspection answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Introspection {
    /// The JSON object as the issuer returned it (`active`, `sub`, `exp`, `scope`,
    /// `client_id`, `aud`, …).
    pub response: Map<String, Value>,
    /// Whether it came from the cache rather than from a call to the issuer.
    pub cached: bool,
}

impl Introspection {
    /// `active` of the answer (`false` when missing).
    pub fn active(&self) -> bool {
        self.response.get("active") == Some(&Value::Bool(true))
    }

    /// `sub`, the user id.
    pub fn sub(&self) -> Option<&str> {
        self.response.get("sub").and_then(Value::as_str)
    }

    /// `exp`, in seconds since the Unix epoch.
    pub fn exp(&self) -> Option<f64> {
        self.response.get("exp").and_then(Value::as_f64)
    }
}

/// Introspects tokens, with a cache. Cheap to clone.
///
/// # Examples
/// ```
/// use blinkchamber::config::{IntrospectionConfig, SecretSource, TokensConfig};
/// use blinkchamber::token::Introspector;
///
/// let mut cfg = TokensConfig::default().with_issuer("https://zitadel.example.com");
/// cfg.introspection = IntrospectionConfig::default()
///     .with_client("api@project", SecretSource::value("s3cret"));
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let introspector = Introspector::memory(&cfg).unwrap();
/// assert!(introspector.introspect("").await.is_err());
/// # });
/// ```
#[derive(Clone)]
pub struct Introspector {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: String,
    client_id: String,
    secret: WatchedSecret,
    http: reqwest::Client,
    cache: Cache,
    max_ttl: Duration,
    /// Lookups running on this instance, by token hash, each with its number.
    loads: std::sync::Mutex<HashMap<String, (u64, SharedLoad)>>,
    /// Numbers lookups, so one only ever removes itself from `loads`.
    load_ids: AtomicU64,
    /// Bumped by every eviction; a lookup that saw it move does not cache its answer.
    evictions: AtomicU64,
}

type SharedLoad = Shared<BoxFuture<'static, Result<Arc<Map<String, Value>>, Arc<IntrospectError>>>>;

impl Introspector {
    /// The introspector on the backend the config names (`cache.redis` for Redis).
    ///
    /// # Errors
    /// The client secret cannot be read, or the HTTP client cannot be built.
    pub fn from_config(cfg: &TokensConfig, backend: &Backend) -> Result<Self, IntrospectError> {
        match backend {
            Backend::Memory(_) => Self::memory(cfg),
            Backend::Redis(r) => Self::redis(cfg, r.cache.clone()),
        }
    }

    /// Results cached in this process only.
    ///
    /// # Errors
    /// As [`Introspector::from_config`].
    pub fn memory(cfg: &TokensConfig) -> Result<Self, IntrospectError> {
        Self::build(cfg, Cache::memory(&cache_config(cfg)))
    }

    /// Results cached in Redis (and in memory in front of it). Must be called inside a
    /// Tokio runtime.
    ///
    /// # Errors
    /// As [`Introspector::from_config`].
    pub fn redis(cfg: &TokensConfig, backend: RedisBackend) -> Result<Self, IntrospectError> {
        Self::build(cfg, Cache::redis(&cache_config(cfg), backend))
    }

    fn build(cfg: &TokensConfig, cache: Cache) -> Result<Self, IntrospectError> {
        let intro = &cfg.introspection;
        let source = intro.client_secret.clone().ok_or_else(|| {
            IntrospectError::Upstream("tokens.introspection.clientSecret is not set".into())
        })?;
        let http = crate::http_client::builder()
            .timeout(intro.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| IntrospectError::Upstream(format!("HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                endpoint: format!("{}/oauth/v2/introspect", cfg.issuer_base()),
                client_id: intro.client_id.clone(),
                secret: WatchedSecret::new(source, SECRET_RECHECK)?,
                http,
                cache,
                max_ttl: intro.max_ttl,
                loads: std::sync::Mutex::default(),
                load_ids: AtomicU64::new(0),
                evictions: AtomicU64::new(0),
            }),
        })
    }

    /// Resolves once evictions on other instances reach this one (Redis backplane).
    pub async fn ready(&self) {
        self.inner.cache.ready().await;
    }

    /// The issuer's answer for `token`: from the cache when an unexpired active result is
    /// there, otherwise from one call to the issuer shared by every concurrent caller.
    ///
    /// An inactive token is an `Ok` answer with `active: false`, not an error.
    ///
    /// # Errors
    /// [`IntrospectError::InvalidToken`], [`IntrospectError::Upstream`].
    pub async fn introspect(&self, token: &str) -> Result<Introspection, IntrospectError> {
        check_token(token).map_err(IntrospectError::InvalidToken)?;
        metrics::counter!("blinkchamber_token_introspections_total").increment(1);
        let key = token_hash(token);
        if let Some(response) = self.inner.cached(&key).await {
            metrics::counter!("blinkchamber_token_introspection_cache_hits_total").increment(1);
            return Ok(Introspection {
                response,
                cached: true,
            });
        }
        metrics::counter!("blinkchamber_token_introspection_cache_misses_total").increment(1);
        let load = Inner::load(&self.inner, key, token);
        match load.await {
            Ok(response) => Ok(Introspection {
                response: (*response).clone(),
                cached: false,
            }),
            Err(e) => Err(match &*e {
                IntrospectError::InvalidToken(m) => IntrospectError::InvalidToken(m),
                IntrospectError::Upstream(m) => IntrospectError::Upstream(m.clone()),
                other => IntrospectError::Upstream(other.to_string()),
            }),
        }
    }

    /// The cached answer for `token`, without calling the issuer.
    pub async fn cached(&self, token: &str) -> Option<Map<String, Value>> {
        check_token(token).ok()?;
        self.inner.cached(&token_hash(token)).await
    }

    /// Drops the cached answer for `token` here, in Redis and on every instance.
    ///
    /// # Errors
    /// [`IntrospectError::InvalidToken`], [`IntrospectError::Cache`].
    pub async fn evict(&self, token: &str) -> Result<(), IntrospectError> {
        check_token(token).map_err(IntrospectError::InvalidToken)?;
        let key = token_hash(token);
        self.inner.evictions.fetch_add(1, Ordering::SeqCst);
        self.inner
            .loads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        self.inner.cache.remove(NAMESPACE, &key).await?;
        metrics::counter!("blinkchamber_token_evictions_total", "reason" => "revoke").increment(1);
        Ok(())
    }

    /// Drops every cached answer whose `sub` is `user_id`; returns how many were tagged
    /// with it (on Redis this may count entries another eviction already dropped).
    ///
    /// # Errors
    /// [`IntrospectError::Cache`].
    pub async fn evict_subject(&self, user_id: &str) -> Result<u64, IntrospectError> {
        self.evict_tag(&tag("sub", user_id)).await
    }

    /// Drops every cached answer whose ZITADEL session (`sid`) is `session_id`; counted as
    /// in [`Introspector::evict_subject`].
    ///
    /// # Errors
    /// [`IntrospectError::Cache`].
    pub async fn evict_session(&self, session_id: &str) -> Result<u64, IntrospectError> {
        self.evict_tag(&tag("sid", session_id)).await
    }

    async fn evict_tag(&self, tag: &str) -> Result<u64, IntrospectError> {
        self.inner.evictions.fetch_add(1, Ordering::SeqCst);
        let removed = self.inner.cache.remove_by_tag(NAMESPACE, tag).await?;
        metrics::counter!("blinkchamber_token_evictions_total", "reason" => "logout")
            .increment(removed);
        Ok(removed)
    }
}

impl Inner {
    /// An unexpired active answer from the cache; a failing cache is a miss.
    async fn cached(&self, key: &str) -> Option<Map<String, Value>> {
        let json = match self.cache.get_json(NAMESPACE, key).await {
            Ok(found) => found?,
            Err(error) => {
                metrics::counter!("blinkchamber_token_introspection_cache_errors_total")
                    .increment(1);
                tracing::warn!(%error, "tokens: cache read failed; asking the issuer");
                return None;
            }
        };
        let response: Map<String, Value> = serde_json::from_slice(&json).ok()?;
        // The cache drops entries at `exp`; this guards against any copy outliving it.
        let exp = response.get("exp").and_then(Value::as_f64)?;
        (response.get("active") == Some(&Value::Bool(true)) && exp > unix_now()).then_some(response)
    }

    /// The running lookup of `key`, or a new one in a task of its own (so it finishes and
    /// caches even if its first caller goes away).
    fn load(this: &Arc<Self>, key: String, token: &str) -> SharedLoad {
        let mut loads = this.loads.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, running)) = loads.get(&key) {
            return running.clone();
        }
        let id = this.load_ids.fetch_add(1, Ordering::Relaxed);
        let seen = this.evictions.load(Ordering::SeqCst);
        let inner = Arc::clone(this);
        let token = token.to_owned();
        let task_key = key.clone();
        let task = tokio::spawn(async move {
            // Taken before the issuer is asked: a revocation or logout after it, on any
            // instance, keeps the answer out of the cache.
            let mark = match inner.cache.mark(NAMESPACE, &task_key).await {
                Ok(mark) => Some(mark),
                Err(error) => {
                    tracing::warn!(%error, "tokens: cache unavailable; the answer is not cached");
                    None
                }
            };
            // A lookup that finished between the caller's cache read and this task.
            let loaded = match inner.cached(&task_key).await {
                Some(response) => Ok(response),
                None => inner.call_and_cache(&task_key, &token, seen, mark).await,
            };
            let mut loads = inner.loads.lock().unwrap_or_else(|e| e.into_inner());
            // An eviction may have removed this lookup and another may have started.
            if loads
                .get(&task_key)
                .is_some_and(|(running, _)| *running == id)
            {
                loads.remove(&task_key);
            }
            loaded.map(Arc::new).map_err(Arc::new)
        });
        let shared = async move {
            task.await.unwrap_or_else(|e| {
                Err(Arc::new(IntrospectError::Upstream(format!(
                    "the lookup task failed: {e}"
                ))))
            })
        }
        .boxed()
        .shared();
        loads.insert(key, (id, shared.clone()));
        shared
    }

    async fn call_and_cache(
        &self,
        key: &str,
        token: &str,
        seen: u64,
        mark: Option<WriteMark>,
    ) -> Result<Map<String, Value>, IntrospectError> {
        let response = self.call(token).await?;
        if let Some((ttl, tags)) = self.cacheable(&response, token)
            && self.evictions.load(Ordering::SeqCst) == seen
            && let Some(mark) = mark
        {
            let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
            let options = SetOptions {
                ttl: Some(ttl),
                category: None,
                tags: &tags,
            };
            let json = serde_json::to_vec(&response).unwrap_or_default();
            let stored = self
                .cache
                .set_json_if_unchanged(NAMESPACE, key, json, options, mark)
                .await;
            if let Err(error) = stored {
                metrics::counter!("blinkchamber_token_introspection_cache_errors_total")
                    .increment(1);
                tracing::warn!(%error, "tokens: cache write failed; the answer is not cached");
            }
            // An eviction that raced the write wins: drop what was just written.
            if self.evictions.load(Ordering::SeqCst) != seen {
                let _ = self.cache.remove(NAMESPACE, key).await;
            }
        }
        Ok(response)
    }

    /// How long `response` may be cached and its tags, or `None` when it must not be:
    /// inactive, no numeric `exp`, already expired, or (defensively) echoing the token.
    fn cacheable(
        &self,
        response: &Map<String, Value>,
        token: &str,
    ) -> Option<(Duration, Vec<String>)> {
        if response.get("active") != Some(&Value::Bool(true)) {
            return None;
        }
        let exp = response.get("exp").and_then(Value::as_f64)?;
        let left = exp - unix_now();
        if !left.is_finite() || left < 0.001 {
            return None;
        }
        let ttl = Duration::from_secs_f64(left.min(self.max_ttl.as_secs_f64()));
        // Whole milliseconds, rounded down, so the entry never outlives `exp`.
        let ttl = Duration::from_millis(ttl.as_millis() as u64);
        if ttl.is_zero() {
            return None;
        }
        if serde_json::to_string(response).is_ok_and(|json| json.contains(token)) {
            tracing::warn!("tokens: the issuer's answer contains the token; not cached");
            return None;
        }
        let mut tags = Vec::new();
        for (field, kind) in [("sub", "sub"), ("sid", "sid")] {
            if let Some(id) = response.get(field).and_then(Value::as_str)
                && !id.is_empty()
            {
                tags.push(tag(kind, id));
            }
        }
        Some((ttl, tags))
    }

    /// One call to the introspection endpoint.
    async fn call(&self, token: &str) -> Result<Map<String, Value>, IntrospectError> {
        let secret = self.secret.get();
        let credentials = format!(
            "{}:{}",
            form_encode(&self.client_id),
            form_encode(secret.expose())
        );
        let authorization = format!(
            "Basic {}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, credentials)
        );
        let started = Instant::now();
        let sent = self
            .http
            .post(&self.endpoint)
            .header(reqwest::header::AUTHORIZATION, authorization)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&[("token", token)])
            .send()
            .await;
        let result = match sent {
            Err(e) if e.is_timeout() => Err(("timeout", "no answer in time".to_owned())),
            Err(e) => Err(("transport", e.without_url().to_string())),
            Ok(response) if !response.status().is_success() => Err((
                "status",
                format!("the issuer answered {}", response.status()),
            )),
            Ok(response) => match response.json::<Map<String, Value>>().await {
                Ok(body) if body.get("active").is_some_and(Value::is_boolean) => Ok(body),
                Ok(_) => Err(("decode", "the answer has no boolean `active`".to_owned())),
                Err(e) => Err(("decode", format!("the answer is not a JSON object: {e}"))),
            },
        };
        metrics::histogram!("blinkchamber_token_introspection_upstream_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        result.map_err(|(kind, message)| {
            metrics::counter!("blinkchamber_token_introspection_upstream_errors_total", "kind" => kind)
                .increment(1);
            tracing::warn!(kind, error = %message, "tokens: introspection call failed");
            IntrospectError::Upstream(message)
        })
    }
}

/// The cache's settings for introspection results: no jitter (the TTL is exact) and no
/// fail-safe (an expired answer is never served, even when Redis fails).
fn cache_config(cfg: &TokensConfig) -> CacheConfig {
    CacheConfig {
        key_prefix: cfg.introspection.key_prefix.clone(),
        jitter_percent: 0,
        fail_safe_max_duration: Duration::ZERO,
        ..CacheConfig::default()
    }
}

/// `sub-{sha256 hex}` / `sid-{sha256 hex}`: ids of any shape fit the cache's tag rules.
fn tag(kind: &str, id: &str) -> String {
    format!("{kind}-{}", token_hash(id))
}

/// `application/x-www-form-urlencoded` encoding of one value (RFC 6749 §2.3.1 asks for it
/// on Basic credentials; ZITADEL decodes them).
fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*') {
            out.push(char::from(b));
        } else if b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_form_encoded() {
        assert_eq!(form_encode("api@proj"), "api%40proj");
        assert_eq!(form_encode("a b+c:d"), "a+b%2Bc%3Ad");
        assert_eq!(form_encode("Az09-._*"), "Az09-._*");
    }

    #[test]
    fn tags_hash_the_id() {
        let t = tag("sub", "user|with:odd chars");
        assert!(t.starts_with("sub-") && t.len() == 68, "{t}");
    }
}
