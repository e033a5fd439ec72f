//! A loopback TCP proxy that injects faults between a client and Redis: it passes
//! traffic, delays it, swallows replies while keeping the connection open (the shape of a
//! lost reply or a frozen peer), or resets every connection.
//!
//! The mode applies to open connections at once, so a test can let a command through to
//! Redis and lose only its reply.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Forward both ways.
    Pass = 0,
    /// Forward requests; drop every reply byte (connections stay open).
    SwallowReplies = 1,
    /// Forward after a delay (see [`Proxy::set_delay`]).
    Delay = 2,
    /// Close every connection, open and new.
    Reset = 3,
}

/// A running proxy; stops when dropped.
pub struct Proxy {
    /// The port clients connect to.
    pub port: u16,
    shared: Arc<Shared>,
    _stop: watch::Sender<bool>,
}

struct Shared {
    mode: AtomicU8,
    delay_ms: AtomicU64,
    /// Reply bytes dropped so far.
    swallowed: AtomicU64,
    /// Connections accepted so far.
    accepted: AtomicU64,
    changed: watch::Sender<u8>,
}

impl Shared {
    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            1 => Mode::SwallowReplies,
            2 => Mode::Delay,
            3 => Mode::Reset,
            _ => Mode::Pass,
        }
    }
}

impl Proxy {
    /// A proxy in front of `127.0.0.1:target`, passing traffic.
    pub async fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (changed, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            mode: AtomicU8::new(Mode::Pass as u8),
            delay_ms: AtomicU64::new(0),
            swallowed: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            changed,
        });
        let (stop, mut stopped) = watch::channel(false);
        let s = shared.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((client, _)) = accepted else { continue };
                        s.accepted.fetch_add(1, Ordering::SeqCst);
                        if s.mode() == Mode::Reset {
                            drop(client);
                            continue;
                        }
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                            continue;
                        };
                        tokio::spawn(relay(client, server, s.clone()));
                    }
                    _ = stopped.changed() => return,
                }
            }
        });
        Self {
            port,
            shared,
            _stop: stop,
        }
    }

    /// Switches every connection to `mode`.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.store(mode as u8, Ordering::SeqCst);
        self.shared.changed.send_replace(mode as u8);
    }

    /// The delay of [`Mode::Delay`].
    pub fn set_delay(&self, delay: Duration) {
        self.shared.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    /// Reply bytes dropped so far.
    pub fn swallowed(&self) -> u64 {
        self.shared.swallowed.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

async fn relay(client: TcpStream, server: TcpStream, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut server_rx, mut server_tx) = server.into_split();
    let up_shared = shared.clone();
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if !forward(&up_shared, &mut server_tx, &buf[..n], false).await {
                return;
            }
        }
    };
    let down_shared = shared.clone();
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_rx.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if !forward(&down_shared, &mut client_tx, &buf[..n], true).await {
                return;
            }
        }
    };
    let mut changed = shared.changed.subscribe();
    let reset = async move {
        loop {
            if *changed.borrow_and_update() == Mode::Reset as u8 {
                return;
            }
            if changed.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    // Whichever ends first closes both halves (dropping them).
    tokio::select! {
        () = up => {}
        () = down => {}
        () = reset => {}
    }
}

/// Forwards `bytes` as the mode says; `false` when the connection should close.
async fn forward(
    shared: &Shared,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    bytes: &[u8],
    reply: bool,
) -> bool {
    match shared.mode() {
        Mode::Reset => return false,
        Mode::SwallowReplies if reply => {
            shared
                .swallowed
                .fetch_add(bytes.len() as u64, Ordering::SeqCst);
            return true;
        }
        Mode::Delay => {
            let ms = shared.delay_ms.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        _ => {}
    }
    to.write_all(bytes).await.is_ok()
}
