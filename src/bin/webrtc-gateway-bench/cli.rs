//! The command line and the fixed settings of every run.

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "webrtc-gateway-bench", version, about)]
pub struct Cli {
    /// Output sizes to sweep, `WxH` separated by commas.
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
    /// `--passthrough`, H.264 publishers passed through.
    #[arg(long)]
    pub only: Option<usize>,
    /// Keep HLS on during the sweep (AAC encoding and MPEG-TS segments cost more; the
    /// bare pipeline makes neither).
    #[arg(long)]
    pub hls: bool,
    /// Instead of the sweep: what hostile clients cost (idle WebSockets, a candidate
    /// flood, a publisher that sends no media), with the default limits.
    #[arg(long)]
    pub abuse: bool,
    /// Instead of the sweep: glass-to-glass latency of RTP (ffmpeg) and HLS (hls.js in
    /// headless Chromium) in each HLS variant, and 1,000 held playlist requests.
    #[arg(long)]
    pub latency: bool,
    /// Instead of the sweep: simulated low-latency viewers (1, 10, 100, 1,000) through
    /// Varnish with the README's configuration, and straight at the gateway: the
    /// requests a second that reach the gateway, and the time the cache adds.
    #[arg(long)]
    pub cache: bool,
    /// Instead of the sweep: `--only N` (16 unless given) transcoded publishers recorded
    /// to MP4, without and then with uploads to an S3-compatible store (s3s-fs): frame
    /// rate and delay of the live streams while recordings upload, and the upload rate.
    #[arg(long)]
    pub upload: bool,
    /// Instead of the sweep: two nodes sharing a Redis behind HAProxy (the README's
    /// configuration): the latency forwarding adds to a playlist, a part and a segment,
    /// Redis commands per node and per stream (over `--seconds`), and the time from
    /// SIGKILL of a node to its publisher live again on the other.
    #[arg(long)]
    pub cluster: bool,
    /// With `--latency`: hls.js plays through Varnish with the README's configuration.
    #[arg(long)]
    pub via_varnish: bool,
    /// With `--latency`: the HLS variants measured.
    #[arg(long, default_value = "lowlatency,fmp4,mpegts")]
    pub variants: String,
    /// Instead of the sweep: H.264 publishers passed through (`transcode.mode = "auto"`)
    /// against the same publishers transcoded, at each size, in one run: the receive-only
    /// cost, then capacity (by frame rate and within the delay target), cores and RSS per
    /// stream of both. With `--latency`: the publisher sends H.264 and the gateway
    /// passes it through.
    #[arg(long)]
    pub passthrough: bool,
    /// With `--passthrough`: the most publishers the pass-through sweep tries.
    #[arg(long, default_value_t = 256)]
    pub max_passthrough: usize,
    /// Where the JSON report goes.
    #[arg(long, default_value = "target/bench.json")]
    pub json: PathBuf,
}

pub const HTTP_PORT: u16 = 18480;
pub const RTP_BASE: u16 = 30000;
pub const BARE_IN_PORT: u16 = 28500;
/// The S3-compatible store of `--upload`.
pub const S3_PORT: u16 = 18490;
/// With uploads: recordings left from before (as after a restart) that upload while the
/// streams are measured, so that the upload runs beside them: how many, MiB each.
pub const BACKLOG_FILES: usize = 8;
pub const BACKLOG_MIB: usize = 64;
pub const S3_ACCESS_KEY: &str = "bench";
pub const S3_SECRET_KEY: &str = "bench-secret";
pub const BARE_OUT_PORT: u16 = 28510;
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
    /// ... also uploaded to the S3-compatible store at `S3_PORT`.
    Upload,
}
