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

/// The keys and value the raw and pooled rows use.
struct Fixture {
    value: Vec<u8>,
    key: String,
    list: String,
    counter: String,
    prefix: String,
}

impl Fixture {
    /// Names the keys under `prefix` and writes the one `GET` reads.
    async fn new(raw: &MultiplexedConnection, prefix: &str) -> Self {
        let fixture = Self {
            value: vec![b'x'; 220],
            key: format!("{prefix}get"),
            list: format!("{prefix}list"),
            counter: format!("{prefix}counter"),
            prefix: prefix.to_owned(),
        };
        let _: () = redis::cmd("SET")
            .arg(&fixture.key)
            .arg(&fixture.value)
            .query_async(&mut raw.clone())
            .await
            .unwrap_or(());
        fixture
    }

    /// Deletes the keys.
    async fn remove(self, raw: &MultiplexedConnection) {
        let _: Result<i64, _> = redis::cmd("DEL")
            .arg(&self.key)
            .arg(&self.list)
            .arg(&self.counter)
            .query_async(&mut raw.clone())
            .await;
    }

    /// The raw row named `name` (one of [`RawBaselines`]' names but `LPUSH`'s).
    async fn raw_row(
        &self,
        name: &str,
        raw: &MultiplexedConnection,
        concurrency: usize,
        duration: Duration,
    ) -> Option<Row> {
        let raw = raw.clone();
        Some(match name {
            RawBaselines::GET => {
                let key = self.key.clone();
                measure(name, concurrency, duration, move |_, _| {
                    let (mut c, key) = (raw.clone(), key.clone());
                    async move {
                        let _: Option<Vec<u8>> = redis::cmd("GET")
                            .arg(key)
                            .query_async(&mut c)
                            .await
                            .unwrap_or(None);
                    }
                })
                .await
            }
            RawBaselines::SET => {
                let (value, prefix) = (self.value.clone(), self.prefix.clone());
                measure(name, concurrency, duration, move |t, s| {
                    let mut c = raw.clone();
                    let cmd = set_cmd(&prefix, t, s, &value);
                    async move {
                        let _: Result<(), _> = cmd.query_async(&mut c).await;
                    }
                })
                .await
            }
            RawBaselines::EVALSHA => {
                let (script, counter) = (redis::Script::new(SCRIPT), self.counter.clone());
                measure(name, concurrency, duration, move |_, _| {
                    let (mut c, script, counter) = (raw.clone(), script.clone(), counter.clone());
                    async move {
                        let _: Result<i64, _> = script.key(counter).invoke_async(&mut c).await;
                    }
                })
                .await
            }
            _ => return None,
        })
    }
}

/// The raw rows named in `names`, measured again right before the rows that compare with
/// them, so that a ratio compares two measurements a second apart rather than the length
/// of a whole round apart: this machine's speed moves over tens of seconds.
pub async fn baselines(
    names: &[&str],
    raw: MultiplexedConnection,
    concurrency: usize,
    duration: Duration,
    prefix: &str,
) -> Vec<Row> {
    let fixture = Fixture::new(&raw, prefix).await;
    let mut rows = Vec::new();
    for name in names {
        rows.extend(fixture.raw_row(name, &raw, concurrency, duration).await);
    }
    fixture.remove(&raw).await;
    rows
}

/// Measures the raw commands and the same commands through the backend's pool.
pub async fn raw_rows(
    raw: MultiplexedConnection,
    backend: RedisBackend,
    concurrency: usize,
    duration: Duration,
    prefix: &str,
) -> Vec<Row> {
    let f = Fixture::new(&raw, prefix).await;
    let mut rows = Vec::new();
    rows.extend(
        f.raw_row(RawBaselines::GET, &raw, concurrency, duration)
            .await,
    );
    {
        let (b, key) = (backend.clone(), f.key.clone());
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
    rows.extend(
        f.raw_row(RawBaselines::SET, &raw, concurrency, duration)
            .await,
    );
    {
        let (b, value, prefix) = (backend.clone(), f.value.clone(), f.prefix.clone());
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
            &f.list,
            vec![f.value.clone()],
            concurrency,
            duration,
        )
        .await,
    );
    rows.extend(
        f.raw_row(RawBaselines::EVALSHA, &raw, concurrency, duration)
            .await,
    );
    {
        let (b, script, counter) = (
            backend.clone(),
            redis::Script::new(SCRIPT),
            f.counter.clone(),
        );
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
    f.remove(&raw).await;
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
