//! Wiring: configuration in, a running pipeline out. Built once in `main` and passed down.

use crate::secrets::Secret;
use crate::workers;
use anyhow::Context;
use iotstream_backends::{BackendUrls, Backends};
use iotstream_core::Ts;
use iotstream_core::ports::{Cache, DeviceRegistry, Outbox, ResultsStore};
use iotstream_core::reading::Limits;
use iotstream_core::rules::Rules;
use iotstream_core::{groups, topics};
use iotstream_ingest::{DeviceKeys, GroupCommitter, RateLimiter};
use iotstream_notify::RetryPolicy;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// Which functions a process runs: all of them (`up`), or those named to `run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Functions {
    pub ingest: bool,
    pub analyze: bool,
    pub process: bool,
    pub notify: bool,
    pub web: bool,
}

impl Functions {
    pub const ALL: Functions = Functions {
        ingest: true,
        analyze: true,
        process: true,
        notify: true,
        web: true,
    };
    pub const NONE: Functions = Functions {
        ingest: false,
        analyze: false,
        process: false,
        notify: false,
        web: false,
    };

    /// The names, comma separated, for logs.
    pub fn names(&self) -> String {
        let all = [
            (self.ingest, "ingest"),
            (self.analyze, "analyze"),
            (self.process, "process"),
            (self.notify, "notify"),
            (self.web, "web"),
        ];
        let on: Vec<&str> = all.iter().filter(|(b, _)| *b).map(|(_, n)| *n).collect();
        on.join(",")
    }
}

/// Everything `up` needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// The functions this process runs.
    pub functions: Functions,
    pub data_dir: PathBuf,
    pub urls: BackendUrls,
    pub rules: Rules,
    pub webhook: Option<Webhook>,
    pub device_rate_limit: u32,
    pub retry: RetryPolicy,
    /// How often analyze checkpoints its state (and commits offsets).
    pub checkpoint_every: Duration,
    pub admin_token: Secret,
    pub master_key: Secret,
    /// Readings accepted but not yet durable, across all requests; past it, ingest answers 503.
    pub max_in_flight_readings: usize,
    /// How long the embedded store keeps readings.
    pub retention: Duration,
}

#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: String,
    pub secret: Secret,
}

/// Shared state of the HTTP handlers.
pub struct AppState {
    pub backends: Backends,
    pub ingest: iotstream_ingest::Deps,
    pub admin_token: Secret,
    pub master_key: Secret,
    pub metrics: PrometheusHandle,
    pub notify_wake: Arc<Notify>,
    /// Listeners of `GET /api/stream` and the poller that feeds them.
    pub live: crate::http::stream::Hub,
}

impl AppState {
    pub fn devices(&self) -> Arc<dyn DeviceRegistry> {
        self.backends.devices.clone()
    }

    pub fn results(&self) -> Arc<dyn ResultsStore> {
        self.backends.results.clone()
    }

    pub fn cache(&self) -> Arc<dyn Cache> {
        self.backends.cache.clone()
    }

    pub fn outbox(&self) -> Arc<dyn Outbox> {
        self.backends.outbox.clone()
    }

    /// Tells the webhook delivery loop that the outbox has something new.
    pub fn wake_notifier(&self) {
        self.notify_wake.notify_one();
    }

    /// Consumer lag per group, as KEDA would read it, into the metrics.
    pub async fn record_lag(&self) {
        for (group, topic) in [
            (groups::ANALYZE, topics::TELEMETRY),
            (groups::PROCESS, topics::INSIGHTS),
            (groups::NOTIFY, topics::ALERTS),
        ] {
            if let Ok(lag) = self.backends.bus.lag(group, topic).await {
                metrics::gauge!("iotstream_consumer_lag", "group" => group, "topic" => topic).set(lag as f64);
            }
        }
    }
}

/// The process-wide Prometheus recorder (installed once, shared by every pipeline in a process).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            prometheus()
                .install_recorder()
                .unwrap_or_else(|_| prometheus().build_recorder().handle())
        })
        .clone()
}

/// Bucket bounds (seconds) of `iotstream_alert_delay_seconds`, around the 250 ms target.
const ALERT_DELAY_BUCKETS: [f64; 16] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
];

/// The exporter's settings. The alert delay is a histogram, not the default summary: a summary's
/// quantiles cover a rolling window and were seen to miss the samples of a burst (its mean above
/// its reported maximum), and histograms add up across replicas (`histogram_quantile`).
fn prometheus() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("iotstream_alert_delay_seconds".into()),
            &ALERT_DELAY_BUCKETS,
        )
        .expect("bucket bounds are not empty")
}

/// A running pipeline: the HTTP state plus the background workers.
pub struct Pipeline {
    pub state: Arc<AppState>,
    shutdown: Arc<watch::Sender<bool>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Pipeline {
    /// Opens the backends named by `cfg` (see [`iotstream_backends::connect`]) and starts on them.
    pub async fn start(cfg: Config) -> anyhow::Result<Pipeline> {
        let backends = iotstream_backends::connect(&cfg.data_dir, &cfg.urls)
            .await
            .context("cannot open the backends")?;
        Self::start_with(backends, cfg).await
    }

    /// Starts on backends that are already open (`cfg.data_dir` and `cfg.urls` are not used):
    /// for callers that decorate the ports, e.g. tests that inject faults.
    pub async fn start_with(backends: Backends, cfg: Config) -> anyhow::Result<Pipeline> {
        migrate(&backends).await?;
        let committer = GroupCommitter::spawn(backends.sink.clone(), 20_000, cfg.max_in_flight_readings);
        let ingest = iotstream_ingest::Deps {
            keys: DeviceKeys::new(backends.devices.clone(), cfg.master_key.expose().to_vec()),
            committer,
            limiter: RateLimiter::new(cfg.device_rate_limit),
            limits: Limits::default(),
            max_body_bytes: 1 << 20,
        };
        let state = Arc::new(AppState {
            backends,
            ingest,
            admin_token: cfg.admin_token.clone(),
            master_key: cfg.master_key.clone(),
            metrics: metrics_handle(),
            notify_wake: Arc::new(Notify::new()),
            live: Default::default(),
        });
        let (shutdown, rx) = watch::channel(false);
        let tasks = workers::spawn_all(&state, &cfg, rx).await?;
        Ok(Pipeline {
            state,
            shutdown: Arc::new(shutdown),
            tasks,
        })
    }

    /// Turns true when the pipeline is asked to stop (for tasks started beside the workers).
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Asks every task to stop, without waiting (e.g. before the HTTP server drains its requests,
    /// so a request waiting on a backend that is down gives up).
    pub fn stopper(&self) -> impl Fn() + Send + Sync + 'static {
        let shutdown = self.shutdown.clone();
        move || {
            let _ = shutdown.send(true);
        }
    }

    /// A task [`Pipeline::shutdown`] waits for, like the workers.
    pub fn add_task(&mut self, task: JoinHandle<()>) {
        self.tasks.push(task);
    }

    /// Stops the workers: each finishes its current batch, commits, and (analyze) checkpoints.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Creates topics (and, through `connect`, tables). Idempotent.
pub async fn migrate(backends: &Backends) -> anyhow::Result<()> {
    for topic in [topics::TELEMETRY, topics::INSIGHTS, topics::ALERTS] {
        backends
            .bus
            .ensure_topic(topic)
            .await
            .with_context(|| format!("cannot create topic {topic}"))?;
    }
    Ok(())
}

pub fn now() -> Ts {
    crate::http::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every alert delay lands in a bucket: none is lost, however bursty, and the count up to
    /// 250 ms is read off one line.
    #[test]
    fn alert_delays_are_exported_as_a_histogram_with_the_target_as_a_bound() {
        let recorder = prometheus().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            for d in [0.02, 0.2, 0.26, 3.0] {
                metrics::histogram!("iotstream_alert_delay_seconds", "stage" => "delivered").record(d);
            }
        });
        let text = handle.render();
        let line = |le: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with(&format!(
                        "iotstream_alert_delay_seconds_bucket{{stage=\"delivered\",le=\"{le}\"}}"
                    ))
                })
                .unwrap_or_else(|| panic!("no bucket {le} in {text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_owned()
        };
        assert_eq!(line("0.25"), "2");
        assert_eq!(line("+Inf"), "4");
    }
}
