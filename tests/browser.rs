//! The pages in a real browser: headless Chromium with a fake camera and microphone,
//! driven over WebDriver.

mod common;

use common::browser::{Browser, BrowserKind};
use common::{Publisher, TestGateway, decode_sdp};
use serde_json::json;
use std::time::Duration;

const STATE: &str = "document.body.dataset.state";
const REASON: &str = "document.getElementById('reason').textContent";

#[test]
fn the_publish_page_autostarts_and_the_sdp_output_decodes() {
    let gateway = TestGateway::start("[transcode]\nwidth = 640\nheight = 360");
    let mut browser = Browser::start(BrowserKind::Chromium);
    browser.open(&gateway.url("/publish.html?stream=browser&autostart=1"));
    let state = browser.wait_for(STATE, &json!("live"), Duration::from_secs(20));
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

    let shots = common::root_path("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    browser.screenshot(&shots.join("publish.png"));
    assert!(std::fs::metadata(shots.join("publish.png")).unwrap().len() > 1000);
    // The page shows the outgoing statistics.
    let stats = browser.wait_for(
        "document.getElementById('stat-resolution').textContent !== '–'",
        &json!(true),
        Duration::from_secs(5),
    );
    assert_eq!(stats, json!(true));

    // A second page: the dashboard lists the stream and plays it through hls.js.
    let mut dashboard = Browser::start(BrowserKind::Chromium);
    dashboard.open(&gateway.url("/"));
    let row = "document.querySelector('tr[data-stream=\"browser\"]')?.dataset.state";
    assert_eq!(
        dashboard.wait_for(row, &json!("live"), Duration::from_secs(10)),
        json!("live")
    );
    dashboard.eval("document.querySelector('tr[data-stream=\"browser\"] button.watch').click()");
    let width = dashboard.wait_for(
        "document.getElementById('player').videoWidth",
        &json!(640),
        Duration::from_secs(20),
    );
    assert_eq!(width, json!(640), "the player never showed a picture");
    let first = dashboard.eval("document.getElementById('player').currentTime");
    std::thread::sleep(Duration::from_secs(3));
    let later = dashboard.eval("document.getElementById('player').currentTime");
    assert!(
        later.as_f64().unwrap() > first.as_f64().unwrap() + 1.0,
        "currentTime went from {first} to {later}"
    );
    // hls.js plays wherever it runs, in its low-latency mode on the default variant's
    // parts, and the page says how far behind live it is.
    assert_eq!(
        dashboard.eval("document.getElementById('player-status').dataset.player"),
        json!("hls.js")
    );
    let status = dashboard.eval("document.getElementById('player-status').textContent");
    assert!(
        status.as_str().unwrap_or("").contains("(low-latency)"),
        "{status}"
    );
    dashboard.screenshot(&shots.join("dashboard.png"));

    // Stop in the publisher page ends the stream in the dashboard.
    browser.eval("document.getElementById('stop').click()");
    gateway.wait_stream_ended("browser", Duration::from_secs(3));
    let state = dashboard.wait_for(row, &json!("ended"), Duration::from_secs(5));
    assert_eq!(state, json!("ended"));
}

#[test]
fn the_publish_page_shows_the_gateways_errors() {
    let gateway = TestGateway::start("[auth]\npublish_token = \"letmein\"");
    let mut browser = Browser::start(BrowserKind::Chromium);
    browser.open(&gateway.url("/publish.html?stream=locked&autostart=1"));
    let state = browser.wait_for(STATE, &json!("error"), Duration::from_secs(20));
    assert_eq!(state, json!("error"));
    assert_eq!(
        browser.eval(REASON),
        json!("(401 unauthorized: publishing needs a valid token)")
    );

    let mut taken = Publisher::start(&gateway, "taken", &["--token", "letmein"]);
    taken.wait_for("live", Duration::from_secs(20));
    browser.open(&gateway.url("/publish.html?stream=taken&token=letmein&autostart=1"));
    browser.wait_for(STATE, &json!("error"), Duration::from_secs(20));
    assert_eq!(
        browser.eval(REASON),
        json!("(409 stream-in-use: stream taken already has a publisher)")
    );
}

#[test]
fn a_phone_can_publish_over_https_with_a_self_signed_certificate() {
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
    let mut browser = Browser::start(BrowserKind::Chromium);
    browser.open(&gateway.url("/publish.html?stream=phone&autostart=1"));
    let state = browser.wait_for(STATE, &json!("live"), Duration::from_secs(20));
    assert_eq!(state, json!("live"), "{}", browser.eval(REASON));
    assert_eq!(browser.eval("window.isSecureContext"), json!(true));
}

/// Shaka Player (from the npm registry, in low-latency mode) plays the default
/// low-latency HLS in Chromium: a picture, and time that goes on.
#[test]
fn shaka_player_plays_low_latency_hls() {
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
    let mut server = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--directory")
        .arg(page.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _ = common::eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let mut browser = Browser::start(BrowserKind::Chromium);
    browser.open(&format!("http://127.0.0.1:{port}/index.html"));
    let state = browser.wait_for("window.state", &json!("live"), Duration::from_secs(20));
    let width = browser.wait_for(
        "document.getElementById('v').videoWidth",
        &json!(320),
        Duration::from_secs(20),
    );
    let first = browser.eval("document.getElementById('v').currentTime");
    std::thread::sleep(Duration::from_secs(3));
    let later = browser.eval("document.getElementById('v').currentTime");
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(state, json!("live"));
    assert_eq!(width, json!(320), "Shaka Player showed no picture");
    assert!(
        later.as_f64().unwrap_or(0.0) > first.as_f64().unwrap_or(0.0) + 1.0,
        "currentTime went from {first} to {later}"
    );
}
