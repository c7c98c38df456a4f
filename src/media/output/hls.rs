//! The HLS output (RFC 8216): the sliding media playlist and the multivariant playlist,
//! written by the gateway from the segments GStreamer's multifilesink closes, and the
//! stream's directory. The [`Playlist`] is plain data; [`HlsOutput`] puts it on disk and
//! attaches to the pipeline (segment key units, the first segment's start); [`HlsStore`]
//! keeps an ended stream's output lingering for `hls.linger_s`, so that a publisher who
//! comes back continues it, and deletes it when its time is up.

use crate::config::{HlsConfig, TranscodeConfig};
use crate::media::event::MediaEvent;
use crate::media::pipeline::StreamPipeline;
use crate::media::probe::{on_first_buffer, running_time};
use crate::media::spec::{FileOutput, HlsSpec};
use crate::media::templates::names;
use crate::name::StreamName;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_video as gst_video;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::SystemTime;

pub const MULTIVARIANT: &str = "index.m3u8";
pub const MEDIA: &str = "stream.m3u8";

#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub uri: String,
    pub duration: f64,
    /// When its first picture arrived (`EXT-X-PROGRAM-DATE-TIME`).
    pub date: SystemTime,
    /// A discontinuity comes before this segment (a publisher came back).
    pub discontinuity: bool,
}

/// A live media playlist with a sliding window.
#[derive(Debug, Clone, PartialEq)]
pub struct Playlist {
    target_duration: u32,
    window: usize,
    media_sequence: u64,
    discontinuity_sequence: u64,
    segments: VecDeque<Segment>,
    ended: bool,
    next_is_discontinuity: bool,
}

impl Playlist {
    pub fn new(target_duration: u32, window: usize) -> Self {
        Self {
            target_duration,
            window: window.max(1),
            media_sequence: 0,
            discontinuity_sequence: 0,
            segments: VecDeque::new(),
            ended: false,
            next_is_discontinuity: false,
        }
    }

    /// Adds a closed segment whose first picture arrived at `date`; returns the URIs that
    /// left the window.
    pub fn push(&mut self, uri: String, duration: f64, date: SystemTime) -> Vec<String> {
        // A segment longer than the target (a late key frame) raises it: every
        // rounded EXTINF must stay within EXT-X-TARGETDURATION.
        self.target_duration = self.target_duration.max(duration.round() as u32);
        self.segments.push_back(Segment {
            uri,
            duration,
            date,
            discontinuity: std::mem::take(&mut self.next_is_discontinuity),
        });
        let mut removed = Vec::new();
        while self.segments.len() > self.window {
            let gone = self.segments.pop_front().expect("non-empty");
            self.media_sequence += 1;
            if gone.discontinuity {
                self.discontinuity_sequence += 1;
            }
            removed.push(gone.uri);
        }
        removed
    }

    /// The publisher left: no more segments will come, for now.
    pub fn end(&mut self) {
        self.ended = true;
    }

    /// A publisher came back under the same name: the next segment starts anew.
    pub fn resume(&mut self) {
        self.ended = false;
        self.next_is_discontinuity = !self.segments.is_empty();
    }

    /// The media playlist text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let _ = write!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:{}\n",
            self.target_duration, self.media_sequence
        );
        if self.discontinuity_sequence > 0 {
            let _ = writeln!(
                text,
                "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
                self.discontinuity_sequence
            );
        }
        for segment in &self.segments {
            if segment.discontinuity {
                text.push_str("#EXT-X-DISCONTINUITY\n");
            }
            let _ = writeln!(
                text,
                "#EXT-X-PROGRAM-DATE-TIME:{}",
                humantime::format_rfc3339_millis(segment.date)
            );
            let _ = write!(text, "#EXTINF:{:.3},\n{}\n", segment.duration, segment.uri);
        }
        if self.ended {
            text.push_str("#EXT-X-ENDLIST\n");
        }
        text
    }
}

/// What the multivariant playlist says of the one variant.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub bandwidth: u64,
    pub resolution: Option<(u32, u32)>,
    pub framerate: Option<u32>,
    /// `avc1.PPCCLL` from the encoder's SPS.
    pub video_codec: Option<String>,
    pub audio: bool,
}

impl Variant {
    /// The variant a stream's encoders make.
    pub fn of(
        transcode: &TranscodeConfig,
        video: bool,
        audio: bool,
        codec: Option<String>,
    ) -> Self {
        let kbps = if video {
            transcode.video_bitrate_kbps
        } else {
            0
        } + if audio { 128 } else { 0 };
        Variant {
            // The encoders' rates plus a tenth for MPEG-TS overhead.
            bandwidth: kbps as u64 * 1100,
            resolution: video.then_some((transcode.width, transcode.height)),
            framerate: video.then_some(transcode.framerate),
            video_codec: codec,
            audio,
        }
    }
}

/// The multivariant playlist text, pointing to the media playlist.
pub fn render_multivariant(variant: &Variant) -> String {
    let mut codecs: Vec<&str> = Vec::new();
    if let Some(video) = &variant.video_codec {
        codecs.push(video);
    }
    if variant.audio {
        codecs.push("mp4a.40.2");
    }
    let mut attributes = format!("BANDWIDTH={}", variant.bandwidth);
    if let Some((w, h)) = variant.resolution {
        let _ = write!(attributes, ",RESOLUTION={w}x{h}");
    }
    if let Some(fps) = variant.framerate {
        let _ = write!(attributes, ",FRAME-RATE={fps}.000");
    }
    let _ = write!(attributes, ",CODECS=\"{}\"", codecs.join(","));
    format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-STREAM-INF:{attributes}\n{MEDIA}\n"
    )
}

/// A stream's HLS files: its directory, segment naming, and playlist. Outlives a
/// publisher by `hls.linger_s`, so that one who comes back continues it.
#[derive(Debug)]
pub struct HlsOutput {
    pub dir: PathBuf,
    /// Segment names start with it, unique to this output, so caches never mix two.
    pub prefix: String,
    pub playlist: Playlist,
    pub next_index: u64,
    /// Running time where the open segment began.
    segment_start_ns: Option<u64>,
    variant_written: bool,
}

impl HlsOutput {
    /// Creates a directory of its own for the stream's files, `root/<name>.<random>`: no
    /// other output's directory is ever named the same, and since `.` is not allowed in a
    /// name, no other stream's either. What an earlier output of the same name left
    /// there (a previous run's ended playlist) is removed first.
    fn create(
        root: &Path,
        stream: &StreamName,
        target_duration: u32,
        window: usize,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        remove_stale(root, stream);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{stream}."))
            .rand_bytes(8)
            .tempdir_in(root)?
            .keep();
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        Ok(Self {
            dir,
            prefix: format!("s{stamp:x}-"),
            playlist: Playlist::new(target_duration, window),
            next_index: 0,
            segment_start_ns: None,
            variant_written: false,
        })
    }

    /// A publisher comes back: continue after a discontinuity.
    fn resume(&mut self) -> std::io::Result<()> {
        self.playlist.resume();
        self.segment_start_ns = None;
        self.write_media()
    }

    /// The splitmuxsink location pattern for the next pipeline.
    pub fn location_pattern(&self) -> PathBuf {
        self.dir.join(format!("{}%05d.ts", self.prefix))
    }

    /// What the pipeline's HLS branch is built with.
    pub fn spec(&self, segment_duration_s: u32) -> HlsSpec {
        HlsSpec {
            location: self.location_pattern(),
            start_index: self.next_index,
            segment_ns: segment_duration_s as u64 * 1_000_000_000,
        }
    }

    /// Segments closed so far, over every publisher of this output.
    pub fn segments(&self) -> u64 {
        self.next_index
    }

    /// Attaches to the pipeline: a failed HLS output is cut off, the first data's running
    /// time is reported, and with video the encoder is asked for a key unit every segment.
    pub fn attach(&self, pipeline: &StreamPipeline, spec: &HlsSpec) {
        for queue in [names::HLS_VIDEO_QUEUE, names::HLS_AUDIO_QUEUE] {
            pipeline.drop_when_failed(pipeline.gst().upcast_ref(), queue, FileOutput::Hls);
        }
        on_first_buffer(
            pipeline.gst(),
            (names::HLS_SINK, "sink"),
            pipeline.events(),
            |pad, buffer| {
                Some(MediaEvent::SegmentsStarted {
                    running_time_ns: running_time(pad, buffer)?.nseconds(),
                })
            },
        );
        if pipeline.tracks().0 {
            request_segment_key_units(pipeline.gst(), spec.segment_ns);
        }
    }

    /// The first data arrived: the first segment starts at this running time.
    pub fn segments_started(&mut self, running_time_ns: u64) {
        self.segment_start_ns.get_or_insert(running_time_ns);
    }

    /// Adds a closed segment to the playlist, dated by the pipeline's clock, and deletes
    /// those that left the window.
    pub fn segment_closed(
        &mut self,
        pipeline: &StreamPipeline,
        location: &Path,
        end_ns: u64,
    ) -> std::io::Result<()> {
        let Some(uri) = location.file_name().and_then(|n| n.to_str()) else {
            return Ok(());
        };
        let start_ns = self.segment_start_ns.replace(end_ns).unwrap_or(end_ns);
        let duration = end_ns.saturating_sub(start_ns) as f64 / 1e9;
        self.next_index += 1;
        if duration <= 0.0 {
            let _ = std::fs::remove_file(location);
            return Ok(());
        }
        let date = pipeline.wall_clock(start_ns);
        for gone in self.playlist.push(uri.to_string(), duration, date) {
            let _ = std::fs::remove_file(self.dir.join(gone));
        }
        self.write_media()
    }

    /// Writes the multivariant playlist, once.
    pub fn write_variant(&mut self, variant: &Variant) {
        if self.variant_written {
            return;
        }
        self.variant_written = true;
        if let Err(e) =
            write_atomically(&self.dir.join(MULTIVARIANT), &render_multivariant(variant))
        {
            tracing::warn!("cannot write the HLS multivariant playlist: {e}");
        }
    }

    /// Closes the playlist with ENDLIST.
    pub fn end(&mut self) {
        self.playlist.end();
        if let Err(e) = self.write_media() {
            tracing::warn!("cannot end the HLS playlist: {e}");
        }
    }

    fn write_media(&self) -> std::io::Result<()> {
        write_atomically(&self.dir.join(MEDIA), &self.playlist.render())
    }

    /// Removes the stream's files.
    fn remove(self) {
        tracing::debug!(dir = %self.dir.display(), "HLS files expired");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where the streams' HLS directories are made, and the outputs of ended streams while
/// they linger. Each output has a directory of its own, and taking a lingering output
/// over or expiring it happens under one lock: expiring an ended stream never deletes
/// the files of a publisher who just took its name.
#[derive(Debug)]
pub struct HlsStore {
    root: PathBuf,
    target_duration: u32,
    window: usize,
    lingering: Mutex<HashMap<StreamName, HlsOutput>>,
    /// The temporary directory used when `hls.dir` is empty, removed at exit.
    _temp: Option<tempfile::TempDir>,
}

impl HlsStore {
    /// Outputs under `config.dir`, or under a temporary directory when it is empty.
    pub fn new(config: &HlsConfig) -> std::io::Result<Self> {
        let temp = if config.dir.as_os_str().is_empty() {
            Some(
                tempfile::Builder::new()
                    .prefix("webrtc-gateway-hls-")
                    .tempdir()?,
            )
        } else {
            None
        };
        Ok(Self {
            root: temp
                .as_ref()
                .map_or_else(|| config.dir.clone(), |t| t.path().to_owned()),
            target_duration: config.segment_duration_s,
            window: config.playlist_length as usize,
            lingering: Mutex::new(HashMap::new()),
            _temp: temp,
        })
    }

    fn lingering(&self) -> std::sync::MutexGuard<'_, HashMap<StreamName, HlsOutput>> {
        self.lingering.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stream's output: the lingering one of its previous publisher, continued after
    /// a discontinuity, or a new one. Touches the disk: call it off the async workers.
    pub fn open(&self, name: &StreamName) -> std::io::Result<HlsOutput> {
        let mut lingering = self.lingering();
        match lingering.remove(name) {
            Some(mut output) => output.resume().map(|()| output),
            None => HlsOutput::create(&self.root, name, self.target_duration, self.window),
        }
    }

    /// An ended stream's output stays until [`HlsStore::expire`].
    pub fn linger(&self, name: &StreamName, output: HlsOutput) {
        self.lingering().insert(name.clone(), output);
    }

    pub fn is_lingering(&self, name: &StreamName) -> bool {
        self.lingering().contains_key(name)
    }

    /// Deletes an ended stream's files, unless a publisher has taken them over. Touches
    /// the disk: call it off the async workers.
    pub fn expire(&self, name: &StreamName) {
        let expired = self.lingering().remove(name);
        if let Some(output) = expired {
            output.remove();
        }
    }
}

/// Removes the directories earlier outputs of `stream` left under `root`.
fn remove_stale(root: &Path, stream: &StreamName) {
    let prefix = format!("{stream}.");
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            tracing::debug!(dir = %entry.path().display(), "removing an earlier output's HLS files");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Asks the encoder for a key frame every `segment_ns` of running time, as HLS needs:
/// the encoder's key-unit event then starts a new segment file. Each request is sent
/// when the previous key unit passes, for the running time one segment later. The probe
/// keeps its own two atomics and touches nothing else.
fn request_segment_key_units(pipeline: &gst::Pipeline, segment_ns: u64) {
    let Some(pad) = pipeline
        .by_name(names::HLS_SINK)
        .and_then(|s| s.static_pad("sink"))
    else {
        return;
    };
    let segment = gst::ClockTime::from_nseconds(segment_ns);
    let requested = AtomicBool::new(false);
    // multifilesink starts a file only on a key unit whose count differs from the last.
    let count = AtomicU32::new(0);
    let kinds = gst::PadProbeType::BUFFER
        | gst::PadProbeType::BUFFER_LIST
        | gst::PadProbeType::EVENT_DOWNSTREAM;
    pad.add_probe(kinds, move |pad, info| {
        let first = match &info.data {
            Some(gst::PadProbeData::Buffer(buffer)) => Some(buffer.as_ref()),
            Some(gst::PadProbeData::BufferList(list)) => list.get(0),
            _ => None,
        };
        let next = match (&info.data, first) {
            (_, Some(buffer)) if !requested.load(Ordering::Relaxed) => {
                Some(running_time(pad, buffer).unwrap_or_default() + segment)
            }
            (Some(gst::PadProbeData::Event(event)), _) => {
                gst_video::DownstreamForceKeyUnitEvent::parse(event)
                    .ok()
                    .and_then(|unit| unit.running_time)
                    .map(|running_time| running_time + segment)
            }
            _ => None,
        };
        if let Some(next) = next {
            requested.store(true, Ordering::Relaxed);
            let request = gst_video::UpstreamForceKeyUnitEvent::builder()
                .running_time(next)
                .all_headers(true)
                .count(count.fetch_add(1, Ordering::Relaxed) + 1)
                .build();
            pad.push_event(request);
        }
        gst::PadProbeReturn::Ok
    });
}

/// Writes a file so that readers see either the old or the new text, never a part.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(partial, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// `seconds` after 2026-12-02T10:00:00Z.
    fn at(seconds: f64) -> SystemTime {
        SystemTime::UNIX_EPOCH
            + Duration::from_secs(1_796_205_600)
            + Duration::from_secs_f64(seconds)
    }

    #[test]
    fn sliding_window_and_end() {
        let mut p = Playlist::new(2, 3);
        for i in 0..3 {
            assert!(
                p.push(format!("s{i}.ts"), 2.0, at(2.0 * i as f64))
                    .is_empty()
            );
        }
        assert_eq!(
            p.push("s3.ts".into(), 2.033, at(6.0)),
            vec!["s0.ts".to_string()]
        );
        p.end();
        assert_eq!(
            p.render(),
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-12-02T10:00:02.000Z\n#EXTINF:2.000,\ns1.ts\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-12-02T10:00:04.000Z\n#EXTINF:2.000,\ns2.ts\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-12-02T10:00:06.000Z\n#EXTINF:2.033,\ns3.ts\n\
             #EXT-X-ENDLIST\n"
        );
    }

    #[test]
    fn a_returning_publisher_continues_after_a_discontinuity() {
        let mut p = Playlist::new(2, 2);
        p.push("a.ts".into(), 2.0, at(0.0));
        p.end();
        p.resume();
        p.push("b.ts".into(), 2.0, at(30.0));
        let text = p.render();
        assert!(
            text.contains(
                "#EXTINF:2.000,\na.ts\n#EXT-X-DISCONTINUITY\n\
                 #EXT-X-PROGRAM-DATE-TIME:2026-12-02T10:00:30.000Z\n#EXTINF:2.000,\nb.ts\n"
            ),
            "{text}"
        );
        assert!(!text.contains("ENDLIST"));
        // The discontinuity leaves the window: it is counted.
        p.push("c.ts".into(), 2.0, at(32.0));
        p.push("d.ts".into(), 2.0, at(34.0));
        let text = p.render();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:2\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n"));
        assert!(!text.contains("#EXT-X-DISCONTINUITY\n"));
    }

    #[test]
    fn a_long_segment_raises_the_target_duration() {
        let mut p = Playlist::new(2, 5);
        p.push("a.ts".into(), 2.6, at(0.0));
        assert!(p.render().contains("#EXT-X-TARGETDURATION:3\n"));
    }

    #[test]
    fn an_ended_output_lingers_until_expired_or_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let config = HlsConfig {
            dir: dir.path().to_owned(),
            ..HlsConfig::default()
        };
        let store = HlsStore::new(&config).unwrap();
        let name = StreamName::new("a").unwrap();
        let mut output = store.open(&name).unwrap();
        output.end();
        let files = output.dir.clone();
        store.linger(&name, output);
        assert!(store.is_lingering(&name));
        // A returning publisher continues it; expiring it then deletes nothing.
        let again = store.open(&name).unwrap();
        assert_eq!(again.dir, files);
        store.expire(&name);
        assert!(files.exists());
        store.linger(&name, again);
        store.expire(&name);
        assert!(!files.exists());
        assert!(!store.is_lingering(&name));
    }

    #[test]
    fn multivariant() {
        let text = render_multivariant(&Variant {
            bandwidth: 2_900_000,
            resolution: Some((1280, 720)),
            framerate: Some(30),
            video_codec: Some("avc1.42c01f".into()),
            audio: true,
        });
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-STREAM-INF:BANDWIDTH=2900000,RESOLUTION=1280x720,FRAME-RATE=30.000,\
             CODECS=\"avc1.42c01f,mp4a.40.2\"\nstream.m3u8\n"
        );
    }
}
