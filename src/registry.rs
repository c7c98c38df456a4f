//! The stream registry: which names are live, which port slot each holds, and what the
//! API shows of them. Plain data with no I/O; the gateway shares it behind a mutex and
//! holds the lock only for these short calls.

use serde::Serialize;
use std::collections::BTreeMap;
use std::time::SystemTime;
use tokio_util::sync::CancellationToken;

/// `^[A-Za-z0-9_-]{1,64}$`: the only names a stream may have; never a file-system path.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamState {
    Connecting,
    Live,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VideoInfo {
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// The codec the publisher sends, before transcoding.
    pub input_codec: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AudioInfo {
    pub codec: String,
    pub sample_rate: u32,
    pub channels: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Outputs {
    pub sdp: Option<String>,
    pub hls: Option<String>,
    pub recording: Option<String>,
}

/// A stream as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamInfo {
    pub name: String,
    pub state: StreamState,
    pub started_at: String,
    pub video: Option<VideoInfo>,
    pub audio: Option<AudioInfo>,
    pub outputs: Outputs,
    /// The port slot: RTP goes to `port_base + 4 * slot` and the three ports after it.
    pub slot: u32,
    /// How the publisher connected (`websocket`).
    pub publisher: String,
}

#[derive(Debug)]
pub struct StreamEntry {
    pub info: StreamInfo,
    /// The SDP file, once the encoder has produced its first frame.
    pub sdp: Option<String>,
    /// Cancelling it ends the stream's session.
    pub stop: CancellationToken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("the stream already has a publisher")]
    InUse,
    #[error("the gateway already carries its limit of {0} publishers")]
    Full(u32),
}

/// A reserved name and slot.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub slot: u32,
    pub stop: CancellationToken,
}

#[derive(Debug)]
pub struct Registry {
    max_publishers: u32,
    streams: BTreeMap<String, StreamEntry>,
}

impl Registry {
    pub fn new(max_publishers: u32) -> Self {
        Self {
            max_publishers,
            streams: BTreeMap::new(),
        }
    }

    /// Claims `name` and the lowest free port slot.
    pub fn reserve(
        &mut self,
        name: &str,
        publisher: &str,
        now: SystemTime,
    ) -> Result<Reservation, RegistryError> {
        if self.streams.contains_key(name) {
            return Err(RegistryError::InUse);
        }
        if self.streams.len() as u32 >= self.max_publishers {
            return Err(RegistryError::Full(self.max_publishers));
        }
        let slot = (0..)
            .find(|slot| self.streams.values().all(|s| s.info.slot != *slot))
            .expect("a free slot below max_publishers");
        let stop = CancellationToken::new();
        self.streams.insert(
            name.to_string(),
            StreamEntry {
                info: StreamInfo {
                    name: name.to_string(),
                    state: StreamState::Connecting,
                    started_at: humantime::format_rfc3339_seconds(now).to_string(),
                    video: None,
                    audio: None,
                    outputs: Outputs::default(),
                    slot,
                    publisher: publisher.to_string(),
                },
                sdp: None,
                stop: stop.clone(),
            },
        );
        Ok(Reservation { slot, stop })
    }

    /// Frees the name and its slot.
    pub fn release(&mut self, name: &str) -> Option<StreamEntry> {
        self.streams.remove(name)
    }

    pub fn get(&self, name: &str) -> Option<&StreamEntry> {
        self.streams.get(name)
    }

    pub fn update(&mut self, name: &str, change: impl FnOnce(&mut StreamEntry)) {
        if let Some(entry) = self.streams.get_mut(name) {
            change(entry);
        }
    }

    pub fn list(&self) -> Vec<StreamInfo> {
        self.streams.values().map(|s| s.info.clone()).collect()
    }

    /// Asks every session to end.
    pub fn stop_all(&self) {
        for entry in self.streams.values() {
            entry.stop.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["cam1", "a", "A-b_9", &"x".repeat(64)] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "",
            "../etc",
            "a/b",
            "a b",
            "ü",
            &"x".repeat(65),
            "a.sdp",
            "%2e",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn slots_are_lowest_free_and_reused() {
        let mut r = Registry::new(3);
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(r.reserve("a", "websocket", now).unwrap().slot, 0);
        assert_eq!(r.reserve("b", "websocket", now).unwrap().slot, 1);
        assert_eq!(
            r.reserve("a", "websocket", now).unwrap_err(),
            RegistryError::InUse
        );
        assert_eq!(r.reserve("c", "websocket", now).unwrap().slot, 2);
        assert_eq!(
            r.reserve("d", "websocket", now).unwrap_err(),
            RegistryError::Full(3)
        );
        r.release("a");
        assert_eq!(r.reserve("d", "websocket", now).unwrap().slot, 0);
        assert_eq!(r.get("d").unwrap().info.started_at, "1970-01-01T00:00:00Z");
        assert_eq!(r.list().len(), 3);
    }

    #[test]
    fn stop_all_cancels_every_session() {
        let mut r = Registry::new(2);
        let a = r.reserve("a", "websocket", SystemTime::now()).unwrap();
        r.stop_all();
        assert!(a.stop.is_cancelled());
    }
}
