//! CPU time per operation, of this process and of the measured Redis.
//!
//! A ratio says how fast a row is beside its raw row; the CPU columns say why. On a small
//! machine the benchmark and Redis share the cores, so a row is bound either by this
//! process (client work per operation) or by Redis's single thread (its work per
//! operation: a Lua script costs it several times a plain command). The process figure
//! comes from `/proc/self/stat` (Linux; 10 ms ticks, so about 1 % of a one-second row),
//! Redis's from `INFO cpu` (`used_cpu_user` + `used_cpu_sys`, the whole server).

use std::sync::OnceLock;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

static REDIS: OnceLock<MultiplexedConnection> = OnceLock::new();

/// Reads the measured Redis's CPU time around every row from now on.
pub fn watch_redis(conn: MultiplexedConnection) {
    let _ = REDIS.set(conn);
}

/// CPU time used so far, where it can be read.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    process: Option<Duration>,
    redis: Option<Duration>,
}

impl Sample {
    /// The CPU time used now by this process and by the watched Redis.
    pub async fn now() -> Self {
        let redis = match REDIS.get() {
            Some(conn) => redis_cpu(conn.clone()).await,
            None => None,
        };
        Self {
            process: process_cpu(),
            redis,
        }
    }

    /// CPU time used between `before` and `self`.
    pub fn since(&self, before: &Sample) -> Spent {
        let spent = |a: Option<Duration>, b: Option<Duration>| Some(b?.saturating_sub(a?));
        Spent {
            process: spent(before.process, self.process),
            redis: spent(before.redis, self.redis),
        }
    }
}

/// CPU time used over one or more stretches of a row, by this process and by Redis.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spent {
    process: Option<Duration>,
    redis: Option<Duration>,
}

/// The sum of two stretches; a figure missing from either is missing from the sum.
impl std::ops::Add for Spent {
    type Output = Spent;

    fn add(self, other: Spent) -> Spent {
        let sum = |a: Option<Duration>, b: Option<Duration>| Some(a? + b?);
        Spent {
            process: sum(self.process, other.process),
            redis: sum(self.redis, other.redis),
        }
    }
}

impl Spent {
    /// CPU time per operation over `ops` operations: this process's and Redis's.
    pub fn per_op(&self, ops: u64) -> (Option<Duration>, Option<Duration>) {
        let per = |d: Option<Duration>| {
            d.filter(|_| ops > 0)
                .map(|d| Duration::from_secs_f64(d.as_secs_f64() / ops as f64))
        };
        (per(self.process), per(self.redis))
    }
}

/// User plus system time of this process: fields 14 and 15 of `/proc/self/stat`, in
/// ticks of 1/100 s (`USER_HZ`, fixed by the Linux ABI).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat(&stat)
}

fn parse_stat(stat: &str) -> Option<Duration> {
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((user + system) * 10))
}

async fn redis_cpu(mut conn: MultiplexedConnection) -> Option<Duration> {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(&mut conn)
        .await
        .ok()?;
    parse_info(&info)
}

fn parse_info(info: &str) -> Option<Duration> {
    let seconds = |name: &str| -> Option<f64> {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?
            .trim()
            .parse()
            .ok()
    };
    let total = seconds("used_cpu_user")? + seconds("used_cpu_sys")?;
    Some(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_stat_and_info_cpu() {
        let stat = "4242 (tokio (worker) 1) R 1 2 3 4 5 6 7 8 9 10 250 37 0 0 20 0 9 0";
        assert_eq!(parse_stat(stat), Some(Duration::from_millis(2870)));
        assert!(process_cpu().is_some(), "no /proc/self/stat");
        let info = "# CPU\r\nused_cpu_sys:1.250000\r\nused_cpu_user:2.500000\r\n\
                    used_cpu_sys_children:9.000000\r\n";
        assert_eq!(parse_info(info), Some(Duration::from_millis(3750)));
        let before = Sample {
            process: Some(Duration::from_millis(100)),
            redis: None,
        };
        let after = Sample {
            process: Some(Duration::from_millis(300)),
            redis: Some(Duration::from_secs(1)),
        };
        let spent = after.since(&before);
        assert_eq!(
            spent.per_op(100_000),
            (Some(Duration::from_micros(2)), None)
        );
        // Two stretches add up; Redis's time is missing from the sum as from one of them.
        assert_eq!(
            (spent + spent).per_op(100_000),
            (Some(Duration::from_micros(4)), None)
        );
        // More operations than a u32 holds are divided, not truncated.
        let (per, _) = spent.per_op(1 << 33);
        assert!(per.unwrap() < Duration::from_nanos(1), "{per:?}");
    }
}
