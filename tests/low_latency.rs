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
    // Two-second segments (a late key frame on a busy machine may make one longer,
    // which raises the target) of 0.2 s parts.
    assert!((2.0..=3.0).contains(&playlist.target_duration), "{text}");
    assert!((playlist.part_target - 0.2).abs() < 1e-6, "{text}");
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
    assert!(hold_back >= 3.0 * playlist.part_target - 1e-9, "{text}");
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
    // them; each has its audio (a 0.2 s part: 6 pictures at 30 fps, 9 or 10 AAC frames;
    // a segment's last part may be shorter).
    let last = with_parts.last().unwrap();
    let map = last.map.clone().unwrap();
    let mut before: Vec<u8> = Vec::new();
    let mut decoded = 0;
    for part in &last.parts {
        let body = fetch(&gateway, &format!("/streams/ll/{}", part.uri)).body;
        let (alone, audio) = frames(&gateway, "ll", &map, &body);
        // At least most of what its duration holds (48 kHz AAC: 1,024 samples a frame).
        let want_audio = (part.duration * 48_000.0 / 1024.0 * 0.7).floor() as usize;
        let want_video = (part.duration * 30.0 * 0.7).floor() as usize;
        assert!(audio >= want_audio.max(1), "{part:?}: {audio} audio frames");
        if part.independent {
            assert!(
                alone.len() >= want_video.max(1),
                "{part:?}: {} video frames",
                alone.len()
            );
            assert!(
                alone[0],
                "{part:?} is INDEPENDENT but starts on a delta frame"
            );
        }
        before.extend(body);
        let (video, _) = frames(&gateway, "ll", &map, &before);
        assert!(
            video.len() >= decoded + want_video.max(1),
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
    wait_segments(&gateway, "block", 8);

    // Bad directives: 400 with the API's error body. (The open segment is read again
    // for each: one-second segments go on meanwhile.)
    let open_now = || {
        let now = Playlist::parse(&media(&gateway, "block", "").1);
        now.media_sequence + now.segments.len() as u64
    };
    for query in [
        "?_HLS_part=1".to_string(),
        format!("?_HLS_msn={}", open_now() + 3),
        "?_HLS_msn=next".to_string(),
        format!("?_HLS_msn={}&_HLS_part=99", open_now() + 1),
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

/// A response read off the socket as it comes: its status, and each piece of its chunked
/// body with when it arrived.
struct Pieces {
    status: u16,
    chunked: bool,
    pieces: Vec<(Instant, Vec<u8>)>,
    /// The body ended with its last chunk.
    complete: bool,
}

/// `GET path` on a connection of its own, read chunk by chunk; `on_first` runs when the
/// first piece of the body is in.
fn get_in_pieces(gateway: &TestGateway, path: &str, mut on_first: impl FnMut()) -> Pieces {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    write!(
        socket,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(socket);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut chunked = false;
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        chunked |= line
            .trim_end()
            .eq_ignore_ascii_case("transfer-encoding: chunked");
    }
    let mut result = Pieces {
        status,
        chunked,
        pieces: Vec::new(),
        complete: false,
    };
    if !chunked {
        let mut body = Vec::new();
        if reader.read_to_end(&mut body).is_ok() {
            result.pieces.push((Instant::now(), body));
            result.complete = true;
        }
        return result;
    }
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return result;
        }
        let Ok(size) = usize::from_str_radix(line.trim(), 16) else {
            return result;
        };
        if size == 0 {
            result.complete = true;
            return result;
        }
        let mut piece = vec![0; size + 2];
        if reader.read_exact(&mut piece).is_err() {
            return result;
        }
        piece.truncate(size);
        result.pieces.push((Instant::now(), piece));
        if result.pieces.len() == 1 {
            on_first();
        }
    }
}

/// The part the playlist hints at is sent as the muxer writes it: its first bytes
/// arrive while it is still being made (the playlist still hints at it, not lists it),
/// in several pieces, and the whole is the part as listed afterwards.
#[test]
fn the_hinted_part_is_sent_while_it_is_made() {
    let gateway = TestGateway::start("");
    let mut publisher = Publisher::start(&gateway, "grow", &[]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    wait_segments(&gateway, "grow", 2);
    // A busy machine may read a part's first bytes only once the part is complete: a
    // few parts are tried, and one must show it.
    let mut seen = Vec::new();
    for _ in 0..10 {
        let hint = Playlist::parse(&media(&gateway, "grow", "").1)
            .hint
            .expect("a preload hint");
        let mut still_hinted = None;
        let asked = Instant::now();
        let streamed = get_in_pieces(&gateway, &format!("/streams/grow/{hint}"), || {
            let now = media(&gateway, "grow", "").1;
            still_hinted = Some(now.contains(&format!("PRELOAD-HINT:TYPE=PART,URI=\"{hint}\"")));
        });
        assert_eq!(streamed.status, 200, "{hint}");
        assert!(
            streamed.complete,
            "{hint}: the body did not end with its last chunk"
        );
        let body: Vec<u8> = streamed
            .pieces
            .iter()
            .flat_map(|(_, p)| p.clone())
            .collect();
        let listed = fetch(&gateway, &format!("/streams/grow/{hint}"));
        assert_eq!(listed.status, 200, "{hint}");
        assert!(
            body == listed.body,
            "{hint}: the streamed part is not the part"
        );
        let (first, last) = match (streamed.pieces.first(), streamed.pieces.last()) {
            (Some(first), Some(last)) => (first.0, last.0),
            _ => panic!("{hint}: an empty body"),
        };
        seen.push(format!(
            "{hint}: chunked {}, {} pieces, first after {:?}, last {:?} later, still hinted \
             at the first: {still_hinted:?}",
            streamed.chunked,
            streamed.pieces.len(),
            first.duration_since(asked),
            last.duration_since(first),
        ));
        if streamed.chunked && streamed.pieces.len() >= 2 && still_hinted == Some(true) {
            println!("{}", seen.join("\n"));
            return;
        }
    }
    panic!(
        "no hinted part came in pieces before it was complete:\n{}",
        seen.join("\n")
    );
}

/// hls.js with its defaults (`lowLatencyMode` only, no catch-up rate: as most pages
/// that embed it) plays the default low-latency HLS: a first picture (the time to it is
/// printed), and time that goes on.
#[test]
fn hls_js_with_its_defaults_starts_and_plays_chromium() {
    use common::browser::{Browser, BrowserKind};
    use serde_json::json;
    let gateway = TestGateway::start("");
    let mut publisher = Publisher::start(&gateway, "defaults", &[]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    // A viewer joins a running stream.
    wait_segments(&gateway, "defaults", 3);
    let page = tempfile::tempdir().unwrap();
    let hls_js = common::root_path("node_modules/hls.js/dist/hls.min.js");
    std::fs::copy(&hls_js, page.path().join("hls.js"))
        .unwrap_or_else(|e| panic!("{}: {e} (make test-deps installs it)", hls_js.display()));
    let source = gateway.url("/streams/defaults/index.m3u8");
    std::fs::write(
        page.path().join("index.html"),
        format!(
            r#"<!doctype html><video id="v" muted autoplay playsinline></video>
<script src="hls.js"></script>
<script>
const opened = performance.now();
window.firstPicture = null;
window.errors = [];
const video = document.getElementById("v");
const hls = new Hls({{ lowLatencyMode: true }});
window.hls = hls;
hls.on(Hls.Events.ERROR, (_, data) => {{ window.errors.push(data.details); }});
hls.loadSource("{source}");
hls.attachMedia(video);
video.play().catch(() => {{}});
video.requestVideoFrameCallback(() => {{ window.firstPicture = performance.now() - opened; }});
</script>"#
        ),
    )
    .unwrap();
    let port = common::free_tcp_port();
    let directory = page.path().to_path_buf();
    let mut server = webrtc_gateway_testkit::Process::new("http.server", move || {
        let mut command = std::process::Command::new("python3");
        command
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(&directory);
        command
    })
    .spawn()
    .unwrap_or_else(|e| panic!("{e}"));
    let _ = server.wait_port(port, Duration::from_secs(10));
    let mut browser = Browser::start(BrowserKind::Chromium);
    browser.open(&format!("http://127.0.0.1:{port}/index.html"));
    let shown = "window.firstPicture !== null";
    let started = browser.wait_for(shown, &json!(true), Duration::from_secs(20));
    let first_picture = browser.eval("window.firstPicture");
    assert_eq!(
        started,
        json!(true),
        "hls.js showed no picture; its errors: {}",
        browser.eval("window.errors")
    );
    let time = "document.getElementById('v').currentTime";
    let first = browser.eval(time).as_f64().unwrap_or(0.0);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut later = first;
    while later < first + 2.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        later = browser.eval(time).as_f64().unwrap_or(0.0);
    }
    let latency = browser.eval("window.hls.latency");
    println!(
        "hls.js with its defaults: first picture {first_picture} ms after the page opened; \
         its own latency figure {latency} s; errors {}",
        browser.eval("window.errors")
    );
    assert!(
        later >= first + 2.0,
        "currentTime went from {first} to {later}; errors {}",
        browser.eval("window.errors")
    );
}
