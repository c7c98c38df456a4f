//! The control API (admin token), live statistics, Prometheus metrics checked with a
//! real parser, and the read token on media.

mod common;

use common::{Publisher, TestGateway, decode_sdp};
use reqwest::blocking::Client;
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;
use webrtc_gateway_testkit::python;

const LIVE_TIMEOUT: Duration = Duration::from_secs(20);
const ADMIN: &str = "admin-token-789";

fn admin(
    client: &Client,
    method: reqwest::Method,
    url: String,
) -> reqwest::blocking::RequestBuilder {
    client.request(method, url).bearer_auth(ADMIN)
}

#[test]
fn the_control_api_adds_rtp_destinations_records_and_stops_streams() {
    let records = tempfile::tempdir().unwrap();
    let gateway = TestGateway::start(&format!(
        "[auth]\nadmin_token = \"{ADMIN}\"\n[limits]\nmax_rtp_destinations = 1\n\
         [record]\ndir = \"{}\"",
        records.path().display()
    ));
    let mut publisher = Publisher::start(&gateway, "ctl", &[]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    let client = Client::new();
    let rtp_url = gateway.url("/api/streams/ctl/rtp");

    // The admin token is needed.
    let body = json!({"host": "127.0.0.1", "video_port": gateway.port_base + 20, "audio_port": gateway.port_base + 22});
    let refused = client.post(&rtp_url).json(&body).send().unwrap();
    assert_eq!(refused.status(), 401);
    for bad in [
        json!({"host": "example.com", "video_port": 40000, "audio_port": 40002}),
        json!({"host": "127.0.0.1", "video_port": 40001, "audio_port": 40004}),
        json!({"host": "127.0.0.1", "video_port": 40000, "audio_port": 40000}),
        json!({"host": "0.0.0.0", "video_port": 40000, "audio_port": 40002}),
        json!({"host": "127.0.0.1", "video_port": 40000}),
    ] {
        let response = admin(&client, reqwest::Method::POST, rtp_url.clone())
            .json(&bad)
            .send()
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
    }

    // An extra destination decodes at its own ports.
    let created = admin(&client, reqwest::Method::POST, rtp_url.clone())
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(created.status(), 201);
    let destination: Value = created.json().unwrap();
    let sdp = destination["sdp"].as_str().unwrap();
    assert!(
        sdp.contains(&format!("m=video {} RTP/AVP 96", gateway.port_base + 20)),
        "{sdp}"
    );
    let sdp_path = gateway.dir.path().join("extra.sdp");
    std::fs::write(&sdp_path, sdp).unwrap();
    let decoded = decode_sdp(sdp_path.to_str().unwrap(), 3.0);
    decoded.assert_h264_and_opus(70);
    let stream = gateway.stream("ctl").unwrap();
    assert_eq!(stream["rtp_destinations"][0]["id"], destination["id"]);
    // The limit is one.
    let more = json!({"host": "127.0.0.1", "video_port": 40100, "audio_port": 40102});
    let over = admin(&client, reqwest::Method::POST, rtp_url.clone())
        .json(&more)
        .send()
        .unwrap();
    assert_eq!(over.status(), 409);
    assert_eq!(
        over.json::<Value>().unwrap()["error"],
        "too-many-destinations"
    );
    let id = destination["id"].as_str().unwrap();
    let removed = admin(&client, reqwest::Method::DELETE, format!("{rtp_url}/{id}"))
        .send()
        .unwrap();
    assert_eq!(removed.status(), 204);
    let again = admin(&client, reqwest::Method::DELETE, format!("{rtp_url}/{id}"))
        .send()
        .unwrap();
    assert_eq!(again.status(), 404);
    assert_eq!(
        again.json::<Value>().unwrap()["error"],
        "no-such-destination"
    );

    // Recording started and stopped on a live stream gives a playable file.
    let recording_url = gateway.url("/api/streams/ctl/recording");
    let frames_out = || {
        gateway.stream("ctl").unwrap()["stats"]["frames_out"]
            .as_u64()
            .unwrap()
    };
    let frames_before = frames_out();
    let started = admin(&client, reqwest::Method::POST, recording_url.clone())
        .send()
        .unwrap();
    assert_eq!(started.status(), 201);
    let file = started.json::<Value>().unwrap()["recording"]
        .as_str()
        .unwrap()
        .to_string();
    let twice = admin(&client, reqwest::Method::POST, recording_url.clone())
        .send()
        .unwrap();
    assert_eq!(twice.status(), 409);
    assert_eq!(twice.json::<Value>().unwrap()["error"], "already-recording");
    std::thread::sleep(Duration::from_secs(4));
    let stopped = admin(&client, reqwest::Method::DELETE, recording_url.clone())
        .send()
        .unwrap();
    assert_eq!(stopped.status(), 200);
    let frames_during = frames_out().saturating_sub(frames_before);
    let not_recording = admin(&client, reqwest::Method::DELETE, recording_url.clone())
        .send()
        .unwrap();
    assert_eq!(not_recording.status(), 409);
    assert_eq!(
        not_recording.json::<Value>().unwrap()["error"],
        "not-recording"
    );
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-of", "compact"])
        .args(["-show_entries", "stream=codec_name,nb_read_frames"])
        .arg(records.path().join(&file))
        .output()
        .unwrap();
    let probe = String::from_utf8_lossy(&output.stdout);
    let frames: u64 = probe
        .lines()
        .find(|l| l.contains("h264"))
        .and_then(|l| l.rsplit('=').next()?.trim().parse().ok())
        .unwrap_or(0);
    // The file holds the frames the stream put out while it was recorded, however fast
    // this machine is: the statistics are sampled each second (30 frames at most behind
    // at either end), and the file starts on a key frame.
    assert!(
        frames >= 30 && frames.abs_diff(frames_during) <= 60,
        "{frames} frames recorded, {frames_during} put out meanwhile: {probe}"
    );
    assert!(probe.contains("codec_name=aac"), "{probe}");

    // Live statistics move.
    let stats = gateway.stream("ctl").unwrap()["stats"].clone();
    assert!(stats["packets_received"].as_u64().unwrap() > 100, "{stats}");
    assert!(stats["frames_out"].as_u64().unwrap() > 100, "{stats}");
    let fps = stats["input_fps"].as_f64().unwrap();
    assert!((20.0..40.0).contains(&fps), "{stats}");
    assert!(stats["plis_sent"].as_u64().unwrap() >= 1, "{stats}");
    // Nothing is lost on loopback.
    assert_eq!(stats["jitter_buffer_lost"], 0, "{stats}");
    assert_eq!(stats["jitter_buffer_late"], 0, "{stats}");

    // Ending a publication: its publisher is told why.
    let ended = admin(
        &client,
        reqwest::Method::DELETE,
        gateway.url("/api/streams/ctl"),
    )
    .send()
    .unwrap();
    assert_eq!(ended.status(), 200);
    let message = publisher.wait_for("ended", Duration::from_secs(5));
    assert_eq!(message["reason"], "stopped-by-operator");
    let gone = admin(
        &client,
        reqwest::Method::DELETE,
        gateway.url("/api/streams/ctl"),
    )
    .send()
    .unwrap();
    assert_eq!(gone.status(), 404);
    // An ended stream takes no command: 404, never a conflict.
    let no_recording = admin(&client, reqwest::Method::POST, recording_url)
        .send()
        .unwrap();
    assert_eq!(no_recording.status(), 404);
    assert_eq!(
        no_recording.json::<Value>().unwrap()["error"],
        "no-such-stream"
    );
    assert!(!gateway.log().contains(ADMIN));
}

fn scrape(gateway: &TestGateway) -> Vec<Value> {
    let response = gateway.get("/metrics");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().unwrap();
    let mut parser = python::tool("parse_metrics.py", &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(python::HINT);
    parser
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = parser.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn sample(samples: &[Value], name: &str, labels: Value) -> Option<f64> {
    samples
        .iter()
        .find(|s| s["name"] == name && s["labels"] == labels)
        .and_then(|s| s["value"].as_f64())
}

#[test]
fn metrics_parse_as_prometheus_text_and_move() {
    let gateway = TestGateway::start("");
    let before = scrape(&gateway);
    assert_eq!(
        sample(&before, "webrtc_gateway_publishers_live", json!({})),
        Some(0.0)
    );
    // Long enough to be scraped twice while live on a busy machine; it unpublishes after.
    let mut publisher = Publisher::start(&gateway, "m1", &["--duration-s", "12"]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    std::thread::sleep(Duration::from_secs(2));
    let first = scrape(&gateway);
    std::thread::sleep(Duration::from_millis(1500));
    let second = scrape(&gateway);
    assert_eq!(
        sample(&second, "webrtc_gateway_publishers_live", json!({})),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &second,
            "webrtc_gateway_publications_started_total",
            json!({})
        ),
        Some(1.0)
    );
    let stream = json!({"stream": "m1"});
    for counter in [
        "webrtc_gateway_stream_bytes_in_total",
        "webrtc_gateway_stream_packets_in_total",
        "webrtc_gateway_stream_frames_in_total",
        "webrtc_gateway_stream_frames_out_total",
    ] {
        let a = sample(&first, counter, stream.clone()).unwrap_or_default();
        let b = sample(&second, counter, stream.clone()).unwrap_or_default();
        assert!(b > a && a > 0.0, "{counter}: {a} then {b}");
    }
    assert!(
        sample(
            &second,
            "webrtc_gateway_stream_encoder_delay_seconds",
            stream.clone()
        )
        .is_some()
    );
    publisher.wait_for("ended", Duration::from_secs(20));
    let after = scrape(&gateway);
    assert_eq!(
        sample(
            &after,
            "webrtc_gateway_publications_ended_total",
            json!({"reason": "unpublished"})
        ),
        Some(1.0)
    );
    // A signalling error is counted by code.
    let mut bad = common::Signalling::connect(&gateway);
    bad.send_text("nonsense");
    bad.receive();
    let errors = scrape(&gateway);
    assert_eq!(
        sample(
            &errors,
            "webrtc_gateway_signalling_errors_total",
            json!({"code": "400"})
        ),
        Some(1.0)
    );
}

#[test]
fn the_read_token_guards_media_and_travels_in_playlists() {
    let records = tempfile::tempdir().unwrap();
    let gateway = TestGateway::start(&format!(
        "[auth]\nread_token = \"reader-42\"\n[record]\ndir = \"{}\"",
        records.path().display()
    ));
    let mut publisher = Publisher::start(&gateway, "guarded", &[]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    for path in [
        "/streams/guarded/stream.sdp",
        "/streams/guarded/index.m3u8",
        "/recordings",
    ] {
        assert_eq!(gateway.get(path).status(), 401, "{path}");
        let with_token = gateway.get(&format!("{path}?token=reader-42"));
        assert!(
            with_token.status() == 200 || with_token.status() == 503,
            "{path}"
        );
        assert_eq!(gateway.get(&format!("{path}?token=wrong")).status(), 401);
    }
    // A path spelt with percent escapes is checked as its handler reads it, decoded: a
    // recording (one is in the directory) or a stream's file needs the token all the same.
    std::fs::write(
        records.path().join("guarded-20261207T170000Z.mp4"),
        b"recorded",
    )
    .unwrap();
    for path in [
        "/recordings/guarded-20261207T170000Z%2Emp4",
        "/recordings/guarded%2D20261207T170000Z.mp4",
        "/streams/guarde%64/stream.sdp",
    ] {
        assert_eq!(gateway.get(path).status(), 401, "{path}");
    }
    assert_eq!(
        gateway
            .get("/recordings/guarded-20261207T170000Z%2Emp4?token=reader-42")
            .text()
            .unwrap(),
        "recorded"
    );
    let bearer = Client::new()
        .get(gateway.url("/streams/guarded/stream.sdp"))
        .bearer_auth("reader-42")
        .send()
        .unwrap();
    assert_eq!(bearer.status(), 200);
    // ffplay and Safari can only pass the token in the URL: it follows every URI.
    let playlist = common::eventually(Duration::from_secs(10), || {
        let text = gateway
            .get("/streams/guarded/stream.m3u8?token=reader-42")
            .text()
            .ok()?;
        text.contains("#EXTINF").then_some(text)
    })
    .unwrap();
    let segment = playlist
        .lines()
        .find(|l| l.ends_with(".m4s?token=reader-42"))
        .unwrap();
    assert_eq!(
        gateway.get(&format!("/streams/guarded/{segment}")).status(),
        200
    );
    // And every URI of a tag: the initialisation section, the parts, the hint.
    for line in playlist.lines().filter(|l| l.contains("URI=")) {
        let uri = line
            .split("URI=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert!(uri.ends_with("?token=reader-42"), "{line}");
        if !line.starts_with("#EXT-X-PRELOAD-HINT") {
            let status = gateway.get(&format!("/streams/guarded/{uri}")).status();
            assert_eq!(status, 200, "{line}");
        }
    }
    let variant = gateway
        .get("/streams/guarded/index.m3u8?token=reader-42")
        .text()
        .unwrap();
    assert!(variant.contains("stream.m3u8?token=reader-42"), "{variant}");
    let decoded = decode_sdp(
        &gateway.url("/streams/guarded/stream.sdp?token=reader-42"),
        3.0,
    );
    assert_eq!(
        decoded.video_codec.as_deref(),
        Some("h264"),
        "{}",
        decoded.stderr
    );
    assert!(!gateway.log().contains("reader-42"));
}

#[test]
fn a_node_on_its_own_shows_itself_as_the_cluster() {
    let gateway = TestGateway::start("[cluster]\nnode_id = \"gw-a\"\n[limits]\nmax_publishers = 3");
    let (status, cluster) = gateway.get_json("/api/cluster");
    assert_eq!(status, 200);
    assert_eq!(cluster["node"], "gw-a");
    assert_eq!(cluster["redis"], Value::Null);
    let nodes = cluster["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{cluster}");
    assert_eq!(nodes[0]["id"], "gw-a");
    assert_eq!(
        nodes[0]["url"],
        format!("http://127.0.0.1:{}", gateway.port)
    );
    assert_eq!(nodes[0]["state"], "serving");
    assert_eq!(nodes[0]["publishers"], 0);
    assert_eq!(nodes[0]["max_publishers"], 3);

    let mut publisher = Publisher::start(&gateway, "onnode", &[]);
    publisher.wait_for("live", Duration::from_secs(20));
    assert_eq!(gateway.stream("onnode").unwrap()["node"], "gw-a");
    let (_, cluster) = gateway.get_json("/api/cluster");
    assert_eq!(cluster["nodes"][0]["publishers"], 1);
}
