//! The Redis store: checks decided by `check.lua`, many callers' checks per `EVALSHA`.
//!
//! The script reads Redis's clock (`TIME`) once and runs the algorithms of
//! [`super::algorithm`] with the same arithmetic, so the answer does not depend on which
//! instance asks or on its clock. It answers each check's numbers unrounded, and
//! [`outcome`] rounds them as the algorithms do. A call is sent with [`Retry::IfNotRun`]: a
//! check whose reply was lost may have consumed, so it is not sent twice.

use std::sync::Arc;

use super::algorithm::{Outcome, ceil_u64, floor_u64};
use crate::backend::redis::batch::{Arg, FULLER_CALLS_IN_FLIGHT, Item, ScriptBatcher};
use crate::backend::{BackendError, RedisBackend, Retry};

/// The script, loaded on first use on each connection (`invoke_async` answers `NOSCRIPT`
/// with `SCRIPT LOAD`).
const CHECK_LUA: &str = include_str!("check.lua");

/// Rate-limit state in Redis.
///
/// Checks of concurrent callers share script calls ([`ScriptBatcher`]); the script decides
/// them one after another, so each stays atomic and exact.
pub(crate) struct RedisStore {
    backend: RedisBackend,
    script: ScriptBatcher<1, 1, f64>,
}

impl RedisStore {
    /// Must be called inside a Tokio runtime.
    pub(crate) fn new(backend: RedisBackend) -> Self {
        // A check whose reply was lost may have counted: resent only when it certainly did
        // not run.
        let script = ScriptBatcher::reading_keys_first(
            backend.clone(),
            CHECK_LUA,
            3,
            FULLER_CALLS_IN_FLIGHT,
            Retry::IfNotRun,
        );
        Self { backend, script }
    }

    /// Decides `checks` at one instant of Redis's clock.
    pub(crate) async fn check_many(
        &self,
        checks: &[ScriptCheck<'_>],
    ) -> Result<Vec<Outcome>, BackendError> {
        let items = checks
            .iter()
            .map(|c| Item {
                keys: [Arg::Text(c.key.to_owned())],
                args: [if c.cost == 1 {
                    Arg::Bytes(c.spec.clone())
                } else {
                    Arg::Bytes(c.limits.script_spec(c.cost).into())
                }],
            })
            .collect();
        let values = self.script.call(items).await?;
        if values.len() != checks.len() * 3 {
            return Err(BackendError::MaybeRan(format!(
                "rate-limit script answered {} values for {} checks",
                values.len(),
                checks.len()
            )));
        }
        Ok(values.chunks_exact(3).map(outcome).collect())
    }

    /// The Redis handle.
    pub(crate) fn backend(&self) -> &RedisBackend {
        &self.backend
    }
}

/// A check's outcome from the script's three numbers, unrounded: remaining,
/// retry_after_us (0 when admitted, above 0 when limited) and reset_after_us. Rounded as
/// [`super::algorithm`] rounds them: remaining down, the times up, and a limited check's
/// retry to at least 1 µs.
fn outcome(numbers: &[f64]) -> Outcome {
    let [remaining, retry, reset] = numbers else {
        unreachable!("chunks of three");
    };
    let allowed = *retry <= 0.0;
    Outcome {
        allowed,
        remaining: floor_u64(*remaining),
        retry_after_us: if allowed { 0 } else { ceil_u64(*retry).max(1) },
        reset_after_us: ceil_u64(*reset),
    }
}

/// One check as the script takes it.
pub(crate) struct ScriptCheck<'a> {
    /// The full Redis key.
    pub key: &'a str,
    /// The rule's [`super::algorithm::Limits::script_spec`] at a cost of 1.
    pub spec: &'a Arc<[u8]>,
    /// The rule, for the spec of any other cost.
    pub limits: &'a super::algorithm::Limits,
    /// Units asked for.
    pub cost: u64,
}
