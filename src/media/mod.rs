//! Media: one GStreamer pipeline per stream, built from the templates in `pipelines/`.
//! It receives RTP packets as bytes, reports what happened as [`MediaEvent`]s (first
//! frames, key-frame requests, segments, errors) and produces the outputs: RTP to the
//! stream's port slot (described by an SDP file), HLS segments and playlists, and a
//! recording. It knows nothing of WebRTC.

pub mod hls;
pub mod recording;
pub mod sdp;
pub mod templates;

use crate::config::{RtpConfig, TranscodeConfig};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_video as gst_video;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use templates::Templates;
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cannot read pipeline template {path}")]
    ReadTemplate {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pipeline template {template} uses unknown placeholder {{{placeholder}}}")]
    UnknownPlaceholder {
        template: PathBuf,
        placeholder: String,
    },
    #[error("pipeline template {template} has no element named {name:?}")]
    MissingName { template: PathBuf, name: String },
    #[error("GStreamer element {element:?} is missing: {package}")]
    MissingElement { element: String, package: String },
    #[error("pipeline does not parse: {0}")]
    Parse(String),
    #[error("pipeline does not start: {0}")]
    Start(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    Vp8,
    H264,
}

impl VideoCodec {
    pub fn name(self) -> &'static str {
        match self {
            VideoCodec::Vp8 => "VP8",
            VideoCodec::H264 => "H264",
        }
    }
}

/// The publisher's video as it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoInput {
    pub codec: VideoCodec,
    pub payload_type: u8,
    pub clock_rate: u32,
}

/// The publisher's Opus audio as it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioInput {
    pub payload_type: u8,
}

/// What one stream's pipeline is built for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    pub name: String,
    pub slot: u32,
    pub video: Option<VideoInput>,
    pub audio: Option<AudioInput>,
    pub outputs: OutputSpec,
}

/// Which outputs a stream's pipeline has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputSpec {
    pub rtp: bool,
    pub hls: Option<HlsSpec>,
    pub record: Option<RecordSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HlsSpec {
    /// multifilesink's location pattern (with `%05d`).
    pub location: PathBuf,
    pub start_index: u64,
    pub segment_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFormat {
    Mp4,
    Mkv,
    Ts,
}

impl RecordFormat {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "mp4" => Some(Self::Mp4),
            "mkv" => Some(Self::Mkv),
            "ts" => Some(Self::Ts),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Mp4 => "mp4",
            Self::Mkv => "mkv",
            Self::Ts => "ts",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSpec {
    pub path: PathBuf,
    pub format: RecordFormat,
}

impl StreamSpec {
    /// The spec used to check the templates at startup.
    fn check_spec(codec: VideoCodec, format: RecordFormat) -> StreamSpec {
        StreamSpec {
            name: "check".into(),
            slot: 0,
            video: Some(VideoInput {
                codec,
                payload_type: 96,
                clock_rate: 90000,
            }),
            audio: Some(AudioInput { payload_type: 111 }),
            outputs: OutputSpec {
                rtp: true,
                hls: Some(HlsSpec {
                    location: "/nonexistent/segment%05d.ts".into(),
                    start_index: 0,
                    segment_ns: 2_000_000_000,
                }),
                record: Some(RecordSpec {
                    path: "/nonexistent/check.mp4".into(),
                    format,
                }),
            },
        }
    }
}

/// A file output that can fail or finish without ending the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOutput {
    Hls,
    Recording,
}

impl FileOutput {
    /// The output an element belongs to, from its name or its parents' names.
    fn of(object: &gst::Object) -> Option<Self> {
        let mut current = Some(object.clone());
        while let Some(o) = current {
            let name = o.name();
            if name.starts_with("hls_") {
                return Some(Self::Hls);
            }
            if name.starts_with("record_") {
                return Some(Self::Recording);
            }
            current = o.parent();
        }
        None
    }
}

/// What a stream's pipeline reports to the task that owns it.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// The depayloader lost data it cannot repair and needs a key frame.
    KeyframeRequested,
    /// The first H.264 frame left the encoder; `codec` is `avc1.PPCCLL` from its SPS.
    VideoEncoded { codec: Option<String> },
    /// The first Opus frame left the depayloader.
    AudioFlowing,
    /// The H.264 RTP output started; its parameters describe it in SDP.
    VideoRtpReady {
        profile_level_id: String,
        sprop_parameter_sets: String,
    },
    /// The Opus RTP output started.
    AudioRtpReady,
    /// An element failed; the stream cannot go on.
    Error { element: String, message: String },
    /// The first data reached the HLS output, at this running time.
    SegmentsStarted { running_time_ns: u64 },
    /// An HLS segment file is complete; it ends at this running time.
    SegmentClosed { location: PathBuf, end_ns: u64 },
    /// A file output failed (a full disk, say); the stream and its other outputs go on.
    OutputFailed { output: FileOutput, message: String },
    /// A file output received the end of the stream and is complete.
    OutputFinished(FileOutput),
}

/// Builds stream pipelines from checked templates and the transcoding settings.
#[derive(Debug, Clone)]
pub struct PipelineFactory {
    templates: Templates,
    transcode: TranscodeConfig,
    rtp: RtpConfig,
}

impl PipelineFactory {
    /// Loads and checks the templates in `dir`; fails naming the file, element or package.
    pub fn new(
        dir: &std::path::Path,
        transcode: TranscodeConfig,
        rtp: RtpConfig,
    ) -> Result<Self, PipelineError> {
        gst::init().map_err(|e| PipelineError::Start(e.to_string()))?;
        let templates = Templates::load(dir, &transcode, &rtp)?;
        Ok(Self {
            templates,
            transcode,
            rtp,
        })
    }

    pub fn rtp(&self) -> &RtpConfig {
        &self.rtp
    }

    /// Builds and starts one stream's pipeline.
    pub fn start(
        &self,
        spec: &StreamSpec,
    ) -> Result<(StreamPipeline, mpsc::Receiver<MediaEvent>), PipelineError> {
        let pipeline = self.templates.build(spec, &self.transcode, &self.rtp)?;
        // Sinks' end-of-stream messages reach the bus, so each file output's end is seen.
        pipeline.set_property("message-forward", true);
        let (events, receiver) = mpsc::channel(256);
        let failed = Arc::new(FailedOutputs::default());
        watch_bus(&pipeline, events.clone(), failed.clone());
        if spec.video.is_some()
            && let Some(hls) = &spec.outputs.hls
        {
            request_segment_keyframes(&pipeline, hls.segment_ns);
        }
        for queue in ["hls_video_queue", "hls_audio_queue"] {
            drop_when_failed(
                pipeline.upcast_ref(),
                queue,
                FileOutput::Hls,
                failed.clone(),
            );
        }
        let frames_out = Arc::new(AtomicU64::new(0));
        let pictures_out = Arc::new(AtomicU64::new(0));
        let encoder_delay_ns = Arc::new(AtomicU64::new(0));
        let delays = Arc::new(DelayHistogram::default());
        let arrivals = Arc::new(Arrivals::default());
        note_released_pictures(&pipeline, arrivals.clone());
        count_encoded_frames(
            &pipeline,
            (frames_out.clone(), pictures_out.clone()),
            encoder_delay_ns.clone(),
            delays.clone(),
            arrivals.clone(),
        );

        let input = |name: &str, arrivals: Option<Arc<Arrivals>>| {
            MediaInput::link(
                &pipeline,
                &pipeline.by_name(name)?,
                events.clone(),
                arrivals,
            )
        };
        let video_input = input("video_in", Some(arrivals));
        let audio_input = input("audio_in", None);
        on_first_buffer(
            &pipeline,
            ("video_parse", "src"),
            events.clone(),
            |_, buffer| {
                let map = buffer.map_readable().ok()?;
                Some(MediaEvent::VideoEncoded {
                    codec: hls::avc1_codec(&map),
                })
            },
        );
        on_first_buffer(&pipeline, ("audio_depay", "src"), events.clone(), |_, _| {
            Some(MediaEvent::AudioFlowing)
        });
        on_first_buffer(&pipeline, ("video_pay", "src"), events.clone(), |pad, _| {
            let sprop = pad
                .current_caps()?
                .structure(0)?
                .get::<String>("sprop-parameter-sets")
                .ok()?;
            Some(MediaEvent::VideoRtpReady {
                profile_level_id: sdp::profile_level_id(&sprop)?,
                sprop_parameter_sets: sprop,
            })
        });
        on_first_buffer(
            &pipeline,
            ("hls_sink", "sink"),
            events.clone(),
            |pad, buffer| {
                Some(MediaEvent::SegmentsStarted {
                    running_time_ns: running_time(pad, buffer)?.nseconds(),
                })
            },
        );
        on_first_buffer(&pipeline, ("audio_pay", "src"), events, |_, _| {
            Some(MediaEvent::AudioRtpReady)
        });

        let stream = StreamPipeline {
            pipeline,
            video_input,
            audio_input,
            factory: self.clone(),
            tracks: (spec.video.is_some(), spec.audio.is_some()),
            failed,
            recording: std::sync::Mutex::new(None),
            frames_out,
            pictures_out,
            encoder_delay_ns,
            delays,
        };
        if let Some(record) = &spec.outputs.record {
            stream.start_recording(record)?;
        }
        stream
            .pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| PipelineError::Start(e.to_string()))?;
        Ok((stream, receiver))
    }
}

/// A recording bin in a running pipeline, and the tee pads that feed it.
#[derive(Debug)]
struct RecordingBranch {
    bin: gst::Bin,
    links: Vec<(gst::Pad, gst::Pad)>,
}

/// One running stream pipeline. Stopping it (or dropping it) ends its outputs.
#[derive(Debug)]
pub struct StreamPipeline {
    pipeline: gst::Pipeline,
    video_input: Option<MediaInput>,
    audio_input: Option<MediaInput>,
    factory: PipelineFactory,
    /// Whether the stream has video, audio.
    tracks: (bool, bool),
    failed: Arc<FailedOutputs>,
    recording: std::sync::Mutex<Option<RecordingBranch>>,
    frames_out: Arc<AtomicU64>,
    pictures_out: Arc<AtomicU64>,
    encoder_delay_ns: Arc<AtomicU64>,
    delays: Arc<DelayHistogram>,
}

/// Delays of every encoded frame, in milliseconds, for percentiles.
#[derive(Debug)]
pub struct DelayHistogram {
    /// One bucket per millisecond; the last holds everything longer.
    buckets: Vec<AtomicU64>,
}

impl Default for DelayHistogram {
    fn default() -> Self {
        Self {
            buckets: (0..1001).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl DelayHistogram {
    fn record(&self, delay: Duration) {
        let ms = (delay.as_millis() as usize).min(self.buckets.len() - 1);
        self.buckets[ms].fetch_add(1, Ordering::Relaxed);
    }

    /// The delay (ms) below which `quantile` of the frames stayed, if any frame was seen.
    pub fn percentile(&self, quantile: f64) -> Option<u64> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let wanted = (quantile * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        counts
            .iter()
            .position(|c| {
                seen += c;
                seen >= wanted
            })
            .map(|ms| ms as u64)
    }
}

impl StreamPipeline {
    pub fn video_input(&self) -> Option<MediaInput> {
        self.video_input.clone()
    }

    pub fn audio_input(&self) -> Option<MediaInput> {
        self.audio_input.clone()
    }

    /// The video jitter buffer's counts of packets it declared lost and of packets that
    /// came after their time and were dropped.
    pub fn video_jitter_drops(&self) -> (u64, u64) {
        let stats = self
            .pipeline
            .by_name("video_jitter")
            .map(|j| j.property::<gst::Structure>("stats"));
        let count = |field: &str| {
            stats
                .as_ref()
                .and_then(|s| s.get::<u64>(field).ok())
                .unwrap_or(0)
        };
        (count("num-lost"), count("num-late"))
    }

    /// H.264 frames out of the encoder so far.
    pub fn frames_out(&self) -> u64 {
        self.frames_out.load(Ordering::Relaxed)
    }

    /// H.264 frames made from a newly arrived picture so far; `frames_out` also counts
    /// the copies that fill gaps to keep the frame rate.
    pub fn pictures_out(&self) -> u64 {
        self.pictures_out.load(Ordering::Relaxed)
    }

    /// How long the last encoded frame took from arrival to leaving the encoder.
    pub fn encoder_delay(&self) -> Duration {
        Duration::from_nanos(self.encoder_delay_ns.load(Ordering::Relaxed))
    }

    /// Every encoded frame's delay from arrival to leaving the encoder.
    pub fn delays(&self) -> &DelayHistogram {
        &self.delays
    }

    fn recording(&self) -> std::sync::MutexGuard<'_, Option<RecordingBranch>> {
        self.recording.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_recording(&self) -> bool {
        self.recording().is_some()
    }

    /// Adds a recording branch fed by the encoder's H.264 and the AAC encoder.
    pub fn start_recording(&self, record: &RecordSpec) -> Result<(), PipelineError> {
        let mut recording = self.recording();
        if recording.is_some() {
            return Err(PipelineError::Start("already recording".into()));
        }
        let (video, audio) = self.tracks;
        let audio = audio && self.pipeline.by_name("audio_aac").is_some();
        let bin = self.factory.templates.build_record(record, video, audio)?;
        bin.set_property("name", "record_bin");
        self.pipeline
            .add(&bin)
            .map_err(|e| PipelineError::Start(e.to_string()))?;
        self.failed.recording.store(false, Ordering::SeqCst);
        let mut links = Vec::new();
        for (tee, queue) in [
            ("video_encoded", "record_video_queue"),
            ("audio_aac", "record_audio_queue"),
        ] {
            let (Some(tee), Some(queue)) = (self.pipeline.by_name(tee), bin.by_name(queue)) else {
                continue;
            };
            drop_when_failed(
                &bin,
                queue.name().as_str(),
                FileOutput::Recording,
                self.failed.clone(),
            );
            let target = queue.static_pad("sink").expect("a queue has a sink pad");
            let bin_pad = gst::GhostPad::builder_with_target(&target)
                .map_err(|e| PipelineError::Start(e.to_string()))?
                .name(queue.name().as_str())
                .build();
            bin.add_pad(&bin_pad)
                .map_err(|e| PipelineError::Start(e.to_string()))?;
            let bin_pad = bin_pad.upcast::<gst::Pad>();
            let tee_pad = tee
                .request_pad_simple("src_%u")
                .ok_or_else(|| PipelineError::Start("the tee gives no pad".into()))?;
            tee_pad
                .link(&bin_pad)
                .map_err(|e| PipelineError::Start(format!("cannot link the recording: {e:?}")))?;
            links.push((tee_pad, bin_pad));
        }
        bin.sync_state_with_parent()
            .map_err(|e| PipelineError::Start(e.to_string()))?;
        *recording = Some(RecordingBranch { bin, links });
        Ok(())
    }

    /// Cuts the recording branch off and ends its file; it reports
    /// [`MediaEvent::OutputFinished`] once the file is complete, then
    /// [`StreamPipeline::remove_recording`] takes it out.
    pub fn stop_recording(&self) -> bool {
        let recording = self.recording();
        let Some(branch) = recording.as_ref() else {
            return false;
        };
        for (tee_pad, bin_pad) in &branch.links {
            let _ = tee_pad.unlink(bin_pad);
            if let Some(tee) = tee_pad.parent_element() {
                tee.release_request_pad(tee_pad);
            }
            bin_pad.send_event(gst::event::Eos::new());
        }
        true
    }

    /// Takes a stopped recording branch out of the pipeline.
    pub fn remove_recording(&self) {
        if let Some(branch) = self.recording().take() {
            let _ = branch.bin.set_state(gst::State::Null);
            let _ = self.pipeline.remove(&branch.bin);
        }
    }

    /// Sends the RTP outputs to one more destination too.
    pub fn add_rtp_destination(&self, host: &str, video_port: u16, audio_port: u16) {
        self.rtp_destination("add", host, video_port, audio_port);
    }

    pub fn remove_rtp_destination(&self, host: &str, video_port: u16, audio_port: u16) {
        self.rtp_destination("remove", host, video_port, audio_port);
    }

    fn rtp_destination(&self, action: &str, host: &str, video_port: u16, audio_port: u16) {
        for (sink, port) in [
            ("video_rtp_out", video_port),
            ("video_rtcp_out", video_port + 1),
            ("audio_rtp_out", audio_port),
            ("audio_rtcp_out", audio_port + 1),
        ] {
            if let Some(sink) = self.pipeline.by_name(sink) {
                sink.emit_by_name::<()>(action, &[&host, &(port as i32)]);
            }
        }
    }

    /// Ends the inputs: the end of the stream flows to every output, which finishes its
    /// files and reports [`MediaEvent::OutputFinished`].
    pub fn finish(&self) {
        for input in [&self.video_input, &self.audio_input].into_iter().flatten() {
            input.finish();
        }
    }

    /// Tears the pipeline down; its outputs stop at once.
    pub async fn stop(self) {
        let pipeline = self.pipeline.clone();
        let _ = tokio::task::spawn_blocking(move || pipeline.set_state(gst::State::Null)).await;
    }
}

impl Drop for StreamPipeline {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Where one track's RTP packets enter the pipeline: a source pad of the gateway's own,
/// linked to the template's input element (`video_in`, `audio_in`) and pushed from the
/// track's receive task. There is no queue and no thread of its own: the jitter buffer
/// right after it takes each packet and is the one thread hop on the way in, as `udpsrc`
/// would be in a bare pipeline (benchmarked: an `appsrc` here cost a second hop per
/// packet). The jitter buffer only queues and never waits for the pipeline, so pushing
/// never blocks the receive task; when the pipeline falls behind, the jitter buffer
/// drops what is older than its latency. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MediaInput {
    inner: Arc<InputPad>,
}

#[derive(Debug)]
struct InputPad {
    pad: gst::Pad,
    /// The pipeline, whose clock stamps each packet's arrival.
    pipeline: gst::Pipeline,
    /// Serialises pushes and the end of the stream, as a pad needs.
    lock: std::sync::Mutex<()>,
    /// The video input notes when each picture arrived.
    arrivals: Option<Arc<Arrivals>>,
}

impl MediaInput {
    /// Links a new source pad to `element`'s sink pad, with `element`'s `caps`.
    fn link(
        pipeline: &gst::Pipeline,
        element: &gst::Element,
        events: mpsc::Sender<MediaEvent>,
        arrivals: Option<Arc<Arrivals>>,
    ) -> Option<MediaInput> {
        let caps = element.property::<Option<gst::Caps>>("caps")?;
        let query_caps = caps.clone();
        let pad = gst::Pad::builder(gst::PadDirection::Src)
            .name(format!("{}_src", element.name()))
            .event_function(move |_, _, event| {
                // The depayloader asks upstream for a key frame on loss it cannot repair.
                if event
                    .structure()
                    .is_some_and(|s| s.name() == "GstForceKeyUnit")
                {
                    let _ = events.try_send(MediaEvent::KeyframeRequested);
                }
                true
            })
            .query_function(move |_, _, query| match query.view_mut() {
                gst::QueryViewMut::Latency(latency) => {
                    latency.set(true, gst::ClockTime::ZERO, gst::ClockTime::NONE);
                    true
                }
                gst::QueryViewMut::Caps(q) => {
                    q.set_result(&query_caps);
                    true
                }
                _ => false,
            })
            .build();
        pad.set_active(true).ok()?;
        pad.link(&element.static_pad("sink")?).ok()?;
        let stream_id = pad.create_stream_id(pipeline, Some(element.name().as_str()));
        for event in [
            gst::event::StreamStart::new(&stream_id),
            gst::event::Caps::new(&caps),
            gst::event::Segment::new(&gst::FormattedSegment::<gst::ClockTime>::new()),
        ] {
            // Sticky: kept on the pad and sent with the first packet.
            let _ = pad.push_event(event);
        }
        Some(MediaInput {
            inner: Arc::new(InputPad {
                pad,
                pipeline: pipeline.clone(),
                lock: std::sync::Mutex::new(()),
                arrivals,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands one RTP packet to the pipeline, stamped with its arrival time. False once
    /// the pipeline no longer takes packets (it ended or is stopping).
    pub fn push<T: AsRef<[u8]> + Send + 'static>(&self, packet: T) -> bool {
        let now = self.inner.pipeline.current_running_time();
        if let (Some(arrivals), Some(now), Some(rtp_timestamp)) =
            (&self.inner.arrivals, now, rtp_timestamp(packet.as_ref()))
        {
            arrivals.arrive(rtp_timestamp, now);
        }
        let mut buffer = gst::Buffer::from_slice(packet);
        if let Some(buffer) = buffer.get_mut() {
            buffer.set_pts(now);
        }
        let _lock = self.lock();
        self.inner.pad.push(buffer).is_ok()
    }

    /// Ends the input's stream.
    fn finish(&self) {
        let _lock = self.lock();
        let _ = self.inner.pad.push_event(gst::event::Eos::new());
    }
}

/// File outputs that have failed, shared by the bus handler and the drop probes.
#[derive(Debug, Default)]
struct FailedOutputs {
    hls: AtomicBool,
    recording: AtomicBool,
}

impl FailedOutputs {
    fn flag(&self, output: FileOutput) -> &AtomicBool {
        match output {
            FileOutput::Hls => &self.hls,
            FileOutput::Recording => &self.recording,
        }
    }
}

/// Forwards errors, segments and file outputs' ends to the owner. An error in a file
/// output marks it failed (before the failure can flow upstream), so its queues drop
/// from then on and the stream goes on.
fn watch_bus(
    pipeline: &gst::Pipeline,
    events: mpsc::Sender<MediaEvent>,
    failed: Arc<FailedOutputs>,
) {
    let Some(bus) = pipeline.bus() else { return };
    bus.set_sync_handler(move |_, message| {
        match message.view() {
            gst::MessageView::Error(error) => {
                let text = error.error().message().to_string();
                let output = error.src().and_then(FileOutput::of);
                let event = match output {
                    Some(output) => {
                        failed.flag(output).store(true, Ordering::SeqCst);
                        MediaEvent::OutputFailed {
                            output,
                            message: text,
                        }
                    }
                    None => MediaEvent::Error {
                        element: error
                            .src()
                            .map(|s| s.name().to_string())
                            .unwrap_or_default(),
                        message: text,
                    },
                };
                let _ = events.try_send(event);
            }
            gst::MessageView::Element(element) => {
                let Some(s) = element.structure() else {
                    return gst::BusSyncReply::Drop;
                };
                let event = match s.name().as_str() {
                    "GstMultiFileSink" => segment_closed(s),
                    "GstBinForwarded" => s
                        .get::<gst::Message>("message")
                        .ok()
                        .filter(|m| m.type_() == gst::MessageType::Eos)
                        .and_then(|m| m.src().and_then(FileOutput::of))
                        .map(MediaEvent::OutputFinished),
                    _ => None,
                };
                if let Some(event) = event {
                    let _ = events.try_send(event);
                }
            }
            _ => {}
        }
        gst::BusSyncReply::Drop
    });
}

/// The segment a `GstMultiFileSink` message reports closed; its running time is where
/// the file ends (the next one's start, or the last buffer at the end of the stream).
fn segment_closed(s: &gst::StructureRef) -> Option<MediaEvent> {
    Some(MediaEvent::SegmentClosed {
        location: s.get::<String>("filename").ok()?.into(),
        end_ns: s.get::<u64>("running-time").ok()?,
    })
}

/// The running time of a buffer arriving at `pad`.
fn running_time(pad: &gst::Pad, buffer: &gst::BufferRef) -> Option<gst::ClockTime> {
    pad.sticky_event::<gst::event::Segment>(0)?
        .segment()
        .downcast_ref::<gst::format::Time>()?
        .to_running_time(buffer.pts())
}

/// Asks the encoder for a key frame every `segment_ns` of running time, as HLS needs:
/// the encoder's key-unit event then starts a new segment file. Each request is sent
/// when the previous key unit passes, for the running time one segment later.
fn request_segment_keyframes(pipeline: &gst::Pipeline, segment_ns: u64) {
    let Some(pad) = pipeline
        .by_name("hls_sink")
        .and_then(|s| s.static_pad("sink"))
    else {
        return;
    };
    let segment = gst::ClockTime::from_nseconds(segment_ns);
    let requested = AtomicBool::new(false);
    // multifilesink starts a file only on a key unit whose count differs from the last.
    let count = std::sync::atomic::AtomicU32::new(0);
    let kinds = gst::PadProbeType::BUFFER
        | gst::PadProbeType::BUFFER_LIST
        | gst::PadProbeType::EVENT_DOWNSTREAM;
    pad.add_probe(kinds, move |pad, info| {
        let first_pts = match &info.data {
            Some(gst::PadProbeData::Buffer(buffer)) => buffer.pts(),
            Some(gst::PadProbeData::BufferList(list)) => list.get(0).and_then(|b| b.pts()),
            _ => None,
        };
        let next = match &info.data {
            _ if first_pts.is_some() && !requested.load(Ordering::Relaxed) => {
                let position = pad
                    .sticky_event::<gst::event::Segment>(0)
                    .and_then(|e| {
                        e.segment()
                            .downcast_ref::<gst::format::Time>()?
                            .to_running_time(first_pts)
                    })
                    .unwrap_or_default();
                Some(position + segment)
            }
            Some(gst::PadProbeData::Event(event)) => {
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

/// Frames left out of the delay percentiles, at the start of a stream.
const STEADY_AFTER_FRAMES: u64 = 60;

/// Pictures remembered for matching encoded frames to their arrival (a few seconds).
const ARRIVALS_KEPT: usize = 256;

/// When each video picture arrived, matched by RTP timestamp: the input notes the
/// arrival of each RTP timestamp's first packet; the jitter buffer's output notes the
/// timestamp (running time) it gave that picture; an encoded frame's timestamp then
/// leads back to the RTP timestamp it was made from, and so to its arrival.
#[derive(Debug, Default)]
struct Arrivals {
    /// RTP timestamp and the running time its first packet arrived, oldest first.
    arrived: std::sync::Mutex<std::collections::VecDeque<(u32, gst::ClockTime)>>,
    /// Running time the jitter buffer gave a picture, and its RTP timestamp.
    released: std::sync::Mutex<std::collections::VecDeque<(gst::ClockTime, u32)>>,
}

impl Arrivals {
    fn note<T: PartialEq + Copy, U>(
        list: &std::sync::Mutex<std::collections::VecDeque<(T, U)>>,
        key: T,
        value: U,
    ) {
        let mut list = list.lock().unwrap_or_else(|e| e.into_inner());
        // A picture's later packets (and retransmissions) keep its first note.
        if list.iter().rev().take(8).any(|(k, _)| *k == key) {
            return;
        }
        if list.len() == ARRIVALS_KEPT {
            list.pop_front();
        }
        list.push_back((key, value));
    }

    fn arrive(&self, rtp_timestamp: u32, at: gst::ClockTime) {
        Self::note(&self.arrived, rtp_timestamp, at);
    }

    fn release(&self, at: gst::ClockTime, rtp_timestamp: u32) {
        Self::note(&self.released, at, rtp_timestamp);
    }

    /// The picture an encoded frame timestamped `at` was made from, as its RTP
    /// timestamp and arrival: the picture the jitter buffer released nearest to `at`
    /// (the frame-rate adapter puts the nearest picture on each point of its grid).
    fn arrival_of(&self, at: gst::ClockTime) -> Option<(u32, gst::ClockTime)> {
        let rtp_timestamp = {
            let released = self.released.lock().unwrap_or_else(|e| e.into_inner());
            released
                .iter()
                .rev()
                .take(64)
                .min_by_key(|(t, _)| t.nseconds().abs_diff(at.nseconds()))?
                .1
        };
        let arrived = self.arrived.lock().unwrap_or_else(|e| e.into_inner());
        arrived
            .iter()
            .rev()
            .find(|(ts, _)| *ts == rtp_timestamp)
            .map(|(_, at)| (rtp_timestamp, *at))
    }
}

/// The RTP timestamp of a packet, if it is one.
fn rtp_timestamp(packet: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(packet.get(4..8)?.try_into().ok()?))
}

/// Notes, at the jitter buffer's output, the running time each picture was given.
fn note_released_pictures(pipeline: &gst::Pipeline, arrivals: Arc<Arrivals>) {
    let Some(pad) = pipeline
        .by_name("video_jitter")
        .and_then(|j| j.static_pad("src"))
    else {
        return;
    };
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data
            && let Some(at) = running_time(pad, buffer)
            && let Ok(map) = buffer.map_readable()
            && let Some(rtp_timestamp) = rtp_timestamp(&map)
        {
            arrivals.release(at, rtp_timestamp);
        }
        gst::PadProbeReturn::Ok
    });
}

/// Counts H.264 frames out of the encoder and keeps each one's delay since the packets
/// it was made from arrived. Copies the frame-rate adapter made of a picture (to fill a
/// gap) count as frames, but only a picture's first frame counts as its delay.
fn count_encoded_frames(
    pipeline: &gst::Pipeline,
    (frames, pictures): (Arc<AtomicU64>, Arc<AtomicU64>),
    delay_ns: Arc<AtomicU64>,
    delays: Arc<DelayHistogram>,
    arrivals: Arc<Arrivals>,
) {
    let Some(parse) = pipeline.by_name("video_parse") else {
        return;
    };
    let Some(pad) = parse.static_pad("src") else {
        return;
    };
    // The RTP timestamp of the last frame's picture (u64::MAX before the first).
    let last_picture = AtomicU64::new(u64::MAX);
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let count = frames.fetch_add(1, Ordering::Relaxed);
        if let Some(gst::PadProbeData::Buffer(buffer)) = &info.data
            && let Some(now) = pad.parent_element().and_then(|e| e.current_running_time())
            && let Some((picture, arrived)) =
                running_time(pad, buffer).and_then(|at| arrivals.arrival_of(at))
            && last_picture.swap(u64::from(picture), Ordering::Relaxed) != u64::from(picture)
        {
            pictures.fetch_add(1, Ordering::Relaxed);
            let delay = now.saturating_sub(arrived);
            delay_ns.store(delay.nseconds(), Ordering::Relaxed);
            // The steady state: the first frames wait for the first key frame.
            if count >= STEADY_AFTER_FRAMES {
                delays.record(Duration::from_nanos(delay.nseconds()));
            }
        }
        gst::PadProbeReturn::Ok
    });
}

/// Drops what reaches a file output's queue once that output has failed.
fn drop_when_failed(
    pipeline: &gst::Bin,
    queue: &str,
    output: FileOutput,
    failed: Arc<FailedOutputs>,
) {
    let Some(pad) = pipeline.by_name(queue).and_then(|q| q.static_pad("sink")) else {
        return;
    };
    pad.add_probe(
        gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST,
        move |_, _| {
            if failed.flag(output).load(Ordering::Relaxed) {
                gst::PadProbeReturn::Drop
            } else {
                gst::PadProbeReturn::Ok
            }
        },
    );
}

/// Reports the first buffer passing an element's pad for which `event` gives an event,
/// then removes itself.
fn on_first_buffer(
    pipeline: &gst::Pipeline,
    (element, pad): (&str, &str),
    events: mpsc::Sender<MediaEvent>,
    event: impl Fn(&gst::Pad, &gst::BufferRef) -> Option<MediaEvent> + Send + Sync + 'static,
) {
    let Some(pad) = pipeline.by_name(element).and_then(|e| e.static_pad(pad)) else {
        return;
    };
    // Payloaders push lists of packets; the first packet stands for the list.
    let kinds = gst::PadProbeType::BUFFER | gst::PadProbeType::BUFFER_LIST;
    pad.add_probe(kinds, move |pad, info| {
        let buffer = match &info.data {
            Some(gst::PadProbeData::Buffer(buffer)) => Some(buffer.as_ref()),
            Some(gst::PadProbeData::BufferList(list)) => list.get(0),
            _ => None,
        };
        let Some(buffer) = buffer else {
            return gst::PadProbeReturn::Ok;
        };
        match event(pad, buffer) {
            Some(event) => {
                let _ = events.try_send(event);
                gst::PadProbeReturn::Remove
            }
            None => gst::PadProbeReturn::Ok,
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RTP packet carrying the start of a VP8 inter frame: a frame that cannot be
    /// decoded without the key frame before it.
    fn vp8_inter_frame(sequence: u16, timestamp: u32) -> Vec<u8> {
        let mut packet = vec![0x80, 0x80 | 96];
        packet.extend(sequence.to_be_bytes());
        packet.extend(timestamp.to_be_bytes());
        packet.extend(0x1234_5678u32.to_be_bytes());
        // Payload descriptor: start of partition 0. Frame tag: bit 0 set, an inter frame.
        packet.extend([0x10, 0x01]);
        packet.extend([0u8; 64]);
        packet
    }

    #[test]
    fn an_encoded_frame_is_matched_to_the_arrival_of_the_nearest_released_picture() {
        let arrivals = Arrivals::default();
        let ms = gst::ClockTime::from_mseconds;
        assert_eq!(arrivals.arrival_of(ms(1000)), None);
        for k in 0..5u32 {
            let arrived = 1000 + 33 * u64::from(k);
            arrivals.arrive(k * 3000, ms(arrived));
            // A picture's second packet, and a retransmission, keep its first arrival.
            arrivals.arrive(k * 3000, ms(arrived + 5));
            arrivals.release(ms(arrived + 10), k * 3000);
        }
        // The frame-rate grid a little after picture 2's release, then a little before
        // picture 3's.
        assert_eq!(
            arrivals.arrival_of(ms(1066 + 10 + 4)),
            Some((6000, ms(1066)))
        );
        assert_eq!(
            arrivals.arrival_of(ms(1099 + 10 - 4)),
            Some((9000, ms(1099)))
        );
        // Only the newest pictures are kept.
        for k in 5..(5 + ARRIVALS_KEPT as u32) {
            arrivals.arrive(k * 3000, ms(1000 + 33 * u64::from(k)));
        }
        arrivals.release(ms(1076), 2 * 3000);
        assert_eq!(arrivals.arrival_of(ms(1076)), None);
    }

    #[tokio::test]
    async fn pushed_packets_reach_the_depayloader_and_its_key_frame_requests_come_back() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
        let factory =
            PipelineFactory::new(&dir, TranscodeConfig::default(), RtpConfig::default()).unwrap();
        let spec = StreamSpec {
            name: "input".into(),
            slot: 0,
            video: Some(VideoInput {
                codec: VideoCodec::Vp8,
                payload_type: 96,
                clock_rate: 90_000,
            }),
            audio: None,
            outputs: OutputSpec::default(),
        };
        let (pipeline, mut events) = factory.start(&spec).unwrap();
        let input = pipeline.video_input().unwrap();
        let requested = async {
            for k in 0..30u16 {
                assert!(input.push(vp8_inter_frame(k, u32::from(k) * 3000)));
                tokio::time::sleep(Duration::from_millis(33)).await;
                while let Ok(event) = events.try_recv() {
                    if matches!(event, MediaEvent::KeyframeRequested) {
                        return true;
                    }
                }
            }
            false
        };
        assert!(requested.await, "no key-frame request reached the input");
        pipeline.finish();
        pipeline.stop().await;
        assert!(
            !input.push(vp8_inter_frame(30, 90_000)),
            "a stopped pipeline took a packet"
        );
    }
}
