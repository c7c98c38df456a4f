//! `webrtc-gateway-bench`: how many publishers this machine carries, how fast, at what
//! cost. It runs the release gateway beside it on loopback and drives it with N
//! synthetic publishers: webrtc-rs clients in this process sending VP8 and Opus that
//! were encoded once at setup from a GStreamer test source (`videotestsrc pattern=ball`,
//! a 440 Hz tone), so that the load generator itself costs little.
//!
//! For each size it measures a bare `gst-launch-1.0` pipeline doing the same media work
//! (video: depayload, decode, scale, rate, encode, payload; audio: depayload, payload;
//! both through rtpbin), 1, 2, 4 and 8 copies side by side, then sweeps 1, 2, 4, ...
//! publishers: the gateway's CPU and RSS (from /proc), every stream's output frame rate
//! (counting the RTP frames that arrive at its port), and the delay from a frame's
//! arrival to its H.264 leaving the encoder (p50/p95/p99, jitter buffer included). The
//! sweep narrows down on the last N where every stream keeps 95% of its input frame
//! rate, counted both at its RTP port and as frames made from new pictures (so that
//! copies filling gaps do not count); the most streams with a p99 delay within 150 ms
//! is reported beside it. It also times ICE connected to the first H.264
//! packet and to the first HLS playlist. Prints a table and writes JSON.

#![forbid(unsafe_code)]

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Parser;
use futures::{SinkExt, StreamExt};
use gstreamer as gst;
use rtc::interceptor::Registry;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use serde_json::{Value, json};
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
    SettingEngineBuilder, register_default_interceptors,
};
use webrtc_gateway::client::{Encoder, SampleTrack};

#[derive(Parser)]
#[command(name = "webrtc-gateway-bench", version, about)]
struct Cli {
    /// Output sizes to sweep, `WxH` separated by commas.
    #[arg(long, default_value = "640x360,1280x720")]
    sizes: String,
    /// The most publishers a sweep tries.
    #[arg(long, default_value_t = 64)]
    max_streams: usize,
    /// Seconds of steady load each step measures.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Publications whose start-up is timed.
    #[arg(long, default_value_t = 5)]
    startups: usize,
    #[arg(long, default_value = "ultrafast")]
    preset: String,
    /// x264 threads per stream, in the gateway (`transcode.encoder_threads`) and in the
    /// bare pipeline; 0 lets x264 choose.
    #[arg(long, default_value_t = 1)]
    encoder_threads: u32,
    /// Run only this many publishers at the first size (no sweep, no baseline).
    #[arg(long)]
    only: Option<usize>,
    /// Keep HLS on during the sweep (AAC encoding and MPEG-TS segments cost more; the
    /// bare pipeline makes neither).
    #[arg(long)]
    hls: bool,
    /// Where the JSON report goes.
    #[arg(long, default_value = "target/bench.json")]
    json: PathBuf,
}

const HTTP_PORT: u16 = 18480;
const RTP_BASE: u16 = 30000;
const BARE_IN_PORT: u16 = 28500;
const BARE_OUT_PORT: u16 = 28510;
const BITRATE_KBPS: u32 = 1000;
/// The gateway's default `transcode.jitter_buffer_ms`, in both.
const JITTER_BUFFER_MS: u32 = 200;
const FPS: f64 = 30.0;
/// The delay target at p99: the most streams that met it is reported beside capacity.
const MAX_DELAY_P99_MS: u64 = 150;

// ── Processes ─────────────────────────────────────────────────────────────────

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sibling(name: &str) -> Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} not found: build with `cargo build --release`",
            path.display()
        );
    }
    Ok(path)
}

fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32, tps: f64) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Ok((fields[11].parse::<f64>()? + fields[12].parse::<f64>()?) / tps)
}

/// Resident memory of a process, MiB.
fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")?;
    Ok(kib / 1024.0)
}

fn start_gateway(
    width: u32,
    height: u32,
    cli: &Cli,
    hls: bool,
    dir: &std::path::Path,
) -> Result<Process> {
    let root = std::env::current_dir()?;
    let config = dir.join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{HTTP_PORT}\"\nwww_dir = \"{root}/www\"\n\
             [rtp]\nport_base = {RTP_BASE}\n\
             [hls]\nenabled = {hls}\nlinger_s = 0\n\
             [transcode]\nwidth = {width}\nheight = {height}\nx264_preset = \"{preset}\"\n\
             encoder_threads = {threads}\njitter_buffer_ms = {JITTER_BUFFER_MS}\n\
             video_bitrate_kbps = {BITRATE_KBPS}\npipelines_dir = \"{root}/pipelines\"\n\
             [webrtc]\nbind_address = \"127.0.0.1\"\n[limits]\nmax_publishers = 128\n",
            root = root.display(),
            preset = cli.preset,
            threads = cli.encoder_threads,
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

async fn api(path: &str) -> Result<Value> {
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

// ── The clip, encoded once ───────────────────────────────────────────────────

struct Clip {
    video: Vec<(Bytes, Duration)>,
    audio: Vec<(Bytes, Duration)>,
}

fn encode(description: &str) -> Result<Vec<(Bytes, Duration)>> {
    let encoder = Encoder::new(description)?;
    Ok(std::iter::from_fn(|| encoder.next_frame()).collect())
}

/// Ten seconds of VP8 (a key frame every two seconds) and Opus.
fn clip(width: u32, height: u32) -> Result<Clip> {
    Ok(Clip {
        video: encode(&format!(
            "videotestsrc num-buffers=300 pattern=ball ! video/x-raw,width={width},height={height},framerate=30/1 \
             ! vp8enc deadline=1 cpu-used=8 keyframe-max-dist=60 target-bitrate=800000 error-resilient=partitions \
             ! appsink name=sink sync=false"
        ))?,
        audio: encode(
            "audiotestsrc num-buffers=500 samplesperbuffer=960 wave=sine freq=440 \
             ! audio/x-raw,rate=48000,channels=2 ! opusenc frame-size=20 ! appsink name=sink sync=false",
        )?,
    })
}

// ── Synthetic publishers ──────────────────────────────────────────────────────

struct Handler(mpsc::UnboundedSender<Option<RTCPeerConnectionState>>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.0.send(None);
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.0.send(Some(state));
    }
}

/// A running synthetic publisher; dropping it stops it.
struct Publisher {
    connected_at: Instant,
    stop: Arc<AtomicBool>,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in &self._tasks {
            task.abort();
        }
    }
}

fn codec(kind: RtpCodecKind) -> RTCRtpCodecParameters {
    let (mime, clock_rate, channels, pt) = match kind {
        RtpCodecKind::Audio => ("audio/opus", 48000, 2, 111),
        _ => ("video/VP8", 90000, 0, 96),
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.into(),
            clock_rate,
            channels,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
        payload_type: pt,
    }
}

async fn publish(stream: &str, clip: Arc<Clip>) -> Result<Publisher> {
    let mut media_engine = MediaEngine::default();
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        media_engine.register_codec(codec(kind), kind)?;
    }
    let registry = register_default_interceptors(Registry::new(), &mut media_engine)?;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let pc: Arc<dyn PeerConnection> = Arc::new(
        PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(
                SettingEngineBuilder::new()
                    .with_include_loopback_candidate(true)
                    .build(),
            )
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Handler(events_tx)))
            .with_udp_addrs(vec!["127.0.0.1:0"])
            .build()
            .await?,
    );
    let mut tracks = Vec::new();
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        tracks.push(SampleTrack::add(pc.as_ref(), "bench", kind, &codec(kind)).await?);
    }
    pc.set_local_description(pc.create_offer(None).await?)
        .await?;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(event) = events.recv().await {
            if event.is_none() {
                break;
            }
        }
    })
    .await;
    let offer = pc.local_description().await.context("no offer")?;
    let (socket, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{HTTP_PORT}/ws")).await?;
    let (mut sink, mut incoming) = socket.split();
    let publish = json!({"type": "publish", "stream": stream, "sdp": offer.sdp});
    sink.send(Message::Text(publish.to_string().into())).await?;
    loop {
        let Some(Ok(Message::Text(text))) = incoming.next().await else {
            bail!("the gateway closed the signalling socket");
        };
        let value: Value = serde_json::from_str(&text)?;
        match value["type"].as_str() {
            Some("answer") => {
                let sdp = value["sdp"].as_str().unwrap_or_default().to_string();
                pc.set_remote_description(RTCSessionDescription::answer(sdp)?)
                    .await?;
                break;
            }
            Some("error") => bail!("{value}"),
            _ => {}
        }
    }
    let connected_at = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = events.recv().await {
            if event == Some(RTCPeerConnectionState::Connected) {
                return Some(Instant::now());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .context("ICE did not connect")?;

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    // The socket stays open for as long as the publication lasts.
    tasks.push(tokio::spawn(async move {
        let _sink = sink;
        while incoming.next().await.is_some() {}
    }));
    for track in tracks {
        let frames = if track.kind == RtpCodecKind::Video {
            clip.video.clone()
        } else {
            clip.audio.clone()
        };
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let period = frames.first().map_or(Duration::from_millis(20), |f| f.1);
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            for (data, duration) in frames.iter().cycle() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                tick.tick().await;
                if track.write(data.clone(), *duration).await.is_err() {
                    break;
                }
            }
        }));
    }
    let closer = pc.clone();
    let stop_watch = stop.clone();
    tasks.push(tokio::spawn(async move {
        while !stop_watch.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = closer.close().await;
    }));
    Ok(Publisher {
        connected_at,
        stop,
        _tasks: tasks,
    })
}

// ── Output frame counting ─────────────────────────────────────────────────────

/// Counts H.264 frames (RTP packets with the marker bit) arriving at a port.
struct FrameCounter {
    frames: Arc<AtomicU64>,
    first: Arc<std::sync::Mutex<Option<Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FrameCounter {
    fn listen(port: u16) -> Result<FrameCounter> {
        let socket = UdpSocket::bind(("127.0.0.1", port))
            .with_context(|| format!("cannot receive on UDP port {port}"))?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let frames = Arc::new(AtomicU64::new(0));
        let first = Arc::new(std::sync::Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, fi, s) = (frames.clone(), first.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    fi.lock().unwrap().get_or_insert_with(Instant::now);
                    if n > 1 && buf[1] & 0x80 != 0 {
                        f.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Ok(FrameCounter {
            frames,
            first,
            stop,
            thread: Some(thread),
        })
    }

    fn count(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    fn first_packet(&self) -> Option<Instant> {
        *self.first.lock().unwrap()
    }
}

impl Drop for FrameCounter {
    /// Frees the port before returning.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ── Measurements ──────────────────────────────────────────────────────────────

/// The same work in a bare gst-launch pipeline, fed plain VP8 and Opus RTP by a second
/// one: what a person would run by hand for one publisher. Video: jitter buffer,
/// depayload, decode, scale, rate, encode (the gateway's x264 settings), payload; audio:
/// jitter buffer, depayload, payload; both through rtpbin to udpsinks, as the gateway
/// sends them. With `audio` false, the video alone. `n` copies run side by side, as `n`
/// publishers would; the result is their CPU per copy.
fn bare_cores(width: u32, height: u32, cli: &Cli, audio: bool, n: u16, tps: f64) -> Result<f64> {
    let offsets: Vec<u16> = (0..n).map(|k| 20 * k).collect();
    let bares = offsets
        .iter()
        .map(|offset| launch(&bare_description(width, height, cli, audio, *offset)))
        .collect::<Result<Vec<_>>>()?;
    let _source = launch(&source_description(width, height, audio, &offsets))?;
    let cpu = || -> Result<f64> { bares.iter().map(|b| cpu_seconds(b.0.id(), tps)).sum() };
    std::thread::sleep(Duration::from_secs(3));
    let before = cpu()?;
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(cli.seconds));
    Ok((cpu()? - before) / start.elapsed().as_secs_f64() / f64::from(n))
}

fn launch(description: &str) -> Result<Process> {
    Ok(Process(
        Command::new("gst-launch-1.0")
            .arg("-q")
            .args(description.split_whitespace())
            .stdout(Stdio::null())
            .spawn()
            .context("gst-launch-1.0 is installed (gstreamer1.0-tools)")?,
    ))
}

/// One bare pipeline, on ports shifted by `offset`.
fn bare_description(width: u32, height: u32, cli: &Cli, audio: bool, offset: u16) -> String {
    let (bare_in, bare_out) = (BARE_IN_PORT + offset, BARE_OUT_PORT + offset);
    let video_caps = "application/x-rtp,media=video,clock-rate=90000,encoding-name=VP8,payload=96";
    let audio_caps = "application/x-rtp,media=audio,clock-rate=48000,encoding-name=OPUS,payload=97";
    let mut bare = format!(
        "rtpbin name=b \
         udpsrc port={bare_in} caps={video_caps} ! rtpjitterbuffer latency={JITTER_BUFFER_MS} \
         ! rtpvp8depay ! vp8dec ! videoconvert ! videoscale ! videorate \
         ! video/x-raw,format=I420,width={width},height={height},pixel-aspect-ratio=1/1,framerate=30/1 \
         ! x264enc tune=zerolatency speed-preset={preset} bitrate={BITRATE_KBPS} key-int-max=60 \
           threads={threads} ! h264parse config-interval=-1 ! rtph264pay config-interval=-1 \
         ! b.send_rtp_sink_0 b.send_rtp_src_0 ! udpsink host=127.0.0.1 port={out} sync=false async=false \
         b.send_rtcp_src_0 ! udpsink host=127.0.0.1 port={rtcp} sync=false async=false",
        preset = cli.preset,
        threads = cli.encoder_threads,
        out = bare_out,
        rtcp = bare_out + 1,
    );
    if audio {
        bare += &format!(
            " udpsrc port={in} caps={audio_caps} ! rtpjitterbuffer latency={JITTER_BUFFER_MS} ! rtpopusdepay \
             ! rtpopuspay pt=97 ! b.send_rtp_sink_1 \
             b.send_rtp_src_1 ! udpsink host=127.0.0.1 port={out} sync=false async=false \
             b.send_rtcp_src_1 ! udpsink host=127.0.0.1 port={rtcp} sync=false async=false",
            in = bare_in + 2,
            out = bare_out + 2,
            rtcp = bare_out + 3,
        );
    }
    bare
}

/// The publishers of `bare_description`s at `offsets`: one live encoder sends the same
/// VP8 (and Opus) to every copy.
fn source_description(width: u32, height: u32, audio: bool, offsets: &[u16]) -> String {
    let clients = |port: u16| {
        offsets
            .iter()
            .map(|offset| format!("127.0.0.1:{}", port + offset))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut source = format!(
        "videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate=30/1 \
         ! vp8enc deadline=1 cpu-used=8 keyframe-max-dist=60 target-bitrate=800000 \
           error-resilient=partitions ! rtpvp8pay mtu=1200 pt=96 ! multiudpsink clients={}",
        clients(BARE_IN_PORT)
    );
    if audio {
        source += &format!(
            " audiotestsrc is-live=true samplesperbuffer=960 wave=sine freq=440 \
             ! audio/x-raw,rate=48000,channels=2 ! opusenc frame-size=20 ! rtpopuspay pt=97 \
             ! multiudpsink clients={}",
            clients(BARE_IN_PORT + 2)
        );
    }
    source
}

#[derive(Debug, Clone, serde::Serialize)]
struct Step {
    publishers: usize,
    cores: f64,
    cores_per_stream: f64,
    rss_mib: f64,
    rss_per_stream_mib: f64,
    /// Frames per second at the stream's RTP port (copies that fill gaps included).
    min_output_fps: f64,
    mean_output_fps: f64,
    /// Encoded frames per second made from newly arrived pictures (the gateway's
    /// `pictures_out`): the frame rate the rule holds to.
    min_picture_fps: f64,
    delay_p50_ms: u64,
    delay_p95_ms: u64,
    delay_p99_ms: u64,
    /// CPU of this process, the load generator, on the same machine.
    generator_cores: f64,
}

async fn run_step(
    cli: &Cli,
    width: u32,
    height: u32,
    n: usize,
    clip: &Arc<Clip>,
    tps: f64,
) -> Result<Step> {
    let dir = tempfile::tempdir()?;
    let gateway = start_gateway(width, height, cli, cli.hls, dir.path())?;
    let pid = gateway.0.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss = rss_mib(pid)?;
    let counters: Vec<FrameCounter> = (0..n)
        .map(|k| FrameCounter::listen(RTP_BASE + 4 * k as u16))
        .collect::<Result<_>>()?;
    let mut publishers = Vec::new();
    for i in 0..n {
        publishers.push(publish(&format!("load{i}"), clip.clone()).await?);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before: Vec<u64> = counters.iter().map(FrameCounter::count).collect();
    let pictures_before = pictures_out(&api("/api/streams").await?);
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
    let streams = api("/api/streams").await?;
    let pictures_after = pictures_out(&streams);
    let min_picture_fps = (0..n)
        .map(|i| {
            let name = format!("load{i}");
            let count =
                |m: &std::collections::HashMap<String, u64>| m.get(&name).copied().unwrap_or(0);
            count(&pictures_after).saturating_sub(count(&pictures_before)) as f64 / elapsed
        })
        .fold(f64::INFINITY, f64::min);
    if cli.only.is_some() {
        for s in streams.as_array().into_iter().flatten() {
            eprintln!("{} {}", s["name"], s["stats"]);
        }
    }
    let worst = |key: &str| {
        streams
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["stats"][key].as_u64())
            .max()
            .unwrap_or(0)
    };
    let step = Step {
        publishers: n,
        cores,
        cores_per_stream: cores / n as f64,
        rss_mib: rss,
        rss_per_stream_mib: (rss - idle_rss) / n as f64,
        min_output_fps: fps.iter().cloned().fold(f64::INFINITY, f64::min),
        mean_output_fps: fps.iter().sum::<f64>() / n as f64,
        min_picture_fps,
        delay_p50_ms: worst("encoder_delay_p50_ms"),
        delay_p95_ms: worst("encoder_delay_p95_ms"),
        delay_p99_ms: worst("encoder_delay_p99_ms"),
        generator_cores,
    };
    drop(publishers);
    drop(gateway);
    Ok(step)
}

/// Every stream's `pictures_out`, by name.
fn pictures_out(streams: &Value) -> std::collections::HashMap<String, u64> {
    streams
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            Some((
                s["name"].as_str()?.to_string(),
                s["stats"]["pictures_out"].as_u64()?,
            ))
        })
        .collect()
}

/// ICE connected to the first H.264 RTP packet, and to the first HLS playlist, in ms.
async fn startup(clip: &Arc<Clip>, run: usize) -> Result<(f64, f64)> {
    let counter = FrameCounter::listen(RTP_BASE)?;
    let name = format!("startup{run}");
    let publisher = publish(&name, clip.clone()).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let first_rtp = loop {
        if let Some(at) = counter.first_packet() {
            break at;
        }
        if Instant::now() > deadline {
            bail!("no RTP arrived");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let playlist = loop {
        let text = api(&format!("/streams/{name}/stream.m3u8")).await;
        if let Ok(Value::String(text)) = text
            && text.contains("#EXTINF")
        {
            break Instant::now();
        }
        if Instant::now() > deadline {
            bail!("no HLS playlist");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ms = |at: Instant| {
        at.saturating_duration_since(publisher.connected_at)
            .as_secs_f64()
            * 1000.0
    };
    let result = (ms(first_rtp), ms(playlist));
    drop(publisher);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    Ok(result)
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    gst::init()?;
    let tps = ticks_per_second();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut report = json!({
        "machine": {"cpus": cpus, "model": cpu_model()},
        "source": "videotestsrc pattern=ball, VP8 (vp8enc deadline=1 cpu-used=8, 800 kbit/s) + Opus 440 Hz",
        "preset": cli.preset, "encoder_threads": cli.encoder_threads, "video_bitrate_kbps": BITRATE_KBPS, "hls": cli.hls, "sizes": [],
    });
    println!(
        "webrtc-gateway bench: {cpus} cores ({}), x264 {}, VP8 + Opus in, RTP out{}",
        cpu_model(),
        cli.preset,
        if cli.hls { " and HLS" } else { "" }
    );

    for (index, size) in cli.sizes.split(',').enumerate() {
        let (width, height) = size
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
            .context("sizes are WxH")?;
        let clip = Arc::new(clip(width, height)?);
        if let Some(n) = cli.only {
            let step = run_step(&cli, width, height, n, &clip, tps).await?;
            println!("{}", serde_json::to_string_pretty(&step)?);
            return Ok(());
        }
        // The bare pipeline side by side with itself 1, 2, 4 and 8 times: its cost per
        // copy falls as the machine gets busier, as the gateway's does.
        println!("\n{width}x{height}:");
        let bare_video = bare_cores(width, height, &cli, false, 1, tps)?;
        let mut bares = Vec::new();
        for n in [1, 2, 4, 8] {
            bares.push((n as usize, bare_cores(width, height, &cli, true, n, tps)?));
        }
        let bare_at = |n: usize| {
            bares
                .iter()
                .rev()
                .find(|(k, _)| *k <= n)
                .map_or(bares[0].1, |(_, cores)| *cores)
        };
        let bare = bares.iter().map(|(_, c)| *c).fold(f64::INFINITY, f64::min);
        let bare_limit = cpus as f64 / bare;
        println!(
            "bare gst-launch pipeline (video and audio), cores per copy with 1/2/4/8 copies: {}; \
             limit {bare_limit:.1} streams; its video alone, 1 copy: {bare_video:.3}",
            bares
                .iter()
                .map(|(_, c)| format!("{c:.3}"))
                .collect::<Vec<_>>()
                .join("/")
        );

        let mut startups = Vec::new();
        if index == 0 && cli.startups > 0 {
            let dir = tempfile::tempdir()?;
            let gateway = start_gateway(width, height, &cli, true, dir.path())?;
            for run in 0..cli.startups {
                startups.push(
                    startup(&clip, run)
                        .await
                        .with_context(|| format!("start-up {run}"))?,
                );
            }
            drop(gateway);
            let rtp: Vec<f64> = startups.iter().map(|s| s.0).collect();
            let hls: Vec<f64> = startups.iter().map(|s| s.1).collect();
            println!(
                "ICE connected -> first H.264 RTP packet: p50 {:.0} ms, max {:.0} ms; -> first HLS playlist: p50 {:.0} ms, max {:.0} ms",
                percentile(&rtp, 0.5),
                percentile(&rtp, 1.0),
                percentile(&hls, 0.5),
                percentile(&hls, 1.0)
            );
        }

        println!(
            "{:>4} {:>7} {:>8} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>15} {:>10}",
            "N",
            "cores",
            "cores/N",
            "gw/bare",
            "gw/video",
            "RSS/N",
            "min fps",
            "mean fps",
            "new fps",
            "delay 50/95/99",
            "generator"
        );
        let mut steps: Vec<(Step, bool)> = Vec::new();
        // Doubling until a step fails, then halving the gap between the last good and the
        // first bad until it is within an eighth.
        let (mut good_n, mut bad_n) = (0usize, None::<usize>);
        let mut n = 1;
        while n <= cli.max_streams && n > good_n {
            let step = run_step(&cli, width, height, n, &clip, tps).await?;
            println!(
                "{:>4} {:>7.2} {:>8.3} {:>9.2} {:>10.2} {:>6.1}MB {:>8.1} {:>8.1} {:>8.1} {:>6}/{}/{} ms {:>6.2} cores",
                n,
                step.cores,
                step.cores_per_stream,
                step.cores_per_stream / bare_at(n),
                step.cores_per_stream / bare_video,
                step.rss_per_stream_mib,
                step.min_output_fps,
                step.mean_output_fps,
                step.min_picture_fps,
                step.delay_p50_ms,
                step.delay_p95_ms,
                step.delay_p99_ms,
                step.generator_cores
            );
            let good = step.min_output_fps >= 0.95 * FPS && step.min_picture_fps >= 0.95 * FPS;
            steps.push((step, good));
            if good {
                good_n = n;
            } else {
                bad_n = Some(n);
            }
            n = match bad_n {
                None => n * 2,
                Some(bad) if bad - good_n > (good_n / 8).max(1) => (good_n + bad) / 2,
                Some(_) => break,
            };
        }
        let capacity_with = |held: &dyn Fn(&Step) -> bool| {
            steps
                .iter()
                .filter(|(s, good)| *good && held(s))
                .map(|(s, _)| s.publishers)
                .max()
                .unwrap_or(0)
        };
        let capacity = capacity_with(&|_| true);
        let delay_held = capacity_with(&|s| s.delay_p99_ms <= MAX_DELAY_P99_MS);
        println!(
            "capacity at {width}x{height} (every stream at 95% of {FPS} fps or more, new pictures \
             and at its port): {capacity} publishers ({:.0}% of the bare limit); \
             of the steps tried, the most with delay p99 at most {MAX_DELAY_P99_MS} ms: {delay_held} ({:.0}%)",
            100.0 * capacity as f64 / bare_limit,
            100.0 * delay_held as f64 / bare_limit,
        );
        report["sizes"].as_array_mut().expect("an array").push(json!({
            "width": width, "height": height,
            "bare_cores_per_stream": bares.iter().map(|(n, c)| json!({"copies": n, "cores_per_copy": c})).collect::<Vec<_>>(),
            "bare_video_only_cores_per_stream": bare_video,
            "bare_limit": bare_limit,
            "startup_ms": startups.iter().map(|s| json!({"first_rtp": s.0, "first_playlist": s.1})).collect::<Vec<_>>(),
            "steps": steps.iter().map(|(s, good)| json!({"step": s, "good": good})).collect::<Vec<_>>(),
            "capacity": capacity, "capacity_delay_held": delay_held,
        }));
    }
    if let Some(parent) = cli.json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&cli.json, serde_json::to_string_pretty(&report)?)?;
    println!("\nJSON report: {}", cli.json.display());
    Ok(())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default()
}
