//! What the gateway shows of a stream: its state, tracks, outputs and live statistics, as
//! the API serves them, and why a stream ended. Plain data, no I/O.

use crate::name::StreamName;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamState {
    Connecting,
    Live,
    /// The publisher left; the HLS playlist stays served for `hls.linger_s`.
    Ended,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VideoInfo {
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// The codec the publisher sends, before transcoding.
    pub input_codec: String,
    /// The size of the publisher's pictures (it may change mid-stream); null until the
    /// first one is decoded.
    pub input_width: Option<u32>,
    pub input_height: Option<u32>,
    /// The publisher's H.264 goes to the outputs as it came (`transcode.mode = "auto"`):
    /// `width`, `height` and `fps` are then the publisher's (0 until its first SPS).
    pub passthrough: bool,
}

/// Which path carries a publisher's media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum MediaPath {
    /// UDP (`webrtc.udp_port`).
    #[serde(rename = "udp")]
    Udp,
    /// ICE over TCP on `webrtc.tcp_port`.
    #[serde(rename = "tcp")]
    Tcp,
    /// ICE over TCP on the HTTP(S) port (`webrtc.ice_on_http`).
    #[serde(rename = "tcp-http")]
    TcpHttp,
    /// Through a TURN server.
    #[serde(rename = "relay")]
    Relay,
}

impl MediaPath {
    pub const ALL: [MediaPath; 4] = [Self::Udp, Self::Tcp, Self::TcpHttp, Self::Relay];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::TcpHttp => "tcp-http",
            Self::Relay => "relay",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AudioInfo {
    pub codec: String,
    pub sample_rate: u32,
    pub channels: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Outputs {
    pub sdp: Option<String>,
    pub hls: Option<String>,
    pub recording: Option<String>,
}

/// Live statistics of a stream, sampled every second.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StreamStats {
    pub packets_received: u64,
    pub bytes_received: u64,
    pub packets_lost: i64,
    pub nacks_sent: u64,
    pub plis_sent: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    /// Encoded frames made from a newly arrived picture; `frames_out` also counts the
    /// copies that keep the frame rate through gaps.
    pub pictures_out: u64,
    pub input_fps: f64,
    pub output_fps: f64,
    pub bitrate_kbps: f64,
    /// From a frame's arrival to its H.264 leaving the encoder, last frame.
    pub encoder_delay_ms: f64,
    /// The same over every frame so far: median, 95th and 99th percentiles.
    pub encoder_delay_p50_ms: Option<u64>,
    pub encoder_delay_p95_ms: Option<u64>,
    pub encoder_delay_p99_ms: Option<u64>,
    /// Video packets the receive jitter buffer gave up on: never arrived in time
    /// (lost), or arrived after their time had passed (late).
    pub jitter_buffer_lost: u64,
    pub jitter_buffer_late: u64,
    /// How long the receive jitter buffers wait now: `transcode.jitter_buffer_ms`, or
    /// longer on a long round trip.
    pub jitter_buffer_ms: u64,
    /// The round trip to the publisher (the ICE agent's consent checks); null before
    /// the first.
    pub round_trip_ms: Option<f64>,
    pub hls_segments: u64,
    pub recording_bytes: u64,
    /// Remote ICE candidates ignored past `limits.max_remote_candidates`.
    pub candidates_ignored: u64,
}

/// An extra RTP destination added through the control API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RtpDestination {
    pub id: String,
    pub host: String,
    pub video_port: u16,
    pub audio_port: u16,
    pub sdp: String,
}

/// A stream as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamInfo {
    pub name: StreamName,
    pub state: StreamState,
    pub started_at: String,
    pub video: Option<VideoInfo>,
    pub audio: Option<AudioInfo>,
    /// Which path carries the media; null until connected.
    pub transport: Option<MediaPath>,
    pub outputs: Outputs,
    /// The port slot: RTP goes to `port_base + 4 * slot` and the three ports after it.
    /// None once the stream has ended.
    pub slot: Option<u32>,
    /// How the publisher connected (`websocket`, `whip`).
    pub publisher: String,
    /// The node that holds the stream (`/api/cluster`).
    pub node: String,
    /// Why the recording stopped early, if it did; the stream went on.
    pub recording_error: Option<String>,
    /// Why HLS stopped early, if it did; the stream went on.
    pub hls_error: Option<String>,
    pub stats: StreamStats,
    pub rtp_destinations: Vec<RtpDestination>,
}

/// Why a stream ended, as its publisher is told in `ended`, the log says and the metrics
/// count (by [`EndReason::kind`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndReason {
    #[error("unpublished")]
    Unpublished,
    #[error("publisher-gone")]
    PublisherGone,
    #[error("ice-failed")]
    IceFailed,
    #[error("connect-timeout")]
    ConnectTimeout,
    /// Connected, but no RTP for `webrtc.media_timeout_s`.
    #[error("no-media")]
    NoMedia,
    /// The publisher's pictures are larger than `limits.max_input_*`.
    #[error("input-too-large")]
    InputTooLarge,
    #[error("shutdown")]
    Shutdown,
    #[error("stopped-by-operator")]
    Stopped,
    /// In a cluster, another node claimed the name while this one could not reach Redis.
    #[error("name-claimed-elsewhere")]
    NameClaimedElsewhere,
    #[error("pipeline-error: {0}")]
    PipelineError(String),
    #[error("internal-error")]
    InternalError,
}

impl EndReason {
    /// The reason without its details: the metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            EndReason::Unpublished => "unpublished",
            EndReason::PublisherGone => "publisher-gone",
            EndReason::IceFailed => "ice-failed",
            EndReason::ConnectTimeout => "connect-timeout",
            EndReason::NoMedia => "no-media",
            EndReason::InputTooLarge => "input-too-large",
            EndReason::Shutdown => "shutdown",
            EndReason::Stopped => "stopped-by-operator",
            EndReason::NameClaimedElsewhere => "name-claimed-elsewhere",
            EndReason::PipelineError(_) => "pipeline-error",
            EndReason::InternalError => "internal-error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_and_its_kind() {
        let reason = EndReason::PipelineError("video_decoder: failed".into());
        assert_eq!(reason.to_string(), "pipeline-error: video_decoder: failed");
        assert_eq!(reason.kind(), "pipeline-error");
        for reason in [
            EndReason::Unpublished,
            EndReason::Stopped,
            EndReason::Shutdown,
        ] {
            assert_eq!(reason.to_string(), reason.kind());
        }
    }
}
