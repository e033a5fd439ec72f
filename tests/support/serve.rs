//! `blinkchamber` as a child process: config files, `serve` on free ports, requests to
//! it, SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

use super::{free_port, wait_for, wait_for_async};

/// The binary under test, with no `BLINKCHAMBER_…` variables inherited from the caller.
pub fn blinkchamber() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_blinkchamber"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("BLINKCHAMBER_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("BLINKCHAMBER_LOG", "info");
    cmd
}

/// Runs `blinkchamber ARGS` to completion.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = blinkchamber();
    cmd.args(args).envs(env.iter().copied());
    cmd.output().expect("run blinkchamber")
}

/// A YAML file in `dir`.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

/// A running `blinkchamber serve`, killed when dropped.
pub struct Served {
    /// `http://127.0.0.1:PORT` of the API.
    pub api: String,
    /// `http://127.0.0.1:PORT` of the metrics listener.
    pub metrics: String,
    /// Where its stderr (the logs) goes.
    pub log: PathBuf,
    child: Option<Child>,
}

impl Served {
    /// Starts `serve` with `config` plus `extra` arguments on free ports (set through
    /// `BLINKCHAMBER_SERVER__…` overrides) and waits for `/healthz`.
    pub async fn start(dir: &Path, config: &str, extra: &[&str]) -> Self {
        let (api_port, metrics_port) = (free_port(), free_port());
        let file = write(dir, "serve.yaml", config);
        let log = dir.join("serve.log");
        let child = blinkchamber()
            .arg("serve")
            .arg("--config")
            .arg(&file)
            .args(extra)
            .env(
                "BLINKCHAMBER_SERVER__LISTEN",
                format!("127.0.0.1:{api_port}"),
            )
            .env(
                "BLINKCHAMBER_SERVER__METRICS_LISTEN",
                format!("127.0.0.1:{metrics_port}"),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn serve");
        let served = Self {
            api: format!("http://127.0.0.1:{api_port}"),
            metrics: format!("http://127.0.0.1:{metrics_port}"),
            log,
            child: Some(child),
        };
        let client = super::http();
        let url = format!("{}/healthz", served.api);
        wait_for_async("serve to answer /healthz", || {
            let request = client.get(&url).send();
            async { request.await.ok().filter(|r| r.status().is_success()) }
        })
        .await;
        served
    }

    /// The Prometheus text of its metrics listener.
    pub async fn metrics_text(&self) -> String {
        super::http()
            .get(format!("{}/metrics", self.metrics))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// Everything logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("still running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        wait_for("serve to exit after SIGTERM", || {
            child.try_wait().ok().flatten()
        })
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends `request` to a served process: status, headers and JSON body (`null` when there
/// is none).
pub async fn send(request: reqwest::RequestBuilder) -> (StatusCode, HeaderMap, Value) {
    let response = request.send().await.expect("request to serve");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

/// Status and body of a problem-details answer of a served process: checks the content
/// type, that `status` matches the answer's and that `type` and `title` are there.
pub async fn problem(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        content_type.starts_with(super::app::PROBLEM),
        "content-type {content_type}"
    );
    let body: Value = response.json().await.expect("problem JSON");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(
        body["type"].is_string() && body["title"].is_string(),
        "{body}"
    );
    (status, body)
}
