//! Helpers for end-to-end tests of the real `iotstream` binary: start and kill it, run its CLI,
//! and receive its webhooks on a local HTTP server.
#![allow(dead_code)]

pub mod real;
#[cfg(all(feature = "kafka", feature = "postgres", feature = "redis"))]
pub mod workload;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const ADMIN: &str = "e2e-admin-token-0123456789";
pub const SECRET: &str = "e2e-webhook-secret";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_iotstream")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a CLI command; returns (exit success, stdout, stderr).
pub fn cli(data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    cli_env(data_dir, args, &[])
}

/// [`cli`] with extra environment variables (e.g. backend URLs).
pub fn cli_env(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(bin())
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env("IOTSTREAM_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The URL the child says it listens at (`iotstream is up at http://…`, `iotstream run … at
/// http://…`), read from its stdout, which is drained afterwards so it never blocks (the lines
/// after it are kept in `printed`). A server on `--listen 127.0.0.1:0` takes a port no other
/// test can take between a pick and a bind.
fn announced_url(child: &mut Child, printed: Arc<Mutex<Vec<String>>>) -> String {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(at) = line.find(" at http://")
                && let Some(tx) = tx.take()
            {
                let url = line[at + 4..].split_whitespace().next().unwrap_or_default();
                let _ = tx.send(url.to_owned());
            } else if tx.is_none() {
                printed.lock().unwrap().push(line);
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(url) => url,
        Err(e) => {
            let _ = child.kill();
            panic!("iotstream did not say where it listens ({e}): {:?}", child.wait())
        }
    }
}

/// A running `iotstream up`.
pub struct Server {
    pub child: Child,
    pub url: String,
    /// What it printed on stdout after saying where it listens.
    pub printed: Arc<Mutex<Vec<String>>>,
    pub data_dir: PathBuf,
    pub client: reqwest::Client,
}

impl Server {
    pub async fn start(data_dir: &Path, extra: &[&str], webhook: Option<&str>) -> Server {
        Self::start_with_env(data_dir, extra, webhook, &[]).await
    }

    /// Like [`Server::start`], with extra environment variables.
    pub async fn start_with_env(
        data_dir: &Path,
        extra: &[&str],
        webhook: Option<&str>,
        env: &[(&str, &str)],
    ) -> Server {
        Self::spawn(&["up"], data_dir, extra, webhook, env).await
    }

    /// `iotstream run FUNCTIONS...` (ready once `/healthz` answers).
    pub async fn run(
        functions: &[&str],
        data_dir: &Path,
        webhook: Option<&str>,
        env: &[(&str, &str)],
    ) -> Server {
        let mut sub = vec!["run"];
        sub.extend_from_slice(functions);
        Self::spawn(&sub, data_dir, &[], webhook, env).await
    }

    async fn spawn(
        sub: &[&str],
        data_dir: &Path,
        extra: &[&str],
        webhook: Option<&str>,
        env: &[(&str, &str)],
    ) -> Server {
        let mut cmd = Command::new(bin());
        cmd.args(sub)
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("IOTSTREAM_ADMIN_TOKEN", ADMIN)
            .env("IOTSTREAM_LOG", "warn")
            .env("IOTSTREAM_DEVICE_RATE_LIMIT", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .envs(env.iter().copied());
        if let Some(url) = webhook {
            cmd.env("IOTSTREAM_WEBHOOK_URL", url)
                .env("IOTSTREAM_WEBHOOK_SECRET", SECRET);
        }
        let mut child = cmd.spawn().unwrap();
        let printed = Arc::new(Mutex::new(Vec::new()));
        let url = announced_url(&mut child, printed.clone());
        let server = Server {
            child,
            url,
            printed,
            data_dir: data_dir.to_path_buf(),
            // Generous: the Cosmos DB test server scans every document it holds for a query,
            // which after a few runs against the same services took over 10 s once.
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = server.client.get(format!("{}/healthz", server.url)).send().await
                && r.status().is_success()
            {
                return server;
            }
            assert!(Instant::now() < deadline, "iotstream did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `body` as `device`, with a token from the CLI; returns the HTTP status.
    pub async fn send_as(&self, device: &str, body: &Value) -> u16 {
        let (_, token, _) = cli(&self.data_dir, &["devices", "token", device]);
        let r = self
            .client
            .post(format!("{}/api/telemetry", self.url))
            .header("Authorization", token.trim())
            .json(body)
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    }

    /// SIGTERM, then waits for the exit: the graceful shutdown (finish and commit the current
    /// batch, save checkpoints, leave the consumer group).
    pub fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "a graceful stop exits 0: {exit}");
    }

    /// SIGKILL: no shutdown code runs.
    /// The status of `GET /readyz`.
    pub async fn readyz(&self) -> u16 {
        self.client
            .get(format!("{}/readyz", self.url))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    pub async fn get(&self, path: &str) -> Value {
        let r = self
            .client
            .get(format!("{}{path}", self.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    pub async fn post_admin(&self, path: &str) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// Polls until `done` holds, failing after `secs`.
    pub async fn eventually(&self, path: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.get(path).await;
            if done(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting on {path}: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One webhook request as received.
#[derive(Debug, Clone)]
pub struct Hook {
    pub event: String,
    pub delivery: String,
    pub signature_ok: bool,
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
}

/// A local webhook receiver. `fail_first` makes it answer 500 to that many requests first.
#[derive(Clone, Default)]
pub struct Receiver {
    /// Requests answered 2xx.
    pub hooks: Arc<Mutex<Vec<Hook>>>,
    /// Requests answered 500 (the first `fail_first`).
    pub failed: Arc<Mutex<Vec<Hook>>>,
    pub fail_first: Arc<Mutex<usize>>,
}

impl Receiver {
    pub async fn start(fail_first: usize) -> (Receiver, String) {
        let rx = Receiver {
            fail_first: Arc::new(Mutex::new(fail_first)),
            ..Default::default()
        };
        let app = axum::Router::new()
            .route("/hook", post(receive))
            .with_state(rx.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (rx, format!("http://{addr}/hook"))
    }

    pub fn hooks(&self) -> Vec<Hook> {
        self.hooks.lock().unwrap().clone()
    }

    pub fn failed(&self) -> Vec<Hook> {
        self.failed.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the receiver, failing after `secs`.
    pub async fn wait_for(&self, secs: u64, what: &str, done: impl Fn(&Receiver) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(State(rx): State<Receiver>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let signature_ok =
        h("x-iotstream-signature") == iotstream_core::model::webhook_signature(SECRET.as_bytes(), &body);
    let hook = Hook {
        event: h("x-iotstream-event"),
        delivery: h("x-iotstream-delivery"),
        signature_ok,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        at: Instant::now(),
    };
    {
        let mut fail = rx.fail_first.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            rx.failed.lock().unwrap().push(hook);
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
    }
    rx.hooks.lock().unwrap().push(hook);
    StatusCode::NO_CONTENT
}
