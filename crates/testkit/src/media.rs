//! ffmpeg and ffprobe as the tests run them on the gateway's outputs, and players that
//! refuse to run as root (VLC).

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// ffprobe's compact output for a file.
pub fn ffprobe(path: &std::path::Path, args: &[&str]) -> String {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-of", "compact"])
        .args(args)
        .arg(path)
        .output()
        .expect("ffprobe is installed (make test-deps)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The H.264 frames ffprobe counted (`-count_frames`, `stream=codec_name,nb_read_frames`).
pub fn h264_frames(probe: &str) -> u32 {
    probe
        .lines()
        .find(|l| l.contains("h264"))
        .and_then(|l| l.rsplit("nb_read_frames=").next()?.trim().parse().ok())
        .unwrap_or(0)
}

/// ffmpeg decodes `url` (at most `seconds` of it): whether it succeeded, the video
/// frames, and its errors.
pub fn decode_playlist(url: &str, seconds: Option<u32>) -> (bool, usize, String) {
    let mut command = Command::new("ffmpeg");
    command.args(["-v", "error", "-i", url]);
    if let Some(seconds) = seconds {
        command.args(["-t", &seconds.to_string()]);
    }
    let output = command
        .args(["-f", "framecrc", "-"])
        .output()
        .expect("ffmpeg is installed (make test-deps)");
    let frames = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.starts_with("0,"))
        .count();
    let errors = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.success(), frames, errors)
}

/// Runs a command as an unprivileged user when we are root (VLC refuses to run as root).
pub fn unprivileged(program: &str) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if root {
        let mut command = Command::new("setpriv");
        command.args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            program,
        ]);
        command
    } else {
        Command::new(program)
    }
}

/// What ffmpeg made of an SDP URL.
#[derive(Debug, Default)]
pub struct Decoded {
    pub video_codec: Option<String>,
    pub size: Option<(u32, u32)>,
    pub audio_codec: Option<String>,
    /// Video frames decoded in the first `window` seconds after the first one.
    pub video_frames: usize,
    pub audio_frames: usize,
    pub stderr: String,
}

impl Decoded {
    /// H.264 video with at least `min_frames` decoded frames, and Opus audio.
    pub fn assert_h264_and_opus(&self, min_frames: usize) {
        assert_eq!(self.video_codec.as_deref(), Some("h264"), "{}", self.stderr);
        assert!(self.video_frames >= min_frames, "{}", self.video_frames);
        assert_eq!(self.audio_codec.as_deref(), Some("opus"));
    }
}

/// Receives a stream's RTP through its SDP file with ffmpeg and decodes `window` seconds.
pub fn decode_sdp(url: &str, window: f64) -> Decoded {
    decode_sdp_with(Command::new("ffmpeg"), url, window)
}

/// The same with this `ffmpeg` command (one run in another network namespace).
pub fn decode_sdp_with(mut ffmpeg: Command, url: &str, window: f64) -> Decoded {
    let mut child = ffmpeg
        .args([
            "-hide_banner",
            "-nostdin",
            "-protocol_whitelist",
            "file,http,tcp,udp,rtp",
        ])
        .args(["-i", url, "-t", &format!("{}", window + 2.0), "-map", "0"])
        .args(["-f", "framecrc", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg is installed (make test-deps)");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    let out = rx
        .recv_timeout(Duration::from_secs_f64(window + 20.0))
        .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    let stderr = err_thread.join().unwrap_or_default();
    parse_decoded(&out, stderr, window)
}

fn parse_decoded(framecrc: &str, stderr: String, window: f64) -> Decoded {
    let mut decoded = Decoded::default();
    for line in stderr.lines() {
        let line = line.trim();
        if !line.starts_with("Stream #0:") || line.contains("->") {
            continue;
        }
        if let Some(rest) = line.split("Video: ").nth(1) {
            if decoded.video_codec.is_some() {
                continue;
            }
            decoded.video_codec = rest.split([' ', ',']).next().map(String::from);
            decoded.size = rest.split([' ', ',']).find_map(|t| {
                let (w, h) = t.split_once('x')?;
                Some((w.parse().ok()?, h.parse().ok()?))
            });
        } else if let Some(rest) = line.split("Audio: ").nth(1)
            && decoded.audio_codec.is_none()
        {
            decoded.audio_codec = rest.split([' ', ',']).next().map(String::from);
        }
    }
    // Output stream 0 is video when there is video; its time base is `#tb 0: 1/N`.
    let video_index = if decoded.video_codec.is_some() {
        "0"
    } else {
        "-"
    };
    let audio_index = if decoded.video_codec.is_some() {
        "1"
    } else {
        "0"
    };
    let mut tb = 1.0 / 30.0;
    let mut first: Option<f64> = None;
    for line in framecrc.lines() {
        if let Some(rest) = line.strip_prefix(&format!("#tb {video_index}: ")) {
            if let Some((n, d)) = rest.trim().split_once('/') {
                tb = n.parse::<f64>().unwrap_or(1.0) / d.parse::<f64>().unwrap_or(30.0);
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() < 3 {
            continue;
        }
        if fields[0] == video_index {
            let pts: f64 = fields[2].parse::<f64>().unwrap_or(0.0) * tb;
            let start = *first.get_or_insert(pts);
            if pts - start < window {
                decoded.video_frames += 1;
            }
        } else if fields[0] == audio_index {
            decoded.audio_frames += 1;
        }
    }
    decoded.stderr = stderr;
    decoded
}
