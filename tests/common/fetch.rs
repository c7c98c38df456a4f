//! HTTP fetches of the gateway's media files as players make them; ffprobe and ffmpeg
//! from the test kit.

use super::TestGateway;

pub use webrtc_gateway_testkit::media::{decode_playlist, ffprobe};

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
