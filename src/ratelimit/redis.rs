//! The Redis store: checks decided by `check.lua`, many callers' checks per `EVALSHA`.
//!
//! The script reads Redis's clock (`TIME`) once and runs the algorithms of
//! [`super::algorithm`] with the same arithmetic, so the answer does not depend on which
//! instance asks or on its clock. A call is sent with [`Retry::IfNotRun`]: a check whose
//! reply was lost may have consumed, so it is not sent twice.

use std::sync::Arc;

use super::algorithm::Outcome;
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
    script: ScriptBatcher<1, 1>,
}

impl RedisStore {
    /// Must be called inside a Tokio runtime.
    pub(crate) fn new(backend: RedisBackend) -> Self {
        // A check whose reply was lost may have counted: resent only when it certainly did
        // not run.
        let script = ScriptBatcher::counted_by(
            backend.clone(),
            CHECK_LUA,
            replies_of,
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
        let mut outcomes = Vec::with_capacity(checks.len());
        let mut rest = values.as_slice();
        while let Some(first) = rest.first() {
            let Some(check) = rest.get(..replies_of(first)) else {
                break;
            };
            outcomes.push(match *check {
                [remaining, reset] => Outcome {
                    allowed: true,
                    remaining: remaining as u64,
                    retry_after_us: 0,
                    reset_after_us: reset.max(0) as u64,
                },
                [limited, retry, reset] => Outcome {
                    allowed: false,
                    remaining: (-1 - limited) as u64,
                    retry_after_us: retry.max(0) as u64,
                    reset_after_us: reset.max(0) as u64,
                },
                _ => unreachable!("replies_of answers 2 or 3"),
            });
            rest = &rest[check.len()..];
        }
        if outcomes.len() != checks.len() || !rest.is_empty() {
            return Err(BackendError::MaybeRan(format!(
                "rate-limit script answered {} values for {} checks",
                values.len(),
                checks.len()
            )));
        }
        Ok(outcomes)
    }

    /// The Redis handle.
    pub(crate) fn backend(&self) -> &RedisBackend {
        &self.backend
    }
}

/// How many of the script's replies are one check's, told by its first: an admitted check
/// (first at least 0) answers remaining and reset_after, a limited one `-1 - remaining`,
/// retry_after and reset_after.
fn replies_of(first: &i64) -> usize {
    if *first >= 0 { 2 } else { 3 }
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
