//! `networks`: every publisher's ICE, DTLS and SRTP on one UDP port (`webrtc.udp_port`)
//! against a socket of its own per publisher (`udp_port = 0`, no ICE over TCP: the
//! gateway before the one port), in one run. At each number of publishers (H.264 passed
//! through, `transcode.mode = "auto"`, RTP out, HLS and recording off): cores and RSS
//! per stream, the gateway's UDP sockets and threads, the time from the offer to the
//! answer and from ICE connected to live (the stream's first H.264 RTP packet at its
//! port), p50/p99. Then a few publications one after another over ICE-TCP, on
//! `webrtc.tcp_port` and on the HTTP port, and relayed through coturn on loopback.

use crate::cli::*;
use crate::load::*;
use crate::steps::percentile;
use crate::system::*;
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The ICE ports of each mode.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One UDP port, ICE-TCP on its own port and on the HTTP port.
    OnePort,
    /// A UDP socket per publisher, no ICE-TCP.
    PerPublisher,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::OnePort => "one-port",
            Mode::PerPublisher => "per-publisher",
        }
    }

    fn ice(self) -> String {
        match self {
            Mode::OnePort => ice_ports(),
            Mode::PerPublisher => "udp_port = 0\ntcp_port = 0\nice_on_http = false\n".into(),
        }
    }
}

/// The gateway with H.264 passed through to RTP, nothing else.
const SETTINGS: GatewaySettings = GatewaySettings {
    passthrough: true,
    rtp: true,
    hls: false,
    record: Record::Off,
};

/// Times in ms of publications: offer to answer, ICE connected to live.
#[derive(Default)]
struct Times {
    answer: Vec<f64>,
    live: Vec<f64>,
}

impl Times {
    fn summary(&self) -> Value {
        let p = |v: &[f64], q| {
            if v.is_empty() {
                Value::Null
            } else {
                json!((percentile(v, q) * 10.0).round() / 10.0)
            }
        };
        json!({
            "publications": self.answer.len(), "live": self.live.len(),
            "offer_to_answer_ms": {"p50": p(&self.answer, 0.5), "p99": p(&self.answer, 0.99)},
            "connected_to_live_ms": {"p50": p(&self.live, 0.5), "p99": p(&self.live, 0.99)},
        })
    }

    fn line(&self) -> String {
        let p = |v: &[f64], q| {
            if v.is_empty() {
                "-".to_string()
            } else {
                format!("{:.0}", percentile(v, q))
            }
        };
        format!(
            "offer->answer p50/p99 {}/{} ms, connected->live p50/p99 {}/{} ms ({} of {} live)",
            p(&self.answer, 0.5),
            p(&self.answer, 0.99),
            p(&self.live, 0.5),
            p(&self.live, 0.99),
            self.live.len(),
            self.answer.len()
        )
    }
}

/// Waits until the counter has seen a packet; the time from `connected_at` to it, ms.
async fn live_after(
    counter: &FrameCounter,
    connected_at: Instant,
    deadline: Instant,
) -> Option<f64> {
    loop {
        if let Some(at) = counter.first_packet() {
            return Some(at.saturating_duration_since(connected_at).as_secs_f64() * 1000.0);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// N publishers at once in one mode, measured.
async fn step(
    cli: &Options,
    size: (u32, u32),
    mode: Mode,
    n: usize,
    clip: &Arc<Clip>,
    tps: f64,
) -> Result<Value> {
    let dir = tempfile::tempdir()?;
    let gateway = start_gateway_with(size.0, size.1, cli, SETTINGS, dir.path(), &mode.ice())?;
    let pid = pid(&gateway)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (idle_rss, idle_sockets, idle_threads) = (rss_mib(pid)?, udp_sockets(pid)?, threads(pid)?);
    let counters: Vec<FrameCounter> = (0..n)
        .map(|k| FrameCounter::listen(rtp_base() + 4 * k as u16))
        .collect::<Result<_>>()?;
    let started = Instant::now();
    let mut publishers = Vec::new();
    let mut times = Times::default();
    for i in 0..n {
        let publisher = publish(&format!("net{i}"), clip.clone())
            .await
            .with_context(|| format!("{} publisher {i} of {n}", mode.name()))?;
        times
            .answer
            .push(publisher.answered_in.as_secs_f64() * 1000.0);
        publishers.push(publisher);
    }
    let published_s = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(30);
    for (counter, publisher) in counters.iter().zip(&publishers) {
        if let Some(ms) = live_after(counter, publisher.connected_at, deadline).await {
            times.live.push(ms);
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before: Vec<u64> = counters.iter().map(FrameCounter::count).collect();
    let cpu_before = cpu_seconds(pid, tps)?;
    let own_before = cpu_seconds(std::process::id(), tps)?;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(cli.seconds)).await;
    let elapsed = start.elapsed().as_secs_f64();
    let cores = (cpu_seconds(pid, tps)? - cpu_before) / elapsed;
    let generator_cores = (cpu_seconds(std::process::id(), tps)? - own_before) / elapsed;
    let fps: Vec<f64> = counters
        .iter()
        .zip(&before)
        .map(|(c, b)| (c.count() - b) as f64 / elapsed)
        .collect();
    let rss = rss_mib(pid)?;
    let (sockets, thread_count) = (udp_sockets(pid)?, threads(pid)?);
    let streams = api("/api/streams").await?;
    let mut paths = std::collections::BTreeMap::<String, usize>::new();
    for s in streams.as_array().into_iter().flatten() {
        let path = s["transport"].as_str().unwrap_or("none").to_string();
        *paths.entry(path).or_default() += 1;
    }
    drop(publishers);
    drop(gateway);
    let min_fps = fps.iter().cloned().fold(f64::INFINITY, f64::min);
    let mean_fps = fps.iter().sum::<f64>() / n as f64;
    println!(
        "{:>14} {:>4} {:>6.2} {:>8.4} {:>6.1}MB {:>8.1} {:>8.1} {:>5}/{:<4} {:>5}/{:<4} {:>6.2} cores; {}",
        mode.name(),
        n,
        cores,
        cores / n as f64,
        (rss - idle_rss) / n as f64,
        min_fps,
        mean_fps,
        sockets,
        idle_sockets,
        thread_count,
        idle_threads,
        generator_cores,
        times.line(),
    );
    Ok(json!({
        "mode": mode.name(), "publishers": n, "publishing_s": published_s,
        "cores": cores, "cores_per_stream": cores / n as f64,
        "rss_mib": rss, "idle_rss_mib": idle_rss, "rss_per_stream_mib": (rss - idle_rss) / n as f64,
        "min_output_fps": min_fps, "mean_output_fps": mean_fps,
        "udp_sockets": sockets, "idle_udp_sockets": idle_sockets,
        "threads": thread_count, "idle_threads": idle_threads,
        "generator_cores": generator_cores,
        "paths": paths,
        "times": times.summary(),
    }))
}

/// `count` publications one after another over `via` to a gateway with `ice` as its
/// ICE ports, each held until live; the path the gateway reports for each.
async fn timed(
    cli: &Options,
    size: (u32, u32),
    ice: &str,
    via: Via,
    count: usize,
    clip: &Arc<Clip>,
) -> Result<(Times, std::collections::BTreeMap<String, usize>)> {
    let dir = tempfile::tempdir()?;
    let gateway = start_gateway_with(size.0, size.1, cli, SETTINGS, dir.path(), ice)?;
    let mut times = Times::default();
    let mut paths = std::collections::BTreeMap::<String, usize>::new();
    // Each held to the end: the gateway gives stream i the RTP ports at slot i only
    // while the ones before it are still there.
    let mut held = Vec::new();
    for i in 0..count {
        let counter = FrameCounter::listen(rtp_base() + 4 * i as u16)?;
        let name = format!("timed{i}");
        let publisher = match publish_over(&name, clip.clone(), via.clone()).await {
            Ok(publisher) => publisher,
            Err(e) => {
                println!("  publication {i}: {e:#}");
                continue;
            }
        };
        times
            .answer
            .push(publisher.answered_in.as_secs_f64() * 1000.0);
        let deadline = Instant::now() + Duration::from_secs(20);
        if let Some(ms) = live_after(&counter, publisher.connected_at, deadline).await {
            times.live.push(ms);
        }
        let streams = api("/api/streams").await?;
        let seen = streams
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == name.as_str())
            .and_then(|s| s["transport"].as_str())
            .unwrap_or("none")
            .to_string();
        *paths.entry(seen).or_default() += 1;
        held.push((publisher, counter));
    }
    drop(held);
    drop(gateway);
    Ok((times, paths))
}

/// coturn on loopback with a long-term user, relaying to loopback peers.
fn coturn(dir: &std::path::Path) -> Result<(Process, u16)> {
    let port = webrtc_gateway_testkit::free_tcp_port();
    let relays = webrtc_gateway_testkit::free_udp_range(64);
    let log = dir.join("turnserver.log");
    let mut process = Process::new("coturn", move || {
        let mut command = std::process::Command::new("turnserver");
        command.args([
            "-n",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            &format!("--listening-port={port}"),
            &format!("--min-port={relays}"),
            &format!("--max-port={}", relays + 63),
            "--lt-cred-mech",
            "--user=bench:bench",
            "--realm=bench",
            "--allow-loopback-peers",
            "--no-cli",
            "--no-tls",
            "--no-dtls",
            "--no-multicast-peers",
            &format!("--log-file={}", log.display()),
        ]);
        command
    })
    .spawn()?;
    process.wait_port(port, Duration::from_secs(10))?;
    Ok((process, port))
}

pub async fn run(cli: &Options) -> Result<Value> {
    let tps = ticks_per_second();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let size = cli.sizes.split(',').next().unwrap_or_default();
    let size = size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .context("sizes are WxH")?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    println!(
        "webrtc-gateway bench, one UDP port against a socket per publisher: {cpus} cores ({}), \
         load average at the start {load}; H.264 {}x{} (constrained baseline) + Opus in, \
         passed through to RTP",
        cpu_model(),
        size.0,
        size.1
    );
    let clip = Arc::new(clip(size.0, size.1, SourceCodec::H264)?);
    println!(
        "{:>14} {:>4} {:>6} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>12}",
        "mode",
        "N",
        "cores",
        "cores/N",
        "RSS/N",
        "min fps",
        "mean fps",
        "UDP/idle",
        "thr/idle",
        "generator"
    );
    let mut steps = Vec::new();
    for n in cli.publishers.split(',') {
        let n: usize = n.trim().parse().context("--publishers is N,N,...")?;
        for mode in [Mode::OnePort, Mode::PerPublisher] {
            match step(cli, size, mode, n, &clip, tps).await {
                Ok(step) => steps.push(step),
                Err(e) => {
                    println!("{:>14} {n:>4} failed: {e:#}", mode.name());
                    steps.push(
                        json!({"mode": mode.name(), "publishers": n, "error": format!("{e:#}")}),
                    );
                }
            }
        }
    }

    let mut paths = Vec::new();
    if cli.timed > 0 {
        println!(
            "\n{} publications one after another, each held until live:",
            cli.timed
        );
        let tcp_port = webrtc_gateway_testkit::free_tcp_port();
        let udp_port = webrtc_gateway_testkit::free_udp_port();
        let mut cases: Vec<(&str, String, Via)> = vec![
            ("udp", ice_ports(), Via::Udp),
            (
                "tcp",
                format!("udp_port = {udp_port}\ntcp_port = {tcp_port}\nice_on_http = false\n"),
                Via::Tcp,
            ),
            (
                "tcp-http",
                format!("udp_port = {udp_port}\ntcp_port = 0\nice_on_http = true\n"),
                Via::Tcp,
            ),
        ];
        let dir = tempfile::tempdir()?;
        let turn = match coturn(dir.path()) {
            Ok(turn) => Some(turn),
            Err(e) => {
                println!("  coturn did not start: {e:#}");
                None
            }
        };
        if let Some((_, port)) = &turn {
            cases.push((
                "relay",
                ice_ports(),
                Via::Relay {
                    url: format!("turn:127.0.0.1:{port}?transport=udp"),
                    username: "bench".into(),
                    password: "bench".into(),
                },
            ));
        }
        for (name, ice, via) in cases {
            let (times, seen) = timed(cli, size, &ice, via, cli.timed, &clip).await?;
            println!("{name:>9}: {}; the gateway's path: {seen:?}", times.line());
            paths.push(json!({"path": name, "seen": seen, "times": times.summary()}));
        }
        if let Some((mut process, _)) = turn {
            process.stop();
        }
    }
    if steps.iter().all(|s| s.get("error").is_some()) {
        bail!("no step completed");
    }
    Ok(json!({
        "machine": {"cpus": cpus, "model": cpu_model(), "load_average_at_start": load},
        "source": "videotestsrc pattern=ball, H.264 (x264enc veryfast, constrained baseline, 800 kbit/s, a key frame every 2 s) + Opus 440 Hz",
        "width": size.0, "height": size.1,
        "live_is": "the stream's first H.264 RTP packet at its RTP port",
        "steps": steps,
        "paths": paths,
    }))
}
