//! The benchmark harness behind `blinkchamber bench`.
//!
//! Every row is measured in the same run as the raw Redis commands it is compared with,
//! through the same client library and at the same concurrency, because absolute figures
//! move by tens of percent with machine load while ratios measured side by side do not.

pub mod cache;
pub mod cpu;
pub mod dead_letters;
pub mod events;
pub mod http;
pub mod keys;
pub mod locks;
pub mod ratelimit;
mod raw;
pub mod sessions;
pub mod tokens;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use raw::{RawBaselines, baselines, raw_rows};

/// One measured scenario.
#[derive(Clone, Debug)]
pub struct Row {
    /// What was measured.
    pub name: String,
    /// Operations completed per second.
    pub ops_per_sec: f64,
    /// Median latency of one operation.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Name of the raw row this one is compared with, if any.
    pub baseline: Option<String>,
    /// CPU time of this process per operation (client and, for HTTP rows, server).
    pub cpu: Option<Duration>,
    /// CPU time of the measured Redis per operation.
    pub redis_cpu: Option<Duration>,
    /// This row's ops/s over its baseline's, once [`median_rounds`] has compared them
    /// round by round; [`table`] divides the two rows' ops/s when it is unset.
    pub ratio: Option<f64>,
}

/// Runs `op` from `concurrency` tasks for `duration` and measures it.
///
/// `op` gets the task index and a per-task sequence number, so scenarios can spread keys.
pub async fn measure<F, Fut>(name: &str, concurrency: usize, duration: Duration, op: F) -> Row
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let cpu = cpu::Sample::now().await;
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(4096);
                let mut seq = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    op(task, seq).await;
                    latencies.push(t.elapsed().as_nanos() as u64);
                    seq += 1;
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap_or_default());
    }
    let count = all.len() as u64;
    let elapsed = started.elapsed();
    let (process, redis) = cpu.per_op(&cpu::Sample::now().await, count);
    Row {
        cpu: process,
        redis_cpu: redis,
        ..Row::from_latencies(name, count, elapsed, all)
    }
}

impl Row {
    /// A row of `count` operations in `elapsed`, with percentiles of `latencies` (ns).
    pub fn from_latencies(
        name: &str,
        count: u64,
        elapsed: Duration,
        mut latencies: Vec<u64>,
    ) -> Self {
        latencies.sort_unstable();
        let pct = |p: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * p) as usize)
                .map_or(Duration::ZERO, |n| Duration::from_nanos(*n))
        };
        Row {
            name: name.to_owned(),
            ops_per_sec: count as f64 / elapsed.as_secs_f64(),
            p50: pct(0.50),
            p99: pct(0.99),
            baseline: None,
            cpu: None,
            redis_cpu: None,
            ratio: None,
        }
    }

    /// Marks this row as compared with the raw row named `baseline`.
    pub fn against(mut self, baseline: &str) -> Self {
        self.baseline = Some(baseline.to_owned());
        self
    }
}

/// The median round of every row (by ops/s), in the order of the first round, each with
/// the median of its per-round ratios to its baseline.
///
/// Runs are noisy on a shared machine; measuring every scenario in several interleaved
/// rounds and keeping the median round of each keeps one slow moment from deciding a
/// figure. A ratio compares a row with the nearest measurement of its baseline before it
/// in the same round (raw rows are measured again right before the rows that compare
/// with them, [`baselines`]), so a machine that slows down between rows moves both sides
/// of it alike. A row measured several times in a round (a raw baseline) is shown once,
/// as the median of all its measurements.
pub fn median_rounds(rounds: &[Vec<Row>]) -> Vec<Row> {
    let Some(first) = rounds.first() else {
        return Vec::new();
    };
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    let mut names: Vec<&str> = Vec::new();
    for row in first {
        if !names.contains(&row.name.as_str()) {
            names.push(&row.name);
        }
    }
    names
        .into_iter()
        .map(|name| {
            let mut same: Vec<&Row> = rounds
                .iter()
                .flat_map(|round| round.iter().filter(|r| r.name == name))
                .collect();
            same.sort_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec));
            let mut chosen = same[same.len() / 2].clone();
            let ratios = rounds
                .iter()
                .flat_map(|round| {
                    round.iter().enumerate().filter_map(move |(i, this)| {
                        let wanted = this.baseline.as_ref().filter(|_| this.name == name)?;
                        let base = round[..i].iter().rev().find(|r| &r.name == wanted)?;
                        Some(this.ops_per_sec / base.ops_per_sec)
                    })
                })
                .collect();
            chosen.ratio = median(ratios);
            chosen
        })
        .collect()
}

/// Renders rows as a Markdown table; ratios are a row's own ([`Row::ratio`]) or else its
/// ops/s divided by the baseline row's, and the last two columns are CPU time per
/// operation of this process and of Redis ([`cpu`]).
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | ops/s | p50 | p99 | vs raw | CPU/op here | CPU/op Redis |\n\
         |---|---:|---:|---:|---|---:|---:|\n",
    );
    for row in rows {
        let ratio = row
            .baseline
            .as_ref()
            .and_then(|b| rows.iter().find(|r| &r.name == b))
            .map_or_else(
                || "—".to_owned(),
                |b| {
                    let ratio = row.ratio.unwrap_or(row.ops_per_sec / b.ops_per_sec);
                    format!("{ratio:.2} × {}", b.name)
                },
            );
        let cpu = |d: Option<Duration>| {
            d.map_or_else(
                || "—".to_owned(),
                |d| format!("{:.1} µs", d.as_secs_f64() * 1e6),
            )
        };
        out.push_str(&format!(
            "| {} | {:.0} | {} | {} | {} | {} | {} |\n",
            row.name,
            row.ops_per_sec,
            fmt_latency(row.p50),
            fmt_latency(row.p99),
            ratio,
            cpu(row.cpu),
            cpu(row.redis_cpu)
        ));
    }
    out
}

fn fmt_latency(d: Duration) -> String {
    if d < Duration::from_micros(10) {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    } else if d < Duration::from_millis(1) {
        format!("{} µs", d.as_micros())
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn measures_and_renders_ratios() {
        let fast = measure("fast", 2, Duration::from_millis(50), |_, _| async {}).await;
        assert!(fast.ops_per_sec > 0.0);
        let slow = Row {
            name: "slow".into(),
            ops_per_sec: fast.ops_per_sec / 2.0,
            ..fast.clone()
        }
        .against("fast");
        let text = table(&[fast.clone(), slow.clone()]);
        assert!(text.contains("0.50 × fast"), "{text}");

        let scaled = |k: f64| {
            vec![Row {
                ops_per_sec: fast.ops_per_sec * k,
                ..fast.clone()
            }]
        };
        let median = median_rounds(&[scaled(3.0), scaled(1.0), scaled(2.0)]);
        assert_eq!(median.len(), 1);
        assert_eq!(median[0].ops_per_sec, fast.ops_per_sec * 2.0);

        // Each round's ratio is taken within the round: the machine's speed, which moves
        // both rows of a round alike, leaves the ratio alone.
        let round = |speed: f64, ratio: f64| {
            let base = Row {
                ops_per_sec: fast.ops_per_sec * speed,
                ..fast.clone()
            };
            let row = Row {
                name: "slow".into(),
                ops_per_sec: base.ops_per_sec * ratio,
                ..fast.clone()
            }
            .against("fast");
            vec![base, row]
        };
        let median = median_rounds(&[round(1.0, 0.8), round(3.0, 0.7), round(0.5, 0.9)]);
        // x · 0.8 / x is 0.8 only to within rounding.
        let ratio = median[1].ratio.unwrap();
        assert!((ratio - 0.8).abs() < 1e-9, "{ratio}");
        assert!(table(&median).contains("0.80 × fast"), "{}", table(&median));

        // A baseline measured again within a round: a row is compared with the nearest
        // measurement before it, and the baseline is shown once.
        let at = |speed: f64| Row {
            ops_per_sec: fast.ops_per_sec * speed,
            ..fast.clone()
        };
        let compared = |base: &Row, ratio: f64| {
            Row {
                name: "slow".into(),
                ops_per_sec: base.ops_per_sec * ratio,
                ..fast.clone()
            }
            .against("fast")
        };
        let (early, late) = (at(1.0), at(2.0));
        let round = vec![early.clone(), late.clone(), compared(&late, 0.6), at(1.5)];
        let median = median_rounds(&[round]);
        assert_eq!(median.len(), 2, "{median:?}");
        assert_eq!(median[0].ops_per_sec, fast.ops_per_sec * 1.5);
        let ratio = median[1].ratio.unwrap();
        assert!((ratio - 0.6).abs() < 1e-9, "{ratio}");
    }
}
