//! HLS playlists (RFC 8216): the sliding media playlist and the multivariant playlist,
//! written by the gateway from the segments GStreamer's splitmuxsink closes. The
//! [`Playlist`] is plain data; [`HlsOutput`] puts it on disk.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub const MULTIVARIANT: &str = "index.m3u8";
pub const MEDIA: &str = "stream.m3u8";

#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub uri: String,
    pub duration: f64,
    /// A discontinuity comes before this segment (a publisher came back).
    pub discontinuity: bool,
}

/// A live media playlist with a sliding window.
#[derive(Debug, Clone, PartialEq)]
pub struct Playlist {
    target_duration: u32,
    window: usize,
    media_sequence: u64,
    discontinuity_sequence: u64,
    segments: VecDeque<Segment>,
    ended: bool,
    next_is_discontinuity: bool,
}

impl Playlist {
    pub fn new(target_duration: u32, window: usize) -> Self {
        Self {
            target_duration,
            window: window.max(1),
            media_sequence: 0,
            discontinuity_sequence: 0,
            segments: VecDeque::new(),
            ended: false,
            next_is_discontinuity: false,
        }
    }

    /// Adds a closed segment; returns the URIs that left the window.
    pub fn push(&mut self, uri: String, duration: f64) -> Vec<String> {
        // A segment longer than the target (a late key frame) raises it: every
        // rounded EXTINF must stay within EXT-X-TARGETDURATION.
        self.target_duration = self.target_duration.max(duration.round() as u32);
        self.segments.push_back(Segment {
            uri,
            duration,
            discontinuity: std::mem::take(&mut self.next_is_discontinuity),
        });
        let mut removed = Vec::new();
        while self.segments.len() > self.window {
            let gone = self.segments.pop_front().expect("non-empty");
            self.media_sequence += 1;
            if gone.discontinuity {
                self.discontinuity_sequence += 1;
            }
            removed.push(gone.uri);
        }
        removed
    }

    /// The publisher left: no more segments will come, for now.
    pub fn end(&mut self) {
        self.ended = true;
    }

    /// A publisher came back under the same name: the next segment starts anew.
    pub fn resume(&mut self) {
        self.ended = false;
        self.next_is_discontinuity = !self.segments.is_empty();
    }

    /// The media playlist text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let _ = write!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:{}\n",
            self.target_duration, self.media_sequence
        );
        if self.discontinuity_sequence > 0 {
            let _ = writeln!(
                text,
                "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
                self.discontinuity_sequence
            );
        }
        for segment in &self.segments {
            if segment.discontinuity {
                text.push_str("#EXT-X-DISCONTINUITY\n");
            }
            let _ = write!(text, "#EXTINF:{:.3},\n{}\n", segment.duration, segment.uri);
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

/// The multivariant playlist text, pointing to the media playlist.
pub fn render_multivariant(variant: &Variant) -> String {
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
    format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-STREAM-INF:{attributes}\n{MEDIA}\n"
    )
}

/// `avc1.PPCCLL` (profile, constraint flags, level) from the first SPS in an H.264
/// byte stream.
pub fn avc1_codec(byte_stream: &[u8]) -> Option<String> {
    let mut i = 0;
    while i + 3 < byte_stream.len() {
        if byte_stream[i..i + 3] == [0, 0, 1] {
            let nal = &byte_stream[i + 3..];
            if nal.len() >= 4 && nal[0] & 0x1f == 7 {
                return Some(format!("avc1.{:02x}{:02x}{:02x}", nal[1], nal[2], nal[3]));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    None
}

/// A stream's HLS files: its directory, segment naming, and playlist. Outlives a
/// publisher by `hls.linger_s`, so that one who comes back continues it.
#[derive(Debug)]
pub struct HlsOutput {
    pub dir: PathBuf,
    /// Segment names start with it, unique to this output, so caches never mix two.
    pub prefix: String,
    pub playlist: Playlist,
    pub next_index: u64,
    /// Running time where the open segment began.
    segment_start_ns: Option<u64>,
    variant_written: bool,
}

impl HlsOutput {
    /// Creates the stream's directory.
    pub fn create(
        root: &Path,
        stream: &str,
        target_duration: u32,
        window: usize,
    ) -> std::io::Result<Self> {
        let dir = root.join(stream);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        Ok(Self {
            dir,
            prefix: format!("s{stamp:x}-"),
            playlist: Playlist::new(target_duration, window),
            next_index: 0,
            segment_start_ns: None,
            variant_written: false,
        })
    }

    /// A publisher comes back: continue after a discontinuity.
    pub fn resume(&mut self) -> std::io::Result<()> {
        self.playlist.resume();
        self.segment_start_ns = None;
        self.write_media()
    }

    /// The splitmuxsink location pattern for the next pipeline.
    pub fn location_pattern(&self) -> PathBuf {
        self.dir.join(format!("{}%05d.ts", self.prefix))
    }

    /// The first data arrived: the first segment starts at this running time.
    pub fn segments_started(&mut self, running_time_ns: u64) {
        self.segment_start_ns.get_or_insert(running_time_ns);
    }

    /// Adds a closed segment to the playlist and deletes those that left the window.
    pub fn segment_closed(&mut self, location: &Path, end_ns: u64) -> std::io::Result<()> {
        let Some(uri) = location.file_name().and_then(|n| n.to_str()) else {
            return Ok(());
        };
        let start_ns = self.segment_start_ns.replace(end_ns).unwrap_or(end_ns);
        let duration = end_ns.saturating_sub(start_ns) as f64 / 1e9;
        self.next_index += 1;
        if duration <= 0.0 {
            let _ = std::fs::remove_file(location);
            return Ok(());
        }
        for gone in self.playlist.push(uri.to_string(), duration) {
            let _ = std::fs::remove_file(self.dir.join(gone));
        }
        self.write_media()
    }

    pub fn write_variant(&mut self, variant: &Variant) -> std::io::Result<()> {
        if self.variant_written {
            return Ok(());
        }
        self.variant_written = true;
        write_atomically(&self.dir.join(MULTIVARIANT), &render_multivariant(variant))
    }

    pub fn end(&mut self) -> std::io::Result<()> {
        self.playlist.end();
        self.write_media()
    }

    fn write_media(&self) -> std::io::Result<()> {
        write_atomically(&self.dir.join(MEDIA), &self.playlist.render())
    }

    /// Removes the stream's files.
    pub fn remove(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes a file so that readers see either the old or the new text, never a part.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(partial, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_and_end() {
        let mut p = Playlist::new(2, 3);
        for i in 0..3 {
            assert!(p.push(format!("s{i}.ts"), 2.0).is_empty());
        }
        assert_eq!(p.push("s3.ts".into(), 2.033), vec!["s0.ts".to_string()]);
        p.end();
        assert_eq!(
            p.render(),
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1\n\
             #EXTINF:2.000,\ns1.ts\n#EXTINF:2.000,\ns2.ts\n#EXTINF:2.033,\ns3.ts\n#EXT-X-ENDLIST\n"
        );
    }

    #[test]
    fn a_returning_publisher_continues_after_a_discontinuity() {
        let mut p = Playlist::new(2, 2);
        p.push("a.ts".into(), 2.0);
        p.end();
        p.resume();
        p.push("b.ts".into(), 2.0);
        let text = p.render();
        assert!(
            text.contains("#EXTINF:2.000,\na.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:2.000,\nb.ts\n")
        );
        assert!(!text.contains("ENDLIST"));
        // The discontinuity leaves the window: it is counted.
        p.push("c.ts".into(), 2.0);
        p.push("d.ts".into(), 2.0);
        let text = p.render();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:2\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n"));
        assert!(!text.contains("#EXT-X-DISCONTINUITY\n"));
    }

    #[test]
    fn a_long_segment_raises_the_target_duration() {
        let mut p = Playlist::new(2, 5);
        p.push("a.ts".into(), 2.6);
        assert!(p.render().contains("#EXT-X-TARGETDURATION:3\n"));
    }

    #[test]
    fn multivariant() {
        let text = render_multivariant(&Variant {
            bandwidth: 2_900_000,
            resolution: Some((1280, 720)),
            framerate: Some(30),
            video_codec: Some("avc1.42c01f".into()),
            audio: true,
        });
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-STREAM-INF:BANDWIDTH=2900000,RESOLUTION=1280x720,FRAME-RATE=30.000,\
             CODECS=\"avc1.42c01f,mp4a.40.2\"\nstream.m3u8\n"
        );
    }

    #[test]
    fn codec_from_sps() {
        let stream = [
            0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f, 0xda, 0, 0, 1, 0x68,
        ];
        assert_eq!(avc1_codec(&stream).as_deref(), Some("avc1.42c01f"));
        assert_eq!(avc1_codec(&[0, 0, 1, 0x65, 1, 2, 3]), None);
    }
}
