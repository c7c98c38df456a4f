//! Low-Latency HLS, the default variant, read against draft-pantos-hls-rfc8216bis and
//! Apple's HLS authoring rules: the playlist's tags, parts that decode and make up their
//! segment, independent parts on key frames, the preload hint, blocking reloads (400,
//! 503, ignored once ended) and delta updates.

mod common;

use common::fetch::{decode_playlist, fetch, ffprobe};
use common::players::{h264_frames, unprivileged};
use common::{Publisher, TestGateway};
use std::time::{Duration, Instant};
use webrtc_gateway_testkit::playlist::{Playlist, Segment, attribute};

const LIVE_TIMEOUT: Duration = Duration::from_secs(20);

fn media(gateway: &TestGateway, name: &str, query: &str) -> (u16, String) {
    let response = fetch(gateway, &format!("/streams/{name}/stream.m3u8{query}"));
    (response.status, response.text())
}

/// Waits for the playlist to list `count` complete segments.
fn wait_segments(gateway: &TestGateway, name: &str, count: usize) -> Playlist {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (status, text) = media(gateway, name, "");
        if status == 200 && Playlist::parse(&text).segments.len() >= count {
            return Playlist::parse(&text);
        }
        assert!(Instant::now() < deadline, "no {count} segments: {text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The frames ffprobe finds in an initialisation section followed by `body`: the
/// video frames' key-frame flags, and the number of audio frames.
fn frames(gateway: &TestGateway, name: &str, map: &str, body: &[u8]) -> (Vec<bool>, usize) {
    let init = fetch(gateway, &format!("/streams/{name}/{map}"));
    assert_eq!(init.status, 200, "{map}");
    let path = gateway.dir.path().join(format!("probe-{map}"));
    std::fs::write(&path, [init.body.as_slice(), body].concat()).unwrap();
    let probe = ffprobe(
        &path,
        &[
            "-show_entries",
            "frame=media_type,key_frame",
            "-show_frames",
        ],
    );
    let video = probe
        .lines()
        .filter(|l| l.contains("media_type=video"))
        .map(|l| l.contains("key_frame=1"))
        .collect();
    let audio = probe
        .lines()
        .filter(|l| l.contains("media_type=audio"))
        .count();
    (video, audio)
}

#[test]
fn low_latency_playlists_follow_the_rules_and_their_parts_decode() {
    let gateway = TestGateway::start("");
    let mut publisher = Publisher::start(&gateway, "ll", &[]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    let playlist = wait_segments(&gateway, "ll", 3);
    let text = media(&gateway, "ll", "").1;

    // The tags Apple's rules ask of a low-latency playlist.
    assert!(playlist.version >= 6, "{text}");
    assert_eq!(playlist.target_duration, 2.0, "{text}");
    assert!((playlist.part_target - 0.5).abs() < 1e-6, "{text}");
    let control = &playlist.server_control;
    assert_eq!(
        attribute(control, "CAN-BLOCK-RELOAD"),
        Some("YES"),
        "{text}"
    );
    let hold_back: f64 = attribute(control, "PART-HOLD-BACK")
        .unwrap()
        .parse()
        .unwrap();
    assert!(hold_back >= 3.0 * playlist.part_target, "{text}");
    let skip_until: f64 = attribute(control, "CAN-SKIP-UNTIL")
        .unwrap()
        .parse()
        .unwrap();
    assert!(skip_until >= 6.0 * playlist.target_duration, "{text}");
    assert!(text.contains("#EXT-X-INDEPENDENT-SEGMENTS") || text.contains("INDEPENDENT=YES"));
    assert!(playlist.hint.is_some(), "a preload hint:\n{text}");

    // Every segment is dated and has its initialisation section; the parts listed make
    // up their segment, each within the part target, the first on a key frame.
    let with_parts: Vec<&Segment> = playlist
        .segments
        .iter()
        .filter(|s| !s.parts.is_empty())
        .collect();
    assert!(!with_parts.is_empty(), "{text}");
    for segment in playlist.segments.iter().chain([&playlist.open]) {
        assert!(
            segment.dated(),
            "{segment:?} has no PROGRAM-DATE-TIME\n{text}"
        );
        assert!(segment.map.is_some(), "{segment:?} has no EXT-X-MAP");
        if segment.uri.is_empty() {
            continue;
        }
        assert!(
            segment.duration <= playlist.target_duration + 0.5,
            "{segment:?}"
        );
    }
    for segment in with_parts.iter().copied().chain([&playlist.open]) {
        if let Some(first) = segment.parts.first() {
            assert!(first.independent, "{segment:?} does not start independent");
        }
        for part in &segment.parts {
            assert!(
                part.duration <= playlist.part_target + 1e-3,
                "{part:?} longer than PART-TARGET {}\n{text}",
                playlist.part_target
            );
        }
    }
    for segment in &with_parts {
        let sum: f64 = segment.parts.iter().map(|p| p.duration).sum();
        assert!((sum - segment.duration).abs() < 0.05, "{segment:?}");
        let file = fetch(&gateway, &format!("/streams/ll/{}", segment.uri));
        assert_eq!(file.status, 200);
        let mut joined = Vec::new();
        for part in &segment.parts {
            let fetched = fetch(&gateway, &format!("/streams/ll/{}", part.uri));
            assert_eq!(fetched.status, 200, "{part:?}");
            assert_eq!(fetched.header("content-type"), "video/iso.segment");
            joined.extend(fetched.body);
        }
        assert!(joined == file.body, "{} is not its parts", segment.uri);
    }

    // Each part of the last complete segment decodes after the init section: an
    // independent part on its own from a key frame, the others after the parts before
    // them; each has its audio.
    let last = with_parts.last().unwrap();
    let map = last.map.clone().unwrap();
    let mut before: Vec<u8> = Vec::new();
    let mut decoded = 0;
    for part in &last.parts {
        let body = fetch(&gateway, &format!("/streams/ll/{}", part.uri)).body;
        let (alone, audio) = frames(&gateway, "ll", &map, &body);
        assert!(audio >= 10, "{part:?}: {audio} audio frames");
        if part.independent {
            assert!(alone.len() >= 10, "{part:?}: {} video frames", alone.len());
            assert!(
                alone[0],
                "{part:?} is INDEPENDENT but starts on a delta frame"
            );
        }
        before.extend(body);
        let (video, _) = frames(&gateway, "ll", &map, &before);
        assert!(
            video.len() >= decoded + 10,
            "{part:?} adds {} frames",
            video.len() - decoded
        );
        decoded = video.len();
    }

    // The hinted part is answered when it lands, and then listed. The hint is read
    // afresh: the parts read above may have left the playlist meanwhile.
    let hint = Playlist::parse(&media(&gateway, "ll", "").1)
        .hint
        .expect("a preload hint");
    let hinted = fetch(&gateway, &format!("/streams/ll/{hint}"));
    assert_eq!(hinted.status, 200, "{hint}");
    assert!(!hinted.body.is_empty());
    let now = media(&gateway, "ll", "").1;
    assert!(
        now.contains(&format!("URI=\"{hint}\""))
            && !now.contains(&format!("PRELOAD-HINT:TYPE=PART,URI=\"{hint}\"")),
        "{now}"
    );

    // ffmpeg decodes the playlist.
    let (ok, frames, errors) = decode_playlist(&gateway.url("/streams/ll/stream.m3u8"), Some(4));
    assert!(ok, "{errors}");
    assert!(frames >= 90, "{frames} frames");
}

#[test]
fn blocking_reloads_answer_as_the_spec_says() {
    // One-second segments of quarter-second parts: three target durations are 3 s, and
    // twelve segments make a playlist long enough for delta updates (6 s).
    let gateway = TestGateway::start(
        "[hls]\nsegment_duration_s = 1\npart_duration_ms = 250\nplaylist_length = 12\n\
         [transcode]\nkeyframe_interval_s = 1",
    );
    let mut publisher = Publisher::start(&gateway, "block", &["--duration-s", "20"]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    let playlist = wait_segments(&gateway, "block", 8);
    let open = playlist.media_sequence + playlist.segments.len() as u64;

    // Bad directives: 400 with the API's error body.
    for query in [
        "?_HLS_part=1".to_string(),
        format!("?_HLS_msn={}", open + 3),
        "?_HLS_msn=next".to_string(),
        format!("?_HLS_msn={}&_HLS_part=99", open + 1),
    ] {
        let (status, body) = media(&gateway, "block", &query);
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains("bad-delivery-directive"), "{query}: {body}");
    }

    // A request for the next part is held until the part is there.
    let now = Playlist::parse(&media(&gateway, "block", "").1);
    let msn = now.media_sequence + now.segments.len() as u64;
    let part = now.open.parts.len() as u64;
    let hint = now.hint.clone().unwrap();
    let (status, text) = media(
        &gateway,
        "block",
        &format!("?_HLS_msn={msn}&_HLS_part={part}"),
    );
    assert_eq!(status, 200, "{text}");
    let answered = Playlist::parse(&text);
    let listed = answered
        .segments
        .iter()
        .chain([&answered.open])
        .flat_map(|s| &s.parts)
        .any(|p| p.uri == hint);
    assert!(listed, "the answer lacks {hint}:\n{text}");

    // A whole segment: held until the segment after the open one is complete.
    let (status, text) = media(&gateway, "block", &format!("?_HLS_msn={}", msn + 1));
    assert_eq!(status, 200, "{text}");
    let answered = Playlist::parse(&text);
    assert!(
        answered.media_sequence + answered.segments.len() as u64 > msn + 1,
        "{text}"
    );

    // A delta update skips what is older than CAN-SKIP-UNTIL and lists the rest.
    // (Asked together with the whole playlist until both see the same window.)
    let (delta, answered) = common::eventually(Duration::from_secs(10), || {
        let (status, delta) = media(&gateway, "block", "?_HLS_msn=0&_HLS_skip=YES");
        assert_eq!(status, 200, "{delta}");
        let whole = Playlist::parse(&media(&gateway, "block", "").1);
        let delta = Playlist::parse(&delta);
        (delta.media_sequence == whole.media_sequence
            && delta.segments.last().map(|s| &s.uri) == whole.segments.last().map(|s| &s.uri))
        .then_some((delta, whole))
    })
    .expect("a delta update and a playlist of the same window");
    assert!(delta.skipped > 0, "{delta:?}");
    assert_eq!(delta.media_sequence, answered.media_sequence);
    assert!(delta.segments.len() < answered.segments.len());
    assert_eq!(
        delta.skipped as usize + delta.segments.len(),
        answered.segments.len()
    );

    // A publisher that stops sending: the held request ends in 503 after three target
    // durations.
    publisher.signal("-STOP");
    let now = Playlist::parse(&media(&gateway, "block", "").1);
    let ahead = now.media_sequence + now.segments.len() as u64 + 2;
    let asked = Instant::now();
    let (status, body) = media(&gateway, "block", &format!("?_HLS_msn={ahead}"));
    let waited = asked.elapsed();
    publisher.signal("-CONT");
    assert_eq!(status, 503, "{body}");
    assert!(
        waited >= Duration::from_millis(2500),
        "answered after {waited:?}"
    );

    // Once ended, the directives are ignored: the last playlist, with ENDLIST, at once.
    publisher.wait_for("ended", Duration::from_secs(30));
    let ended = eventually_ended(&gateway);
    let (status, text) = media(
        &gateway,
        "block",
        &format!("?_HLS_msn={}&_HLS_part=0", ended + 2),
    );
    assert_eq!(status, 200, "{text}");
    assert!(Playlist::parse(&text).ended, "{text}");
}

/// Waits for the playlist's ENDLIST; returns the number after its last segment.
fn eventually_ended(gateway: &TestGateway) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let playlist = Playlist::parse(&media(gateway, "block", "").1);
        if playlist.ended {
            assert!(playlist.hint.is_none() && playlist.open.parts.is_empty());
            return playlist.media_sequence + playlist.segments.len() as u64;
        }
        assert!(Instant::now() < deadline, "no ENDLIST");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// VLC and ffplay play the low-latency playlist: VLC's recording of what it received
/// decodes, and ffplay shows pictures and plays sound until its time is up.
#[test]
fn vlc_and_ffplay_play_low_latency_hls() {
    let gateway = TestGateway::start("");
    let mut publisher = Publisher::start(&gateway, "players", &[]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    wait_segments(&gateway, "players", 2);
    let url = gateway.url("/streams/players/index.m3u8");

    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let recorded = dir.path().join("vlc.ts");
    let vlc = unprivileged("cvlc")
        .env("HOME", dir.path())
        .args([
            "--intf",
            "dummy",
            &url,
            "--run-time=8",
            "--play-and-exit",
            "--sout",
        ])
        .arg(format!(
            "#std{{access=file,mux=ts,dst={}}}",
            recorded.display()
        ))
        .output()
        .unwrap();
    let vlc_log = String::from_utf8_lossy(&vlc.stderr);
    let probe = ffprobe(
        &recorded,
        &[
            "-count_frames",
            "-show_entries",
            "stream=codec_name,nb_read_frames",
        ],
    );
    assert!(probe.contains("codec_name=aac"), "{probe}\n{vlc_log}");
    let frames = h264_frames(&probe);
    assert!(
        frames >= 60,
        "VLC received {frames} frames:\n{probe}\n{vlc_log}"
    );

    // ffplay on SDL's dummy drivers (software rendering), stopped after 12 s: its status
    // line shows the clock advancing while it has pictures queued, audio and video in
    // step.
    let ffplay = std::process::Command::new("timeout")
        .args(["-s", "INT", "12", "ffplay"])
        .env("SDL_VIDEODRIVER", "dummy")
        .env("SDL_AUDIODRIVER", "dummy")
        .env("SDL_RENDER_DRIVER", "software")
        .args(["-hide_banner", "-loglevel", "warning", "-stats", &url])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&ffplay.stderr);
    let tail = &log[log.len().saturating_sub(3000)..];
    // "  18.25 A-V: -0.027 fd=   0 aq=   15KB vq=   45KB ...": the clock, audio minus
    // video, and the queues.
    let clocks: Vec<(f64, f64)> = log
        .split(['\r', '\n'])
        .filter(|line| line.contains("vq=") && !line.contains("vq=    0KB"))
        .filter_map(|line| {
            let (clock, rest) = line.trim().split_once(" A-V:")?;
            let av = rest.split_whitespace().next()?;
            Some((clock.trim().parse().ok()?, av.parse().ok()?))
        })
        .filter(|(clock, av): &(f64, f64)| clock.is_finite() && av.is_finite())
        .collect();
    let played = clocks.iter().map(|c| c.0).fold(f64::NAN, f64::max)
        - clocks.iter().map(|c| c.0).fold(f64::NAN, f64::min);
    assert!(played >= 4.0, "ffplay played {played:.2} s:\n{tail}");
    let in_step = clocks.iter().filter(|(_, av)| av.abs() < 0.1).count();
    assert!(in_step * 2 > clocks.len(), "audio and video apart:\n{tail}");
}

/// With TLS on, players get HTTP/2 (Apple asks it of Low-Latency HLS) from the same
/// server that serves the playlists; the certificate is the gateway's self-signed one.
#[test]
fn with_tls_the_gateway_speaks_http2() {
    let gateway = TestGateway::start("[http]\ntls_self_signed = true");
    assert_eq!(gateway.scheme, "https");
    let client = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    for (path, want) in [
        ("/", 200),
        ("/api/streams", 200),
        ("/streams/nobody/stream.m3u8?_HLS_msn=1&_HLS_part=0", 404),
    ] {
        let response = client.get(gateway.url(path)).send().unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2, "{path}");
        assert_eq!(response.status().as_u16(), want, "{path}");
    }
}
