//! H.264 RTP output: a real publisher, the SDP file, and ffmpeg decoding what arrives.

mod common;

use common::{Publisher, TestGateway, decode_sdp};
use std::time::Duration;

const LIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Decodes the stream's SDP output and checks the contract's media: H.264 at the
/// configured size, at least 80% of the frames over 5 s, and Opus audio.
fn assert_decodes(gateway: &TestGateway, name: &str, width: u32, height: u32, audio: bool) {
    let decoded = decode_sdp(&gateway.url(&format!("/streams/{name}/stream.sdp")), 5.0);
    assert_eq!(
        decoded.video_codec.as_deref(),
        Some("h264"),
        "{}",
        decoded.stderr
    );
    assert_eq!(decoded.size, Some((width, height)), "{}", decoded.stderr);
    assert!(
        decoded.video_frames >= 120,
        "only {} of 150 frames decoded in 5 s:\n{}",
        decoded.video_frames,
        decoded.stderr
    );
    if audio {
        assert_eq!(decoded.audio_codec.as_deref(), Some("opus"));
        assert!(
            decoded.audio_frames > 100,
            "{} audio frames",
            decoded.audio_frames
        );
    } else {
        assert_eq!(decoded.audio_codec, None);
    }
}

#[test]
fn publish_decode_unpublish_and_reuse_the_name() {
    let gateway = TestGateway::start("[transcode]\nwidth = 640\nheight = 360");
    let mut publisher = Publisher::start(&gateway, "cam1", &["--duration-s", "12"]);
    publisher.wait_for("answer", LIVE_TIMEOUT);
    let live = publisher.wait_for("live", LIVE_TIMEOUT);
    assert_eq!(live["stream"], "cam1");
    assert_eq!(live["outputs"]["sdp"], "/streams/cam1/stream.sdp");

    let stream = gateway.stream("cam1").unwrap();
    assert_eq!(stream["state"], "live");
    assert_eq!(stream["video"]["codec"], "H264");
    assert_eq!(stream["video"]["width"], 640);
    assert_eq!(stream["audio"]["codec"], "opus");
    assert_eq!(stream["slot"], 0);

    let sdp = gateway.get("/streams/cam1/stream.sdp");
    assert_eq!(sdp.headers()["content-type"], "application/sdp");
    let sdp = sdp.text().unwrap();
    assert!(sdp.contains(&format!("m=video {} RTP/AVP 96", gateway.port_base)));
    assert!(sdp.contains("packetization-mode=1;profile-level-id="));
    assert!(sdp.contains("sprop-parameter-sets="));
    assert!(sdp.contains(&format!("m=audio {} RTP/AVP 97", gateway.port_base + 2)));

    assert_decodes(&gateway, "cam1", 640, 360, true);

    let ended = publisher.wait_for("ended", Duration::from_secs(15));
    assert_eq!(ended["reason"], "unpublished");
    gateway.wait_stream_ended("cam1", Duration::from_secs(2));
    assert_eq!(gateway.get("/streams/cam1/stream.sdp").status(), 404);

    // The name and the slot are free again.
    let mut again = Publisher::start(&gateway, "cam1", &[]);
    again.wait_for("live", LIVE_TIMEOUT);
    assert_eq!(gateway.stream("cam1").unwrap()["slot"], 0);
}

#[test]
fn two_publishers_at_once_each_decodable() {
    let gateway = TestGateway::start("");
    let mut a = Publisher::start(&gateway, "left", &[]);
    let mut b = Publisher::start(&gateway, "right", &["--width", "320", "--height", "240"]);
    a.wait_for("live", LIVE_TIMEOUT);
    b.wait_for("live", LIVE_TIMEOUT);
    let slots: Vec<_> = ["left", "right"]
        .iter()
        .map(|n| gateway.stream(n).unwrap()["slot"].as_u64().unwrap())
        .collect();
    assert_ne!(slots[0], slots[1]);
    assert_decodes(&gateway, "left", 320, 180, true);
    assert_decodes(&gateway, "right", 320, 180, true);
    let (_, list) = gateway.get_json("/api/streams");
    assert_eq!(list.as_array().unwrap().len(), 2);
}

#[test]
fn a_second_publisher_on_a_live_name_gets_409() {
    let gateway = TestGateway::start("");
    let mut first = Publisher::start(&gateway, "taken", &[]);
    first.wait_for("live", LIVE_TIMEOUT);
    let mut second = Publisher::start(&gateway, "taken", &[]);
    let error = second.wait_for("error", LIVE_TIMEOUT);
    assert_eq!(error["code"], 409);
    assert_eq!(error["error"], "stream-in-use");
    assert_eq!(error["message"], "stream taken already has a publisher");
    // The first stream is unharmed.
    assert_eq!(gateway.stream("taken").unwrap()["state"], "live");
}

#[test]
fn a_publisher_that_closes_its_socket_is_freed() {
    let gateway = TestGateway::start("");
    let mut publisher = Publisher::start(&gateway, "gone", &[]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    publisher.kill();
    let took = gateway.wait_stream_ended("gone", Duration::from_secs(3));
    assert!(took <= Duration::from_secs(2), "freed after {took:?}");
    let mut next = Publisher::start(&gateway, "gone", &[]);
    next.wait_for("live", LIVE_TIMEOUT);
}

#[test]
fn a_publisher_that_vanishes_without_a_word_is_freed() {
    let gateway = TestGateway::start("");
    let mut publisher = Publisher::start(&gateway, "frozen", &[]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    // Frozen: its socket stays open, but it neither sends media nor answers ICE checks.
    publisher.signal("-STOP");
    let took = gateway.wait_stream_ended("frozen", Duration::from_secs(15));
    assert!(took <= Duration::from_secs(10), "freed after {took:?}");
    assert!(
        gateway.log().contains("reason=ice-failed"),
        "{}",
        gateway.log()
    );
}

#[test]
fn video_only_and_audio_only_publications() {
    let gateway = TestGateway::start("");
    let mut video = Publisher::start(&gateway, "video", &["--no-audio"]);
    let mut audio = Publisher::start(&gateway, "audio", &["--no-video"]);
    video.wait_for("live", LIVE_TIMEOUT);
    audio.wait_for("live", LIVE_TIMEOUT);
    let stream = gateway.stream("video").unwrap();
    assert!(stream["audio"].is_null());
    let stream = gateway.stream("audio").unwrap();
    assert!(stream["video"].is_null());

    let sdp = gateway.get("/streams/audio/stream.sdp").text().unwrap();
    assert!(!sdp.contains("m=video") && sdp.contains("m=audio"), "{sdp}");
    let decoded = decode_sdp(&gateway.url("/streams/audio/stream.sdp"), 3.0);
    assert_eq!(
        decoded.audio_codec.as_deref(),
        Some("opus"),
        "{}",
        decoded.stderr
    );
    assert!(decoded.audio_frames > 100, "{}", decoded.audio_frames);

    assert_decodes(&gateway, "video", 320, 180, false);
}

#[test]
fn h264_publishers_are_transcoded_too() {
    let gateway = TestGateway::start("");
    let mut publisher = Publisher::start(&gateway, "h264", &["--codec", "h264", "--trickle"]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    assert_eq!(
        gateway.stream("h264").unwrap()["video"]["input_codec"],
        "H264"
    );
    assert_decodes(&gateway, "h264", 320, 180, true);
}

#[test]
fn sdp_files_are_written_to_sdp_dir_and_removed_at_the_end() {
    let sdp_dir = tempfile::tempdir().unwrap();
    let gateway = TestGateway::start(&format!(
        "[rtp]\nsdp_dir = \"{}\"",
        sdp_dir.path().display()
    ));
    let mut publisher = Publisher::start(&gateway, "filed", &["--duration-s", "4"]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    let path = sdp_dir.path().join("filed.sdp");
    let text = common::eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(&path).ok()
    })
    .expect("the SDP file is written");
    assert_eq!(
        text,
        gateway.get("/streams/filed/stream.sdp").text().unwrap()
    );
    publisher.wait_for("ended", Duration::from_secs(10));
    gateway.wait_stream_ended("filed", Duration::from_secs(2));
    assert!(!path.exists());
}

#[test]
fn sigterm_ends_streams_and_exits_zero() {
    let mut gateway = TestGateway::start("");
    let mut publisher = Publisher::start(&gateway, "bye", &[]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    gateway.signal("-TERM");
    let (code, took) = gateway.wait_exit(Duration::from_secs(6));
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let ended = publisher.wait_for("ended", Duration::from_secs(2));
    assert_eq!(ended["reason"], "shutdown");
}

#[test]
fn gstreamer_sdpdemux_plays_the_stream() {
    let gateway = TestGateway::start("");
    let mut publisher = Publisher::start(&gateway, "gst", &[]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    let dir = tempfile::tempdir().unwrap();
    let sdp = dir.path().join("gst.sdp");
    std::fs::write(&sdp, gateway.get("/streams/gst/stream.sdp").text().unwrap()).unwrap();
    // gst-launch runs until it has shown both decoders' caps and 150 frames (5 s at
    // 30 fps) were rendered, or until a deadline that only a broken stream reaches.
    let mut child = std::process::Command::new("gst-launch-1.0")
        .args(["-e", "-v", "filesrc"])
        .arg(format!("location={}", sdp.display()))
        .args(["!", "sdpdemux", "latency=100", "name=d"])
        .args([
            "d.",
            "!",
            "queue",
            "!",
            "rtph264depay",
            "!",
            "avdec_h264",
            "!",
            "videoconvert",
        ])
        .args([
            "!",
            "fpsdisplaysink",
            "video-sink=fakesink",
            "text-overlay=false",
            "sync=false",
        ])
        .args([
            "d.",
            "!",
            "queue",
            "!",
            "rtpopusdepay",
            "!",
            "opusdec",
            "!",
            "fakesink",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (mut text, mut video_caps, mut audio_caps, mut rendered) =
        (String::new(), false, false, 0u32);
    while !(video_caps && audio_caps && rendered >= 150) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            break;
        };
        video_caps |= line.contains("width=(int)320, height=(int)180");
        audio_caps |= line.contains("GstOpusDec:opusdec0.GstPad:src: caps = audio/x-raw");
        if let Some(count) = line
            .split("rendered: ")
            .nth(1)
            .and_then(|rest| rest.split(',').next()?.parse::<u32>().ok())
        {
            rendered = rendered.max(count);
        }
        text.push_str(&line);
        text.push('\n');
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(video_caps, "no H.264 caps of 320x180:\n{text}");
    assert!(audio_caps, "no Opus decoder caps:\n{text}");
    assert!(
        rendered >= 150,
        "GStreamer rendered {rendered} frames:\n{text}"
    );
}

#[test]
fn vlc_reads_the_sdp_through_avformat() {
    let gateway = TestGateway::start("");
    let mut publisher = Publisher::start(&gateway, "vlc", &[]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let sdp = dir.path().join("vlc.sdp");
    std::fs::write(&sdp, gateway.get("/streams/vlc/stream.sdp").text().unwrap()).unwrap();
    let recorded = dir.path().join("vlc.ts");
    let output = common::players::unprivileged("cvlc")
        .env("HOME", dir.path())
        .args([
            "--demux=avformat",
            "--avformat-format=sdp",
            "--intf",
            "dummy",
        ])
        .arg(&sdp)
        .args(["--run-time=6", "--play-and-exit", "--sout"])
        .arg(format!(
            "#std{{access=file,mux=ts,dst={}}}",
            recorded.display()
        ))
        .output()
        .unwrap();
    let probe = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-of", "compact"])
        .args([
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames",
        ])
        .arg(&recorded)
        .output()
        .unwrap();
    let probe = String::from_utf8_lossy(&probe.stdout);
    let vlc_log = String::from_utf8_lossy(&output.stderr);
    assert!(
        probe.contains("codec_name=h264|width=320|height=180"),
        "{probe}\n{vlc_log}"
    );
    assert!(probe.contains("codec_name=opus"), "{probe}\n{vlc_log}");
    let frames = common::players::h264_frames(&probe);
    assert!(
        frames >= 90,
        "VLC received {frames} frames in 6 s:\n{vlc_log}"
    );
}

#[test]
fn a_failing_pipeline_ends_that_stream_alone() {
    let gateway = TestGateway::start("");
    let mut good = Publisher::start(&gateway, "good", &[]);
    good.wait_for("live", LIVE_TIMEOUT);
    let mut bad = Publisher::start(&gateway, "bad", &["--corrupt-video"]);
    let ended = bad.wait_for("ended", Duration::from_secs(20));
    assert_eq!(
        ended["reason"],
        "pipeline-error: video_decoder: Failed to decode frame"
    );
    assert!(bad.seen.iter().all(|m| m["type"] != "live"));
    assert!(gateway.stream_ended("bad"));
    assert!(
        gateway
            .log()
            .contains("stream{name=bad}: webrtc_gateway::session::driver: pipeline error"),
        "{}",
        gateway.log()
    );
    assert_eq!(gateway.stream("good").unwrap()["state"], "live");
    assert_decodes(&gateway, "good", 320, 180, true);
}
