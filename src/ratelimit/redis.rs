//! The Redis store: checks decided by `check.lua`, many callers' checks per `EVALSHA`.
//!
//! The script reads Redis's clock (`TIME`) once and runs the algorithms of
//! [`super::algorithm`] with the same arithmetic, so the answer does not depend on which
//! instance asks or on its clock. A call is sent with [`Retry::IfNotRun`]: a check whose
//! reply was lost may have consumed, so it is not sent twice.

use std::sync::Arc;

use redis::Script;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::algorithm::{Limits, Outcome};
use super::memory::Check;
use crate::backend::{BackendError, RedisBackend, Retry};

/// The script, loaded on first use on each connection (`invoke_async` answers `NOSCRIPT`
/// with `SCRIPT LOAD`).
const CHECK_LUA: &str = include_str!("check.lua");

/// Script calls in flight at once; further checks queue and go out together in the next
/// call.
pub(crate) const CALLS_IN_FLIGHT: usize = 4;

/// Most checks in one script call.
pub(crate) const MAX_BATCH: usize = 256;

/// One caller's checks waiting for a script call.
struct Pending {
    checks: Vec<(String, Limits, u64)>,
    reply: oneshot::Sender<Result<Vec<Outcome>, BackendError>>,
}

/// Rate-limit state in Redis.
///
/// Checks of concurrent callers are coalesced: while [`CALLS_IN_FLIGHT`] script calls are
/// out, new checks queue, and the next call carries all of them (up to [`MAX_BATCH`]). The
/// script decides them one after another, so each stays atomic and exact; what is shared is
/// the round trip and the script's fixed cost (`TIME`, invocation), which dominate a check.
pub(crate) struct RedisStore {
    backend: RedisBackend,
    queue: mpsc::UnboundedSender<Pending>,
}

impl RedisStore {
    /// Must be called inside a Tokio runtime (it spawns the batching task, which ends when
    /// the store is dropped).
    pub(crate) fn new(backend: RedisBackend) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(batch_loop(backend.clone(), rx));
        Self { backend, queue }
    }

    /// Decides `checks` in one script call (possibly shared with other callers), at one
    /// instant of Redis's clock.
    pub(crate) async fn check_many(
        &self,
        checks: &[Check<'_>],
    ) -> Result<Vec<Outcome>, BackendError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            checks: checks
                .iter()
                .map(|c| (c.key.to_owned(), *c.limits, c.cost))
                .collect(),
            reply,
        };
        self.queue
            .send(pending)
            .map_err(|_| BackendError::Unavailable("rate-limit batching stopped".into()))?;
        answer
            .await
            .map_err(|_| BackendError::Unavailable("rate-limit batching stopped".into()))?
    }

    /// The Redis handle.
    pub(crate) fn backend(&self) -> &RedisBackend {
        &self.backend
    }
}

async fn batch_loop(backend: RedisBackend, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let script = Arc::new(Script::new(CHECK_LUA));
    let in_flight = Arc::new(Semaphore::new(CALLS_IN_FLIGHT));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut count = first.checks.len();
        let mut batch = vec![first];
        while count < MAX_BATCH {
            match rx.try_recv() {
                Ok(more) => {
                    count += more.checks.len();
                    batch.push(more);
                }
                Err(_) => break,
            }
        }
        let (backend, script) = (backend.clone(), script.clone());
        tokio::spawn(async move {
            let result = run(&backend, &script, &batch).await;
            drop(permit);
            deliver(batch, result);
        });
    }
}

/// One script call for every check of `batch`, in order.
async fn run(
    backend: &RedisBackend,
    script: &Script,
    batch: &[Pending],
) -> Result<Vec<Outcome>, BackendError> {
    let total: usize = batch.iter().map(|p| p.checks.len()).sum();
    // A check whose reply was lost may have counted: resent only when it certainly did not
    // run.
    let values: Vec<i64> = backend
        .run(Retry::IfNotRun, |mut conn| {
            let mut invocation = script.prepare_invoke();
            for (key, limits, cost) in batch.iter().flat_map(|p| &p.checks) {
                invocation
                    .key(key)
                    .arg(limits.lua_code())
                    .arg(limits.limit)
                    .arg(limits.period_us)
                    .arg(limits.burst)
                    .arg(*cost);
            }
            async move { invocation.invoke_async(&mut conn).await }
        })
        .await?;
    if values.len() != total * 4 {
        return Err(BackendError::Unavailable(format!(
            "rate-limit script answered {} values for {total} checks",
            values.len()
        )));
    }
    Ok(values
        .chunks_exact(4)
        .map(|v| Outcome {
            allowed: v[0] == 1,
            remaining: v[1].max(0) as u64,
            retry_after_us: v[2].max(0) as u64,
            reset_after_us: v[3].max(0) as u64,
        })
        .collect())
}

/// Hands every caller its slice of the outcomes, or the error.
fn deliver(batch: Vec<Pending>, result: Result<Vec<Outcome>, BackendError>) {
    match result {
        Ok(outcomes) => {
            let mut rest = outcomes.into_iter();
            for pending in batch {
                let mine = rest.by_ref().take(pending.checks.len()).collect();
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
