//! `blinkchamber serve`: the HTTP API and the `/metrics` listener.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::ConfigArg;
use crate::backend::Backend;
use crate::config::Config;
use crate::runtime::Runtime;
use crate::server::{self, AppState};

/// Arguments of `serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Serve `/v1` without bearer tokens (refused unless `server.listen` is loopback).
    #[arg(long)]
    no_auth: bool,
}

pub(super) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config::load_adjusted(args.config.config.as_deref(), |c| {
        if args.no_auth {
            c.server.auth.enabled = false;
        }
    })?;
    let terminated = shutdown_signal();
    crate::metrics::install_for(&config);
    let api = bind("server.listen", config.server.listen).await?;
    let metrics = bind("server.metricsListen", config.server.metrics_listen).await?;
    let drain = config.server.shutdown_timeout;
    let state = AppState::from_config(config).await?;
    let runtime = state.runtime.clone();
    start_in_process_workers(&runtime)?;
    if !state.auth.enabled() {
        tracing::warn!("auth disabled: /v1 accepts requests without a token (loopback only)");
    }
    tracing::info!(api = %api.local_addr()?, metrics = %metrics.local_addr()?, "listening");

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let metrics_task = tokio::spawn(server::run_metrics(metrics, stopped()));
    let doctor_task =
        crate::doctor::start_background(std::sync::Arc::new(runtime.config().clone()));
    let api_task = tokio::spawn(server::run(api, state, stopped()));

    terminated.await;
    tracing::info!(timeout = ?drain, "shutting down: draining in-flight requests");
    let _ = stop_tx.send(true);
    match tokio::time::timeout(drain, api_task).await {
        Ok(joined) => joined.context("API server task")?.context("API server")?,
        Err(_) => tracing::warn!("in-flight requests still running after the drain timeout"),
    }
    runtime.shutdown().await;
    metrics_task.abort();
    if let Some(task) = doctor_task {
        task.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

/// On the memory backend the queues live in this process, so `serve` consumes them itself
/// (to `events.sinks`); with Redis, `blinkchamber worker` does.
fn start_in_process_workers(runtime: &Runtime) -> anyhow::Result<()> {
    if !matches!(runtime.backend(), Backend::Memory(_)) || runtime.events().is_none() {
        return Ok(());
    }
    runtime.start_workers()?;
    tracing::info!(
        workers = runtime.config().events.performance.worker_count.get(),
        "memory backend: consuming events in this process"
    );
    Ok(())
}

pub(super) async fn bind(key: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("{key}: cannot listen on {addr}"))
}

/// Resolves on SIGTERM (Kubernetes) or Ctrl-C. The SIGTERM handler is installed when this
/// is called, not when the future is first polled, so a signal that arrives while the
/// listeners start is not lost (the default action would kill the process).
pub(super) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let term = async move {
            match term {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => {}
            () = term => {}
        }
    }
}
