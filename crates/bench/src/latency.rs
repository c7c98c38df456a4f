//! `latency`: glass-to-glass latency and the cost of blocking playlist reloads. The
//! publisher draws its wall clock into each picture (`--clock-stamp`); the players read
//! it back from the pictures they show: ffmpeg from the RTP through the SDP file (with
//! its low-delay flags), hls.js in headless Chromium from the HLS playlist, in each HLS
//! variant, both on the same publication. In the low-latency variant also: 1,000
//! playlist requests held waiting for one part, and the gateway's memory meanwhile.
//! With `--via-varnish`, hls.js plays through Varnish (the README's configuration).
//! With `--passthrough`, the publisher sends H.264 (key frames only when asked, as a
//! browser) and the gateway passes it through (`transcode.mode = "auto"`).

use crate::cli::*;
use crate::steps::percentile;
use crate::system::*;
use anyhow::{Context, Result, bail};
use axum::Router;
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webrtc_gateway_publish::client::clock_stamp;

const STREAM: &str = "latency";
/// The players' pictures are read at this size.
const WIDTH: usize = 320;
const HEIGHT: usize = 180;
/// Held playlist requests in the low-latency variant.
const WAITING: usize = 1000;
/// Seconds a player is given to reach its steady latency before it is measured.
const WARM_UP_S: u64 = 8;

/// The page that plays the stream with hls.js and reports what each shown picture's
/// stamp says, once a second.
const PAGE: &str = r#"<!doctype html>
<video id="v" muted autoplay playsinline></video>
<script src="/hls.js"></script>
<script>
"use strict";
const v = document.getElementById("v");
const hls = new Hls({ lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5 });
hls.loadSource(new URLSearchParams(location.search).get("src"));
hls.attachMedia(v);
v.play().catch(() => {});
const canvas = document.createElement("canvas");
canvas.width = WIDTH; canvas.height = HEIGHT;
const g = canvas.getContext("2d", { willReadFrequently: true });
const checksum = (ms) => [0, 8, 16, 24].reduce((s, shift) => (((s << 3) | (s >>> 5)) & 255) ^ ((ms >>> shift) & 255), 0x5a);
let ages = [];
const stalls = [];
hls.on(Hls.Events.ERROR, (_, data) => { if (data.details === "bufferStalledError") { const b = v.buffered; const r = []; for (let i = 0; i < b.length; i++) r.push([b.start(i), b.end(i)]); stalls.push({ at: v.currentTime, buffered: r, edge: hls.liveSyncPosition }); } });
function read() {
  g.drawImage(v, 0, 0, WIDTH, HEIGHT);
  const row = g.getImageData(0, Math.max(2, Math.floor(HEIGHT / 16)) >> 1, WIDTH, 1).data;
  let ms = 0, sum = 0;
  for (let k = 0; k < 40; k++) {
    const x = Math.floor((2 * k + 1) * WIDTH / 80) * 4;
    const bit = 0.299 * row[x] + 0.587 * row[x + 1] + 0.114 * row[x + 2] > 128 ? 1 : 0;
    if (k < 32) ms = ((ms << 1) | bit) >>> 0; else sum = (sum << 1) | bit;
  }
  return checksum(ms) === sum ? ms : null;
}
function frame() {
  const ms = read();
  if (ms !== null) {
    let age = (Date.now() % 4294967296) - ms;
    if (age < -2147483648) age += 4294967296;
    ages.push(age);
  }
  v.requestVideoFrameCallback(frame);
}
v.requestVideoFrameCallback(frame);
setInterval(() => {
  const body = JSON.stringify({ ages: ages.splice(0), latency: hls.latency, target: hls.targetLatency, stalls });
  fetch("/report", { method: "POST", body }).catch(() => {});
}, 1000);
</script>
"#;

fn start(dir: &std::path::Path, variant: &str, passthrough: bool) -> Result<Process> {
    let root = webrtc_gateway_testkit::root();
    let mode = if passthrough { "auto" } else { "always" };
    let config = dir.join(format!("{variant}.toml"));
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{http_port}\"\nwww_dir = \"{root}/www\"\n\
             [rtp]\nport_base = {rtp_base}\n[hls]\nvariant = \"{variant}\"\n\
             [transcode]\npipelines_dir = \"{root}/pipelines\"\nmode = \"{mode}\"\n\
             [webrtc]\nbind_address = \"127.0.0.1\"\n{ice_ports}",
            root = root.display(),
            ice_ports = crate::cli::ice_ports(),
            http_port = http_port(),
            rtp_base = rtp_base(),
        ),
    )?;
    spawn_gateway(&config)
}

/// Starts a publisher with its clock in the pictures; returns once the stream is live
/// and its playlist has three segments, as a viewer finds a running stream.
async fn publish(passthrough: bool) -> Result<tokio::process::Child> {
    let codec: &[&str] = if passthrough {
        &["--codec", "h264", "--keyframes-on-request"]
    } else {
        &[]
    };
    let child = publisher(
        &format!("ws://127.0.0.1:{}/ws", http_port()),
        STREAM,
        &["--clock-stamp"],
    )?
    .args(codec)
    .stdout(Stdio::null())
    .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(playlist) = api(&format!("/streams/{STREAM}/stream.m3u8")).await
            && playlist
                .as_str()
                .unwrap_or_default()
                .matches("#EXTINF:")
                .count()
                >= 3
        {
            return Ok(child);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("the publication did not go live with three HLS segments")
}

/// p50, p95 and the count of the ages measured, in ms.
fn summary(ages: &[f64]) -> Value {
    if ages.is_empty() {
        return json!({"p50_ms": null, "p95_ms": null, "frames": 0});
    }
    json!({"p50_ms": percentile(ages, 0.5), "p95_ms": percentile(ages, 0.95), "frames": ages.len()})
}

/// The RTP output through the SDP file in ffmpeg: the age of each picture it decodes.
async fn rtp_latency(seconds: u64) -> Result<Vec<f64>> {
    let mut ffmpeg = tokio::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error"])
        .args(["-protocol_whitelist", "file,http,tcp,udp,rtp"])
        .args([
            "-fflags",
            "nobuffer",
            "-flags",
            "low_delay",
            "-max_delay",
            "0",
        ])
        .args(["-reorder_queue_size", "0", "-threads", "1"])
        .arg("-i")
        .arg(format!(
            "http://127.0.0.1:{}/streams/{STREAM}/stream.sdp",
            http_port()
        ))
        .args(["-an", "-fps_mode", "passthrough"])
        .args(["-vf", &format!("scale={WIDTH}:{HEIGHT}")])
        .args(["-pix_fmt", "gray", "-f", "rawvideo", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("ffmpeg is installed")?;
    let mut out = ffmpeg.stdout.take().context("no stdout")?;
    let mut picture = vec![0u8; WIDTH * HEIGHT];
    let mut ages = Vec::new();
    let started = Instant::now();
    let end = started + Duration::from_secs(WARM_UP_S + seconds);
    while Instant::now() < end {
        let read = tokio::time::timeout_at(end.into(), out.read_exact(&mut picture)).await;
        if !matches!(read, Ok(Ok(_))) {
            break;
        }
        if started.elapsed() < Duration::from_secs(WARM_UP_S) {
            continue;
        }
        if let Some(stamp) = clock_stamp::read(&picture, WIDTH, HEIGHT, WIDTH) {
            ages.push(clock_stamp::age_ms(stamp) as f64);
        }
    }
    Ok(ages)
}

/// hls.js in headless Chromium: the age of each picture it shows, and its own
/// `latency` figure at the end.
async fn hls_latency(
    seconds: u64,
    dir: &std::path::Path,
    http_port: u16,
) -> Result<(Vec<f64>, Option<f64>)> {
    let hls_js = std::fs::read(webrtc_gateway_testkit::root_path(
        "node_modules/hls.js/dist/hls.min.js",
    ))
    .context("hls.js is not installed: run `make test-deps` (npm install)")?;
    let reports: Arc<Mutex<Vec<(Instant, Value)>>> = Arc::default();
    let page = PAGE
        .replace("WIDTH", &WIDTH.to_string())
        .replace("HEIGHT", &HEIGHT.to_string());
    let sink = reports.clone();
    let app = Router::new()
        .route("/", get(move || async move { axum::response::Html(page) }))
        .route(
            "/hls.js",
            get(move || async move { ([("content-type", "text/javascript")], hls_js.clone()) }),
        )
        .route(
            "/report",
            post(move |body: String| async move {
                if let Ok(report) = serde_json::from_str(&body) {
                    sink.lock().unwrap().push((Instant::now(), report));
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let src = format!("http://127.0.0.1:{http_port}/streams/{STREAM}/index.m3u8");
    let browser = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
        ])
        .args(["--autoplay-policy=no-user-gesture-required", "--mute-audio"])
        .args([
            "--disable-background-networking",
            "--disable-component-update",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium").display()
        ))
        .arg(format!("http://127.0.0.1:{port}/?src={src}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("chromium is installed")?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(WARM_UP_S + seconds)).await;
    drop(browser);
    server.abort();
    let reports = reports.lock().unwrap();
    let measured: Vec<&Value> = reports
        .iter()
        .filter(|(at, _)| at.duration_since(started) > Duration::from_secs(WARM_UP_S))
        .map(|(_, r)| r)
        .collect();
    let ages = measured
        .iter()
        .flat_map(|r| r["ages"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_f64())
        .collect();
    let last = measured.last().cloned().cloned().unwrap_or_default();
    if !last["stalls"].as_array().is_none_or(|s| s.is_empty()) {
        println!(
            "hls.js stalled at {}; its target latency: {} s",
            last["stalls"], last["target"]
        );
    }
    Ok((ages, last["latency"].as_f64()))
}

/// The position of the part after the one the playlist hints at: `(msn, part)`.
fn part_after_hint(playlist: &str) -> Option<(u64, u64)> {
    let sequence: u64 = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))?
        .parse()
        .ok()?;
    let segments = playlist
        .lines()
        .filter(|l| l.starts_with("#EXTINF:"))
        .count() as u64;
    let open = playlist.rsplit("#EXTINF:").next()?;
    let parts = open
        .lines()
        .filter(|l| l.starts_with("#EXT-X-PART:"))
        .count() as u64;
    Some((sequence + segments, parts + 1))
}

/// `WAITING` blocking reloads for the part after the hinted one, each on a connection
/// of its own: the gateway's memory before and while they wait, and how they were
/// answered once the part landed.
async fn waiting_requests(pid: u32) -> Result<Value> {
    let playlist = api(&format!("/streams/{STREAM}/stream.m3u8")).await?;
    let (msn, part) = part_after_hint(playlist.as_str().unwrap_or_default())
        .context("no low-latency playlist")?;
    let request = format!(
        "GET /streams/{STREAM}/stream.m3u8?_HLS_msn={msn}&_HLS_part={part} HTTP/1.1\r\n\
         Host: bench\r\nConnection: close\r\n\r\n"
    );
    let before = rss_mib(pid)?;
    let started = Instant::now();
    let mut sockets = Vec::new();
    for _ in 0..WAITING {
        let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", http_port())).await?;
        socket.write_all(request.as_bytes()).await?;
        sockets.push(socket);
    }
    let sent = started.elapsed();
    let with = rss_mib(pid)?;
    let answers = sockets.into_iter().map(|mut socket| async move {
        let mut response = Vec::new();
        let read = socket.read_to_end(&mut response).await;
        let ok = read.is_ok() && response.starts_with(b"HTTP/1.1 200");
        (ok, Instant::now())
    });
    let answers = futures::future::join_all(answers).await;
    let ok = answers.iter().filter(|(ok, _)| *ok).count();
    let first = answers
        .iter()
        .map(|(_, at)| *at)
        .min()
        .context("no answer")?;
    let last = answers
        .iter()
        .map(|(_, at)| *at)
        .max()
        .context("no answer")?;
    let spread_ms = last.duration_since(first).as_secs_f64() * 1000.0;
    println!(
        "{WAITING} blocking reloads for one part: RSS {before:.1} MiB before, {with:.1} MiB \
         while they wait (+{:.1} MiB, {:.1} KiB each); sent in {} ms; {ok} answered 200, \
         within {spread_ms:.0} ms of each other",
        with - before,
        (with - before) * 1024.0 / WAITING as f64,
        sent.as_millis()
    );
    Ok(
        json!({"requests": WAITING, "rss_before_mib": before, "rss_waiting_mib": with,
        "answered_200": ok, "answer_spread_ms": spread_ms}),
    )
}

pub async fn run(cli: &Options) -> Result<Value> {
    println!(
        "webrtc-gateway latency bench: glass to glass, the publisher's clock drawn into its \
         pictures and read from the players' ({WARM_UP_S} s warm-up, {} s measured; {})",
        cli.seconds,
        match (cli.passthrough, cli.via_varnish) {
            (true, false) => "H.264 passed through",
            (false, false) => "VP8 transcoded",
            (true, true) => "H.264 passed through, hls.js through Varnish",
            (false, true) => "VP8 transcoded, hls.js through Varnish",
        }
    );
    let dir = tempfile::tempdir()?;
    let mut variants = Vec::new();
    let mut waiting = Value::Null;
    for variant in cli.variants.split(',') {
        let gateway = start(dir.path(), variant, cli.passthrough)?;
        // hls.js plays straight from the gateway, or through Varnish with the README's
        // configuration.
        let (_varnish, hls_port) = if cli.via_varnish {
            let varnish = webrtc_gateway_testkit::servers::varnish(http_port())?;
            let port = varnish.port;
            (Some(varnish), port)
        } else {
            (None, http_port())
        };
        let publisher = publish(cli.passthrough).await?;
        let (rtp, hls) = tokio::join!(
            rtp_latency(cli.seconds),
            hls_latency(cli.seconds, dir.path(), hls_port)
        );
        let (rtp, (hls, hls_js_latency)) = (rtp?, hls?);
        if variant == "lowlatency" {
            waiting = waiting_requests(pid(&gateway)?).await?;
        }
        let (rtp, hls) = (summary(&rtp), summary(&hls));
        println!(
            "{variant:>10}: RTP in ffmpeg p50 {} ms, p95 {} ms ({} pictures); HLS in hls.js \
             p50 {} ms, p95 {} ms ({} pictures; hls.js says {:.2} s)",
            rtp["p50_ms"],
            rtp["p95_ms"],
            rtp["frames"],
            hls["p50_ms"],
            hls["p95_ms"],
            hls["frames"],
            hls_js_latency.unwrap_or(f64::NAN)
        );
        variants.push(json!({"variant": variant, "rtp_ffmpeg": rtp, "hls_js": hls,
            "hls_js_latency_s": hls_js_latency}));
        drop(publisher);
        drop(gateway);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(
        json!({"latency": variants, "waiting_reloads": waiting, "passthrough": cli.passthrough,
        "via_varnish": cli.via_varnish}),
    )
}
