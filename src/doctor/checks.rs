//! The checks themselves.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::redis_info::Info;
use super::{Check, Group, Report, Status};
use crate::backend::RedisBackend;
use crate::config::{BackendKind, Config, DoctorConfig, RedisConfig, RedisMode};

/// One Redis handle the config uses, with the capabilities on it.
struct Handle {
    /// `redis`, `cache.redis` or `events.redis`.
    key: &'static str,
    cfg: RedisConfig,
    /// What lives there, for messages.
    holds: Vec<&'static str>,
    /// Whether anything on it must not be evicted.
    durable: bool,
}

/// Runs the checks of `only` (every group when empty) against `config`'s backend.
pub async fn run(config: &Config, only: &[Group]) -> Report {
    let wants = |g: Group| only.is_empty() || only.contains(&g);
    let mut out = Checks::default();
    if wants(Group::Process) {
        config_warnings(&mut out, config);
    }
    if config.backend == BackendKind::Memory {
        out.push(
            Group::Topology,
            "topology.backend",
            Status::Pass,
            format!(
                "memory backend (one process; budget memory.maxBytes = {} bytes)",
                config.memory.max_bytes
            ),
            None,
        );
        return Report::new(config, out.0, true);
    }
    let handles = handles(config);
    let mut reachable = true;
    let mut queues_on: Option<RedisBackend> = None;
    for handle in &handles {
        let limit = handle.cfg.dial_timeout + handle.cfg.read_timeout;
        let connected = tokio::time::timeout(limit, RedisBackend::connect(handle.cfg.clone()))
            .await
            .unwrap_or_else(|_| {
                Err(crate::BackendError::Unavailable(format!(
                    "no answer within {limit:?}"
                )))
            });
        let backend = match connected {
            Ok(b) => b.bounded(limit),
            Err(e) => {
                reachable = false;
                unreachable(&mut out, handle, e.to_string());
                continue;
            }
        };
        let info = match backend
            .query::<String>(redis::cmd("INFO").arg("everything"))
            .await
        {
            Ok(text) => Info::parse(&text),
            Err(e) => {
                reachable = false;
                unreachable(
                    &mut out,
                    handle,
                    format!("{}: {e}", backend.master().endpoint),
                );
                continue;
            }
        };
        let at = backend.master().endpoint.to_string();
        if wants(Group::Topology) {
            topology(&mut out, config, handle, &backend, &info, &at).await;
        }
        if wants(Group::Memory) {
            memory(&mut out, &config.doctor, handle, &backend, &info, &at).await;
        }
        if wants(Group::Load) {
            load(&mut out, &config.doctor, handle, &backend, &info, &at).await;
        }
        if wants(Group::Persistence) {
            persistence(&mut out, handle, &backend, &info, &at).await;
        }
        if wants(Group::Process) {
            clock(&mut out, &config.doctor, handle, &backend, &at).await;
            if handle.cfg.tls.enabled {
                let endpoint = backend.master().endpoint;
                tls_expiry(
                    &mut out,
                    &config.doctor,
                    handle,
                    endpoint.host,
                    endpoint.port,
                )
                .await;
            }
        }
        if wants(Group::Capabilities) && handle.key == "redis" {
            key_counts(&mut out, config, &backend).await;
        }
        if wants(Group::Capabilities) && handle.holds.contains(&"the cache") {
            let (hits, misses) = (
                info.num("keyspace_hits").unwrap_or(0.0),
                info.num("keyspace_misses").unwrap_or(0.0),
            );
            out.push(
                Group::Capabilities,
                name(handle, "cache.redisHits"),
                Status::Pass,
                format!(
                    "{} of {:.0} key lookups found their key since {at} started (every \
                     capability on that server; per cache level: /metrics, or \
                     /v1/diagnostics of a running instance)",
                    percent(hits, hits + misses),
                    hits + misses
                ),
                None,
            );
        }
        if handle.holds.contains(&"event queues") {
            queues_on = Some(backend);
        }
    }
    if let Some(backend) = queues_on
        && wants(Group::Capabilities)
    {
        events(&mut out, config, backend).await;
    }
    Report::new(config, out.0, reachable)
}

/// `topology.reachable.<block>` failed: the server did not connect or answer.
fn unreachable(out: &mut Checks, handle: &Handle, why: String) {
    out.push(
        Group::Topology,
        format!("topology.reachable.{}", handle.key),
        Status::Fail,
        format!("{}: {why}", handle.key),
        Some(format!(
            "check that Redis runs and answers, and that {} (host, port, Sentinel nodes, \
             TLS, password) points at it",
            handle.key
        )),
    );
}

#[derive(Default)]
struct Checks(Vec<Check>);

impl Checks {
    fn push(
        &mut self,
        group: Group,
        check: impl Into<String>,
        status: Status,
        measured: impl Into<String>,
        advice: Option<String>,
    ) {
        self.0.push(Check {
            group,
            check: check.into(),
            status,
            measured: measured.into(),
            advice: if status == Status::Pass { None } else { advice },
        });
    }
}

/// The distinct Redis handles of `config`, with what each holds.
fn handles(config: &Config) -> Vec<Handle> {
    let mut out: Vec<Handle> = Vec::new();
    for (key, cfg) in config.redis_blocks() {
        let (holds, durable): (&[&str], bool) = match key {
            "redis" => (&["locks", "sessions", "rate limits"], true),
            "cache.redis" => (&["the cache", "the token cache"], false),
            _ if config.events.enabled => (&["event queues"], true),
            _ => continue,
        };
        match out.iter_mut().find(|h| same_server(&h.cfg, &cfg)) {
            Some(h) => {
                h.holds.extend_from_slice(holds);
                h.durable |= durable;
            }
            None => out.push(Handle {
                key,
                cfg,
                holds: holds.to_vec(),
                durable,
            }),
        }
    }
    out
}

/// Whether two blocks reach the same server (timeouts and databases aside: the checks
/// here are about the server).
fn same_server(a: &RedisConfig, b: &RedisConfig) -> bool {
    a.mode == b.mode
        && match a.mode {
            RedisMode::Standalone => a.host == b.host && a.port == b.port,
            RedisMode::Sentinel => {
                a.sentinel.master_name == b.sentinel.master_name
                    && a.sentinel.nodes == b.sentinel.nodes
            }
        }
}

fn name(handle: &Handle, check: &str) -> String {
    match handle.key {
        "redis" => check.to_owned(),
        "cache.redis" => format!("{check}.cache"),
        _ => format!("{check}.events"),
    }
}

async fn topology(
    out: &mut Checks,
    config: &Config,
    handle: &Handle,
    backend: &RedisBackend,
    info: &Info,
    at: &str,
) {
    let role = info.get("role").unwrap_or("unknown");
    out.push(
        Group::Topology,
        name(handle, "topology.role"),
        if role == "master" {
            Status::Pass
        } else {
            Status::Fail
        },
        format!("{at} answers ROLE {role} ({})", handle.holds.join(", ")),
        Some(format!(
            "{at} is not a master: writes fail; point {} at the master (or at the Sentinels)",
            handle.key
        )),
    );
    if handle.cfg.mode == RedisMode::Sentinel {
        sentinels(out, handle, backend).await;
    }
    let replicas = info.replicas();
    let repl_offset = info.num("master_repl_offset").unwrap_or(0.0);
    for (i, r) in replicas.iter().enumerate() {
        let addr = format!(
            "{}:{}",
            r.get("ip").map_or("?", String::as_str),
            r.get("port").map_or("?", String::as_str)
        );
        let state = r.get("state").map_or("unknown", String::as_str);
        let lag: f64 = r.get("lag").and_then(|l| l.parse().ok()).unwrap_or(0.0);
        let behind = repl_offset - r.get("offset").and_then(|o| o.parse().ok()).unwrap_or(0.0);
        let status = if state != "online" {
            Status::Fail
        } else if lag >= config.doctor.replica_lag.as_secs_f64() {
            Status::Warn
        } else {
            Status::Pass
        };
        out.push(
            Group::Topology,
            name(handle, &format!("topology.replica{i}")),
            status,
            format!("{addr} {state}, {behind:.0} bytes behind, last ack {lag:.0}s ago"),
            Some(format!(
                "look at the replica's log (`redis-cli -h {} -p {} INFO replication`): a \
                 replica that is not online cannot take over in a failover",
                r.get("ip").map_or("?", String::as_str),
                r.get("port").map_or("?", String::as_str)
            )),
        );
    }
    let online = replicas
        .iter()
        .filter(|r| r.get("state").is_some_and(|s| s == "online"))
        .count() as u32;
    let min_replicas: Vec<String> = backend
        .query(redis::cmd("CONFIG").arg("GET").arg("min-replicas-to-write"))
        .await
        .unwrap_or_default();
    let min_replicas: u32 = min_replicas
        .get(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if min_replicas > 0 {
        out.push(
            Group::Topology,
            name(handle, "topology.minReplicasToWrite"),
            if online >= min_replicas {
                Status::Pass
            } else {
                Status::Fail
            },
            format!("min-replicas-to-write {min_replicas} on {at}, {online} replicas online"),
            Some(format!(
                "{at} refuses every write while fewer than {min_replicas} replicas are \
                 online: bring replicas back, or lower min-replicas-to-write"
            )),
        );
    }
    if handle.key == "events.redis" || (handle.holds.contains(&"event queues")) {
        let wait = config.events.publishing.wait_replicas;
        if wait > 0 {
            out.push(
                Group::Topology,
                "topology.waitReplicas",
                if online >= wait {
                    Status::Pass
                } else {
                    Status::Fail
                },
                format!(
                    "events.publishing.waitReplicas {wait}, {online} replicas online, \
                     min-replicas-to-write {min_replicas}"
                ),
                Some(
                    "publishing waits for more replicas than are online, so every publish \
                     times out: bring replicas back or lower events.publishing.waitReplicas"
                        .into(),
                ),
            );
        }
    }
}

async fn sentinels(out: &mut Checks, handle: &Handle, backend: &RedisBackend) {
    let cfg = &handle.cfg;
    let views = crate::backend::redis::sentinel_views(cfg).await;
    let configured = views.len();
    let mut answered = Vec::new();
    for (node, view) in &views {
        match view {
            Ok(fields) => answered.push((node, fields)),
            Err(e) => out.push(
                Group::Topology,
                name(handle, &format!("topology.sentinel.{node}")),
                Status::Warn,
                format!("Sentinel {node} does not answer: {e}"),
                Some(format!(
                    "restart or reach Sentinel {node}; with fewer Sentinels up a failover \
                     may find no majority"
                )),
            ),
        }
    }
    let master = backend.master().endpoint.to_string();
    let addr = |f: &std::collections::HashMap<String, String>| {
        format!(
            "{}:{}",
            f.get("ip").map_or("?", String::as_str),
            f.get("port").map_or("?", String::as_str)
        )
    };
    let epochs: Vec<(String, String)> = answered
        .iter()
        .map(|(_, f)| (addr(f), f.get("config-epoch").cloned().unwrap_or_default()))
        .collect();
    let agree =
        epochs.windows(2).all(|w| w[0] == w[1]) && epochs.first().is_none_or(|(a, _)| *a == master);
    out.push(
        Group::Topology,
        name(handle, "topology.sentinels.agree"),
        if answered.is_empty() {
            Status::Fail
        } else if agree {
            Status::Pass
        } else {
            Status::Fail
        },
        format!(
            "{} of {configured} Sentinels answered; master/epoch: {}",
            answered.len(),
            epochs
                .iter()
                .map(|(a, e)| format!("{a}@{e}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(
            "Sentinels disagree on the master (a failover in progress, or a partitioned \
             Sentinel): run `SENTINEL MASTER <name>` on each and `SENTINEL RESET <name>` on \
             the stale one"
                .into(),
        ),
    );
    if let Some((_, fields)) = answered.first() {
        let quorum: usize = fields
            .get("quorum")
            .and_then(|q| q.parse().ok())
            .unwrap_or(0);
        let known = fields
            .get("num-other-sentinels")
            .and_then(|n| n.parse::<usize>().ok())
            .map_or(configured, |n| n + 1);
        let up = answered.len();
        let majority = known / 2 + 1;
        let status = if quorum > up || up < majority {
            Status::Fail
        } else if quorum < majority {
            Status::Warn
        } else {
            Status::Pass
        };
        out.push(
            Group::Topology,
            name(handle, "topology.sentinels.quorum"),
            status,
            format!("quorum {quorum}, {up} of {known} Sentinels up, majority {majority}"),
            Some(if quorum > up || up < majority {
                "no failover can happen now: too few Sentinels are up for the quorum or a \
                 majority; bring Sentinels back"
                    .into()
            } else {
                format!(
                    "a quorum below the majority ({majority}) lets a minority of Sentinels \
                     mark the master down; set `SENTINEL SET <name> quorum {majority}`"
                )
            }),
        );
    }
}

async fn memory(
    out: &mut Checks,
    t: &DoctorConfig,
    handle: &Handle,
    backend: &RedisBackend,
    info: &Info,
    at: &str,
) {
    let used = info.num("used_memory").unwrap_or(0.0);
    let max = info.num("maxmemory").unwrap_or(0.0);
    let mib = |b: f64| format!("{:.1} MiB", b / 1048576.0);
    if max > 0.0 {
        let share = used / max;
        out.push(
            Group::Memory,
            name(handle, "memory.used"),
            if share >= t.memory_fail {
                Status::Fail
            } else if share >= t.memory_warn {
                Status::Warn
            } else {
                Status::Pass
            },
            format!(
                "{} of maxmemory {} ({:.0} %) on {at}",
                mib(used),
                mib(max),
                share * 100.0
            ),
            Some(format!(
                "{at} is near maxmemory: raise it (CONFIG SET maxmemory / the chart's Redis \
                 values), or find what grows (`redis-cli --bigkeys`, dead letters, sessions)"
            )),
        );
    } else {
        out.push(
            Group::Memory,
            name(handle, "memory.used"),
            Status::Warn,
            format!("{} used on {at}, no maxmemory set", mib(used)),
            Some(
                "without maxmemory Redis grows until the host or the pod's limit kills it: \
                 set maxmemory a little below the memory limit"
                    .into(),
            ),
        );
    }
    let frag = info.num("mem_fragmentation_ratio").unwrap_or(1.0);
    out.push(
        Group::Memory,
        name(handle, "memory.fragmentation"),
        if frag > t.fragmentation_warn && used > 64.0 * 1048576.0 {
            Status::Warn
        } else {
            Status::Pass
        },
        format!("mem_fragmentation_ratio {frag:.2}"),
        Some("turn on `activedefrag yes`, or restart the replica first, then fail over".into()),
    );
    let evicted = info.num("evicted_keys").unwrap_or(0.0);
    out.push(
        Group::Memory,
        name(handle, "memory.evictions"),
        if evicted > 0.0 && handle.durable {
            Status::Fail
        } else {
            Status::Pass
        },
        format!("{evicted:.0} keys evicted since start"),
        Some(format!(
            "Redis evicted keys of {}: give it more memory or move the cache to a server of \
             its own (cache.redis)",
            handle.holds.join(", ")
        )),
    );
    let policy: Vec<String> = backend
        .query(redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy"))
        .await
        .unwrap_or_default();
    let policy = policy.get(1).cloned().unwrap_or_else(|| "unknown".into());
    let evicting = policy != "noeviction" && policy != "unknown";
    out.push(
        Group::Memory,
        name(handle, "memory.policy"),
        if evicting && handle.durable {
            Status::Fail
        } else {
            Status::Pass
        },
        format!(
            "maxmemory-policy {policy} on {at}, which holds {}",
            handle.holds.join(", ")
        ),
        Some(format!(
            "an evicting policy can drop {}: set `maxmemory-policy noeviction` there (give the \
             cache its own server through cache.redis if it should be evicted)",
            handle.holds.join(", ")
        )),
    );
}

async fn load(
    out: &mut Checks,
    t: &DoctorConfig,
    handle: &Handle,
    backend: &RedisBackend,
    info: &Info,
    at: &str,
) {
    let slow: Vec<redis::Value> = backend
        .query(redis::cmd("SLOWLOG").arg("GET").arg(5))
        .await
        .unwrap_or_default();
    let entries: Vec<(u64, String)> = slow.iter().filter_map(slow_entry).collect();
    let worst = entries.iter().map(|(us, _)| *us).max().unwrap_or(0);
    out.push(
        Group::Load,
        name(handle, "load.slowlog"),
        if Duration::from_micros(worst) >= t.slow_command {
            Status::Warn
        } else {
            Status::Pass
        },
        if entries.is_empty() {
            format!("no slow-log entries on {at}")
        } else {
            format!(
                "slowest recent: {}",
                entries
                    .iter()
                    .map(|(us, cmd)| format!("{cmd} {:.1} ms", *us as f64 / 1000.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
        Some(format!(
            "a command took over {} ms and blocked every client meanwhile: see \
             `SLOWLOG GET` on {at} (arguments are not shown here: they can hold ids)",
            t.slow_command.as_millis()
        )),
    );
    let latency: Vec<redis::Value> = backend
        .query(redis::cmd("LATENCY").arg("LATEST"))
        .await
        .unwrap_or_default();
    out.push(
        Group::Load,
        name(handle, "load.latency"),
        if latency.is_empty() {
            Status::Pass
        } else {
            Status::Warn
        },
        format!("{} latency events recorded", latency.len()),
        Some(format!("run `redis-cli -h … LATENCY DOCTOR` on {at}")),
    );
    let clients = info.num("connected_clients").unwrap_or(0.0);
    let max_clients = info.num("maxclients").unwrap_or(10000.0).max(1.0);
    let rejected = info.num("rejected_connections").unwrap_or(0.0);
    out.push(
        Group::Load,
        name(handle, "load.clients"),
        if rejected > 0.0 || clients / max_clients >= t.clients_warn {
            Status::Warn
        } else {
            Status::Pass
        },
        format!(
            "{clients:.0} of maxclients {max_clients:.0} connected, {:.0} blocked, {rejected:.0} \
             rejected since start, {:.0} ops/s",
            info.num("blocked_clients").unwrap_or(0.0),
            info.num("instantaneous_ops_per_sec").unwrap_or(0.0)
        ),
        Some("raise maxclients or lower redis.poolSize × instances".into()),
    );
}

/// `(duration µs, command name)` of a `SLOWLOG GET` entry; arguments are left out.
fn slow_entry(entry: &redis::Value) -> Option<(u64, String)> {
    let redis::Value::Array(fields) = entry else {
        return None;
    };
    let us = match fields.get(2)? {
        redis::Value::Int(n) => u64::try_from(*n).ok()?,
        _ => return None,
    };
    let command = match fields.get(3)? {
        redis::Value::Array(args) => match args.first()? {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).to_uppercase(),
            _ => return None,
        },
        _ => return None,
    };
    Some((us, command))
}

async fn persistence(
    out: &mut Checks,
    handle: &Handle,
    backend: &RedisBackend,
    info: &Info,
    at: &str,
) {
    let save: Vec<String> = backend
        .query(redis::cmd("CONFIG").arg("GET").arg("save"))
        .await
        .unwrap_or_default();
    let snapshots = save.get(1).is_some_and(|s| !s.trim().is_empty());
    let aof_enabled = info.get("aof_enabled") == Some("1");
    out.push(
        Group::Persistence,
        name(handle, "persistence.enabled"),
        if snapshots || aof_enabled || !handle.durable {
            Status::Pass
        } else {
            Status::Warn
        },
        format!(
            "RDB snapshots {}, AOF {} on {at}",
            if snapshots { "on" } else { "off" },
            if aof_enabled { "on" } else { "off" }
        ),
        Some(format!(
            "a restart of {at} without a replica to fail over to loses {}: turn on \
             `appendonly yes` (or RDB `save` points)",
            handle.holds.join(", ")
        )),
    );
    let rdb = info.get("rdb_last_bgsave_status").unwrap_or("ok");
    let aof_on = info.get("aof_enabled") == Some("1");
    let aof = info.get("aof_last_write_status").unwrap_or("ok");
    let saves = info.get("rdb_saves").is_some() || info.num("rdb_last_save_time").is_some();
    let last_save = info.num("rdb_last_save_time").unwrap_or(0.0);
    let age = unix_now().as_secs_f64() - last_save;
    let fork_ms = info.num("latest_fork_usec").unwrap_or(0.0) / 1000.0;
    let failed = rdb != "ok" || (aof_on && aof != "ok");
    out.push(
        Group::Persistence,
        name(handle, "persistence.status"),
        if failed { Status::Fail } else { Status::Pass },
        format!(
            "RDB last bgsave {rdb}, AOF {}{}, last save {}, last fork {fork_ms:.1} ms",
            if aof_on { "on, last write " } else { "off" },
            if aof_on { aof } else { "" },
            if saves && last_save > 0.0 {
                format!("{:.0}s ago", age.max(0.0))
            } else {
                "never".into()
            }
        ),
        Some(format!(
            "persistence is failing on {at} (disk full or not writable?): see its log; until \
             it works a restart loses what {} wrote",
            handle.holds.join(", ")
        )),
    );
}

async fn clock(
    out: &mut Checks,
    t: &DoctorConfig,
    handle: &Handle,
    backend: &RedisBackend,
    at: &str,
) {
    let before = unix_now();
    let Ok((secs, micros)) = backend.query::<(u64, u64)>(&redis::cmd("TIME")).await else {
        return;
    };
    let after = unix_now();
    let local = (before + after) / 2;
    let redis = Duration::from_secs(secs) + Duration::from_micros(micros);
    let offset = redis.abs_diff(local);
    out.push(
        Group::Process,
        name(handle, "process.clock"),
        if offset >= t.clock_offset {
            Status::Warn
        } else {
            Status::Pass
        },
        format!(
            "this host's clock is {:.1} ms from {at}'s",
            offset.as_secs_f64() * 1000.0
        ),
        Some(
            "BlinkChamber times leases and limits on Redis's clock, but logs, event `time` \
             and JWT expiry use this host's: run NTP / chrony on both"
                .into(),
        ),
    );
}

async fn events(out: &mut Checks, config: &Config, backend: RedisBackend) {
    let queues = crate::events::Queues::redis(&config.events, backend.clone());
    let Ok(stats) = queues.stats().await else {
        return;
    };
    for (priority, q) in crate::events::Priority::ALL.iter().zip(&stats.queues) {
        let age = q.oldest_age.unwrap_or(0.0);
        out.push(
            Group::Capabilities,
            format!("events.queue.{}", priority.as_str()),
            if age >= config.doctor.queue_age.as_secs_f64() {
                Status::Warn
            } else {
                Status::Pass
            },
            format!(
                "{}: {} waiting (oldest {age:.0}s), {} in flight, {} retrying",
                queues.name(*priority),
                q.depth,
                q.in_flight,
                q.retrying
            ),
            Some(
                "events wait longer than doctor.queueAge: are workers running (`blinkchamber \
                 worker`), and is events.performance.workerCount enough?"
                    .into(),
            ),
        );
    }
    // Leases past their deadline on Redis's clock: reaping gives them back as soon as
    // any worker takes, so lasting ones mean no worker is running.
    let consumers = format!("{}consumers", config.events.queues.state_prefix);
    if let Ok((secs, micros)) = backend.query::<(u64, u64)>(&redis::cmd("TIME")).await {
        let now_ms = secs * 1000 + micros / 1000;
        let expired: u64 = backend
            .query(redis::cmd("ZCOUNT").arg(&consumers).arg("-inf").arg(now_ms))
            .await
            .unwrap_or(0);
        out.push(
            Group::Capabilities,
            "events.leases",
            if expired > 0 {
                Status::Warn
            } else {
                Status::Pass
            },
            format!("{expired} consumer leases past their deadline"),
            Some(
                "a worker died holding a batch and no worker has taken since: start \
                 `blinkchamber worker` (its events go back to their queues then)"
                    .into(),
            ),
        );
    }
    let newest: Option<Vec<u8>> = backend
        .query(
            redis::cmd("LINDEX")
                .arg(&config.events.queues.dead_letter)
                .arg(0),
        )
        .await
        .unwrap_or(None);
    let newest_age = newest
        .and_then(|stored| crate::events::decode(&stored).ok())
        .and_then(|event| {
            let at = event.extensions.get("deadat")?.as_str()?.to_owned();
            crate::events::envelope::parse_rfc3339(&at).ok()
        })
        .and_then(|at| SystemTime::now().duration_since(at).ok());
    out.push(
        Group::Capabilities,
        "events.deadLetters",
        if stats.dead > 0 {
            Status::Warn
        } else {
            Status::Pass
        },
        format!(
            "{} dead letters in {}{}",
            stats.dead,
            config.events.queues.dead_letter,
            newest_age.map_or(String::new(), |age| format!(
                ", newest {}s old",
                age.as_secs()
            ))
        ),
        Some(
            "read them with `blinkchamber events dead-letter list`, fix the sink, then \
             `events dead-letter replay --all`"
                .into(),
        ),
    );
}

/// `tls.expiry`: how long the certificate the server presents stays valid.
async fn tls_expiry(out: &mut Checks, t: &DoctorConfig, handle: &Handle, host: String, port: u16) {
    let limit = handle.cfg.dial_timeout + handle.cfg.read_timeout;
    let at = format!("{host}:{port}");
    let read = tokio::task::spawn_blocking(move || super::tls::not_after(&host, port, limit))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    let (status, measured) = match read {
        Err(e) => (
            Status::Warn,
            format!("cannot read the certificate of {at}: {e}"),
        ),
        Ok(not_after) => match not_after.duration_since(SystemTime::now()) {
            Err(_) => (Status::Fail, format!("the certificate of {at} has expired")),
            Ok(left) => (
                if left < t.tls_expiry {
                    Status::Warn
                } else {
                    Status::Pass
                },
                format!(
                    "the certificate of {at} expires in {} days",
                    left.as_secs() / 86_400
                ),
            ),
        },
    };
    out.push(
        Group::Process,
        name(handle, "tls.expiry"),
        status,
        measured,
        Some(
            "renew the Redis server certificate (cert-manager renews the chart's; check its \
             Certificate resource and that Redis reloaded the file)"
                .into(),
        ),
    );
}

/// Settings that start fine but are risky in production.
fn config_warnings(out: &mut Checks, config: &Config) {
    let mut warnings = Vec::new();
    if !config.server.auth.enabled {
        warnings
            .push("server.auth.enabled is false: /v1 takes requests without a token".to_owned());
    }
    let redis_blocks = match config.backend {
        BackendKind::Redis => config.redis_blocks(),
        BackendKind::Memory => Vec::new(),
    };
    for (key, redis) in redis_blocks {
        let loopback = match redis.mode {
            RedisMode::Standalone => is_loopback(&redis.host),
            RedisMode::Sentinel => redis.sentinel.nodes.iter().all(|n| {
                crate::config::parse_host_port(n).is_ok_and(|(host, _)| is_loopback(&host))
            }),
        };
        if !redis.tls.enabled && !loopback {
            warnings.push(format!(
                "{key}.tls.enabled is false for a server off this host: passwords, session \
                 data and tokens cross the network in clear"
            ));
        }
        if redis.allow_evicting_policy {
            warnings.push(format!(
                "{key}.allowEvictingPolicy is true: start-up accepts an evicting \
                 maxmemory-policy"
            ));
        }
    }
    warnings.dedup();
    out.push(
        Group::Process,
        "process.config",
        if warnings.is_empty() {
            Status::Pass
        } else {
            Status::Warn
        },
        if warnings.is_empty() {
            "no risky settings (auth on, TLS to remote Redis, no evicting policy allowed)".into()
        } else {
            warnings.join("; ")
        },
        Some("change the settings named, unless this is a development setup".into()),
    );
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn percent(part: f64, whole: f64) -> String {
    if whole > 0.0 {
        format!("{:.1} %", part / whole * 100.0)
    } else {
        "none".into()
    }
}

/// `cache.hits`: this process's L1 and L2 hit rates since it started, read from its
/// Prometheus recorder's text (`blinkchamber_cache_{hits,misses}_total{level}`).
pub(crate) fn cache_hits(rendered: &str) -> Check {
    let count = |name: &str, level: &str| -> f64 {
        rendered
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(&format!("level=\"{level}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(0.0, |sum, n| sum + n)
    };
    let level = |level: &str| {
        let hits = count("blinkchamber_cache_hits_total", level);
        let misses = count("blinkchamber_cache_misses_total", level);
        format!(
            "{} {} of {:.0} lookups",
            level.to_uppercase(),
            percent(hits, hits + misses),
            hits + misses
        )
    };
    Check {
        group: Group::Capabilities,
        check: "cache.hits".into(),
        status: Status::Pass,
        measured: format!(
            "this instance since start: {}, {}",
            level("l1"),
            level("l2")
        ),
        advice: None,
    }
}

/// Most `SCAN` calls (of 1000 keys each) the key counts may make.
const SCAN_BUDGET: usize = 20;
/// Most sessions whose kind is read.
const KIND_SAMPLE: usize = 200;

/// Sessions (by kind), held locks and rate-limit keys in the default database, from one
/// `SCAN` pass bounded by [`SCAN_BUDGET`]: counts are lower bounds when the keyspace is
/// larger, and say so.
async fn key_counts(out: &mut Checks, config: &Config, backend: &RedisBackend) {
    let sessions_prefix = format!("{}s:", config.sessions.key_prefix);
    let locks_prefix = format!("{}lease:", config.locks.key_prefix);
    let limits_prefix = config.rate_limit.key_prefix.as_str();
    let (mut sessions, mut locks, mut limits) = (Vec::new(), 0u64, 0u64);
    let mut cursor = 0u64;
    let mut complete = false;
    for _ in 0..SCAN_BUDGET {
        let Ok((next, keys)) = backend
            .query::<(u64, Vec<String>)>(redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(1000))
            .await
        else {
            return;
        };
        for key in keys {
            if key.starts_with(&sessions_prefix) {
                sessions.push(key);
            } else if key.starts_with(&locks_prefix) {
                locks += 1;
            } else if key.starts_with(limits_prefix) {
                limits += 1;
            }
        }
        cursor = next;
        if cursor == 0 {
            complete = true;
            break;
        }
    }
    let mut kinds = std::collections::BTreeMap::<String, u64>::new();
    let mut pipe = redis::pipe();
    // The kind is the first word after a session value's fixed header (see
    // `src/session/record.rs`); the longest kind is 5 bytes.
    for key in sessions.iter().take(KIND_SAMPLE) {
        pipe.cmd("GETRANGE").arg(key).arg(80).arg(86);
    }
    if !sessions.is_empty()
        && let Ok(found) = backend
            .pipeline::<Vec<Option<String>>>(crate::Retry::Idempotent, &pipe)
            .await
    {
        let kind = |text: &str| text.split([' ', '\n']).next().unwrap_or("").to_owned();
        for text in found.into_iter().flatten().filter(|t| !t.is_empty()) {
            *kinds.entry(kind(&text)).or_default() += 1;
        }
    }
    let bound = if complete { "" } else { "at least " };
    out.push(
        Group::Capabilities,
        "keys.counts",
        Status::Pass,
        format!(
            "{bound}{} sessions{}, {bound}{locks} locks held, {bound}{limits} rate-limit keys{}",
            sessions.len(),
            if kinds.is_empty() {
                String::new()
            } else {
                format!(
                    " ({}{})",
                    kinds
                        .iter()
                        .map(|(k, n)| format!("{k}: {n}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if sessions.len() > KIND_SAMPLE {
                        format!(" in the first {KIND_SAMPLE}")
                    } else {
                        String::new()
                    }
                )
            },
            if complete {
                String::new()
            } else {
                format!(" (SCAN stopped after {SCAN_BUDGET} × 1000 keys)")
            }
        ),
        None,
    );
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn cache_hits_are_read_per_level_from_the_metrics_text() {
        let text = "# TYPE blinkchamber_cache_hits_total counter\n\
            blinkchamber_cache_hits_total{level=\"l1\"} 90\n\
            blinkchamber_cache_misses_total{level=\"l1\"} 10\n\
            blinkchamber_cache_hits_total{level=\"l2\"} 3\n\
            blinkchamber_cache_misses_total{level=\"l2\"} 1\n";
        let check = super::cache_hits(text);
        assert_eq!(
            check.measured,
            "this instance since start: L1 90.0 % of 100 lookups, L2 75.0 % of 4 lookups"
        );
        assert_eq!(
            super::cache_hits("").measured,
            "this instance since start: L1 none of 0 lookups, L2 none of 0 lookups"
        );
    }
}
