//! [`Events`]: the event capability as one value — publisher, queues, routing, the
//! ZITADEL type table and signing key — built once from `events`.

use std::sync::Arc;
use std::time::Duration;

use super::{Handler, PatternError, Publisher, Queues, Router, TypeMap, Workers};
use crate::backend::Backend;
use crate::config::{EventsConfig, SecretError, WatchedSecret};

/// How often `events.zitadel.signingKey` is re-read from its file when it changes.
const SIGNING_KEY_RELOAD: Duration = Duration::from_secs(1);

/// Publishing, the queues and their tables, built once from the `events` block.
///
/// Cheap to clone: every part is shared.
#[derive(Clone)]
pub struct Events {
    config: Arc<EventsConfig>,
    publisher: Publisher,
    queues: Queues,
    type_map: TypeMap,
    zitadel_key: Option<Arc<WatchedSecret>>,
}

/// Why the `events` block could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// A routing rule, an accepted type or a ZITADEL type-table entry is not a valid
    /// pattern (config validation catches these first).
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// `events.zitadel.signingKey` cannot be read.
    #[error("events.zitadel.signingKey: {0}")]
    SigningKey(#[from] SecretError),
    /// `events.sinks` cannot be built (a webhook's client or secret).
    #[error("events.sinks: {0}")]
    Sinks(String),
}

impl Events {
    /// The capability on `backend`, or `None` with `events.enabled: false`. Starts the
    /// publisher's flush task, so it must run inside a Tokio runtime.
    ///
    /// # Errors
    /// See [`EventsError`].
    pub fn from_config(cfg: &EventsConfig, backend: &Backend) -> Result<Option<Self>, EventsError> {
        if !cfg.enabled {
            return Ok(None);
        }
        let queues = Queues::from_config(cfg, backend);
        let zitadel_key = cfg
            .zitadel
            .signing_key
            .clone()
            .map(|k| WatchedSecret::new(k, SIGNING_KEY_RELOAD))
            .transpose()?
            .map(Arc::new);
        Ok(Some(Self {
            config: Arc::new(cfg.clone()),
            publisher: Publisher::new(cfg, queues.clone())?,
            type_map: TypeMap::new(&cfg.zitadel.type_map)?,
            zitadel_key,
            queues,
        }))
    }

    /// Publishes into the queues.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The queues: stats, peeking and the dead-letter list.
    pub fn queues(&self) -> &Queues {
        &self.queues
    }

    /// Priority by event type (`events.routing`); replays route with it too.
    pub fn router(&self) -> &Router {
        self.publisher.router()
    }

    /// ZITADEL event type → our type (`events.zitadel.typeMap`).
    pub fn type_map(&self) -> &TypeMap {
        &self.type_map
    }

    /// `events.zitadel.signingKey`, re-read when its file changes.
    pub fn zitadel_key(&self) -> Option<&WatchedSecret> {
        self.zitadel_key.as_deref()
    }

    /// The `events` block this was built from.
    pub fn config(&self) -> &EventsConfig {
        &self.config
    }

    /// The sinks of `events.sinks` (the log, webhooks) as one handler.
    ///
    /// # Errors
    /// [`EventsError::Sinks`] when a webhook's client cannot be built.
    pub fn sinks(&self) -> Result<Arc<dyn Handler>, EventsError> {
        let sinks = super::Sinks::from_config(&self.config.sinks).map_err(EventsError::Sinks)?;
        Ok(Arc::new(sinks))
    }

    /// Starts `events.performance.workerCount` workers handing each event to `handler`.
    pub fn start_workers(&self, handler: Arc<dyn Handler>) -> Workers {
        Workers::start(&self.config, self.queues.clone(), handler)
    }
}
