//! The command line (CONTRACT §1).

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "iotstream",
    version,
    about = "Ingest IoT telemetry, detect anomalies, raise alerts — in one binary",
    args_conflicts_with_subcommands = true,
    long_about = "Ingest IoT telemetry, detect anomalies, raise alerts.\n\nWith no subcommand, runs `up`: the whole pipeline on the embedded default (no external services)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub up: UpArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the whole pipeline (ingest, analyze, process, notify, web) in one process.
    Up(UpArgs),
    /// Run only the named functions (what one AKS Deployment runs): HTTP for ingest and web,
    /// consumers of the bus for analyze, process and notify; /healthz, /readyz and /metrics on
    /// --listen in every case. Stops on SIGTERM after finishing and committing the current batch.
    Run(RunArgs),
    /// The Azure Functions custom handler: answers the Functions host's invocations of ingest,
    /// analyze, process and notify on 127.0.0.1:$FUNCTIONS_CUSTOMHANDLER_PORT (host.json starts it).
    Serve(ServeArgs),
    /// Provision and manage devices.
    Devices(DevicesArgs),
    /// Create what the configured backends need (tables, topics). Idempotent.
    Migrate(StateArgs),
    /// Synthetic sensors with labelled anomalies: send to an ingest endpoint (--target) or run
    /// through the engine offline (--offline); reports throughput, latency and detection quality.
    Simulate(crate::sim_cmd::SimulateArgs),
    /// Run the analyze engine over recorded telemetry (NDJSON, JSON or CSV) and print what it finds.
    Replay {
        /// NDJSON readings, a JSON array, saved pages of GET /api/devices/{id}/readings, or CSV (`-`: stdin):
        /// timestamp,value[,deviceId,metric] or a column per metric (time column timestamp, ts,
        /// time, _time or datetime; RFC 3339, YYYY-MM-DD HH:MM:SS, epoch ms or epoch seconds).
        file: std::path::PathBuf,
        /// Rules file (TOML); built-in defaults when unset.
        #[arg(long, env = "IOTSTREAM_RULES")]
        rules: Option<std::path::PathBuf>,
        /// Also write each reading's anomaly score (0-1) per metric.
        #[arg(long)]
        scores: bool,
    },
}

/// Where state lives: `--data-dir` for the embedded engines, or backend URLs (CONTRACT §3).
#[derive(Args, Debug, Clone)]
pub struct StateArgs {
    /// Directory of the embedded engines' files.
    #[arg(long, env = "IOTSTREAM_DATA_DIR", default_value = "./.iotstream")]
    pub data_dir: PathBuf,
    /// Event bus: `kafka://host:port[,host:port]`; embedded durable log when unset.
    #[arg(long, env = "IOTSTREAM_BUS_URL", hide_env_values = true)]
    pub bus_url: Option<String>,
    /// Telemetry store: `cosmos://host:port` or `cosmos+https://...`; embedded when unset.
    #[arg(long, env = "IOTSTREAM_TELEMETRY_STORE_URL", hide_env_values = true)]
    pub telemetry_store_url: Option<String>,
    /// Results database: `postgres://...`; embedded SQLite when unset.
    #[arg(long, env = "IOTSTREAM_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Cache: `redis://...`; in-process when unset.
    #[arg(long, env = "IOTSTREAM_CACHE_URL", hide_env_values = true)]
    pub cache_url: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// Address to listen on.
    #[arg(long, env = "IOTSTREAM_LISTEN", default_value = "127.0.0.1:7071")]
    pub listen: SocketAddr,
    /// Rules file (TOML, CONTRACT §5); built-in defaults when unset.
    #[arg(long, env = "IOTSTREAM_RULES")]
    pub rules: Option<PathBuf>,
    /// How long the embedded store keeps readings (e.g. 12h, 7d, 30d); older, analysed data is
    /// deleted in 64 MiB segments.
    #[arg(long, env = "IOTSTREAM_RETENTION", default_value = "7d")]
    pub retention: String,
    /// Also start N simulated devices sending to this server.
    #[arg(long, default_value_t = 0)]
    pub simulate: u32,
    /// Requests per second allowed per device (burst: twice that); 0 for no limit.
    #[arg(long, env = "IOTSTREAM_DEVICE_RATE_LIMIT", default_value_t = 1000)]
    pub device_rate_limit: u32,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The functions to run (several may be given, space or comma separated).
    #[arg(required = true, value_enum, value_delimiter = ',')]
    pub functions: Vec<FunctionName>,
    #[command(flatten)]
    pub up: UpArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// The port the Functions host calls (it sets FUNCTIONS_CUSTOMHANDLER_PORT); the handler
    /// listens on 127.0.0.1 only.
    #[arg(long, env = "FUNCTIONS_CUSTOMHANDLER_PORT")]
    pub port: Option<u16>,
    /// Also serve /metrics, /healthz and /readyz on this address (the Prometheus scrape target
    /// and the probes: the handler's own port is the host's, on 127.0.0.1).
    #[arg(long, env = "IOTSTREAM_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Rules file (TOML, CONTRACT §5); built-in defaults when unset.
    #[arg(long, env = "IOTSTREAM_RULES")]
    pub rules: Option<PathBuf>,
    /// Requests per second allowed per device (burst: twice that); 0 for no limit.
    #[arg(long, env = "IOTSTREAM_DEVICE_RATE_LIMIT", default_value_t = 1000)]
    pub device_rate_limit: u32,
    /// How long finished results (resolved alerts, old windows) are kept (e.g. 7d, 30d).
    #[arg(long, env = "IOTSTREAM_RETENTION", default_value = "7d")]
    pub retention: String,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunctionName {
    Ingest,
    Analyze,
    Process,
    Notify,
    Web,
}

#[derive(Args, Debug)]
pub struct DevicesArgs {
    #[command(subcommand)]
    pub command: DevicesCommand,
}

#[derive(Subcommand, Debug)]
pub enum DevicesCommand {
    /// Provision a device and print its key.
    Add {
        id: String,
        /// Print exactly {"deviceId": "...", "primaryKey": "..."} on one line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// List devices.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Remove a device; its key stops working.
    Remove {
        id: String,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Print a SAS token for a device.
    Token {
        id: String,
        /// Validity, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Host part of the token's resource (any host is accepted).
        #[arg(long, default_value = "iotstream")]
        host: String,
        #[command(flatten)]
        state: StateArgs,
    },
}

impl DevicesCommand {
    pub fn state(&self) -> &StateArgs {
        match self {
            DevicesCommand::Add { state, .. }
            | DevicesCommand::List { state, .. }
            | DevicesCommand::Remove { state, .. }
            | DevicesCommand::Token { state, .. } => state,
        }
    }
}
