//! HTTP rows: `serve`'s router on a loopback port, driven over keep-alive HTTP/1.1
//! connections (one per task, like `wrk -c`), each row beside the library call it wraps,
//! measured in the same round.
//!
//! The load generator writes prebuilt requests and reads each answer by its
//! `Content-Length`, so its own cost stays far below the server's.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

use super::{Row, measure};
use crate::cache::SetOptions;
use crate::config::Config;
use crate::server::{self, AppState};
use crate::session::SessionKind;

/// The bearer token of the benchmark server.
const TOKEN: &str = "bench-http-token";

/// Row names.
pub const HEALTHZ: &str = "HTTP GET /healthz";
const L1: &str = "HTTP cache get, L1 hit";
const L1_LIB: &str = "library cache get, L1 hit";
const L2: &str = "HTTP cache get, L2 hit (L1 off)";
const L2_LIB: &str = "library cache get, L2 hit (L1 off)";
const LIMIT: &str = "HTTP rate-limit check";
const LIMIT_LIB: &str = "library rate-limit check";
const SESSION: &str = "HTTP session get";
const SESSION_LIB: &str = "library session get";
const PUBLISH: &str = "HTTP event publish (one event)";
const PUBLISH_LIB: &str = "library event publish (one event)";

/// A `serve` router on a loopback port, stopped when dropped.
struct Server {
    addr: SocketAddr,
    state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    async fn start(yaml: &str) -> anyhow::Result<Self> {
        let config = Config::from_yaml(yaml, Path::new("bench.yaml"))?;
        let state = AppState::from_config(config).await?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server::run(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            state,
            stop: Some(stop),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The config of the benchmark servers on `redis`, keys under `prefix`.
fn config(host: &str, port: u16, prefix: &str, token_file: &Path, l1: bool) -> String {
    let l1 = if l1 { "" } else { "  l1: { maxEntries: 0 }\n" };
    format!(
        "backend: redis
redis: {{ host: {host}, port: {port} }}
server:
  auth:
    tokens: {{ valueFromFile: {token} }}
cache:
  keyPrefix: \"{prefix}cache:\"
{l1}sessions:
  keyPrefix: \"{prefix}session:\"
rateLimit:
  keyPrefix: \"{prefix}rl:\"
  rules:
    - {{ name: bench, descriptor: [user], limit: 1000000000, period: 1m }}
events:
  enabled: true
  types: []
  queues:
    high_priority: \"{prefix}ev:high\"
    normal_priority: \"{prefix}ev:normal\"
    low_priority: \"{prefix}ev:low\"
    dead_letter: \"{prefix}ev:dead\"
    state_prefix: \"{prefix}ev:state:\"
  sinks: {{ log: false }}
",
        token = token_file.display()
    )
}

/// An open connection and its read buffer.
type Connection = (TcpStream, Vec<u8>);

/// One keep-alive connection per task.
struct Connections {
    addr: SocketAddr,
    slots: Vec<Mutex<Option<Connection>>>,
}

impl Connections {
    fn new(addr: SocketAddr, concurrency: usize) -> Arc<Self> {
        Arc::new(Self {
            addr,
            slots: (0..concurrency).map(|_| Mutex::new(None)).collect(),
        })
    }

    /// Sends `request` on task `task`'s connection; the answer's status, or `None` when
    /// the connection failed (it is opened again next time).
    async fn send(&self, task: usize, request: &[u8]) -> Option<u16> {
        let mut slot = self.slots[task].lock().await;
        if slot.is_none() {
            let stream = TcpStream::connect(self.addr).await.ok()?;
            let _ = stream.set_nodelay(true);
            *slot = Some((stream, Vec::with_capacity(4096)));
        }
        let (stream, buf) = slot.as_mut()?;
        let answer = exchange(stream, buf, request).await;
        if answer.is_none() {
            *slot = None;
        }
        answer
    }
}

/// Writes `request` and reads one answer (headers, then `Content-Length` bytes).
async fn exchange(stream: &mut TcpStream, buf: &mut Vec<u8>, request: &[u8]) -> Option<u16> {
    stream.write_all(request).await.ok()?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).ok()?;
            let status = head.get(9..12)?.parse().ok()?;
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(status);
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// An HTTP/1.1 request with the bearer token.
fn request(method: &str, path: &str, headers: &str, body: &str) -> Vec<u8> {
    let body_headers = if body.is_empty() {
        String::new()
    } else {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )
    };
    format!(
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {TOKEN}\r\n\
         {headers}{body_headers}\r\n{body}"
    )
    .into_bytes()
}

/// Requests `make(task, seq)` over `connections`; counts answers other than `expect`.
async fn http_row<F>(
    name: &str,
    connections: Arc<Connections>,
    concurrency: usize,
    duration: Duration,
    expect: u16,
    make: F,
) -> Row
where
    F: Fn(usize, u64) -> Vec<u8> + Send + Sync + 'static,
{
    let unexpected = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = unexpected.clone();
    let make = Arc::new(make);
    let row = measure(name, concurrency, duration, move |task, seq| {
        let (connections, make, unexpected) = (connections.clone(), make.clone(), seen.clone());
        async move {
            if connections.send(task, &make(task, seq)).await != Some(expect) {
                unexpected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    })
    .await;
    let wrong = unexpected.load(std::sync::atomic::Ordering::Relaxed);
    if wrong > 0 {
        eprintln!("{name}: {wrong} answers were not {expect}");
    }
    row
}

/// Keys the cache rows spread over.
const KEYS: u64 = 1000;
/// Sessions the session rows spread over.
const SESSIONS: usize = 1000;

/// The HTTP rows and their library rows, on the Redis at `host:port`.
pub async fn http_rows(
    raw: MultiplexedConnection,
    (host, port): (&str, u16),
    concurrency: usize,
    duration: Duration,
    prefix: &str,
) -> Vec<Row> {
    let prefix = format!("{prefix}http:");
    let rows = match rows(host, port, concurrency, duration, &prefix).await {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("HTTP rows skipped: {e:#}");
            Vec::new()
        }
    };
    super::events::cleanup(raw, &prefix).await;
    rows
}

async fn rows(
    host: &str,
    port: u16,
    concurrency: usize,
    duration: Duration,
    prefix: &str,
) -> anyhow::Result<Vec<Row>> {
    let dir = tempfile_dir()?;
    let token_file = dir.join("token");
    std::fs::write(&token_file, TOKEN)?;
    let with_l1 = Server::start(&config(host, port, prefix, &token_file, true)).await?;
    let without_l1 = Server::start(&config(host, port, prefix, &token_file, false)).await?;
    let runtime = with_l1.state.runtime.clone();
    let cache = runtime.cache().clone();
    let value = json!({"name": "Ada Lovelace", "roles": ["admin"], "org": "o-1"});
    for k in 0..KEYS {
        cache
            .set("bench", &format!("k{k}"), &value, SetOptions::default())
            .await?;
    }
    let sessions = runtime.sessions().clone();
    let mut ids = Vec::with_capacity(SESSIONS);
    for i in 0..SESSIONS {
        let s = sessions
            .create(
                &format!("user-{}", i % 100),
                SessionKind::User,
                json!({"roles": ["viewer"], "org": "o-1"}),
            )
            .await?;
        ids.push(s.id);
    }
    let ids = Arc::new(ids);
    let key = |task: usize, seq: u64| (task as u64 * 7919 + seq) % KEYS;
    let (c, d) = (concurrency, duration);
    let mut rows = Vec::new();

    let conns = Connections::new(with_l1.addr, c);
    rows.push(
        http_row(HEALTHZ, conns.clone(), c, d, 200, |_, _| {
            b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n".to_vec()
        })
        .await,
    );

    // Warm L1 on the first server, then read through it and through the library.
    for k in 0..KEYS {
        let _ = cache.get_json("bench", &format!("k{k}")).await;
    }
    rows.extend(cache_pair((L1_LIB, L1), cache.clone(), conns.clone(), c, d).await);
    let no_l1 = without_l1.state.runtime.cache().clone();
    let conns_no_l1 = Connections::new(without_l1.addr, c);
    rows.extend(cache_pair((L2_LIB, L2), no_l1, conns_no_l1, c, d).await);

    let limits = runtime.limits().clone();
    rows.push(
        measure(LIMIT_LIB, c, d, move |task, seq| {
            let limits = limits.clone();
            async move {
                let _ = limits
                    .check("bench", &format!("u{}", key(task, seq)), 1)
                    .await;
            }
        })
        .await,
    );
    rows.push(
        http_row(LIMIT, conns.clone(), c, d, 200, move |task, seq| {
            request(
                "POST",
                "/v1/ratelimit/check",
                "",
                &format!(r#"{{"rule":"bench","key":"u{}"}}"#, key(task, seq)),
            )
        })
        .await
        .against(LIMIT_LIB),
    );

    let lib_ids = ids.clone();
    rows.push(
        measure(SESSION_LIB, c, d, move |task, seq| {
            let (sessions, ids) = (sessions.clone(), lib_ids.clone());
            async move {
                let _ = sessions.get(&ids[key(task, seq) as usize]).await;
            }
        })
        .await,
    );
    rows.push(
        http_row(SESSION, conns.clone(), c, d, 200, move |task, seq| {
            request(
                "GET",
                "/v1/session",
                &format!("Session-Id: {}\r\n", ids[key(task, seq) as usize]),
                "",
            )
        })
        .await
        .against(SESSION_LIB),
    );

    if let Some(events) = runtime.events() {
        let publisher = events.publisher().clone();
        rows.push(
            measure(PUBLISH_LIB, c, d, move |task, seq| {
                let publisher = publisher.clone();
                async move {
                    let _ = publisher.try_publish_many(vec![event(task, seq)]).await;
                }
            })
            .await,
        );
        rows.push(
            http_row(PUBLISH, conns, c, d, 202, move |task, seq| {
                request(
                    "POST",
                    "/v1/events",
                    "",
                    &serde_json::to_string(&event(task, seq)).unwrap_or_default(),
                )
            })
            .await
            .against(PUBLISH_LIB),
        );
    }
    drop((with_l1, without_l1));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(rows)
}

/// A cache read through the library, then the same read over HTTP.
async fn cache_pair(
    (library, http): (&str, &str),
    cache: crate::cache::Cache,
    connections: Arc<Connections>,
    concurrency: usize,
    duration: Duration,
) -> [Row; 2] {
    let key = |task: usize, seq: u64| format!("k{}", (task as u64 * 7919 + seq) % KEYS);
    let library_row = measure(library, concurrency, duration, move |task, seq| {
        let cache = cache.clone();
        async move {
            let _ = cache.get_json("bench", &key(task, seq)).await;
        }
    })
    .await;
    let http_row = http_row(
        http,
        connections,
        concurrency,
        duration,
        200,
        move |task, seq| {
            request(
                "GET",
                &format!("/v1/cache/bench/{}", key(task, seq)),
                "",
                "",
            )
        },
    )
    .await
    .against(library);
    [library_row, http_row]
}

fn event(task: usize, seq: u64) -> crate::events::Event {
    let mut event = super::events::bench_event(seq);
    event.id = format!("http-{task}-{seq}");
    event
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("blinkchamber-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// `L1 over HTTP / /healthz` from a table's rows, the HTTP path's own overhead.
pub fn l1_to_healthz(rows: &[Row]) -> Option<f64> {
    let find = |name: &str| rows.iter().find(|r| r.name == name).map(|r| r.ops_per_sec);
    Some(find(L1)? / find(HEALTHZ)?)
}
