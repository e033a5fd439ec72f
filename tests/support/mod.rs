//! Test support: real `redis-server` / `redis-sentinel` processes on free loopback ports.
//!
//! Every process gets its own temporary directory and is killed (SIGKILL) when dropped.
//! Readiness is waited for by polling the condition itself, never by sleeping a guess.
#![allow(dead_code)]

pub mod app;
pub mod events;
pub mod proxy;
pub mod sentinel_standin;
pub mod serve;
pub mod tls;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Ports a process is tried on before its start fails (see [`RedisProc::start_with`]).
const PORT_TRIES: usize = 20;

/// Longest wait for any condition in a test; generous for a loaded 2-core machine.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// An HTTP client for the tests' requests. reqwest is built without a TLS provider of
/// its own (the library hands it aws-lc-rs), so the process default is installed first.
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::new()
}

/// Polls `check` until it returns `Some`, panicking with `what` after [`PATIENCE`].
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Async version of [`wait_for`].
pub async fn wait_for_async<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// One Redis or Sentinel process.
pub struct RedisProc {
    /// Its port.
    pub port: u16,
    /// Its working directory (config, logs).
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    args: Vec<String>,
    sentinel: bool,
    password: Option<String>,
}

impl RedisProc {
    /// A plain Redis server.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A Redis server with extra `redis-server` arguments (`--requirepass x`, …).
    pub fn start_with(extra: &[&str]) -> Self {
        let args: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let password = args
            .iter()
            .position(|a| a == "--requirepass")
            .map(|i| args[i + 1].clone());
        // `free_port` hands a port out before anything binds it, so another test's process
        // may take it first: then this one exits, and another port is tried.
        for _ in 0..PORT_TRIES {
            let mut proc = Self {
                port: free_port(),
                dir: tempfile::tempdir().expect("tempdir"),
                child: None,
                args: args.clone(),
                sentinel: false,
                password: password.clone(),
            };
            if proc.start_and_wait() {
                return proc;
            }
        }
        panic!("no free port in {PORT_TRIES} tries");
    }

    /// A server listening only with TLS on its port (see [`tls::Pki`]).
    pub fn start_tls(pki: &tls::Pki) -> Self {
        // Another port when this one was taken first (see `start_with`). Readiness is the
        // server's own log line: a plain client cannot ask a TLS-only server for its pid.
        for _ in 0..PORT_TRIES {
            let port = free_port();
            let mut proc = Self {
                port,
                dir: tempfile::tempdir().expect("tempdir"),
                child: None,
                args: vec![
                    "--port".into(),
                    "0".into(),
                    "--tls-port".into(),
                    port.to_string(),
                    "--tls-cert-file".into(),
                    path(&pki.server_cert),
                    "--tls-key-file".into(),
                    path(&pki.server_key),
                    "--tls-ca-cert-file".into(),
                    path(&pki.ca_cert),
                    "--tls-auth-clients".into(),
                    "yes".into(),
                ],
                sentinel: false,
                password: None,
            };
            proc.spawn_process();
            let log_path = proc.dir.path().join("redis.log");
            let child = proc.child.as_mut().expect("just spawned");
            let ready = wait_for(&format!("TLS redis on port {port}"), || {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if log.contains("Ready to accept connections") {
                    return Some(true);
                }
                matches!(child.try_wait(), Ok(Some(_))).then_some(false)
            });
            if ready {
                return proc;
            }
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            assert!(
                log.contains("Address already in use"),
                "TLS redis on port {port} exited:\n{log}"
            );
        }
        panic!("no free port in {PORT_TRIES} tries");
    }

    /// A Sentinel monitoring `master_port` as `mymaster`, quorum 2.
    pub fn sentinel(master_port: u16) -> Self {
        // Another port when this one was taken first (see `start_with`).
        for _ in 0..PORT_TRIES {
            let mut proc = Self {
                port: free_port(),
                dir: tempfile::tempdir().expect("tempdir"),
                child: None,
                args: Vec::new(),
                sentinel: true,
                password: None,
            };
            proc.write_sentinel_conf(master_port);
            if proc.start_and_wait() {
                return proc;
            }
        }
        panic!("no free port in {PORT_TRIES} tries");
    }

    fn write_sentinel_conf(&self, master_port: u16) {
        let conf = format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\n\
             sentinel monitor mymaster 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds mymaster 1000\n\
             sentinel failover-timeout mymaster 10000\n\
             sentinel parallel-syncs mymaster 1\n",
            port = self.port,
            dir = self.dir.path().display(),
        );
        std::fs::write(self.dir.path().join("sentinel.conf"), conf).expect("sentinel.conf");
    }

    fn spawn_process(&mut self) {
        let dir = self.dir.path();
        let log = std::fs::File::create(dir.join("redis.log")).expect("log file");
        let mut cmd = if self.sentinel {
            let mut c = Command::new("redis-sentinel");
            c.arg(dir.join("sentinel.conf"));
            c
        } else {
            let mut c = Command::new("redis-server");
            c.args(["--port", &self.port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir);
            c
        };
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        self.child = Some(
            cmd.spawn()
                .expect("redis-server is installed (bash scripts/test.sh installs it)"),
        );
    }

    /// Starts the process and waits until it answers on its port. False when it exited
    /// first because another process holds the port; any other exit fails the test with
    /// the process's log.
    fn start_and_wait(&mut self) -> bool {
        self.spawn_process();
        let port = self.port;
        let client = self.raw_client(self.password.as_deref());
        let child = self.child.as_mut().expect("just spawned");
        // The answer must come from this process, not from one that held the port first.
        let pid = format!("process_id:{}", child.id());
        let ready = wait_for(&format!("redis on port {port}"), || {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(false);
            }
            let mut conn = client.get_connection().ok()?;
            let info: String = redis::cmd("INFO").arg("server").query(&mut conn).ok()?;
            info.lines().any(|l| l.trim() == pid).then_some(true)
        });
        if !ready {
            let log =
                std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
            assert!(
                log.contains("Address already in use"),
                "redis on port {port} exited:\n{log}"
            );
        }
        ready
    }

    fn raw_client(&self, password: Option<&str>) -> redis::Client {
        let url = match password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        };
        redis::Client::open(url).expect("client")
    }

    /// A synchronous admin connection (with the current password, if any).
    pub fn conn(&self) -> redis::Connection {
        self.raw_client(self.password.as_deref())
            .get_connection()
            .expect("admin connection")
    }

    /// Records a changed `requirepass`, so [`RedisProc::conn`] keeps working.
    pub fn set_password(&mut self, password: &str) {
        self.password = Some(password.to_owned());
    }

    /// Kills the process with SIGKILL and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process (SIGSTOP): connections stay open and nothing is answered.
    pub fn pause(&mut self) {
        self.signal("-STOP");
    }

    /// Lets a [`RedisProc::pause`]d process run again (SIGCONT).
    pub fn resume(&mut self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the process is running");
        let status = std::process::Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Starts the process again on the same port, after [`RedisProc::kill`].
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port;
        assert!(
            self.start_and_wait(),
            "port {port} was taken before the restart"
        );
    }

    /// The server's `ROLE` (`master`, `slave`, `sentinel`).
    pub fn role(&self) -> Option<String> {
        let mut conn = self
            .raw_client(self.password.as_deref())
            .get_connection()
            .ok()?;
        let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn).ok()?;
        match role.first()? {
            redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            redis::Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// One field of `INFO`.
    pub fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let mut conn = self
            .raw_client(self.password.as_deref())
            .get_connection()
            .ok()?;
        let info: String = redis::cmd("INFO").arg(section).query(&mut conn).ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .map(|v| v.trim().to_owned())
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A master, two replicas and three Sentinels (quorum 2), all on loopback.
pub struct SentinelGroup {
    /// Data nodes; index 0 starts as master.
    pub nodes: Vec<RedisProc>,
    /// The Sentinels.
    pub sentinels: Vec<RedisProc>,
}

impl SentinelGroup {
    /// Starts the group and waits until every Sentinel knows both replicas and the other
    /// Sentinels, so a failover can be agreed.
    pub fn start() -> Self {
        let master = RedisProc::start();
        let mut nodes = vec![master];
        for _ in 0..2 {
            let replica = RedisProc::start_with(&["--replica-announce-ip", "127.0.0.1"]);
            let mut conn = replica.conn();
            let _: () = redis::cmd("REPLICAOF")
                .arg("127.0.0.1")
                .arg(nodes[0].port)
                .query(&mut conn)
                .expect("REPLICAOF");
            nodes.push(replica);
        }
        for replica in &nodes[1..] {
            wait_for("replica link up", || {
                (replica.info_field("replication", "master_link_status")? == "up").then_some(())
            });
        }
        let sentinels: Vec<_> = (0..3).map(|_| RedisProc::sentinel(nodes[0].port)).collect();
        for s in &sentinels {
            wait_for("Sentinel to discover replicas and peers", || {
                let mut conn = s.conn();
                let replicas: Vec<redis::Value> = redis::cmd("SENTINEL")
                    .arg("REPLICAS")
                    .arg("mymaster")
                    .query(&mut conn)
                    .ok()?;
                let peers: Vec<redis::Value> = redis::cmd("SENTINEL")
                    .arg("SENTINELS")
                    .arg("mymaster")
                    .query(&mut conn)
                    .ok()?;
                (replicas.len() == 2 && peers.len() == 2).then_some(())
            });
        }
        Self { nodes, sentinels }
    }

    /// `host:port` of every Sentinel.
    pub fn sentinel_nodes(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect()
    }

    /// The port Sentinel currently names as master.
    pub fn sentinel_master_port(&self) -> Option<u16> {
        let s = self.sentinels.iter().find(|s| s.child.is_some())?;
        let mut conn = s.conn();
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg("mymaster")
            .query(&mut conn)
            .ok()?;
        Some(port)
    }

    /// Asks Sentinel `index` to fail `mymaster` over now (`SENTINEL FAILOVER`).
    pub fn failover_through(&self, index: usize) {
        let mut conn = self.sentinels[index].conn();
        let () = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg("mymaster")
            .query(&mut conn)
            .unwrap();
    }

    /// Index of the node with `port`.
    pub fn index_of(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .expect("known node")
    }
}

/// Every key of the current database with its contents (strings, hash values, set and
/// sorted-set members), one per line: what someone holding a dump of Redis would see.
pub fn dump_keys(conn: &mut redis::Connection) -> String {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(conn).unwrap();
    let mut dump = String::new();
    for key in &keys {
        dump.push_str(key);
        dump.push('\n');
        let kind: String = redis::cmd("TYPE").arg(key).query(conn).unwrap();
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![redis::cmd("GET").arg(key).query(conn).unwrap()],
            "hash" => redis::cmd("HVALS").arg(key).query(conn).unwrap(),
            "set" => redis::cmd("SMEMBERS").arg(key).query(conn).unwrap(),
            "zset" => redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query(conn)
                .unwrap(),
            other => panic!("unexpected key type {other} at {key}"),
        };
        for value in values {
            dump.push_str(&String::from_utf8_lossy(&value));
            dump.push('\n');
        }
    }
    dump
}

/// Path of the built `blinkchamber` binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_blinkchamber"))
}

/// Which store a conformance test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Store {
    /// The embedded memory backend.
    Memory,
    /// A real `redis-server` started for the test.
    Redis,
}

/// Runs the same async tests on both stores: `conformance!(fixture_fn; test_a, test_b)`
/// generates `memory::test_a`, `redis::test_a`, … where each calls
/// `test_a(&fixture_fn(Store::…).await)`. The fixture keeps any Redis process alive.
#[macro_export]
macro_rules! conformance {
    ($fixture:ident; $($test:ident),+ $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let fixture = super::$fixture($crate::support::Store::Memory).await;
                    super::$test(&fixture).await;
                }
            )+
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let fixture = super::$fixture($crate::support::Store::Redis).await;
                    super::$test(&fixture).await;
                }
            )+
        }
    };
}
