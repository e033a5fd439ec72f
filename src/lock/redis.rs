//! Locks in Redis: one hash per held name (`token`, `fence`) with a `PEXPIRE`, a fencing
//! counter per name, and a release channel that wakes waiters on every instance.
//!
//! Keys: `{prefix}{name}` (the lease), `{prefix}fence:{name}` (the counter, kept without
//! expiry so fencing tokens never go back), channel `{prefix}released` (payload: the name).
//! An attempt that finds the lease held marks it (`waiters` field) in the same script, and
//! only a release of a marked lease publishes, so uncontended cycles cost two scripts.

use std::time::Duration;

use redis::Script;
use tokio::sync::{broadcast, watch};

use super::{Attempt, WAKE_ALL, millis};
use crate::backend::redis::SubscriptionEvent;
use crate::backend::{BackendError, RedisBackend, Retry};

const ACQUIRE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'waiters', 1)
  return {0, redis.call('PTTL', KEYS[1])}
end
local fence = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'fence', fence)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, fence}
";

const EXTEND: &str = r"
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('HGET', KEYS[1], 'fence'))
end
return 0
";

const RELEASE: &str = r"
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] then
  local waiters = redis.call('HGET', KEYS[1], 'waiters')
  redis.call('DEL', KEYS[1])
  if waiters then
    redis.call('PUBLISH', KEYS[2], ARGV[2])
  end
  return 1
end
return 0
";

/// The Redis store.
pub(super) struct RedisLocks {
    backend: RedisBackend,
    prefix: String,
    channel: String,
    acquire: Script,
    extend: Script,
    release: Script,
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
        let channel = format!("{prefix}released");
        let mut subscription = backend.subscribe(vec![channel.clone()]);
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
                };
                let _ = released.send(name);
            }
        });
        Self {
            backend,
            prefix: prefix.to_owned(),
            channel,
            acquire: Script::new(ACQUIRE),
            extend: Script::new(EXTEND),
            release: Script::new(RELEASE),
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
        format!("{}{name}", self.prefix)
    }

    pub(super) async fn try_acquire(
        &self,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<Attempt, BackendError> {
        let (key, fence_key) = (self.key(name), format!("{}fence:{name}", self.prefix));
        let ms = millis(ttl);
        // Not idempotent (INCR): resent only when it certainly did not run.
        let (acquired, value): (i64, i64) = self
            .backend
            .run(Retry::IfNotRun, |mut c| {
                let mut call = self.acquire.prepare_invoke();
                call.key(&key).key(&fence_key).arg(token).arg(ms);
                async move { call.invoke_async(&mut c).await }
            })
            .await?;
        Ok(if acquired == 1 {
            Attempt::Acquired(u64::try_from(value).unwrap_or_default())
        } else {
            // PTTL is -1 only for a key without expiry, which this module never writes.
            Attempt::Held(Duration::from_millis(u64::try_from(value).unwrap_or(1)))
        })
    }

    pub(super) async fn extend(
        &self,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, BackendError> {
        let key = self.key(name);
        let ms = millis(ttl);
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
        let key = self.key(name);
        let released: i64 = self
            .backend
            .run(Retry::IfNotRun, |mut c| {
                let mut call = self.release.prepare_invoke();
                call.key(&key).key(&self.channel).arg(token).arg(name);
                async move { call.invoke_async(&mut c).await }
            })
            .await?;
        Ok(released == 1)
    }
}
