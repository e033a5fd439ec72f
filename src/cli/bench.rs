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
    /// How long each scenario runs.
    #[arg(long, default_value = "3s", value_parser = duration::parse)]
    duration: Duration,
    /// Operations in flight at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
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
    let cfg = RedisConfig::standalone(host.clone(), port);
    let backend = RedisBackend::connect(cfg).await?;
    backend
        .ping()
        .await
        .with_context(|| format!("cannot reach Redis at {host}:{port}"))?;
    let raw = redis::Client::open(info)?
        .get_multiplexed_async_connection()
        .await?;
    let prefix = format!("blinkchamber:bench:{}:", std::process::id());
    eprintln!(
        "measuring against {host}:{port}, {} in flight, {} per scenario",
        args.concurrency,
        duration::format(&args.duration)
    );
    let rows = bench::raw_rows(raw, backend, args.concurrency, args.duration, &prefix).await;
    print!("{}", bench::table(&rows));
    Ok(())
}
