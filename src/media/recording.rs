//! Recording files: their names (`<stream>-<UTC start>.<ext>`), which names are ours,
//! and the listing of a recording directory.

use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

const EXTENSIONS: [&str; 3] = ["mp4", "mkv", "ts"];

/// `20261121T101500Z` for a time.
pub fn compact_utc(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .replace(['-', ':'], "")
}

/// A free path for a new recording of `stream` started at `started`.
pub fn new_path(dir: &Path, stream: &str, started: SystemTime, extension: &str) -> PathBuf {
    let stamp = compact_utc(started);
    let mut path = dir.join(format!("{stream}-{stamp}.{extension}"));
    let mut n = 2;
    while path.exists() {
        path = dir.join(format!("{stream}-{stamp}-{n}.{extension}"));
        n += 1;
    }
    path
}

/// A recording's stream and start (RFC 3339) from its file name, if the name is one of ours.
pub fn parse_name(file: &str) -> Option<(String, String)> {
    let (stem, extension) = file.rsplit_once('.')?;
    if !EXTENSIONS.contains(&extension) {
        return None;
    }
    // `<stream>-<stamp>` or `<stream>-<stamp>-<n>`.
    let stem = match stem.rsplit_once('-') {
        Some((head, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => stem,
    };
    let (stream, stamp) = stem.rsplit_once('-')?;
    if !crate::registry::valid_name(stream) || !is_stamp(stamp) {
        return None;
    }
    let b = stamp.as_bytes();
    let s = |r: std::ops::Range<usize>| std::str::from_utf8(&b[r]).unwrap_or_default();
    let started = format!(
        "{}-{}-{}T{}:{}:{}Z",
        s(0..4),
        s(4..6),
        s(6..8),
        s(9..11),
        s(11..13),
        s(13..15)
    );
    Some((stream.to_string(), started))
}

fn is_stamp(stamp: &str) -> bool {
    let b = stamp.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

/// A recording as `GET /recordings` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordingFile {
    pub file: String,
    pub stream: String,
    pub started_at: String,
    pub bytes: u64,
    pub finished: bool,
}

/// The recordings in `dir`, newest first; `is_active` tells which are being written.
pub fn list(dir: &Path, is_active: impl Fn(&str) -> bool) -> Vec<RecordingFile> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<RecordingFile> = entries
        .flatten()
        .filter_map(|entry| {
            let file = entry.file_name().into_string().ok()?;
            let (stream, started_at) = parse_name(&file)?;
            let metadata = entry.metadata().ok().filter(|m| m.is_file())?;
            Some(RecordingFile {
                finished: !is_active(&file),
                file,
                stream,
                started_at,
                bytes: metadata.len(),
            })
        })
        .collect();
    files.sort_by(|a, b| b.started_at.cmp(&a.started_at).then(a.file.cmp(&b.file)));
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn names_round_trip() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_256_100);
        assert_eq!(compact_utc(t), "20261121T101500Z");
        let dir = tempfile::tempdir().unwrap();
        let path = new_path(dir.path(), "cam-1", t, "mp4");
        assert_eq!(path.file_name().unwrap(), "cam-1-20261121T101500Z.mp4");
        std::fs::write(&path, b"x").unwrap();
        let second = new_path(dir.path(), "cam-1", t, "mp4");
        assert_eq!(second.file_name().unwrap(), "cam-1-20261121T101500Z-2.mp4");
        for name in ["cam-1-20261121T101500Z.mp4", "cam-1-20261121T101500Z-2.mp4"] {
            assert_eq!(
                parse_name(name),
                Some(("cam-1".into(), "2026-11-21T10:15:00Z".into()))
            );
        }
    }

    #[test]
    fn foreign_names_are_not_recordings() {
        for name in [
            "../etc/passwd",
            "cam1.mp4",
            "cam1-2026.mp4",
            "cam1-20261121T101500Z.exe",
            "a/b-20261121T101500Z.mp4",
            "-20261121T101500Z.mp4",
            "cam1-20261121X101500Z.mp4",
        ] {
            assert_eq!(parse_name(name), None, "{name}");
        }
    }

    #[test]
    fn listing_marks_the_active_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a-20261121T101500Z.mkv"), b"1234").unwrap();
        std::fs::write(dir.path().join("b-20261121T101600Z.ts"), b"12").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let list = list(dir.path(), |f| f.starts_with("b-"));
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].file, "b-20261121T101600Z.ts");
        assert!(!list[0].finished);
        assert_eq!((list[1].bytes, list[1].finished), (4, true));
    }
}
