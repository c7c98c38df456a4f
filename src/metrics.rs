//! Metrics: process-wide counters the gateway keeps, and their rendering with the
//! stream registry's per-stream statistics as Prometheus (OpenMetrics) text.

use crate::registry::StreamInfo;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Counters of what happened since start.
#[derive(Debug, Default)]
pub struct Metrics {
    publications_started: AtomicU64,
    publications_ended: Mutex<BTreeMap<String, u64>>,
    signalling_errors: Mutex<BTreeMap<u16, u64>>,
    whip_requests: Mutex<BTreeMap<u16, u64>>,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    *map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_default() += 1;
}

type Labels = Vec<(String, String)>;

fn counter_family<K: ToString>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &str,
    values: &Mutex<BTreeMap<K, u64>>,
) {
    let family = Family::<Labels, Counter>::default();
    for (key, value) in values.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        family
            .get_or_create(&vec![(label.to_string(), key.to_string())])
            .inc_by(*value);
    }
    registry.register(name, help, family);
}

impl Metrics {
    pub fn publication_started(&self) {
        self.publications_started.fetch_add(1, Ordering::Relaxed);
    }

    pub fn publication_ended(&self, reason: &str) {
        // Pipeline errors carry their message; the kind is what counts.
        let kind = reason.split(':').next().unwrap_or(reason);
        bump(&self.publications_ended, kind.to_string());
    }

    pub fn signalling_error(&self, code: u16) {
        bump(&self.signalling_errors, code);
    }

    pub fn whip_request(&self, status: u16) {
        bump(&self.whip_requests, status);
    }

    /// The metrics text for a scrape.
    pub fn render(&self, streams: &[StreamInfo]) -> String {
        let mut registry = Registry::with_prefix("webrtc_gateway");
        let live = Gauge::<i64>::default();
        live.set(
            streams
                .iter()
                .filter(|s| s.state != crate::registry::StreamState::Ended)
                .count() as i64,
        );
        registry.register("publishers_live", "Publishers connected now", live);
        let started = Counter::<u64>::default();
        started.inc_by(self.publications_started.load(Ordering::Relaxed));
        registry.register("publications_started", "Publications started", started);
        counter_family(
            &mut registry,
            "publications_ended",
            "Publications ended, by reason",
            "reason",
            &self.publications_ended,
        );
        counter_family(
            &mut registry,
            "signalling_errors",
            "WebSocket signalling errors sent, by code",
            "code",
            &self.signalling_errors,
        );
        counter_family(
            &mut registry,
            "whip_requests",
            "WHIP requests answered, by status",
            "status",
            &self.whip_requests,
        );

        type Value<T> = fn(&StreamInfo) -> T;
        let counters: [(&str, &str, Value<u64>); 7] = [
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
        for (name, help, value) in counters {
            let family = Family::<Labels, Counter>::default();
            for s in streams {
                family
                    .get_or_create(&vec![("stream".into(), s.name.clone())])
                    .inc_by(value(s));
            }
            registry.register(name, help, family);
        }
        let gauges: [(&str, &str, Value<f64>); 5] = [
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
        for (name, help, value) in gauges {
            let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
            for s in streams {
                family
                    .get_or_create(&vec![("stream".into(), s.name.clone())])
                    .set(value(s));
            }
            registry.register(name, help, family);
        }

        let mut text = String::new();
        encode(&mut text, &registry).expect("writing to a String");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render() {
        let metrics = Metrics::default();
        metrics.publication_started();
        metrics.publication_ended("pipeline-error: video_decoder: Failed");
        metrics.signalling_error(409);
        let text = metrics.render(&[]);
        assert!(
            text.contains("webrtc_gateway_publications_started_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("webrtc_gateway_publications_ended_total{reason=\"pipeline-error\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("webrtc_gateway_signalling_errors_total{code=\"409\"} 1\n"));
        assert!(text.ends_with("# EOF\n"));
    }
}
