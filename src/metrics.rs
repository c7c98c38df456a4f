//! Metrics as Prometheus (OpenMetrics) text. Process-wide counters are families registered
//! once at start; the per-stream series (label `stream`) are collected at each scrape from
//! the registry's snapshot of the streams, by a [`Collector`].

use crate::cluster::{ClusterStatus, RedisState};
use crate::events::DeliveryCounters;
use crate::stream::{EndReason, MediaPath, StreamInfo, StreamState};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabel {
    stream: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    transport: String,
}

/// What the uploads of recordings to object storage count.
#[derive(Debug, Clone, Default)]
pub struct UploadCounters {
    pub bytes: Counter,
    pub completed: Counter,
}

/// The metrics the gateway keeps, and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    publications_started: Counter,
    publications_ended: Family<ReasonLabel, Counter>,
    signalling_errors: Family<CodeLabel, Counter>,
    whip_requests: Family<StatusLabel, Counter>,
    hls_requests: Family<KindLabel, Counter>,
    pub uploads: UploadCounters,
    /// The event webhooks' deliveries (`hooks.events_url`).
    pub events: DeliveryCounters,
    connections_open: Gauge,
    connections_refused: Counter,
    candidates_ignored: Counter,
    forwarded: Family<KindLabel, Counter>,
    cluster_nodes: Gauge,
    cluster_redis_up: Gauge,
    cluster_redis_calls: Counter,
    /// The streams as the last scrape saw them.
    streams: Arc<Mutex<Vec<StreamInfo>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("webrtc_gateway");
        let publications_started = Counter::default();
        registry.register(
            "publications_started",
            "Publications started",
            publications_started.clone(),
        );
        let publications_ended = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "publications_ended",
            "Publications ended, by reason",
            publications_ended.clone(),
        );
        let signalling_errors = Family::<CodeLabel, Counter>::default();
        registry.register(
            "signalling_errors",
            "WebSocket signalling errors sent, by code",
            signalling_errors.clone(),
        );
        let whip_requests = Family::<StatusLabel, Counter>::default();
        registry.register(
            "whip_requests",
            "WHIP requests answered, by status",
            whip_requests.clone(),
        );
        let hls_requests = Family::<KindLabel, Counter>::default();
        registry.register(
            "hls_requests",
            "HLS requests that reached the gateway, by what they asked for: multivariant, \
             playlist, blocking (a blocking playlist reload), part, segment, init",
            hls_requests.clone(),
        );
        let uploads = UploadCounters::default();
        registry.register(
            "upload_bytes",
            "Bytes of recordings uploaded to object storage (record.upload_url)",
            uploads.bytes.clone(),
        );
        registry.register(
            "uploads_completed",
            "Recordings whose upload was completed and verified",
            uploads.completed.clone(),
        );
        let events = DeliveryCounters::default();
        registry.register(
            "hook_events_delivered",
            "Events delivered to hooks.events_url (answered with a 2xx)",
            events.delivered.clone(),
        );
        registry.register(
            "hook_events_failed",
            "Deliveries of events to hooks.events_url that failed (refused or unanswered; \
             each is tried again)",
            events.failed.clone(),
        );
        registry.register(
            "hook_events_dropped",
            "Events given up after an hour of failed deliveries",
            events.dropped.clone(),
        );
        registry.register(
            "hook_events_pending",
            "Events waiting for delivery to hooks.events_url",
            events.pending.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "HTTP and WebSocket connections open now",
            connections_open.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Connections closed at once past limits.max_connections",
            connections_refused.clone(),
        );
        let candidates_ignored = Counter::default();
        registry.register(
            "candidates_ignored",
            "Remote ICE candidates ignored past limits.max_remote_candidates",
            candidates_ignored.clone(),
        );
        let forwarded = Family::<KindLabel, Counter>::default();
        registry.register(
            "forwarded_requests",
            "Requests forwarded to the node of the cluster that holds the stream, by kind: \
             playlist, media, sdp, api, whip, recording, websocket",
            forwarded.clone(),
        );
        let cluster_nodes = Gauge::default();
        registry.register(
            "cluster_nodes",
            "Live nodes of the cluster, as the last scrape read them from Redis",
            cluster_nodes.clone(),
        );
        let cluster_redis_up = Gauge::default();
        registry.register(
            "cluster_redis_up",
            "1 while the cluster's Redis answers, 0 while it does not",
            cluster_redis_up.clone(),
        );
        let cluster_redis_calls = Counter::default();
        registry.register(
            "cluster_redis_calls",
            "Calls this node made to the cluster's Redis (a script counts as one)",
            cluster_redis_calls.clone(),
        );
        let streams = Arc::new(Mutex::new(Vec::new()));
        registry.register_collector(Box::new(StreamSeries(streams.clone())));
        Self {
            registry,
            publications_started,
            publications_ended,
            signalling_errors,
            whip_requests,
            hls_requests,
            uploads,
            events,
            connections_open,
            connections_refused,
            candidates_ignored,
            forwarded,
            cluster_nodes,
            cluster_redis_up,
            cluster_redis_calls,
            streams,
        }
    }
}

impl Metrics {
    pub fn publication_started(&self) {
        self.publications_started.inc();
    }

    pub fn publication_ended(&self, reason: &EndReason) {
        self.publications_ended
            .get_or_create(&ReasonLabel {
                reason: reason.kind(),
            })
            .inc();
    }

    pub fn signalling_error(&self, code: u16) {
        self.signalling_errors
            .get_or_create(&CodeLabel { code })
            .inc();
    }

    pub fn whip_request(&self, status: u16) {
        self.whip_requests
            .get_or_create(&StatusLabel { status })
            .inc();
    }

    /// An HLS request reached the gateway (past any cache in front of it).
    pub fn hls_request(&self, kind: &'static str) {
        self.hls_requests.get_or_create(&KindLabel { kind }).inc();
    }

    /// A connection opened; it counts as open until the guard is dropped.
    pub fn connection_opened(&self) -> OpenConnection {
        self.connections_open.inc();
        OpenConnection(self.connections_open.clone())
    }

    pub fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    pub fn candidates_ignored(&self, count: u64) {
        self.candidates_ignored.inc_by(count);
    }

    /// A request was forwarded to another node of the cluster.
    pub fn forwarded(&self, kind: &'static str) {
        self.forwarded.get_or_create(&KindLabel { kind }).inc();
    }

    /// The cluster as this node sees it now: the live nodes (unknown while Redis is
    /// away), whether Redis answers (never, for a node on its own), and the calls made
    /// to it so far.
    pub fn cluster(&self, nodes: Option<usize>, status: ClusterStatus) {
        if let Some(nodes) = nodes {
            self.cluster_nodes.set(nodes as i64);
        }
        self.cluster_redis_up
            .set(i64::from(status.redis == Some(RedisState::Connected)));
        let counted = self.cluster_redis_calls.get();
        self.cluster_redis_calls
            .inc_by(status.calls.saturating_sub(counted));
    }

    /// Counts what the ICE mux drops.
    pub fn register_ice_mux(&mut self, counters: &crate::net::Counters) {
        let registry = &mut self.registry;
        registry.register(
            "ice_datagrams_unknown",
            "UDP datagrams on the ICE port from an address no publisher has used that named none",
            counters.udp_unknown.clone(),
        );
        registry.register(
            "ice_datagrams_dropped",
            "UDP datagrams on the ICE port dropped because their publisher's queue was full",
            counters.udp_queue_full.clone(),
        );
        registry.register(
            "ice_datagrams_unsent",
            "UDP datagrams to publishers not sent because the ICE socket's send buffer was full",
            counters.udp_send_dropped.clone(),
        );
        registry.register(
            "ice_tcp_unknown",
            "ICE TCP connections closed because their first frame named no publisher",
            counters.tcp_unknown.clone(),
        );
    }

    /// The metrics text for a scrape, with `streams` as the registry lists them now.
    pub fn render(&self, streams: Vec<StreamInfo>) -> String {
        *self.streams.lock().unwrap_or_else(|e| e.into_inner()) = streams;
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String");
        text
    }
}

/// An open connection, counted in `connections_open` while it lives.
#[derive(Debug)]
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The per-stream series and the live publishers, from the streams' snapshot.
#[derive(Debug)]
struct StreamSeries(Arc<Mutex<Vec<StreamInfo>>>);

type Value<T> = fn(&StreamInfo) -> T;

const COUNTERS: [(&str, &str, Value<u64>); 7] = [
    ("stream_bytes_in", "RTP bytes received", |s| {
        s.stats.bytes_received
    }),
    ("stream_packets_in", "RTP packets received", |s| {
        s.stats.packets_received
    }),
    ("stream_plis_sent", "Key-frame requests sent", |s| {
        s.stats.plis_sent
    }),
    ("stream_nacks_sent", "NACKs sent", |s| s.stats.nacks_sent),
    ("stream_frames_in", "Video frames received", |s| {
        s.stats.frames_in
    }),
    ("stream_frames_out", "H.264 frames encoded", |s| {
        s.stats.frames_out
    }),
    ("stream_hls_segments", "HLS segments written", |s| {
        s.stats.hls_segments
    }),
];

const GAUGES: [(&str, &str, Value<f64>); 5] = [
    ("stream_packets_lost", "RTP packets lost", |s| {
        s.stats.packets_lost as f64
    }),
    (
        "stream_encoder_delay_seconds",
        "From a frame's arrival to its H.264 leaving the encoder",
        |s| s.stats.encoder_delay_ms / 1000.0,
    ),
    (
        "stream_recording_bytes",
        "Bytes in the current recording",
        |s| s.stats.recording_bytes as f64,
    ),
    ("stream_rtp_destinations", "Extra RTP destinations", |s| {
        s.rtp_destinations.len() as f64
    }),
    ("stream_bitrate_bits_per_second", "Received bitrate", |s| {
        s.stats.bitrate_kbps * 1000.0
    }),
];

impl Collector for StreamSeries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let streams = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let live = streams
            .iter()
            .filter(|s| s.state != StreamState::Ended)
            .count() as i64;
        let gauge = ConstGauge::new(live);
        gauge.encode(encoder.encode_descriptor(
            "publishers_live",
            "Publishers connected now",
            None,
            gauge.metric_type(),
        )?)?;
        let mut family = encoder.encode_descriptor(
            "publishers_by_transport",
            "Publishers connected now, by the path that carries their media",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        for path in MediaPath::ALL {
            let count = streams
                .iter()
                .filter(|s| s.state != StreamState::Ended && s.transport == Some(path))
                .count() as i64;
            let labels = TransportLabel {
                transport: path.as_str().to_owned(),
            };
            ConstGauge::new(count).encode(family.encode_family(&labels)?)?;
        }
        let label = |s: &StreamInfo| StreamLabel {
            stream: s.name.to_string(),
        };
        for (name, help, value) in COUNTERS {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                ConstCounter::new(0u64).metric_type(),
            )?;
            for s in streams.iter() {
                let labels = label(s);
                ConstCounter::new(value(s)).encode(family.encode_family(&labels)?)?;
            }
        }
        for (name, help, value) in GAUGES {
            let mut family =
                encoder.encode_descriptor(name, help, None, ConstGauge::new(0.0).metric_type())?;
            for s in streams.iter() {
                let labels = label(s);
                ConstGauge::new(value(s)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render() {
        let metrics = Metrics::default();
        metrics.publication_started();
        metrics.publication_ended(&EndReason::PipelineError("video_decoder: Failed".into()));
        metrics.signalling_error(409);
        let text = metrics.render(Vec::new());
        assert!(
            text.contains("webrtc_gateway_publications_started_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("webrtc_gateway_publications_ended_total{reason=\"pipeline-error\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("webrtc_gateway_signalling_errors_total{code=\"409\"} 1\n"));
        assert!(
            text.contains("webrtc_gateway_publishers_live 0\n"),
            "{text}"
        );
        assert!(
            text.contains("webrtc_gateway_publishers_by_transport{transport=\"tcp-http\"} 0\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
