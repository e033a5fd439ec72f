//! Raw Redis baselines and the backend's own overhead over them.
//!
//! "Raw" is one redis-rs multiplexed connection shared by every task: the client a
//! capability would otherwise be compared with. The pooled rows go through
//! [`RedisBackend::run`] with its retries, epochs and metrics.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::{Row, measure, measure_against};
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

/// The raw connection and the keys and value its rows use: measures a raw row alone
/// ([`Raw::row`]) or beside a row that compares with it ([`Raw::against`]). Cheap to
/// clone.
#[derive(Clone)]
pub struct Raw {
    conn: MultiplexedConnection,
    fixture: Arc<Fixture>,
}

struct Fixture {
    value: Vec<u8>,
    key: String,
    list: String,
    counter: String,
    prefix: String,
    script: redis::Script,
}

/// The raw commands rows compare with.
#[derive(Clone, Copy)]
enum Command {
    Get,
    Set,
    Evalsha,
}

impl Command {
    fn named(name: &str) -> Option<Self> {
        match name {
            RawBaselines::GET => Some(Self::Get),
            RawBaselines::SET => Some(Self::Set),
            RawBaselines::EVALSHA => Some(Self::Evalsha),
            _ => None,
        }
    }
}

/// One raw command, as task `task` sends its `seq`th.
async fn send(
    f: Arc<Fixture>,
    mut conn: MultiplexedConnection,
    command: Command,
    task: usize,
    seq: u64,
) {
    let c = &mut conn;
    match command {
        Command::Get => {
            let get = redis::cmd("GET").arg(&f.key).query_async(c).await;
            let _: Option<Vec<u8>> = get.unwrap_or(None);
        }
        Command::Set => {
            let cmd = set_cmd(&f.prefix, task, seq, &f.value);
            let _: Result<(), _> = cmd.query_async(c).await;
        }
        Command::Evalsha => {
            let _: Result<i64, _> = f.script.key(&f.counter).invoke_async(c).await;
        }
    }
}

impl Raw {
    /// Names the keys under `prefix` and writes the one `GET` reads.
    pub async fn new(conn: MultiplexedConnection, prefix: &str) -> Self {
        let fixture = Fixture {
            value: vec![b'x'; 220],
            key: format!("{prefix}get"),
            list: format!("{prefix}list"),
            counter: format!("{prefix}counter"),
            prefix: prefix.to_owned(),
            script: redis::Script::new(SCRIPT),
        };
        let _: () = redis::cmd("SET")
            .arg(&fixture.key)
            .arg(&fixture.value)
            .query_async(&mut conn.clone())
            .await
            .unwrap_or(());
        Self {
            conn,
            fixture: Arc::new(fixture),
        }
    }

    /// Deletes the keys.
    pub async fn remove(&self) {
        let f = &self.fixture;
        let _: Result<i64, _> = redis::cmd("DEL")
            .arg(&f.key)
            .arg(&f.list)
            .arg(&f.counter)
            .query_async(&mut self.conn.clone())
            .await;
    }

    /// The raw row `name` (`GET`, `SET` or `EVALSHA` of [`RawBaselines`]) alone.
    pub async fn row(&self, name: &str, concurrency: usize, duration: Duration) -> Option<Row> {
        let (command, conn, f) = (
            Command::named(name)?,
            self.conn.clone(),
            self.fixture.clone(),
        );
        let op = move |task, seq| send(f.clone(), conn.clone(), command, task, seq);
        Some(measure(name, concurrency, duration, op).await)
    }

    /// `op`'s row named `name` beside the raw row `baseline` ([`measure_against`]): the
    /// baseline's row, then `op`'s with its ratio. `baseline` is `GET`, `SET` or `EVALSHA`
    /// of [`RawBaselines`].
    pub async fn against<F, Fut>(
        &self,
        baseline: &str,
        name: &str,
        concurrency: usize,
        duration: Duration,
        op: F,
    ) -> Vec<Row>
    where
        F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let command = Command::named(baseline).expect("a row compares with GET, SET or EVALSHA");
        let (conn, f) = (self.conn.clone(), self.fixture.clone());
        let base = move |task, seq| send(f.clone(), conn.clone(), command, task, seq);
        measure_against((baseline, base), name, concurrency, duration, op)
            .await
            .into()
    }
}

/// Measures the raw commands and the same commands through the backend's pool.
pub async fn raw_rows(
    raw: &Raw,
    backend: RedisBackend,
    concurrency: usize,
    duration: Duration,
) -> Vec<Row> {
    let f = raw.fixture.clone();
    let mut rows = Vec::new();
    rows.extend(raw.row(RawBaselines::GET, concurrency, duration).await);
    {
        let (b, f) = (backend.clone(), f.clone());
        rows.push(
            measure("pooled GET", concurrency, duration, move |_, _| {
                let (b, f) = (b.clone(), f.clone());
                async move {
                    let _: Option<Vec<u8>> =
                        b.query(redis::cmd("GET").arg(&f.key)).await.unwrap_or(None);
                }
            })
            .await
            .against(RawBaselines::GET),
        );
    }
    rows.extend(raw.row(RawBaselines::SET, concurrency, duration).await);
    {
        let (b, f) = (backend.clone(), f.clone());
        rows.push(
            measure("pooled SET", concurrency, duration, move |t, s| {
                let b = b.clone();
                let cmd = set_cmd(&f.prefix, t, s, &f.value);
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
            raw.conn.clone(),
            &f.list,
            vec![f.value.clone()],
            concurrency,
            duration,
        )
        .await,
    );
    rows.extend(raw.row(RawBaselines::EVALSHA, concurrency, duration).await);
    {
        let b = backend.clone();
        rows.push(
            measure("pooled EVALSHA", concurrency, duration, move |_, _| {
                let (b, f) = (b.clone(), f.clone());
                async move {
                    let _: Result<i64, _> = b
                        .run(Retry::IfNotRun, |mut c| {
                            let inv = f.script.key(&f.counter);
                            async move { inv.invoke_async(&mut c).await }
                        })
                        .await;
                }
            })
            .await
            .against(RawBaselines::EVALSHA),
        );
    }
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
