//! Processes and what /proc says of them: the gateway beside the bench, its CPU and
//! memory, its API.

use crate::cli::*;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
pub use webrtc_gateway_testkit::Process;
use webrtc_gateway_testkit::servers::{S3_ACCESS_KEY, S3_BUCKET, S3_SECRET_KEY};

/// A program of the workspace beside the bench (the release gateway, the publisher).
pub fn sibling(name: &str) -> Result<PathBuf> {
    Ok(webrtc_gateway_testkit::binary(name)?)
}

/// The test publisher to the signalling socket at `ws_url`, as a tokio child.
pub fn publisher(ws_url: &str, stream: &str, args: &[&str]) -> Result<tokio::process::Command> {
    let mut command = tokio::process::Command::from(webrtc_gateway_testkit::publisher_command(
        ws_url, stream, args,
    )?);
    command.env("RUST_LOG", "error").kill_on_drop(true);
    Ok(command)
}

/// The process id of a started process.
pub fn pid(process: &Process) -> Result<u32> {
    process.pid().context("the process is not running")
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
    cli: &Options,
    settings: GatewaySettings,
    dir: &std::path::Path,
) -> Result<Process> {
    start_gateway_with(width, height, cli, settings, dir, &crate::cli::ice_ports())
}

/// `start_gateway` with `ice` as the `[webrtc]` lines of its ICE ports.
pub fn start_gateway_with(
    width: u32,
    height: u32,
    cli: &Options,
    settings: GatewaySettings,
    dir: &std::path::Path,
    ice: &str,
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
             upload_url = \"s3://{S3_BUCKET}/bench\"\n\
             upload_endpoint = \"http://127.0.0.1:{s3_port}\"\n",
            s3_port = S3_STORE_PORT
                .get()
                .context("the S3 store has not started")?,
        ),
    };
    let record = record.replace(
        "dir = \"recordings\"",
        &format!("dir = \"{}\"", dir.join("recordings").display()),
    );
    let mode = if passthrough { "auto" } else { "always" };
    let root = webrtc_gateway_testkit::root();
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{http_port}\"\nwww_dir = \"{root}/www\"\n\
             [rtp]\nenabled = {rtp}\nport_base = {rtp_base}\n\
             [hls]\nenabled = {hls}\nlinger_s = 0\n\
             [transcode]\nmode = \"{mode}\"\nwidth = {width}\nheight = {height}\nx264_preset = \"{preset}\"\n\
             encoder_threads = {threads}\njitter_buffer_ms = {JITTER_BUFFER_MS}\n\
             video_bitrate_kbps = {BITRATE_KBPS}\npipelines_dir = \"{root}/pipelines\"\n\
             [webrtc]\nbind_address = \"127.0.0.1\"\n{ice_ports}[limits]\nmax_publishers = 512\n{record}",
            root = root.display(),
            ice_ports = ice,
            http_port = http_port(),
            rtp_base = rtp_base(),
            preset = cli.preset,
            threads = cli.encoder_threads,
        ),
    )?;
    spawn_gateway(&config)
}

/// Starts the release gateway with `config` and waits for it to listen on its port.
pub fn spawn_gateway(config: &std::path::Path) -> Result<Process> {
    spawn_gateway_on(config, http_port(), "the gateway")
}

/// Starts the release gateway with `config` and waits for it to listen on `port`.
pub fn spawn_gateway_on(config: &std::path::Path, port: u16, what: &str) -> Result<Process> {
    // WEBRTC_GATEWAY_BENCH_LOG=FILE keeps the gateway's log (at RUST_LOG, or debug for
    // the gateway), to see what happened in a step.
    let kept = std::env::var_os("WEBRTC_GATEWAY_BENCH_LOG");
    let level = match kept {
        Some(_) => std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,webrtc_gateway=debug".into()),
        None => "warn".to_string(),
    };
    let (binary, config) = (sibling("webrtc-gateway")?, config.to_path_buf());
    let process = Process::new(what, move || {
        let mut command = Command::new(&binary);
        command
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", &level)
            // The credentials of the S3-compatible store that `upload` starts.
            .env("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
            .env("AWS_REGION", "us-east-1");
        command
    });
    let mut process = match kept {
        Some(path) => process.log_to(std::path::Path::new(&path)),
        None => process,
    }
    .spawn()?;
    process.wait_port(port, Duration::from_secs(10))?;
    Ok(process)
}

/// The release gateway with its defaults on the bench's ports; its configuration file
/// is `dir/NAME.toml`.
pub fn start_default_gateway(dir: &std::path::Path, name: &str) -> Result<Process> {
    let root = webrtc_gateway_testkit::root();
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{http_port}\"\nwww_dir = \"{root}/www\"\n\
             [rtp]\nport_base = {rtp_base}\n\
             [transcode]\npipelines_dir = \"{root}/pipelines\"\n\
             [webrtc]\nbind_address = \"127.0.0.1\"\n{ice_ports}",
            root = root.display(),
            ice_ports = crate::cli::ice_ports(),
            http_port = http_port(),
            rtp_base = rtp_base(),
        ),
    )?;
    spawn_gateway(&config)
}

pub async fn api(path: &str) -> Result<Value> {
    let (mut socket, _) = tokio::net::TcpStream::connect(("127.0.0.1", http_port()))
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

/// The threads of a process.
pub fn threads(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no Threads")
}

/// The UDP sockets (IPv4 and IPv6) a process holds: its socket inodes found in
/// /proc/net/udp and /proc/net/udp6.
pub fn udp_sockets(pid: u32) -> Result<usize> {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))?
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut count = 0;
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        count += text
            .lines()
            .skip(1)
            .filter(|line| {
                line.split_whitespace()
                    .nth(9)
                    .is_some_and(|inode| inodes.contains(inode))
            })
            .count();
    }
    Ok(count)
}
