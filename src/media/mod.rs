//! Media: one GStreamer pipeline per stream, built from the templates in `pipelines/`.
//! It receives RTP packets as bytes, reports what happened as [`MediaEvent`]s (first
//! frames, key-frame requests, errors) and produces the outputs (RTP to the stream's
//! port slot, described by an SDP file). It knows nothing of WebRTC.

pub mod sdp;
pub mod templates;

use crate::config::{RtpConfig, TranscodeConfig};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use templates::Templates;
use tokio::sync::mpsc;

/// Most bytes queued in an input before packets are dropped rather than queued.
const INPUT_QUEUE_BYTES: u64 = 4 * 1024 * 1024;

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
}

impl StreamSpec {
    /// The spec used to check the templates at startup.
    fn check_spec(codec: VideoCodec) -> StreamSpec {
        StreamSpec {
            name: "check".into(),
            slot: 0,
            video: Some(VideoInput {
                codec,
                payload_type: 96,
                clock_rate: 90000,
            }),
            audio: Some(AudioInput { payload_type: 111 }),
        }
    }
}

/// What a stream's pipeline reports to the task that owns it.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// The depayloader lost data it cannot repair and needs a key frame.
    KeyframeRequested,
    /// The first H.264 frame left the encoder.
    VideoEncoded,
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
        let (events, receiver) = mpsc::channel(64);
        watch_bus(&pipeline, events.clone());

        let input = |name: &str| -> Option<MediaInput> {
            let appsrc = pipeline.by_name(name)?.downcast::<gst_app::AppSrc>().ok()?;
            appsrc.set_max_bytes(INPUT_QUEUE_BYTES);
            Some(MediaInput {
                appsrc,
                dropped: Arc::new(AtomicU64::new(0)),
            })
        };
        let video_input = input("video_in");
        let audio_input = input("audio_in");

        if let Some(video) = &video_input {
            watch_keyframe_requests(&video.appsrc, events.clone());
        }
        on_first_buffer(&pipeline, "video_parse", events.clone(), |_| {
            Some(MediaEvent::VideoEncoded)
        });
        on_first_buffer(&pipeline, "audio_depay", events.clone(), |_| {
            Some(MediaEvent::AudioFlowing)
        });
        on_first_buffer(&pipeline, "video_pay", events.clone(), |caps| {
            let s = caps?.structure(0)?.to_owned();
            Some(MediaEvent::VideoRtpReady {
                profile_level_id: s.get::<String>("profile-level-id").ok()?,
                sprop_parameter_sets: s.get::<String>("sprop-parameter-sets").ok()?,
            })
        });
        on_first_buffer(&pipeline, "audio_pay", events, |_| {
            Some(MediaEvent::AudioRtpReady)
        });

        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| PipelineError::Start(e.to_string()))?;
        Ok((
            StreamPipeline {
                pipeline,
                video_input,
                audio_input,
            },
            receiver,
        ))
    }
}

/// One running stream pipeline. Stopping it (or dropping it) ends its outputs.
#[derive(Debug)]
pub struct StreamPipeline {
    pipeline: gst::Pipeline,
    video_input: Option<MediaInput>,
    audio_input: Option<MediaInput>,
}

impl StreamPipeline {
    pub fn video_input(&self) -> Option<MediaInput> {
        self.video_input.clone()
    }

    pub fn audio_input(&self) -> Option<MediaInput> {
        self.audio_input.clone()
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

/// Where one track's RTP packets enter the pipeline. Cheap to clone; never blocks.
#[derive(Debug, Clone)]
pub struct MediaInput {
    appsrc: gst_app::AppSrc,
    dropped: Arc<AtomicU64>,
}

impl MediaInput {
    /// Queues one RTP packet. When the pipeline has fallen behind the packet is dropped
    /// and counted instead: the receive loop never waits for the pipeline.
    pub fn push<T: AsRef<[u8]> + Send + 'static>(&self, packet: T) -> bool {
        if self.appsrc.current_level_bytes() >= INPUT_QUEUE_BYTES {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.appsrc
            .push_buffer(gst::Buffer::from_slice(packet))
            .is_ok()
    }

    /// Packets dropped because the pipeline fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Forwards errors to the owner.
fn watch_bus(pipeline: &gst::Pipeline, events: mpsc::Sender<MediaEvent>) {
    let Some(bus) = pipeline.bus() else { return };
    bus.set_sync_handler(move |_, message| {
        if let gst::MessageView::Error(error) = message.view() {
            let element = error
                .src()
                .map(|s| s.name().to_string())
                .unwrap_or_default();
            let _ = events.try_send(MediaEvent::Error {
                element,
                message: error.error().message().to_string(),
            });
        }
        gst::BusSyncReply::Drop
    });
}

/// Turns the depayloader's upstream key-unit requests into events.
fn watch_keyframe_requests(appsrc: &gst_app::AppSrc, events: mpsc::Sender<MediaEvent>) {
    let Some(pad) = appsrc.static_pad("src") else {
        return;
    };
    pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
        if let Some(gst::PadProbeData::Event(event)) = &info.data
            && event
                .structure()
                .is_some_and(|s| s.name() == "GstForceKeyUnit")
        {
            let _ = events.try_send(MediaEvent::KeyframeRequested);
        }
        gst::PadProbeReturn::Ok
    });
}

/// Reports the first buffer leaving `element` for which `event` gives an event, then
/// removes itself.
fn on_first_buffer(
    pipeline: &gst::Pipeline,
    element: &str,
    events: mpsc::Sender<MediaEvent>,
    event: impl Fn(Option<gst::Caps>) -> Option<MediaEvent> + Send + Sync + 'static,
) {
    let Some(pad) = pipeline.by_name(element).and_then(|e| e.static_pad("src")) else {
        return;
    };
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, _| {
        match event(pad.current_caps()) {
            Some(event) => {
                let _ = events.try_send(event);
                gst::PadProbeReturn::Remove
            }
            None => gst::PadProbeReturn::Ok,
        }
    });
}
