//! `blinkchamber worker`: consumes the event queues with `events.performance.workerCount`
//! workers, delivering each event to the sinks of `events.sinks` (log, webhooks), and
//! serves `/metrics`.

use super::ConfigArg;
use super::serve::{bind, shutdown_signal};
use crate::config::{BackendKind, Config};
use crate::runtime::{Capability, Runtime};

/// Arguments of `worker`.
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    config: ConfigArg,
}

pub(super) async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let config = Config::load(args.config.config.as_deref())?;
    if config.backend == BackendKind::Memory {
        anyhow::bail!(
            "backend: the worker needs `backend: redis`; the memory backend's queues live inside \
             one `serve` process and no other process can read them"
        );
    }
    if !config.events.enabled {
        anyhow::bail!("events.enabled: event streaming is turned off");
    }
    let terminated = shutdown_signal();
    crate::metrics::install_for(&config);
    let metrics = bind("server.metricsListen", config.server.metrics_listen).await?;
    let runtime = Runtime::with(&config, &[Capability::Events, Capability::Tokens]).await?;
    runtime.start_workers()?;
    tracing::info!(
        workers = config.events.performance.worker_count.get(),
        webhooks = config.events.sinks.webhooks.len(),
        metrics = %metrics.local_addr()?,
        "consuming events"
    );
    let metrics_task = tokio::spawn(crate::server::run_metrics(metrics, shutdown_signal()));
    terminated.await;
    tracing::info!("shutting down: finishing the batches in hand");
    runtime.shutdown().await;
    metrics_task.abort();
    tracing::info!("stopped");
    Ok(())
}
