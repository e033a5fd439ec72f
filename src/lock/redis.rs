//! Locks in Redis: one string per held name, the owner part of its token with a `PX` expiry,
//! one fencing counter, and a release channel that wakes waiters on every instance. The
//! fencing token is not stored: the caller hands it out in the lease's token, and `extend`
//! answers it from there (a lease stored by an earlier release, `{owner}:{fence}`, still
//! names its own).
//!
//! Keys: `{prefix}lease:{name}` (the lease; no name can reach another key), `{prefix}fence`
//! (the counter, shared by every name and kept without expiry: a token larger than every
//! earlier one is also larger than every earlier token of the same name, and the state
//! stays one key however many names are used), channel `{prefix}released` (payload: the
//! name).
//! An attempt that finds the lease held appends `!` to it (once), and only the release of a
//! marked lease publishes, so an uncontended cycle is `SET NX PX GET`, then `GET` + `DEL`.
//! Acquisitions and releases of concurrent callers share script calls, both kinds in the
//! same call (`lua/leases.lua`, [`ScriptBatcher`], with the counter and the channel sent
//! once per call as its [`Header`]), and one `INCRBY` per call reserves a fencing number
//! for each of its acquisitions; the numbers contended attempts leave unused are gaps,
//! which never let the counter go back.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use tokio::sync::{broadcast, watch};

use super::{Attempt, Extended, WAKE_ALL};
use crate::backend::redis::SubscriptionEvent;
use crate::backend::redis::batch::{Arg, FULLER_CALLS_IN_FLIGHT, Header, Item, ScriptBatcher};
use crate::backend::redis::px;
use crate::backend::{BackendError, RedisBackend, Retry};

/// Scripts, with their KEYS, ARGV and replies described in their headers.
const LEASES: &str = include_str!("lua/leases.lua");
const EXTEND: &str = include_str!("lua/extend.lua");

/// The Redis store.
pub(super) struct RedisLocks {
    backend: RedisBackend,
    prefix: String,
    /// Acquisitions and releases, in the same calls.
    leases: ScriptBatcher<1, 2>,
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
        let fence: Arc<str> = format!("{prefix}fence").into();
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
            // Not idempotent (INCRBY, SET): resent only when they certainly did not run.
            leases: ScriptBatcher::with_header(
                backend.clone(),
                LEASES,
                Header {
                    keys: vec![Arg::Shared(fence)],
                    args: vec![Arg::Shared(channel)],
                },
                1,
                FULLER_CALLS_IN_FLIGHT,
                Retry::IfNotRun,
            ),
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
        owner: &str,
        ttl: Duration,
    ) -> Result<Attempt, BackendError> {
        let item = Item {
            keys: [Arg::Text(self.key(name))],
            args: [Arg::Text(owner.to_owned()), Arg::Int(px(ttl))],
        };
        let answer = self.leases.call(vec![item]).await?[0];
        // A fencing token (at least 1), or -1 - the holder's remaining ms.
        Ok(match u64::try_from(answer) {
            Ok(fence) if fence > 0 => Attempt::Acquired(fence),
            _ => Attempt::Held(Duration::from_millis((-1 - answer).max(0).unsigned_abs())),
        })
    }

    /// `issued`: whether the caller's token carries its fencing token.
    pub(super) async fn extend(
        &self,
        name: &str,
        owner: &str,
        issued: bool,
        ttl: Duration,
    ) -> Result<Extended, BackendError> {
        let key = self.key(name);
        let ms = px(ttl);
        let issued = if issued { "1" } else { "" };
        let answer: i64 = self
            .backend
            .run(Retry::Idempotent, |mut c| {
                let mut call = self.extend.prepare_invoke();
                call.key(&key).arg(owner).arg(ms).arg(issued);
                async move { call.invoke_async(&mut c).await }
            })
            .await?;
        Ok(match u64::try_from(answer) {
            Ok(0) => Extended::NotHeld,
            Ok(fence) => Extended::Stored(fence),
            Err(_) => Extended::Issued,
        })
    }

    pub(super) async fn release(&self, name: &str, owner: &str) -> Result<bool, BackendError> {
        let item = Item {
            keys: [Arg::Text(self.key(name))],
            // An empty lease asks for a release.
            args: [Arg::Text(owner.to_owned()), Arg::Static("")],
        };
        Ok(self.leases.call(vec![item]).await?[0] == 1)
    }
}
