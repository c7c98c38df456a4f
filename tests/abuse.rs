//! Clients that misbehave: odd paths, idle connections past the limits, a WebSocket that
//! never publishes, an oversized message, a candidate flood, a publisher that sends no
//! media, pictures larger than the limit. Each asserts the limit holds and that a good
//! publisher still goes live afterwards. Loopback only, bounded loops.

mod common;

use common::{Publisher, Signalling, TestGateway};
use serde_json::json;
use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

/// A good publisher still goes live, and is ended when it leaves.
fn a_publisher_goes_live(gateway: &TestGateway) {
    let mut publisher = Publisher::start(gateway, "good", &[]);
    publisher.wait_for("live", Duration::from_secs(30));
    publisher.kill();
    gateway.wait_stream_ended("good", Duration::from_secs(20));
}

fn head(gateway: &TestGateway, path: &str) -> u16 {
    common::client()
        .head(gateway.url(path))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn odd_paths_are_client_errors() {
    let gateway = TestGateway::start("");
    let long = "x".repeat(256);
    let longer = "x".repeat(5000);
    for path in [
        "/%00".to_string(),
        "/streams/%00".to_string(),
        format!("/{long}"),
        format!("/streams/{longer}"),
        "/streams/%00/index.m3u8".to_string(),
        "/streams/a/..%2f..%2fetc%2fpasswd".to_string(),
    ] {
        let status = head(&gateway, &path);
        assert!((400..500).contains(&status), "{path}: {status}");
    }
    assert_eq!(head(&gateway, "/healthz"), 200);
    a_publisher_goes_live(&gateway);
}

/// Reads until the server closes the socket; true when it did before `within`.
fn closed_within(mut stream: TcpStream, within: Duration) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + within;
    let mut buffer = [0u8; 256];
    while Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn idle_connections_are_closed_and_those_past_the_limit_refused() {
    let gateway =
        TestGateway::start("[http]\nrequest_timeout_s = 2\n[limits]\nmax_connections = 16");
    let connect = || TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
    let held: Vec<TcpStream> = (0..16).map(|_| connect()).collect();
    // Past the limit: closed at once.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        closed_within(connect(), Duration::from_secs(2)),
        "a connection past limits.max_connections stayed open"
    );
    // Idle ones, which never send a request: closed after the request timeout.
    for stream in held {
        assert!(
            closed_within(stream, Duration::from_secs(10)),
            "an idle connection outlived http.request_timeout_s"
        );
    }
    assert_eq!(head(&gateway, "/healthz"), 200);
    a_publisher_goes_live(&gateway);
}

fn close_code(gateway: &TestGateway, send: Option<Message>, within: Duration) -> Option<u16> {
    let (mut socket, _) = tungstenite::connect(gateway.ws_url()).unwrap();
    if let Some(message) = send {
        let _ = socket.send(message);
    }
    if let tungstenite::stream::MaybeTlsStream::Plain(stream) = socket.get_ref() {
        stream.set_read_timeout(Some(within)).unwrap();
    }
    loop {
        match socket.read() {
            Ok(Message::Close(Some(frame))) => return Some(u16::from(frame.code)),
            Ok(Message::Close(None)) => return None,
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

#[test]
fn websockets_are_closed_with_a_code_that_says_why() {
    let gateway = TestGateway::start("[signalling]\npublish_timeout_s = 1");
    assert_eq!(
        close_code(&gateway, None, Duration::from_secs(10)),
        Some(u16::from(CloseCode::Policy)),
        "a socket that never publishes"
    );
    // 8 MB: far past limits.max_message_bytes (64 KiB), not read to the end.
    let huge = Message::Text("x".repeat(8 * 1024 * 1024).into());
    assert_eq!(
        close_code(&gateway, Some(huge), Duration::from_secs(10)),
        Some(u16::from(CloseCode::Size)),
        "an 8 MB message"
    );
    assert_eq!(head(&gateway, "/healthz"), 200);
    a_publisher_goes_live(&gateway);
}

#[test]
fn a_slow_client_is_closed_after_the_request_timeout() {
    use std::io::Write;
    let gateway = TestGateway::start("[http]\nrequest_timeout_s = 2");
    let mut stream = TcpStream::connect(("127.0.0.1", gateway.port)).unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaa";
    let started = Instant::now();
    let mut closed = false;
    // One header byte every 300 ms: the headers are never complete.
    for byte in request {
        if stream.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let closed = closed || closed_within(stream, Duration::from_secs(5));
    assert!(closed, "a slowloris client stayed {:?}", started.elapsed());
    assert_eq!(head(&gateway, "/healthz"), 200);
    a_publisher_goes_live(&gateway);
}

/// Candidates sent to each socket of a set on loopback: how many datagrams each received.
struct Targets {
    sockets: Vec<std::net::UdpSocket>,
}

impl Targets {
    fn bind(n: usize) -> Targets {
        let sockets = (0..n)
            .map(|_| {
                let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                socket.set_nonblocking(true).unwrap();
                socket
            })
            .collect();
        Targets { sockets }
    }

    fn ports(&self) -> Vec<u16> {
        self.sockets
            .iter()
            .map(|s| s.local_addr().unwrap().port())
            .collect()
    }

    /// Datagrams received so far by each socket (read until empty).
    fn drain(&self, counts: &mut [usize]) {
        let mut buffer = [0u8; 2048];
        for (socket, count) in self.sockets.iter().zip(counts.iter_mut()) {
            while socket.recv(&mut buffer).is_ok() {
                *count += 1;
            }
        }
    }
}

#[test]
fn a_candidate_flood_reaches_only_the_first_candidates() {
    let max = 8;
    let gateway = TestGateway::start(&format!("[limits]\nmax_remote_candidates = {max}"));
    let targets = Targets::bind(4 * max);
    let mut signalling = Signalling::connect(&gateway);
    signalling.send(&json!({"type": "publish", "stream": "flood",
        "sdp": include_str!("common/browser_offer.sdp")}));
    assert_eq!(signalling.receive()["type"], "answer");
    // The first candidates name the sockets above; thousands more name other ports.
    let flood = 2000;
    let ports: Vec<u16> = targets
        .ports()
        .into_iter()
        .chain((0..flood).map(|k| 20_000 + k as u16))
        .collect();
    for (k, port) in ports.iter().enumerate() {
        let candidate = format!(
            "candidate:{k} 1 udp {} 127.0.0.1 {port} typ host",
            2_000_000_000 - k
        );
        signalling.send(&json!({"type": "candidate", "candidate": candidate,
            "sdpMid": "0", "sdpMLineIndex": 0}));
    }
    let mut counts = vec![0usize; targets.sockets.len()];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        targets.drain(&mut counts);
        std::thread::sleep(Duration::from_millis(50));
    }
    let reached = counts.iter().filter(|c| **c > 0).count();
    let datagrams: usize = counts.iter().sum();
    eprintln!("{reached} candidates reached, {datagrams} datagrams in 5 s: {counts:?}");
    assert!(reached >= 1, "the gateway checked no candidate at all");
    assert!(
        counts[max..].iter().all(|c| *c == 0),
        "candidates past limits.max_remote_candidates were checked: {counts:?}"
    );
    assert!(datagrams < 100 * max, "{datagrams} datagrams");
    let ignored =
        gateway.stream("flood").expect("the stream is listed")["stats"]["candidates_ignored"]
            .as_u64()
            .unwrap();
    assert_eq!(ignored as usize, ports.len() - max);
    signalling.close();
    gateway.wait_stream_ended("flood", Duration::from_secs(20));
    a_publisher_goes_live(&gateway);
}

#[test]
fn a_publisher_that_sends_no_media_is_ended() {
    let gateway = TestGateway::start("[webrtc]\nmedia_timeout_s = 2");
    let mut silent = Publisher::start(&gateway, "silent", &["--silent"]);
    silent.wait_for_ice("connected", Duration::from_secs(20));
    let at = Instant::now();
    let ended = silent.wait_for("ended", Duration::from_secs(30));
    assert_eq!(ended["reason"], "no-media", "{ended}");
    eprintln!(
        "a silent publisher freed {:?} after ICE connected",
        at.elapsed()
    );
    gateway.wait_stream_ended("silent", Duration::from_secs(10));
    a_publisher_goes_live(&gateway);
}

#[test]
fn pictures_larger_than_the_limit_end_the_publisher_before_decoding() {
    let gateway = TestGateway::start("[limits]\nmax_input_width = 320\nmax_input_height = 240");
    for codec in ["vp8", "h264"] {
        let stream = format!("large-{codec}");
        let mut large = Publisher::start(
            &gateway,
            &stream,
            &[
                "--codec",
                codec,
                "--width",
                "640",
                "--height",
                "480",
                "--no-audio",
            ],
        );
        let ended = large.wait_for("ended", Duration::from_secs(30));
        assert_eq!(ended["reason"], "input-too-large", "{codec}: {ended}");
        assert!(
            !large.seen.iter().any(|m| m["type"] == "live"),
            "{codec}: a picture past the limit went live"
        );
        gateway.wait_stream_ended(&stream, Duration::from_secs(10));
    }
    // Pictures within the limit go live, in both codecs.
    for codec in ["vp8", "h264"] {
        let stream = format!("small-{codec}");
        let mut small = Publisher::start(
            &gateway,
            &stream,
            &[
                "--codec",
                codec,
                "--width",
                "320",
                "--height",
                "240",
                "--no-audio",
            ],
        );
        small.wait_for("live", Duration::from_secs(30));
    }
    let log = gateway.log();
    assert!(!log.contains("panicked"), "{log}");
}
