//! The Redis store: every check of one call in one `EVALSHA` of `check.lua`.
//!
//! The script reads Redis's clock (`TIME`) once and runs the algorithms of
//! [`super::algorithm`] with the same arithmetic, so the answer does not depend on which
//! instance asks or on its clock. A call is sent with [`Retry::IfNotRun`]: a check whose
//! reply was lost may have consumed, so it is not sent twice.

use redis::Script;

use super::algorithm::Outcome;
use super::memory::Check;
use crate::backend::{BackendError, RedisBackend, Retry};

/// The script, loaded on first use on each connection (`invoke_async` answers `NOSCRIPT`
/// with `SCRIPT LOAD`).
const CHECK_LUA: &str = include_str!("check.lua");

/// Rate-limit state in Redis.
pub(crate) struct RedisStore {
    backend: RedisBackend,
    script: Script,
}

impl RedisStore {
    pub(crate) fn new(backend: RedisBackend) -> Self {
        Self {
            backend,
            script: Script::new(CHECK_LUA),
        }
    }

    /// Runs `checks` in one script call, at one instant of Redis's clock.
    pub(crate) async fn check_many(
        &self,
        checks: &[Check<'_>],
    ) -> Result<Vec<Outcome>, BackendError> {
        let values: Vec<i64> = self
            .backend
            .run(Retry::IfNotRun, |mut conn| {
                let mut invocation = self.script.prepare_invoke();
                for c in checks {
                    invocation
                        .key(c.key)
                        .arg(c.limits.lua_code())
                        .arg(c.limits.limit)
                        .arg(c.limits.period_us)
                        .arg(c.limits.burst)
                        .arg(c.cost);
                }
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await?;
        if values.len() != checks.len() * 4 {
            return Err(BackendError::Unavailable(format!(
                "rate-limit script answered {} values for {} checks",
                values.len(),
                checks.len()
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

    /// The Redis handle.
    pub(crate) fn backend(&self) -> &RedisBackend {
        &self.backend
    }
}
