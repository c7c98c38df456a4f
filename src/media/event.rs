//! What a stream's pipeline reports to the task that owns it.

use crate::media::spec::FileOutput;
use std::path::PathBuf;

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
    /// A picture larger than the limit arrived; it was not decoded.
    InputTooLarge { width: u32, height: u32 },
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
