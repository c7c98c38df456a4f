//! Players run by the tests besides ffmpeg (VLC, which refuses to run as root), from the
//! test kit, and ffmpeg's reading of frozen time.

pub use webrtc_gateway_testkit::media::{h264_frames, unprivileged};

/// Seconds of frozen picture (spans of 0.1 s or more without change) in `seconds` of the
/// RTP output that `sdp_url` describes, decoded by `ffmpeg` (in the caller's network
/// namespace, if any); and the frames decoded.
pub fn frozen_seconds(
    mut ffmpeg: std::process::Command,
    sdp_url: &str,
    seconds: u32,
) -> (f64, usize) {
    let output = ffmpeg
        .args([
            "-hide_banner",
            "-protocol_whitelist",
            "file,http,tcp,udp,rtp",
        ])
        .args(["-i", sdp_url])
        .args(["-t", &seconds.to_string(), "-an"])
        .args([
            "-vf",
            "freezedetect=n=-80dB:d=0.1,metadata=mode=print:file=-",
        ])
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let frozen = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("lavfi.freezedetect.freeze_duration="))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum();
    let frames = stderr
        .rsplit("frame=")
        .next()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (frozen, frames)
}
