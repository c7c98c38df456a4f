//! The media playlist as plain data (RFC 8216 and draft-pantos-hls-rfc8216bis): a
//! sliding window of segments, and in the low-latency variant the parts of the
//! segment being made, rendered whole, as a delta update, or as the file left on disk.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::SystemTime;

/// A part of a segment (`EXT-X-PART`).
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub uri: String,
    pub duration: f64,
    /// It starts with a key frame.
    pub independent: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub uri: String,
    pub duration: f64,
    /// When its first picture arrived (`EXT-X-PROGRAM-DATE-TIME`).
    pub date: SystemTime,
    /// A discontinuity comes before this segment (a publisher came back).
    pub discontinuity: bool,
    /// Its initialisation section (`EXT-X-MAP`), for fMP4.
    pub map: Option<String>,
    /// Its parts, in the low-latency variant.
    pub parts: Vec<Part>,
}

/// The low-latency parameters of a playlist.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LowLatency {
    /// `PART-TARGET`, seconds.
    pub part_target: f64,
}

/// Where a playlist stands: the segments complete and the parts of the next one.
/// Ordered as the stream goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// The media sequence number of the segment being made.
    pub msn: u64,
    /// Its parts so far.
    pub parts: u64,
}

/// A live media playlist with a sliding window.
#[derive(Debug, Clone, PartialEq)]
pub struct Playlist {
    target_duration: u32,
    window: usize,
    media_sequence: u64,
    discontinuity_sequence: u64,
    segments: VecDeque<Segment>,
    /// The segment being made, with the parts it has so far.
    open: Option<Segment>,
    ended: bool,
    next_is_discontinuity: bool,
    low_latency: Option<LowLatency>,
    /// The URI of the next part, announced as `EXT-X-PRELOAD-HINT`.
    next_part: Option<String>,
}

impl Playlist {
    pub fn new(target_duration: u32, window: usize, low_latency: Option<LowLatency>) -> Self {
        Self {
            target_duration,
            window: window.max(1),
            media_sequence: 0,
            discontinuity_sequence: 0,
            segments: VecDeque::new(),
            open: None,
            ended: false,
            next_is_discontinuity: false,
            low_latency,
            next_part: None,
        }
    }

    pub fn target_duration(&self) -> u32 {
        self.target_duration
    }

    /// How many complete segments it lists at most.
    pub fn window(&self) -> usize {
        self.window
    }

    /// The same playlist, its first segment numbered `msn`.
    pub fn starting_at(self, msn: u64) -> Self {
        Self {
            media_sequence: msn,
            ..self
        }
    }

    pub fn low_latency(&self) -> Option<LowLatency> {
        self.low_latency
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The media sequence number the next complete segment gets.
    pub fn next_msn(&self) -> u64 {
        self.media_sequence + self.segments.len() as u64
    }

    pub fn has_complete_segment(&self) -> bool {
        !self.segments.is_empty()
    }

    pub fn position(&self) -> Position {
        Position {
            msn: self.next_msn(),
            parts: self.open.as_ref().map_or(0, |s| s.parts.len() as u64),
        }
    }

    /// Whether the playlist has part `part` of segment `msn`, or the whole segment
    /// when `part` is `None`.
    pub fn has(&self, msn: u64, part: Option<u64>) -> bool {
        let now = self.position();
        match part {
            None => msn < now.msn,
            Some(part) => msn < now.msn || (msn == now.msn && part < now.parts),
        }
    }

    /// The segments complete and open, oldest first.
    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter().chain(self.open.as_ref())
    }

    /// Adds a closed segment whose first picture arrived at `date`; returns the segments
    /// that left the window.
    pub fn push(&mut self, mut segment: Segment) -> Vec<Segment> {
        // A segment longer than the target (a late key frame) raises it: every
        // rounded EXTINF must stay within EXT-X-TARGETDURATION.
        self.target_duration = self.target_duration.max(segment.duration.round() as u32);
        segment.discontinuity |= std::mem::take(&mut self.next_is_discontinuity);
        self.segments.push_back(segment);
        let mut removed = Vec::new();
        while self.segments.len() > self.window {
            let gone = self.segments.pop_front().expect("non-empty");
            self.media_sequence += 1;
            if gone.discontinuity {
                self.discontinuity_sequence += 1;
            }
            removed.push(gone);
        }
        removed
    }

    /// Adds a part: to the open segment, or to a new one when `start` (the part starts
    /// a segment, on a key frame); the open segment is then complete, and pushed.
    /// `uri` names the new segment's file, `next` the part after this one.
    pub fn push_part(
        &mut self,
        start: Option<(String, SystemTime, Option<String>)>,
        part: Part,
        next: String,
    ) -> (Option<Segment>, Vec<Segment>) {
        let mut closed = None;
        let mut removed = Vec::new();
        if let Some((uri, date, map)) = start {
            // A discontinuity to come is the new segment's, not the one it completes.
            let discontinuity = std::mem::take(&mut self.next_is_discontinuity);
            if let Some(segment) = self.open.take() {
                closed = Some(segment.clone());
                removed = self.push(segment);
            }
            self.open = Some(Segment {
                uri,
                duration: 0.0,
                date,
                discontinuity,
                map,
                parts: Vec::new(),
            });
        }
        if let Some(open) = &mut self.open {
            open.duration += part.duration;
            open.parts.push(part);
        }
        self.next_part = Some(next);
        (closed, removed)
    }

    /// The open segment is complete (the stream ended); returns it, pushed.
    pub fn close_open(&mut self) -> (Option<Segment>, Vec<Segment>) {
        self.next_part = None;
        match self.open.take() {
            Some(segment) if segment.duration > 0.0 => {
                let removed = self.push(segment.clone());
                (Some(segment), removed)
            }
            _ => (None, Vec::new()),
        }
    }

    /// The publisher left: no more segments will come, for now.
    pub fn end(&mut self) {
        self.ended = true;
        self.next_part = None;
    }

    /// A publisher came back under the same name: the next segment starts anew.
    pub fn resume(&mut self) {
        self.ended = false;
        let any = self.segments().next().is_some();
        self.next_is_discontinuity = any;
    }

    /// The stream's encoding changes (a new initialisation section): the next segment
    /// comes after a discontinuity.
    pub fn discontinue(&mut self) {
        let any = self.segments().next().is_some();
        self.next_is_discontinuity = any;
    }

    /// The URI of the part after the last, while the stream is live.
    pub fn next_part(&self) -> Option<&str> {
        self.next_part.as_deref()
    }

    /// The media playlist a player is served: with `skip`, a delta update that leaves
    /// out the segments older than `CAN-SKIP-UNTIL`.
    pub fn render(&self, skip: bool) -> String {
        self.render_with(self.low_latency, skip)
    }

    /// The media playlist kept on disk: complete segments only.
    pub fn render_file(&self) -> String {
        self.render_with(None, false)
    }

    /// Seconds back from the playlist's end within which segments cannot be skipped.
    fn skip_until(&self) -> f64 {
        6.0 * self.target_duration as f64
    }

    /// How many of the oldest segments a delta update leaves out: those that start
    /// more than `CAN-SKIP-UNTIL` before the end, none when a discontinuity or a new
    /// initialisation section is among them.
    fn skippable(&self) -> usize {
        let total: f64 = self.segments().map(|s| s.duration).sum();
        let mut start = 0.0;
        let mut count = 0;
        for segment in &self.segments {
            if total - start <= self.skip_until() {
                break;
            }
            if segment.discontinuity {
                return 0;
            }
            start += segment.duration;
            count += 1;
        }
        let first_map = self.segments().next().and_then(|s| s.map.as_ref());
        let kept_map = self.segments().nth(count).and_then(|s| s.map.as_ref());
        if first_map != kept_map { 0 } else { count }
    }

    fn render_with(&self, low_latency: Option<LowLatency>, skip: bool) -> String {
        let fmp4 = self.segments().any(|s| s.map.is_some());
        let version = match (low_latency, fmp4) {
            (Some(_), _) => 9,
            (None, true) => 7,
            (None, false) => 3,
        };
        let mut text = String::new();
        let _ = write!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:{version}\n#EXT-X-TARGETDURATION:{}\n",
            self.target_duration
        );
        if let Some(ll) = low_latency {
            let _ = writeln!(
                text,
                "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3},CAN-SKIP-UNTIL={:.1}",
                3.0 * ll.part_target,
                self.skip_until()
            );
            let _ = writeln!(text, "#EXT-X-PART-INF:PART-TARGET={:.3}", ll.part_target);
        }
        let _ = writeln!(text, "#EXT-X-MEDIA-SEQUENCE:{}", self.media_sequence);
        if self.discontinuity_sequence > 0 {
            let _ = writeln!(
                text,
                "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
                self.discontinuity_sequence
            );
        }
        let skipped = if skip && low_latency.is_some() {
            self.skippable()
        } else {
            0
        };
        if skipped > 0 {
            let _ = writeln!(text, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
        }
        // Parts are listed for the segments within three target durations of the end.
        let total: f64 = self.segments().map(|s| s.duration).sum();
        let parts_from = total - 3.0 * self.target_duration as f64;
        let mut start = 0.0;
        let mut map: Option<&String> = if skipped > 0 {
            self.segments().next().and_then(|s| s.map.as_ref())
        } else {
            None
        };
        for (k, segment) in self.segments().enumerate() {
            start += segment.duration;
            if k < skipped {
                continue;
            }
            let is_open = k == self.segments.len();
            if is_open && low_latency.is_none() {
                break;
            }
            if segment.discontinuity {
                text.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if let Some(uri) = &segment.map
                && map != Some(uri)
            {
                map = Some(uri);
                let _ = writeln!(text, "#EXT-X-MAP:URI=\"{uri}\"");
            }
            let _ = writeln!(
                text,
                "#EXT-X-PROGRAM-DATE-TIME:{}",
                humantime::format_rfc3339_millis(segment.date)
            );
            if low_latency.is_some() && (start > parts_from || is_open) {
                for part in &segment.parts {
                    let _ = write!(
                        text,
                        "#EXT-X-PART:DURATION={:.3},URI=\"{}\"",
                        part.duration, part.uri
                    );
                    text.push_str(if part.independent {
                        ",INDEPENDENT=YES\n"
                    } else {
                        "\n"
                    });
                }
            }
            if !is_open {
                let _ = write!(text, "#EXTINF:{:.3},\n{}\n", segment.duration, segment.uri);
            }
        }
        if let (Some(_), Some(next)) = (low_latency, &self.next_part) {
            let _ = writeln!(text, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{next}\"");
        }
        if self.ended {
            text.push_str("#EXT-X-ENDLIST\n");
        }
        text
    }
}

/// What the multivariant playlist says of the one variant.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    pub bandwidth: u64,
    pub resolution: Option<(u32, u32)>,
    pub framerate: Option<u32>,
    /// `avc1.PPCCLL` from the encoder's SPS.
    pub video_codec: Option<String>,
    pub audio: bool,
}

/// The multivariant playlist text, pointing to the media playlist `media`.
pub fn render_multivariant(variant: &Variant, media: &str) -> String {
    let mut codecs: Vec<&str> = Vec::new();
    if let Some(video) = &variant.video_codec {
        codecs.push(video);
    }
    if variant.audio {
        codecs.push("mp4a.40.2");
    }
    let mut attributes = format!("BANDWIDTH={}", variant.bandwidth);
    if let Some((w, h)) = variant.resolution {
        let _ = write!(attributes, ",RESOLUTION={w}x{h}");
    }
    if let Some(fps) = variant.framerate {
        let _ = write!(attributes, ",FRAME-RATE={fps}.000");
    }
    let _ = write!(attributes, ",CODECS=\"{}\"", codecs.join(","));
    // The encoder writes no CEA-608/708 captions: players need not look for them.
    attributes.push_str(",CLOSED-CAPTIONS=NONE");
    format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-STREAM-INF:{attributes}\n{media}\n"
    )
}
