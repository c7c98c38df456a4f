//! One running stream pipeline and the factory that builds it. The factory parses the
//! checked templates for a stream's tracks and outputs; the pipeline is then fed RTP
//! through its [`MediaInput`]s and reports on its bus. The outputs (`output::rtp`, `hls`,
//! `record`) attach themselves to it before it plays. A file output that fails is cut
//! off (its queues drop) and the stream goes on.

use crate::config::{RtpConfig, TranscodeConfig};
use crate::media::error::PipelineError;
use crate::media::event::{MediaEvent, MediaEventReceiver, MediaEvents, media_events};
use crate::media::h264::{avc1_codec, has_b_slice};
use crate::media::input::MediaInput;
use crate::media::measure::Measurements;
use crate::media::probe::{caps_size, element_pad, on_first_buffer};
use crate::media::spec::{FileOutput, RecordSpec, StreamSpec, VideoCodec};
use crate::media::templates::{Templates, names};
use gstreamer as gst;
use gstreamer::prelude::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
        // isofmp4mux, for fMP4 HLS: gst-plugins-rs, not packaged for Debian 12.
        gstfmp4::plugin_register_static().map_err(|e| PipelineError::Start(e.to_string()))?;
        let templates = Templates::load(dir, &transcode, &rtp)?;
        Ok(Self {
            templates,
            transcode,
            rtp,
        })
    }

    /// Builds one stream's pipeline, ready for its outputs to attach and then to play.
    pub fn build(
        &self,
        spec: &StreamSpec,
    ) -> Result<(StreamPipeline, MediaEventReceiver), PipelineError> {
        let pipeline = self.templates.build(spec, &self.transcode, &self.rtp)?;
        // Sinks' end-of-stream messages reach the bus, so each file output's end is seen.
        pipeline.set_property("message-forward", true);
        let (events, receiver) = media_events();
        let failed = Arc::new(FailedOutputs::default());
        watch_bus(&pipeline, events.clone(), failed.clone());
        let measurements = Measurements::attach(&pipeline);
        // Only the video input reports key-frame requests and picture arrivals.
        let video_input = pipeline.by_name(names::VIDEO_IN).and_then(|element| {
            MediaInput::link(
                &pipeline,
                &element,
                Some(events.clone()),
                Some(measurements.clone()),
            )
        });
        let audio_input = pipeline
            .by_name(names::AUDIO_IN)
            .and_then(|element| MediaInput::link(&pipeline, &element, None, None));
        on_first_buffer(
            &pipeline,
            (names::VIDEO_PARSE, "src"),
            events.clone(),
            |_, buffer| {
                let map = buffer.map_readable().ok()?;
                Some(MediaEvent::VideoEncoded {
                    codec: avc1_codec(&map),
                })
            },
        );
        on_first_buffer(
            &pipeline,
            (names::AUDIO_DEPAY, "src"),
            events.clone(),
            |_, _| Some(MediaEvent::AudioFlowing),
        );
        if spec
            .video
            .as_ref()
            .is_some_and(|v| v.codec == VideoCodec::Vp8)
        {
            refuse_large_vp8(&pipeline, spec.max_input, events.clone());
        }
        refuse_large_caps(&pipeline, spec.max_input, events.clone());
        if spec.video_passthrough {
            stamp_decode_times(&pipeline);
            refuse_b_frames(&pipeline, events.clone());
        }
        report_input_size(&pipeline, events.clone());
        take_off_aac_priming(&pipeline);
        let stream = StreamPipeline {
            pipeline,
            events,
            video_input,
            audio_input,
            templates: self.templates.clone(),
            tracks: (spec.video.is_some(), spec.audio.is_some()),
            video_passthrough: spec.video_passthrough,
            failed,
            measurements,
        };
        Ok((stream, receiver))
    }
}

/// One stream pipeline. Stopping it (or dropping it) ends its outputs.
#[derive(Debug)]
pub struct StreamPipeline {
    pipeline: gst::Pipeline,
    events: MediaEvents,
    video_input: Option<MediaInput>,
    audio_input: Option<MediaInput>,
    templates: Templates,
    /// Whether the stream has video, audio.
    tracks: (bool, bool),
    /// The publisher's H.264 passes through: it makes every key frame.
    video_passthrough: bool,
    failed: Arc<FailedOutputs>,
    measurements: Arc<Measurements>,
}

impl StreamPipeline {
    /// Starts the pipeline, once its outputs are attached.
    pub fn play(&self) -> Result<(), PipelineError> {
        self.pipeline
            .set_state(gst::State::Playing)
            .map(|_| ())
            .map_err(|e| PipelineError::Start(e.to_string()))
    }

    pub fn video_input(&self) -> Option<MediaInput> {
        self.video_input.clone()
    }

    pub fn audio_input(&self) -> Option<MediaInput> {
        self.audio_input.clone()
    }

    /// Frame counts and delays of the video path.
    pub fn measurements(&self) -> &Measurements {
        &self.measurements
    }

    /// The pipeline's running time now, in nanoseconds.
    pub fn running_time(&self) -> Option<u64> {
        self.pipeline
            .current_running_time()
            .map(gst::ClockTime::nseconds)
    }

    /// The wall-clock time at which the pipeline's running time is (or was)
    /// `running_time_ns`: a buffer's running time is when it arrived.
    pub fn wall_clock(&self, running_time_ns: u64) -> std::time::SystemTime {
        wall_clock(&self.pipeline, running_time_ns)
    }

    /// [`StreamPipeline::wall_clock`] for the pipeline's own threads; it holds no
    /// reference that keeps the pipeline alive.
    pub fn wall_clock_source(
        &self,
    ) -> impl Fn(u64) -> std::time::SystemTime + Send + Sync + 'static {
        let pipeline = self.pipeline.downgrade();
        move |running_time_ns| match pipeline.upgrade() {
            Some(pipeline) => wall_clock(&pipeline, running_time_ns),
            None => std::time::SystemTime::now(),
        }
    }

    /// The video jitter buffer's counts of packets it declared lost and of packets that
    /// came after their time and were dropped.
    pub fn video_jitter_drops(&self) -> (u64, u64) {
        let stats = self
            .pipeline
            .by_name(names::VIDEO_JITTER)
            .map(|j| j.property::<gst::Structure>("stats"));
        let count = |field: &str| {
            stats
                .as_ref()
                .and_then(|s| s.get::<u64>(field).ok())
                .unwrap_or(0)
        };
        (count("num-lost"), count("num-late"))
    }

    /// Sets how long the receive jitter buffers (video and audio alike, so that they stay
    /// in sync) wait for late and retransmitted packets. A longer wait holds what is queued
    /// back by the difference; a shorter one lets it out sooner.
    pub fn set_jitter_latency(&self, latency: std::time::Duration) {
        let ms = u32::try_from(latency.as_millis()).unwrap_or(u32::MAX);
        for name in [names::VIDEO_JITTER, names::AUDIO_JITTER] {
            if let Some(jitter) = self.pipeline.by_name(name) {
                jitter.set_property("latency", ms);
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

    /// The GStreamer pipeline, for the outputs to attach to.
    pub(in crate::media) fn gst(&self) -> &gst::Pipeline {
        &self.pipeline
    }

    pub(in crate::media) fn element(&self, name: &str) -> Option<gst::Element> {
        self.pipeline.by_name(name)
    }

    /// Where the outputs' probes report.
    pub(in crate::media) fn events(&self) -> MediaEvents {
        self.events.clone()
    }

    /// Whether the stream has video, audio.
    pub(in crate::media) fn tracks(&self) -> (bool, bool) {
        self.tracks
    }

    /// Whether the publisher's H.264 passes through, so that the publisher makes every
    /// key frame (and must be asked for them).
    pub(in crate::media) fn video_passthrough(&self) -> bool {
        self.video_passthrough
    }

    /// A recording bin for `record`, from its template; the caller gives it pads.
    pub(in crate::media) fn build_record(
        &self,
        record: &RecordSpec,
        video: bool,
        audio: bool,
    ) -> Result<gst::Bin, PipelineError> {
        self.templates.build_record(record, video, audio)
    }

    /// From now on, what reaches `queue` (in `bin`) is dropped once `output` has failed.
    pub(in crate::media) fn drop_when_failed(
        &self,
        bin: &gst::Bin,
        queue: &str,
        output: FileOutput,
    ) {
        let Some(pad) = bin.by_name(queue).and_then(|q| q.static_pad("sink")) else {
            return;
        };
        let failed = self.failed.clone();
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

    /// A new file for `output` starts: it has not failed.
    pub(in crate::media) fn clear_failed(&self, output: FileOutput) {
        self.failed.flag(output).store(false, Ordering::SeqCst);
    }
}

impl Drop for StreamPipeline {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
        crate::memory::pipeline_released();
    }
}

/// The size a VP8 key frame declares (RFC 6386, 9.1), if `frame` is one.
fn vp8_key_frame_size(frame: &[u8]) -> Option<(u32, u32)> {
    let is_key = frame.first()? & 1 == 0;
    if !is_key || frame.get(3..6)? != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let dimension = |at: usize| {
        Some(u32::from(
            u16::from_le_bytes([*frame.get(at)?, *frame.get(at + 1)?]) & 0x3fff,
        ))
    };
    Some((dimension(6)?, dimension(8)?))
}

/// Drops, before the decoder, every VP8 key frame larger than `max` and reports it: the
/// decoder never allocates for it.
fn refuse_large_vp8(pipeline: &gst::Pipeline, max: (u32, u32), events: MediaEvents) {
    let Some(pad) = element_pad(pipeline, (names::VIDEO_DEPAY, "src")) else {
        return;
    };
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let size = match &info.data {
            Some(gst::PadProbeData::Buffer(buffer)) => buffer
                .map_readable()
                .ok()
                .and_then(|map| vp8_key_frame_size(&map)),
            _ => None,
        };
        match size {
            Some((width, height)) if width > max.0 || height > max.1 => {
                events.send(MediaEvent::InputTooLarge { width, height });
                gst::PadProbeReturn::Drop
            }
            _ => gst::PadProbeReturn::Ok,
        }
    });
}

/// Stops the input, before the decoder, once the input parser's caps declare a picture
/// larger than `max` (H.264: the size from the SPS), and reports it: the caps never reach
/// the decoder, and neither does any buffer after them.
fn refuse_large_caps(pipeline: &gst::Pipeline, max: (u32, u32), events: MediaEvents) {
    let Some(pad) = element_pad(pipeline, (names::VIDEO_IN_PARSE, "src")) else {
        return;
    };
    let refused = AtomicBool::new(false);
    let kinds = gst::PadProbeType::EVENT_DOWNSTREAM
        | gst::PadProbeType::BUFFER
        | gst::PadProbeType::BUFFER_LIST;
    pad.add_probe(kinds, move |_, info| {
        if let Some((width, height)) = caps_size(info)
            && (width > max.0 || height > max.1)
        {
            if !refused.swap(true, Ordering::SeqCst) {
                events.send(MediaEvent::InputTooLarge { width, height });
            }
            return gst::PadProbeReturn::Drop;
        }
        if matches!(info.data, Some(gst::PadProbeData::Event(_))) {
            return gst::PadProbeReturn::Ok;
        }
        if refused.load(Ordering::Relaxed) {
            gst::PadProbeReturn::Drop
        } else {
            gst::PadProbeReturn::Ok
        }
    });
}

/// Gives every passed-through frame a decode time equal to its presentation time, as the
/// muxers need (isofmp4mux refuses video without one): the publisher's frames come
/// over RTP with presentation times only, and without B-frames decode order is
/// presentation order.
fn stamp_decode_times(pipeline: &gst::Pipeline) {
    let Some(pad) = element_pad(pipeline, (names::VIDEO_PARSE, "src")) else {
        return;
    };
    pad.add_probe(gst::PadProbeType::BUFFER, |_, info| {
        if let Some(buffer) = info.buffer_mut()
            && buffer.dts().is_none()
        {
            let buffer = buffer.make_mut();
            buffer.set_dts(buffer.pts());
        }
        gst::PadProbeReturn::Ok
    });
}

/// Ends a passed-through stream whose H.264 has B-frames, with a reason that says so:
/// its frames come over RTP without decode times, and the muxers would get them out of
/// order. Browsers, OBS and the WHIP tools send none; `transcode.mode = "always"`
/// transcodes such a publisher.
fn refuse_b_frames(pipeline: &gst::Pipeline, events: MediaEvents) {
    let Some(pad) = element_pad(pipeline, (names::VIDEO_IN_PARSE, "src")) else {
        return;
    };
    let refused = AtomicBool::new(false);
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if refused.load(Ordering::Relaxed) {
            return gst::PadProbeReturn::Drop;
        }
        let b_frame = match &info.data {
            Some(gst::PadProbeData::Buffer(buffer)) => {
                buffer.map_readable().is_ok_and(|map| has_b_slice(&map))
            }
            _ => false,
        };
        if !b_frame {
            return gst::PadProbeReturn::Ok;
        }
        refused.store(true, Ordering::Relaxed);
        events.send(MediaEvent::Error {
            element: names::VIDEO_IN_PARSE.into(),
            message: "the publisher's H.264 has B-frames, which cannot pass through \
                      (transcode.mode = \"always\" transcodes them)"
                .into(),
        });
        gst::PadProbeReturn::Drop
    });
}

/// The samples an AAC encoder puts before the first real ones (its priming): a decoder
/// plays them, so each AAC frame's audio starts this much after its timestamp.
const AAC_PRIMING: gst::ClockTime = gst::ClockTime::from_nseconds(1024 * 1_000_000_000 / 48_000);

/// Stamps every AAC frame that much earlier, so that HLS and the recordings play their
/// audio when it was heard (it ran about 20 ms late against the video).
fn take_off_aac_priming(pipeline: &gst::Pipeline) {
    let Some(pad) = element_pad(pipeline, (names::AUDIO_AAC, "sink")) else {
        return;
    };
    pad.add_probe(gst::PadProbeType::BUFFER, |_, info| {
        if let Some(buffer) = info.buffer_mut() {
            let buffer = buffer.make_mut();
            if let Some(pts) = buffer.pts() {
                buffer.set_pts(pts.saturating_sub(AAC_PRIMING));
            }
            if let Some(dts) = buffer.dts() {
                buffer.set_dts(dts.saturating_sub(AAC_PRIMING));
            }
        }
        gst::PadProbeReturn::Ok
    });
}

/// Reports the size of the publisher's pictures each time it changes: as decoded, or
/// without a decoder (pass-through) as its SPS declares.
fn report_input_size(pipeline: &gst::Pipeline, events: MediaEvents) {
    let Some(pad) = pipeline
        .by_name(names::VIDEO_DECODER)
        .or_else(|| pipeline.by_name(names::VIDEO_IN_PARSE))
        .and_then(|d| d.static_pad("src"))
    else {
        return;
    };
    pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
        if let Some((width, height)) = caps_size(info) {
            events.send(MediaEvent::InputSize { width, height });
        }
        gst::PadProbeReturn::Ok
    });
}

/// The file output an element belongs to, from its name or its parents' names.
fn file_output_of(object: &gst::Object) -> Option<FileOutput> {
    let mut current = Some(object.clone());
    while let Some(o) = current {
        let name = o.name();
        if name.starts_with(names::HLS_PREFIX) {
            return Some(FileOutput::Hls);
        }
        if name.starts_with(names::RECORD_PREFIX) {
            return Some(FileOutput::Recording);
        }
        current = o.parent();
    }
    None
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

/// When the buffers at `running_time_ns` of `pipeline` arrived, by the system clock.
fn wall_clock(pipeline: &gst::Pipeline, running_time_ns: u64) -> std::time::SystemTime {
    let now = std::time::SystemTime::now();
    let running_now = pipeline
        .current_running_time()
        .map_or(running_time_ns, gst::ClockTime::nseconds);
    let apart = std::time::Duration::from_nanos(running_now.abs_diff(running_time_ns));
    let then = if running_now >= running_time_ns {
        now.checked_sub(apart)
    } else {
        now.checked_add(apart)
    };
    then.unwrap_or(now)
}

/// Forwards errors, segments and file outputs' ends to the owner. An error in a file
/// output marks it failed (before the failure can flow upstream), so its queues drop
/// from then on and the stream goes on.
fn watch_bus(pipeline: &gst::Pipeline, events: MediaEvents, failed: Arc<FailedOutputs>) {
    let Some(bus) = pipeline.bus() else { return };
    bus.set_sync_handler(move |_, message| {
        match message.view() {
            gst::MessageView::Error(error) => {
                let text = error.error().message().to_string();
                let output = error.src().and_then(file_output_of);
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
                events.send(event);
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
                        .and_then(|m| m.src().and_then(file_output_of))
                        .map(MediaEvent::OutputFinished),
                    _ => None,
                };
                if let Some(event) = event {
                    events.send(event);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::spec::{OutputSpec, VideoInput};
    use std::time::Duration;

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
    fn a_vp8_key_frame_says_its_size() {
        let mut frame = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        frame.extend(16383u16.to_le_bytes());
        frame.extend(720u16.to_le_bytes());
        assert_eq!(vp8_key_frame_size(&frame), Some((16383, 720)));
        frame[0] |= 1;
        assert_eq!(vp8_key_frame_size(&frame), None, "an inter frame");
        assert_eq!(vp8_key_frame_size(&[0x10, 0x02]), None);
    }

    #[tokio::test]
    async fn pushed_packets_reach_the_depayloader_and_its_key_frame_requests_come_back() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
        let factory =
            PipelineFactory::new(&dir, TranscodeConfig::default(), RtpConfig::default()).unwrap();
        let spec = StreamSpec {
            name: crate::name::StreamName::new("input").unwrap(),
            max_input: (3840, 2160),
            slot: 0,
            video: Some(VideoInput {
                codec: VideoCodec::Vp8,
                payload_type: 96,
                clock_rate: 90_000,
            }),
            video_passthrough: false,
            audio: None,
            outputs: OutputSpec::default(),
        };
        let (pipeline, mut events) = factory.build(&spec).unwrap();
        pipeline.play().unwrap();
        let input = pipeline.video_input().unwrap();
        let requested = async {
            for k in 0..30u16 {
                assert!(input.push(vp8_inter_frame(k, u32::from(k) * 3000)));
                tokio::time::sleep(Duration::from_millis(33)).await;
                while let Some(event) = events.try_recv() {
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
