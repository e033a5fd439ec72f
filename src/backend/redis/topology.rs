//! Where the master is now: a fixed address, or our own Sentinel supervisor.
//!
//! The supervisor is the reason this module exists. Off-the-shelf clients either never
//! leave a dead master or keep writing to a demoted one for seconds. Here the master
//! address is a `watch` value with an epoch; every pooled connection remembers the epoch
//! it was opened in and is discarded once the epoch moves. The epoch moves when:
//! - a Sentinel publishes `+switch-master` for our master (pub/sub, sub-millisecond) and,
//!   asked, reports a config epoch newer than the one we follow;
//! - a command fails with `READONLY` or a connection error and a re-resolve finds a
//!   different master;
//! - the periodic re-resolve (a safety net for missed messages) finds one.
//!
//! A re-resolve asks every Sentinel at once (`SENTINEL MASTER`, each bounded by
//! `dialTimeout` + `readTimeout`) and adopts the master a majority of the Sentinels that
//! answered agree on. Never a master with an older Sentinel config epoch than the one we
//! follow — unless a majority of *all* configured Sentinels name it (they were reset) —
//! and never one that `ROLE` does not confirm. So a lagging Sentinel, or one that lies,
//! cannot move the process back to a demoted master.

use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use redis::Value;
use tokio::sync::{Notify, watch};

use super::connect::{self, Endpoint, Role};
use super::pubsub;
use crate::backend::BackendError;
use crate::config::{RedisConfig, RedisMode, parse_host_port};
use futures_util::StreamExt;

/// The current master and the epoch it was learnt in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Master {
    /// The master's address.
    pub endpoint: Endpoint,
    /// Increases by one each time the master changes.
    pub epoch: u64,
    /// The Sentinels' configuration epoch of this master (0 in standalone mode).
    pub config_epoch: u64,
}

/// Follows the master. Cheap to clone; every backend of the process that names the same
/// Sentinel group shares one (see [`Topology::start`]), and the background tasks stop when
/// the last clone is dropped.
#[derive(Clone)]
pub struct Topology {
    group: Arc<Group>,
}

struct Group {
    master: watch::Receiver<Master>,
    _tx: Arc<watch::Sender<Master>>,
    refresh: Arc<Notify>,
    _stop: watch::Sender<()>,
}

/// A running supervisor and the settings that shape it (see [`group_key`]).
type Running = (RedisConfig, Weak<Group>);

/// The Sentinel supervisors running in this process.
static SUPERVISORS: LazyLock<tokio::sync::Mutex<Vec<Running>>> =
    LazyLock::new(|| tokio::sync::Mutex::new(Vec::new()));

/// How often the supervisor re-asks the Sentinels even without any signal.
const RECHECK_INTERVAL: Duration = Duration::from_secs(5);
/// Smallest pause between two re-resolves, so an error storm cannot hammer the Sentinels.
const MIN_RESOLVE_GAP: Duration = Duration::from_millis(20);

/// What a supervisor depends on: the Sentinels and how to reach them, and how to confirm a
/// master with `ROLE`. Two `redis` blocks that differ only elsewhere (database, pool,
/// retries) follow the same master with one supervisor.
fn group_key(cfg: &RedisConfig) -> RedisConfig {
    RedisConfig {
        mode: cfg.mode,
        sentinel: cfg.sentinel.clone(),
        tls: cfg.tls.clone(),
        username: cfg.username.clone(),
        password: cfg.password.clone(),
        dial_timeout: cfg.dial_timeout,
        read_timeout: cfg.read_timeout,
        ..RedisConfig::default()
    }
}

impl Topology {
    /// Resolves the master once (failing if nobody answers), then follows it. In Sentinel
    /// mode a supervisor already following the same group in this process is shared:
    /// one set of Sentinel connections, one view of the master, one epoch.
    pub async fn start(cfg: &RedisConfig) -> Result<Self, BackendError> {
        if cfg.mode == RedisMode::Standalone {
            return Ok(Self::fixed(cfg));
        }
        let key = group_key(cfg);
        let mut running = SUPERVISORS.lock().await;
        running.retain(|(_, group)| group.strong_count() > 0);
        if let Some(group) = running
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, group)| group.upgrade())
        {
            return Ok(Self { group });
        }
        let group = Arc::new(Self::supervise_group(cfg).await?);
        running.push((key, Arc::downgrade(&group)));
        Ok(Self { group })
    }

    /// A standalone server: the address never moves.
    fn fixed(cfg: &RedisConfig) -> Self {
        let (stop_tx, _) = watch::channel(());
        let (tx, master) = watch::channel(Master {
            endpoint: Endpoint {
                host: cfg.host.clone(),
                port: cfg.port,
            },
            epoch: 0,
            config_epoch: 0,
        });
        Self {
            group: Arc::new(Group {
                master,
                _tx: Arc::new(tx),
                refresh: Arc::new(Notify::new()),
                _stop: stop_tx,
            }),
        }
    }

    /// Resolves through the Sentinels and starts the watchers and the supervisor.
    async fn supervise_group(cfg: &RedisConfig) -> Result<Group, BackendError> {
        let (stop_tx, stop_rx) = watch::channel(());
        let refresh = Arc::new(Notify::new());
        let sentinels = sentinel_endpoints(cfg)?;
        let (first, config_epoch) = resolve(cfg, &sentinels, 0).await?;
        tracing::info!(master = %first, config_epoch, name = %cfg.sentinel.master_name, "master resolved through Sentinel");
        let (tx, master) = watch::channel(Master {
            endpoint: first,
            epoch: 0,
            config_epoch,
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
        Ok(Group {
            master,
            _tx: tx,
            refresh,
            _stop: stop_tx,
        })
    }

    /// The epoch of the master now (no copy of its address).
    pub fn epoch(&self) -> u64 {
        self.group.master.borrow().epoch
    }

    /// The master now.
    pub fn current(&self) -> Master {
        self.group.master.borrow().clone()
    }

    /// A receiver that fires on the next master change (the current one counts as seen).
    pub fn watch(&self) -> watch::Receiver<Master> {
        let mut rx = self.group.master.clone();
        rx.borrow_and_update();
        rx
    }

    /// Asks for an immediate re-resolve: a command saw `READONLY` or lost its connection.
    pub fn suspect(&self) {
        self.group.refresh.notify_one();
    }

    /// Waits until the epoch moves past `epoch` or `max` elapses.
    pub async fn wait_past(&self, epoch: u64, max: Duration) {
        let mut rx = self.group.master.clone();
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

/// Publishes `endpoint` (at Sentinel config epoch `config_epoch`) as the master if it
/// differs from the current one. The caller has checked the epoch.
fn publish(tx: &watch::Sender<Master>, endpoint: Endpoint, config_epoch: u64, why: &str) {
    tx.send_if_modified(|m| {
        if m.endpoint == endpoint {
            m.config_epoch = m.config_epoch.max(config_epoch);
            return false;
        }
        tracing::warn!(from = %m.endpoint, to = %endpoint, config_epoch, why, "Redis master changed");
        metrics::counter!("blinkchamber_redis_failovers_total").increment(1);
        m.endpoint = endpoint;
        m.epoch += 1;
        m.config_epoch = config_epoch;
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
        let following = tx.borrow().config_epoch;
        match resolve(&cfg, &sentinels, following).await {
            Ok((endpoint, config_epoch)) => publish(&tx, endpoint, config_epoch, "re-resolved"),
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
            let pubsub = connect::pubsub(&cfg, &sentinel, Role::Sentinel).await?;
            let (mut sink, mut stream) = pubsub.split();
            sink.subscribe("+switch-master").await?;
            // Messages may have been missed while disconnected.
            refresh.notify_one();
            backoff = Duration::from_millis(50);
            // A half-open connection to a Sentinel would silently stop failover notices:
            // checked with PING like every subscription.
            let mut heartbeat = pubsub::Heartbeat::new(&cfg);
            loop {
                let msg = tokio::select! {
                    msg = stream.next() => msg,
                    checked = heartbeat.check(&mut sink) => {
                        checked?;
                        continue;
                    }
                };
                let Some(msg) = msg else {
                    return Err::<(), _>(BackendError::Unavailable(
                        "Sentinel subscription closed".into(),
                    ));
                };
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
                    switch_announced(&cfg, &sentinel, endpoint, &tx).await;
                }
            }
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
            () = tokio::time::sleep(crate::backoff::jittered(backoff)) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// A `+switch-master` from `sentinel` naming `endpoint`: adopted if that Sentinel reports
/// it with a config epoch newer than the one followed and `ROLE` confirms it; otherwise a
/// lagging or lying Sentinel is ignored (a real failover raises the epoch).
async fn switch_announced(
    cfg: &RedisConfig,
    sentinel: &Endpoint,
    endpoint: Endpoint,
    tx: &watch::Sender<Master>,
) {
    let following = tx.borrow().config_epoch;
    let checked = async {
        let (named, config_epoch) = ask(cfg, sentinel).await?;
        if named != endpoint || config_epoch <= following {
            return Err(BackendError::Unavailable(format!(
                "Sentinel {sentinel} announced {endpoint} but reports {named} at config epoch \
                 {config_epoch} (following epoch {following})"
            )));
        }
        confirm_master(cfg, &endpoint).await?;
        Ok(config_epoch)
    };
    match checked.await {
        Ok(config_epoch) => publish(tx, endpoint, config_epoch, "+switch-master"),
        Err(error) => {
            metrics::counter!("blinkchamber_redis_master_announcements_ignored_total").increment(1);
            tracing::warn!(%error, "ignoring a +switch-master");
        }
    }
}

/// Asks every Sentinel at once and returns the master a majority of those that answered
/// agree on, with its config epoch, once `ROLE` confirms it. A master at a config epoch
/// below `following` is refused unless a majority of all configured Sentinels name it.
pub(crate) async fn resolve(
    cfg: &RedisConfig,
    sentinels: &[Endpoint],
    following: u64,
) -> Result<(Endpoint, u64), BackendError> {
    let bound = cfg.dial_timeout + cfg.read_timeout;
    let asked = futures_util::future::join_all(sentinels.iter().map(|sentinel| async move {
        match tokio::time::timeout(bound, ask(cfg, sentinel)).await {
            Ok(answer) => answer,
            Err(_) => Err(BackendError::Unavailable(format!(
                "Sentinel {sentinel}: no answer within dialTimeout + readTimeout"
            ))),
        }
    }))
    .await;
    let mut last = None;
    let mut votes: Vec<(Endpoint, usize, u64)> = Vec::new();
    let mut answered = 0;
    for answer in asked {
        match answer {
            Ok((endpoint, epoch)) => {
                answered += 1;
                match votes.iter_mut().find(|(e, ..)| *e == endpoint) {
                    Some((_, n, top)) => {
                        *n += 1;
                        *top = (*top).max(epoch);
                    }
                    None => votes.push((endpoint, 1, epoch)),
                }
            }
            Err(e) => last = Some(e),
        }
    }
    let Some((endpoint, n, epoch)) = votes.into_iter().max_by_key(|(_, n, epoch)| (*n, *epoch))
    else {
        return Err(
            last.unwrap_or_else(|| BackendError::Unavailable("no Sentinel configured".into()))
        );
    };
    if n * 2 <= answered {
        return Err(BackendError::Unavailable(format!(
            "no majority among the {answered} Sentinels that answered: the most named master, \
             {endpoint}, has {n}"
        )));
    }
    if epoch < following && n * 2 <= sentinels.len() {
        return Err(BackendError::Unavailable(format!(
            "the Sentinels name {endpoint} at config epoch {epoch}, older than the followed \
             epoch {following}"
        )));
    }
    confirm_master(cfg, &endpoint).await?;
    Ok((endpoint, epoch))
}

/// What each configured Sentinel answers to `SENTINEL MASTER {masterName}` (its fields
/// by name), or why it did not answer within `dialTimeout` + `readTimeout`: for
/// diagnostics (`blinkchamber doctor`).
pub(crate) async fn sentinel_views(
    cfg: &RedisConfig,
) -> Vec<(
    String,
    Result<std::collections::HashMap<String, String>, String>,
)> {
    let limit = cfg.dial_timeout + cfg.read_timeout;
    let asks = cfg.sentinel.nodes.iter().map(|node| async move {
        let view = async {
            let (host, port) = parse_host_port(node)?;
            let endpoint = Endpoint { host, port };
            let mut conn =
                connect::multiplexed(cfg, &endpoint, Role::Sentinel, Some(cfg.read_timeout))
                    .await
                    .map_err(|e| e.to_string())?;
            let fields: Vec<String> = redis::cmd("SENTINEL")
                .arg("MASTER")
                .arg(&cfg.sentinel.master_name)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            Ok(fields
                .chunks(2)
                .filter_map(|pair| Some((pair.first()?.clone(), pair.get(1)?.clone())))
                .collect())
        };
        let answer = tokio::time::timeout(limit, view)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {limit:?}")));
        (node.clone(), answer)
    });
    futures_util::future::join_all(asks).await
}

/// What `sentinel` says the master is, with its config epoch (`SENTINEL MASTER`).
async fn ask(cfg: &RedisConfig, sentinel: &Endpoint) -> Result<(Endpoint, u64), BackendError> {
    let mut conn =
        connect::multiplexed(cfg, sentinel, Role::Sentinel, Some(cfg.read_timeout)).await?;
    let fields: Vec<String> = redis::cmd("SENTINEL")
        .arg("MASTER")
        .arg(&cfg.sentinel.master_name)
        .query_async(&mut conn)
        .await
        .map_err(|e| {
            BackendError::Unavailable(format!(
                "Sentinel {sentinel} does not know master `{}`: {e}",
                cfg.sentinel.master_name
            ))
        })?;
    let field = |name: &str| {
        fields
            .chunks(2)
            .find(|pair| pair[0] == name)
            .and_then(|pair| pair.get(1))
    };
    let parsed = (|| {
        let host = field("ip")?.clone();
        let port = field("port")?.parse().ok()?;
        let epoch = field("config-epoch").map_or(Some(0), |e| e.parse().ok())?;
        Some((Endpoint { host, port }, epoch))
    })();
    parsed.ok_or_else(|| {
        BackendError::Unavailable(format!(
            "Sentinel {sentinel}: unexpected SENTINEL MASTER answer"
        ))
    })
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
