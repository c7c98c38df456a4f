//! HLS for Safari and VLC: the playlists over HTTP checked against RFC 8216 and Apple's
//! rules, every segment probed with ffprobe, the whole playlist decoded with ffmpeg.

mod common;

use common::fetch::{decode_playlist, fetch, ffprobe};
use common::{Publisher, TestGateway};
use std::time::{Duration, Instant};
use webrtc_gateway_testkit::playlist::{Playlist, Segment};

const LIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Checks the rules a player enforces on a media playlist and its segments.
fn check_media(gateway: &TestGateway, name: &str, video: bool, audio: bool) -> Playlist {
    let media = fetch(gateway, &format!("/streams/{name}/stream.m3u8"));
    assert_eq!(media.status, 200);
    assert_eq!(
        media.header("content-type"),
        "application/vnd.apple.mpegurl"
    );
    // Shared caches keep it about a part (a segment without parts): never longer.
    let cache_control = media.header("cache-control");
    assert!(
        ["public, max-age=1", "public, max-age=2"].contains(&cache_control),
        "{cache_control}"
    );
    assert_eq!(media.header("access-control-allow-origin"), "*");
    let playlist = Playlist::parse(&media.text());
    // Two-second segments; a gap in the publisher's pictures (a key frame waited for on
    // a busy machine) may make one longer, which raises the target: every segment
    // stays within it.
    assert!(playlist.target_duration >= 2.0, "{}", media.text());
    assert!(
        playlist
            .segments
            .iter()
            .all(|s| s.duration.round() <= playlist.target_duration),
        "{}",
        media.text()
    );
    // Every segment is dated by when its pictures arrived: in the last minute, each
    // after the one before by that one's duration.
    assert_eq!(
        playlist.dates().len(),
        playlist.segments.len(),
        "{}",
        media.text()
    );
    let now = std::time::SystemTime::now();
    for date in &playlist.dates() {
        let age = now.duration_since(*date).expect("a date in the past");
        assert!(age < Duration::from_secs(60), "{age:?}");
    }
    if playlist.discontinuities() == 0 {
        for (k, pair) in playlist.dates().windows(2).enumerate() {
            let step = pair[1].duration_since(pair[0]).unwrap().as_secs_f64();
            let duration = playlist.segments[k].duration;
            assert!(
                (step - duration).abs() < 0.3,
                "{step} s between dates, EXTINF {duration}"
            );
        }
    }
    for Segment {
        duration, uri, map, ..
    } in &playlist.segments
    {
        assert!(
            duration.round() as u64 <= playlist.target_duration as u64,
            "{duration} for {uri}"
        );
        let segment = fetch(gateway, &format!("/streams/{name}/{uri}"));
        assert_eq!(segment.status, 200, "{uri}");
        assert!(segment.header("cache-control").contains("max-age="));
        // An fMP4 segment plays after its initialisation section.
        let mut body = Vec::new();
        match map {
            Some(map) => {
                assert_eq!(segment.header("content-type"), "video/iso.segment");
                let init = fetch(gateway, &format!("/streams/{name}/{map}"));
                assert_eq!(init.status, 200, "{map}");
                assert_eq!(init.header("content-type"), "video/mp4");
                body.extend(init.body);
            }
            None => assert_eq!(segment.header("content-type"), "video/mp2t"),
        }
        body.extend(&segment.body);
        let path = gateway.dir.path().join(uri);
        std::fs::write(&path, &body).unwrap();
        let codecs = ffprobe(&path, &["-show_entries", "stream=codec_name"]);
        assert_eq!(codecs.contains("codec_name=h264"), video, "{uri}: {codecs}");
        assert_eq!(codecs.contains("codec_name=aac"), audio, "{uri}: {codecs}");
        if video {
            let first = ffprobe(
                &path,
                &[
                    "-select_streams",
                    "v",
                    "-show_frames",
                    "-read_intervals",
                    "%+#1",
                ],
            );
            assert!(first.contains("key_frame=1"), "{uri} starts with {first}");
        }
    }
    playlist
}

/// Waits for the media playlist to list at least `count` segments.
fn wait_segments(gateway: &TestGateway, name: &str, count: usize) -> Playlist {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let media = fetch(gateway, &format!("/streams/{name}/stream.m3u8"));
        if media.status == 200 {
            let playlist = Playlist::parse(&media.text());
            if playlist.segments.len() >= count {
                return playlist;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no {count} segments:\n{}",
            gateway.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn live_hls_follows_the_rules_ends_and_continues() {
    let gateway = TestGateway::start("[hls]\nplaylist_length = 3");
    let mut publisher = Publisher::start(&gateway, "cam1", &["--duration-s", "20"]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    let live = Instant::now();
    let stream = gateway.stream("cam1").unwrap();
    assert_eq!(stream["outputs"]["hls"], "/streams/cam1/index.m3u8");

    // The first playlist, a segment duration after the first key frame.
    // Media sequence numbers start from the clock: this one's first.
    let start_msn = wait_segments(&gateway, "cam1", 1).media_sequence;
    let first = live.elapsed();
    eprintln!("first HLS playlist {} ms after live", first.as_millis());
    assert!(first < Duration::from_millis(3500), "{first:?}");

    let multivariant = fetch(&gateway, "/streams/cam1/index.m3u8");
    assert_eq!(multivariant.status, 200);
    assert_eq!(
        multivariant.header("content-type"),
        "application/vnd.apple.mpegurl"
    );
    assert_eq!(multivariant.header("access-control-allow-origin"), "*");
    let text = multivariant.text();
    let sdp = gateway.get("/streams/cam1/stream.sdp").text().unwrap();
    let profile = sdp
        .split("profile-level-id=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    assert!(text.starts_with("#EXTM3U\n"), "{text}");
    assert!(text.contains("RESOLUTION=320x180"), "{text}");
    assert!(text.contains("BANDWIDTH="), "{text}");
    assert!(text.contains(",CLOSED-CAPTIONS=NONE"), "{text}");
    assert!(
        text.contains(&format!("CODECS=\"avc1.{profile},mp4a.40.2\"")),
        "{text} vs {profile}"
    );
    assert!(text.trim_end().ends_with("stream.m3u8"), "{text}");

    // The window slides: three segments. A segment that left it is still served for a
    // grace (a player may have the last playlist that listed it), then deleted.
    let playlist = wait_segments(&gateway, "cam1", 3);
    let first_uri = playlist.segments[0].uri.clone();
    let first_msn = playlist.media_sequence;
    let deadline = Instant::now() + Duration::from_secs(15);
    while Playlist::parse(&fetch(&gateway, "/streams/cam1/stream.m3u8").text()).media_sequence
        == first_msn
    {
        assert!(Instant::now() < deadline, "the window did not slide");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        fetch(&gateway, &format!("/streams/cam1/{first_uri}")).status,
        200,
        "{first_uri} just left the window"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let slid = loop {
        let playlist = check_media(&gateway, "cam1", true, true);
        if playlist.media_sequence >= start_msn + 2 {
            break playlist;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(slid.segments.len(), 3);
    assert!(!slid.ended);
    let deadline = Instant::now() + Duration::from_secs(30);
    while fetch(&gateway, &format!("/streams/cam1/{first_uri}")).status != 404 {
        assert!(Instant::now() < deadline, "{first_uri} was never deleted");
        std::thread::sleep(Duration::from_millis(500));
    }

    // The whole playlist decodes.
    let (ok, frames, errors) = decode_playlist(&gateway.url("/streams/cam1/stream.m3u8"), None);
    assert!(ok, "{errors}");
    assert!(frames >= 150, "{frames} video frames from 3 segments");

    // The publisher leaves: ENDLIST within 2 s, and the playlist stays.
    publisher.wait_for("ended", Duration::from_secs(15));
    let ended = Instant::now();
    let playlist = loop {
        let playlist = Playlist::parse(&fetch(&gateway, "/streams/cam1/stream.m3u8").text());
        if playlist.ended || ended.elapsed() > Duration::from_secs(3) {
            break playlist;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(playlist.ended, "no ENDLIST");
    assert!(ended.elapsed() < Duration::from_secs(2));
    assert_eq!(gateway.stream("cam1").unwrap()["state"], "ended");

    // Back under the same name: the playlist goes on after a discontinuity, with a new
    // initialisation section in the fMP4 variants.
    let before = playlist.media_sequence + playlist.segments.len() as u64;
    let first_map = playlist.segments.last().and_then(|s| s.map.clone());
    let mut again = Publisher::start(&gateway, "cam1", &[]);
    again.wait_for("live", LIVE_TIMEOUT);
    let deadline = Instant::now() + Duration::from_secs(20);
    let resumed = loop {
        let playlist = check_media(&gateway, "cam1", true, true);
        let next = playlist.media_sequence + playlist.segments.len() as u64;
        if playlist.discontinuities() == 1 && !playlist.ended && next > before {
            break playlist;
        }
        assert!(Instant::now() < deadline, "{playlist:?}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let new_map = resumed.segments.last().and_then(|s| s.map.clone());
    assert!(
        first_map.is_none() || new_map != first_map,
        "{first_map:?} then {new_map:?}"
    );
}

/// fMP4 segments without parts, and MPEG-TS segments: valid playlists, segments on key
/// frames that decode with their audio, ENDLIST when the publisher leaves.
#[test]
fn the_fmp4_and_mpegts_variants_stay_available() {
    for (variant, extension) in [("fmp4", ".m4s"), ("mpegts", ".ts")] {
        // Twelve segments: the whole publication stays in the window.
        let gateway = TestGateway::start(&format!(
            "[hls]\nvariant = \"{variant}\"\nplaylist_length = 12"
        ));
        let mut publisher = Publisher::start(&gateway, "v", &["--duration-s", "9"]);
        publisher.wait_for("live", LIVE_TIMEOUT);
        wait_segments(&gateway, "v", 2);
        let playlist = check_media(&gateway, "v", true, true);
        let text = fetch(&gateway, "/streams/v/stream.m3u8").text();
        assert!(!text.contains("#EXT-X-PART"), "{variant}: {text}");
        assert!(!text.contains("CAN-BLOCK-RELOAD"), "{variant}: {text}");
        assert!(
            playlist
                .segments
                .iter()
                .all(|segment| segment.uri.ends_with(extension)),
            "{variant}: {text}"
        );
        let multivariant = fetch(&gateway, "/streams/v/index.m3u8").text();
        assert!(multivariant.contains("CODECS=\"avc1."), "{multivariant}");
        publisher.wait_for("ended", Duration::from_secs(20));
        let ended = common::eventually(Duration::from_secs(5), || {
            let playlist = Playlist::parse(&fetch(&gateway, "/streams/v/stream.m3u8").text());
            playlist.ended.then_some(playlist)
        });
        assert!(ended.is_some(), "{variant}: no ENDLIST");
        let (ok, frames, errors) = decode_playlist(&gateway.url("/streams/v/stream.m3u8"), None);
        assert!(ok && frames >= 150, "{variant}: {frames} frames: {errors}");
    }
}

#[test]
fn audio_only_and_video_only_streams_get_valid_hls() {
    let gateway = TestGateway::start("");
    let mut audio = Publisher::start(&gateway, "radio", &["--no-video"]);
    let mut video = Publisher::start(&gateway, "silent", &["--no-audio"]);
    audio.wait_for("live", LIVE_TIMEOUT);
    video.wait_for("live", LIVE_TIMEOUT);
    wait_segments(&gateway, "radio", 2);
    wait_segments(&gateway, "silent", 2);
    let radio = fetch(&gateway, "/streams/radio/index.m3u8").text();
    assert!(radio.contains("CODECS=\"mp4a.40.2\""), "{radio}");
    assert!(!radio.contains("RESOLUTION"), "{radio}");
    let silent = fetch(&gateway, "/streams/silent/index.m3u8").text();
    assert!(silent.contains("CODECS=\"avc1."), "{silent}");
    assert!(!silent.contains("mp4a"), "{silent}");
    check_media(&gateway, "radio", false, true);
    check_media(&gateway, "silent", true, false);
}

#[test]
fn hls_paths_are_checked_and_can_be_turned_off() {
    let gateway = TestGateway::start("[hls]\nenabled = false");
    let mut publisher = Publisher::start(&gateway, "nohls", &[]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    assert!(gateway.stream("nohls").unwrap()["outputs"]["hls"].is_null());
    assert_eq!(fetch(&gateway, "/streams/nohls/index.m3u8").status, 404);
    for path in [
        "/streams/nohls/..%2F..%2Fetc%2Fpasswd",
        "/streams/nohls/stream.mp4",
        "/streams/nobody/index.m3u8",
        "/streams/bad%20name/index.m3u8",
    ] {
        let status = fetch(&gateway, path).status;
        assert!(status == 404 || status == 400, "{path}: {status}");
    }
}

#[test]
fn the_dashboard_gets_hls_js() {
    // Installed by `make test` and `make run` from the npm registry: browsers without
    // native HLS (Firefox, Chromium on Linux before native support) play through it.
    let gateway = TestGateway::start("");
    let script = fetch(&gateway, "/hls.js");
    assert_eq!(script.status, 200, "{}", script.text());
    assert_eq!(script.header("content-type"), "text/javascript");
    assert!(script.body.len() > 100_000, "{} bytes", script.body.len());
    assert!(script.text().contains("Hls"), "not hls.js");
}
