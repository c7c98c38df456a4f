//! The stream registry: which names are live, which port slot each holds, and what the
//! API shows of them. Plain data with no I/O; the gateway shares it behind a mutex and
//! holds the lock only for these short calls.

use crate::media::hls::HlsOutput;
use crate::session::SessionHandle;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// `^[A-Za-z0-9_-]{1,64}$`: the only names a stream may have; never a file-system path.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

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
    pub hls_segments: u64,
    pub recording_bytes: u64,
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
    pub name: String,
    pub state: StreamState,
    pub started_at: String,
    pub video: Option<VideoInfo>,
    pub audio: Option<AudioInfo>,
    pub outputs: Outputs,
    /// The port slot: RTP goes to `port_base + 4 * slot` and the three ports after it.
    /// None once the stream has ended.
    pub slot: Option<u32>,
    /// How the publisher connected (`websocket`).
    pub publisher: String,
    /// Why the recording stopped early, if it did; the stream went on.
    pub recording_error: Option<String>,
    /// Why HLS stopped early, if it did; the stream went on.
    pub hls_error: Option<String>,
    pub stats: StreamStats,
    pub rtp_destinations: Vec<RtpDestination>,
}

#[derive(Debug)]
pub struct StreamEntry {
    pub info: StreamInfo,
    /// The SDP file, once the encoder has produced its first frame.
    pub sdp: Option<String>,
    /// Where the stream's HLS files are, while they are served.
    pub hls_dir: Option<PathBuf>,
    /// Cancelling it ends the stream's session.
    pub stop: CancellationToken,
    /// Commands to the running session.
    pub handle: Option<SessionHandle>,
    /// An ended stream's HLS output and when it goes away.
    lingering: Option<(HlsOutput, Instant)>,
}

impl StreamEntry {
    pub fn is_active(&self) -> bool {
        self.info.state != StreamState::Ended
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("the stream already has a publisher")]
    InUse,
    #[error("the gateway already carries its limit of {0} publishers")]
    Full(u32),
}

/// A reserved name and slot.
#[derive(Debug)]
pub struct Reservation {
    pub slot: u32,
    pub stop: CancellationToken,
    /// The HLS output of the stream's previous publisher, still lingering.
    pub hls: Option<HlsOutput>,
}

#[derive(Debug)]
pub struct Registry {
    max_publishers: u32,
    streams: BTreeMap<String, StreamEntry>,
}

impl Registry {
    pub fn new(max_publishers: u32) -> Self {
        Self {
            max_publishers,
            streams: BTreeMap::new(),
        }
    }

    /// Claims `name` and the lowest free port slot. A lingering ended stream of that
    /// name is taken over, with its HLS output.
    pub fn reserve(
        &mut self,
        name: &str,
        publisher: &str,
        now: SystemTime,
    ) -> Result<Reservation, RegistryError> {
        if self.streams.get(name).is_some_and(StreamEntry::is_active) {
            return Err(RegistryError::InUse);
        }
        let active: Vec<u32> = self
            .streams
            .values()
            .filter(|s| s.is_active())
            .filter_map(|s| s.info.slot)
            .collect();
        if active.len() as u32 >= self.max_publishers {
            return Err(RegistryError::Full(self.max_publishers));
        }
        let slot = (0..)
            .find(|slot| !active.contains(slot))
            .expect("a free slot below max_publishers");
        let hls = self
            .streams
            .remove(name)
            .and_then(|previous| previous.lingering)
            .map(|(hls, _)| hls);
        let stop = CancellationToken::new();
        self.streams.insert(
            name.to_string(),
            StreamEntry {
                info: StreamInfo {
                    name: name.to_string(),
                    state: StreamState::Connecting,
                    started_at: humantime::format_rfc3339_seconds(now).to_string(),
                    video: None,
                    audio: None,
                    outputs: Outputs::default(),
                    slot: Some(slot),
                    publisher: publisher.to_string(),
                    recording_error: None,
                    hls_error: None,
                    stats: StreamStats::default(),
                    rtp_destinations: Vec::new(),
                },
                sdp: None,
                hls_dir: None,
                stop: stop.clone(),
                handle: None,
                lingering: None,
            },
        );
        Ok(Reservation { slot, stop, hls })
    }

    /// Frees the name and its slot.
    pub fn release(&mut self, name: &str) -> Option<StreamEntry> {
        self.streams.remove(name)
    }

    /// The stream ended: its slot is free, its HLS output stays until `until`.
    pub fn linger(&mut self, name: &str, hls: HlsOutput, until: Instant) {
        if let Some(entry) = self.streams.get_mut(name) {
            entry.info.state = StreamState::Ended;
            entry.info.slot = None;
            entry.info.outputs.sdp = None;
            entry.info.rtp_destinations.clear();
            entry.sdp = None;
            entry.handle = None;
            entry.stop.cancel();
            entry.lingering = Some((hls, until));
        }
    }

    /// Removes ended streams whose time is up; returns their HLS outputs to delete.
    pub fn expire(&mut self, now: Instant) -> Vec<HlsOutput> {
        let expired: Vec<String> = self
            .streams
            .iter()
            .filter(|(_, s)| s.lingering.as_ref().is_some_and(|(_, until)| *until <= now))
            .map(|(name, _)| name.clone())
            .collect();
        expired
            .into_iter()
            .filter_map(|name| self.streams.remove(&name)?.lingering.map(|(hls, _)| hls))
            .collect()
    }

    /// Whether `file` is a recording being written.
    pub fn is_recording(&self, file: &str) -> bool {
        self.streams
            .values()
            .any(|s| s.is_active() && s.info.outputs.recording.as_deref() == Some(file))
    }

    pub fn get(&self, name: &str) -> Option<&StreamEntry> {
        self.streams.get(name)
    }

    pub fn update(&mut self, name: &str, change: impl FnOnce(&mut StreamEntry)) {
        if let Some(entry) = self.streams.get_mut(name) {
            change(entry);
        }
    }

    pub fn list(&self) -> Vec<StreamInfo> {
        self.streams.values().map(|s| s.info.clone()).collect()
    }

    /// Asks every session to end.
    pub fn stop_all(&self) {
        for entry in self.streams.values() {
            entry.stop.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["cam1", "a", "A-b_9", &"x".repeat(64)] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "",
            "../etc",
            "a/b",
            "a b",
            "ü",
            &"x".repeat(65),
            "a.sdp",
            "%2e",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn slots_are_lowest_free_and_reused() {
        let mut r = Registry::new(3);
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(r.reserve("a", "websocket", now).unwrap().slot, 0);
        assert_eq!(r.reserve("b", "websocket", now).unwrap().slot, 1);
        assert_eq!(
            r.reserve("a", "websocket", now).unwrap_err(),
            RegistryError::InUse
        );
        assert_eq!(r.reserve("c", "websocket", now).unwrap().slot, 2);
        assert_eq!(
            r.reserve("d", "websocket", now).unwrap_err(),
            RegistryError::Full(3)
        );
        r.release("a");
        assert_eq!(r.reserve("d", "websocket", now).unwrap().slot, 0);
        assert_eq!(r.get("d").unwrap().info.started_at, "1970-01-01T00:00:00Z");
        assert_eq!(r.list().len(), 3);
    }

    #[test]
    fn an_ended_stream_lingers_frees_its_slot_and_can_be_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry::new(1);
        let start = Instant::now();
        r.reserve("a", "websocket", SystemTime::now()).unwrap();
        let hls = HlsOutput::create(dir.path(), "a", 2, 6).unwrap();
        r.linger("a", hls, start + std::time::Duration::from_secs(30));
        assert_eq!(r.get("a").unwrap().info.state, StreamState::Ended);
        assert_eq!(r.get("a").unwrap().info.slot, None);
        // Its slot is free for another stream, and its name for a returning publisher.
        let b = r.reserve("b", "websocket", SystemTime::now()).unwrap();
        assert_eq!(b.slot, 0);
        r.release("b");
        let again = r.reserve("a", "websocket", SystemTime::now()).unwrap();
        assert!(again.hls.is_some());
        r.linger(
            "a",
            again.hls.unwrap(),
            start + std::time::Duration::from_secs(30),
        );
        assert!(
            r.expire(start + std::time::Duration::from_secs(29))
                .is_empty()
        );
        assert_eq!(
            r.expire(start + std::time::Duration::from_secs(30)).len(),
            1
        );
        assert!(r.get("a").is_none());
    }

    #[test]
    fn stop_all_cancels_every_session() {
        let mut r = Registry::new(2);
        let a = r.reserve("a", "websocket", SystemTime::now()).unwrap();
        r.stop_all();
        assert!(a.stop.is_cancelled());
    }
}
