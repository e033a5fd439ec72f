//! The process-wide Prometheus recorder.
//!
//! Installed once, lazily, by whoever needs it first (the `/metrics` listener, a test):
//! the `metrics` facade has one global recorder per process.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use metrics_util::layers::{FilterLayer, Layer};

use crate::config::Config;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Name parts of the event metrics, left out when `events.performance.enableMetrics` is
/// off.
pub const EVENT_METRICS: &[&str] = &["blinkchamber_events_", "blinkchamber_zitadel_"];

/// Installs the recorder if needed and returns the handle that renders `/metrics`.
pub fn install() -> PrometheusHandle {
    install_without(&[])
}

/// [`install`] for a process running `config`: without the event metrics when
/// `events.performance.enableMetrics` is off.
pub fn install_for(config: &Config) -> PrometheusHandle {
    if config.events.performance.enable_metrics {
        install()
    } else {
        install_without(EVENT_METRICS)
    }
}

/// The handle of our recorder, when this process installed it (`serve`, `worker`).
pub fn installed() -> Option<PrometheusHandle> {
    HANDLE.get().cloned()
}

/// Installs the recorder if needed, dropping every metric whose name contains one of
/// `drop`; the first install in a process decides.
pub fn install_without(drop: &[&str]) -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            let installed = if drop.is_empty() {
                metrics::set_global_recorder(recorder).is_ok()
            } else {
                metrics::set_global_recorder(FilterLayer::from_patterns(drop).layer(recorder))
                    .is_ok()
            };
            // Another recorder may already be installed (an embedding application's);
            // then ours renders nothing, which is the embedder's choice to make.
            if !installed {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}
