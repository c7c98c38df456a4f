//! The stream registry: which names are live, which port slot each holds, and what the
//! API shows of them. Plain data with no I/O and no handles to tasks; the gateway shares
//! it behind a mutex and holds the lock only for these short calls.

use crate::hls::live::LiveHls;
use crate::name::StreamName;
use crate::stream::{Outputs, StreamInfo, StreamState, StreamStats};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

#[derive(Debug)]
pub struct StreamEntry {
    pub info: StreamInfo,
    /// The SDP file, once the encoder has produced its first frame.
    pub sdp: Option<String>,
    /// The stream's HLS output (its playlist, parts and directory), while it is served.
    pub hls: Option<Arc<LiveHls>>,
    /// An ended stream stays listed (its playlist served) until then.
    ended_until: Option<Instant>,
}

impl StreamEntry {
    pub fn is_active(&self) -> bool {
        self.info.state != StreamState::Ended
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("the stream already has a publisher")]
    InUse,
    #[error("the gateway already carries its limit of {0} publishers")]
    Full(u32),
}

#[derive(Debug)]
pub struct Registry {
    max_publishers: u32,
    /// The node the streams are on, as the stream objects say.
    node: String,
    streams: BTreeMap<StreamName, StreamEntry>,
}

impl Registry {
    pub fn new(max_publishers: u32, node: &str) -> Self {
        Self {
            max_publishers,
            node: node.to_string(),
            streams: BTreeMap::new(),
        }
    }

    /// Streams that hold a publisher (connecting or live).
    pub fn publishers(&self) -> u32 {
        self.streams.values().filter(|s| s.is_active()).count() as u32
    }

    /// The most publishers this node takes.
    pub fn max_publishers(&self) -> u32 {
        self.max_publishers
    }

    /// Whether `name` has a publisher (connecting or live) on this node.
    pub fn is_active(&self, name: &str) -> bool {
        self.streams.get(name).is_some_and(StreamEntry::is_active)
    }

    /// Claims `name` and a port slot: `slot` when given (the cluster claimed it), else
    /// the lowest free one; returns the slot. An ended stream of that name is taken over.
    pub fn reserve(
        &mut self,
        name: &StreamName,
        publisher: &str,
        now: SystemTime,
        slot: Option<u32>,
    ) -> Result<u32, RegistryError> {
        if self.streams.get(name).is_some_and(StreamEntry::is_active) {
            return Err(RegistryError::InUse);
        }
        let active: Vec<u32> = self
            .streams
            .values()
            .filter(|s| s.is_active())
            .filter_map(|s| s.info.slot)
            .collect();
        if active.len() as u32 >= self.max_publishers {
            return Err(RegistryError::Full(self.max_publishers));
        }
        let slot = slot.unwrap_or_else(|| {
            (0..)
                .find(|slot| !active.contains(slot))
                .expect("a free slot below max_publishers")
        });
        self.streams.insert(
            name.clone(),
            StreamEntry {
                info: StreamInfo {
                    name: name.clone(),
                    state: StreamState::Connecting,
                    started_at: humantime::format_rfc3339_seconds(now).to_string(),
                    video: None,
                    audio: None,
                    outputs: Outputs::default(),
                    slot: Some(slot),
                    publisher: publisher.to_string(),
                    node: self.node.clone(),
                    recording_error: None,
                    hls_error: None,
                    stats: StreamStats::default(),
                    rtp_destinations: Vec::new(),
                },
                sdp: None,
                hls: None,
                ended_until: None,
            },
        );
        Ok(slot)
    }

    /// Frees the name and its slot.
    pub fn release(&mut self, name: &StreamName) -> Option<StreamEntry> {
        self.streams.remove(name)
    }

    /// The stream ended: its slot is free, and it stays listed as ended (its HLS files
    /// served) until `until`.
    pub fn end(&mut self, name: &StreamName, until: Instant) {
        if let Some(entry) = self.streams.get_mut(name) {
            entry.info.state = StreamState::Ended;
            entry.info.slot = None;
            entry.info.outputs.sdp = None;
            entry.info.rtp_destinations.clear();
            entry.sdp = None;
            entry.ended_until = Some(until);
        }
    }

    /// Removes ended streams whose time is up; returns their names.
    pub fn expire(&mut self, now: Instant) -> Vec<StreamName> {
        let expired: Vec<StreamName> = self
            .streams
            .iter()
            .filter(|(_, s)| s.ended_until.is_some_and(|until| until <= now))
            .map(|(name, _)| name.clone())
            .collect();
        for name in &expired {
            self.streams.remove(name);
        }
        expired
    }

    /// Whether `file` is a recording being written.
    pub fn is_recording(&self, file: &str) -> bool {
        self.streams
            .values()
            .any(|s| s.is_active() && s.info.outputs.recording.as_deref() == Some(file))
    }

    pub fn get(&self, name: &str) -> Option<&StreamEntry> {
        self.streams.get(name)
    }

    pub fn update(&mut self, name: &StreamName, change: impl FnOnce(&mut StreamEntry)) {
        if let Some(entry) = self.streams.get_mut(name) {
            change(entry);
        }
    }

    pub fn list(&self) -> Vec<StreamInfo> {
        self.streams.values().map(|s| s.info.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn name(text: &str) -> StreamName {
        StreamName::new(text).unwrap()
    }

    #[test]
    fn slots_are_lowest_free_and_reused() {
        let mut r = Registry::new(3, "n");
        let now = SystemTime::UNIX_EPOCH;
        assert_eq!(r.reserve(&name("a"), "websocket", now, None), Ok(0));
        assert_eq!(r.reserve(&name("b"), "websocket", now, None), Ok(1));
        assert_eq!(
            r.reserve(&name("a"), "websocket", now, None),
            Err(RegistryError::InUse)
        );
        assert_eq!(r.reserve(&name("c"), "websocket", now, None), Ok(2));
        assert_eq!(
            r.reserve(&name("d"), "websocket", now, None),
            Err(RegistryError::Full(3))
        );
        r.release(&name("a"));
        assert_eq!(r.reserve(&name("d"), "websocket", now, None), Ok(0));
        // A slot the cluster claimed is taken as given.
        r.release(&name("b"));
        assert_eq!(r.reserve(&name("e"), "websocket", now, Some(7)), Ok(7));
        assert!(r.is_active("e") && !r.is_active("b"));
        assert_eq!(r.get("d").unwrap().info.started_at, "1970-01-01T00:00:00Z");
        assert_eq!(r.list().len(), 3);
    }

    #[test]
    fn an_ended_stream_stays_listed_frees_its_slot_and_can_be_taken_over() {
        let mut r = Registry::new(1, "n");
        let start = Instant::now();
        let until = start + Duration::from_secs(30);
        r.reserve(&name("a"), "websocket", SystemTime::now(), None)
            .unwrap();
        r.end(&name("a"), until);
        assert_eq!(r.get("a").unwrap().info.state, StreamState::Ended);
        assert_eq!(r.get("a").unwrap().info.slot, None);
        // Its slot is free for another stream, and its name for a returning publisher.
        assert_eq!(
            r.reserve(&name("b"), "websocket", SystemTime::now(), None),
            Ok(0)
        );
        r.release(&name("b"));
        assert_eq!(
            r.reserve(&name("a"), "whip", SystemTime::now(), None),
            Ok(0)
        );
        assert_eq!(r.get("a").unwrap().info.state, StreamState::Connecting);
        r.end(&name("a"), until);
        assert!(r.expire(start + Duration::from_secs(29)).is_empty());
        assert_eq!(r.expire(until), vec![name("a")]);
        assert!(r.get("a").is_none());
    }
}
