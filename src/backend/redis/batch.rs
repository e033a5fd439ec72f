//! Coalescing calls of one Lua script from many concurrent callers.
//!
//! A script written to loop over items (a fixed number of `KEYS` and `ARGV` per item, a
//! fixed number of integer replies per item) can decide many callers' items in one
//! `EVALSHA`. [`ScriptBatcher`] keeps at most [`CALLS_IN_FLIGHT`] calls out; items that
//! arrive meanwhile queue and go out together in the next call (at most [`MAX_ITEMS`]).
//! The script handles items one after another, so each stays atomic; what they share is the
//! round trip and the script's fixed cost (invocation, `TIME`), which dominate a small
//! script. An idle batcher sends a lone item at once.

use std::sync::Arc;

use redis::Script;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::RedisBackend;
use crate::backend::{BackendError, Retry};

/// Script calls in flight at once per batcher.
///
/// Measured with the rate-limit script at 50 callers: one call in flight gave 105 k
/// checks/s, four 132 k, eight the same as four (88 k without coalescing).
pub const CALLS_IN_FLIGHT: usize = 4;

/// Most items in one call.
pub const MAX_ITEMS: usize = 256;

/// One item: its `KEYS` and `ARGV`, as many as the script's layout says.
#[derive(Clone, Debug, Default)]
pub struct Item {
    /// The item's keys.
    pub keys: Vec<String>,
    /// The item's arguments.
    pub args: Vec<String>,
}

struct Pending {
    items: Vec<Item>,
    reply: oneshot::Sender<Result<Vec<i64>, BackendError>>,
}

/// A script whose concurrent calls are coalesced. Dropping it stops its task.
pub struct ScriptBatcher {
    queue: mpsc::UnboundedSender<Pending>,
    replies_per_item: usize,
}

impl ScriptBatcher {
    /// Batches calls of `source`, which answers `replies_per_item` integers per item, in
    /// item order. `retry` applies to a whole call. Must be called inside a Tokio runtime.
    pub fn new(backend: RedisBackend, source: &str, replies_per_item: usize, retry: Retry) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        let script = Arc::new(Script::new(source));
        tokio::spawn(batch_loop(backend, script, retry, replies_per_item, rx));
        Self {
            queue,
            replies_per_item,
        }
    }

    /// Runs `items` (possibly in one call with other callers' items) and returns their
    /// replies, `replies_per_item` per item.
    ///
    /// # Errors
    /// The backend's error for the whole call (as a message: one error is shared by every
    /// caller of the call).
    pub async fn call(&self, items: Vec<Item>) -> Result<Vec<i64>, BackendError> {
        let stopped = || BackendError::Unavailable("script batching stopped".into());
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let expected = items.len() * self.replies_per_item;
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { items, reply })
            .map_err(|_| stopped())?;
        let values = answer.await.map_err(|_| stopped())??;
        debug_assert_eq!(values.len(), expected);
        Ok(values)
    }
}

async fn batch_loop(
    backend: RedisBackend,
    script: Arc<Script>,
    retry: Retry,
    replies_per_item: usize,
    mut rx: mpsc::UnboundedReceiver<Pending>,
) {
    let in_flight = Arc::new(Semaphore::new(CALLS_IN_FLIGHT));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut count = first.items.len();
        let mut batch = vec![first];
        while count < MAX_ITEMS {
            match rx.try_recv() {
                Ok(more) => {
                    count += more.items.len();
                    batch.push(more);
                }
                Err(_) => break,
            }
        }
        let (backend, script) = (backend.clone(), script.clone());
        tokio::spawn(async move {
            let result = run(&backend, &script, retry, replies_per_item, &batch).await;
            drop(permit);
            deliver(batch, result, replies_per_item);
        });
    }
}

async fn run(
    backend: &RedisBackend,
    script: &Script,
    retry: Retry,
    replies_per_item: usize,
    batch: &[Pending],
) -> Result<Vec<i64>, BackendError> {
    let total: usize = batch.iter().map(|p| p.items.len()).sum();
    let values: Vec<i64> = backend
        .run(retry, |mut conn| {
            let mut invocation = script.prepare_invoke();
            for item in batch.iter().flat_map(|p| &p.items) {
                for key in &item.keys {
                    invocation.key(key);
                }
                for arg in &item.args {
                    invocation.arg(arg);
                }
            }
            async move { invocation.invoke_async(&mut conn).await }
        })
        .await?;
    if values.len() != total * replies_per_item {
        return Err(BackendError::Unavailable(format!(
            "script answered {} values for {total} items",
            values.len()
        )));
    }
    Ok(values)
}

/// Hands every caller its slice of the replies, or the error.
fn deliver(batch: Vec<Pending>, result: Result<Vec<i64>, BackendError>, replies_per_item: usize) {
    match result {
        Ok(values) => {
            let mut rest = values.into_iter();
            for pending in batch {
                let mine = rest
                    .by_ref()
                    .take(pending.items.len() * replies_per_item)
                    .collect();
                let _ = pending.reply.send(Ok(mine));
            }
        }
        Err(e) => {
            let message = e.to_string();
            for pending in batch {
                let _ = pending
                    .reply
                    .send(Err(BackendError::Unavailable(message.clone())));
            }
        }
    }
}
