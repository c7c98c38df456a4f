//! The pages in real browsers: headless Chromium and Firefox ESR with fake cameras and
//! microphones, driven over WebDriver. Each case runs in both, as `..._chromium` and
//! `..._firefox`.

mod common;

use common::browser::{Browser, BrowserKind};
use common::{Publisher, TestGateway, decode_sdp};
use serde_json::{Value, json};
use std::time::Duration;
use webrtc_gateway_testkit::Process;

const STATE: &str = "document.body.dataset.state";
const REASON: &str = "document.getElementById('reason').textContent";

fn screenshot_path(name: &str, kind: BrowserKind) -> std::path::PathBuf {
    let shots = common::root_path("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    shots.join(format!("{name}-{}.png", format!("{kind:?}").to_lowercase()))
}

/// Waits until the number `expression` gives passes `floor`; returns the last value.
fn wait_above(browser: &mut Browser, expression: &str, floor: f64, timeout: Duration) -> Value {
    browser.wait_for(&format!("{expression} > {floor}"), &json!(true), timeout);
    browser.eval(expression)
}

fn publish_page_autostarts_and_the_sdp_output_decodes(kind: BrowserKind) {
    let gateway = TestGateway::start("[transcode]\nwidth = 640\nheight = 360");
    let mut browser = Browser::start(kind);
    browser.open(&gateway.url("/publish.html?stream=browser&autostart=1"));
    let state = browser.wait_for(STATE, &json!("live"), Duration::from_secs(30));
    assert_eq!(state, json!("live"), "{}", browser.eval(REASON));
    let stream = gateway.stream("browser").unwrap();
    assert_eq!(stream["state"], "live");
    assert_eq!(stream["video"]["input_codec"], "VP8");

    let decoded = decode_sdp(&gateway.url("/streams/browser/stream.sdp"), 5.0);
    assert_eq!(
        decoded.video_codec.as_deref(),
        Some("h264"),
        "{}",
        decoded.stderr
    );
    assert_eq!(decoded.size, Some((640, 360)));
    assert!(
        decoded.video_frames >= 120,
        "{} frames",
        decoded.video_frames
    );
    assert_eq!(decoded.audio_codec.as_deref(), Some("opus"));

    // The page shows the outgoing statistics.
    let stats = browser.wait_for(
        "document.getElementById('stat-resolution').textContent !== '–'",
        &json!(true),
        Duration::from_secs(10),
    );
    assert_eq!(stats, json!(true));
    let shot = screenshot_path("publish", kind);
    browser.screenshot(&shot);
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);

    // Stop ends the stream.
    browser.eval("document.getElementById('stop').click()");
    gateway.wait_stream_ended("browser", Duration::from_secs(5));
    assert_eq!(browser.eval(STATE), json!("stopped"));
}

#[test]
fn the_publish_page_autostarts_and_the_sdp_output_decodes_chromium() {
    publish_page_autostarts_and_the_sdp_output_decodes(BrowserKind::Chromium);
}

#[test]
fn the_publish_page_autostarts_and_the_sdp_output_decodes_firefox() {
    publish_page_autostarts_and_the_sdp_output_decodes(BrowserKind::Firefox);
}

/// The dashboard lists a live stream and plays it with hls.js in its low-latency mode
/// (Firefox has no native HLS; Chromium has, and must still take hls.js), says how far
/// behind live it is, and shows the stream ended.
fn dashboard_plays_a_stream_with_hls_js(kind: BrowserKind) {
    let gateway = TestGateway::start("");
    assert_eq!(
        gateway.get("/hls.js").status(),
        200,
        "the gateway serves no hls.js (make test-deps installs it)"
    );
    let mut publisher = Publisher::start(&gateway, "watched", &[]);
    publisher.wait_for("live", Duration::from_secs(20));

    let mut dashboard = Browser::start(kind);
    dashboard.open(&gateway.url("/"));
    let row = "document.querySelector('tr[data-stream=\"watched\"]')?.dataset.state";
    assert_eq!(
        dashboard.wait_for(row, &json!("live"), Duration::from_secs(10)),
        json!("live")
    );
    dashboard.eval("document.querySelector('tr[data-stream=\"watched\"] button.watch').click()");
    // hls.js plays, though Chromium would play HLS natively and Firefox cannot.
    let player = "document.getElementById('player-status').dataset.player ?? null";
    let chosen = dashboard.wait_for(player, &json!("hls.js"), Duration::from_secs(20));
    let status = dashboard.eval("document.getElementById('player-status').textContent");
    assert_eq!(chosen, json!("hls.js"), "{status}");
    assert_eq!(dashboard.eval("typeof window.Hls"), json!("function"));
    let width = dashboard.wait_for(
        "document.getElementById('player').videoWidth",
        &json!(320),
        Duration::from_secs(30),
    );
    let status = dashboard.eval("document.getElementById('player-status').textContent");
    assert_eq!(
        width,
        json!(320),
        "the player never showed a picture: {status}"
    );
    let time = "document.getElementById('player').currentTime";
    let first = dashboard.eval(time).as_f64().unwrap();
    let later = wait_above(&mut dashboard, time, first + 2.0, Duration::from_secs(20));
    assert!(
        later.as_f64().unwrap() > first + 2.0,
        "currentTime went from {first} to {later}"
    );

    // In its low-latency mode on the default variant's parts, and the page says how far
    // behind live it is.
    let status = dashboard.wait_for(
        "document.getElementById('player-status').textContent.includes('behind live')",
        &json!(true),
        Duration::from_secs(10),
    );
    let text = dashboard.eval("document.getElementById('player-status').textContent");
    assert_eq!(status, json!(true), "{text}");
    assert!(text.as_str().unwrap().contains("(low-latency)"), "{text}");
    let latency: f64 = dashboard
        .eval("document.getElementById('player-status').dataset.latency")
        .as_str()
        .and_then(|l| l.parse().ok())
        .unwrap_or_else(|| panic!("no latency in {text}"));
    assert!(latency > 0.0 && latency < 10.0, "{text}");
    dashboard.screenshot(&screenshot_path("dashboard", kind));

    // The operator ends the stream; the dashboard shows it ended.
    let ended = common::client()
        .delete(gateway.url("/api/streams/watched"))
        .send()
        .unwrap();
    assert!(ended.status().is_success(), "{}", ended.status());
    gateway.wait_stream_ended("watched", Duration::from_secs(10));
    let state = dashboard.wait_for(row, &json!("ended"), Duration::from_secs(10));
    assert_eq!(state, json!("ended"));
}

#[test]
fn the_dashboard_plays_a_stream_with_hls_js_chromium() {
    dashboard_plays_a_stream_with_hls_js(BrowserKind::Chromium);
}

#[test]
fn the_dashboard_plays_a_stream_with_hls_js_firefox() {
    dashboard_plays_a_stream_with_hls_js(BrowserKind::Firefox);
}

fn publish_page_shows_the_gateways_errors(kind: BrowserKind) {
    let gateway = TestGateway::start("[auth]\npublish_token = \"letmein\"");
    let mut browser = Browser::start(kind);
    browser.open(&gateway.url("/publish.html?stream=locked&autostart=1"));
    let state = browser.wait_for(STATE, &json!("error"), Duration::from_secs(30));
    assert_eq!(state, json!("error"));
    assert_eq!(
        browser.eval(REASON),
        json!("(401 unauthorized: publishing needs a valid token)")
    );

    let mut taken = Publisher::start(&gateway, "taken", &["--token", "letmein"]);
    taken.wait_for("live", Duration::from_secs(20));
    browser.open(&gateway.url("/publish.html?stream=taken&token=letmein&autostart=1"));
    let state = browser.wait_for(STATE, &json!("error"), Duration::from_secs(30));
    assert_eq!(state, json!("error"));
    assert_eq!(
        browser.eval(REASON),
        json!("(409 stream-in-use: stream taken already has a publisher)")
    );
}

#[test]
fn the_publish_page_shows_the_gateways_errors_chromium() {
    publish_page_shows_the_gateways_errors(BrowserKind::Chromium);
}

#[test]
fn the_publish_page_shows_the_gateways_errors_firefox() {
    publish_page_shows_the_gateways_errors(BrowserKind::Firefox);
}

/// The page's "Prefer H.264" puts H.264 first in its offer (setCodecPreferences), and a
/// gateway in `transcode.mode = "auto"` passes it through: the players get the page's
/// own pictures (the browser's size, which grows with its bandwidth estimate) where the
/// gateway would make 352x198.
/// A browser that cannot send H.264 (Firefox without its OpenH264 plugin) says so on
/// the page and its VP8 is transcoded.
fn publish_page_prefers_h264(kind: BrowserKind) {
    let gateway = TestGateway::start("[transcode]\nmode = \"auto\"\nwidth = 352\nheight = 198");
    let mut browser = Browser::start(kind);
    browser.open(&gateway.url("/publish.html?stream=pref&h264=1&autostart=1"));
    let state = browser.wait_for(STATE, &json!("live"), Duration::from_secs(30));
    assert_eq!(state, json!("live"), "{}", browser.eval(REASON));
    assert_eq!(
        browser.eval("document.getElementById('prefer-h264').checked"),
        json!(true)
    );
    let can_send_h264 = browser.eval(
        "RTCRtpSender.getCapabilities('video').codecs.some(c => c.mimeType.toLowerCase() === 'video/h264')",
    );
    eprintln!("{kind:?} can send H.264: {can_send_h264}");
    let stream = gateway.stream("pref").unwrap();
    let decoded = decode_sdp(&gateway.url("/streams/pref/stream.sdp"), 3.0);
    assert_eq!(
        decoded.video_codec.as_deref(),
        Some("h264"),
        "{}",
        decoded.stderr
    );
    if can_send_h264 == json!(true) {
        assert_eq!(stream["video"]["input_codec"], "H264", "{stream}");
        assert_eq!(stream["video"]["passthrough"], true, "{stream}");
        assert!(decoded.size.is_some(), "{}", decoded.stderr);
        assert_ne!(decoded.size, Some((352, 198)), "{}", decoded.stderr);
        let codec = browser.wait_for(
            "document.getElementById('stat-codec').textContent",
            &json!("H264"),
            Duration::from_secs(10),
        );
        assert_eq!(codec, json!("H264"));
    } else {
        assert_eq!(stream["video"]["input_codec"], "VP8", "{stream}");
        assert_eq!(stream["video"]["passthrough"], false, "{stream}");
        assert_eq!(decoded.size, Some((352, 198)), "{}", decoded.stderr);
        assert_eq!(
            browser.eval("document.getElementById('codec-note').textContent"),
            json!("this browser cannot send H.264")
        );
    }
}

#[test]
fn the_publish_page_can_prefer_h264_chromium() {
    publish_page_prefers_h264(BrowserKind::Chromium);
}

#[test]
fn the_publish_page_can_prefer_h264_firefox() {
    publish_page_prefers_h264(BrowserKind::Firefox);
}

/// The gateway goes away under a live page and comes back on the same port: the page
/// says it is reconnecting, tries again with backoff and is live again.
fn publish_page_reconnects_when_the_gateway_comes_back(kind: BrowserKind) {
    let gateway = TestGateway::start("");
    let port = gateway.port;
    let mut browser = Browser::start(kind);
    browser.open(&gateway.url("/publish.html?stream=again&autostart=1"));
    let state = browser.wait_for(STATE, &json!("live"), Duration::from_secs(30));
    assert_eq!(state, json!("live"), "{}", browser.eval(REASON));

    drop(gateway);
    let state = browser.wait_for(STATE, &json!("reconnecting"), Duration::from_secs(20));
    assert_eq!(state, json!("reconnecting"), "{}", browser.eval(REASON));
    let reason = browser.eval(REASON);
    assert!(
        reason.as_str().unwrap().contains("trying again in"),
        "{reason}"
    );

    let gateway = TestGateway::start(&format!("[http]\nlisten = \"127.0.0.1:{port}\""));
    let state = browser.wait_for(STATE, &json!("live"), Duration::from_secs(40));
    assert_eq!(state, json!("live"), "{}", browser.eval(REASON));
    assert_eq!(gateway.stream("again").unwrap()["state"], "live");
}

#[test]
fn the_publish_page_reconnects_when_the_gateway_comes_back_chromium() {
    publish_page_reconnects_when_the_gateway_comes_back(BrowserKind::Chromium);
}

#[test]
fn the_publish_page_reconnects_when_the_gateway_comes_back_firefox() {
    publish_page_reconnects_when_the_gateway_comes_back(BrowserKind::Firefox);
}

fn phone_can_publish_over_https_with_a_self_signed_certificate(kind: BrowserKind) {
    let gateway = TestGateway::start("[http]\ntls_self_signed = true");
    let log = gateway.log();
    let line = log
        .lines()
        .find(|l| l.contains("listening on https://"))
        .unwrap_or_else(|| panic!("{log}"));
    let fingerprint = line
        .split("fingerprint=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert_eq!(fingerprint.len(), 95, "{line}");
    assert_eq!(gateway.get("/healthz").text().unwrap(), "ok");
    // The page is a secure context: the camera is allowed, and the socket is wss.
    let mut browser = Browser::start(kind);
    browser.open(&gateway.url("/publish.html?stream=phone&autostart=1"));
    assert_eq!(browser.eval("location.protocol"), json!("https:"));
    let state = browser.wait_for(STATE, &json!("live"), Duration::from_secs(30));
    assert_eq!(state, json!("live"), "{}", browser.eval(REASON));
    assert_eq!(browser.eval("window.isSecureContext"), json!(true));
}

#[test]
fn a_phone_can_publish_over_https_with_a_self_signed_certificate_chromium() {
    phone_can_publish_over_https_with_a_self_signed_certificate(BrowserKind::Chromium);
}

#[test]
fn a_phone_can_publish_over_https_with_a_self_signed_certificate_firefox() {
    phone_can_publish_over_https_with_a_self_signed_certificate(BrowserKind::Firefox);
}

/// Shaka Player (from the npm registry, in low-latency mode) plays the default
/// low-latency HLS: a picture, and time that goes on.
fn shaka_player_plays_low_latency_hls(kind: BrowserKind) {
    let gateway = TestGateway::start("");
    let mut publisher = Publisher::start(&gateway, "shaka", &[]);
    publisher.wait_for("live", Duration::from_secs(20));
    // A page of the test's own, beside Shaka's compiled script, served on loopback.
    let page = tempfile::tempdir().unwrap();
    let shaka = common::root_path("node_modules/shaka-player/dist/shaka-player.compiled.js");
    std::fs::copy(&shaka, page.path().join("shaka.js"))
        .unwrap_or_else(|e| panic!("{}: {e} (make test-deps installs it)", shaka.display()));
    let source = gateway.url("/streams/shaka/index.m3u8");
    std::fs::write(
        page.path().join("index.html"),
        format!(
            r#"<!doctype html><video id="v" muted autoplay playsinline></video>
<script src="shaka.js"></script>
<script>
window.state = "loading";
shaka.polyfill.installAll();
const video = document.getElementById("v");
const player = new shaka.Player();
player.configure({{ streaming: {{ lowLatencyMode: true }} }});
player.addEventListener("error", (e) => {{ window.state = "error " + e.detail.code; }});
player.attach(video)
  .then(() => player.load("{source}"))
  .then(() => {{ window.state = player.isLive() ? "live" : "not live"; return video.play(); }})
  .catch((e) => {{ window.state = "error " + (e.code ?? e.message + " " + e.stack); }});
</script>"#
        ),
    )
    .unwrap();
    let port = common::free_tcp_port();
    let directory = page.path().to_path_buf();
    let mut server = Process::new("http.server", move || {
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
    let mut browser = Browser::start(kind);
    browser.open(&format!("http://127.0.0.1:{port}/index.html"));
    let state = browser.wait_for("window.state", &json!("live"), Duration::from_secs(20));
    let width = browser.wait_for(
        "document.getElementById('v').videoWidth",
        &json!(320),
        Duration::from_secs(20),
    );
    let time = "document.getElementById('v').currentTime";
    let first = browser.eval(time).as_f64().unwrap_or(0.0);
    let later = wait_above(&mut browser, time, first + 2.0, Duration::from_secs(20));
    assert_eq!(state, json!("live"));
    assert_eq!(width, json!(320), "Shaka Player showed no picture");
    assert!(
        later.as_f64().unwrap_or(0.0) > first + 2.0,
        "currentTime went from {first} to {later}"
    );
}

#[test]
fn shaka_player_plays_low_latency_hls_chromium() {
    shaka_player_plays_low_latency_hls(BrowserKind::Chromium);
}

#[test]
fn shaka_player_plays_low_latency_hls_firefox() {
    shaka_player_plays_low_latency_hls(BrowserKind::Firefox);
}

/// The page builds its peer connection with the ICE servers the gateway gives: from the
/// `welcome` message where publishing needs no token, from `/api/ice-servers` with the
/// token where it needs one (the welcome then has no TURN credentials). The servers are
/// a socket on loopback that never answers: host candidates carry the media.
fn publish_page_takes_its_ice_servers_from_the_gateway(kind: BrowserKind) {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap();
    let (stun, turn) = (format!("stun:{address}"), format!("turn:{address}"));
    let configuration = "window.publisherConnection.getConfiguration().iceServers";
    for token in [None, Some("page-token")] {
        let auth = token.map_or(String::new(), |t| {
            format!("[auth]\npublish_token = \"{t}\"\n")
        });
        let gateway = TestGateway::start(&format!(
            "{auth}[webrtc]\nice_servers = [\"{stun}\", \"{turn}\"]\nturn_secret = \"north-wind\""
        ));
        let mut browser = Browser::start(kind);
        let query = token.map_or(String::new(), |t| format!("&token={t}"));
        browser.open(&gateway.url(&format!("/publish.html?stream=iced&autostart=1{query}")));
        let state = browser.wait_for(STATE, &json!("live"), Duration::from_secs(30));
        assert_eq!(state, json!("live"), "{token:?}: {}", browser.eval(REASON));
        let servers = browser.eval(configuration);
        let servers = servers.as_array().unwrap();
        assert_eq!(servers.len(), 2, "{token:?}: {servers:?}");
        assert_eq!(servers[0]["urls"], json!([stun]));
        assert_eq!(servers[1]["urls"], json!([turn]));
        let username = servers[1]["username"].as_str().unwrap();
        assert!(username.ends_with(":iced"), "{username}");
        assert_eq!(
            servers[1]["credential"].as_str().unwrap(),
            common::turn_rest_credential("north-wind", username)
        );
        // The page shows which candidates carry the media.
        let path = browser.wait_for(
            "document.getElementById('stat-path').dataset.local ?? null",
            &json!("host"),
            Duration::from_secs(10),
        );
        assert_eq!(path, json!("host"));
        let shown = browser.eval("document.getElementById('stat-path').textContent");
        // The remote side is the gateway's host candidate, or one learned from its checks
        // (Firefox may see those first: peer-reflexive).
        let shown = shown.as_str().unwrap();
        assert!(
            shown.contains("host udp → host udp") || shown.contains("host udp → prflx udp"),
            "{shown}"
        );
    }
}

#[test]
fn the_publish_page_takes_its_ice_servers_from_the_gateway_chromium() {
    publish_page_takes_its_ice_servers_from_the_gateway(BrowserKind::Chromium);
}

#[test]
fn the_publish_page_takes_its_ice_servers_from_the_gateway_firefox() {
    publish_page_takes_its_ice_servers_from_the_gateway(BrowserKind::Firefox);
}
