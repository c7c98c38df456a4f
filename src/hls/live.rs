//! A stream's HLS output as its players see it: the playlist and the parts in memory,
//! shared between the pipeline that adds to them and the HTTP requests that read them.
//! A blocking playlist reload or a request for the hinted part waits on a watch channel
//! until what it asks for is there (draft-pantos-hls-rfc8216bis, 6.2.5.2): a waiting
//! request holds no thread and wakes when a part lands. The hinted part is handed out
//! as it is made ([`PartBody::Growing`]): its pieces as the muxer writes them, on a
//! watch channel of their own, ending when the part is complete.

use super::playlist::{Part, Playlist, Segment};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// What a playlist request asks for (its `_HLS_msn`, `_HLS_part`, `_HLS_skip`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reload {
    pub msn: Option<u64>,
    pub part: Option<u64>,
    pub skip: bool,
}

/// Why a playlist request is not answered with a playlist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no complete segment within {0:?}")]
    NoSegment(Duration),
    #[error("segment {msn} part {part:?} did not come within {waited:?}")]
    Timeout {
        msn: u64,
        part: Option<u64>,
        waited: Duration,
    },
}

impl Reload {
    /// Reads the delivery directives of a query string.
    pub fn parse(query: Option<&str>) -> Result<Self, ReloadError> {
        let mut reload = Reload::default();
        let number = |key: &str, value: &str| {
            value.parse::<u64>().map_err(|_| {
                ReloadError::BadRequest(format!("{key} must be a whole number, got {value:?}"))
            })
        };
        for pair in query.unwrap_or_default().split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "_HLS_msn" => reload.msn = Some(number(key, value)?),
                "_HLS_part" => reload.part = Some(number(key, value)?),
                "_HLS_skip" => reload.skip = value == "YES" || value == "v2",
                _ => {}
            }
        }
        if reload.part.is_some() && reload.msn.is_none() {
            return Err(ReloadError::BadRequest(
                "_HLS_part needs _HLS_msn".to_string(),
            ));
        }
        Ok(reload)
    }
}

/// The part being made (the one the playlist hints at): its pieces so far, and whether
/// it is complete.
#[derive(Debug, Default)]
pub struct Growing {
    pub pieces: Vec<Bytes>,
    pub complete: bool,
}

/// What a request for a part gets.
#[derive(Debug)]
pub enum PartBody {
    /// The part is complete: all of it.
    Complete(Bytes),
    /// The hinted part, being made: its pieces so far and, as they come, the rest; the
    /// channel's value says when it is complete. A channel closed before then means
    /// the part was cut off and is not to be kept.
    Growing(watch::Receiver<Growing>),
}

struct State {
    playlist: Playlist,
    /// The part being made, by URI, once its first piece is there.
    growing: Option<(String, watch::Sender<Growing>)>,
    /// The bytes of the parts of the segments in the window, and of those that left it
    /// less than [`State::grace`] ago, by URI.
    parts: HashMap<String, Bytes>,
    /// Segments that left the window, with when they left, oldest first.
    retired: VecDeque<(Instant, Segment)>,
}

impl State {
    /// How long a segment that left the window stays available: a player may have read
    /// the last playlist that listed it (the window) and not yet fetched it
    /// (rfc8216bis 6.2.2: its duration plus the longest playlist's).
    fn grace(&self) -> Duration {
        let target = u64::from(self.playlist.target_duration()).max(1);
        Duration::from_secs(target * (self.playlist.window() as u64 + 1))
    }

    /// Retires the segments that left the window; drops the parts of those whose grace
    /// is over, and returns them, whose files are now to be deleted.
    fn retire(&mut self, gone: Vec<Segment>, now: Instant) -> Vec<Segment> {
        self.retired
            .extend(gone.into_iter().map(|segment| (now, segment)));
        let grace = self.grace();
        let mut expired = Vec::new();
        while let Some((left, _)) = self.retired.front() {
            if now.duration_since(*left) < grace {
                break;
            }
            let Some((_, segment)) = self.retired.pop_front() else {
                break;
            };
            for part in &segment.parts {
                self.parts.remove(&part.uri);
            }
            expired.push(segment);
        }
        expired
    }
}

/// The playlist and parts of one HLS output.
pub struct LiveHls {
    /// Where its segments are written.
    pub dir: PathBuf,
    state: Mutex<State>,
    /// Bumped on every change; what waiting requests watch.
    changed: watch::Sender<u64>,
}

impl std::fmt::Debug for LiveHls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveHls").field("dir", &self.dir).finish()
    }
}

impl LiveHls {
    pub fn new(dir: PathBuf, playlist: Playlist) -> Self {
        Self {
            dir,
            state: Mutex::new(State {
                playlist,
                growing: None,
                parts: HashMap::new(),
                retired: VecDeque::new(),
            }),
            changed: watch::Sender::new(0),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the playlist.
    pub fn read<R>(&self, read: impl FnOnce(&Playlist) -> R) -> R {
        read(&self.state().playlist)
    }

    /// Changes the playlist, then wakes the requests that wait. A change that may move
    /// segments out of the window goes through [`Self::push`], [`Self::add_part`] or
    /// [`Self::close_open`], which retire them.
    pub fn update<R>(&self, change: impl FnOnce(&mut Playlist) -> R) -> R {
        let result = change(&mut self.state().playlist);
        self.changed.send_modify(|version| *version += 1);
        result
    }

    /// Adds a complete segment (see [`Playlist::push`]); returns the segments whose
    /// files are to be deleted, which left the window longer than a grace ago.
    pub fn push(&self, segment: Segment) -> Vec<Segment> {
        let expired = {
            let mut state = self.state();
            let gone = state.playlist.push(segment);
            state.retire(gone, Instant::now())
        };
        self.changed.send_modify(|version| *version += 1);
        expired
    }

    /// Adds a part with its bytes (see [`Playlist::push_part`]); returns the segment
    /// it completed, if any, and the segments whose files are to be deleted (see
    /// [`Self::push`]).
    pub fn add_part(
        &self,
        start: Option<(String, SystemTime, Option<String>)>,
        part: Part,
        bytes: Bytes,
        next: String,
    ) -> (Option<Segment>, Vec<Segment>) {
        let result = {
            let mut state = self.state();
            if let Some((uri, growing)) = state.growing.take() {
                // Its readers have every piece already; they finish now. One that is
                // not this part was cut off: dropped, its readers fail.
                if uri == part.uri {
                    growing.send_modify(|g| g.complete = true);
                }
            }
            state.parts.insert(part.uri.clone(), bytes);
            let (closed, gone) = state.playlist.push_part(start, part, next);
            (closed, state.retire(gone, Instant::now()))
        };
        self.changed.send_modify(|version| *version += 1);
        result
    }

    /// A piece of the part being made, `uri` (the hinted one), as the muxer wrote it:
    /// the requests that wait for that part get it at once.
    pub fn add_piece(&self, uri: &str, piece: Bytes) {
        let started = {
            let mut state = self.state();
            match &state.growing {
                Some((growing_uri, growing)) if growing_uri == uri => {
                    growing.send_modify(|g| g.pieces.push(piece));
                    false
                }
                _ => {
                    // A part in progress that another replaces was cut off: dropped,
                    // its readers fail.
                    let growing = watch::Sender::new(Growing {
                        pieces: vec![piece],
                        complete: false,
                    });
                    state.growing = Some((uri.to_string(), growing));
                    true
                }
            }
        };
        if started {
            self.changed.send_modify(|version| *version += 1);
        }
    }

    /// Completes the open segment (see [`Playlist::close_open`]); returns it and the
    /// segments whose files are to be deleted (see [`Self::push`]).
    pub fn close_open(&self) -> (Option<Segment>, Vec<Segment>) {
        let result = {
            let mut state = self.state();
            // A part in progress that was never completed: its readers fail.
            state.growing = None;
            let (closed, gone) = state.playlist.close_open();
            (closed, state.retire(gone, Instant::now()))
        };
        self.changed.send_modify(|version| *version += 1);
        result
    }

    /// The bytes of a segment's parts, in order: the segment file.
    pub fn segment_bytes(&self, segment: &Segment) -> Vec<u8> {
        let state = self.state();
        let mut bytes = Vec::new();
        for part in &segment.parts {
            if let Some(b) = state.parts.get(&part.uri) {
                bytes.extend_from_slice(b);
            }
        }
        bytes
    }

    /// The media playlist for `reload`: at once, or once it has the segment or part
    /// asked for, within three target durations. Live low-latency playlists only
    /// block; an ended one ignores the directives.
    pub async fn playlist(&self, reload: Reload) -> Result<String, ReloadError> {
        let (target, part_target) = self.read(|p| {
            (
                p.target_duration(),
                p.low_latency().map(|ll| ll.part_target),
            )
        });
        // The first playlist waits for a complete segment: a player given less would
        // start closer to the live edge than the hold-back allows, and stall.
        let waited = Duration::from_secs(3 * target as u64);
        if reload.msn.is_none() {
            let started = |p: &Playlist| p.is_ended() || p.has_complete_segment();
            if !self.wait(waited, started).await || self.read(|p| p.segments().next().is_none()) {
                return Err(ReloadError::NoSegment(waited));
            }
        }
        let Some(part_target) = part_target else {
            return Ok(self.read(|p| p.render(false)));
        };
        let Some(msn) = reload.msn else {
            return Ok(self.read(|p| p.render(reload.skip)));
        };
        // A request may run at most two segments, or three seconds' parts, ahead.
        let part_limit = if part_target < 1.0 {
            (3.0 / part_target).ceil() as u64
        } else {
            3
        };
        let now = self.read(|p| (!p.is_ended()).then(|| p.position()));
        if let Some(now) = now {
            if msn > now.msn + 2 {
                return Err(ReloadError::BadRequest(format!(
                    "_HLS_msn={msn} is more than two segments after the last ({})",
                    now.msn
                )));
            }
            // How many parts ahead of the last the request is, counting a segment's
            // worth of parts for each segment ahead.
            let per_segment = (target as f64 / part_target).round() as u64;
            if let Some(part) = reload.part
                && msn >= now.msn
                && (msn - now.msn) * per_segment + part > now.parts + part_limit
            {
                return Err(ReloadError::BadRequest(format!(
                    "_HLS_msn={msn}&_HLS_part={part} is more than {part_limit} parts after \
                     the last (segment {}, part {})",
                    now.msn, now.parts
                )));
            }
        }
        let ready = |p: &Playlist| p.is_ended() || p.has(msn, reload.part);
        if self.wait(waited, ready).await {
            Ok(self.read(|p| p.render(reload.skip)))
        } else {
            Err(ReloadError::Timeout {
                msn,
                part: reload.part,
                waited,
            })
        }
    }

    /// A part: at once when complete; the part the playlist hints at next once its
    /// first piece is written (within three target durations), to be read as it grows.
    pub async fn part(&self, uri: &str) -> Option<PartBody> {
        let (hinted, target) = self.read(|p| (p.next_part() == Some(uri), p.target_duration()));
        if hinted {
            let waited = Duration::from_secs(3 * target as u64);
            let begun = |state: &State| {
                state.playlist.next_part() != Some(uri)
                    || state.growing.as_ref().is_some_and(|(u, _)| u == uri)
            };
            self.wait_state(waited, begun).await;
        }
        let state = self.state();
        if let Some(bytes) = state.parts.get(uri) {
            return Some(PartBody::Complete(bytes.clone()));
        }
        match &state.growing {
            Some((growing_uri, growing)) if growing_uri == uri => {
                Some(PartBody::Growing(growing.subscribe()))
            }
            _ => None,
        }
    }

    /// Waits until `ready` holds for the playlist, at most `limit`.
    async fn wait(&self, limit: Duration, ready: impl Fn(&Playlist) -> bool) -> bool {
        self.wait_state(limit, |state| ready(&state.playlist)).await
    }

    /// Waits until `ready` holds for the state, at most `limit`: woken by each change,
    /// never by a timer.
    async fn wait_state(&self, limit: Duration, ready: impl Fn(&State) -> bool) -> bool {
        let mut changes = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if ready(&self.state()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return ready(&self.state()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(n: u32) -> Segment {
        Segment {
            uri: format!("s{n}.m4s"),
            duration: 1.0,
            date: SystemTime::now(),
            discontinuity: false,
            map: None,
            parts: vec![Part {
                uri: format!("s{n}p0.m4s"),
                duration: 1.0,
                independent: true,
            }],
        }
    }

    #[tokio::test]
    async fn the_hinted_part_is_read_as_it_grows_and_ends_when_complete() {
        let ll = Some(crate::hls::playlist::LowLatency { part_target: 0.2 });
        let live = LiveHls::new(PathBuf::from("."), Playlist::new(1, 6, ll));
        let first = Part {
            uri: "p0.m4s".into(),
            duration: 0.2,
            independent: true,
        };
        let start = Some(("s0.m4s".to_string(), SystemTime::now(), None));
        live.add_part(start, first, Bytes::from_static(b"ab"), "p1.m4s".into());
        // The hinted part: its first piece, then a reader, then the second piece.
        live.add_piece("p1.m4s", Bytes::from_static(b"c"));
        let Some(PartBody::Growing(mut pieces)) = live.part("p1.m4s").await else {
            panic!("the hinted part is not growing");
        };
        assert_eq!(
            pieces.borrow_and_update().pieces,
            [Bytes::from_static(b"c")]
        );
        live.add_piece("p1.m4s", Bytes::from_static(b"d"));
        pieces.changed().await.unwrap();
        assert_eq!(pieces.borrow_and_update().pieces.len(), 2);
        let second = Part {
            uri: "p1.m4s".into(),
            duration: 0.2,
            independent: false,
        };
        live.add_part(None, second, Bytes::from_static(b"cd"), "p2.m4s".into());
        pieces.changed().await.unwrap();
        assert!(pieces.borrow().complete);
        match live.part("p1.m4s").await {
            Some(PartBody::Complete(bytes)) => assert_eq!(bytes, Bytes::from_static(b"cd")),
            other => panic!("{other:?}"),
        }
        // A part in progress that another replaces was cut off: its readers fail.
        live.add_piece("p2.m4s", Bytes::from_static(b"e"));
        let Some(PartBody::Growing(mut cut)) = live.part("p2.m4s").await else {
            panic!("the hinted part is not growing");
        };
        live.add_piece("p9.m4s", Bytes::from_static(b"f"));
        assert!(cut.changed().await.is_err());
        assert!(!cut.borrow().complete);
    }

    #[test]
    fn segments_that_leave_the_window_stay_a_grace() {
        let live = LiveHls::new(PathBuf::from("."), Playlist::new(1, 2, None));
        for n in 0..3 {
            live.state()
                .parts
                .insert(format!("s{n}p0.m4s"), Bytes::from_static(b"x"));
            assert_eq!(live.push(segment(n)), Vec::new(), "segment {n}");
        }
        assert_eq!(live.read(|p| p.segments().count()), 2);
        let mut state = live.state();
        // Its file and parts outlast the last playlist that listed it, then go.
        let grace = state.grace();
        assert_eq!(grace, Duration::from_secs(3));
        let left = state.retired[0].0;
        assert!(state.parts.contains_key("s0p0.m4s"));
        assert!(state.retire(Vec::new(), left + grace / 2).is_empty());
        let expired = state.retire(Vec::new(), left + grace);
        let uris: Vec<_> = expired.iter().map(|s| s.uri.as_str()).collect();
        assert_eq!(uris, ["s0.m4s"]);
        assert!(!state.parts.contains_key("s0p0.m4s"));
        assert!(state.parts.contains_key("s1p0.m4s"));
    }
}
