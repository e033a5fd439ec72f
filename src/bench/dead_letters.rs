//! Dead-letter rows: show and replay by event id among [`DEAD_LETTERS`] dead letters, the
//! operations an operator runs on a queue that has been failing for a week, one at a time
//! as an operator or the console does.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::{Row, measure};
use crate::backend::RedisBackend;
use crate::events::{Queues, Router, encode};

/// Dead letters in the list while the rows run.
pub const DEAD_LETTERS: usize = 1_000_000;

/// Fills a dead-letter list with [`DEAD_LETTERS`] events (as workers leave them), measures
/// show and replay by id at random positions, and deletes it all.
pub async fn dead_letter_rows(
    mut raw: MultiplexedConnection,
    backend: RedisBackend,
    duration: Duration,
    prefix: &str,
) -> Vec<Row> {
    let concurrency = 1;
    let prefix = format!("{prefix}dl:");
    let mut cfg = super::events::config(&prefix);
    cfg.publishing.compression = false;
    let dead = cfg.queues.dead_letter.clone();
    let index = format!("{dead}:index");
    let positions = format!("{dead}:positions");
    let mut ids = Vec::with_capacity(DEAD_LETTERS);
    for chunk in 0..DEAD_LETTERS / 10_000 {
        let mut pipe = redis::pipe();
        for i in 0..10_000 {
            let mut event = super::events::bench_event((chunk * 10_000 + i) as u64);
            event.attempt = 4;
            event
                .extensions
                .insert("lasterror".into(), "webhook answered 503".into());
            let stored = encode(&event, false);
            pipe.cmd("LPUSH").arg(&dead).arg(&stored).ignore();
            // As settle leaves them: positions count from the oldest end.
            let pos = chunk * 10_000 + i;
            pipe.cmd("HSET")
                .arg(&index)
                .arg(&event.id)
                .arg(pos)
                .ignore();
            pipe.cmd("HSET")
                .arg(&positions)
                .arg(pos)
                .arg(&event.id)
                .ignore();
            ids.push(event.id);
        }
        if let Err(e) = pipe.query_async::<()>(&mut raw).await {
            eprintln!("dead-letter rows skipped: {e}");
            return Vec::new();
        }
    }
    let ids = Arc::new(ids);
    let queues = Queues::redis(&cfg, backend);
    let mut rows = Vec::new();
    {
        let (queues, ids) = (queues.clone(), ids.clone());
        rows.push(
            measure(
                "dead-letter show by id, 1M dead letters",
                concurrency,
                duration,
                move |_, _| {
                    let (queues, ids) = (queues.clone(), ids.clone());
                    async move {
                        let id = &ids[rand::random_range(0..ids.len())];
                        let _ = queues.dead_letter(id).await;
                    }
                },
            )
            .await,
        );
    }
    {
        let (queues, ids) = (queues.clone(), ids.clone());
        let router = Arc::new(Router::new(&cfg.routing).expect("valid routing"));
        rows.push(
            measure(
                "dead-letter replay by id, 1M dead letters",
                concurrency,
                duration,
                move |_, _| {
                    let (queues, ids, router) = (queues.clone(), ids.clone(), router.clone());
                    async move {
                        let id = &ids[rand::random_range(0..ids.len())];
                        let _ = queues.replay_dead_letter(id, &router, false).await;
                    }
                },
            )
            .await,
        );
    }
    super::events::cleanup(raw, &prefix).await;
    rows
}
