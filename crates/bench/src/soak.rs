//! `soak`: the release gateway run for `--soak MINUTES` under churn, as it runs for weeks.
//! `--live` publishers at a time come and go (each for 3 to 8 s, then the next takes its
//! place): over WebSocket and WHIP, VP8 (transcoded) and H.264 (passed through,
//! `transcode.mode = "auto"`), a third of them recorded (`POST .../recording`). HLS
//! viewers read every live stream's playlists and newest segment meanwhile, and RTP
//! players count the frames at the streams' ports. A third of the way in, the gateway
//! is killed with SIGKILL and started again: its temporary HLS directory must be gone
//! at the next start, the new one alone in `TMPDIR`.
//!
//! First, `--live` publishers are held for 30 s on the fresh gateway: what they add to
//! its RSS is the live streams' own cost. Then, every `--sample-s` seconds (a minute, or
//! less for short runs: 30 samples at least), it samples the gateway's RSS, descriptors
//! and threads (from /proc), its async tasks and allocators (from `/metrics`), the sizes
//! of the HLS and recording directories (the recordings themselves removed once
//! finished, as a retention job does: what stays is what the gateway leaves) and the
//! Prometheus counters. At the end every publisher stops; once the outputs have expired
//! (`hls.linger_s`) the idle RSS is taken.
//!
//! It fails when a sampled figure trends upward over the last half of the run (the
//! least-squares slope over that half, times its length, above a tolerance), when the
//! idle RSS is above 1.5 times the start, or when the peak RSS added during churn is
//! above 1.2 times the live streams' own costs (one stream's, as held, times the most
//! publishers live at once). Prints a table; writes the samples as
//! CSV beside the JSON report.

use crate::cli::*;
use crate::load::*;
use crate::system::*;
use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use webrtc_gateway_testkit::Signal;

/// How long an ended stream's HLS output stays (`hls.linger_s`).
const LINGER_S: u64 = 5;
/// A publication lasts between these, seconds.
const HOLD_S: (u64, u64) = (3, 8);
/// The bounds of the issue: idle RSS against the start, peak added against the live
/// streams' own cost.
const IDLE_BOUND: f64 = 1.5;
const PEAK_BOUND: f64 = 1.2;

/// One sample of the gateway.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// Seconds since the churn began.
    pub t_s: f64,
    /// Which start of the gateway (1, then 2 after the SIGKILL).
    pub run: u32,
    pub live: f64,
    pub rss_mib: f64,
    pub fds: f64,
    pub threads: f64,
    pub tasks: f64,
    pub jemalloc_allocated_mib: f64,
    pub jemalloc_resident_mib: f64,
    pub malloc_in_use_mib: f64,
    pub malloc_held_mib: f64,
    pub hls_kib: f64,
    pub recordings_left_kib: f64,
    pub temp_dirs: f64,
    pub connections_open: f64,
    pub publications_started: f64,
    pub publications_ended: f64,
    pub hls_requests: f64,
    pub rtp_frames: f64,
}

/// A series tested for an upward trend: its name, how to read it, and its tolerance
/// (a rise over the last half above `relative` times its mean plus `absolute` fails).
type Trend = (&'static str, fn(&Sample) -> f64, f64, f64);

const TRENDS: [Trend; 11] = [
    ("rss_mib", |s| s.rss_mib, 0.10, 8.0),
    ("fds", |s| s.fds, 0.10, 4.0),
    ("threads", |s| s.threads, 0.10, 3.0),
    ("tasks", |s| s.tasks, 0.10, 10.0),
    (
        "jemalloc_allocated_mib",
        |s| s.jemalloc_allocated_mib,
        0.10,
        4.0,
    ),
    ("malloc_in_use_mib", |s| s.malloc_in_use_mib, 0.10, 4.0),
    ("malloc_held_mib", |s| s.malloc_held_mib, 0.10, 8.0),
    ("hls_kib", |s| s.hls_kib, 0.25, 1024.0),
    (
        "recordings_left_kib",
        |s| s.recordings_left_kib,
        0.25,
        1024.0,
    ),
    ("temp_dirs", |s| s.temp_dirs, 0.0, 0.5),
    ("connections_open", |s| s.connections_open, 0.10, 4.0),
];

/// The least-squares slope of `y` over `x`.
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, y) in points {
        sxy += (x - mean_x) * (y - mean_y);
        sxx += (x - mean_x) * (x - mean_x);
    }
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

/// What a trend test found.
#[derive(Debug, Serialize)]
struct TrendResult {
    series: &'static str,
    mean: f64,
    rise: f64,
    tolerance: f64,
    ok: bool,
}

fn trends(samples: &[Sample]) -> Vec<TrendResult> {
    let end = samples.last().map_or(0.0, |s| s.t_s);
    let half: Vec<&Sample> = samples.iter().filter(|s| s.t_s >= end / 2.0).collect();
    let span = half.last().map_or(0.0, |s| s.t_s) - half.first().map_or(0.0, |s| s.t_s);
    TRENDS
        .iter()
        .map(|(series, read, relative, absolute)| {
            let points: Vec<(f64, f64)> = half.iter().map(|s| (s.t_s, read(s))).collect();
            let mean = points.iter().map(|p| p.1).sum::<f64>() / points.len().max(1) as f64;
            let rise = slope(&points) * span;
            let tolerance = relative * mean.abs() + absolute;
            TrendResult {
                series,
                mean,
                rise,
                tolerance,
                ok: rise <= tolerance,
            }
        })
        .collect()
}

/// The gateway under test, its directories and its counters.
struct Soak {
    dir: tempfile::TempDir,
    gateway: Process,
    frames: Vec<FrameCounter>,
    hls_ok: Arc<AtomicU64>,
}

impl Soak {
    fn tmp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    fn recordings(&self) -> PathBuf {
        self.dir.path().join("recordings")
    }

    fn pid(&self) -> Result<u32> {
        pid(&self.gateway)
    }

    /// The temporary HLS directories in the gateway's `TMPDIR`.
    fn temp_dirs(&self) -> usize {
        std::fs::read_dir(self.tmp()).map_or(0, |entries| {
            entries
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("webrtc-gateway-hls-")
                })
                .count()
        })
    }

    async fn sample(&self, started: Instant, run: u32) -> Result<Sample> {
        let pid = self.pid()?;
        let metrics = metrics().await.unwrap_or_default();
        let metric = |name: &str| metrics.get(name).copied().unwrap_or(0.0);
        let mib = |name: &str| metric(name) / (1024.0 * 1024.0);
        let (tmp, recordings) = (self.tmp(), self.recordings());
        let (hls, left) =
            tokio::task::spawn_blocking(move || (dir_bytes(&tmp), dir_bytes(&recordings))).await?;
        Ok(Sample {
            t_s: started.elapsed().as_secs_f64(),
            run,
            live: metric("webrtc_gateway_publishers_live"),
            rss_mib: rss_mib(pid)?,
            fds: std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as f64,
            threads: std::fs::read_dir(format!("/proc/{pid}/task"))?.count() as f64,
            tasks: metric("webrtc_gateway_tasks_alive"),
            jemalloc_allocated_mib: mib("webrtc_gateway_memory_jemalloc_allocated_bytes"),
            jemalloc_resident_mib: mib("webrtc_gateway_memory_jemalloc_resident_bytes"),
            malloc_in_use_mib: mib("webrtc_gateway_memory_malloc_in_use_bytes"),
            malloc_held_mib: mib("webrtc_gateway_memory_malloc_held_bytes"),
            hls_kib: hls as f64 / 1024.0,
            recordings_left_kib: left as f64 / 1024.0,
            temp_dirs: self.temp_dirs() as f64,
            connections_open: metric("webrtc_gateway_connections_open"),
            publications_started: metric("webrtc_gateway_publications_started_total"),
            publications_ended: metric("webrtc_gateway_publications_ended_total"),
            hls_requests: self.hls_ok.load(Ordering::Relaxed) as f64,
            rtp_frames: self.frames.iter().map(FrameCounter::count).sum::<u64>() as f64,
        })
    }

    /// Removes the finished recordings, as a retention job does.
    async fn retain(&self) {
        let Ok(Value::Array(files)) = api("/recordings").await else {
            return;
        };
        for file in files {
            if file["finished"] == true
                && let Some(name) = file["file"].as_str()
                && !name.contains('/')
            {
                let _ = std::fs::remove_file(self.recordings().join(name));
            }
        }
    }
}

/// The metrics, summed over their labels, by name.
async fn metrics() -> Result<BTreeMap<String, f64>> {
    let Value::String(text) = api("/metrics").await? else {
        bail!("/metrics is not text");
    };
    let mut values = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = name.split('{').next().unwrap_or(name).to_string();
        if let Ok(value) = value.parse::<f64>() {
            *values.entry(name).or_insert(0.0) += value;
        }
    }
    Ok(values)
}

/// The bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn start(binary: &Path, config: &Path, tmp: &Path, log: &Path) -> Result<Process> {
    let (binary, config, tmp) = (
        binary.to_path_buf(),
        config.to_path_buf(),
        tmp.to_path_buf(),
    );
    let mut process = Process::new("the gateway", move || {
        let mut command = Command::new(&binary);
        command
            .arg("--config")
            .arg(&config)
            .env("TMPDIR", &tmp)
            .env("RUST_LOG", "warn");
        command
    })
    .log_to(log)
    .spawn()?;
    process.wait_port(http_port(), Duration::from_secs(10))?;
    Ok(process)
}

/// The publications of one place among the live ones, one after another until `stop`.
async fn churn(
    slot: usize,
    clips: [Arc<Clip>; 2],
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
) {
    let mut k = slot;
    while !stop.load(Ordering::Relaxed) {
        // Over the places and turns: every mix of signalling and codec, a third recorded.
        let signalling = if k.is_multiple_of(2) {
            Signalling::WebSocket
        } else {
            Signalling::Whip
        };
        let clip = clips[(k / 2) % 2].clone();
        let name = format!("soak-{slot}-{k}");
        match publish_via(&name, clip, signalling).await {
            Ok(publisher) => {
                if k.is_multiple_of(3) {
                    record(&name).await;
                }
                let hold = HOLD_S.0 + (k as u64 * 7919) % (HOLD_S.1 - HOLD_S.0 + 1);
                tokio::time::sleep(Duration::from_secs(hold)).await;
                publisher.end().await;
            }
            Err(_) => {
                // The gateway restarting, or refusing while a name lingers.
                failures.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        k += 64;
    }
}

/// Starts recording `name` once it is live.
async fn record(name: &str) {
    for _ in 0..20 {
        let response = reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{}/api/streams/{name}/recording",
                http_port()
            ))
            .send()
            .await;
        if response.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Reads every live stream's playlists and newest segment, once a second, until `stop`.
async fn view(stop: Arc<AtomicBool>, ok: Arc<AtomicU64>) {
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}", http_port());
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(Value::Array(streams)) = api("/api/streams").await else {
            continue;
        };
        for stream in streams.iter().filter(|s| s["state"] == "live") {
            let Some(multivariant) = stream["outputs"]["hls"].as_str() else {
                continue;
            };
            let get = |url: String| {
                let client = client.clone();
                async move {
                    let response = client.get(&url).send().await.ok()?;
                    response.status().is_success().then_some(())?;
                    response.text().await.ok()
                }
            };
            let multivariant = multivariant
                .strip_prefix("http://")
                .and_then(|rest| rest.split_once('/'))
                .map_or(multivariant.to_string(), |(_, path)| format!("/{path}"));
            let Some(text) = get(format!("{base}{multivariant}")).await else {
                continue;
            };
            ok.fetch_add(1, Ordering::Relaxed);
            let folder = multivariant.rsplit_once('/').map_or("", |(f, _)| f);
            let Some(media) = text.lines().find(|l| !l.starts_with('#') && !l.is_empty()) else {
                continue;
            };
            let Some(playlist) = get(format!("{base}{folder}/{media}")).await else {
                continue;
            };
            ok.fetch_add(1, Ordering::Relaxed);
            if let Some(segment) = playlist
                .lines()
                .rev()
                .find(|l| !l.starts_with('#') && !l.is_empty())
                && get(format!("{base}{folder}/{segment}")).await.is_some()
            {
                ok.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn table_header() -> String {
    format!(
        "{:>6} {:>3} {:>4} {:>7} {:>4} {:>4} {:>5} {:>7} {:>7} {:>7} {:>7} {:>5} {:>6} {:>8} {:>9}",
        "t s",
        "run",
        "live",
        "RSS MiB",
        "fds",
        "thr",
        "tasks",
        "je MiB",
        "c MiB",
        "HLS KiB",
        "rec KiB",
        "tmp",
        "pubs",
        "HLS reqs",
        "RTP frms"
    )
}

fn table_line(s: &Sample) -> String {
    format!(
        "{:>6.0} {:>3} {:>4.0} {:>7.1} {:>4.0} {:>4.0} {:>5.0} {:>7.1} {:>7.1} {:>7.0} {:>7.0} {:>5.0} {:>6.0} {:>8.0} {:>9.0}",
        s.t_s,
        s.run,
        s.live,
        s.rss_mib,
        s.fds,
        s.threads,
        s.tasks,
        s.jemalloc_allocated_mib,
        s.malloc_in_use_mib,
        s.hls_kib,
        s.recordings_left_kib,
        s.temp_dirs,
        s.publications_started,
        s.hls_requests,
        s.rtp_frames
    )
}

pub async fn run(args: &SoakArgs, json_path: &Path) -> Result<Value> {
    let minutes = args.soak.max(1);
    let sample_s = args
        .sample_s
        .unwrap_or_else(|| (minutes * 60 / 30).clamp(5, 60));
    let live = args.live.max(1);
    let binary = match &args.gateway {
        Some(binary) => binary.clone(),
        None => sibling("webrtc-gateway")?,
    };
    let dir = tempfile::tempdir()?;
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp)?;
    let root = webrtc_gateway_testkit::root();
    let config = dir.path().join("soak.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{http_port}\"\nwww_dir = \"{root}/www\"\n\
             [rtp]\nport_base = {rtp_base}\n\
             [hls]\nlinger_s = {LINGER_S}\n\
             [record]\nenabled = false\ndir = \"{recordings}\"\n\
             [transcode]\nmode = \"auto\"\nwidth = 640\nheight = 360\n\
             pipelines_dir = \"{root}/pipelines\"\n\
             [webrtc]\nbind_address = \"127.0.0.1\"\n[limits]\nmax_publishers = {max}\n",
            root = root.display(),
            http_port = http_port(),
            rtp_base = rtp_base(),
            recordings = dir.path().join("recordings").display(),
            max = 2 * live + 4,
        ),
    )?;
    println!(
        "webrtc-gateway soak: {minutes} min, {live} publishers live at a time ({}-{} s each; \
         WebSocket and WHIP, VP8 transcoded to 640x360 and H.264 passed through, a third \
         recorded), HLS viewers and RTP players; SIGKILL and restart at a third; a sample \
         every {sample_s} s; gateway {}",
        HOLD_S.0,
        HOLD_S.1,
        binary.display()
    );
    let clips = [
        Arc::new(clip(640, 360, SourceCodec::Vp8)?),
        Arc::new(clip(640, 360, SourceCodec::H264)?),
    ];
    let log = dir.path().join("gateway.log");
    let gateway = start(&binary, &config, &tmp, &log)?;
    // The RTP players: the video port of every slot the publishers may take.
    let frames = (0..(2 * live + 4) as u16)
        .map(|k| FrameCounter::listen(rtp_base() + 4 * k))
        .collect::<Result<Vec<_>>>()?;
    let mut soak = Soak {
        dir,
        gateway,
        frames,
        hls_ok: Arc::new(AtomicU64::new(0)),
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let at_start = soak.sample(Instant::now(), 1).await?;

    // The live streams' own cost: `live` of them held on the fresh gateway.
    let mut held = Vec::new();
    for k in 0..live {
        let signalling = if k.is_multiple_of(2) {
            Signalling::WebSocket
        } else {
            Signalling::Whip
        };
        let clip = clips[(k / 2) % 2].clone();
        held.push(publish_via(&format!("cost-{k}"), clip, signalling).await?);
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    let with_live = soak.sample(Instant::now(), 1).await?;
    for publisher in held {
        publisher.end().await;
    }
    let cost = (with_live.rss_mib - at_start.rss_mib).max(1.0);
    println!(
        "RSS at start {:.1} MiB; with {live} live {:.1} MiB: the live streams' own cost {cost:.1} MiB",
        at_start.rss_mib, with_live.rss_mib
    );
    tokio::time::sleep(Duration::from_secs(LINGER_S + 3)).await;

    // The churn.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for slot in 0..live {
        tasks.push(tokio::spawn(churn(
            slot,
            clips.clone(),
            stop.clone(),
            failures.clone(),
        )));
    }
    let viewer = tokio::spawn(view(stop.clone(), soak.hls_ok.clone()));
    let started = Instant::now();
    let length = Duration::from_secs(minutes * 60);
    let restart_at = length / 3;
    let mut restarted = None;
    let mut run = 1;
    let mut samples = Vec::new();
    let mut peak = 0.0f64;
    let mut most_live = live as f64;
    let mut next_sample = Duration::ZERO;
    println!("{}", table_header());
    while started.elapsed() < length {
        if restarted.is_none() && started.elapsed() >= restart_at {
            soak.gateway.kill();
            let left = soak.temp_dirs();
            soak.gateway.start()?;
            soak.gateway
                .wait_port(http_port(), Duration::from_secs(10))?;
            run += 1;
            let after = soak.temp_dirs();
            println!(
                "SIGKILL at {:.0} s: {left} temporary HLS directory left; after the restart {after}",
                started.elapsed().as_secs_f64()
            );
            restarted = Some((left, after));
        }
        if started.elapsed() >= next_sample {
            soak.retain().await;
            let sample = soak.sample(started, run).await?;
            println!("{}", table_line(&sample));
            samples.push(sample);
            next_sample += Duration::from_secs(sample_s);
        }
        if let Ok(pid) = soak.pid() {
            peak = peak.max(rss_mib(pid).unwrap_or(0.0));
        }
        if let Ok(metrics) = metrics().await {
            let live = metrics
                .get("webrtc_gateway_publishers_live")
                .copied()
                .unwrap_or(0.0);
            most_live = most_live.max(live);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let _ = viewer.await;
    // Every output expired, memory given back.
    tokio::time::sleep(Duration::from_secs(LINGER_S + 10)).await;
    soak.retain().await;
    let idle = soak.sample(started, run).await?;
    println!("{}   (idle)", table_line(&idle));
    soak.gateway.signal(Signal::Term);
    let _ = soak.gateway.wait_exit(Duration::from_secs(6));

    let results = trends(&samples);
    println!("\ntrend over the last half (rise of the least-squares line against tolerance):");
    for r in &results {
        println!(
            "  {:<24} mean {:>9.1}  rise {:>8.1}  tolerance {:>8.1}  {}",
            r.series,
            r.mean,
            r.rise,
            r.tolerance,
            if r.ok { "ok" } else { "RISES" }
        );
    }
    let idle_ratio = idle.rss_mib / at_start.rss_mib;
    // The live streams' own costs: one stream's, as held still, times the most live.
    let costs = cost / live as f64 * most_live;
    let peak_ratio = (peak - at_start.rss_mib) / costs;
    let (left, after) = restarted.unwrap_or((0, 0));
    let swept = left == 1 && after == 1;
    println!(
        "idle RSS {:.1} MiB = {idle_ratio:.2} x the start, {:.1} MiB (bound {IDLE_BOUND}); peak {peak:.1} MiB: \
         {:.1} MiB added = {peak_ratio:.2} x the live streams' own cost ({most_live} live at most: \
         {costs:.1} MiB; bound {PEAK_BOUND}); \
         publications since the restart {}, failed to start {}; the killed gateway's HLS directory {}",
        idle.rss_mib,
        at_start.rss_mib,
        peak - at_start.rss_mib,
        idle.publications_started,
        failures.load(Ordering::Relaxed),
        if swept {
            "removed at the restart"
        } else {
            "NOT removed"
        }
    );
    let csv = json_path.with_extension("csv");
    write_csv(&csv, &samples, &idle)?;
    println!("samples: {}", csv.display());
    let report = json!({
        "minutes": minutes, "live": live, "sample_s": sample_s,
        "start": at_start, "with_live": with_live, "live_cost_mib": cost,
        "most_live": most_live, "live_costs_at_most_mib": costs,
        "peak_rss_mib": peak, "idle": idle, "idle_ratio": idle_ratio, "peak_ratio": peak_ratio,
        "restart": {"temp_dirs_left_by_kill": left, "temp_dirs_after_restart": after},
        "failures": failures.load(Ordering::Relaxed),
        "trends": results, "samples": samples,
    });
    let failed: Vec<&str> = results.iter().filter(|r| !r.ok).map(|r| r.series).collect();
    if !failed.is_empty() || idle_ratio > IDLE_BOUND || peak_ratio > PEAK_BOUND || !swept {
        std::fs::write(json_path, serde_json::to_string_pretty(&report)?)?;
        bail!(
            "soak failed: rising {failed:?}, idle {idle_ratio:.2} x start, peak {peak_ratio:.2} x cost, \
             HLS directory swept: {swept} (report in {})",
            json_path.display()
        );
    }
    Ok(report)
}

fn write_csv(path: &Path, samples: &[Sample], idle: &Sample) -> Result<()> {
    let mut text = String::new();
    for (i, sample) in samples.iter().chain([idle]).enumerate() {
        let Value::Object(fields) = serde_json::to_value(sample)? else {
            continue;
        };
        if i == 0 {
            text += &fields.keys().cloned().collect::<Vec<_>>().join(",");
            text += "\n";
        }
        text += &fields
            .values()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join(",");
        text += "\n";
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text).context("the samples' CSV")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_noise() {
        let line: Vec<(f64, f64)> = (0..10).map(|x| (x as f64, 3.0 * x as f64 + 1.0)).collect();
        assert!((slope(&line) - 3.0).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = (0..10)
            .map(|x: u32| (x as f64, if x.is_multiple_of(2) { 5.0 } else { 7.0 }))
            .collect();
        assert!(slope(&flat).abs() < 0.1);
        assert_eq!(slope(&[(1.0, 2.0)]), 0.0);
    }
}
