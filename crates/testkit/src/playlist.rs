//! A reader of the gateway's HLS media playlists (MPEG-TS, fMP4 and low-latency), as the
//! tests check them. It asserts what every playlist must be (it starts with `#EXTM3U`, a
//! segment has its `#EXTINF`, a preload hint is of a part) and panics otherwise: it is for
//! tests, which fail with the playlist's text.

use std::time::SystemTime;

/// A part of a low-latency segment (`#EXT-X-PART`).
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub uri: String,
    pub duration: f64,
    pub independent: bool,
}

/// A segment with the tags that apply to it.
#[derive(Debug, Default, Clone)]
pub struct Segment {
    pub uri: String,
    pub duration: f64,
    /// Its `#EXT-X-PROGRAM-DATE-TIME`.
    pub date: Option<SystemTime>,
    /// The `#EXT-X-MAP` in force (fMP4).
    pub map: Option<String>,
    /// Whether an `#EXT-X-DISCONTINUITY` comes before it.
    pub discontinuity: bool,
    /// Its parts (low-latency only).
    pub parts: Vec<Part>,
}

impl Segment {
    pub fn dated(&self) -> bool {
        self.date.is_some()
    }

    /// Whether its first part is marked independent (low-latency only).
    pub fn first_part_independent(&self) -> Option<bool> {
        self.parts.first().map(|part| part.independent)
    }
}

/// A media playlist.
#[derive(Debug, Default)]
pub struct Playlist {
    pub version: u32,
    pub target_duration: f64,
    pub part_target: f64,
    pub server_control: String,
    pub media_sequence: u64,
    /// `#EXT-X-SKIP`'s skipped segments (a delta update).
    pub skipped: u64,
    /// The complete segments.
    pub segments: Vec<Segment>,
    /// The parts of the segment being made (with the map in force).
    pub open: Segment,
    /// The preload hint's URI.
    pub hint: Option<String>,
    pub ended: bool,
}

/// The value of `key` in an attribute list (`A=1,B="x"`), unquoted.
pub fn attribute<'a>(attributes: &'a str, key: &str) -> Option<&'a str> {
    attributes.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| v.trim_matches('"'))
    })
}

impl Playlist {
    pub fn parse(text: &str) -> Playlist {
        assert!(text.starts_with("#EXTM3U\n"), "{text}");
        let mut playlist = Playlist::default();
        let mut open = Segment::default();
        let mut duration = None;
        let mut map = None;
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("#EXT-X-VERSION:") {
                playlist.version = v.parse().unwrap();
            } else if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
                playlist.target_duration = v.parse().unwrap();
            } else if let Some(v) = line.strip_prefix("#EXT-X-PART-INF:") {
                playlist.part_target = attribute(v, "PART-TARGET").unwrap().parse().unwrap();
            } else if let Some(v) = line.strip_prefix("#EXT-X-SERVER-CONTROL:") {
                playlist.server_control = v.to_string();
            } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                playlist.media_sequence = v.parse().unwrap();
            } else if let Some(v) = line.strip_prefix("#EXT-X-SKIP:") {
                playlist.skipped = attribute(v, "SKIPPED-SEGMENTS").unwrap().parse().unwrap();
            } else if let Some(v) = line.strip_prefix("#EXT-X-MAP:") {
                map = attribute(v, "URI").map(str::to_string);
            } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
                open.date = Some(humantime::parse_rfc3339(v).unwrap());
            } else if line == "#EXT-X-DISCONTINUITY" {
                open.discontinuity = true;
            } else if let Some(v) = line.strip_prefix("#EXT-X-PART:") {
                open.parts.push(Part {
                    uri: attribute(v, "URI").unwrap().to_string(),
                    duration: attribute(v, "DURATION").unwrap().parse().unwrap(),
                    independent: attribute(v, "INDEPENDENT") == Some("YES"),
                });
            } else if let Some(v) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
                assert_eq!(attribute(v, "TYPE"), Some("PART"), "{line}");
                playlist.hint = attribute(v, "URI").map(str::to_string);
            } else if let Some(v) = line.strip_prefix("#EXTINF:") {
                duration = Some(v.trim_end_matches(',').parse::<f64>().unwrap());
            } else if line == "#EXT-X-ENDLIST" {
                playlist.ended = true;
            } else if !line.starts_with('#') && !line.is_empty() {
                open.uri = line.to_string();
                open.duration = duration
                    .take()
                    .unwrap_or_else(|| panic!("no #EXTINF before {line}: {text}"));
                open.map = map.clone();
                playlist.segments.push(std::mem::take(&mut open));
            }
        }
        open.map = map;
        playlist.open = open;
        playlist
    }

    /// The media sequence number of the next segment (the one being made).
    pub fn next_sequence(&self) -> u64 {
        self.media_sequence + self.segments.len() as u64
    }

    /// The dates of the dated segments.
    pub fn dates(&self) -> Vec<SystemTime> {
        self.segments.iter().filter_map(|s| s.date).collect()
    }

    pub fn discontinuities(&self) -> usize {
        self.segments.iter().filter(|s| s.discontinuity).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_parts_and_tags_are_read() {
        let text = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n\
            #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.5\n\
            #EXT-X-PART-INF:PART-TARGET=0.5\n#EXT-X-MEDIA-SEQUENCE:7\n\
            #EXT-X-MAP:URI=\"init.mp4\"\n\
            #EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:00.000Z\n\
            #EXT-X-PART:DURATION=0.5,URI=\"7.0.m4s\",INDEPENDENT=YES\n\
            #EXT-X-PART:DURATION=0.5,URI=\"7.1.m4s\"\n#EXTINF:1.000,\n7.m4s\n\
            #EXT-X-DISCONTINUITY\n#EXTINF:2.000,\n8.m4s\n\
            #EXT-X-PART:DURATION=0.5,URI=\"9.0.m4s\"\n\
            #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"9.1.m4s\"\n";
        let playlist = Playlist::parse(text);
        assert_eq!(playlist.version, 9);
        assert_eq!(playlist.target_duration, 2.0);
        assert_eq!(playlist.part_target, 0.5);
        assert_eq!(playlist.media_sequence, 7);
        assert_eq!(playlist.next_sequence(), 9);
        assert_eq!(playlist.segments.len(), 2);
        let first = &playlist.segments[0];
        assert_eq!((first.uri.as_str(), first.duration), ("7.m4s", 1.0));
        assert_eq!(first.map.as_deref(), Some("init.mp4"));
        assert!(first.dated() && !first.discontinuity);
        assert_eq!(first.first_part_independent(), Some(true));
        assert_eq!(first.parts.len(), 2);
        assert!(playlist.segments[1].discontinuity);
        assert_eq!(playlist.discontinuities(), 1);
        assert_eq!(playlist.dates().len(), 1);
        assert_eq!(playlist.open.parts.len(), 1);
        assert_eq!(playlist.hint.as_deref(), Some("9.1.m4s"));
        assert!(!playlist.ended);
    }
}
