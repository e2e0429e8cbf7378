//! Helpers for the end-to-end tests on real services: one test's names and settings
//! ([`RealEnv`]), SQL and Redis probes, and a TCP proxy that cuts a service off on demand.

use super::cli_env;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Names and settings of one test: its own topic prefix, Redis prefix and device ids, so tests
/// share the services without seeing each other.
pub struct RealEnv {
    pub tag: String,
    vars: Vec<(String, String)>,
    db: String,
    base: String,
}

impl Drop for RealEnv {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                self.base.as_str(),
                "-Atqc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db),
            ])
            .output();
        // This test's keys in the shared Redis (its own prefix).
        if let Some((_, url)) = self.vars.iter().find(|(k, _)| k == "IOTSTREAM_CACHE_URL") {
            let script = format!(
                "redis-cli -u '{url}' --scan --pattern '{}:*' | xargs -r redis-cli -u '{url}' del >/dev/null",
                self.tag
            );
            let _ = Command::new("sh").args(["-c", &script]).output();
        }
    }
}

fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .args([url, "-Atqc", sql])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn need(var: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            panic!("{var} is not set: run through `scripts/services run -- cargo test ...` or ./scripts/test")
        })
}

impl RealEnv {
    pub fn new(name: &str) -> RealEnv {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let tag = format!("{name}-{:x}-{:x}", std::process::id(), nanos % 0xffff_ffff);
        // A database of its own: the outbox is shared by every notify of a database, and each
        // test has its own webhook receiver.
        let base = need("IOTSTREAM_TEST_DATABASE_URL");
        let db = format!("e2e_{}", tag.replace('-', "_"));
        psql(&base, &format!("CREATE DATABASE {db}"));
        let (server, _) = base.rsplit_once('/').expect("a database URL ends in /name");
        let mut vars = vec![
            ("IOTSTREAM_BUS_URL".to_owned(), need("IOTSTREAM_TEST_BUS_URL")),
            ("IOTSTREAM_DATABASE_URL".to_owned(), format!("{server}/{db}")),
            ("IOTSTREAM_CACHE_URL".to_owned(), need("IOTSTREAM_TEST_CACHE_URL")),
            ("IOTSTREAM_KAFKA_TOPIC_PREFIX".to_owned(), format!("{tag}.")),
            ("IOTSTREAM_KAFKA_GROUP_PREFIX".to_owned(), format!("{tag}.")),
            ("IOTSTREAM_REDIS_PREFIX".to_owned(), format!("{tag}:")),
            (
                "IOTSTREAM_LOG".to_owned(),
                // More detail when chasing a failure (e.g. `warn,iotstream=debug`).
                std::env::var("IOTSTREAM_TEST_LOG").unwrap_or_else(|_| "warn,iotstream=info".to_owned()),
            ),
        ];
        if cfg!(feature = "cosmos") {
            vars.push((
                "IOTSTREAM_TELEMETRY_STORE_URL".to_owned(),
                need("IOTSTREAM_TEST_TELEMETRY_STORE_URL"),
            ));
            vars.push((
                "IOTSTREAM_COSMOS_KEY".to_owned(),
                need("IOTSTREAM_TEST_COSMOS_KEY"),
            ));
            vars.push((
                "IOTSTREAM_COSMOS_DATABASE".to_owned(),
                need("IOTSTREAM_TEST_COSMOS_DATABASE"),
            ));
        }
        RealEnv { tag, vars, db, base }
    }

    /// Replaces (or adds) one setting.
    pub fn set(&mut self, name: &str, value: String) {
        self.vars.retain(|(k, _)| k != name);
        self.vars.push((name.to_owned(), value));
    }

    pub fn env(&self) -> Vec<(&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    pub fn var(&self, name: &str) -> &str {
        &self.vars.iter().find(|(k, _)| k == name).expect("set").1
    }

    pub fn device(&self, n: &str) -> String {
        format!("{n}-{}", self.tag)
    }

    /// Provisions a device through the CLI (on PostgreSQL) and returns a SAS token for it.
    pub fn provision(&self, data: &Path, device: &str) -> String {
        let (ok, _, err) = cli_env(data, &["devices", "add", device], &self.env());
        assert!(ok, "devices add {device}: {err}");
        let (ok, token, err) = cli_env(data, &["devices", "token", device, "--ttl", "1d"], &self.env());
        assert!(ok, "devices token {device}: {err}");
        token.trim().to_owned()
    }

    /// One SQL query's rows as text (psql), for assertions.
    pub fn sql(&self, query: &str) -> Vec<String> {
        let out = Command::new("psql")
            .args([self.var("IOTSTREAM_DATABASE_URL"), "-Atqc", query])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Readings counted in `device`'s 1-minute temperature windows (each analysed reading once).
    pub fn counted(&self, device: &str) -> i64 {
        self.sql(&format!(
            "SELECT COALESCE(SUM(count), 0) FROM window_aggregates WHERE device_id = '{device}' AND metric = 'temperature' AND window_ms = 60000"
        ))[0]
            .parse()
            .unwrap()
    }

    /// One Redis command's output lines (redis-cli), for assertions.
    pub fn redis(&self, args: &[&str]) -> Vec<String> {
        redis_at(self.var("IOTSTREAM_CACHE_URL"), args)
    }
}

pub async fn post(client: &reqwest::Client, url: &str, token: &str, body: &Value) -> u16 {
    client
        .post(format!("{url}/api/telemetry"))
        .header("Authorization", token)
        .json(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

pub async fn eventually<T>(secs: u64, what: &str, f: impl FnMut() -> Option<T>) -> T {
    eventually_or(secs, f, || what.to_owned()).await
}

/// [`eventually`], with what it waited for described only when it times out (e.g. from the
/// state it found then).
pub async fn eventually_or<T>(secs: u64, mut f: impl FnMut() -> Option<T>, what: impl Fn() -> String) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {}",
            what()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TCP proxy in front of a service: `down` resets every connection and refuses new ones
/// (like a network partition or a crashed server), `up` lets them through again.
pub struct Proxy {
    pub port: u16,
    open: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(target: &str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (o, c, target) = (open.clone(), conns.clone(), target.to_owned());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !o.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                c.lock().unwrap().push(task);
            }
        });
        Proxy { port, open, conns }
    }

    pub fn down(&self) {
        self.open.store(false, Ordering::SeqCst);
        for t in self.conns.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    pub fn up(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// One Redis command's output lines at `url` (redis-cli).
pub fn redis_at(url: &str, args: &[&str]) -> Vec<String> {
    let out = Command::new("redis-cli")
        .args(["-u", url])
        .args(args)
        .output()
        .expect("redis-cli runs");
    assert!(
        out.status.success(),
        "redis-cli: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `host:port` of a `scheme://[user@]host:port/...` URL.
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap().to_owned()
}

/// `url` with its `host:port` replaced.
pub fn via(url: &str, host_port_now: &str) -> String {
    url.replacen(&host_port(url), host_port_now, 1)
}
