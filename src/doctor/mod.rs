//! `blinkchamber doctor`: the troubleshooting runbook as one read-only pass over the
//! configured backend.
//!
//! Each check answers `pass`, `warn` or `fail` with what it measured and, for anything
//! but a pass, the next step in one sentence. Checks come in groups ([`Group`]):
//! topology, memory, load, persistence, capabilities and this process's view. Every
//! Redis command is read-only (`INFO`, `CONFIG GET`, `SLOWLOG GET`, `LATENCY LATEST`,
//! `SENTINEL MASTER`, `TIME`, list and hash lengths); none scans the keyspace.

mod checks;
mod redis_info;
mod tls;

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::Config;

pub use checks::run;

/// Runs the checks every `config.doctor.interval` (when not zero) and publishes each run
/// as the `blinkchamber_doctor_check` gauges, so alerts see them without anyone calling
/// `/v1/diagnostics`. The task ends when the handle is dropped or aborted.
pub fn start_background(config: std::sync::Arc<Config>) -> Option<tokio::task::JoinHandle<()>> {
    let interval = config.doctor.interval;
    if interval.is_zero() {
        return None;
    }
    Some(tokio::spawn(async move {
        // The first run one interval after start, not while the process starts up.
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let mut report = run(&config, &[]).await;
            report.add_process_cache_hits();
            report.record_metrics();
        }
    }))
}

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = CheckStatus)]
pub enum Status {
    /// Fine.
    Pass,
    /// Works now, but will hurt (or already costs something).
    Warn,
    /// Broken, or loses data when the next thing goes wrong.
    Fail,
}

impl Status {
    /// `PASS`, `WARN`, `FAIL`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Pass => "PASS",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
        }
    }
}

/// A group of checks, selectable with `--only`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
#[schema(as = CheckGroup)]
pub enum Group {
    /// Reachability, Sentinel agreement and quorum, replicas, `ROLE`.
    Topology,
    /// Used against `maxmemory`, fragmentation, evictions, `maxmemory-policy`.
    Memory,
    /// Slow log, latency events, clients, rejected connections, ops/s.
    Load,
    /// RDB and AOF status, last save, fork time.
    Persistence,
    /// Event queues and dead letters.
    Capabilities,
    /// This host's clock against Redis's.
    Process,
}

impl Group {
    /// Every group, in report order.
    pub const ALL: [Self; 6] = [
        Self::Topology,
        Self::Memory,
        Self::Load,
        Self::Persistence,
        Self::Capabilities,
        Self::Process,
    ];

    /// The group's name, as in `--only` and the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Topology => "topology",
            Self::Memory => "memory",
            Self::Load => "load",
            Self::Persistence => "persistence",
            Self::Capabilities => "capabilities",
            Self::Process => "process",
        }
    }
}

/// One check's outcome.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Check {
    /// Its group.
    pub group: Group,
    /// Dotted name, e.g. `memory.policy.events`.
    pub check: String,
    /// The outcome.
    pub status: Status,
    /// What was measured, for people.
    pub measured: String,
    /// The next step, for anything but a pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
}

/// Every check of one run.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Report {
    /// The worst status of any check.
    pub status: Status,
    /// `memory` or `redis`.
    pub backend: &'static str,
    /// Whether the backend could be reached at all (exit code 2 when not).
    pub reachable: bool,
    /// The checks, in run order.
    pub checks: Vec<Check>,
}

impl Report {
    pub(crate) fn new(config: &Config, checks: Vec<Check>, reachable: bool) -> Self {
        Self {
            status: checks
                .iter()
                .map(|c| c.status)
                .max()
                .unwrap_or(Status::Pass),
            backend: match config.backend {
                crate::config::BackendKind::Memory => "memory",
                crate::config::BackendKind::Redis => "redis",
            },
            reachable,
            checks,
        }
    }

    /// The process exit code: 0 when nothing fails, 1 on a failure, 2 when the backend
    /// could not be reached at all.
    pub fn exit_code(&self) -> u8 {
        match (self.reachable, self.status) {
            (false, _) => 2,
            (true, Status::Fail) => 1,
            (true, _) => 0,
        }
    }

    /// Adds the cache hit rates of this process (when it runs our metrics recorder):
    /// `/v1/diagnostics` of a running instance knows them, a separate `doctor` does not.
    pub fn add_process_cache_hits(&mut self) {
        if let Some(handle) = crate::metrics::installed() {
            self.checks.push(checks::cache_hits(&handle.render()));
        }
    }

    /// Publishes every check as `blinkchamber_doctor_check{check, status} = 1` (and 0 for
    /// the statuses it does not have), so an alert can fire on `status="fail"`.
    pub fn record_metrics(&self) {
        for c in &self.checks {
            for s in [Status::Pass, Status::Warn, Status::Fail] {
                metrics::gauge!(
                    "blinkchamber_doctor_check",
                    "check" => c.check.clone(),
                    "status" => s.label().to_ascii_lowercase()
                )
                .set(if c.status == s { 1.0 } else { 0.0 });
            }
        }
    }

    /// One line per check (`PASS name  measured`), each non-pass followed by its advice.
    pub fn text(&self) -> String {
        let width = self.checks.iter().map(|c| c.check.len()).max().unwrap_or(0);
        let mut out = String::new();
        for c in &self.checks {
            let _ = writeln!(
                out,
                "{} {:width$}  {}",
                c.status.label(),
                c.check,
                c.measured
            );
            if let Some(advice) = &c.advice {
                let _ = writeln!(out, "     {:width$}  → {advice}", "");
            }
        }
        let count = |s| self.checks.iter().filter(|c| c.status == s).count();
        let _ = writeln!(
            out,
            "{}: {} checks, {} warn, {} fail",
            self.status.label(),
            self.checks.len(),
            count(Status::Warn),
            count(Status::Fail)
        );
        out
    }
}
