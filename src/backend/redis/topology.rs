//! Where the master is now: a fixed address, or our own Sentinel supervisor.
//!
//! The supervisor is the reason this module exists. Off-the-shelf clients either never
//! leave a dead master or keep writing to a demoted one for seconds. Here the master
//! address is a `watch` value with an epoch; every pooled connection remembers the epoch
//! it was opened in and is discarded once the epoch moves. The epoch moves when:
//! - any Sentinel publishes `+switch-master` for our master (pub/sub, sub-millisecond);
//! - a command fails with `READONLY` or a connection error and a re-resolve, asking the
//!   Sentinels and confirming with `ROLE` on the answer, finds a different master;
//! - the periodic re-resolve (a safety net for missed messages) finds one.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::Value;
use tokio::sync::{Notify, watch};

use super::connect::{self, Endpoint, Role};
use crate::backend::BackendError;
use crate::config::{RedisConfig, RedisMode, parse_host_port};

/// The current master and the epoch it was learnt in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Master {
    /// The master's address.
    pub endpoint: Endpoint,
    /// Increases by one each time the master changes.
    pub epoch: u64,
}

/// Follows the master. Dropping it stops the background tasks.
pub struct Topology {
    master: watch::Receiver<Master>,
    _tx: Arc<watch::Sender<Master>>,
    refresh: Arc<Notify>,
    _stop: watch::Sender<()>,
}

/// How often the supervisor re-asks the Sentinels even without any signal.
const RECHECK_INTERVAL: Duration = Duration::from_secs(5);
/// Smallest pause between two re-resolves, so an error storm cannot hammer the Sentinels.
const MIN_RESOLVE_GAP: Duration = Duration::from_millis(20);

impl Topology {
    /// Resolves the master once (failing if nobody answers), then follows it.
    pub async fn start(cfg: &RedisConfig) -> Result<Self, BackendError> {
        let (stop_tx, stop_rx) = watch::channel(());
        let refresh = Arc::new(Notify::new());
        if cfg.mode == RedisMode::Standalone {
            let (tx, master) = watch::channel(Master {
                endpoint: Endpoint {
                    host: cfg.host.clone(),
                    port: cfg.port,
                },
                epoch: 0,
            });
            drop(stop_rx);
            return Ok(Self {
                master,
                _tx: Arc::new(tx),
                refresh,
                _stop: stop_tx,
            });
        }
        let sentinels = sentinel_endpoints(cfg)?;
        let first = resolve(cfg, &sentinels).await?;
        tracing::info!(master = %first, name = %cfg.sentinel.master_name, "master resolved through Sentinel");
        let (tx, master) = watch::channel(Master {
            endpoint: first,
            epoch: 0,
        });
        let tx = Arc::new(tx);
        for sentinel in &sentinels {
            tokio::spawn(watch_sentinel(
                cfg.clone(),
                sentinel.clone(),
                tx.clone(),
                refresh.clone(),
                stop_rx.clone(),
            ));
        }
        tokio::spawn(supervise(
            cfg.clone(),
            sentinels,
            tx.clone(),
            refresh.clone(),
            stop_rx,
        ));
        Ok(Self {
            master,
            _tx: tx,
            refresh,
            _stop: stop_tx,
        })
    }

    /// The master now.
    pub fn current(&self) -> Master {
        self.master.borrow().clone()
    }

    /// A receiver that fires on the next master change (the current one counts as seen).
    pub fn watch(&self) -> watch::Receiver<Master> {
        let mut rx = self.master.clone();
        rx.borrow_and_update();
        rx
    }

    /// Asks for an immediate re-resolve: a command saw `READONLY` or lost its connection.
    pub fn suspect(&self) {
        self.refresh.notify_one();
    }

    /// Waits until the epoch moves past `epoch` or `max` elapses.
    pub async fn wait_past(&self, epoch: u64, max: Duration) {
        let mut rx = self.master.clone();
        let _ = tokio::time::timeout(max, rx.wait_for(|m| m.epoch > epoch)).await;
    }
}

fn sentinel_endpoints(cfg: &RedisConfig) -> Result<Vec<Endpoint>, BackendError> {
    cfg.sentinel
        .nodes
        .iter()
        .map(|n| {
            parse_host_port(n)
                .map(|(host, port)| Endpoint { host, port })
                .map_err(|e| BackendError::Config(format!("redis.sentinel.nodes: `{n}`: {e}")))
        })
        .collect()
}

/// Publishes `endpoint` as the master if it differs from the current one.
fn publish(tx: &watch::Sender<Master>, endpoint: Endpoint, why: &str) {
    tx.send_if_modified(|m| {
        if m.endpoint == endpoint {
            return false;
        }
        tracing::warn!(from = %m.endpoint, to = %endpoint, why, "Redis master changed");
        metrics::counter!("blinkchamber_redis_failovers_total").increment(1);
        m.endpoint = endpoint;
        m.epoch += 1;
        true
    });
}

/// Re-resolves on demand and periodically.
async fn supervise(
    cfg: RedisConfig,
    sentinels: Vec<Endpoint>,
    tx: Arc<watch::Sender<Master>>,
    refresh: Arc<Notify>,
    mut stop: watch::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = refresh.notified() => {}
            () = tokio::time::sleep(RECHECK_INTERVAL) => {}
        }
        match resolve(&cfg, &sentinels).await {
            Ok(endpoint) => publish(&tx, endpoint, "re-resolved"),
            Err(e) => {
                tracing::warn!(error = %e, "re-resolving the Redis master failed");
                // Try again soon: the failover may still be in progress.
                refresh.notify_one();
            }
        }
        tokio::time::sleep(MIN_RESOLVE_GAP).await;
    }
}

/// Listens for `+switch-master` on one Sentinel, reconnecting forever.
async fn watch_sentinel(
    cfg: RedisConfig,
    sentinel: Endpoint,
    tx: Arc<watch::Sender<Master>>,
    refresh: Arc<Notify>,
    mut stop: watch::Receiver<()>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let session = async {
            let mut pubsub = connect::pubsub(&cfg, &sentinel, Role::Sentinel).await?;
            pubsub.subscribe("+switch-master").await?;
            // Messages may have been missed while disconnected.
            refresh.notify_one();
            let mut messages = pubsub.on_message();
            while let Some(msg) = messages.next().await {
                let Ok(text) = msg.get_payload::<String>() else {
                    continue;
                };
                // "<master-name> <old-ip> <old-port> <new-ip> <new-port>"
                let parts: Vec<&str> = text.split_whitespace().collect();
                if let [name, _, _, ip, port] = parts[..]
                    && name == cfg.sentinel.master_name
                    && let Ok(port) = port.parse()
                {
                    let endpoint = Endpoint {
                        host: ip.to_owned(),
                        port,
                    };
                    publish(&tx, endpoint, "+switch-master");
                }
            }
            Ok::<(), BackendError>(())
        };
        tokio::select! {
            _ = stop.changed() => return,
            result = session => {
                if let Err(e) = result {
                    tracing::debug!(sentinel = %sentinel, error = %e, "Sentinel subscription lost");
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Asks each Sentinel in turn and returns the first answer that `ROLE` confirms.
pub(crate) async fn resolve(
    cfg: &RedisConfig,
    sentinels: &[Endpoint],
) -> Result<Endpoint, BackendError> {
    let mut last = None;
    for sentinel in sentinels {
        match ask(cfg, sentinel).await {
            Ok(endpoint) => match confirm_master(cfg, &endpoint).await {
                Ok(()) => return Ok(endpoint),
                Err(e) => last = Some(e),
            },
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| BackendError::Unavailable("no Sentinel configured".into())))
}

async fn ask(cfg: &RedisConfig, sentinel: &Endpoint) -> Result<Endpoint, BackendError> {
    let mut conn =
        connect::multiplexed(cfg, sentinel, Role::Sentinel, Some(cfg.read_timeout)).await?;
    let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
        .arg("GET-MASTER-ADDR-BY-NAME")
        .arg(&cfg.sentinel.master_name)
        .query_async(&mut conn)
        .await?;
    let (host, port) = addr.ok_or_else(|| {
        BackendError::Unavailable(format!(
            "Sentinel {sentinel} does not know master `{}`",
            cfg.sentinel.master_name
        ))
    })?;
    Ok(Endpoint { host, port })
}

async fn confirm_master(cfg: &RedisConfig, endpoint: &Endpoint) -> Result<(), BackendError> {
    let mut conn = connect::multiplexed(cfg, endpoint, Role::Data, Some(cfg.read_timeout)).await?;
    let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut conn).await?;
    match role.first() {
        Some(Value::BulkString(b)) if b == b"master" => Ok(()),
        Some(Value::SimpleString(s)) if s == "master" => Ok(()),
        _ => Err(BackendError::Unavailable(format!(
            "{endpoint} is not (yet) a master"
        ))),
    }
}
