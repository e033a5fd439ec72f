//! A stand-in Sentinel: speaks enough RESP to answer what the test tells it to, so tests can
//! put a lagging or lying Sentinel in front of real ones.
//!
//! It answers `PING`, `SENTINEL MASTER <name>` and `SENTINEL GET-MASTER-ADDR-BY-NAME
//! <name>` with the master and config epoch it was given, `SUBSCRIBE` (keeping the
//! connection for [`SentinelStandIn::announce`]), and an error to anything else.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

struct State {
    master: Mutex<(u16, u64)>,
    asked: AtomicUsize,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Vec<u8>>>>,
}

/// A running stand-in; stops accepting when dropped.
pub struct SentinelStandIn {
    /// Its port on 127.0.0.1.
    pub port: u16,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SentinelStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SentinelStandIn {
    /// Names `127.0.0.1:master_port` as master `mymaster` at `config_epoch`.
    pub async fn start(master_port: u16, config_epoch: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            master: Mutex::new((master_port, config_epoch)),
            asked: AtomicUsize::new(0),
            subscribers: Mutex::default(),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, shared.clone()));
            }
        });
        Self { port, state, task }
    }

    /// How many `SENTINEL MASTER` / `GET-MASTER-ADDR-BY-NAME` questions it answered.
    pub fn asked(&self) -> usize {
        self.state.asked.load(Ordering::SeqCst)
    }

    /// Publishes `+switch-master mymaster … 127.0.0.1 <to>` to its subscribers.
    pub fn announce(&self, from: u16, to: u16) {
        let payload = format!("mymaster 127.0.0.1 {from} 127.0.0.1 {to}");
        let frame = array(&["message", "+switch-master", &payload]);
        let subscribers = self.state.subscribers.lock().unwrap();
        for s in subscribers.iter() {
            let _ = s.send(frame.clone());
        }
    }

    /// Subscribers connected now.
    pub fn subscribers(&self) -> usize {
        let mut subscribers = self.state.subscribers.lock().unwrap();
        subscribers.retain(|s| !s.is_closed());
        subscribers.len()
    }
}

fn bulk(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(format!("${}\r\n{s}\r\n", s.len()).as_bytes());
}

fn array(items: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", items.len()).into_bytes();
    for item in items {
        bulk(&mut out, item);
    }
    out
}

async fn serve(socket: tokio::net::TcpStream, state: Arc<State>) {
    let (read, mut write) = socket.into_split();
    let mut read = BufReader::new(read);
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    loop {
        tokio::select! {
            command = read_command(&mut read) => {
                let Some(command) = command else { return };
                let reply = answer(&command, &state, &tx);
                if write.write_all(&reply).await.is_err() {
                    return;
                }
            }
            Some(pushed) = rx.recv() => {
                if write.write_all(&pushed).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn answer(command: &[String], state: &State, tx: &mpsc::UnboundedSender<Vec<u8>>) -> Vec<u8> {
    let upper: Vec<String> = command.iter().map(|c| c.to_ascii_uppercase()).collect();
    let (port, epoch) = *state.master.lock().unwrap();
    match upper.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["PING", ..] => b"+PONG\r\n".to_vec(),
        ["SENTINEL", "MASTER", _] => {
            state.asked.fetch_add(1, Ordering::SeqCst);
            let (port, epoch) = (port.to_string(), epoch.to_string());
            array(&[
                "name",
                "mymaster",
                "ip",
                "127.0.0.1",
                "port",
                &port,
                "flags",
                "master",
                "config-epoch",
                &epoch,
            ])
        }
        ["SENTINEL", "GET-MASTER-ADDR-BY-NAME", _] => {
            state.asked.fetch_add(1, Ordering::SeqCst);
            array(&["127.0.0.1", &port.to_string()])
        }
        ["SUBSCRIBE", ..] => {
            state.subscribers.lock().unwrap().push(tx.clone());
            let mut out = Vec::new();
            for channel in &command[1..] {
                out.extend_from_slice(b"*3\r\n");
                bulk(&mut out, "subscribe");
                bulk(&mut out, channel);
                out.extend_from_slice(b":1\r\n");
            }
            out
        }
        _ => b"-ERR unknown command\r\n".to_vec(),
    }
}

/// One command: an array of bulk strings. `None` at end of stream or on garbage.
async fn read_command<R: tokio::io::AsyncBufRead + Unpin>(read: &mut R) -> Option<Vec<String>> {
    let mut line = String::new();
    if read.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let n: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
    let mut parts = Vec::with_capacity(n);
    for _ in 0..n {
        line.clear();
        read.read_line(&mut line).await.ok()?;
        let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
        let mut data = vec![0; len + 2];
        read.read_exact(&mut data).await.ok()?;
        data.truncate(len);
        parts.push(String::from_utf8_lossy(&data).into_owned());
    }
    Some(parts)
}
