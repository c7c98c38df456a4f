//! The HLS output (RFC 8216, draft-pantos-hls-rfc8216bis): its variants (MPEG-TS
//! segments from multifilesink, fMP4 segments from isofmp4mux, and Low-Latency HLS, the
//! same split into parts), the playlists, and the stream's directory. The playlist
//! ([`crate::hls::playlist::Playlist`]) is plain data; [`LiveHls`] shares it with the
//! HTTP requests that read it and wait on it; [`HlsOutput`] puts the files on disk and
//! attaches to the pipeline; [`HlsStore`] says where outputs go and opens them, new or
//! continuing an ended stream's output that lingered (the registry keeps those for
//! `hls.linger_s`, so that a publisher who comes back continues it).

mod fmp4;

use crate::config::{HlsConfig, HlsVariant, TranscodeConfig};
use crate::hls::live::LiveHls;
use crate::hls::playlist::{LowLatency, Playlist, Segment, Variant, render_multivariant};
use crate::media::event::MediaEvent;
use crate::media::pipeline::StreamPipeline;
use crate::media::probe::{on_first_buffer, running_time};
use crate::media::spec::{FileOutput, HlsSpec};
use crate::media::templates::names;
use crate::name::StreamName;
use crate::scratch::ScratchDir;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_video as gst_video;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// What the variant's video is: made by the encoder, or the publisher's own passed
/// through, with its picture size once its SPS is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VariantVideo {
    None,
    Encoded,
    PassedThrough(Option<(u32, u32)>),
}

/// The variant a stream's outputs make. Passed through, the video's bitrate is the
/// publisher's: `transcode.video_bitrate_kbps` stands for it (browsers send up to about
/// that at 720p), and the frame rate is not known ahead.
pub fn variant_of(
    transcode: &TranscodeConfig,
    video: VariantVideo,
    audio: bool,
    codec: Option<String>,
) -> Variant {
    let has_video = video != VariantVideo::None;
    let kbps = if has_video {
        transcode.video_bitrate_kbps
    } else {
        0
    } + if audio { 128 } else { 0 };
    let (resolution, framerate) = match video {
        VariantVideo::None => (None, None),
        VariantVideo::Encoded => (
            Some((transcode.width, transcode.height)),
            Some(transcode.framerate),
        ),
        VariantVideo::PassedThrough(size) => (size, None),
    };
    Variant {
        // The encoders' rates plus a tenth for the container's overhead.
        bandwidth: kbps as u64 * 1100,
        resolution,
        framerate,
        video_codec: codec,
        audio,
    }
}

/// How much shorter than the segment duration isofmp4mux's fragment duration is (see
/// [`HlsOutput::spec`]).
const FRAGMENT_EARLY_NS: u64 = 1_000_000;

pub const MULTIVARIANT: &str = "index.m3u8";
pub const MEDIA: &str = "stream.m3u8";

/// A stream's HLS files: its directory, segment naming, and playlist. Outlives a
/// publisher by `hls.linger_s`, so that one who comes back continues it.
#[derive(Debug)]
pub struct HlsOutput {
    /// The playlist and parts, shared with the HTTP requests.
    pub live: Arc<LiveHls>,
    /// Segment names start with it, unique to this output, so caches never mix two.
    pub prefix: String,
    variant: HlsVariant,
    part_ns: u64,
    /// The next MPEG-TS segment file's number.
    next_index: u64,
    /// Publishers so far: each has its own fMP4 initialisation section.
    publishers: u64,
    /// The number the next low-latency part's URI gets.
    next_part: Arc<std::sync::atomic::AtomicU64>,
    /// Running time where the open MPEG-TS segment began.
    segment_start_ns: Option<u64>,
    variant_written: bool,
    /// The media sequence number of the output's first segment.
    first_msn: u64,
}

impl HlsOutput {
    /// Creates a directory of its own for the stream's files, `root/<name>.<random>`: no
    /// other output's directory is ever named the same, and since `.` is not allowed in a
    /// name, no other stream's either. What an earlier output of the same name left
    /// there (a previous run's ended playlist) is removed first.
    fn create(root: &Path, stream: &StreamName, config: &HlsConfig) -> std::io::Result<Self> {
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
        let low_latency = (config.variant == HlsVariant::LowLatency).then_some(LowLatency {
            part_target: config.part_duration_ms as f64 / 1000.0,
        });
        // Media sequence numbers start from the clock, ten a second: a later output of
        // the same name (after a restart, or once this one has expired) starts past
        // every number this one can reach, as long as its segments average over 0.1 s.
        // A cache that keeps blocking reloads by `_HLS_msn` then never answers a new
        // publication with an old one's playlist.
        let playlist = Playlist::new(
            config.segment_duration_s,
            config.playlist_length as usize,
            low_latency,
        )
        .starting_at((stamp / 100) as u64);
        let first_msn = playlist.next_msn();
        Ok(Self {
            live: Arc::new(LiveHls::new(dir, playlist)),
            prefix: format!("s{stamp:x}-"),
            variant: config.variant,
            part_ns: config.part_duration_ms as u64 * 1_000_000,
            next_index: 0,
            publishers: 0,
            next_part: Arc::default(),
            segment_start_ns: None,
            variant_written: false,
            first_msn,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.live.dir
    }

    /// A publisher comes back: continue after a discontinuity.
    fn resume(&mut self) -> std::io::Result<()> {
        self.live.update(Playlist::resume);
        self.segment_start_ns = None;
        self.write_media()
    }

    /// What the pipeline's HLS branch is built with.
    pub fn spec(&self, segment_duration_s: u32) -> HlsSpec {
        let segment_ns = segment_duration_s as u64 * 1_000_000_000;
        HlsSpec {
            location: self.dir().join(format!("{}%05d.ts", self.prefix)),
            start_index: self.next_index,
            // isofmp4mux ends a fragment at a key frame that starts after its end, not
            // at one exactly on it, which it asked the encoder for: every fragment then
            // took two GOPs. A millisecond short, the key frame it asks for (the first
            // picture at or after the end) starts after it.
            segment_ns: if self.variant == HlsVariant::Mpegts {
                segment_ns
            } else {
                segment_ns - FRAGMENT_EARLY_NS
            },
            fmp4: self.variant != HlsVariant::Mpegts,
            part_ns: (self.variant == HlsVariant::LowLatency).then_some(self.part_ns),
        }
    }

    /// Segments closed so far, over every publisher of this output (media sequence
    /// numbers start from the clock, not from zero).
    pub fn segments(&self) -> u64 {
        self.live
            .read(Playlist::next_msn)
            .saturating_sub(self.first_msn)
    }

    /// Attaches to the pipeline: a failed HLS output is cut off. MPEG-TS: the first
    /// data's running time is reported, and with video the encoder is asked for a key
    /// unit every segment. fMP4: the muxer asks for key units, and its output is written.
    pub fn attach(&mut self, pipeline: &StreamPipeline, spec: &HlsSpec) {
        for queue in [names::HLS_VIDEO_QUEUE, names::HLS_AUDIO_QUEUE] {
            pipeline.drop_when_failed(pipeline.gst().upcast_ref(), queue, FileOutput::Hls);
        }
        if spec.fmp4 {
            self.publishers += 1;
            fmp4::Fmp4Writer {
                live: self.live.clone(),
                prefix: self.prefix.clone(),
                init_uri: format!("{}init{}.mp4", self.prefix, self.publishers),
                headers: 0,
                next_part: self.next_part.clone(),
                part_target: spec.part_ns.map(|ns| ns as f64 / 1e9),
                part: None,
                boundary_after_header: (pipeline.video_passthrough() && pipeline.tracks().0)
                    .then_some(spec.segment_ns),
                header_pending: false,
            }
            .attach(pipeline);
            return;
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

    /// Adds a closed MPEG-TS segment to the playlist, dated by the pipeline's clock,
    /// and deletes those that left the window a grace ago.
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
        let segment = Segment {
            uri: uri.to_string(),
            duration,
            date: pipeline.wall_clock(start_ns),
            discontinuity: false,
            map: None,
            parts: Vec::new(),
        };
        for gone in self.live.push(segment) {
            let _ = std::fs::remove_file(self.dir().join(gone.uri));
        }
        self.write_media()
    }

    /// Writes the multivariant playlist, once.
    pub fn write_variant(&mut self, variant: &Variant) {
        if self.variant_written {
            return;
        }
        self.variant_written = true;
        if let Err(e) = write_atomically(
            &self.dir().join(MULTIVARIANT),
            &render_multivariant(variant, MEDIA),
        ) {
            tracing::warn!("cannot write the HLS multivariant playlist: {e}");
        }
    }

    /// Closes the playlist with ENDLIST.
    pub fn end(&mut self) {
        self.live.update(Playlist::end);
        if let Err(e) = self.write_media() {
            tracing::warn!("cannot end the HLS playlist: {e}");
        }
    }

    fn write_media(&self) -> std::io::Result<()> {
        write_media(&self.live)
    }

    /// Removes the stream's files (an ended output whose linger is over). Touches the
    /// disk: call it off the async workers.
    pub fn remove(self) {
        tracing::debug!(dir = %self.dir().display(), "HLS files expired");
        let _ = std::fs::remove_dir_all(self.dir());
    }
}

/// Where the streams' HLS directories are made. Each output has a directory of its own;
/// an ended stream's output lingers in the registry, which hands it either to a returning
/// publisher or, once expired, back to be removed: never both.
/// The name of a temporary HLS directory: this, the process id, `-`, random letters.
pub const TEMPORARY_PREFIX: &str = "webrtc-gateway-hls-";

#[derive(Debug)]
pub struct HlsStore {
    root: PathBuf,
    config: HlsConfig,
    /// The temporary directory used when `hls.dir` is empty, removed at exit, and at
    /// the next start when the gateway was killed.
    _temp: Option<ScratchDir>,
}

impl HlsStore {
    /// Outputs under `config.dir`, or under a temporary directory when it is empty.
    pub fn new(config: &HlsConfig) -> std::io::Result<Self> {
        let temp = if config.dir.as_os_str().is_empty() {
            Some(ScratchDir::create(TEMPORARY_PREFIX)?)
        } else {
            None
        };
        Ok(Self {
            root: temp
                .as_ref()
                .map_or_else(|| config.dir.clone(), |t| t.path().to_owned()),
            config: config.clone(),
            _temp: temp,
        })
    }

    /// The stream's output: `lingering`, its previous publisher's, continued after a
    /// discontinuity, or a new one. Touches the disk: call it off the async workers.
    pub fn open(
        &self,
        name: &StreamName,
        lingering: Option<HlsOutput>,
    ) -> std::io::Result<HlsOutput> {
        match lingering {
            Some(mut output) => output.resume().map(|()| output),
            None => HlsOutput::create(&self.root, name, &self.config),
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

/// The playlist on disk: its complete segments, so that a kept `hls.dir` plays.
fn write_media(live: &LiveHls) -> std::io::Result<()> {
    let text = live.read(Playlist::render_file);
    write_atomically(&live.dir.join(MEDIA), &text)
}

/// Writes a file so that readers see either the old or the new text, never a part.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(partial, path)
}
