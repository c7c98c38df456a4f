//! Processes and what /proc says of them: the gateway beside the bench, its CPU and
//! memory, its API.

use crate::cli::*;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn sibling(name: &str) -> Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} not found: build with `cargo build --release`",
            path.display()
        );
    }
    Ok(path)
}

pub fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32, tps: f64) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Ok((fields[11].parse::<f64>()? + fields[12].parse::<f64>()?) / tps)
}

/// Resident memory of a process, MiB.
pub fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")?;
    Ok(kib / 1024.0)
}

pub fn start_gateway(
    width: u32,
    height: u32,
    cli: &Cli,
    settings: GatewaySettings,
    dir: &std::path::Path,
) -> Result<Process> {
    let GatewaySettings {
        passthrough,
        rtp,
        hls,
        record,
    } = settings;
    let record = match record {
        Record::Off => String::new(),
        Record::Local => {
            "[record]\nenabled = true\nformat = \"mp4\"\ndir = \"recordings\"\n".into()
        }
        Record::Upload => format!(
            "[record]\nenabled = true\nformat = \"mp4\"\ndir = \"recordings\"\n\
             upload_url = \"s3://bench/recordings\"\n\
             upload_endpoint = \"http://127.0.0.1:{S3_PORT}\"\n"
        ),
    };
    let record = record.replace(
        "dir = \"recordings\"",
        &format!("dir = \"{}\"", dir.join("recordings").display()),
    );
    let mode = if passthrough { "auto" } else { "always" };
    let root = std::env::current_dir()?;
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{HTTP_PORT}\"\nwww_dir = \"{root}/www\"\n\
             [rtp]\nenabled = {rtp}\nport_base = {RTP_BASE}\n\
             [hls]\nenabled = {hls}\nlinger_s = 0\n\
             [transcode]\nmode = \"{mode}\"\nwidth = {width}\nheight = {height}\nx264_preset = \"{preset}\"\n\
             encoder_threads = {threads}\njitter_buffer_ms = {JITTER_BUFFER_MS}\n\
             video_bitrate_kbps = {BITRATE_KBPS}\npipelines_dir = \"{root}/pipelines\"\n\
             [webrtc]\nbind_address = \"127.0.0.1\"\n[limits]\nmax_publishers = 512\n{record}",
            root = root.display(),
            preset = cli.preset,
            threads = cli.encoder_threads,
        ),
    )?;
    spawn_gateway(&config)
}

/// Starts the release gateway with `config` and waits for it to listen on `HTTP_PORT`.
pub fn spawn_gateway(config: &std::path::Path) -> Result<Process> {
    // WEBRTC_GATEWAY_BENCH_LOG=FILE keeps the gateway's log (at RUST_LOG, or debug for
    // the gateway), to see what happened in a step.
    let (level, stderr) = match std::env::var_os("WEBRTC_GATEWAY_BENCH_LOG") {
        Some(path) => (
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,webrtc_gateway=debug".into()),
            Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        ),
        None => ("warn".to_string(), Stdio::null()),
    };
    let child = Command::new(sibling("webrtc-gateway")?)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", level)
        // The credentials of the S3-compatible store that `--upload` starts.
        .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()?;
    listening(Process(child), HTTP_PORT, "the gateway")
}

/// `process` once it accepts connections on loopback `port` (10 s at most).
pub fn listening(process: Process, port: u16, what: &str) -> Result<Process> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(process);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not start")
}

/// The release gateway with its defaults on the bench's ports; its configuration file
/// is `dir/NAME.toml`.
pub fn start_default_gateway(dir: &std::path::Path, name: &str) -> Result<Process> {
    let root = std::env::current_dir()?;
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{HTTP_PORT}\"\nwww_dir = \"{root}/www\"\n\
             [rtp]\nport_base = {RTP_BASE}\n\
             [transcode]\npipelines_dir = \"{root}/pipelines\"\n\
             [webrtc]\nbind_address = \"127.0.0.1\"\n",
            root = root.display(),
        ),
    )?;
    spawn_gateway(&config)
}

pub async fn api(path: &str) -> Result<Value> {
    let (mut socket, _) = tokio::net::TcpStream::connect(("127.0.0.1", HTTP_PORT))
        .await
        .map(|s| (s, ()))?;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    socket
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n").as_bytes())
        .await?;
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP body")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("{}", head.lines().next().unwrap_or_default());
    }
    Ok(serde_json::from_str(body).unwrap_or(Value::String(body.to_string())))
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default()
}
