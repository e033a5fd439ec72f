//! `blinkchamber bench`: capability rows beside raw Redis rows, measured in one run.

use std::time::Duration;

use anyhow::Context;
use redis::IntoConnectionInfo;

use crate::backend::RedisBackend;
use crate::bench;
use crate::config::{RedisConfig, types::duration};

/// Arguments of `bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Redis to measure against (`redis://host:port`); use a scratch instance.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// How long each scenario runs in each round.
    #[arg(long, default_value = "1s", value_parser = duration::parse)]
    duration: Duration,
    /// Rounds of every scenario; the table shows each scenario's median round.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Operations in flight at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Tokio worker threads of the measuring client. One, like `redis-benchmark`, leaves
    /// Redis a core of its own on a small machine and keeps the client's tasks from waking
    /// each other across threads, which made ratios swing by a third from run to run.
    #[arg(long, default_value_t = std::num::NonZeroUsize::MIN)]
    threads: std::num::NonZeroUsize,
    /// Multiplexed connections in BlinkChamber's pool (`redis.poolSize`); the raw rows
    /// always use one connection.
    #[arg(long)]
    pool_size: Option<std::num::NonZeroU32>,
    /// Measure only these groups (the raw rows come along when a group compares with
    /// them).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Group>,
}

impl BenchArgs {
    /// Worker threads the runtime running the benchmark should have.
    pub fn threads(&self) -> usize {
        self.threads.get()
    }
}

/// Groups of rows.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    /// Raw commands and the same commands through the pool.
    Raw,
    /// The two-level cache.
    Cache,
    /// Rate limits.
    Ratelimit,
    /// Locks.
    Locks,
    /// Sessions.
    Sessions,
    /// Cached token introspection and JWT verification.
    Tokens,
    /// Event queues (with their own raw baselines) and memory per pending event; with a
    /// replica connected to the measured Redis, enqueue with `waitReplicas: 1` too.
    Events,
    /// Dead-letter show and replay by id among a million dead letters (one round, after
    /// the others).
    DeadLetters,
    /// `serve`'s HTTP API on loopback at `--concurrency` keep-alive connections: `/healthz`,
    /// cache L1 and L2 hits, a rate-limit check, a session read and an event publish, each
    /// beside the library call it wraps.
    Http,
}

pub(super) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let info = args
        .redis
        .as_str()
        .into_connection_info()
        .with_context(|| format!("--redis {}: expected redis://host:port", args.redis))?;
    let (host, port) = match info.addr() {
        redis::ConnectionAddr::Tcp(h, p) => (h.clone(), *p),
        other => anyhow::bail!("--redis: only plain TCP addresses are supported, got {other}"),
    };
    let mut cfg = RedisConfig::standalone(host.clone(), port);
    if let Some(size) = args.pool_size {
        cfg.pool_size = size;
    }
    let cfg_pool = cfg.pool_size;
    let backend = RedisBackend::connect(cfg).await?;
    backend
        .ping()
        .await
        .with_context(|| format!("cannot reach Redis at {host}:{port}"))?;
    let client = redis::Client::open(info)?;
    let raw = client.get_multiplexed_async_connection().await?;
    // Its own connection, so reading Redis's CPU time never waits behind a row's commands.
    bench::cpu::watch_redis(client.get_multiplexed_async_connection().await?);
    let prefix = format!("blinkchamber:bench:{}:", std::process::id());
    eprintln!(
        "measuring against {host}:{port}, {} in flight on {} client thread(s), pool of at \
         most {}, {} rounds of {} per scenario",
        args.concurrency,
        args.threads,
        cfg_pool,
        args.rounds.max(1),
        duration::format(&args.duration)
    );
    let wanted = |g: Group| args.only.is_empty() || args.only.contains(&g);
    let raw_needed = [
        Group::Raw,
        Group::Cache,
        Group::Ratelimit,
        Group::Locks,
        Group::Sessions,
        Group::Tokens,
    ]
    .into_iter()
    .any(wanted);
    let (c, d) = (args.concurrency, args.duration);
    // Rows that compare with a raw command measure it beside them (bench::Raw::against).
    let raw_ops = bench::Raw::new(raw.clone(), &prefix).await;
    let mut rounds = Vec::new();
    for _ in 0..args.rounds.max(1) {
        let mut rows = Vec::new();
        if raw_needed {
            rows.extend(bench::raw_rows(&raw_ops, backend.clone(), c, d).await);
        }
        if wanted(Group::Cache) {
            let cache = bench::cache::cache_rows(backend.clone(), &raw_ops, c, d, &prefix);
            rows.extend(cache.await);
        }
        if wanted(Group::Ratelimit) {
            let limits = bench::ratelimit::ratelimit_rows(backend.clone(), &raw_ops, c, d, &prefix);
            rows.extend(limits.await);
        }
        if wanted(Group::Locks) {
            let locks = bench::locks::lock_rows(backend.clone(), &raw_ops, c, d, &prefix);
            rows.extend(locks.await);
        }
        if wanted(Group::Sessions) {
            let sessions = bench::sessions::session_rows(backend.clone(), &raw_ops, c, d, &prefix);
            rows.extend(sessions.await);
        }
        if wanted(Group::Tokens) {
            let tokens = bench::tokens::token_rows(backend.clone(), &raw_ops, c, d, &prefix);
            rows.extend(tokens.await);
        }
        if wanted(Group::Events) {
            rows.extend(
                bench::events::event_rows(&client, raw.clone(), backend.clone(), c, d, &prefix)
                    .await,
            );
        }
        if wanted(Group::Http) {
            rows.extend(bench::http::http_rows(raw.clone(), (&host, port), c, d, &prefix).await);
        }
        rounds.push(rows);
    }
    raw_ops.remove().await;
    let mut table = bench::median_rounds(&rounds);
    // Before the dead-letter rows, whose million entries would skew used_memory.
    let memory = if wanted(Group::Events) {
        Some(bench::events::memory_line(raw.clone(), backend.clone(), &prefix).await)
    } else {
        None
    };
    if wanted(Group::DeadLetters) {
        table.extend(
            bench::dead_letters::dead_letter_rows(raw.clone(), backend.clone(), d, &prefix).await,
        );
    }
    print!("{}", bench::table(&table));
    if let Some(ratio) = bench::http::l1_to_healthz(&table) {
        println!("\nHTTP cache get, L1 hit / HTTP GET /healthz: {ratio:.2}");
    }
    if let Some(memory) = memory {
        print!("\n{memory}");
    }
    Ok(())
}
