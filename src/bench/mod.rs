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

pub use raw::{Raw, RawBaselines, raw_rows};

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
    /// This row's ops/s over its baseline's: measured side by side ([`measure_against`]),
    /// or the median of the rounds' ([`median_rounds`]); [`table`] divides the two rows'
    /// ops/s when it is unset.
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
    let mut tally = Tally::new(concurrency);
    tally.run(&Arc::new(op), duration).await;
    tally.row(name)
}

/// Stretches a paired measurement ([`measure_against`]) gives each of its two sides.
pub const PAIRED_STRETCHES: u32 = 4;

/// Measures `op` beside `baseline` (a raw row's name and operation) in alternating
/// stretches, baseline first and last (B R R B B R R B, [`PAIRED_STRETCHES`] each, over
/// `duration` per side), and answers the baseline's row and `op`'s, compared with it.
///
/// A machine shared with other work changes speed from one second to the next, by a
/// third at times; two rows measured one after the other then differ by as much,
/// whatever they measure. Alternating short stretches gives both sides the same
/// moments (a change of speed that lasts longer than a stretch moves both alike, and
/// the mirrored order cancels a steady drift), so the ratio, each side's operations over
/// the same total time, measures the row and not the machine.
pub async fn measure_against<B, BFut, F, Fut>(
    (base_name, baseline): (&str, B),
    name: &str,
    concurrency: usize,
    duration: Duration,
    op: F,
) -> [Row; 2]
where
    B: Fn(usize, u64) -> BFut + Send + Sync + 'static,
    BFut: Future<Output = ()> + Send,
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let (baseline, op) = (Arc::new(baseline), Arc::new(op));
    let stretch = duration / PAIRED_STRETCHES;
    let (mut base, mut row) = (Tally::new(concurrency), Tally::new(concurrency));
    for pair in 0..PAIRED_STRETCHES {
        if pair % 2 == 0 {
            base.run(&baseline, stretch).await;
            row.run(&op, stretch).await;
        } else {
            row.run(&op, stretch).await;
            base.run(&baseline, stretch).await;
        }
    }
    let (base, mut row) = (base.row(base_name), row.row(name).against(base_name));
    row.ratio = Some(row.ops_per_sec / base.ops_per_sec);
    [base, row]
}

/// Operations, latencies and CPU time of one row over one or more stretches.
struct Tally {
    count: u64,
    elapsed: Duration,
    latencies: Vec<u64>,
    /// CPU time of the stretches run so far (none before the first).
    spent: Option<cpu::Spent>,
    /// Each task's next sequence number: a task goes on where its last stretch ended.
    seqs: Vec<u64>,
}

impl Tally {
    fn new(concurrency: usize) -> Self {
        Self {
            count: 0,
            elapsed: Duration::ZERO,
            latencies: Vec::new(),
            spent: None,
            seqs: vec![0; concurrency],
        }
    }

    /// Runs `op` from every task for `duration`, adding to the tally.
    async fn run<F, Fut>(&mut self, op: &Arc<F>, duration: Duration)
    where
        F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let cpu = cpu::Sample::now().await;
        let deadline = Instant::now() + duration;
        let started = Instant::now();
        let tasks: Vec<_> = self
            .seqs
            .iter()
            .enumerate()
            .map(|(task, &first)| {
                let op = op.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::with_capacity(4096);
                    let mut seq = first;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        op(task, seq).await;
                        latencies.push(t.elapsed().as_nanos() as u64);
                        seq += 1;
                    }
                    (latencies, seq)
                })
            })
            .collect();
        for (task, handle) in tasks.into_iter().enumerate() {
            if let Ok((latencies, seq)) = handle.await {
                self.count += latencies.len() as u64;
                self.latencies.extend(latencies);
                self.seqs[task] = seq;
            }
        }
        self.elapsed += started.elapsed();
        let spent = cpu::Sample::now().await.since(&cpu);
        self.spent = Some(self.spent.map_or(spent, |before| before + spent));
    }

    fn row(self, name: &str) -> Row {
        let (process, redis) = self.spent.unwrap_or_default().per_op(self.count);
        Row {
            cpu: process,
            redis_cpu: redis,
            ..Row::from_latencies(name, self.count, self.elapsed, self.latencies)
        }
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
/// figure. A row measured beside its baseline ([`measure_against`]) brings its own ratio
/// for the round; any other compares with the nearest measurement of its baseline before
/// it in the same round. A row measured several times in a round (a raw baseline) is
/// shown once, as the median of all its measurements.
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
                        if let Some(paired) = this.ratio {
                            return Some(paired);
                        }
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

    #[tokio::test]
    async fn a_paired_row_keeps_its_own_ratio() {
        let [base, row] = measure_against(
            ("base", |_, _| async {}),
            "row",
            2,
            Duration::from_millis(40),
            |_, _| tokio::task::yield_now(),
        )
        .await;
        assert_eq!(base.name, "base");
        assert_eq!(
            (row.name.as_str(), row.baseline.as_deref()),
            ("row", Some("base"))
        );
        assert!(base.ops_per_sec > 0.0 && row.ops_per_sec > 0.0);
        let paired = row.ratio.unwrap();
        assert_eq!(paired, row.ops_per_sec / base.ops_per_sec);

        // Another measurement of the baseline in the round, before the pair, does not
        // replace the ratio measured side by side.
        let earlier = Row {
            ops_per_sec: base.ops_per_sec * 10.0,
            ..base.clone()
        };
        let median = median_rounds(&[vec![earlier, base.clone(), row.clone()]]);
        assert_eq!(median.len(), 2, "{median:?}");
        assert_eq!(median[1].ratio, Some(paired));
        let shown = format!("{paired:.2} × base");
        assert!(table(&median).contains(&shown), "{}", table(&median));
    }
}
