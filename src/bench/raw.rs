//! Raw Redis baselines and the backend's own overhead over them.
//!
//! "Raw" is one redis-rs multiplexed connection shared by every task: the client a
//! capability would otherwise be compared with. The pooled rows go through
//! [`RedisBackend::run`] with its retries, epochs and metrics.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::{Row, measure};
use crate::backend::{RedisBackend, Retry};

/// Raw baseline row names, for capability rows to compare with.
pub struct RawBaselines;

impl RawBaselines {
    /// `GET` of an existing key.
    pub const GET: &'static str = "raw GET";
    /// `SET` with a 220-byte value.
    pub const SET: &'static str = "raw SET";
    /// `LPUSH` of a 220-byte element.
    pub const LPUSH: &'static str = "raw LPUSH";
    /// `EVALSHA` of a one-key script.
    pub const EVALSHA: &'static str = "raw EVALSHA";
}

const SCRIPT: &str = "return redis.call('INCR', KEYS[1])";

/// Measures the raw commands and the same commands through the backend's pool.
pub async fn raw_rows(
    raw: MultiplexedConnection,
    backend: RedisBackend,
    concurrency: usize,
    duration: Duration,
    prefix: &str,
) -> Vec<Row> {
    let value = vec![b'x'; 220];
    let key = format!("{prefix}get");
    let list = format!("{prefix}list");
    let counter = format!("{prefix}counter");
    let mut setup = raw.clone();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(&value)
        .query_async(&mut setup)
        .await
        .unwrap_or(());
    let script = redis::Script::new(SCRIPT);

    let mut rows = Vec::new();
    {
        let (raw, key) = (raw.clone(), key.clone());
        rows.push(
            measure(RawBaselines::GET, concurrency, duration, move |_, _| {
                let (mut c, key) = (raw.clone(), key.clone());
                async move {
                    let _: Option<Vec<u8>> = redis::cmd("GET")
                        .arg(key)
                        .query_async(&mut c)
                        .await
                        .unwrap_or(None);
                }
            })
            .await,
        );
    }
    {
        let (b, key) = (backend.clone(), key.clone());
        rows.push(
            measure("pooled GET", concurrency, duration, move |_, _| {
                let (b, key) = (b.clone(), key.clone());
                async move {
                    let _: Option<Vec<u8>> =
                        b.query(redis::cmd("GET").arg(key)).await.unwrap_or(None);
                }
            })
            .await
            .against(RawBaselines::GET),
        );
    }
    {
        let (raw, value, prefix) = (raw.clone(), value.clone(), prefix.to_owned());
        rows.push(
            measure(RawBaselines::SET, concurrency, duration, move |t, s| {
                let mut c = raw.clone();
                let cmd = set_cmd(&prefix, t, s, &value);
                async move {
                    let _: Result<(), _> = cmd.query_async(&mut c).await;
                }
            })
            .await,
        );
    }
    {
        let (b, value, prefix) = (backend.clone(), value.clone(), prefix.to_owned());
        rows.push(
            measure("pooled SET", concurrency, duration, move |t, s| {
                let b = b.clone();
                let cmd = set_cmd(&prefix, t, s, &value);
                async move {
                    let _: Result<(), _> = b.query(&cmd).await;
                }
            })
            .await
            .against(RawBaselines::SET),
        );
    }
    rows.push(
        lpush_row(
            RawBaselines::LPUSH,
            raw.clone(),
            &list,
            vec![value.clone()],
            concurrency,
            duration,
        )
        .await,
    );
    {
        let (raw, script, counter) = (raw.clone(), script.clone(), counter.clone());
        rows.push(
            measure(RawBaselines::EVALSHA, concurrency, duration, move |_, _| {
                let (mut c, script, counter) = (raw.clone(), script.clone(), counter.clone());
                async move {
                    let _: Result<i64, _> = script.key(counter).invoke_async(&mut c).await;
                }
            })
            .await,
        );
    }
    {
        let (b, script, counter) = (backend.clone(), script.clone(), counter.clone());
        rows.push(
            measure("pooled EVALSHA", concurrency, duration, move |_, _| {
                let (b, script, counter) = (b.clone(), script.clone(), counter.clone());
                async move {
                    let _: Result<i64, _> = b
                        .run(Retry::IfNotRun, |mut c| {
                            let inv = script.key(&counter);
                            async move { inv.invoke_async(&mut c).await }
                        })
                        .await;
                }
            })
            .await
            .against(RawBaselines::EVALSHA),
        );
    }
    let mut cleanup = raw;
    let _: Result<i64, _> = redis::cmd("DEL")
        .arg(&key)
        .arg(&list)
        .arg(&counter)
        .query_async(&mut cleanup)
        .await;
    rows
}

/// `LPUSH list items…` (one command per operation) on the raw connection.
pub(super) async fn lpush_row(
    name: &str,
    raw: MultiplexedConnection,
    list: &str,
    items: Vec<Vec<u8>>,
    concurrency: usize,
    duration: Duration,
) -> Row {
    let list = list.to_owned();
    measure(name, concurrency, duration, move |_, _| {
        let mut c = raw.clone();
        let mut cmd = redis::cmd("LPUSH");
        cmd.arg(&list).arg(&items);
        async move {
            let _: Result<i64, _> = cmd.query_async(&mut c).await;
        }
    })
    .await
}

fn set_cmd(prefix: &str, task: usize, seq: u64, value: &[u8]) -> redis::Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(format!(
        "{prefix}set:{}",
        (task as u64 * 1_000_003 + seq) % 10_000
    ))
    .arg(value)
    .arg("EX")
    .arg(60);
    cmd
}
