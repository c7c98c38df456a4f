//! The stream registry: the one owner of each stream name's life on this node. A name is
//! reserved for a publisher who negotiates, runs (connecting, then live) with its
//! session's handle, ends, lingers (listed as ended, its HLS output kept for a returning
//! publisher) and expires; each event is one transition here, under one lock, so that
//! what the API shows, the handle, the HLS linger and the cluster's claim never disagree.
//! Plain data with no I/O: the registry holds the handle, the lingering output and the
//! claim as values it is given (`H`, `L`, `C`) and hands them back; the session layer
//! does the I/O each transition asks for.
//!
//! ```text
//! reserve ─▶ Reserved ─started─▶ Running (connecting ─live─▶ live) ─end─▶ Ended ─expire─▶ gone
//!               │                                                  (no HLS: gone)
//!               └─release (negotiation failed)─▶ gone, or Ended again when it took over
//!                                                 an ended name
//! ```
//!
//! Words, one meaning each, here and in `session`:
//! - **claim**: the cluster's hold on a name and an RTP slot (in Redis, under a lease),
//!   made before a reservation; the entry keeps it from `reserve` until the name ends,
//!   and hands it back to be given up (the cluster frees it then, or after a linger).
//! - **reserve**: take a name and a port slot on this node for a publisher about to
//!   negotiate ([`Registry::reserve`]); an ended (lingering) name is taken over.
//! - **release**: a reservation whose negotiation failed is given back
//!   ([`Registry::release`]); its claim is handed back to be given up in the cluster.
//! - **end** and **expire**: a session ended ([`Registry::end`]); an ended name's
//!   linger is over ([`Registry::expire`]).
//! - **lose**: another node claimed the name while this one could not renew its claim
//!   ([`Registry::lose`]); its session stops, at once or as it starts.

use crate::hls::live::LiveHls;
use crate::name::StreamName;
use crate::stream::{Outputs, StreamInfo, StreamState, StreamStats};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// A value the registry keeps for a layer above it, which only that layer reads (the
/// session's handle, the cluster's claim).
pub type Opaque = Box<dyn std::any::Any + Send>;

#[derive(Debug)]
pub struct StreamEntry<H, L, C> {
    pub info: StreamInfo,
    /// The SDP file, once the encoder has produced its first frame.
    pub sdp: Option<String>,
    /// The stream's HLS output (its playlist, parts and directory), while it is served.
    pub hls: Option<Arc<LiveHls>>,
    life: Life<H, L>,
    /// The cluster's claim on the name and slot, from reservation to the end.
    claim: Option<C>,
}

/// Where a name is in its life. `lingering` is the HLS output of the name's previous
/// publisher: kept while the name is ended, and taken by a returning publisher's session.
#[derive(Debug)]
enum Life<H, L> {
    /// The name and slot are held for a publisher who negotiates; no session runs yet.
    /// `lost`: another node claimed the name meanwhile.
    Reserved { lingering: Option<L>, lost: bool },
    /// A session runs (connecting or live, as `info.state` says).
    Running { handle: H, lingering: Option<L> },
    /// Listed as ended until `until`.
    Ended {
        until: Instant,
        lingering: Option<L>,
    },
}

impl<H, L, C> StreamEntry<H, L, C> {
    /// Whether the name has a publisher (reserved, connecting or live).
    pub fn is_active(&self) -> bool {
        !matches!(self.life, Life::Ended { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("the stream already has a publisher")]
    InUse,
    #[error("the gateway already carries its limit of {0} publishers")]
    Full(u32),
}

/// What [`Registry::started`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// The session runs.
    Running,
    /// The session runs, but another node claimed the name while it negotiated: it is
    /// to stop at once.
    Lost,
    /// The name was not reserved; nothing changed.
    NotReserved,
}

/// A reservation refused, with the claim it was given, to be given up.
#[derive(Debug)]
pub struct Refused<C> {
    pub error: RegistryError,
    pub claim: Option<C>,
}

/// What a name's end leaves to do.
#[derive(Debug)]
pub struct Ending<C> {
    /// The cluster's claim, to be given up.
    pub claim: Option<C>,
    /// The name lingers (listed as ended, its HLS files served) until it expires; in a
    /// cluster, its claim is kept as long.
    pub lingers: bool,
    /// HLS files no output lingers in, to be deleted.
    pub remove: Option<Arc<LiveHls>>,
}

impl<C> Default for Ending<C> {
    fn default() -> Self {
        Self {
            claim: None,
            lingers: false,
            remove: None,
        }
    }
}

#[derive(Debug)]
pub struct Registry<H, L, C> {
    max_publishers: u32,
    /// The node the streams are on, as the stream objects say.
    node: String,
    streams: BTreeMap<StreamName, StreamEntry<H, L, C>>,
}

impl<H, L, C> Registry<H, L, C> {
    pub fn new(max_publishers: u32, node: &str) -> Self {
        Self {
            max_publishers,
            node: node.to_string(),
            streams: BTreeMap::new(),
        }
    }

    /// Streams that hold a publisher (reserved, connecting or live).
    pub fn publishers(&self) -> u32 {
        self.streams.values().filter(|s| s.is_active()).count() as u32
    }

    /// The most publishers this node takes.
    pub fn max_publishers(&self) -> u32 {
        self.max_publishers
    }

    /// Whether `name` has a publisher (reserved, connecting or live) on this node.
    pub fn is_active(&self, name: &str) -> bool {
        self.streams.get(name).is_some_and(StreamEntry::is_active)
    }

    /// Reserves `name` and a port slot for a publisher: `slot` when given (the cluster
    /// claimed it), else the lowest free one; returns the slot. The entry keeps `claim`.
    /// An ended name is taken over: its lingering HLS output waits for the new session.
    pub fn reserve(
        &mut self,
        name: &StreamName,
        publisher: &str,
        now: SystemTime,
        slot: Option<u32>,
        claim: Option<C>,
    ) -> Result<u32, Refused<C>> {
        let refuse = |error, claim| Err(Refused { error, claim });
        if self.is_active(name.as_str()) {
            return refuse(RegistryError::InUse, claim);
        }
        let active: Vec<u32> = self
            .streams
            .values()
            .filter(|s| s.is_active())
            .filter_map(|s| s.info.slot)
            .collect();
        if active.len() as u32 >= self.max_publishers {
            return refuse(RegistryError::Full(self.max_publishers), claim);
        }
        let slot = slot.unwrap_or_else(|| {
            (0..)
                .find(|slot| !active.contains(slot))
                .expect("a free slot below max_publishers")
        });
        let (lingering, hls) = match self.streams.remove(name) {
            Some(StreamEntry {
                life: Life::Ended { lingering, .. },
                hls,
                ..
            }) => (lingering, hls),
            _ => (None, None),
        };
        self.streams.insert(
            name.clone(),
            StreamEntry {
                info: StreamInfo {
                    name: name.clone(),
                    state: StreamState::Connecting,
                    started_at: humantime::format_rfc3339_seconds(now).to_string(),
                    video: None,
                    audio: None,
                    transport: None,
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
                hls,
                life: Life::Reserved {
                    lingering,
                    lost: false,
                },
                claim,
            },
        );
        Ok(slot)
    }

    /// The publisher negotiated: its session runs, reached through `handle`. Nothing
    /// changes unless the name was reserved.
    pub fn started(&mut self, name: &StreamName, handle: H) -> Started {
        let Some(entry) = self.streams.get_mut(name) else {
            return Started::NotReserved;
        };
        let life = std::mem::replace(
            &mut entry.life,
            Life::Reserved {
                lingering: None,
                lost: false,
            },
        );
        match life {
            Life::Reserved { lingering, lost } => {
                entry.life = Life::Running { handle, lingering };
                if lost {
                    Started::Lost
                } else {
                    Started::Running
                }
            }
            other => {
                entry.life = other;
                Started::NotReserved
            }
        }
    }

    /// Another node claimed the name while this one could not renew its claim: the
    /// running session's handle, to be stopped; a reservation is marked instead, and
    /// its session told to stop as it starts ([`Started::Lost`]).
    pub fn lose(&mut self, name: &str) -> Option<&H> {
        match &mut self.streams.get_mut(name)?.life {
            Life::Reserved { lost, .. } => {
                *lost = true;
                None
            }
            Life::Running { handle, .. } => Some(handle),
            Life::Ended { .. } => None,
        }
    }

    /// The stream is live; returns its outputs as shown.
    pub fn live(&mut self, name: &StreamName) -> Option<Outputs> {
        let entry = self.streams.get_mut(name)?;
        if !matches!(entry.life, Life::Running { .. }) {
            return None;
        }
        entry.info.state = StreamState::Live;
        Some(entry.info.outputs.clone())
    }

    /// The previous publisher's lingering HLS output, for a session that continues it.
    pub fn take_lingering(&mut self, name: &StreamName) -> Option<L> {
        match &mut self.streams.get_mut(name)?.life {
            Life::Reserved { lingering, .. } | Life::Running { lingering, .. } => lingering.take(),
            Life::Ended { .. } => None,
        }
    }

    /// A reservation whose negotiation failed is given back: the name is free again, or,
    /// when it took an ended name over whose output still lingers, ended again until
    /// `until`. A running or ended name is left alone.
    pub fn release(&mut self, name: &StreamName, until: Instant) -> Ending<C> {
        let Some(entry) = self.streams.get_mut(name) else {
            return Ending::default();
        };
        let lingering = match &mut entry.life {
            Life::Reserved { lingering, .. } => lingering.take(),
            _ => return Ending::default(),
        };
        self.finish(name, lingering, until)
    }

    /// The name's session ended: its handle goes, and with `hls` (its output, ended) it
    /// lingers until `until`; else the name is free at once.
    pub fn end(&mut self, name: &StreamName, hls: Option<L>, until: Instant) -> Ending<C> {
        if !self.is_active(name.as_str()) {
            return Ending::default();
        }
        self.finish(name, hls, until)
    }

    fn finish(&mut self, name: &StreamName, lingering: Option<L>, until: Instant) -> Ending<C> {
        let Some(mut entry) = self.streams.remove(name) else {
            return Ending::default();
        };
        let claim = entry.claim.take();
        if lingering.is_none() {
            return Ending {
                claim,
                lingers: false,
                remove: entry.hls,
            };
        }
        entry.info.state = StreamState::Ended;
        entry.info.slot = None;
        entry.info.outputs.sdp = None;
        entry.info.rtp_destinations.clear();
        entry.sdp = None;
        entry.life = Life::Ended { until, lingering };
        self.streams.insert(name.clone(), entry);
        Ending {
            claim,
            lingers: true,
            remove: None,
        }
    }

    /// Removes ended names whose linger is over; returns their lingering outputs, whose
    /// files are to be deleted. A name taken over meanwhile is not ended, so its files
    /// are never among them.
    pub fn expire(&mut self, now: Instant) -> Vec<(StreamName, Option<L>)> {
        let expired: Vec<StreamName> = self
            .streams
            .iter()
            .filter(|(_, s)| matches!(s.life, Life::Ended { until, .. } if until <= now))
            .map(|(name, _)| name.clone())
            .collect();
        expired
            .into_iter()
            .filter_map(|name| {
                let entry = self.streams.remove(&name)?;
                match entry.life {
                    Life::Ended { lingering, .. } => Some((name, lingering)),
                    _ => None,
                }
            })
            .collect()
    }

    /// The handle of the name's running session.
    pub fn handle(&self, name: &str) -> Option<&H> {
        match &self.streams.get(name)?.life {
            Life::Running { handle, .. } => Some(handle),
            _ => None,
        }
    }

    /// Whether `file` is a recording being written.
    pub fn is_recording(&self, file: &str) -> bool {
        self.streams
            .values()
            .any(|s| s.is_active() && s.info.outputs.recording.as_deref() == Some(file))
    }

    pub fn get(&self, name: &str) -> Option<&StreamEntry<H, L, C>> {
        self.streams.get(name)
    }

    /// Changes what the API shows of a name.
    pub fn update(&mut self, name: &StreamName, change: impl FnOnce(&mut StreamEntry<H, L, C>)) {
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

    /// A handle, a lingering output and a claim, as plain values.
    type Test = Registry<&'static str, &'static str, u32>;

    fn name(text: &str) -> StreamName {
        StreamName::new(text).unwrap()
    }

    fn reserve(r: &mut Test, text: &str) -> Result<u32, RegistryError> {
        r.reserve(&name(text), "websocket", SystemTime::UNIX_EPOCH, None, None)
            .map_err(|refused| refused.error)
    }

    #[test]
    fn slots_are_lowest_free_and_reused() {
        let mut r = Test::new(3, "n");
        let later = Instant::now();
        assert_eq!(reserve(&mut r, "a"), Ok(0));
        assert_eq!(reserve(&mut r, "b"), Ok(1));
        assert_eq!(reserve(&mut r, "a"), Err(RegistryError::InUse));
        assert_eq!(reserve(&mut r, "c"), Ok(2));
        assert_eq!(reserve(&mut r, "d"), Err(RegistryError::Full(3)));
        assert_eq!(r.publishers(), 3);
        r.release(&name("a"), later);
        assert_eq!(reserve(&mut r, "d"), Ok(0));
        // A slot the cluster claimed is taken as given.
        r.release(&name("b"), later);
        let claimed = r.reserve(&name("e"), "whip", SystemTime::UNIX_EPOCH, Some(7), Some(1));
        assert_eq!(claimed.ok(), Some(7));
        assert!(r.is_active("e") && !r.is_active("b"));
        assert_eq!(r.get("d").unwrap().info.started_at, "1970-01-01T00:00:00Z");
        assert_eq!(r.list().len(), 3);
    }

    #[test]
    fn a_refused_reservation_hands_its_claim_back() {
        let mut r = Test::new(1, "n");
        let now = SystemTime::UNIX_EPOCH;
        assert!(r.reserve(&name("a"), "whip", now, None, Some(1)).is_ok());
        let refused = r
            .reserve(&name("a"), "whip", now, None, Some(2))
            .unwrap_err();
        assert_eq!(
            (refused.error, refused.claim),
            (RegistryError::InUse, Some(2))
        );
        let full = r
            .reserve(&name("b"), "whip", now, None, Some(3))
            .unwrap_err();
        assert_eq!((full.error, full.claim), (RegistryError::Full(1), Some(3)));
        // The first claim stays with its entry.
        assert_eq!(r.release(&name("a"), Instant::now()).claim, Some(1));
    }

    #[test]
    fn a_name_goes_from_reserved_to_live_to_ended_to_expired() {
        let mut r = Test::new(2, "n");
        let start = Instant::now();
        let until = start + Duration::from_secs(30);
        let stream = name("a");
        r.reserve(&stream, "websocket", SystemTime::now(), None, Some(9))
            .unwrap();
        assert_eq!(r.handle("a"), None, "no session before negotiation");
        assert_eq!(r.live(&stream), None, "not running");
        assert_eq!(r.started(&stream, "handle"), Started::Running);
        assert_eq!(
            r.started(&stream, "again"),
            Started::NotReserved,
            "started once"
        );
        assert_eq!(r.handle("a"), Some(&"handle"));
        assert_eq!(r.get("a").unwrap().info.state, StreamState::Connecting);
        assert!(r.live(&stream).is_some());
        assert_eq!(r.get("a").unwrap().info.state, StreamState::Live);
        // Ending is one step: the handle goes with the state, the claim comes back.
        let ending = r.end(&stream, Some("hls"), until);
        assert_eq!((ending.claim, ending.lingers), (Some(9), true));
        assert_eq!(r.handle("a"), None);
        let entry = r.get("a").unwrap();
        assert_eq!(
            (entry.info.state, entry.info.slot),
            (StreamState::Ended, None)
        );
        assert!(!r.is_active("a") && r.publishers() == 0);
        // Ending twice does nothing.
        assert!(r.end(&stream, Some("other"), until).claim.is_none());
        assert!(r.expire(start + Duration::from_secs(29)).is_empty());
        assert_eq!(r.expire(until), vec![(stream, Some("hls"))]);
        assert!(r.get("a").is_none());
    }

    #[test]
    fn a_name_lost_to_another_node_stops_its_session_running_or_starting() {
        let mut r = Test::new(4, "n");
        // Running: its handle, to be stopped.
        reserve(&mut r, "a").unwrap();
        assert_eq!(r.started(&name("a"), "handle a"), Started::Running);
        assert_eq!(r.lose("a"), Some(&"handle a"));
        // Still negotiating: marked, and told as it starts.
        reserve(&mut r, "b").unwrap();
        assert_eq!(r.lose("b"), None);
        assert_eq!(r.started(&name("b"), "handle b"), Started::Lost);
        assert_eq!(r.handle("b"), Some(&"handle b"));
        // Not here, or ended: nothing.
        assert_eq!(r.lose("c"), None);
        r.end(&name("a"), None, Instant::now());
        assert_eq!(r.lose("a"), None);
    }

    #[test]
    fn without_hls_an_ended_name_is_free_at_once() {
        let mut r = Test::new(1, "n");
        let stream = name("a");
        reserve(&mut r, "a").unwrap();
        r.started(&stream, "handle");
        let ending = r.end(&stream, None, Instant::now());
        assert!(!ending.lingers);
        assert!(r.get("a").is_none());
        assert_eq!(reserve(&mut r, "b"), Ok(0));
    }

    #[test]
    fn an_ended_name_is_taken_over_with_its_lingering_output() {
        let mut r = Test::new(1, "n");
        let start = Instant::now();
        let until = start + Duration::from_secs(30);
        let stream = name("a");
        reserve(&mut r, "a").unwrap();
        r.started(&stream, "first");
        r.end(&stream, Some("hls"), until);
        // Its slot is free for another stream, and its name for a returning publisher.
        assert_eq!(reserve(&mut r, "b"), Ok(0));
        r.release(&name("b"), until);
        assert_eq!(reserve(&mut r, "a"), Ok(0));
        assert_eq!(r.get("a").unwrap().info.state, StreamState::Connecting);
        // Taken over, it no longer expires, and its output goes to the new session.
        assert!(r.expire(until).is_empty());
        r.started(&stream, "second");
        assert_eq!(r.take_lingering(&stream), Some("hls"));
        assert_eq!(r.take_lingering(&stream), None);
        assert_eq!(r.handle("a"), Some(&"second"));
    }

    #[test]
    fn a_failed_takeover_lingers_again_and_a_fresh_name_is_freed() {
        let mut r = Test::new(2, "n");
        let start = Instant::now();
        let until = start + Duration::from_secs(30);
        let stream = name("a");
        reserve(&mut r, "a").unwrap();
        r.started(&stream, "first");
        r.end(&stream, Some("hls"), start);
        r.reserve(&stream, "whip", SystemTime::now(), None, Some(4))
            .unwrap();
        let released = r.release(&stream, until);
        assert_eq!((released.claim, released.lingers), (Some(4), true));
        assert_eq!(r.get("a").unwrap().info.state, StreamState::Ended);
        assert!(r.expire(start).is_empty(), "its linger starts again");
        assert_eq!(r.expire(until), vec![(stream, Some("hls"))]);
        // A fresh name whose negotiation failed is simply free again.
        reserve(&mut r, "b").unwrap();
        assert!(!r.release(&name("b"), until).lingers);
        assert!(r.get("b").is_none());
        // Release only undoes a reservation, never a running session.
        reserve(&mut r, "c").unwrap();
        r.started(&name("c"), "running");
        assert!(r.release(&name("c"), until).claim.is_none());
        assert_eq!(r.handle("c"), Some(&"running"));
    }
}
