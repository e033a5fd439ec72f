//! Failover drills against a real master + 2 replicas + 3 Sentinels: the master is killed
//! with SIGKILL, or demoted with `SENTINEL FAILOVER`, while a writer keeps writing; and
//! events published with replica acknowledgement across a SIGKILL of the master.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blinkchamber::backend::redis::SubscriptionEvent;
use blinkchamber::config::RedisConfig;
use blinkchamber::{RedisBackend, Retry};
use futures_util::StreamExt;
use support::{SentinelGroup, wait_for_async};

/// One write of the drill: which node ran it and whether replicas acknowledged it.
#[derive(Clone, Debug)]
struct Write {
    key: String,
    epoch_before: u64,
    port: Option<u16>,
    acked: bool,
    done: Instant,
}

/// Resumption after `+switch-master` is asserted against this generous bound (consumption
/// against twice it); the measured figures are printed.
const RESUME_BOUND: Duration = Duration::from_secs(5);

fn config(group: &SentinelGroup) -> RedisConfig {
    let mut cfg = RedisConfig::sentinel("mymaster", group.sentinel_nodes());
    cfg.dial_timeout = Duration::from_millis(500);
    cfg.read_timeout = Duration::from_secs(1);
    cfg.write_timeout = Duration::from_secs(1);
    cfg
}

/// Writes `drill:<n>` in a loop: `SET`, then `WAIT replicas`, then `CONFIG GET port` on
/// the same connection so the test knows which node ran the write.
fn spawn_writer(
    backend: RedisBackend,
    replicas: Arc<std::sync::atomic::AtomicUsize>,
    log: Arc<Mutex<Vec<Write>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut n = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let key = format!("drill:{n}");
            let epoch_before = backend.master().epoch;
            let replicas = replicas.load(std::sync::atomic::Ordering::Relaxed);
            let result = backend
                .run(Retry::Idempotent, |mut c| {
                    let key = key.clone();
                    async move {
                        redis::pipe()
                            .cmd("SET")
                            .arg(&key)
                            .arg(n)
                            .ignore()
                            .cmd("WAIT")
                            .arg(replicas)
                            .arg(200)
                            .cmd("CONFIG")
                            .arg("GET")
                            .arg("port")
                            .query_async::<(i64, (String, u16))>(&mut c)
                            .await
                    }
                })
                .await;
            let (acked, port) = match result {
                Ok((replicated, (_, port))) => (replicated >= replicas as i64, Some(port)),
                Err(_) => (false, None),
            };
            log.lock().unwrap().push(Write {
                key,
                epoch_before,
                port,
                acked,
                done: Instant::now(),
            });
            n += 1;
            tokio::task::yield_now().await;
        }
    })
}

/// Timestamps the first `+switch-master` a Sentinel announces.
async fn watch_switch(sentinel_port: u16) -> tokio::task::JoinHandle<Instant> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{sentinel_port}")).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("+switch-master").await.unwrap();
    tokio::spawn(async move {
        let mut messages = pubsub.into_on_message();
        messages.next().await.expect("+switch-master");
        Instant::now()
    })
}

async fn writes_after(log: &Arc<Mutex<Vec<Write>>>, since: Instant, port: u16, count: usize) {
    wait_for_async("acknowledged writes on the new master", || async {
        let log = log.lock().unwrap();
        let n = log
            .iter()
            .filter(|w| w.done > since && w.acked && w.port == Some(port))
            .count();
        (n >= count).then_some(())
    })
    .await;
}

/// Checks the drill's log and prints the figures the README quotes.
fn verify(
    drill: &str,
    group: &SentinelGroup,
    log: &[Write],
    old: u16,
    new: u16,
    switched: Instant,
    new_epoch: u64,
) {
    let mut conn = group.nodes[group.index_of(new)].conn();
    let acked: Vec<&Write> = log.iter().filter(|w| w.acked).collect();
    assert!(!acked.is_empty());
    for w in &acked {
        let value: Option<String> = redis::cmd("GET").arg(&w.key).query(&mut conn).unwrap();
        assert!(
            value.is_some(),
            "{drill}: acknowledged write {} lost",
            w.key
        );
    }
    for w in log
        .iter()
        .filter(|w| w.epoch_before >= new_epoch && w.port.is_some())
    {
        assert_eq!(
            w.port,
            Some(new),
            "{drill}: write {} after the switch ran on {old}",
            w.key
        );
    }
    let first = log
        .iter()
        .filter(|w| w.done > switched && w.port == Some(new))
        .map(|w| w.done)
        .min()
        .expect("a write on the new master");
    let late_on_old = log
        .iter()
        .filter(|w| w.done > switched && w.port == Some(old))
        .count();
    assert!(
        late_on_old <= 1,
        "{drill}: {late_on_old} writes ran on the demoted master after +switch-master"
    );
    // A generous bound, so a loaded machine does not fail it; the figure printed below is
    // the measurement.
    let resumed = first.saturating_duration_since(switched);
    assert!(
        resumed < RESUME_BOUND,
        "{drill}: writes resumed {resumed:?} after +switch-master"
    );
    eprintln!(
        "{drill}: first successful write on the new master {:?} after +switch-master; \
         {} writes, {} acknowledged, {late_on_old} on the old master after the switch",
        first.saturating_duration_since(switched),
        log.len(),
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_the_new_master_when_the_old_one_is_killed() {
    let mut group = tokio::task::spawn_blocking(SentinelGroup::start)
        .await
        .unwrap();
    let old = group.nodes[0].port;
    let backend = RedisBackend::connect(config(&group)).await.unwrap();
    assert_eq!(backend.master().endpoint.port, old);

    // A subscriber and a blocking consumer, to show both come back on the new master.
    let mut sub = backend.subscribe(vec!["drill".into()]);
    assert_eq!(sub.recv().await, Some(SubscriptionEvent::Subscribed(0)));
    let consumer = {
        let backend = backend.clone();
        tokio::spawn(async move {
            loop {
                let mut watch = backend.master_watch();
                let Ok((mut conn, _)) = backend.dedicated().await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let mut blpop = redis::cmd("BLPOP");
                blpop.arg("drill:queue").arg(0);
                let popped: redis::RedisResult<Option<(String, String)>> = tokio::select! {
                    r = blpop.query_async(&mut conn) => r,
                    _ = watch.changed() => continue,
                };
                if let Ok(Some((_, value))) = popped {
                    return value;
                }
            }
        })
    };

    let log = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Acknowledged = on both replicas, so it is on whichever one Sentinel promotes.
    let replicas = Arc::new(std::sync::atomic::AtomicUsize::new(2));
    let writer = spawn_writer(backend.clone(), replicas.clone(), log.clone(), stop.clone());
    writes_after(&log, Instant::now() - Duration::from_secs(1), old, 50).await;

    let switch = watch_switch(group.sentinels[0].port).await;
    group.nodes[0].kill();
    let switched = switch.await.unwrap();
    // The new master has one replica left.
    replicas.store(1, std::sync::atomic::Ordering::Relaxed);
    let new = wait_for_async("the backend to follow the new master", || async {
        let m = backend.master();
        (m.endpoint.port != old).then_some(m)
    })
    .await;
    assert_eq!(Some(new.endpoint.port), group.sentinel_master_port());
    writes_after(&log, switched, new.endpoint.port, 50).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    verify(
        "kill -9",
        &group,
        &log.lock().unwrap(),
        old,
        new.endpoint.port,
        switched,
        new.epoch,
    );

    // The subscription was re-established on the new master.
    let mut conn = group.nodes[group.index_of(new.endpoint.port)].conn();
    loop {
        match sub.recv().await.unwrap() {
            SubscriptionEvent::Subscribed(n) if n >= 1 => break,
            _ => {}
        }
    }
    let _: i64 = redis::cmd("PUBLISH")
        .arg("drill")
        .arg("after")
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        sub.recv().await,
        Some(SubscriptionEvent::Message {
            channel: "drill".into(),
            payload: b"after".to_vec()
        })
    );
    // The blocking consumer reconnected to the new master and receives from it.
    let _: i64 = redis::cmd("RPUSH")
        .arg("drill:queue")
        .arg("job")
        .query(&mut conn)
        .unwrap();
    assert_eq!(consumer.await.unwrap(), "job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_keeps_writing_to_a_demoted_master() {
    let group = tokio::task::spawn_blocking(SentinelGroup::start)
        .await
        .unwrap();
    let old = group.nodes[0].port;
    let backend = RedisBackend::connect(config(&group)).await.unwrap();

    let log = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Acknowledged = on both replicas, so it is on whichever one Sentinel promotes; after
    // the failover the demoted master rejoins, so the new master has two replicas again.
    let replicas = Arc::new(std::sync::atomic::AtomicUsize::new(2));
    let writer = spawn_writer(backend.clone(), replicas, log.clone(), stop.clone());
    writes_after(&log, Instant::now() - Duration::from_secs(1), old, 50).await;

    // Timed from the Sentinel asked to fail over: it leads the failover and announces it
    // first.
    let switch = watch_switch(group.sentinels[1].port).await;
    group.failover_through(1);
    let switched = switch.await.unwrap();
    let new = wait_for_async("the backend to follow the promoted replica", || async {
        let m = backend.master();
        (m.endpoint.port != old).then_some(m)
    })
    .await;
    // The old master is demoted and rejoins as a replica of the new one.
    support::wait_for("the old master to be demoted", || {
        (group.nodes[0].role()? == "slave").then_some(())
    });
    writes_after(&log, switched, new.endpoint.port, 50).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    verify(
        "SENTINEL FAILOVER",
        &group,
        &log.lock().unwrap(),
        old,
        new.endpoint.port,
        switched,
        new.epoch,
    );
}

/// Records the ids of handled events, with when each was first handled.
#[derive(Default)]
struct Handled(Mutex<std::collections::HashMap<String, Instant>>);

impl blinkchamber::events::Handler for Handled {
    fn handle<'a>(
        &'a self,
        event: &'a blinkchamber::events::Event,
    ) -> futures_util::future::BoxFuture<'a, Result<(), String>> {
        self.0
            .lock()
            .unwrap()
            .entry(event.id.clone())
            .or_insert_with(Instant::now);
        Box::pin(async { Ok(()) })
    }
}

/// Publishes one event at a time until `stop`, with `waitReplicas: replicas`; returns the
/// ids acknowledged with when each was, and how many publishes failed.
fn spawn_publisher(
    queues: blinkchamber::events::Queues,
    replicas: u32,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<(String, Instant)>, usize)> {
    let mut cfg = blinkchamber::config::EventsConfig::default();
    cfg.publishing.wait_replicas = replicas;
    cfg.publishing.wait_timeout = Duration::from_millis(500);
    cfg.publishing.batch_timeout = Duration::from_secs(3);
    let publisher = blinkchamber::events::Publisher::new(&cfg, queues).unwrap();
    tokio::spawn(async move {
        let (mut acked, mut failed) = (Vec::new(), 0);
        let mut n = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let data = serde_json::value::to_raw_value(&n).unwrap();
            let event = blinkchamber::events::Event::new("user.created", "/drill", Some(data));
            match publisher.publish(event).await {
                Ok(id) => acked.push((id, Instant::now())),
                Err(_) => failed += 1,
            }
            n += 1;
        }
        (acked, failed)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_acknowledged_with_replicas_survive_a_failover() {
    let mut group = tokio::task::spawn_blocking(SentinelGroup::start)
        .await
        .unwrap();
    let old = group.nodes[0].port;
    let backend = RedisBackend::connect(config(&group)).await.unwrap();
    let cfg = blinkchamber::config::EventsConfig::default();
    let queues = blinkchamber::events::Queues::redis(&cfg, backend.clone());

    // Before: acknowledged = on both replicas, so on whichever one Sentinel promotes.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let before = spawn_publisher(queues.clone(), 2, stop.clone());
    wait_for_async("events acknowledged by both replicas", || async {
        let stats = queues.stats().await.ok()?;
        (stats.queues[1].depth >= 50).then_some(())
    })
    .await;
    group.nodes[0].kill();
    let new = wait_for_async("the backend to follow the new master", || async {
        let m = backend.master();
        (m.endpoint.port != old).then_some(m)
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut acked, failed) = before.await.unwrap();
    let acked_before = acked.len();

    // After: the new master has one replica left.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let after = spawn_publisher(queues.clone(), 1, stop.clone());
    wait_for_async("events acknowledged on the new master", || async {
        let stats = queues.stats().await.ok()?;
        (stats.queues[1].depth as usize >= acked_before + 50).then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (later, _) = after.await.unwrap();
    assert!(!later.is_empty());
    acked.extend(later);

    // Every acknowledged event is in the new master's queue and reaches a worker.
    let handled = Arc::new(Handled::default());
    let workers = blinkchamber::events::Workers::start(&cfg, queues.clone(), handled.clone());
    wait_for_async("every acknowledged event to be handled", || async {
        let seen = handled.0.lock().unwrap();
        acked
            .iter()
            .all(|(id, _)| seen.contains_key(id))
            .then_some(())
    })
    .await;
    workers.shutdown().await;
    assert_eq!(backend.master().endpoint.port, new.endpoint.port);
    eprintln!(
        "events across kill -9: {} acknowledged ({acked_before} before the switch), {failed} \
         publishes failed during it, none lost",
        acked.len()
    );
}

/// How a drill takes the master away.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// SIGSTOP: connections stay open and nothing answers.
    Freeze,
    /// SIGKILL.
    Kill,
    /// `SENTINEL FAILOVER`: the master is demoted and rejoins as a replica.
    Failover,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_resume_consuming_when_the_master_freezes() {
    consumption_drill(Fault::Freeze).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_resume_consuming_when_the_master_is_killed() {
    consumption_drill(Fault::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_resume_consuming_after_a_sentinel_failover() {
    consumption_drill(Fault::Failover).await;
}

/// Workers consume while a publisher publishes; the master goes away by `fault`; every
/// acknowledged event is handled, and the time from the switch to the first write and to
/// the first event published after it being consumed is printed.
async fn consumption_drill(fault: Fault) {
    let mut group = tokio::task::spawn_blocking(SentinelGroup::start)
        .await
        .unwrap();
    let old = group.nodes[0].port;
    let backend = RedisBackend::connect(config(&group)).await.unwrap();
    let mut cfg = blinkchamber::config::EventsConfig::default();
    cfg.performance.worker_count = 4.try_into().unwrap();
    let queues = blinkchamber::events::Queues::redis(&cfg, backend.clone());
    // Workers run throughout; most of them sit idle in BLPOP on the master.
    let handled = Arc::new(Handled::default());
    let workers = blinkchamber::events::Workers::start(&cfg, queues.clone(), handled.clone());

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let before = spawn_publisher(queues.clone(), 1, stop.clone());
    wait_for_async("events handled before the freeze", || async {
        (handled.0.lock().unwrap().len() >= 50).then_some(())
    })
    .await;
    match fault {
        Fault::Freeze => group.nodes[0].pause(),
        Fault::Kill => group.nodes[0].kill(),
        Fault::Failover => group.failover_through(1),
    }
    let new = wait_for_async("the backend to follow the new master", || async {
        let m = backend.master();
        (m.endpoint.port != old).then_some(m)
    })
    .await;
    let switched = Instant::now();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // A new publisher at once; the old one may still be waiting on the frozen node. It
    // does not wait for a replica: the remaining replica re-attaches to the new master
    // only after Sentinel reconfigures it, and what is measured here is the client.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let after = spawn_publisher(queues.clone(), 0, stop.clone());
    let (mut acked, failed) = before.await.unwrap();
    let acked_before = acked.len();
    wait_for_async("events acknowledged on the new master", || async {
        let seen = handled.0.lock().unwrap().len();
        (seen >= acked_before + 50).then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (later, _) = after.await.unwrap();
    assert!(!later.is_empty());
    // From the switch to the first write accepted, and to the first event published after
    // the switch reaching a worker that was idle on the frozen node.
    let first_write = later[0].1.saturating_duration_since(switched);
    let resumed = wait_for_async(
        "an event published after the switch to be handled",
        || async {
            let seen = handled.0.lock().unwrap();
            later
                .iter()
                .filter_map(|(id, _)| seen.get(id))
                .min()
                .map(|at| at.saturating_duration_since(switched))
        },
    )
    .await;
    assert!(
        resumed < RESUME_BOUND * 2,
        "consumption resumed {resumed:?} after +switch-master"
    );
    acked.extend(later);
    // The same workers, idle on the frozen node when it froze, handle every acknowledged
    // event.
    wait_for_async("every acknowledged event to be handled", || async {
        let seen = handled.0.lock().unwrap();
        acked
            .iter()
            .all(|(id, _)| seen.contains_key(id))
            .then_some(())
    })
    .await;
    workers.shutdown().await;
    assert_eq!(backend.master().endpoint.port, new.endpoint.port);
    if let Fault::Freeze = fault {
        group.nodes[0].resume();
    }
    eprintln!(
        "events across {fault:?}: {} acknowledged ({acked_before} before the switch), {failed} \
         publishes failed during it, none lost; after the switch was seen, the first write \
         was accepted in {first_write:?} and the first new event consumed in {resumed:?}",
        acked.len()
    );
}
