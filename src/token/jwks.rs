//! The issuer's signing keys (JWKS at `{issuer}/oauth/v2/keys`), fetched and kept.
//!
//! Keys are fetched on first use and kept for `jwksMaxAge`, so a key the issuer retired
//! stops verifying within that time. A token naming a `kid` we do not hold means the
//! issuer rotated keys: the set is fetched again, but at most once per `jwksRefreshMin`,
//! so a stream of forged `kid`s cannot turn us into a load generator against the issuer.
//! Fetches are serialised; verifications with known keys never wait for one.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{Jwk, JwkSet};

use crate::config::TokensConfig;

/// Least time between two fetches while no key is held at all (the issuer was down).
const EMPTY_RETRY: Duration = Duration::from_secs(1);

/// One usable key.
pub struct Key {
    /// The key as the issuer published it (`alg`, `use`, …).
    pub jwk: Jwk,
    /// The key ready to verify with.
    pub decoding: DecodingKey,
}

/// Why no key was found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The set holds no key with this `kid`, even after a refresh (or a refresh was not
    /// allowed yet).
    #[error("no key with kid `{0}` in the issuer's JWKS")]
    Unknown(String),
    /// The token names no `kid` and the set has more than one candidate key.
    #[error("the token names no kid and the JWKS has several keys")]
    Ambiguous,
    /// The JWKS could not be fetched and no keys are held.
    #[error("the issuer's JWKS is unavailable: {0}")]
    Unavailable(String),
}

/// The fetched key set of one issuer. Cheap to clone.
#[derive(Clone)]
pub struct Jwks {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    http: reqwest::Client,
    refresh_min: Duration,
    max_age: Duration,
    max_stale: Duration,
    keys: RwLock<Snapshot>,
    /// Held while fetching; the time of the last refresh caused by an unknown `kid`.
    fetch: tokio::sync::Mutex<FetchState>,
}

#[derive(Clone, Default)]
struct Snapshot {
    keys: Arc<HashMap<String, Arc<Key>>>,
    fetched_at: Option<Instant>,
}

#[derive(Default)]
struct FetchState {
    last_unknown_refresh: Option<Instant>,
    last_attempt: Option<Instant>,
    /// Failed fetches in a row (backoff while the held keys are stale).
    failures: u32,
}

impl Jwks {
    /// The key set of `cfg.issuer`.
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn from_config(cfg: &TokensConfig) -> Result<Self, KeyError> {
        let http = crate::http_client::builder()
            .timeout(cfg.jwt.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| KeyError::Unavailable(format!("HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                url: format!("{}/oauth/v2/keys", cfg.issuer_base()),
                http,
                refresh_min: cfg.jwt.jwks_refresh_min,
                max_age: cfg.jwt.jwks_max_age,
                max_stale: cfg.jwt.jwks_max_stale,
                keys: RwLock::default(),
                fetch: tokio::sync::Mutex::default(),
            }),
        })
    }

    /// The key a token with `kid` (and signed with `alg`) names, fetching the set when
    /// needed and allowed.
    ///
    /// # Errors
    /// [`KeyError`].
    pub async fn key(
        &self,
        kid: Option<&str>,
        alg: jsonwebtoken::Algorithm,
    ) -> Result<Arc<Key>, KeyError> {
        let snapshot = self.snapshot();
        if self.is_fresh(&snapshot)
            && let Some(key) = find(&snapshot, kid, alg)?
        {
            return Ok(key);
        }
        let mut fetch = self.inner.fetch.lock().await;
        // Another caller may have fetched while this one waited.
        let snapshot = self.snapshot();
        let fresh = self.is_fresh(&snapshot);
        if fresh && let Some(key) = find(&snapshot, kid, alg)? {
            return Ok(key);
        }
        let now = Instant::now();
        let since = |t: Option<Instant>| t.map_or(Duration::MAX, |t| now.duration_since(t));
        let allowed = if snapshot.keys.is_empty() {
            since(fetch.last_attempt) >= EMPTY_RETRY
        } else if !fresh {
            // Stale keys: refetch, but after failures back off (refresh_min, doubling,
            // at most max_age), so a down issuer is not asked once per verification.
            let backoff =
                crate::backoff::doubled(self.inner.refresh_min, fetch.failures, self.inner.max_age);
            fetch.failures == 0 || since(fetch.last_attempt) >= backoff
        } else {
            // Fresh keys and an unknown kid: a rotation, or a forgery.
            since(fetch.last_unknown_refresh) >= self.inner.refresh_min
        };
        if allowed {
            if fresh {
                fetch.last_unknown_refresh = Some(now);
            }
            fetch.last_attempt = Some(now);
            match self.fetch().await {
                Ok(keys) => {
                    fetch.failures = 0;
                    let mut held = self.inner.keys.write().unwrap_or_else(|e| e.into_inner());
                    *held = Snapshot {
                        keys: Arc::new(keys),
                        fetched_at: Some(Instant::now()),
                    };
                }
                Err(message) if snapshot.keys.is_empty() => {
                    fetch.failures = fetch.failures.saturating_add(1);
                    return Err(KeyError::Unavailable(message));
                }
                // Keep verifying with the keys held, within jwksMaxStale; the next
                // attempt is rate-limited.
                Err(_) => fetch.failures = fetch.failures.saturating_add(1),
            }
        }
        drop(fetch);
        let snapshot = self.snapshot();
        if snapshot
            .fetched_at
            .is_some_and(|t| t.elapsed() >= self.inner.max_age.saturating_add(self.inner.max_stale))
        {
            return Err(KeyError::Unavailable(
                "the keys held are older than tokens.jwt.jwksMaxAge + jwksMaxStale and the \
                 issuer's JWKS cannot be fetched"
                    .into(),
            ));
        }
        find(&snapshot, kid, alg)?.ok_or_else(|| KeyError::Unknown(kid.unwrap_or("").to_owned()))
    }

    fn snapshot(&self) -> Snapshot {
        self.inner
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn is_fresh(&self, snapshot: &Snapshot) -> bool {
        snapshot
            .fetched_at
            .is_some_and(|t| t.elapsed() < self.inner.max_age)
    }

    /// Fetches and parses the set; keys that cannot be used are skipped.
    async fn fetch(&self) -> Result<HashMap<String, Arc<Key>>, String> {
        let fetched = async {
            let response = self
                .inner
                .http
                .get(&self.inner.url)
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .await
                .map_err(|e| e.without_url().to_string())?;
            if !response.status().is_success() {
                return Err(format!("the issuer answered {}", response.status()));
            }
            response
                .json::<JwkSet>()
                .await
                .map_err(|e| format!("not a JWKS: {e}"))
        }
        .await;
        let set = match fetched {
            Ok(set) => set,
            Err(message) => {
                metrics::counter!("blinkchamber_token_jwks_refreshes_total", "result" => "error")
                    .increment(1);
                tracing::warn!(error = %message, "tokens: JWKS fetch failed");
                return Err(message);
            }
        };
        metrics::counter!("blinkchamber_token_jwks_refreshes_total", "result" => "ok").increment(1);
        let mut keys = HashMap::new();
        for jwk in set.keys {
            let kid = jwk.common.key_id.clone().unwrap_or_default();
            match DecodingKey::from_jwk(&jwk) {
                Ok(decoding) => {
                    keys.insert(kid, Arc::new(Key { jwk, decoding }));
                }
                Err(error) => tracing::warn!(%kid, %error, "tokens: JWKS key skipped"),
            }
        }
        tracing::info!(keys = keys.len(), "tokens: JWKS fetched");
        Ok(keys)
    }
}

/// The key for `kid`; without a `kid`, the only key usable with `alg`.
fn find(
    snapshot: &Snapshot,
    kid: Option<&str>,
    alg: jsonwebtoken::Algorithm,
) -> Result<Option<Arc<Key>>, KeyError> {
    if let Some(kid) = kid {
        return Ok(snapshot.keys.get(kid).cloned());
    }
    let family = alg.family();
    let mut candidates = snapshot
        .keys
        .values()
        .filter(|k| k.decoding.family() == family);
    match (candidates.next(), candidates.next()) {
        (Some(key), None) => Ok(Some(key.clone())),
        (Some(_), Some(_)) => Err(KeyError::Ambiguous),
        (None, _) => Ok(None),
    }
}
