//! Lock rows: acquire + release cycles over many names.

use std::time::Duration;

use super::{Raw, RawBaselines, Row};
use crate::backend::RedisBackend;
use crate::config::LocksConfig;
use crate::lock::Locks;

/// Lock names the cycles spread over.
pub const NAMES: u64 = 1000;

/// `acquire` then `release` of one of [`NAMES`] names per operation (two script calls).
pub async fn lock_rows(
    backend: RedisBackend,
    raw: &Raw,
    concurrency: usize,
    duration: Duration,
    prefix: &str,
) -> Vec<Row> {
    let cfg = LocksConfig {
        key_prefix: format!("{prefix}lock:"),
        ..LocksConfig::default()
    };
    let locks = Locks::redis(&cfg, backend);
    locks.ready().await;
    raw.against(
        RawBaselines::EVALSHA,
        "lock acquire + release, 1000 names",
        concurrency,
        duration,
        move |task, seq| {
            let locks = locks.clone();
            async move {
                let name = format!("n{}", (task as u64 * 7919 + seq) % NAMES);
                // Several tasks may pick the same name; waiting for it is part of the cost.
                if let Ok(lease) = locks
                    .acquire(&name, Duration::from_secs(10), Duration::from_secs(10))
                    .await
                {
                    let _ = locks.release(&lease.name, &lease.token).await;
                }
            }
        },
    )
    .await
}
