//! HTTP fetches of the gateway's media files as players make them, and ffprobe.

use super::TestGateway;
use std::process::Command;

/// A response read whole.
pub struct Fetched {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Fetched {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// GETs `path` from the gateway as a player on another origin does.
pub fn fetch(gateway: &TestGateway, path: &str) -> Fetched {
    let response = reqwest::blocking::Client::new()
        .get(gateway.url(path))
        .header("Origin", "http://player.example")
        .send()
        .unwrap();
    Fetched {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.bytes().unwrap().to_vec(),
    }
}

/// ffprobe's compact output for a file.
pub fn ffprobe(path: &std::path::Path, args: &[&str]) -> String {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-of", "compact"])
        .args(args)
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// ffmpeg decodes `url` (at most `seconds` of it): whether it succeeded, the video
/// frames, and its errors.
pub fn decode_playlist(url: &str, seconds: Option<u32>) -> (bool, usize, String) {
    let mut command = Command::new("ffmpeg");
    command.args(["-v", "error", "-i", url]);
    if let Some(seconds) = seconds {
        command.args(["-t", &seconds.to_string()]);
    }
    let output = command.args(["-f", "framecrc", "-"]).output().unwrap();
    let frames = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.starts_with("0,"))
        .count();
    let errors = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.success(), frames, errors)
}
