//! Players run by the tests besides ffmpeg (VLC, which refuses to run as root), from the
//! test kit.

pub use webrtc_gateway_testkit::media::{h264_frames, unprivileged};
