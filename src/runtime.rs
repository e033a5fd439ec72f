//! [`Runtime`]: every capability built from one [`Config`], with one shutdown.
//!
//! `blinkchamber serve`, `worker`, `events` and a Rust service embedding the library all
//! start here: the backend (the memory store, or the Redis connections with their
//! Sentinel supervisors) is built once and shared by every capability.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use blinkchamber::{Config, Runtime};
//!
//! let config = Config::load(Some(std::path::Path::new("config.yaml")))?;
//! let runtime = Runtime::from_config(&config).await?;
//! let user = runtime.cache().get::<serde_json::Value>("users", "42").await?;
//! let decision = runtime.limits().check("api", "client-7", 1).await?;
//! # let _ = (user, decision);
//! runtime.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! A process that needs only some capabilities names them, so it starts none of the
//! others' background tasks (the cache and the locks each keep a Redis subscription).
//! The backend's Redis handles are opened either way:
//!
//! ```no_run
//! # async fn run(config: blinkchamber::Config) -> Result<(), blinkchamber::RuntimeError> {
//! use blinkchamber::runtime::{Capability, Runtime};
//!
//! let runtime = Runtime::with(&config, &[Capability::Events, Capability::Tokens]).await?;
//! runtime.start_workers()?;
//! // … until the process is told to stop:
//! runtime.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::sync::{Arc, Mutex};

use crate::backend::{Backend, BackendError};
use crate::cache::Cache;
use crate::config::Config;
use crate::events::{Events, EventsError, Handler, Workers};
use crate::lock::Locks;
use crate::ratelimit::{RateLimitError, RateLimiter};
use crate::session::Sessions;
use crate::token::{EvictOnLogout, IntrospectError, Introspector, JwtVerifier, VerifyError};

/// A capability a [`Runtime`] can build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    /// The two-level cache (`cache`).
    Cache,
    /// Server-side sessions (`sessions`).
    Sessions,
    /// Token introspection and JWT verification (`tokens`), each half while enabled.
    Tokens,
    /// Rate limits (`rateLimit`).
    Limits,
    /// Distributed locks (`locks`).
    Locks,
    /// Event publishing, the queues and workers (`events`), while enabled.
    Events,
}

impl Capability {
    /// Every capability.
    pub const ALL: [Self; 6] = [
        Self::Cache,
        Self::Sessions,
        Self::Tokens,
        Self::Limits,
        Self::Locks,
        Self::Events,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Cache => "Cache",
            Self::Sessions => "Sessions",
            Self::Tokens => "Tokens",
            Self::Limits => "Limits",
            Self::Locks => "Locks",
            Self::Events => "Events",
        }
    }
}

/// Why a [`Runtime`] could not be built. Each names the config block at fault.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The backend cannot be built: unusable Redis settings, no Sentinel answers, an
    /// evicting `maxmemory-policy`.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// `rateLimit` cannot be built.
    #[error("rateLimit: {0}")]
    Limits(#[from] RateLimitError),
    /// `tokens.introspection` cannot be built (its client secret cannot be read).
    #[error(transparent)]
    Introspection(#[from] IntrospectError),
    /// `tokens.jwt` cannot be built.
    #[error("tokens.jwt: {0}")]
    Verification(#[from] VerifyError),
    /// `events` cannot be built.
    #[error(transparent)]
    Events(#[from] EventsError),
    /// [`Runtime::start_workers`] without the events capability, or with it turned off.
    #[error("events.enabled: event streaming is turned off, so there are no queues to consume")]
    EventsDisabled,
    /// [`Runtime::start_workers`] called twice.
    #[error("the runtime's workers are already running")]
    WorkersRunning,
}

/// The backend and every capability built from one [`Config`].
///
/// Cheap to clone: clones share the backend, the capabilities and the workers.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    backend: Backend,
    cache: Option<Cache>,
    sessions: Option<Sessions>,
    limits: Option<RateLimiter>,
    locks: Option<Locks>,
    /// `None` while the capability was not asked for; inside, each half while enabled.
    tokens: Option<Tokens>,
    events: Option<Events>,
    workers: Mutex<Option<Workers>>,
}

#[derive(Default)]
struct Tokens {
    introspector: Option<Introspector>,
    verifier: Option<JwtVerifier>,
}

impl Runtime {
    /// Builds the backend and every capability of `config`. Must run inside a Tokio
    /// runtime (capabilities start their background tasks).
    ///
    /// # Errors
    /// See [`RuntimeError`].
    pub async fn from_config(config: &Config) -> Result<Self, RuntimeError> {
        Self::with(config, &Capability::ALL).await
    }

    /// Builds the backend and only the named capabilities. Asking a runtime for one it
    /// did not build panics (see each accessor).
    ///
    /// # Errors
    /// See [`RuntimeError`].
    pub async fn with(config: &Config, capabilities: &[Capability]) -> Result<Self, RuntimeError> {
        let wants = |c: Capability| capabilities.contains(&c);
        let backend = Backend::from_config(config).await?;
        let tokens = if wants(Capability::Tokens) {
            let cfg = &config.tokens;
            Some(Tokens {
                introspector: cfg
                    .introspection
                    .enabled
                    .then(|| Introspector::from_config(cfg, &backend))
                    .transpose()?,
                verifier: cfg
                    .jwt
                    .enabled
                    .then(|| JwtVerifier::from_config(cfg))
                    .transpose()?,
            })
        } else {
            None
        };
        let limits = if wants(Capability::Limits) {
            Some(RateLimiter::from_config(&config.rate_limit, &backend)?)
        } else {
            None
        };
        let events = if wants(Capability::Events) {
            Events::from_config(&config.events, &backend)?
        } else {
            None
        };
        Ok(Self {
            inner: Arc::new(Inner {
                cache: wants(Capability::Cache)
                    .then(|| Cache::from_config(&config.cache, &backend)),
                sessions: wants(Capability::Sessions)
                    .then(|| Sessions::from_config(&config.sessions, &backend)),
                locks: wants(Capability::Locks)
                    .then(|| Locks::from_config(&config.locks, &backend)),
                config: Arc::new(config.clone()),
                backend,
                limits,
                tokens,
                events,
                workers: Mutex::new(None),
            }),
        })
    }

    /// The configuration this runtime was built from.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The store every capability shares.
    pub fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    /// The two-level cache.
    ///
    /// # Panics
    /// When the runtime was built without [`Capability::Cache`].
    pub fn cache(&self) -> &Cache {
        built(self.inner.cache.as_ref(), Capability::Cache)
    }

    /// Sessions.
    ///
    /// # Panics
    /// When the runtime was built without [`Capability::Sessions`].
    pub fn sessions(&self) -> &Sessions {
        built(self.inner.sessions.as_ref(), Capability::Sessions)
    }

    /// Rate limits.
    ///
    /// # Panics
    /// When the runtime was built without [`Capability::Limits`].
    pub fn limits(&self) -> &RateLimiter {
        built(self.inner.limits.as_ref(), Capability::Limits)
    }

    /// Distributed locks.
    ///
    /// # Panics
    /// When the runtime was built without [`Capability::Locks`].
    pub fn locks(&self) -> &Locks {
        built(self.inner.locks.as_ref(), Capability::Locks)
    }

    /// Cached token introspection, `None` with `tokens.introspection.enabled: false`.
    ///
    /// # Panics
    /// When the runtime was built without [`Capability::Tokens`].
    pub fn introspector(&self) -> Option<&Introspector> {
        built(self.inner.tokens.as_ref(), Capability::Tokens)
            .introspector
            .as_ref()
    }

    /// Local JWT verification, `None` with `tokens.jwt.enabled: false`.
    ///
    /// # Panics
    /// When the runtime was built without [`Capability::Tokens`].
    pub fn verifier(&self) -> Option<&JwtVerifier> {
        built(self.inner.tokens.as_ref(), Capability::Tokens)
            .verifier
            .as_ref()
    }

    /// Event publishing and the queues, `None` with `events.enabled: false` or when the
    /// runtime was built without [`Capability::Events`].
    pub fn events(&self) -> Option<&Events> {
        self.inner.events.as_ref()
    }

    /// `handler` behind the token cache's logout eviction when introspection is on: an
    /// `auth.logout` event drops the user's or the session's cached introspections
    /// before `handler` sees it.
    pub fn event_handler(&self, handler: Arc<dyn Handler>) -> Arc<dyn Handler> {
        let introspector = self
            .inner
            .tokens
            .as_ref()
            .and_then(|t| t.introspector.clone());
        match introspector {
            Some(introspector) => Arc::new(EvictOnLogout::new(introspector, handler)),
            None => handler,
        }
    }

    /// Starts `events.performance.workerCount` workers delivering to `events.sinks`
    /// (behind [`event_handler`](Self::event_handler)); [`shutdown`](Self::shutdown)
    /// lets them finish the batches in hand.
    ///
    /// # Errors
    /// Events are off, the sinks cannot be built, or workers already run.
    pub fn start_workers(&self) -> Result<(), RuntimeError> {
        let events = self.events().ok_or(RuntimeError::EventsDisabled)?;
        self.start_workers_with(events.sinks()?)
    }

    /// Like [`start_workers`](Self::start_workers), delivering to `handler` (behind
    /// [`event_handler`](Self::event_handler)) instead of `events.sinks`.
    ///
    /// # Errors
    /// Events are off, or workers already run.
    pub fn start_workers_with(&self, handler: Arc<dyn Handler>) -> Result<(), RuntimeError> {
        let events = self.events().ok_or(RuntimeError::EventsDisabled)?;
        let mut workers = self.inner.workers.lock().unwrap_or_else(|e| e.into_inner());
        if workers.is_some() {
            return Err(RuntimeError::WorkersRunning);
        }
        *workers = Some(events.start_workers(self.event_handler(handler)));
        Ok(())
    }

    /// Stops what the runtime started: workers finish the batches in hand (their events
    /// are settled, or left to be reaped when the lease ends). Background tasks of the
    /// capabilities end when the last clone of the runtime is dropped.
    pub async fn shutdown(&self) {
        let workers = self
            .inner
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(workers) = workers {
            workers.shutdown().await;
        }
    }
}

fn built<T>(part: Option<&T>, capability: Capability) -> &T {
    part.unwrap_or_else(|| {
        panic!(
            "this runtime was built without Capability::{0}; add it to Runtime::with",
            capability.name()
        )
    })
}
