//! `webrtc-gateway`: publish from a web browser over WebRTC, play with RTP/SDP players.
//! This file wires the modules together: command line, logging, startup checks, the HTTP
//! server and a clean shutdown on SIGINT/SIGTERM.

#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use webrtc_gateway::config::{Config, ConfigError};
use webrtc_gateway::media::output::hls::HlsStore;
use webrtc_gateway::session::Sessions;
use webrtc_gateway::{gateway, http, media, tls, upload};

/// jemalloc, with its background threads, gives freed memory back to the system: after
/// thousands of clients have come and gone the gateway's memory falls back near where it
/// was (glibc's allocator kept it all; measured by `make bench-abuse`, README "Limits").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "webrtc-gateway", version, about)]
struct Cli {
    /// Configuration file (default: gateway.toml in the working directory, if present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration and print the effective settings as TOML.
    CheckConfig,
}

fn main() -> ExitCode {
    // Before any thread starts (README, "Memory").
    let arenas_capped = webrtc_gateway::memory::configure();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,webrtc=error,rtc=error,webrtc_gateway=info".into()),
        )
        .init();
    if !arenas_capped {
        tracing::warn!("glibc's allocator refused its arena cap (README, \"Memory\")");
    }

    let path = cli.config.clone().unwrap_or_else(|| "gateway.toml".into());
    let config = match Config::load(&path, cli.config.is_some()) {
        Ok(config) => config,
        Err(ConfigError::Invalid(problems)) => {
            for problem in problems {
                eprintln!("{problem}");
            }
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::CheckConfig) = cli.command {
        for warning in config.warnings() {
            eprintln!("warning: {warning}");
        }
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(webrtc_gateway::memory::on_worker_park)
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => {
            runtime.shutdown_timeout(Duration::from_millis(200));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let media = media::PipelineFactory::new(
        &config.transcode.pipelines_dir,
        config.transcode.clone(),
        config.rtp.clone(),
    )?;
    if config.rtp.enabled && !config.rtp.sdp_dir.as_os_str().is_empty() {
        writable_dir(&config.rtp.sdp_dir).context("rtp.sdp_dir")?;
    }
    if config.hls.enabled && !config.hls.dir.as_os_str().is_empty() {
        writable_dir(&config.hls.dir).context("hls.dir")?;
    }
    let hls = HlsStore::new(&config.hls)
        .context("cannot create a temporary directory for HLS (hls.dir)")?;
    if config.record.enabled {
        writable_dir(&config.record.dir).context("record.dir")?;
    }
    let identity = tls::identity(&config.http).context("HTTPS (http.tls_*)")?;
    let listen = config.http.listen;
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen} (http.listen)"))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let gateway = gateway::Gateway::new(config, media, hls)
        .map_err(|e| anyhow::anyhow!("cluster.redis_url: {e}"))?;
    gateway.net.start(local.port())?;
    gateway.spawn_reaper();
    webrtc_gateway::memory::spawn_trimmer();
    gateway.join_cluster().await.map_err(anyhow::Error::msg)?;
    gateway
        .events
        .spawn()
        .context("hooks.events_url: the outbox in record.dir")?;
    if let Some(uploads) = upload::Uploads::new(
        &gateway.config.record,
        gateway.metrics.uploads.clone(),
        gateway.events.clone(),
    )
    .map_err(anyhow::Error::msg)?
    {
        uploads.spawn(Arc::downgrade(&gateway), |gateway, file| {
            gateway.registry().is_recording(file)
        });
    }
    let app = http::router(Sessions::new(gateway.clone()));
    let tls = match &identity {
        Some(identity) => {
            let config = tls::server_config(identity).context("HTTPS (http.tls_*)")?;
            tracing::info!(
                fingerprint = %identity.fingerprint,
                "listening on https://{local} (certificate SHA-256 fingerprint)"
            );
            Some(Arc::new(config))
        }
        None => {
            tracing::info!("listening on http://{local}");
            None
        }
    };
    let limits = http::ConnectionLimits {
        max_connections: gateway.config.limits.max_connections as usize,
        request_timeout: Duration::from_secs(gateway.config.http.request_timeout_s as u64),
    };
    let stop_serving = CancellationToken::new();
    let server = tokio::spawn(http::serve(
        tokio::net::TcpListener::from_std(listener)?,
        app,
        tls,
        limits,
        gateway.clone(),
        stop_serving.clone(),
    ));
    let signal = shutdown_signal().await;
    tracing::info!("{signal}: ending every stream");
    gateway.stop(Duration::from_secs(4)).await;
    gateway.net.stop();
    stop_serving.cancel();
    let _ = server.await;
    tracing::info!("stopped");
    Ok(())
}

/// Creates `dir` when missing and checks that a file can be written in it.
fn writable_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))?;
    tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("directory {} is not writable", dir.display()))?;
    Ok(())
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
