//! H.264 pass-through (`transcode.mode = "auto"`): a publisher's H.264 reaches every output
//! as it came, never decoded or encoded. The test publisher makes key frames only when
//! the gateway asks (as browsers do), so segments that start on key frames show that the
//! gateway asked at each boundary. The gateway's own size (320x180) differs from the
//! publisher's (640x360), so each output's size shows which path it took.

mod common;

use common::fetch::{fetch, ffprobe};
use common::{Decoded, Publisher, TestGateway, aiortc_whip, decode_sdp, eventually};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use webrtc_gateway_testkit::playlist::{Playlist, Segment};

const LIVE_TIMEOUT: Duration = Duration::from_secs(20);
const H264_ON_REQUEST: &[&str] = &["--codec", "h264", "--keyframes-on-request"];

/// The media playlist of `name`, or an empty one while it has none.
fn media(gateway: &TestGateway, name: &str) -> Playlist {
    let response = fetch(gateway, &format!("/streams/{name}/stream.m3u8"));
    if response.status != 200 {
        return Playlist::default();
    }
    Playlist::parse(&response.text())
}

/// Waits (with a deadline) until the media playlist satisfies `done`.
fn wait_playlist(
    gateway: &TestGateway,
    name: &str,
    what: &str,
    done: impl Fn(&Playlist) -> bool,
) -> Playlist {
    eventually(Duration::from_secs(40), || {
        let playlist = media(gateway, name);
        done(&playlist).then_some(playlist)
    })
    .unwrap_or_else(|| panic!("{what}: {:?}\n{}", media(gateway, name), gateway.log()))
}

/// The video frames of a segment (with its initialisation section, if any): their
/// key-frame flags and the picture width.
fn segment_frames(gateway: &TestGateway, name: &str, segment: &Segment) -> (Vec<bool>, String) {
    let mut bytes = Vec::new();
    if let Some(map) = &segment.map {
        let init = fetch(gateway, &format!("/streams/{name}/{map}"));
        assert_eq!(init.status, 200, "{map}");
        bytes.extend(init.body);
    }
    let body = fetch(gateway, &format!("/streams/{name}/{}", segment.uri));
    assert_eq!(body.status, 200, "{}", segment.uri);
    bytes.extend(body.body);
    let path = gateway.dir.path().join(format!("probe-{}", segment.uri));
    std::fs::write(&path, bytes).unwrap();
    let probe = ffprobe(
        &path,
        &[
            "-select_streams",
            "v",
            "-show_entries",
            "frame=key_frame,width",
            "-show_frames",
        ],
    );
    let keys = probe.lines().map(|l| l.contains("key_frame=1")).collect();
    let width = probe
        .lines()
        .next()
        .and_then(|l| l.split("width=").nth(1))
        .map(|w| w.split('|').next().unwrap_or(w).to_string())
        .unwrap_or_default();
    (keys, width)
}

/// Every complete segment starts with a key frame, decodes, and lasts about the target
/// (the publisher's key frame arrives just after each boundary).
fn assert_segments_start_on_key_frames(gateway: &TestGateway, name: &str, playlist: &Playlist) {
    assert!(playlist.segments.len() >= 3, "{playlist:?}");
    for (k, segment) in playlist.segments.iter().enumerate() {
        let (keys, _) = segment_frames(gateway, name, segment);
        assert!(keys.len() >= 10, "{}: {} frames", segment.uri, keys.len());
        assert!(keys[0], "{} does not start with a key frame", segment.uri);
        assert!(
            segment.duration.round() <= playlist.target_duration,
            "{}: {} s past the target {}",
            segment.uri,
            segment.duration,
            playlist.target_duration
        );
        // The first segment starts with the stream; the last may be cut by the end.
        if k > 0 && k + 1 < playlist.segments.len() {
            assert!(
                segment.duration >= 1.5,
                "{}: {} s, a key frame came early",
                segment.uri,
                segment.duration
            );
        }
        if let Some(independent) = segment.first_part_independent() {
            assert!(
                independent,
                "{}: its first part is not independent",
                segment.uri
            );
        }
    }
}

/// ffmpeg decodes the stream's RTP through its SDP file for `window` seconds, until it
/// has decoded `frames` video frames in one go (three tries: a player that joins waits
/// for the publisher's next key frame, and a busy machine may lose one).
fn decode_rtp(gateway: &TestGateway, name: &str, window: f64, frames: usize) -> Decoded {
    let url = gateway.url(&format!("/streams/{name}/stream.sdp"));
    let mut decoded = decode_sdp(&url, window);
    for _ in 0..2 {
        if decoded.video_frames >= frames {
            break;
        }
        eprintln!(
            "ffmpeg decoded {} frames of {name}, trying again:\n{}",
            decoded.video_frames, decoded.stderr
        );
        decoded = decode_sdp(&url, window);
    }
    decoded
}

/// ffprobe's video size, and the duration of each track, of a recording.
fn probe_recording(path: &std::path::Path) -> (String, Vec<f64>) {
    let probe = ffprobe(
        path,
        &["-show_entries", "stream=codec_name,width,height,duration"],
    );
    let size = probe
        .lines()
        .find(|l| l.contains("codec_name=h264"))
        .map(|l| {
            let field = |key: &str| {
                l.split('|')
                    .find_map(|f| f.strip_prefix(key))
                    .unwrap_or("?")
                    .to_string()
            };
            format!("{}x{}", field("width="), field("height="))
        })
        .unwrap_or_default();
    let durations = probe
        .lines()
        .filter_map(|l| l.split("duration=").nth(1)?.parse().ok())
        .collect();
    (size, durations)
}

#[test]
fn h264_passes_through_to_rtp_low_latency_hls_and_the_recording() {
    let gateway = TestGateway::start(
        "[transcode]\nmode = \"auto\"\n[record]\nenabled = true\ndir = \"rec\"\nformat = \"mp4\"",
    );
    let mut publisher = Publisher::start(&gateway, "pass", H264_ON_REQUEST);
    publisher.wait_for("live", LIVE_TIMEOUT);
    let stream = eventually(Duration::from_secs(10), || {
        let stream = gateway.stream("pass")?;
        (stream["video"]["width"] == 640).then_some(stream)
    })
    .unwrap_or_else(|| panic!("{:?}", gateway.stream("pass")));
    assert_eq!(stream["video"]["passthrough"], true);
    assert_eq!(stream["video"]["input_codec"], "H264");
    assert_eq!(stream["video"]["height"], 360);
    assert!(
        gateway
            .log()
            .contains("the publisher's H.264 passes through"),
        "{}",
        gateway.log()
    );

    // RTP: the publisher's pictures, at its size, with Opus untouched.
    let decoded = decode_rtp(&gateway, "pass", 5.0, 60);
    decoded.assert_h264_and_opus(60);
    assert_eq!(decoded.size, Some((640, 360)), "{}", decoded.stderr);
    // The SDP's parameters come from the publisher's SPS (constrained baseline, 0x42).
    let sdp = gateway.get("/streams/pass/stream.sdp").text().unwrap();
    assert!(sdp.contains("profile-level-id=42"), "{sdp}");
    assert!(sdp.contains("sprop-parameter-sets=Z0"), "{sdp}");
    let multivariant = fetch(&gateway, "/streams/pass/index.m3u8").text();
    assert!(multivariant.contains("CODECS=\"avc1.42"), "{multivariant}");
    assert!(
        multivariant.contains("RESOLUTION=640x360"),
        "{multivariant}"
    );

    // Low-latency HLS: segments and their independent parts start on the publisher's
    // key frames, which the gateway asked for at each boundary.
    let playlist = wait_playlist(&gateway, "pass", "four segments", |p| p.segments.len() >= 4);
    assert_segments_start_on_key_frames(&gateway, "pass", &playlist);
    let plis = gateway.stream("pass").unwrap()["stats"]["plis_sent"]
        .as_u64()
        .unwrap();
    assert!(
        plis >= playlist.segments.len() as u64 && plis <= 3 * playlist.segments.len() as u64 + 4,
        "{plis} key-frame requests for {} segments",
        playlist.segments.len()
    );

    // The recording: the publisher's pictures, in sync with the audio, playable.
    publisher.kill();
    gateway.wait_stream_ended("pass", Duration::from_secs(10));
    let listed = gateway.recordings_of("pass");
    assert_eq!(listed.len(), 1, "{listed:?}");
    let file = listed[0]["file"].as_str().unwrap();
    let (size, durations) = probe_recording(&gateway.dir.path().join("rec").join(file));
    assert_eq!(size, "640x360");
    assert_eq!(durations.len(), 2, "{durations:?}");
    assert!(durations.iter().all(|d| *d >= 5.0), "{durations:?}");
    // Its audio is the publisher's Opus: no AAC is made for it.
    let path = gateway.dir.path().join("rec").join(file);
    let audio = ffprobe(
        &path,
        &["-select_streams", "a", "-show_entries", "stream=codec_name"],
    );
    assert!(audio.contains("codec_name=opus"), "{audio}");
    assert!(
        (durations[0] - durations[1]).abs() < 0.2,
        "tracks of different lengths: {durations:?}"
    );
}

#[test]
fn mpegts_hls_passes_through_on_the_publishers_key_frames() {
    let gateway = TestGateway::start("[transcode]\nmode = \"auto\"\n[hls]\nvariant = \"mpegts\"");
    let mut publisher = Publisher::start(&gateway, "ts", H264_ON_REQUEST);
    publisher.wait_for("live", LIVE_TIMEOUT);
    let playlist = wait_playlist(&gateway, "ts", "four segments", |p| p.segments.len() >= 4);
    assert!(playlist.segments.iter().all(|s| s.uri.ends_with(".ts")));
    assert_segments_start_on_key_frames(&gateway, "ts", &playlist);
    for segment in &playlist.segments {
        let (_, width) = segment_frames(&gateway, "ts", segment);
        assert_eq!(width, "640", "{}", segment.uri);
    }
}

/// The widths of the pictures ffmpeg (as in ffplay) decodes from the stream's RTP over
/// `seconds`.
fn rtp_widths(url: String, seconds: u32) -> std::thread::JoinHandle<Vec<u32>> {
    std::thread::spawn(move || {
        let output = Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin"])
            .args(["-protocol_whitelist", "file,http,tcp,udp,rtp", "-i"])
            .arg(url)
            .args(["-t", &seconds.to_string(), "-map", "0:v", "-vf", "showinfo"])
            .args(["-f", "null", "-"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stderr)
            .split(" s:")
            .skip(1)
            .filter_map(|rest| rest.split('x').next()?.parse().ok())
            .collect()
    })
}

/// Adds an RTP destination on the ports of `slot` (which no stream uses) to `stream`;
/// returns the path of its SDP file, readable by every user.
fn destination(gateway: &TestGateway, stream: &str, slot: u16) -> std::path::PathBuf {
    let port = gateway.port_base + 4 * slot;
    let added: Value = reqwest::blocking::Client::new()
        .post(gateway.url(&format!("/api/streams/{stream}/rtp")))
        .body(format!(
            r#"{{"host": "127.0.0.1", "video_port": {port}, "audio_port": {}}}"#,
            port + 2
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let dir = gateway.dir.path().join(format!("slot{slot}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let sdp = dir.join(format!("{stream}.sdp"));
    std::fs::write(&sdp, added["sdp"].as_str().expect("an SDP")).unwrap();
    sdp
}

/// VLC (through its avformat demuxer, as the README shows) receives the RTP that `sdp`
/// describes for `seconds` and records it to MPEG-TS; the widths of the pictures ffmpeg
/// decodes from that recording, and VLC's log.
fn vlc_sizes(
    sdp: std::path::PathBuf,
    seconds: u32,
) -> std::thread::JoinHandle<(Vec<String>, String)> {
    std::thread::spawn(move || {
        let dir = sdp.parent().unwrap().to_path_buf();
        let recorded = dir.join("vlc.ts");
        let output = common::players::unprivileged("cvlc")
            .env("HOME", &dir)
            .args([
                "--demux=avformat",
                "--avformat-format=sdp",
                "--intf",
                "dummy",
            ])
            .arg(&sdp)
            .arg(format!("--run-time={seconds}"))
            .args(["--play-and-exit", "--sout"])
            .arg(format!(
                "#std{{access=file,mux=ts,dst={}}}",
                recorded.display()
            ))
            .output()
            .unwrap();
        let decoded = Command::new("ffmpeg")
            .args(["-v", "info", "-i"])
            .arg(&recorded)
            .args(["-map", "0:v", "-vf", "showinfo", "-f", "null", "-"])
            .output()
            .unwrap();
        let sizes = String::from_utf8_lossy(&decoded.stderr)
            .split(" s:")
            .skip(1)
            .filter_map(|rest| Some(rest.split('x').next()?.to_string()))
            .collect();
        (sizes, String::from_utf8_lossy(&output.stderr).into_owned())
    })
}

/// The picture sizes GStreamer's `sdpdemux` and `avdec_h264` decode from the stream's RTP
/// (until it has rendered 60 frames after a change of size, or a deadline that only a
/// broken stream reaches), and the frames rendered since the last change.
fn gstreamer_sizes(sdp: std::path::PathBuf) -> std::thread::JoinHandle<(Vec<String>, u32)> {
    std::thread::spawn(move || {
        let mut child = Command::new("gst-launch-1.0")
            .args(["-e", "-v", "filesrc"])
            .arg(format!("location={}", sdp.display()))
            .args(["!", "sdpdemux", "latency=100", "name=d", "d.", "!", "queue"])
            .args(["!", "rtph264depay", "!", "avdec_h264", "!", "videoconvert"])
            .args([
                "!",
                "fpsdisplaysink",
                "video-sink=fakesink",
                "text-overlay=false",
            ])
            .arg("sync=false")
            .args(["d.", "!", "queue", "!", "fakesink"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(40);
        let (mut sizes, mut rendered_at_change, mut rendered) = (Vec::<String>::new(), 0, 0);
        while sizes.len() < 2 || rendered < rendered_at_change + 60 {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = lines.recv_timeout(left) else {
                break;
            };
            if line.contains("avdec_h264") && line.contains("src: caps = video/x-raw") {
                let field = |key: &str| {
                    line.split(key)
                        .nth(1)
                        .and_then(|rest| rest.split([',', ' ']).next())
                        .unwrap_or("?")
                        .to_string()
                };
                let size = format!("{}x{}", field("width=(int)"), field("height=(int)"));
                if sizes.last() != Some(&size) {
                    sizes.push(size);
                    rendered_at_change = rendered;
                }
            }
            if let Some(count) = line
                .split("rendered: ")
                .nth(1)
                .and_then(|rest| rest.split(',').next()?.parse::<u32>().ok())
            {
                rendered = rendered.max(count);
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        (sizes, rendered.saturating_sub(rendered_at_change))
    })
}

#[test]
fn a_publisher_that_changes_size_passes_through_every_output() {
    let gateway = TestGateway::start(
        "[transcode]\nmode = \"auto\"\n[record]\nenabled = true\ndir = \"rec\"\nformat = \"mp4\"",
    );
    let mut args = H264_ON_REQUEST.to_vec();
    // The change comes late enough for every player to have started (VLC takes
    // seconds on a busy machine) and waited for a key frame at the first size.
    args.extend(["--resize", "1280x720", "--resize-after-s", "8"]);
    let mut publisher = Publisher::start(&gateway, "grow", &args);
    publisher.wait_for("live", LIVE_TIMEOUT);
    // ffmpeg (as ffplay) and GStreamer read the RTP across the change.
    let widths = rtp_widths(gateway.url("/streams/grow/stream.sdp"), 15);
    // GStreamer on a second destination (the ports of a slot no stream uses), since
    // ffmpeg holds the stream's own.
    let sdp = destination(&gateway, "grow", 3);
    let gstreamer = gstreamer_sizes(sdp);
    // VLC too, on a third, recording what it receives.
    let vlc = vlc_sizes(destination(&gateway, "grow", 2), 15);

    // HLS: a discontinuity, then a new initialisation section at the new size.
    let playlist = wait_playlist(&gateway, "grow", "a new initialisation section", |p| {
        let maps: std::collections::BTreeSet<_> = p.segments.iter().map(|s| &s.map).collect();
        maps.len() >= 2 && p.segments.last().is_some_and(|s| !s.discontinuity)
    });
    let changed = playlist
        .segments
        .iter()
        .position(|s| s.discontinuity)
        .unwrap_or_else(|| panic!("no discontinuity: {playlist:?}"));
    let (before, after) = (&playlist.segments[changed - 1], &playlist.segments[changed]);
    assert_ne!(before.map, after.map, "{playlist:?}");
    assert_eq!(segment_frames(&gateway, "grow", before).1, "640");
    let (keys, width) = segment_frames(&gateway, "grow", after);
    assert_eq!(width, "1280");
    assert!(keys[0]);
    let stream = gateway.stream("grow").unwrap();
    assert_eq!(stream["video"]["width"], 1280);
    assert_eq!(stream["video"]["input_width"], 1280);

    let widths = widths.join().unwrap();
    let count = |w: u32| widths.iter().filter(|x| **x == w).count();
    assert!(
        count(640) >= 30 && count(1280) >= 30,
        "ffmpeg decoded {} pictures 640 and {} 1280 wide",
        count(640),
        count(1280)
    );

    let (sizes, after_change) = gstreamer.join().unwrap();
    assert!(
        sizes.contains(&"640x360".to_string()) && sizes.contains(&"1280x720".to_string()),
        "GStreamer decoded {sizes:?}"
    );
    assert!(
        after_change >= 30,
        "GStreamer rendered {after_change} frames at 1280x720"
    );

    let (sizes, vlc_log) = vlc.join().unwrap();
    let count = |w: &str| sizes.iter().filter(|x| x.as_str() == w).count();
    assert!(
        count("640") >= 30 && count("1280") >= 30,
        "VLC's recording has {} pictures 640 and {} 1280 wide:\n{vlc_log}",
        count("640"),
        count("1280")
    );

    // The recording goes on in a new file at the new size; both play.
    publisher.kill();
    gateway.wait_stream_ended("grow", Duration::from_secs(10));
    let mut listed = gateway.recordings_of("grow");
    listed.sort_by_key(|r| r["file"].as_str().unwrap().to_string());
    assert_eq!(listed.len(), 2, "{listed:?}\n{}", gateway.log());
    let sizes: Vec<String> = listed
        .iter()
        .map(|r| {
            let path = gateway
                .dir
                .path()
                .join("rec")
                .join(r["file"].as_str().unwrap());
            let (size, durations) = probe_recording(&path);
            assert!(
                durations.len() == 2 && durations.iter().all(|d| *d >= 1.0),
                "{path:?}: {durations:?}"
            );
            size
        })
        .collect();
    assert_eq!(sizes, ["640x360", "1280x720"]);
}

#[test]
fn only_h264_under_auto_passes_through() {
    let gateway = TestGateway::start("[transcode]\nmode = \"auto\"");
    let mut vp8 = Publisher::start(&gateway, "vp8", &[]);
    vp8.wait_for("live", LIVE_TIMEOUT);
    let stream = gateway.stream("vp8").unwrap();
    assert_eq!(stream["video"]["passthrough"], false);
    assert_eq!(stream["video"]["width"], 320);
    assert!(
        gateway
            .log()
            .contains("the publisher's VP8 is transcoded: only H.264 passes through")
    );
    let decoded = decode_rtp(&gateway, "vp8", 3.0, 30);
    assert_eq!(decoded.size, Some((320, 180)));

    let always = TestGateway::start("");
    let mut h264 = Publisher::start(&always, "h264", &["--codec", "h264"]);
    h264.wait_for("live", LIVE_TIMEOUT);
    assert_eq!(
        always.stream("h264").unwrap()["video"]["passthrough"],
        false
    );
    assert!(
        always
            .log()
            .contains("the publisher's H264 is transcoded (transcode.mode = \"always\")")
    );
}

#[test]
fn a_whip_publisher_offering_only_h264_passes_through() {
    let gateway = TestGateway::start("[transcode]\nmode = \"auto\"");
    let (mut client, mut lines) = aiortc_whip(
        &gateway.url("/whip/aioh264"),
        &["--codec", "h264", "--seconds", "12"],
    );
    let created: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(created["status"], 201, "{created}");
    let stream = eventually(LIVE_TIMEOUT, || {
        let stream = gateway.stream("aioh264")?;
        (stream["state"] == "live" && stream["video"]["width"] == 320).then_some(stream)
    })
    .unwrap_or_else(|| panic!("{:?}\n{}", gateway.stream("aioh264"), gateway.log()));
    assert_eq!(stream["video"]["passthrough"], true);
    assert_eq!(stream["video"]["input_codec"], "H264");
    // aiortc's pictures are 320x240; the gateway's own size is 320x180.
    let decoded = decode_rtp(&gateway, "aioh264", 3.0, 30);
    assert_eq!(decoded.size, Some((320, 240)), "{}", decoded.stderr);
    let playlist = wait_playlist(&gateway, "aioh264", "two segments", |p| {
        p.segments.len() >= 2
    });
    let (keys, width) = segment_frames(&gateway, "aioh264", &playlist.segments[1]);
    assert_eq!(width, "320");
    assert!(keys[0], "a segment does not start with a key frame");
    let started = Instant::now();
    for line in lines.map_while(Result::ok) {
        if line.contains("deleted") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30));
    }
    let _ = client.wait_exit(Duration::from_secs(30));
}

#[test]
fn h264_with_b_frames_ends_with_a_reason_that_says_so() {
    let gateway = TestGateway::start("[transcode]\nmode = \"auto\"");
    let mut publisher = Publisher::start(&gateway, "bframes", &["--codec", "h264", "--b-frames"]);
    let ended = publisher.wait_for("ended", Duration::from_secs(30));
    let reason = ended["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("pipeline-error: ") && reason.contains("B-frames"),
        "{ended}\n{}",
        gateway.log()
    );
    // The gateway goes on: a publisher without B-frames passes through.
    let mut plain = Publisher::start(&gateway, "plain", H264_ON_REQUEST);
    plain.wait_for("live", LIVE_TIMEOUT);
    assert_eq!(
        gateway.stream("plain").unwrap()["video"]["passthrough"],
        true
    );
}
