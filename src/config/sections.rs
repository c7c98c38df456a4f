//! The sections of `gateway.toml` and their defaults, in one place.

use super::values::{
    HlsVariant, RecordFormat, TranscodeMode, X264Preset, empty_when_none, ip_address, ip_addresses,
    optional_ip_address, socket_address,
};
use crate::name::StreamName;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// Everything a user can set in `gateway.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub http: HttpConfig,
    pub rtp: RtpConfig,
    pub hls: HlsConfig,
    pub record: RecordConfig,
    pub transcode: TranscodeConfig,
    pub webrtc: WebrtcConfig,
    pub signalling: SignallingConfig,
    pub limits: LimitsConfig,
    pub auth: AuthConfig,
    pub hooks: HooksConfig,
    pub cluster: ClusterConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP server.
    #[serde(deserialize_with = "socket_address")]
    pub listen: SocketAddr,
    /// Directory holding the pages.
    pub www_dir: PathBuf,
    /// hls.js, installed from the npm registry at setup, served at `/hls.js`.
    pub hls_js: PathBuf,
    /// PEM certificate (chain) for HTTPS; with `tls_key`, the server speaks HTTPS.
    pub tls_cert: PathBuf,
    /// PEM private key for HTTPS.
    pub tls_key: PathBuf,
    /// Make a self-signed certificate for this machine's names and addresses at startup.
    pub tls_self_signed: bool,
    /// A client must send a request's headers (and a TLS client its handshake) and its
    /// body within this many seconds.
    pub request_timeout_s: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8080)),
            www_dir: "www".into(),
            hls_js: "node_modules/hls.js/dist/hls.min.js".into(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            tls_self_signed: false,
            request_timeout_s: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtpConfig {
    pub enabled: bool,
    #[serde(deserialize_with = "ip_address")]
    pub host: IpAddr,
    pub port_base: u32,
    pub sdp_dir: PathBuf,
    /// Time to live of multicast packets.
    pub multicast_ttl: u32,
}

impl Default for RtpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_base: 5004,
            sdp_dir: PathBuf::new(),
            multicast_ttl: 16,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HlsConfig {
    pub enabled: bool,
    pub dir: PathBuf,
    pub segment_duration_s: u32,
    pub playlist_length: u32,
    /// How long an ended stream's playlist stays served (and continuable), seconds.
    pub linger_s: u32,
    pub variant: HlsVariant,
    /// Target duration of a Low-Latency HLS part, milliseconds.
    pub part_duration_ms: u32,
}

impl Default for HlsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: PathBuf::new(),
            segment_duration_s: 2,
            playlist_length: 6,
            linger_s: 30,
            variant: HlsVariant::LowLatency,
            part_duration_ms: 500,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordConfig {
    pub enabled: bool,
    pub dir: PathBuf,
    pub format: RecordFormat,
    /// Where every recording is also written, while it is recorded: `s3://bucket/prefix`,
    /// `gs://...`, `az://...`, `file:///path`; empty: nowhere.
    pub upload_url: String,
    /// The endpoint of an S3-compatible store (path-style requests).
    pub upload_endpoint: String,
    /// False: a local recording is deleted once its upload is complete and verified.
    pub keep_local: bool,
    /// The size of each uploaded part but the last (S3 and GCS take no less than 5 MiB).
    pub upload_part_kib: u32,
}

impl Default for RecordConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            dir: "recordings".into(),
            format: RecordFormat::Mp4,
            upload_url: String::new(),
            upload_endpoint: String::new(),
            keep_local: true,
            upload_part_kib: 8192,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranscodeConfig {
    /// `always`: every video is transcoded; `auto`: H.264 is passed through.
    pub mode: TranscodeMode,
    pub width: u32,
    pub height: u32,
    pub framerate: u32,
    pub video_bitrate_kbps: u32,
    pub x264_preset: X264Preset,
    pub keyframe_interval_s: u32,
    /// Threads of each stream's H.264 encoder; 0 lets x264 use one per core.
    pub encoder_threads: u32,
    /// How long the receive jitter buffers wait for late or retransmitted packets.
    pub jitter_buffer_ms: u32,
    /// Directory of the pipeline templates.
    pub pipelines_dir: PathBuf,
}

impl Default for TranscodeConfig {
    fn default() -> Self {
        Self {
            mode: TranscodeMode::Always,
            width: 1280,
            height: 720,
            framerate: 30,
            video_bitrate_kbps: 2500,
            x264_preset: X264Preset::Veryfast,
            keyframe_interval_s: 2,
            encoder_threads: 1,
            jitter_buffer_ms: 200,
            pipelines_dir: "pipelines".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebrtcConfig {
    pub ice_servers: Vec<String>,
    /// Username for TURN servers in `ice_servers`.
    pub ice_username: String,
    /// Credential for TURN servers in `ice_servers`.
    pub ice_credential: String,
    /// When set, publishers get the TURN URLs of `ice_servers` with short-lived
    /// credentials made from this secret (the TURN REST scheme of coturn's
    /// `use-auth-secret`) instead of `ice_username` and `ice_credential`.
    pub turn_secret: String,
    #[serde(deserialize_with = "ip_addresses")]
    pub nat_1to1_ips: Vec<IpAddr>,
    /// Every publisher's ICE, DTLS and SRTP over UDP on this one port; 0: an ephemeral
    /// port per publisher.
    pub udp_port: u32,
    /// ICE over TCP (passive candidates, RFC 4571 framing) on this one port; 0: off.
    pub tcp_port: u32,
    /// The HTTP(S) listener also takes ICE over TCP: a connection whose first bytes are a
    /// framed STUN message goes to the publisher it names.
    pub ice_on_http: bool,
    /// Local address the ICE agent binds; `0.0.0.0` (or empty: none) means every
    /// non-loopback interface.
    #[serde(
        deserialize_with = "optional_ip_address",
        serialize_with = "empty_when_none"
    )]
    pub bind_address: Option<IpAddr>,
    /// A connected publisher that sends no RTP for this many seconds is ended (`no-media`).
    pub media_timeout_s: u32,
}

impl Default for WebrtcConfig {
    fn default() -> Self {
        Self {
            ice_servers: Vec::new(),
            ice_username: String::new(),
            ice_credential: String::new(),
            turn_secret: String::new(),
            nat_1to1_ips: Vec::new(),
            udp_port: 8189,
            tcp_port: 8189,
            ice_on_http: true,
            bind_address: None,
            media_timeout_s: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignallingConfig {
    /// A WebSocket that has not sent `publish` within this many seconds is closed.
    pub publish_timeout_s: u32,
}

impl Default for SignallingConfig {
    fn default() -> Self {
        Self {
            publish_timeout_s: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_publishers: u32,
    /// Largest signalling message accepted, in bytes.
    pub max_message_bytes: u32,
    /// Extra RTP destinations the control API may add to one stream.
    pub max_rtp_destinations: u32,
    /// Open HTTP and WebSocket connections; more are refused at once.
    pub max_connections: u32,
    /// Remote ICE candidates taken per publisher, offer and trickle together.
    pub max_remote_candidates: u32,
    /// A publisher whose pictures are larger is ended (`input-too-large`) before any
    /// frame that size is decoded (VP8 key frame headers; H.264 is not checked yet).
    pub max_input_width: u32,
    pub max_input_height: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_publishers: 16,
            max_message_bytes: 64 * 1024,
            max_rtp_destinations: 4,
            max_connections: 4096,
            max_remote_candidates: 50,
            max_input_width: 3840,
            max_input_height: 2160,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// When set, publishing (WebSocket or WHIP) needs this token, or the stream's own.
    pub publish_token: String,
    /// When set, SDP files, playlists, segments and recordings need this token.
    pub read_token: String,
    /// When set, the control API needs this token.
    pub admin_token: String,
    /// Tokens that let publishers publish one stream each.
    pub streams: Vec<StreamTokenConfig>,
    /// When set, a JSON Web Token signed with this secret (HS256) is taken wherever a
    /// token is; its `publish` and `read` claims list the names it allows.
    pub jwt_secret: String,
    /// When set, JSON Web Tokens signed (RS256, ES256) with a key of this JSON Web Key
    /// Set are taken too.
    pub jwks_url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamTokenConfig {
    pub name: StreamName,
    pub token: String,
}

/// The operator's own services, asked before a publish or a read and told of events.
/// Every request carries `X-Gateway-Signature: sha256=HEX`, an HMAC of its body with
/// `secret`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HooksConfig {
    /// When set, each publish is first POSTed there; a 2xx allows it.
    pub publish_url: String,
    /// When set, each read (SDP, playlists, segments, recordings) is asked there; an
    /// allowed (token, stream) pair is remembered for `cache_s`.
    pub read_url: String,
    /// When set, events (`stream.published`, `stream.ended`, `recording.finished`,
    /// `upload.completed`) are POSTed there, at least once, retried with backoff.
    pub events_url: String,
    /// The key of every hook request's signature.
    pub secret: String,
    /// The wait for a hook's answer.
    pub timeout_ms: u32,
    /// How long an allowed read is remembered.
    pub cache_s: u32,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            publish_url: String::new(),
            read_url: String::new(),
            events_url: String::new(),
            secret: String::new(),
            timeout_ms: 2000,
            cache_s: 10,
        }
    }
}

/// Several gateways as one service. Empty `redis_url`: this node on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The Redis that holds the cluster; empty: one node on its own.
    pub redis_url: String,
    /// This node's name in the cluster; empty: the host name and the HTTP port.
    pub node_id: String,
    /// The base URL the other nodes reach this one by; empty: `http://` this node's
    /// address and HTTP port.
    pub advertise_url: String,
    /// A node that has not renewed its claims for this long is taken as gone.
    pub lease_ms: u32,
    /// Signs the requests nodes forward to each other; when set, a forwarded request
    /// without its signature is refused. Empty: forwarded requests are taken unsigned.
    pub secret: String,
    /// The authority (PEM) that signs the nodes' certificates, for `https://` advertise
    /// URLs; empty: the system's roots.
    pub ca_file: PathBuf,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: String::new(),
            node_id: String::new(),
            advertise_url: String::new(),
            lease_ms: 5000,
            secret: String::new(),
            ca_file: PathBuf::new(),
        }
    }
}
