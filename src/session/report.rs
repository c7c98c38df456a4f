//! What a session reports of its stream: the stream object's tracks and outputs, the
//! statistics sampled every second, and whether the publisher still sends media.

use crate::blocking::blocking;
use crate::events::Event;
use crate::media::StreamPipeline;
use crate::media::output::hls::HlsOutput;
use crate::media::output::record::Recording;
use crate::session::driver::{Progress, Session};
use crate::stream::{AudioInfo, StreamStats, VideoInfo};
use std::time::{Duration, Instant};

impl Session {
    /// Whether a connected publisher has sent no RTP for `webrtc.media_timeout_s`.
    pub(super) fn media_stopped(&self, progress: &mut Progress) -> bool {
        let Some(connected_at) = progress.connected_at else {
            return false;
        };
        let now = Instant::now();
        let packets = self.peer.packets_in();
        if packets > 0
            && progress
                .packets_seen
                .is_none_or(|(seen, _)| seen != packets)
        {
            progress.packets_seen = Some((packets, now));
        }
        let quiet_since = progress.packets_seen.map_or(connected_at, |(_, at)| at);
        let timeout = Duration::from_secs(self.gateway.config.webrtc.media_timeout_s as u64);
        now.duration_since(quiet_since) >= timeout
    }

    /// Samples the stream's statistics and publishes them in the stream object.
    pub(super) async fn sample_stats(&mut self, pipeline: &StreamPipeline) {
        let totals = self.peer.inbound_totals().await;
        let path = self.peer.media_path().await;
        let round_trip = self.peer.round_trip_time().await;
        if let Some(rtt) = round_trip
            && let Some(wait) = self.jitter.on_round_trip(Instant::now(), rtt)
        {
            tracing::info!(
                round_trip_ms = rtt.as_millis() as u64,
                jitter_buffer_ms = wait.as_millis() as u64,
                "the jitter buffers' wait follows the publisher's round trip"
            );
            pipeline.set_jitter_latency(wait);
        }
        let (jitter_buffer_lost, jitter_buffer_late) = pipeline.video_jitter_drops();
        let measured = pipeline.measurements();
        let mut stats = StreamStats {
            packets_received: totals.packets,
            bytes_received: totals.bytes,
            packets_lost: totals.lost,
            nacks_sent: totals.nacks,
            plis_sent: self.plis_sent,
            frames_in: self.peer.frames_in(),
            frames_out: measured.frames_out(),
            pictures_out: measured.pictures_out(),
            encoder_delay_ms: measured.encoder_delay().as_secs_f64() * 1000.0,
            encoder_delay_p50_ms: measured.delays().percentile(0.50),
            encoder_delay_p95_ms: measured.delays().percentile(0.95),
            encoder_delay_p99_ms: measured.delays().percentile(0.99),
            jitter_buffer_lost,
            jitter_buffer_late,
            jitter_buffer_ms: self.jitter.current().as_millis() as u64,
            round_trip_ms: round_trip.map(|rtt| rtt.as_secs_f64() * 1000.0),
            hls_segments: self.hls.as_ref().map_or(0, HlsOutput::segments),
            recording_bytes: blocking(|| self.recording.current().map_or(0, Recording::bytes)),
            candidates_ignored: self.candidates_ignored,
            ..StreamStats::default()
        };
        let now = Instant::now();
        if let Some((at, previous)) = &self.last_sample {
            let seconds = now.duration_since(*at).as_secs_f64().max(0.001);
            let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / seconds;
            stats.input_fps = rate(stats.frames_in, previous.frames_in);
            stats.output_fps = rate(stats.frames_out, previous.frames_out);
            stats.bitrate_kbps = rate(stats.bytes_received, previous.bytes_received) * 8.0 / 1000.0;
        }
        self.last_sample = Some((now, stats.clone()));
        let passthrough = self.spec.video_passthrough;
        self.gateway.registry().update(&self.name, |entry| {
            // Passed through, the output's frame rate is the publisher's.
            if passthrough && let Some(video) = &mut entry.info.video {
                video.fps = stats.output_fps.round() as u32;
            }
            entry.info.stats = stats;
            if path.is_some() {
                entry.info.transport = path;
            }
        });
    }

    /// The `stream.published` event of the stream live now, from its stream object.
    pub(super) fn published(&self) -> Event {
        let registry = self.gateway.registry();
        let info = registry.get(self.name.as_str()).map(|entry| &entry.info);
        Event::StreamPublished {
            stream: self.name.clone(),
            protocol: info.map(|i| i.publisher.clone()).unwrap_or_default(),
            outputs: info.map(|i| i.outputs.clone()).unwrap_or_default(),
        }
    }

    /// Fills the stream object with what the outputs will be.
    pub(super) fn publish_info(&self) {
        let transcode = &self.gateway.config.transcode;
        let name = &self.name;
        let passthrough = self.spec.video_passthrough;
        let video = self.plan.video.as_ref().map(|(input, _)| VideoInfo {
            codec: "H264".into(),
            width: if passthrough { 0 } else { transcode.width },
            height: if passthrough { 0 } else { transcode.height },
            fps: if passthrough { 0 } else { transcode.framerate },
            input_codec: input.codec.name().into(),
            input_width: None,
            input_height: None,
            passthrough,
        });
        let audio = self.plan.audio.as_ref().map(|_| AudioInfo {
            codec: "opus".into(),
            sample_rate: 48000,
            channels: 2,
        });
        let sdp = self
            .rtp
            .is_some()
            .then(|| format!("/streams/{name}/stream.sdp"));
        let hls = self
            .hls
            .as_ref()
            .map(|_| format!("/streams/{name}/index.m3u8"));
        let recording = self
            .recording
            .current()
            .filter(|r| r.is_attached())
            .map(|r| r.file().to_string());
        self.gateway.registry().update(name, |entry| {
            entry.info.video = video;
            entry.info.audio = audio;
            entry.info.outputs.sdp = sdp;
            entry.info.outputs.hls = hls;
            entry.info.outputs.recording = recording;
        });
    }
}
