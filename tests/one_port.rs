//! One UDP port for every publisher (`webrtc.udp_port`): many publishers at once on one
//! socket, each reaching its outputs; a browser through it; the stream object and
//! `/metrics` saying which path carries the media; `udp_port = 0` (a port per
//! publisher) still working; the removed port range refused by name; a TURN or STUN
//! server that never answers the gateway not slowing a publish.

mod common;

use common::browser::{Browser, BrowserKind};
use common::{
    GATEWAY, Publisher, Signalling, TestGateway, decode_sdp, eventually, free_tcp_port,
    free_udp_port,
};
use serde_json::json;
use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

/// The local ports of the UDP sockets `pid` holds on `ip` (hex as in /proc/net/udp,
/// e.g. `0100007F` for 127.0.0.1).
fn udp_ports_on(pid: u32, ip_hex: &str) -> Vec<u16> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/udp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (ip, port) = fields.get(1)?.split_once(':')?;
            let inode = fields.get(9)?;
            (ip == ip_hex && inodes.contains(*inode)).then(|| u16::from_str_radix(port, 16).ok())?
        })
        .collect()
}

const LOOPBACK: &str = "0100007F";

/// Small H.264 publishers, passed through to the outputs (no encoding in the gateway).
const LIGHT: &[&str] = &[
    "--codec",
    "h264",
    "--no-audio",
    "--width",
    "160",
    "--height",
    "96",
    "--fps",
    "15",
];

fn live(gateway: &TestGateway, name: &str) -> bool {
    gateway
        .stream(name)
        .is_some_and(|s| s["state"] == "live" && s["transport"] == "udp")
}

#[test]
fn sixty_four_publishers_share_one_udp_socket() {
    let udp_port = free_udp_port();
    let gateway = TestGateway::start(&format!(
        "[webrtc]\nudp_port = {udp_port}\n[transcode]\nmode = \"auto\"\n\
         [hls]\nenabled = false\n[limits]\nmax_publishers = 64"
    ));
    let names: Vec<String> = (0..64).map(|i| format!("many{i}")).collect();
    // In waves of 8, each live before the next starts: 64 encoders starting at once on
    // a small machine are slower to answer ICE checks than the gateway allows.
    let mut publishers = Vec::new();
    for wave in names.chunks(8) {
        for name in wave {
            publishers.push(Publisher::start(&gateway, name, LIGHT));
        }
        let wave_live = eventually(Duration::from_secs(120), || {
            wave.iter().all(|name| live(&gateway, name)).then_some(())
        });
        let not_live: Vec<_> = wave.iter().filter(|n| !live(&gateway, n)).collect();
        let metrics = gateway.get("/metrics").text().unwrap();
        let ice: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("webrtc_gateway_ice_"))
            .collect();
        assert!(
            wave_live.is_some(),
            "not live over UDP: {not_live:?}; {ice:?}\n{}",
            gateway.log()
        );
    }
    // Their ICE, DTLS and SRTP on one socket: the only one on the ICE address.
    let pid = gateway.pid().unwrap();
    assert_eq!(udp_ports_on(pid, LOOPBACK), [udp_port]);
    let metrics = gateway.get("/metrics").text().unwrap();
    assert!(
        metrics.contains("webrtc_gateway_publishers_by_transport{transport=\"udp\"} 64\n"),
        "{metrics}"
    );
    // A sample of them decode through their SDP outputs, the last ones started too.
    for name in ["many0", "many21", "many42", "many63"] {
        let decoded = decode_sdp(&gateway.url(&format!("/streams/{name}/stream.sdp")), 3.0);
        assert_eq!(
            decoded.video_codec.as_deref(),
            Some("h264"),
            "{name}: {}",
            decoded.stderr
        );
        assert!(
            decoded.video_frames >= 10,
            "{name}: {} frames",
            decoded.video_frames
        );
    }
    for publisher in &mut publishers {
        publisher.kill();
    }
    for name in &names {
        gateway.wait_stream_ended(name, Duration::from_secs(60));
    }
}

#[test]
fn a_browser_publishes_through_the_one_port() {
    let udp_port = free_udp_port();
    let gateway = TestGateway::start(&format!("[webrtc]\nudp_port = {udp_port}"));
    let mut browser = Browser::start(BrowserKind::Chromium);
    browser.open(&gateway.url("/publish.html?stream=page&autostart=1"));
    let state = browser.wait_for(
        "document.body.dataset.state",
        &json!("live"),
        Duration::from_secs(30),
    );
    assert_eq!(state, json!("live"), "{}", gateway.log());
    let transport = eventually(Duration::from_secs(10), || {
        let stream = gateway.stream("page")?;
        stream["transport"].as_str().map(str::to_owned)
    });
    assert_eq!(transport.as_deref(), Some("udp"));
    assert_eq!(udp_ports_on(gateway.pid().unwrap(), LOOPBACK), [udp_port]);
    let decoded = decode_sdp(&gateway.url("/streams/page/stream.sdp"), 3.0);
    assert_eq!(
        decoded.video_codec.as_deref(),
        Some("h264"),
        "{}",
        decoded.stderr
    );
    assert!(
        decoded.video_frames >= 60,
        "{} frames",
        decoded.video_frames
    );
}

#[test]
fn udp_port_0_gives_each_publisher_a_port_of_its_own() {
    let gateway = TestGateway::start("[webrtc]\nudp_port = 0\ntcp_port = 0");
    let mut publishers: Vec<Publisher> = ["own0", "own1"]
        .iter()
        .map(|name| Publisher::start(&gateway, name, &[]))
        .collect();
    let both = eventually(Duration::from_secs(60), || {
        (live(&gateway, "own0") && live(&gateway, "own1")).then_some(())
    });
    assert!(both.is_some(), "{}", gateway.log());
    let ports = udp_ports_on(gateway.pid().unwrap(), LOOPBACK);
    assert!(ports.len() >= 2, "a socket per publisher: {ports:?}");
    let decoded = decode_sdp(&gateway.url("/streams/own1/stream.sdp"), 3.0);
    assert!(
        decoded.video_frames >= 60,
        "{} frames",
        decoded.video_frames
    );
    for publisher in &mut publishers {
        publisher.kill();
    }
}

#[test]
fn a_file_with_the_removed_port_range_names_udp_port() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.toml");
    std::fs::write(
        &path,
        "[webrtc]\nudp_port_min = 50000\nudp_port_max = 50100\n",
    )
    .unwrap();
    let output = Command::new(GATEWAY)
        .args(["check-config", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for key in ["webrtc.udp_port_min", "webrtc.udp_port_max"] {
        assert!(
            stderr.contains(&format!("{key}: removed;")) && stderr.contains("set webrtc.udp_port"),
            "{stderr}"
        );
    }
}

#[test]
fn a_busy_ice_port_is_named_at_startup() {
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        format!(
            "[http]\nlisten = \"127.0.0.1:{}\"\n[transcode]\npipelines_dir = \"{}\"\n\
             [webrtc]\nbind_address = \"127.0.0.1\"\nudp_port = {port}\ntcp_port = 0\n",
            free_tcp_port(),
            common::root_path("pipelines").display()
        ),
    )
    .unwrap();
    let output = Command::new(GATEWAY)
        .args(["--config", path.to_str().unwrap()])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot bind UDP 127.0.0.1:{port} (webrtc.udp_port)"
        )),
        "{stderr}"
    );
}

#[test]
fn servers_that_never_answer_the_gateway_do_not_slow_the_answer() {
    // A TURN and a STUN server that take the gateway's requests and never answer.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let gateway = TestGateway::start(&format!(
        "[webrtc]\nice_servers = [\"turn:127.0.0.1:{port}\", \"stun:127.0.0.1:{port}\"]"
    ));
    let mut ws = Signalling::connect(&gateway);
    let started = Instant::now();
    ws.send(&json!({"type": "publish", "stream": "quick", "sdp": common::BROWSER_OFFER}));
    let answer = ws.receive();
    let took = started.elapsed();
    assert_eq!(answer["type"], "answer", "{answer}");
    // Host candidates at once; the gather wait is at most a second.
    assert!(
        took < Duration::from_millis(2500),
        "answered after {took:?}"
    );
    let sdp = answer["sdp"].as_str().unwrap();
    assert!(sdp.contains("typ host"), "{sdp}");
}
