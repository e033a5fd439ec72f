//! Subscriptions that survive disconnects and failovers.
//!
//! A subscriber cannot know what was published while it was away, so every
//! (re)subscription is announced as [`SubscriptionEvent::Subscribed`] with a counter:
//! a cache backplane flushes its L1 on any announcement after the first.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::RedisBackend;
use super::connect::{self, Role};

/// What a [`Subscription`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscriptionEvent {
    /// Subscribed to every channel; `0` the first time, then counting reconnects.
    Subscribed(u64),
    /// A message on `channel`.
    Message {
        /// The channel it was published on.
        channel: String,
        /// The payload.
        payload: Vec<u8>,
    },
}

/// A live subscription; dropping it unsubscribes.
pub struct Subscription {
    events: mpsc::Receiver<SubscriptionEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscription {
    /// The next event, or `None` once the backend is gone.
    pub async fn recv(&mut self) -> Option<SubscriptionEvent> {
        self.events.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(super) fn spawn(backend: RedisBackend, channels: Vec<String>) -> Subscription {
    let (tx, events) = mpsc::channel(1024);
    let task = tokio::spawn(async move {
        let mut sessions = 0u64;
        let mut backoff = Duration::from_millis(20);
        let mut watch = backend.master_watch();
        loop {
            let master = watch.borrow_and_update().clone();
            let cfg = backend.config();
            let session = async {
                let mut pubsub = connect::pubsub(cfg, &master.endpoint, Role::Data).await?;
                for channel in &channels {
                    pubsub.subscribe(channel).await?;
                }
                if tx
                    .send(SubscriptionEvent::Subscribed(sessions))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
                sessions += 1;
                backoff = Duration::from_millis(20);
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    let event = SubscriptionEvent::Message {
                        channel: msg.get_channel_name().to_owned(),
                        payload: msg.get_payload_bytes().to_vec(),
                    };
                    if tx.send(event).await.is_err() {
                        return Ok(());
                    }
                }
                Err(crate::backend::BackendError::Unavailable(
                    "subscription closed".into(),
                ))
            };
            tokio::select! {
                result = session => match result {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::debug!(error = %e, "subscription lost; resubscribing");
                        backend.suspect_master();
                    }
                },
                changed = watch.changed() => if changed.is_err() { return },
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    });
    Subscription { events, task }
}
