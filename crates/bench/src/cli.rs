//! The command line and the fixed settings of every run.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::sync::OnceLock;

#[derive(Parser)]
#[command(name = "webrtc-gateway-bench", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub run: Run,
    /// Where the JSON report goes.
    #[arg(long, global = true, default_value = "target/bench.json")]
    pub json: PathBuf,
}

/// What the bench measures.
#[derive(Subcommand, Clone)]
pub enum Run {
    /// Start-up time, then the capacity sweep against a bare gst-launch pipeline at each
    /// size: cores, RSS, frame rate and delay for 1, 2, 4, ... publishers.
    Startup(LoadArgs),
    /// H.264 publishers passed through (`transcode.mode = "auto"`) against the same
    /// publishers transcoded, at each size, in one run: the receive-only cost, then
    /// capacity (by frame rate and within the delay target), cores and RSS per stream of
    /// both.
    Passthrough {
        #[command(flatten)]
        sweep: LoadArgs,
        /// The most publishers the pass-through sweep tries.
        #[arg(long, default_value_t = 256)]
        max_passthrough: usize,
    },
    /// What hostile clients cost (idle WebSockets, a candidate flood, a publisher that
    /// sends no media), with the default limits.
    Abuse,
    /// Glass-to-glass latency of RTP (ffmpeg) and HLS (hls.js in headless Chromium) in
    /// each HLS variant, and 1,000 held playlist requests.
    Latency {
        /// Seconds each variant is measured.
        #[arg(long, default_value_t = 15)]
        seconds: u64,
        /// hls.js plays through Varnish with the README's configuration.
        #[arg(long)]
        via_varnish: bool,
        /// The HLS variants measured.
        #[arg(long, default_value = "lowlatency,fmp4,mpegts")]
        variants: String,
        /// The publisher sends H.264 and the gateway passes it through.
        #[arg(long)]
        passthrough: bool,
        /// The hls.js settings measured, each in a browser of its own on the same
        /// publication: `defaults` (`lowLatencyMode` only, as most pages that embed hls.js
        /// play) and `dashboard` (also `maxLiveSyncPlaybackRate: 1.5`, as the dashboard).
        #[arg(long, default_value = "defaults,dashboard")]
        players: String,
        /// Low-latency part durations to measure, ms, a gateway each (`hls.part_duration_ms`);
        /// empty: the gateway's default.
        #[arg(long, default_value = "")]
        part_ms: String,
        /// `hls.segment_duration_s` (and `transcode.keyframe_interval_s`) of the gateways;
        /// 0: the gateway's default.
        #[arg(long, default_value_t = 0)]
        segment_s: u32,
    },
    /// Simulated low-latency viewers (1, 10, 100, 1,000) through Varnish with the
    /// README's configuration, and straight at the gateway: the requests a second that
    /// reach the gateway, and the time the cache adds.
    Cache {
        /// Seconds each number of viewers is measured.
        #[arg(long, default_value_t = 15)]
        seconds: u64,
    },
    /// `--only N` (16 unless given) transcoded publishers recorded to MP4, without and
    /// then with uploads to an S3-compatible store (s3s-fs): frame rate and delay of the
    /// live streams while recordings upload, and the upload rate.
    Upload(LoadArgs),
    /// Two nodes sharing a Redis behind HAProxy (the README's configuration): the
    /// latency forwarding adds to a playlist, a part and a segment, Redis commands per
    /// node and per stream (over `--seconds`), and the time from SIGKILL of a node to
    /// its publisher live again on the other.
    Cluster {
        /// Seconds Redis's commands are counted over.
        #[arg(long, default_value_t = 15)]
        seconds: u64,
    },
    /// One UDP port for every publisher against a socket per publisher, in one run:
    /// cores and RSS per passed-through stream, UDP sockets and threads, offer to
    /// answer and ICE connected to live (p50/p99) at each number of publishers; then
    /// `--timed` publications one after another over UDP, ICE-TCP (its port, the HTTP
    /// port) and relayed through coturn on loopback.
    Networks {
        /// Numbers of publishers at once, each in both modes.
        #[arg(long, default_value = "32,128")]
        publishers: String,
        /// The publishers' picture size, `WxH`.
        #[arg(long, default_value = "1280x720")]
        size: String,
        /// Seconds of steady load each step measures.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Publications timed on each path (0: none).
        #[arg(long, default_value_t = 10)]
        timed: usize,
    },
    /// What the hooks cost: WHIP offer to answer without and with a publish hook, and
    /// the read-hook calls of one HLS viewer over `--seconds` (goal: at most
    /// seconds / hooks.cache_s + 1).
    Access {
        /// Seconds the viewer watches.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// The gateway under churn for `--soak MINUTES`, killed and restarted a third of the
    /// way: RSS, descriptors, threads, tasks, allocators, HLS and recording directories
    /// and counters sampled; fails when any trends upward over the last half, or memory
    /// does not come back when the streams have ended.
    Soak(SoakArgs),
}

/// The soak run's length and load.
#[derive(Args, Clone)]
pub struct SoakArgs {
    /// Minutes of churn.
    #[arg(long, default_value_t = 60)]
    pub soak: u64,
    /// Seconds between samples (a minute, or less for short runs: 30 samples at least).
    #[arg(long)]
    pub sample_s: Option<u64>,
    /// Publishers live at a time.
    #[arg(long, default_value_t = 6)]
    pub live: usize,
    /// The gateway binary (the release build beside the bench unless given).
    #[arg(long)]
    pub gateway: Option<PathBuf>,
}

/// The publishers, sizes and encoder of the runs that load the gateway.
#[derive(Args, Clone)]
pub struct LoadArgs {
    /// Output sizes to sweep, `WxH` separated by commas (the first only, for `upload`).
    #[arg(long, default_value = "640x360,1280x720")]
    pub sizes: String,
    /// The most publishers a sweep tries.
    #[arg(long, default_value_t = 64)]
    pub max_streams: usize,
    /// Seconds of steady load each step measures.
    #[arg(long, default_value_t = 15)]
    pub seconds: u64,
    /// Publications whose start-up is timed.
    #[arg(long, default_value_t = 5)]
    pub startups: usize,
    #[arg(long, default_value = "ultrafast")]
    pub preset: String,
    /// x264 threads per stream, in the gateway (`transcode.encoder_threads`) and in the
    /// bare pipeline; 0 lets x264 choose.
    #[arg(long, default_value_t = 1)]
    pub encoder_threads: u32,
    /// Run only this many publishers at the first size (no sweep, no baseline); with
    /// `passthrough`, H.264 publishers passed through.
    #[arg(long)]
    pub only: Option<usize>,
    /// Keep HLS on during the sweep (AAC encoding and MPEG-TS segments cost more; the
    /// bare pipeline makes neither).
    #[arg(long)]
    pub hls: bool,
}

impl Default for LoadArgs {
    fn default() -> LoadArgs {
        LoadArgs {
            sizes: "640x360,1280x720".into(),
            max_streams: 64,
            seconds: 15,
            startups: 5,
            preset: "ultrafast".into(),
            encoder_threads: 1,
            only: None,
            hls: false,
        }
    }
}

/// Everything a run reads, from its subcommand.
#[derive(Clone, Default)]
pub struct Options {
    pub sizes: String,
    pub max_streams: usize,
    pub seconds: u64,
    pub startups: usize,
    pub preset: String,
    pub encoder_threads: u32,
    pub only: Option<usize>,
    pub hls: bool,
    pub max_passthrough: usize,
    pub via_varnish: bool,
    pub variants: String,
    /// `latency`: the publisher sends H.264, passed through.
    pub passthrough: bool,
    /// `latency`: the hls.js settings, the part durations and the segment duration.
    pub players: String,
    pub part_ms: String,
    pub segment_s: u32,
    /// `networks`: numbers of publishers, and publications timed on each path.
    pub publishers: String,
    pub timed: usize,
}

impl From<LoadArgs> for Options {
    fn from(sweep: LoadArgs) -> Options {
        let LoadArgs {
            sizes,
            max_streams,
            seconds,
            startups,
            preset,
            encoder_threads,
            only,
            hls,
        } = sweep;
        Options {
            sizes,
            max_streams,
            seconds,
            startups,
            preset,
            encoder_threads,
            only,
            hls,
            ..Options::default()
        }
    }
}

impl Options {
    /// The options of `run`.
    pub fn of(run: &Run) -> Options {
        match run.clone() {
            Run::Startup(sweep) | Run::Upload(sweep) => sweep.into(),
            Run::Passthrough {
                sweep,
                max_passthrough,
            } => Options {
                max_passthrough,
                ..sweep.into()
            },
            Run::Abuse | Run::Soak(_) => LoadArgs::default().into(),
            Run::Latency {
                seconds,
                via_varnish,
                variants,
                passthrough,
                players,
                part_ms,
                segment_s,
            } => Options {
                seconds,
                via_varnish,
                variants,
                passthrough,
                players,
                part_ms,
                segment_s,
                ..LoadArgs::default().into()
            },
            Run::Networks {
                publishers,
                size,
                seconds,
                timed,
            } => Options {
                publishers,
                sizes: size,
                seconds,
                timed,
                ..LoadArgs::default().into()
            },
            Run::Cache { seconds } | Run::Cluster { seconds } | Run::Access { seconds } => {
                Options {
                    seconds,
                    ..LoadArgs::default().into()
                }
            }
        }
    }
}

/// A free port, chosen once per run.
fn once(cell: &'static OnceLock<u16>, choose: fn() -> u16) -> u16 {
    *cell.get_or_init(choose)
}

/// `webrtc.udp_port` and `webrtc.tcp_port` lines with ports free now: a gateway under test
/// never takes 8189, which another may hold.
pub fn ice_ports() -> String {
    format!(
        "udp_port = {}\ntcp_port = {}\n",
        webrtc_gateway_testkit::free_udp_port(),
        webrtc_gateway_testkit::free_tcp_port()
    )
}

/// The HTTP port of the gateway under test.
pub fn http_port() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    once(&PORT, webrtc_gateway_testkit::free_tcp_port)
}

/// The gateway's `rtp.port_base`: four ports a publisher, for as many as a sweep tries.
pub fn rtp_base() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    once(&PORT, || webrtc_gateway_testkit::free_udp_range(4 * 256))
}

/// The bare pipelines' ports: copy k receives at `bare_in_port() + 20 k` and sends to
/// `bare_out_port() + 20 k`.
fn bare_ports() -> u16 {
    static PORT: OnceLock<u16> = OnceLock::new();
    once(&PORT, || {
        webrtc_gateway_testkit::free_udp_range(8 * 20 + 20)
    })
}

/// The port of the S3-compatible store, once `upload` has started it.
pub static S3_STORE_PORT: OnceLock<u16> = OnceLock::new();

pub fn bare_in_port() -> u16 {
    bare_ports()
}

pub fn bare_out_port() -> u16 {
    bare_ports() + 10
}

/// With uploads: recordings left from before (as after a restart) that upload while the
/// streams are measured, so that the upload runs beside them: how many, MiB each.
pub const BACKLOG_FILES: usize = 8;
pub const BACKLOG_MIB: usize = 64;
pub const BITRATE_KBPS: u32 = 1000;
/// The gateway's default `transcode.jitter_buffer_ms`, in both.
pub const JITTER_BUFFER_MS: u32 = 200;
pub const FPS: f64 = 30.0;
/// The delay target at p99: the most streams that met it is reported beside capacity.
pub const MAX_DELAY_P99_MS: u64 = 150;

/// What the publishers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum SourceCodec {
    Vp8,
    H264,
}

/// How the gateway under test runs: its `transcode.mode` and outputs.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct GatewaySettings {
    /// `transcode.mode = "auto"`: H.264 passes through.
    pub passthrough: bool,
    pub rtp: bool,
    pub hls: bool,
    pub record: Record,
}

/// Whether the gateway under test records, and uploads its recordings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub enum Record {
    #[default]
    Off,
    /// MP4 recordings on disk.
    Local,
    /// ... also uploaded to the S3-compatible store at `S3_STORE_PORT`.
    Upload,
}
