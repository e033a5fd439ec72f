//! Locks in Redis: one string per held name, `{token}:{fence}` with a `PX` expiry, one
//! fencing counter, and a release channel that wakes waiters on every instance.
//!
//! Keys: `{prefix}lease:{name}` (the lease; no name can reach another key), `{prefix}fence`
//! (the counter, shared by every name and kept without expiry: a token larger than every
//! earlier one is also larger than every earlier token of the same name, and the state
//! stays one key however many names are used), channel `{prefix}released` (payload: the
//! name).
//! An attempt that finds the lease held appends `!` to it (once), and only the release of a
//! marked lease publishes, so an uncontended cycle is `SET NX PX`, then `GET` + `DEL`.
//! Acquisitions and releases of concurrent callers share script calls, both kinds in the
//! same call (`lua/leases.lua`, [`ScriptBatcher`]), and one `INCRBY` per call reserves the
//! fencing numbers of all its acquisitions; a contended attempt also takes a fencing
//! number, which leaves gaps but never lets the counter go back.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use tokio::sync::{broadcast, watch};

use super::{Attempt, WAKE_ALL};
use crate::backend::redis::SubscriptionEvent;
use crate::backend::redis::batch::{Arg, Item, ScriptBatcher};
use crate::backend::redis::px;
use crate::backend::{BackendError, RedisBackend, Retry};

/// Scripts, with their KEYS, ARGV and replies described in their headers.
const LEASES: &str = include_str!("lua/leases.lua");
const EXTEND: &str = include_str!("lua/extend.lua");

/// The Redis store.
pub(super) struct RedisLocks {
    backend: RedisBackend,
    prefix: String,
    channel: Arc<str>,
    fence: Arc<str>,
    /// Acquisitions and releases, in the same calls.
    leases: ScriptBatcher<2, 3>,
    extend: Script,
    listener: tokio::task::JoinHandle<()>,
    subscribed: watch::Receiver<bool>,
}

impl Drop for RedisLocks {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl RedisLocks {
    pub(super) fn new(
        backend: RedisBackend,
        prefix: &str,
        released: broadcast::Sender<String>,
    ) -> Self {
        let channel: Arc<str> = format!("{prefix}released").into();
        let fence = format!("{prefix}fence").into();
        let mut subscription = backend.subscribe(vec![channel.to_string()]);
        let (subscribed_tx, subscribed) = watch::channel(false);
        let listener = tokio::spawn(async move {
            while let Some(event) = subscription.recv().await {
                let name = match event {
                    // Releases may have been missed while not subscribed.
                    SubscriptionEvent::Subscribed(_) => {
                        subscribed_tx.send_replace(true);
                        WAKE_ALL.to_owned()
                    }
                    SubscriptionEvent::Message { payload, .. } => {
                        String::from_utf8_lossy(&payload).into_owned()
                    }
                    // Waiters are woken when the subscription is back.
                    SubscriptionEvent::Interrupted => continue,
                };
                let _ = released.send(name);
            }
        });
        Self {
            backend: backend.clone(),
            prefix: prefix.to_owned(),
            channel,
            fence,
            // Not idempotent (INCRBY, SET): resent only when they certainly did not run.
            leases: ScriptBatcher::new(backend.clone(), LEASES, 2, Retry::IfNotRun),
            extend: Script::new(EXTEND),
            listener,
            subscribed,
        }
    }

    /// Resolves once release messages are being received.
    pub(super) async fn subscribed(&self) {
        let mut rx = self.subscribed.clone();
        let _ = rx.wait_for(|s| *s).await;
    }

    fn key(&self, name: &str) -> String {
        format!("{}lease:{name}", self.prefix)
    }

    pub(super) async fn try_acquire(
        &self,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<Attempt, BackendError> {
        let item = Item {
            keys: [Arg::Text(self.key(name)), Arg::Shared(self.fence.clone())],
            args: [
                Arg::Static("a"),
                Arg::Text(token.to_owned()),
                Arg::Int(px(ttl)),
            ],
        };
        let answer = self.leases.call(vec![item]).await?;
        Ok(if answer[0] == 1 {
            Attempt::Acquired(u64::try_from(answer[1]).unwrap_or_default())
        } else {
            // PTTL is -1 only for a key without expiry, which this module never writes, and
            // -2 when the lease expired between the two commands: retry at once.
            Attempt::Held(Duration::from_millis(u64::try_from(answer[1]).unwrap_or(0)))
        })
    }

    pub(super) async fn extend(
        &self,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, BackendError> {
        let key = self.key(name);
        let ms = px(ttl);
        let fence: u64 = self
            .backend
            .run(Retry::Idempotent, |mut c| {
                let mut call = self.extend.prepare_invoke();
                call.key(&key).arg(token).arg(ms);
                async move { call.invoke_async(&mut c).await }
            })
            .await?;
        Ok((fence > 0).then_some(fence))
    }

    pub(super) async fn release(&self, name: &str, token: &str) -> Result<bool, BackendError> {
        let item = Item {
            keys: [Arg::Text(self.key(name)), Arg::Shared(self.channel.clone())],
            args: [
                Arg::Static("r"),
                Arg::Text(token.to_owned()),
                Arg::Text(name.to_owned()),
            ],
        };
        Ok(self.leases.call(vec![item]).await?[0] == 1)
    }
}
