//! WebSocket signalling against the real gateway: bad input gets the contract's errors
//! and the connection stays usable; limits, tokens and socket closes behave.

mod common;

use common::{BROWSER_OFFER, Signalling, TestGateway};
use serde_json::{Value, json};
use std::time::Duration;

fn publish(stream: &str) -> Value {
    json!({"type": "publish", "stream": stream, "sdp": BROWSER_OFFER})
}

fn assert_error(message: &Value, code: u16, error: &str, text: &str) {
    assert_eq!(message["type"], "error", "{message}");
    assert_eq!(message["code"], code, "{message}");
    assert_eq!(message["error"], error, "{message}");
    assert_eq!(message["message"], text, "{message}");
}

#[test]
fn bad_input_gets_errors_and_the_connection_stays_usable() {
    let gateway = TestGateway::start("[limits]\nmax_message_bytes = 8192");
    let mut ws = Signalling::connect(&gateway);
    // The same status and token as over WHIP: one table says both.
    let receiving = BROWSER_OFFER.replace("a=sendonly", "a=recvonly");
    let no_codec = BROWSER_OFFER
        .replace("opus/48000/2", "ISAC/16000")
        .replace("VP8/90000", "VP9/90000")
        .replace("H264/90000", "AV1/90000");
    let table: Vec<(String, u16, &str, &str)> = vec![
        (
            "{not json".into(),
            400,
            "malformed-message",
            "message is not JSON: key must be a string at line 1 column 2",
        ),
        (
            "[]".into(),
            400,
            "malformed-message",
            "message must be a JSON object",
        ),
        (
            "{\"stream\":\"x\"}".into(),
            400,
            "malformed-message",
            "message has no \"type\"",
        ),
        (
            "{\"type\":\"subscribe\"}".into(),
            400,
            "unknown-type",
            "unknown message type \"subscribe\"",
        ),
        (
            json!({"type": "publish", "stream": "a"}).to_string(),
            400,
            "malformed-message",
            "invalid message: missing field `sdp`",
        ),
        (
            json!({"type": "publish", "stream": "../etc/passwd", "sdp": BROWSER_OFFER}).to_string(),
            400,
            "bad-stream-name",
            "stream names are 1 to 64 letters, digits, '_' or '-'",
        ),
        (
            json!({"type": "publish", "stream": "ok", "sdp": "this is not sdp"}).to_string(),
            400,
            "bad-sdp",
            "the offer is not valid SDP: it does not start with v=0",
        ),
        (
            json!({"type": "publish", "stream": "ok", "sdp": no_codec}).to_string(),
            415,
            "unsupported-codec",
            "the offer has no video (VP8, H.264) or audio (Opus) the gateway accepts",
        ),
        (
            json!({"type": "publish", "stream": "ok", "sdp": receiving}).to_string(),
            422,
            "unprocessable-offer",
            "the offer sends no media (every section is recvonly or inactive)",
        ),
        (
            json!({"type": "candidate", "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"})
                .to_string(),
            400,
            "not-publishing",
            "a candidate needs a publication: send publish first",
        ),
        (
            json!({"type": "unpublish"}).to_string(),
            400,
            "not-publishing",
            "this connection publishes nothing",
        ),
        (
            format!(
                "{{\"type\":\"publish\",\"stream\":\"big\",\"sdp\":\"{}\"}}",
                "a".repeat(9000)
            ),
            400,
            "message-too-large",
            "message of 9042 bytes is larger than the limit of 8192",
        ),
    ];
    for (input, code, error, text) in &table {
        ws.send_text(input);
        assert_error(&ws.receive(), *code, error, text);
    }
    // Still usable: a good publication is answered, and nothing was registered before.
    assert_eq!(gateway.get_json("/api/streams").1, json!([]));
    ws.send(&publish("fine"));
    let answer = ws.receive();
    assert_eq!(answer["type"], "answer", "{answer}");
    assert_eq!(answer["stream"], "fine");
    let sdp = answer["sdp"].as_str().unwrap();
    assert!(sdp.contains("a=recvonly"), "{sdp}");
    assert!(
        sdp.contains("VP8/90000") && !sdp.contains("H264/90000"),
        "{sdp}"
    );
    assert!(sdp.contains("opus/48000"), "{sdp}");
    assert_eq!(gateway.stream("fine").unwrap()["state"], "connecting");

    // One publication per connection.
    ws.send(&publish("second"));
    assert_error(
        &ws.receive(),
        409,
        "already-publishing",
        "this connection already publishes stream fine; unpublish first",
    );
    ws.send(&json!({"type": "unpublish"}));
    let ended = ws.receive();
    assert_eq!(
        ended,
        json!({"type": "ended", "stream": "fine", "reason": "unpublished"})
    );
    gateway.wait_stream_ended("fine", Duration::from_secs(2));
}

#[test]
fn names_in_use_limits_and_503_before_the_first_frame() {
    let gateway = TestGateway::start("[limits]\nmax_publishers = 2");
    let mut a = Signalling::connect(&gateway);
    a.send(&publish("one"));
    assert_eq!(a.receive()["type"], "answer");

    // Connecting, no frame yet: the SDP is not ready.
    let response = gateway.get("/streams/one/stream.sdp");
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(gateway.get("/streams/nobody/stream.sdp").status(), 404);
    let (status, body) = gateway.get_json("/streams/no%2Fpe/stream.sdp");
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "bad-stream-name");
    let (status, body) = gateway.get_json("/api/streams/nobody");
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("no-such-stream"))
    );

    let mut b = Signalling::connect(&gateway);
    b.send(&publish("one"));
    assert_error(
        &b.receive(),
        409,
        "stream-in-use",
        "stream one already has a publisher",
    );
    b.send(&publish("two"));
    assert_eq!(b.receive()["type"], "answer");

    let mut c = Signalling::connect(&gateway);
    c.send(&publish("three"));
    assert_error(
        &c.receive(),
        503,
        "too-many-publishers",
        "the gateway already carries its limit of 2 publishers",
    );

    // Closing a socket ends its stream and frees room for another.
    a.close();
    let took = gateway.wait_stream_ended("one", Duration::from_secs(3));
    assert!(took <= Duration::from_secs(2), "{took:?}");
    c.send(&publish("three"));
    assert_eq!(c.receive()["type"], "answer");
}

#[test]
fn a_publish_token_is_required_when_configured() {
    let gateway = TestGateway::start("[auth]\npublish_token = \"s3cret\"");
    let mut ws = Signalling::connect(&gateway);
    ws.send(&publish("tok"));
    assert_error(
        &ws.receive(),
        401,
        "unauthorized",
        "publishing needs a valid token",
    );
    let mut wrong = publish("tok");
    wrong["token"] = "guess".into();
    ws.send(&wrong);
    assert_error(
        &ws.receive(),
        401,
        "unauthorized",
        "publishing needs a valid token",
    );
    let mut right = publish("tok");
    right["token"] = "s3cret".into();
    ws.send(&right);
    assert_eq!(ws.receive()["type"], "answer");
    assert!(!gateway.log().contains("s3cret"));
}

#[test]
fn a_publisher_that_never_connects_is_given_up() {
    let gateway = TestGateway::start("");
    let mut ws = Signalling::connect(&gateway);
    ws.send(&publish("silent"));
    assert_eq!(ws.receive()["type"], "answer");
    let ended = ws.receive();
    assert_eq!(ended["type"], "ended", "{ended}");
    assert_eq!(ended["stream"], "silent");
    assert!(gateway.stream_ended("silent"));
}

#[test]
fn every_candidate_names_the_one_udp_port_or_the_tcp_ports() {
    let (udp, tcp) = (common::free_udp_range(1), common::free_tcp_port());
    let gateway = TestGateway::start(&format!("[webrtc]\nudp_port = {udp}\ntcp_port = {tcp}"));
    let mut ws = Signalling::connect(&gateway);
    ws.send(&publish("one-port"));
    let answer = ws.receive();
    let sdp = answer["sdp"].as_str().unwrap();
    let candidates: Vec<Vec<&str>> = sdp
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let port = |c: &Vec<&str>| c[5].parse::<u16>().unwrap();
    let udp_ports: Vec<u16> = candidates
        .iter()
        .filter(|c| c[2].eq_ignore_ascii_case("udp"))
        .map(port)
        .collect();
    assert!(!udp_ports.is_empty(), "{sdp}");
    assert!(udp_ports.iter().all(|p| *p == udp), "{sdp}");
    let mut tcp_ports: Vec<u16> = candidates
        .iter()
        .filter(|c| c[2].eq_ignore_ascii_case("tcp"))
        .map(port)
        .collect();
    // Each media section lists the same candidates.
    tcp_ports.sort();
    tcp_ports.dedup();
    let mut expected = vec![tcp, gateway.port];
    expected.sort();
    assert_eq!(
        tcp_ports, expected,
        "passive candidates only, on both ports: {sdp}"
    );
    assert!(!sdp.contains("tcptype active"), "{sdp}");
}
