//! Subscriptions that survive disconnects and failovers.
//!
//! A subscriber cannot know what was published while it was away, so the moment a
//! subscription is lost is announced as [`SubscriptionEvent::Interrupted`] and every
//! (re)subscription as [`SubscriptionEvent::Subscribed`] with a counter: a cache backplane
//! stops trusting its L1 at the first and flushes it at the second.
//!
//! A half-open connection (the server froze, or a network path dropped without a reset)
//! delivers nothing and reports nothing, so the subscription sends `PING` every
//! [`heartbeat`] and reconnects when one goes unanswered within `readTimeout`.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::RedisBackend;
use super::connect::{self, Role};
use crate::backend::BackendError;
use crate::config::RedisConfig;

/// How often a subscription (or a Sentinel watcher) checks its connection with `PING`:
/// every `readTimeout`, at least every 5 s and at most every 100 ms. A silent connection
/// is found within this plus `readTimeout`.
pub fn heartbeat(cfg: &RedisConfig) -> Duration {
    cfg.read_timeout
        .clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// The `PING` check of a subscribed connection.
pub(crate) struct Heartbeat {
    beat: tokio::time::Interval,
    answer_within: Duration,
}

impl Heartbeat {
    pub(crate) fn new(cfg: &RedisConfig) -> Self {
        let mut beat =
            tokio::time::interval_at(tokio::time::Instant::now() + heartbeat(cfg), heartbeat(cfg));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            beat,
            answer_within: cfg.read_timeout,
        }
    }

    /// Waits for the next beat and sends `PING`; an error when it is not answered within
    /// `readTimeout`. Meant to race the message stream in a `select!`.
    pub(crate) async fn check(
        &mut self,
        sink: &mut redis::aio::PubSubSink,
    ) -> Result<(), BackendError> {
        self.beat.tick().await;
        let ping = tokio::time::timeout(self.answer_within, sink.ping::<redis::Value>());
        if matches!(ping.await, Ok(Ok(_))) {
            return Ok(());
        }
        metrics::counter!("blinkchamber_redis_heartbeats_missed_total").increment(1);
        Err(BackendError::Unavailable(
            "no answer to PING within readTimeout: the connection is half-open".into(),
        ))
    }
}

/// What a [`Subscription`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscriptionEvent {
    /// Subscribed to every channel; `0` the first time, then counting reconnects.
    Subscribed(u64),
    /// The subscription was lost: messages published from now until the next `Subscribed`
    /// are not delivered.
    Interrupted,
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
                let pubsub = connect::pubsub(cfg, &master.endpoint, Role::Data).await?;
                let (mut sink, mut stream) = pubsub.split();
                for channel in &channels {
                    sink.subscribe(channel).await?;
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
                let mut heartbeat = Heartbeat::new(cfg);
                let delivered = loop {
                    tokio::select! {
                        msg = stream.next() => {
                            let Some(msg) = msg else {
                                break Err(BackendError::Unavailable("subscription closed".into()));
                            };
                            let event = SubscriptionEvent::Message {
                                channel: msg.get_channel_name().to_owned(),
                                payload: msg.get_payload_bytes().to_vec(),
                            };
                            if tx.send(event).await.is_err() {
                                return Ok(());
                            }
                        }
                        checked = heartbeat.check(&mut sink) => {
                            if let Err(e) = checked {
                                break Err(e);
                            }
                        }
                    }
                };
                // Announced at once, not at the next subscription: delivery stops now.
                if delivered.is_err() && tx.send(SubscriptionEvent::Interrupted).await.is_err() {
                    return Ok(());
                }
                delivered
            };
            tokio::select! {
                result = session => match result {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::debug!(error = %e, "subscription lost; resubscribing");
                        backend.suspect_master();
                    }
                },
                changed = watch.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // Moving to the new master: nothing is delivered until resubscribed.
                    if sessions > 0 && tx.send(SubscriptionEvent::Interrupted).await.is_err() {
                        return;
                    }
                }
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(crate::backoff::jittered(backoff)).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    });
    Subscription { events, task }
}
