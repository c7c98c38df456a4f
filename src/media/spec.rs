//! What a stream's pipeline is built for: the publisher's tracks as they arrive and the
//! outputs it feeds. Plain data.

use crate::config::RecordFormat;
use crate::name::StreamName;
use std::path::PathBuf;

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
    pub name: StreamName,
    /// The largest picture the decoder may be given, width and height.
    pub max_input: (u32, u32),
    pub slot: u32,
    pub video: Option<VideoInput>,
    /// The publisher's H.264 goes to the outputs as it came: no decoding, no encoding.
    pub video_passthrough: bool,
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
    /// multifilesink's location pattern (with `%05d`), for MPEG-TS segments.
    pub location: PathBuf,
    pub start_index: u64,
    pub segment_ns: u64,
    /// fMP4 segments instead of MPEG-TS.
    pub fmp4: bool,
    /// With fMP4, the duration of a low-latency part.
    pub part_ns: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSpec {
    pub path: PathBuf,
    pub format: RecordFormat,
}

/// A file output that can fail or finish without ending the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOutput {
    Hls,
    Recording,
}
