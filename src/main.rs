//! `iotstream`: the binary. Parses the command line, builds the configuration once, and runs.

mod app;
mod cli;
mod devices;
mod http;
mod replay;
mod secrets;
mod serve;
mod sim_cmd;
mod simulate;
mod workers;

use anyhow::{Context, bail};
use clap::Parser;
use cli::{Cli, Command, DevicesCommand, FunctionName, StateArgs, UpArgs};
use iotstream_backends::BackendUrls;
use iotstream_core::DeviceId;
use iotstream_core::rules::Rules;
use std::process::ExitCode;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IOTSTREAM_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => up(cli.up, app::Functions::ALL).await,
        Some(Command::Up(args)) => up(args, app::Functions::ALL).await,
        Some(Command::Run(args)) => {
            let mut f = app::Functions::NONE;
            for name in &args.functions {
                match name {
                    FunctionName::Ingest => f.ingest = true,
                    FunctionName::Analyze => f.analyze = true,
                    FunctionName::Process => f.process = true,
                    FunctionName::Notify => f.notify = true,
                    FunctionName::Web => f.web = true,
                }
            }
            if args.up.simulate > 0 && !f.ingest {
                bail!("--simulate sends to this process's ingest: add `ingest` to the functions");
            }
            up(args.up, f).await
        }
        Some(Command::Serve(args)) => serve_cmd(args).await,
        Some(Command::Devices(args)) => devices_cmd(args.command).await,
        Some(Command::Simulate(args)) => sim_cmd::run(args).await,
        Some(Command::Replay { file, rules, scores }) => {
            let rules = load_rules(rules.as_deref())?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            replay::run(&file, rules, scores, &mut out)?;
            std::io::Write::flush(&mut out)?;
            Ok(())
        }
        Some(Command::Migrate(state)) => {
            let backends = iotstream_backends::connect(&state.data_dir, &urls(&state)).await?;
            app::migrate(&backends).await?;
            println!("migrated: topics telemetry, insights, alerts; tables of every configured store");
            Ok(())
        }
    }
}

fn urls(s: &StateArgs) -> BackendUrls {
    BackendUrls {
        bus: s.bus_url.clone(),
        telemetry_store: s.telemetry_store_url.clone(),
        database: s.database_url.clone(),
        cache: s.cache_url.clone(),
        settings: BackendUrls::settings_from_env(),
    }
}

fn parse_retention(text: &str) -> anyhow::Result<Duration> {
    let ms = iotstream_core::ts::parse_duration_ms(text)
        .filter(|ms| *ms >= 60_000)
        .with_context(|| format!("--retention {text:?}: use a duration of at least 1m, like 12h or 7d"))?;
    Ok(Duration::from_millis(ms as u64))
}

fn load_rules(path: Option<&std::path::Path>) -> anyhow::Result<Rules> {
    let Some(path) = path else {
        return Ok(Rules::defaults());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read rules file {}", path.display()))?;
    Rules::from_toml(&text).map_err(|errs| {
        let list: Vec<String> = errs.iter().map(|e| format!("rule {e}")).collect();
        anyhow::anyhow!("invalid rules file {}: {}", path.display(), list.join("; "))
    })
}

/// The webhook retry policy: the default backoff, with `IOTSTREAM_WEBHOOK_MAX_ATTEMPTS` (a
/// whole number of at least 1; unset or empty = the default 12) attempts before a dead letter.
fn retry_policy(max_attempts: Option<&str>) -> anyhow::Result<iotstream_notify::RetryPolicy> {
    let mut policy = iotstream_notify::RetryPolicy::default();
    if let Some(v) = max_attempts.map(str::trim).filter(|v| !v.is_empty()) {
        policy.max_attempts = v.parse().ok().filter(|n| *n >= 1).with_context(|| {
            format!("IOTSTREAM_WEBHOOK_MAX_ATTEMPTS must be a whole number of at least 1, not {v:?}")
        })?;
    }
    Ok(policy)
}

/// The configuration `up`, `run` and `serve` share; true when the admin token was generated.
fn config(
    state: &StateArgs,
    rules: Option<&std::path::Path>,
    retention: &str,
    device_rate_limit: u32,
    functions: app::Functions,
) -> anyhow::Result<(app::Config, bool)> {
    let data_dir = state.data_dir.clone();
    let rules = load_rules(rules)?;
    let (admin_token, generated) = secrets::admin_token(&data_dir)?;
    let webhook = match std::env::var("IOTSTREAM_WEBHOOK_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        None => None,
        Some(url) => {
            let secret = std::env::var("IOTSTREAM_WEBHOOK_SECRET").unwrap_or_default();
            if secret.is_empty() {
                tracing::warn!("IOTSTREAM_WEBHOOK_SECRET is not set: webhook signatures use an empty key");
            }
            Some(app::Webhook {
                url,
                secret: secrets::Secret::from(secret.into_bytes()),
            })
        }
    };
    let cfg = app::Config {
        functions,
        urls: urls(state),
        master_key: secrets::master_key(&data_dir)?,
        max_in_flight_readings: 200_000,
        retention: parse_retention(retention)?,
        data_dir,
        rules,
        webhook,
        device_rate_limit,
        retry: retry_policy(std::env::var("IOTSTREAM_WEBHOOK_MAX_ATTEMPTS").ok().as_deref())?,
        checkpoint_every: Duration::from_secs(1),
        admin_token,
    };
    Ok((cfg, generated))
}

/// `serve`: the custom handler on the port the Functions host gave it, until SIGTERM.
async fn serve_cmd(args: cli::ServeArgs) -> anyhow::Result<()> {
    let Some(port) = args.port else {
        bail!(
            "serve is the Functions host's custom handler: the host sets FUNCTIONS_CUSTOMHANDLER_PORT (to run it by hand, pass --port)"
        );
    };
    if !args
        .state
        .bus_url
        .as_deref()
        .is_some_and(|u| u.trim().starts_with("kafka"))
    {
        bail!(
            "serve needs IOTSTREAM_BUS_URL (kafka://...): the Functions host's Kafka triggers read the topics ingest writes, and cannot read the embedded log"
        );
    }
    let (cfg, _) = config(
        &args.state,
        args.rules.as_deref(),
        &args.retention,
        args.device_rate_limit,
        app::Functions::NONE,
    )?;
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let ops = match args.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (IOTSTREAM_METRICS_LISTEN)"))?,
        ),
        None => None,
    };
    let (pipeline, handler) = serve::start(cfg).await?;
    println!(
        "iotstream serve: custom handler at http://{listen} (/ingest, /analyze, /process, /process-alerts, /notify)"
    );
    if let Some(ops) = ops {
        let addr = ops.local_addr().context("the metrics address")?;
        // The operations routes of every runner (no function's routes): scrape and probes.
        let router = http::router_for(pipeline.state.clone(), app::Functions::NONE);
        tokio::spawn(async move {
            if let Err(e) = axum::serve(ops, router).await {
                tracing::error!("the metrics listener stopped: {e}");
            }
        });
        println!("iotstream serve: /metrics, /healthz and /readyz at http://{addr}");
    }
    let stop = pipeline.stopper();
    axum::serve(listener, serve::router(handler))
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            // Invocations waiting on a backend that is down give up (the host delivers again).
            stop();
        })
        .await?;
    tracing::info!("stopping: finishing current invocations");
    pipeline.shutdown().await;
    Ok(())
}

/// `up` (every function) and `run FUNCTION...` (some).
async fn up(args: UpArgs, functions: app::Functions) -> anyhow::Result<()> {
    let (cfg, generated) = config(
        &args.state,
        args.rules.as_deref(),
        &args.retention,
        args.device_rate_limit,
        functions,
    )?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    // Port 0 asks the system for a free port: everything printed names the one it gave.
    let listen = listener.local_addr().context("the listening address")?;
    let pipeline = app::Pipeline::start(cfg.clone()).await?;
    if args.simulate > 0 {
        let url = format!("http://{listen}");
        simulate::start(
            args.simulate,
            url,
            pipeline.state.devices(),
            cfg.master_key.clone(),
        )
        .await?;
        println!(
            "simulating {} devices (sim-1 ... sim-{}), one reading per second each",
            args.simulate, args.simulate
        );
    }
    if functions == app::Functions::ALL {
        let demo = demo_token(&pipeline.state, &cfg, listen).await?;
        print_banner(listen, &cfg, generated, demo.as_deref());
    } else {
        println!(
            "iotstream run {} at http://{} (/healthz, /readyz, /metrics)",
            functions.names(),
            listen
        );
    }
    let router = http::router_for(pipeline.state.clone(), functions);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("stopping: finishing current batches");
    pipeline.shutdown().await;
    Ok(())
}

/// The demo device of the banner: `demo-1` is provisioned on a first start (an empty registry),
/// so the printed curl command works as is; a 24-hour token is printed while it exists.
async fn demo_token(
    state: &app::AppState,
    cfg: &app::Config,
    listen: std::net::SocketAddr,
) -> anyhow::Result<Option<String>> {
    let registry = state.devices();
    let id = DeviceId::parse("demo-1").expect("valid id");
    if registry.list_devices().await?.is_empty() {
        devices::provision(&registry, &cfg.master_key, &id).await?;
    }
    if registry.get_device(&id).await?.is_none() {
        return Ok(None);
    }
    Ok(Some(
        devices::token(&registry, &cfg.master_key, &id, "24h", &listen.to_string()).await?,
    ))
}

fn print_banner(listen: std::net::SocketAddr, cfg: &app::Config, generated: bool, demo: Option<&str>) {
    let url = format!("http://{listen}");
    let token = String::from_utf8_lossy(cfg.admin_token.expose());
    let dd = cfg.data_dir.display();
    let saved = if generated {
        " (generated, saved in the data dir)"
    } else {
        ""
    };
    println!("iotstream is up at {url}  (data: {dd}, embedded defaults unless backend URLs are set)");
    println!("admin token{saved}: {token}");
    println!("dashboard: {url}/#token={token}");
    println!();
    if let Some(sas) = demo {
        println!("send a reading as device demo-1 (token valid 24 h):");
        println!(
            "  curl -i {url}/api/telemetry -H 'Authorization: {sas}' \\\n       -H 'Content-Type: application/json' -d '{{\"deviceId\":\"demo-1\",\"metrics\":{{\"temperature\":85.5}}}}'"
        );
        println!();
    }
    println!("add your own device and get a token for it:");
    println!("  iotstream devices add pump-1 --data-dir {dd}");
    println!("  iotstream devices token pump-1 --data-dir {dd}");
    println!("see the alerts:");
    println!("  curl -s {url}/api/alerts -H 'Authorization: Bearer {token}'");
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

async fn devices_cmd(cmd: DevicesCommand) -> anyhow::Result<()> {
    let state = cmd.state().clone();
    let registry = iotstream_backends::connect_registry(&state.data_dir, &urls(&state)).await?;
    let master = secrets::master_key(&state.data_dir)?;
    let parse = |id: &str| DeviceId::parse(id).map_err(|m| anyhow::anyhow!("invalid device id {id:?}: {m}"));
    match cmd {
        DevicesCommand::Add { id, json, .. } => {
            let id = parse(&id)?;
            let Some(p) = devices::provision(&registry, &master, &id).await? else {
                bail!("device {id} already exists (use `devices token {id}` for a token)")
            };
            if json {
                println!("{}", serde_json::to_string(&p)?);
            } else {
                println!("added {}\nprimary key: {}", p.device_id, p.primary_key);
            }
        }
        DevicesCommand::List { json, .. } => {
            let list = registry.list_devices().await?;
            if json {
                println!("{}", serde_json::to_string(&list)?);
            } else if list.is_empty() {
                println!("no devices (add one with `iotstream devices add ID`)");
            } else {
                for d in list {
                    println!("{}\tadded {}", d.device_id, d.created_at);
                }
            }
        }
        DevicesCommand::Remove { id, .. } => {
            let id = parse(&id)?;
            if !registry.remove_device(&id).await? {
                bail!("no device {id}");
            }
            println!("removed {id}");
        }
        DevicesCommand::Token { id, ttl, host, .. } => {
            let id = parse(&id)?;
            println!("{}", devices::token(&registry, &master, &id, &ttl, &host).await?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod retry_policy_tests {
    use super::retry_policy;

    #[test]
    fn max_attempts_comes_from_the_environment_or_defaults_to_12() {
        assert_eq!(retry_policy(None).unwrap().max_attempts, 12);
        assert_eq!(retry_policy(Some("")).unwrap().max_attempts, 12);
        let p = retry_policy(Some(" 3 ")).unwrap();
        assert_eq!(p.max_attempts, 3);
        assert_eq!(p.base_ms, 1_000, "only the attempt count changes");
        for bad in ["0", "-1", "many", "2.5"] {
            let e = retry_policy(Some(bad)).unwrap_err().to_string();
            assert!(
                e.contains("IOTSTREAM_WEBHOOK_MAX_ATTEMPTS") && e.contains(bad),
                "{e}"
            );
        }
    }
}
