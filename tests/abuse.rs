//! Clients that misbehave: odd paths, idle connections past the limits, a WebSocket that
//! never publishes, an oversized message. Each asserts the limit holds and that the gateway
//! still answers afterwards. Loopback only, bounded loops.

mod common;

use common::TestGateway;
use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

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
}
