//! `blinkchamber worker`: consumes the event queues with `events.performance.workerCount`
//! workers, delivering each event to the sinks of `events.sinks` (log, webhooks), and
//! serves `/metrics`.

use std::sync::Arc;

use super::ConfigArg;
use super::serve::{bind, shutdown_signal};
use crate::backend::Backend;
use crate::config::{BackendKind, Config};
use crate::events::{Handler, Queues, Sinks, Workers};
use crate::token::{EvictOnLogout, Introspector};

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
    let backend = Backend::from_config(&config).await?;
    let queues = Queues::from_config(&config.events, &backend);
    let introspector = if config.tokens.introspection.enabled {
        Some(Introspector::from_config(&config.tokens, &backend)?)
    } else {
        None
    };
    let workers = Workers::start(
        &config.events,
        queues,
        event_handler(&config, introspector)?,
    );
    tracing::info!(
        workers = config.events.performance.worker_count.get(),
        webhooks = config.events.sinks.webhooks.len(),
        metrics = %metrics.local_addr()?,
        "consuming events"
    );
    let metrics_task = tokio::spawn(crate::server::run_metrics(metrics, shutdown_signal()));
    terminated.await;
    tracing::info!("shutting down: finishing the batches in hand");
    workers.shutdown().await;
    metrics_task.abort();
    tracing::info!("stopped");
    Ok(())
}

/// What workers hand events to: the sinks of `events.sinks`, behind the token cache's
/// logout eviction when introspection is on (an `auth.logout` drops the user's or the
/// session's cached introspections first).
pub(super) fn event_handler(
    config: &Config,
    introspector: Option<Introspector>,
) -> anyhow::Result<Arc<dyn Handler>> {
    let sinks: Arc<dyn Handler> = Arc::new(
        Sinks::from_config(&config.events.sinks)
            .map_err(|e| anyhow::anyhow!("events.sinks: {e}"))?,
    );
    Ok(match introspector {
        Some(introspector) => Arc::new(EvictOnLogout::new(introspector, sinks)),
        None => sinks,
    })
}
