//! Recordings: every format decodes its full length after a clean end, fragmented MP4
//! and Matroska survive a killed gateway, the list and Range downloads work, and a
//! recording that cannot be written harms no live output.

mod common;

use common::{Publisher, TestGateway, decode_sdp};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const LIVE_TIMEOUT: Duration = Duration::from_secs(20);

fn record_config(dir: &Path, format: &str) -> String {
    format!(
        "[record]\nenabled = true\nformat = \"{format}\"\ndir = \"{}\"",
        dir.display()
    )
}

/// Decoded video frames and the container's duration, as ffprobe reports them.
fn probe(path: &Path) -> (u64, Option<f64>, String) {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-of", "compact"])
        .args([
            "-show_entries",
            "stream=codec_name,nb_read_frames:format=duration",
        ])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let frames = text
        .lines()
        .find(|l| l.contains("codec_name=h264"))
        .and_then(|l| l.rsplit("nb_read_frames=").next()?.trim().parse().ok())
        .unwrap_or(0);
    let duration = text
        .lines()
        .find_map(|l| l.strip_prefix("format|duration=")?.trim().parse().ok());
    (frames, duration, text)
}

fn recordings(gateway: &TestGateway) -> Vec<Value> {
    gateway
        .get_json("/recordings")
        .1
        .as_array()
        .unwrap()
        .clone()
}

fn recording_path(dir: &Path, gateway: &TestGateway, stream: &str) -> PathBuf {
    let file = gateway.stream(stream).unwrap()["outputs"]["recording"]
        .as_str()
        .unwrap()
        .to_string();
    dir.join(file)
}

#[test]
fn clean_recordings_decode_their_full_length_in_every_format() {
    for format in ["mp4", "mkv", "ts"] {
        let dir = tempfile::tempdir().unwrap();
        let gateway = TestGateway::start(&record_config(dir.path(), format));
        let mut publisher = Publisher::start(&gateway, "rec", &["--duration-s", "6"]);
        publisher.wait_for("live", LIVE_TIMEOUT);
        let live = Instant::now();
        let path = recording_path(dir.path(), &gateway, "rec");
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        assert!(
            name.starts_with("rec-") && name.ends_with(&format!("Z.{format}")),
            "{name}"
        );
        let listed = recordings(&gateway);
        assert_eq!(listed[0]["file"], name.as_str());
        assert_eq!(listed[0]["stream"], "rec");
        assert_eq!(listed[0]["finished"], false);

        publisher.wait_for("ended", Duration::from_secs(15));
        let published = live.elapsed().as_secs_f64();
        let listed = recordings(&gateway);
        assert_eq!(listed[0]["finished"], true, "{listed:?}");
        let bytes = std::fs::metadata(&path).unwrap().len();
        assert_eq!(listed[0]["bytes"], bytes);

        let (frames, duration, text) = probe(&path);
        // The file holds the whole publication at 30 frames a second. `published` runs
        // from the live message to the ended one, so it also spans the pipeline's drain
        // at the end and, on a busy machine, a message that came late: the file may be
        // up to 1.5 s shorter, never longer.
        let (least, most) = (
            (published - 1.5).max(1.0) * 30.0 * 0.9,
            published * 30.0 * 1.1,
        );
        assert!(
            (least..=most).contains(&(frames as f64)),
            "{format}: {frames} frames for {published:.1} s live (from {least:.0} to {most:.0})\n{text}"
        );
        assert!(text.contains("codec_name=aac"), "{format}: {text}");
        if format == "mp4" {
            // Finalised: the container knows its duration.
            let duration = duration.expect("an MP4 duration");
            assert!((duration - frames as f64 / 30.0).abs() < 0.5, "{duration}");
        }
    }
}

#[test]
fn downloads_support_ranges_and_refuse_other_paths() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = TestGateway::start(&record_config(dir.path(), "mp4"));
    let mut publisher = Publisher::start(&gateway, "dl", &["--duration-s", "3"]);
    publisher.wait_for("ended", Duration::from_secs(20));
    let path = recording_path(dir.path(), &gateway, "dl");
    let name = path.file_name().unwrap().to_str().unwrap();
    let whole = std::fs::read(&path).unwrap();

    let client = reqwest::blocking::Client::new();
    let full = client
        .get(gateway.url(&format!("/recordings/{name}")))
        .send()
        .unwrap();
    assert_eq!(full.status(), 200);
    assert_eq!(full.headers()["content-type"], "video/mp4");
    assert_eq!(full.bytes().unwrap().to_vec(), whole);
    let part = client
        .get(gateway.url(&format!("/recordings/{name}")))
        .header("Range", "bytes=100-199")
        .send()
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 100-199/{}", whole.len()).as_str()
    );
    assert_eq!(part.bytes().unwrap().to_vec(), whole[100..200].to_vec());

    std::fs::write(dir.path().join("notes.txt"), b"private").unwrap();
    for bad in [
        "/recordings/notes.txt",
        "/recordings/..%2F..%2Fetc%2Fpasswd",
        "/recordings/%2Fetc%2Fpasswd",
        "/recordings/dl-20990101T000000Z.mp4",
    ] {
        assert_eq!(gateway.get(bad).status(), 404, "{bad}");
    }
}

#[test]
fn mp4_and_mkv_survive_a_killed_gateway() {
    for format in ["mp4", "mkv"] {
        let dir = tempfile::tempdir().unwrap();
        let mut gateway = TestGateway::start(&record_config(dir.path(), format));
        let mut publisher = Publisher::start(&gateway, "crash", &[]);
        publisher.wait_for("live", LIVE_TIMEOUT);
        let live = Instant::now();
        let path = recording_path(dir.path(), &gateway, "crash");
        std::thread::sleep(Duration::from_secs(6));
        gateway.signal("-KILL");
        let recorded = live.elapsed().as_secs_f64();
        gateway.wait_exit(Duration::from_secs(5));
        let (frames, _, text) = probe(&path);
        // Everything up to within 2 s of the kill decodes.
        let expected = (recorded - 2.0) * 30.0;
        assert!(
            frames as f64 >= expected,
            "{format}: {frames} frames after {recorded:.1} s\n{text}"
        );
    }
}

#[test]
fn a_recording_that_cannot_be_written_harms_no_live_output() {
    // The directory turns into a file after startup: the next recording cannot start.
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("recordings");
    let gateway = TestGateway::start(&record_config(&dir, "mkv"));
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    let mut publisher = Publisher::start(&gateway, "nodir", &[]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    let stream = gateway.stream("nodir").unwrap();
    assert!(
        stream["recording_error"]
            .as_str()
            .unwrap()
            .contains("cannot write in"),
        "{stream}"
    );
    assert!(stream["outputs"]["recording"].is_null());
    let decoded = decode_sdp(&gateway.url("/streams/nodir/stream.sdp"), 3.0);
    assert!(decoded.video_frames >= 70, "{}", decoded.stderr);
    let playlist = common::eventually(Duration::from_secs(10), || {
        let text = gateway.get("/streams/nodir/stream.m3u8").text().ok()?;
        text.contains("#EXTINF").then_some(text)
    });
    assert!(playlist.is_some());
}

#[test]
fn a_disk_that_fills_ends_the_recording_and_the_stream_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    // Files may not grow past 400 KiB: the recording hits it within seconds, while
    // each HLS segment stays below it.
    let gateway = TestGateway::start_limited(&record_config(dir.path(), "mkv"), Some(400));
    let mut publisher = Publisher::start(&gateway, "full", &[]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    let error = common::eventually(Duration::from_secs(30), || {
        gateway.stream("full")?["recording_error"]
            .as_str()
            .map(String::from)
    })
    .unwrap_or_else(|| panic!("the recording never failed:\n{}", gateway.log()));
    assert!(!error.is_empty());
    assert_eq!(gateway.stream("full").unwrap()["state"], "live");
    // RTP and HLS go on after the failure.
    let decoded = decode_sdp(&gateway.url("/streams/full/stream.sdp"), 3.0);
    assert!(decoded.video_frames >= 70, "{}", decoded.stderr);
    let before = gateway.get("/streams/full/stream.m3u8").text().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let after = gateway.get("/streams/full/stream.m3u8").text().unwrap();
    assert_ne!(before, after, "HLS stopped");
    assert!(gateway.log().contains("the stream goes on without it"));
    // The failed recording was cut off: nothing is left to stop, and the stream is
    // listed without it.
    let stop = common::client()
        .delete(gateway.url("/api/streams/full/recording"))
        .send()
        .unwrap();
    assert_eq!(stop.status(), 409);
    let body: serde_json::Value = stop.json().unwrap();
    assert_eq!(body["error"], "not-recording", "{body}");
    assert!(
        gateway.stream("full").unwrap()["outputs"]["recording"].is_null(),
        "{:?}",
        gateway.stream("full")
    );
}

#[test]
fn sigterm_finishes_the_recording_and_the_playlist() {
    let dir = tempfile::tempdir().unwrap();
    let hls = tempfile::tempdir().unwrap();
    let mut gateway = TestGateway::start(&format!(
        "{}\n[hls]\ndir = \"{}\"",
        record_config(dir.path(), "mp4"),
        hls.path().display()
    ));
    let mut publisher = Publisher::start(&gateway, "term", &[]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    let live = Instant::now();
    let path = recording_path(dir.path(), &gateway, "term");
    std::thread::sleep(Duration::from_secs(4));
    gateway.signal("-TERM");
    let recorded = live.elapsed().as_secs_f64();
    let (code, _) = gateway.wait_exit(Duration::from_secs(6));
    assert_eq!(code, Some(0));
    let (frames, duration, text) = probe(&path);
    assert!(
        frames as f64 >= (recorded - 1.0) * 30.0,
        "{frames} frames\n{text}"
    );
    let duration = duration.expect("a finalised MP4 knows its duration");
    assert!((duration - frames as f64 / 30.0).abs() < 0.5, "{duration}");
    // A configured hls.dir keeps the ended playlist, in the output's own directory.
    let dirs: Vec<_> = std::fs::read_dir(hls.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("term."))
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let playlist = std::fs::read_to_string(dirs[0].path().join("stream.m3u8")).unwrap();
    assert!(playlist.ends_with("#EXT-X-ENDLIST\n"), "{playlist}");
}
