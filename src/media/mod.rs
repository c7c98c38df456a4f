//! Media: one GStreamer pipeline per stream, built from the templates in `pipelines/`.
//! It receives RTP packets as bytes ([`MediaInput`]), reports what happened as
//! [`MediaEvent`]s (first frames, key-frame requests, segments, errors) and feeds the
//! outputs under [`output`]: RTP to the stream's port slot with its SDP file, HLS, and
//! the recording. It knows nothing of WebRTC.
//!
//! - `spec`, `event`, `error`: what a pipeline is built for, what it reports, why it fails;
//! - `templates`: loads and checks `pipelines/*.pipeline` at startup;
//! - `pipeline`: the factory and one running [`StreamPipeline`], its bus and file outputs;
//! - `input`: the pad the receive task pushes RTP into;
//! - `measure`: frame counts and delay percentiles, read by the statistics;
//! - `output`: `rtp`, `hls` and `record`, each owning its whole life.

pub mod error;
pub mod event;
mod h264;
mod input;
mod measure;
pub mod output;
mod pipeline;
mod probe;
pub mod spec;
pub mod templates;

pub use error::PipelineError;
pub use event::{MediaEvent, MediaEventReceiver, MediaEvents};
pub use input::MediaInput;
pub use measure::DelayHistogram;
pub use pipeline::{PipelineFactory, StreamPipeline};
pub use spec::{AudioInput, FileOutput, OutputSpec, StreamSpec, VideoCodec, VideoInput};
