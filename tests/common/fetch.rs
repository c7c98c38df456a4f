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
