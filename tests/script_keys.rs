//! Redis Cluster's rule for scripts: a script touches only the keys it was given in
//! `KEYS`. Checked on a real `redis-server` through `MONITOR`, which shows each `EVALSHA`
//! with its keys followed by every command the script ran (`[0 lua]`), while each
//! capability runs its Redis operations: sessions (at the per-user limit too), rate limits
//! of every algorithm, locks, event queues (take, settle with retries and dead letters,
//! reap, replay and delete by id and in bulk), and the cache (tagged and guarded writes,
//! removal by key and by tag, clear).

mod support;

use std::collections::HashSet;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use blinkchamber::cache::SetOptions;
use blinkchamber::events::dead_letter::DeadLetterFilter;
use blinkchamber::events::queues::{Settle, Taken};
use blinkchamber::events::{Event, Priority, Publisher, Router, decode};
use blinkchamber::session::SessionKind;
use serde_json::json;
use support::app::App;
use support::{RedisProc, wait_for, wait_for_async};

/// `redis-cli monitor` writing to a file.
struct Monitor {
    child: Child,
    path: PathBuf,
    port: u16,
}

impl Monitor {
    fn start(redis: &RedisProc, dir: &std::path::Path) -> Self {
        let path = dir.join("monitor.txt");
        let out = File::create(&path).unwrap();
        let child = Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "monitor"])
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli");
        let monitor = Self {
            child,
            path,
            port: redis.port,
        };
        monitor.mark("monitor-start");
        monitor
    }

    /// Sends `ECHO text` and waits until the monitor has written it.
    fn mark(&self, text: &str) {
        let quoted = format!("\"{text}\"");
        wait_for("the monitor to see the marker", || {
            let mut conn = redis::Client::open(format!("redis://127.0.0.1:{}", self.port))
                .unwrap()
                .get_connection()
                .unwrap();
            let _: String = redis::cmd("ECHO").arg(text).query(&mut conn).unwrap();
            std::fs::read_to_string(&self.path)
                .unwrap()
                .contains(&quoted)
                .then_some(())
        });
    }

    fn finish(mut self) -> String {
        self.mark("monitor-end");
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.path).unwrap()
    }
}

/// The quoted arguments of one `MONITOR` line, after its `[db client]` part, and whether
/// the command ran inside a script.
fn parse_line(line: &str) -> Option<(bool, Vec<String>)> {
    let open = line.find('[')?;
    let close = open + line[open..].find(']')?;
    let from_lua = line[open..close].ends_with(" lua");
    let mut args = Vec::new();
    let mut chars = line[close + 1..].chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut arg = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('x') => {
                        let hex: String = chars.by_ref().take(2).collect();
                        arg.push(char::from(u8::from_str_radix(&hex, 16).unwrap_or(b'?')));
                    }
                    Some('n') => arg.push('\n'),
                    Some('r') => arg.push('\r'),
                    Some('t') => arg.push('\t'),
                    Some(other) => arg.push(other),
                    None => {}
                },
                c => arg.push(c),
            }
        }
        args.push(arg);
    }
    Some((from_lua, args))
}

/// The key arguments of a command scripts run.
fn keys_of(args: &[String]) -> Vec<String> {
    let command = args[0].to_ascii_uppercase();
    let rest = &args[1..];
    match command.as_str() {
        "TIME" | "PUBLISH" | "ECHO" | "PING" => Vec::new(),
        "DEL" | "UNLINK" | "EXISTS" | "MGET" | "TOUCH" => rest.to_vec(),
        "RENAME" | "RENAMENX" | "LMOVE" | "RPOPLPUSH" | "SMOVE" => rest[..2].to_vec(),
        _ => rest.first().cloned().into_iter().collect(),
    }
}

/// Every command a script ran on a key it was not given, as `script keys → command key`.
fn undeclared(monitor: &str) -> (usize, Vec<String>) {
    let mut declared: Option<HashSet<String>> = None;
    let (mut scripts, mut found) = (0, Vec::new());
    for line in monitor.lines() {
        let Some((from_lua, args)) = parse_line(line) else {
            continue;
        };
        if args.is_empty() {
            continue;
        }
        if !from_lua {
            let command = args[0].to_ascii_uppercase();
            declared = if command == "EVALSHA" || command == "EVAL" {
                scripts += 1;
                let n: usize = args[2].parse().unwrap();
                Some(args[3..3 + n].iter().cloned().collect())
            } else {
                None
            };
            continue;
        }
        let keys = declared
            .as_ref()
            .expect("a script command follows its EVALSHA");
        for key in keys_of(&args) {
            if !keys.contains(&key) {
                found.push(format!("{} {key} (declared: {keys:?})", args[0]));
            }
        }
    }
    (scripts, found)
}

// Deadlines far past the defaults: MONITOR slows Redis down, and a step whose call
// outlasts its deadline fails the test without any fault.
const CONFIG: &str = "\
sessions:
  maxPerUser: 3
cache:
  l2Timeout: 10s
rateLimit:
  redisTimeout: 10s
  rules:
    - { name: g, descriptor: [user], algorithm: gcra, limit: 5, period: 1m }
    - { name: f, descriptor: [user], algorithm: fixedWindow, limit: 5, period: 1m }
    - { name: s, descriptor: [user], algorithm: slidingWindow, limit: 5, period: 1m }
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_touch_only_the_keys_they_are_given() {
    let redis = RedisProc::start();
    let dir = tempfile::tempdir().unwrap();
    let app = App::redis(&redis, CONFIG).await;
    let runtime = app.runtime();
    let monitor = Monitor::start(&redis, dir.path());

    // Sessions: create past the per-user limit, read, touch, update, rotate, delete, list,
    // revoke.
    let sessions = runtime.sessions();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let s = sessions
            .create("u1", SessionKind::User, json!({"n": 1}))
            .await
            .unwrap();
        ids.push(s.id);
    }
    let live = ids.last().unwrap().clone();
    sessions.get(&live).await.unwrap();
    sessions.touch(&live).await.unwrap();
    let s = sessions.update(&live, json!({"n": 2}), 1).await.unwrap();
    assert_eq!(s.version, 2);
    let rotated = sessions.rotate(&live).await.unwrap();
    assert_eq!(sessions.list_user("u1").await.unwrap().len(), 3);
    sessions.delete(&rotated.id).await.unwrap();
    assert_eq!(sessions.list_user("u1").await.unwrap().len(), 2);
    assert_eq!(sessions.revoke_user("u1").await.unwrap(), 2);

    // Rate limits, every algorithm, until limited.
    for rule in ["g", "f", "s"] {
        for _ in 0..7 {
            runtime.limits().check(rule, "user=a", 1).await.unwrap();
        }
    }

    // Locks.
    let locks = runtime.locks();
    let lease = locks
        .acquire("job", Duration::from_secs(10), Duration::ZERO)
        .await
        .unwrap();
    locks
        .extend("job", &lease.token, Duration::from_secs(10))
        .await
        .unwrap();
    locks.release("job", &lease.token).await.unwrap();

    // Event queues: publish, take, settle with a retry and dead letters, replay and delete
    // by id and in bulk, reap.
    let events = runtime.events().expect("events");
    let queues = events.queues();
    let publisher = Publisher::new(&runtime.config().events, queues.clone()).unwrap();
    publisher
        .publish_many(
            (0..6)
                .map(|i| {
                    Event::new(
                        "user.created",
                        "/t",
                        Some(serde_json::value::to_raw_value(&i).unwrap()),
                    )
                })
                .collect(),
        )
        .await
        .unwrap();
    let Taken::Events {
        priority, items, ..
    } = queues
        .take("c1", "t1", Priority::ALL, 100, Duration::from_secs(30))
        .await
        .unwrap()
    else {
        panic!("events expected");
    };
    let settle = Settle {
        priority,
        retries: vec![(items[0].clone(), Duration::from_secs(60))],
        // items[5] and the published-once event: handled.
        dead: items[1..5]
            .iter()
            .map(|s| (decode(s).unwrap().id, s.clone()))
            .collect(),
        seen: Vec::new(),
        seen_for: Duration::ZERO,
    };
    queues
        .settle("c1", "t1", &settle, Duration::from_secs(30))
        .await
        .unwrap();
    let router = Router::default();
    let dead: Vec<String> = settle.dead.iter().map(|(id, _)| id.clone()).collect();
    assert!(
        queues
            .replay_dead_letter(&dead[0], &router, false)
            .await
            .unwrap()
    );
    assert!(queues.delete_dead_letter(&dead[1]).await.unwrap());
    assert_eq!(
        queues
            .delete_dead_letters(&DeadLetterFilter::default())
            .await
            .unwrap(),
        2
    );
    queues
        .take("c2", "t2", Priority::ALL, 100, Duration::from_millis(1))
        .await
        .unwrap();
    wait_for_async("the lease to run out", || async {
        (queues.reap().await.unwrap() > 0).then_some(())
    })
    .await;
    queues.stats().await.unwrap();

    // Cache: tagged writes (retagged too), a guarded loader write, removal by key and by
    // tag, and a namespace clear.
    let cache = runtime.cache();
    for i in 0..5 {
        let tags: &[&str] = if i % 2 == 0 {
            &["even", "all"]
        } else {
            &["odd", "all"]
        };
        cache
            .set(
                "docs",
                &format!("d{i}"),
                &i,
                SetOptions {
                    tags,
                    ..SetOptions::default()
                },
            )
            .await
            .unwrap();
    }
    cache
        .set(
            "docs",
            "d0",
            &0,
            SetOptions {
                tags: &["zero"],
                ..SetOptions::default()
            },
        )
        .await
        .unwrap();
    let loaded: u32 = cache
        .get_or_load("docs", "loaded", None, || async {
            Ok::<_, std::io::Error>(7)
        })
        .await
        .unwrap();
    assert_eq!(loaded, 7);
    cache.remove("docs", "d1").await.unwrap();
    assert_eq!(cache.remove_by_tag("docs", "even").await.unwrap(), 2);
    assert_eq!(cache.remove_by_tag("docs", "all").await.unwrap(), 1);
    cache.clear("docs").await.unwrap();

    let (scripts, found) = undeclared(&monitor.finish());
    assert!(scripts >= 20, "only {scripts} script calls were seen");
    assert!(
        found.is_empty(),
        "keys touched but not given in KEYS:\n{}",
        found.join("\n")
    );
}
