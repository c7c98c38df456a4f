//! `webrtc-gateway-bench`: measures the gateway on this machine.
//!
//! - start-up: time from the publisher's ICE connection to the first H.264 RTP packet
//!   arriving at the stream's RTP port, over several publications;
//! - CPU: the gateway's CPU (from /proc) while it transcodes one publisher's VP8 at the
//!   chosen size to H.264 RTP (HLS off), against a bare `gst-launch-1.0` pipeline doing
//!   the same depayload, decode, scale, encode and payload on the same VP8 RTP.
//!
//! It runs the release binaries beside it (`webrtc-gateway`, `webrtc-gateway-publish`) on
//! loopback, prints a table and writes the figures as JSON.

#![forbid(unsafe_code)]

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "webrtc-gateway-bench", version, about)]
struct Cli {
    /// Publications whose start-up time is measured.
    #[arg(long, default_value_t = 10)]
    startups: usize,
    /// Seconds of steady transcoding over which CPU is measured.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    #[arg(long, default_value_t = 640)]
    width: u32,
    #[arg(long, default_value_t = 360)]
    height: u32,
    #[arg(long, default_value = "ultrafast")]
    preset: String,
    /// Where the JSON report goes.
    #[arg(long, default_value = "target/bench.json")]
    json: PathBuf,
}

const HTTP_PORT: u16 = 18480;
const RTP_BASE: u16 = 28404;
const BARE_IN_PORT: u16 = 28500;
const BARE_OUT_PORT: u16 = 28502;
const BITRATE_KBPS: u32 = 1000;

fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} not found: build with `cargo build --release`",
            path.display()
        );
    }
    Ok(path)
}

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32, ticks_per_second: f64) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields[11].parse()?;
    let stime: f64 = fields[12].parse()?;
    Ok((utime + stime) / ticks_per_second)
}

fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Cores used by `pid` over `seconds`.
fn measure_cores(pid: u32, seconds: u64, tps: f64) -> Result<f64> {
    let before = cpu_seconds(pid, tps)?;
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let after = cpu_seconds(pid, tps)?;
    Ok((after - before) / start.elapsed().as_secs_f64())
}

fn start_gateway(cli: &Cli, dir: &std::path::Path) -> Result<Process> {
    let root = std::env::current_dir()?;
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{HTTP_PORT}\"\nwww_dir = \"{root}/www\"\n\
             [rtp]\nport_base = {RTP_BASE}\n[hls]\nenabled = false\n\
             [transcode]\nwidth = {w}\nheight = {h}\nx264_preset = \"{p}\"\n\
             video_bitrate_kbps = {BITRATE_KBPS}\npipelines_dir = \"{root}/pipelines\"\n\
             [webrtc]\nbind_address = \"127.0.0.1\"\n",
            root = root.display(),
            w = cli.width,
            h = cli.height,
            p = cli.preset,
        ),
    )?;
    let child = Command::new(sibling("webrtc-gateway")?)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", HTTP_PORT)).is_ok() {
            return Ok(Process(child));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the gateway did not start")
}

/// Starts a publisher; the receiver yields its JSON lines with their arrival time.
fn start_publisher(
    cli: &Cli,
    stream: &str,
    extra: &[&str],
) -> Result<(Process, mpsc::Receiver<(Instant, serde_json::Value)>)> {
    let mut child = Command::new(sibling("webrtc-gateway-publish")?)
        .args(["--url", &format!("ws://127.0.0.1:{HTTP_PORT}/ws")])
        .args(["--stream", stream])
        .args(["--width", &cli.width.to_string()])
        .args(["--height", &cli.height.to_string()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line)
                && tx.send((Instant::now(), v)).is_err()
            {
                break;
            }
        }
    });
    Ok((Process(child), rx))
}

fn wait_for(
    rx: &mpsc::Receiver<(Instant, serde_json::Value)>,
    test: impl Fn(&serde_json::Value) -> bool,
) -> Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (at, value) = rx.recv_timeout(left).context("publisher went quiet")?;
        if value["type"] == "error" {
            bail!("publisher got {value}");
        }
        if test(&value) {
            return Ok(at);
        }
    }
}

/// ICE connected to first H.264 RTP packet at the stream's port, in milliseconds.
fn startup_ms(cli: &Cli, run: usize) -> Result<f64> {
    let socket = UdpSocket::bind(("127.0.0.1", RTP_BASE))?;
    socket.set_read_timeout(Some(Duration::from_secs(20)))?;
    let (publisher, rx) = start_publisher(cli, &format!("startup{run}"), &["--no-audio"])?;
    let (first_tx, first_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        if socket.recv(&mut buf).is_ok() {
            let _ = first_tx.send(Instant::now());
        }
    });
    let connected = wait_for(&rx, |v| v["type"] == "ice" && v["state"] == "connected")?;
    let first = first_rx
        .recv_timeout(Duration::from_secs(20))
        .context("no RTP arrived")?;
    drop(publisher);
    // Let the gateway free the slot before the next run.
    std::thread::sleep(Duration::from_millis(1500));
    Ok(first.saturating_duration_since(connected).as_secs_f64() * 1000.0)
}

fn gateway_cores(cli: &Cli, gateway: &Process, tps: f64) -> Result<f64> {
    let (_publisher, rx) = start_publisher(cli, "cpu", &["--no-audio"])?;
    wait_for(&rx, |v| v["type"] == "live")?;
    std::thread::sleep(Duration::from_secs(3));
    measure_cores(gateway.0.id(), cli.seconds, tps)
}

/// The same transcode as a bare gst-launch pipeline, fed VP8 RTP by a second one.
fn bare_cores(cli: &Cli, tps: f64) -> Result<f64> {
    let keyframes = 2 * 30;
    let bare = Command::new("gst-launch-1.0")
        .args(["-q", "udpsrc", &format!("port={BARE_IN_PORT}")])
        .arg("caps=application/x-rtp,media=video,clock-rate=90000,encoding-name=VP8,payload=96")
        .args([
            "!",
            "rtpjitterbuffer",
            "latency=50",
            "!",
            "rtpvp8depay",
            "!",
            "vp8dec",
        ])
        .args([
            "!",
            "videoconvert",
            "!",
            "videoscale",
            "!",
            "videorate",
            "!",
        ])
        .arg(format!(
            "video/x-raw,format=I420,width={},height={},pixel-aspect-ratio=1/1,framerate=30/1",
            cli.width, cli.height
        ))
        .args(["!", "x264enc", "tune=zerolatency"])
        .arg(format!("speed-preset={}", cli.preset))
        .arg(format!("bitrate={BITRATE_KBPS}"))
        .arg(format!("key-int-max={keyframes}"))
        .args(["!", "h264parse", "config-interval=-1", "!", "rtph264pay"])
        .args(["config-interval=-1", "!", "udpsink", "host=127.0.0.1"])
        .arg(format!("port={BARE_OUT_PORT}"))
        .args(["sync=false", "async=false"])
        .stdout(Stdio::null())
        .spawn()
        .context("gst-launch-1.0 is installed (gstreamer1.0-tools)")?;
    let bare = Process(bare);
    let source = Command::new("gst-launch-1.0")
        .args(["-q", "videotestsrc", "is-live=true", "pattern=ball", "!"])
        .arg(format!(
            "video/x-raw,width={},height={},framerate=30/1",
            cli.width, cli.height
        ))
        .args([
            "!",
            "vp8enc",
            "deadline=1",
            "cpu-used=8",
            "keyframe-max-dist=60",
        ])
        .args(["target-bitrate=800000", "error-resilient=partitions"])
        .args([
            "!",
            "rtpvp8pay",
            "mtu=1200",
            "!",
            "udpsink",
            "host=127.0.0.1",
        ])
        .arg(format!("port={BARE_IN_PORT}"))
        .stdout(Stdio::null())
        .spawn()?;
    let _source = Process(source);
    std::thread::sleep(Duration::from_secs(3));
    measure_cores(bare.0.id(), cli.seconds, tps)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let tps = ticks_per_second();
    let dir = tempfile::tempdir()?;
    let gateway = start_gateway(&cli, dir.path())?;

    let mut startups = Vec::new();
    for run in 0..cli.startups {
        startups.push(startup_ms(&cli, run)?);
    }
    startups.sort_by(f64::total_cmp);

    let gateway_cores = gateway_cores(&cli, &gateway, tps)?;
    drop(gateway);
    let bare_cores = bare_cores(&cli, tps)?;
    let ratio = gateway_cores / bare_cores;

    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "webrtc-gateway bench: {}x{} VP8 in, H.264 {} out, {cpus} cores",
        cli.width, cli.height, cli.preset
    );
    println!("{:<48} {:>10}", "figure", "value");
    let rows = [
        (
            "ICE connected -> first H.264 RTP, p50 (ms)",
            percentile(&startups, 0.5),
        ),
        (
            "ICE connected -> first H.264 RTP, p90 (ms)",
            percentile(&startups, 0.9),
        ),
        (
            "ICE connected -> first H.264 RTP, max (ms)",
            percentile(&startups, 1.0),
        ),
        ("gateway CPU per stream (cores)", gateway_cores),
        ("bare gst-launch pipeline CPU (cores)", bare_cores),
        ("gateway / bare CPU", ratio),
    ];
    for (name, value) in rows {
        println!("{name:<48} {value:>10.3}");
    }
    let report = json!({
        "width": cli.width, "height": cli.height, "preset": cli.preset, "cpus": cpus,
        "startup_ms": startups,
        "startup_ms_p50": percentile(&startups, 0.5),
        "startup_ms_p90": percentile(&startups, 0.9),
        "gateway_cores_per_stream": gateway_cores,
        "bare_cores_per_stream": bare_cores,
        "gateway_to_bare_cpu": ratio,
    });
    if let Some(parent) = cli.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&cli.json, serde_json::to_string_pretty(&report)?)?;
    println!("JSON report: {}", cli.json.display());
    Ok(())
}
