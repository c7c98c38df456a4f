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
    let (udp, tcp) = (common::free_udp_port(), common::free_tcp_port());
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

/// Checks minted TURN credentials for `stream`: the expiry 12 hours ahead, the
/// credential as openssl makes it.
fn assert_minted(server: &Value, stream: &str, secret: &str) {
    let username = server["username"].as_str().expect("a username");
    let (expiry, who) = username.split_once(':').expect("EXPIRY:STREAM");
    assert_eq!(who, stream);
    let expiry: u64 = expiry.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ahead = expiry.saturating_sub(now);
    assert!((12 * 3600 - 60..=12 * 3600).contains(&ahead), "{ahead}");
    assert_eq!(
        server["credential"].as_str().unwrap(),
        common::turn_rest_credential(secret, username)
    );
}

#[test]
fn the_welcome_gives_the_ice_servers_before_the_offer() {
    let webrtc = "[webrtc]\nice_servers = [\"stun:127.0.0.1:9\", \"turn:127.0.0.1:9?transport=udp\"]\n\
                  turn_secret = \"north-wind\"";
    let gateway = TestGateway::start(webrtc);
    // Publishing needs no token: TURN with credentials minted for the stream the URL names.
    let mut ws = Signalling::connect_to(&format!("{}?stream=cam1", gateway.ws_url()));
    let servers = ws.welcome["ice_servers"].as_array().unwrap().clone();
    assert_eq!(servers.len(), 2, "{}", ws.welcome);
    assert_eq!(servers[0], json!({"urls": ["stun:127.0.0.1:9"]}));
    assert_eq!(
        servers[1]["urls"],
        json!(["turn:127.0.0.1:9?transport=udp"])
    );
    assert_minted(&servers[1], "cam1", "north-wind");
    // The welcome changes nothing else: a publish is answered as before.
    ws.send(&publish("cam1"));
    assert_eq!(ws.receive()["type"], "answer");
    // A socket that names no stream gets credentials for "publisher".
    let unnamed = Signalling::connect(&gateway);
    assert_minted(
        &unnamed.welcome["ice_servers"][1],
        "publisher",
        "north-wind",
    );
    // And the API says the same without a token.
    let (status, body) = gateway.get_json("/api/ice-servers?stream=cam2");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0], json!({"urls": ["stun:127.0.0.1:9"]}));
    assert_minted(&body[1], "cam2", "north-wind");
    for bad in ["/api/ice-servers?stream=..%2Fx", "/api/ice-servers"] {
        let (status, body) = gateway.get_json(bad);
        assert_eq!(
            (status, &body["error"]),
            (400, &json!("bad-stream-name")),
            "{bad}"
        );
    }
}

#[test]
fn with_a_publish_token_turn_credentials_need_it() {
    let gateway = TestGateway::start(
        "[auth]\npublish_token = \"s3cret\"\n\
         [webrtc]\nice_servers = [\"stun:127.0.0.1:9\", \"turn:127.0.0.1:9\"]\n\
         turn_secret = \"north-wind\"",
    );
    // The welcome has no TURN: the page asks the API with its token.
    let ws = Signalling::connect_to(&format!("{}?stream=cam1", gateway.ws_url()));
    assert_eq!(
        ws.welcome,
        json!({"type": "welcome", "ice_servers": [{"urls": ["stun:127.0.0.1:9"]}]})
    );
    for path in [
        "/api/ice-servers?stream=cam1",
        "/api/ice-servers?stream=cam1&token=guess",
    ] {
        let (status, body) = gateway.get_json(path);
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["error"], "unauthorized");
        assert_eq!(body["message"], "publishing needs a valid token");
    }
    let (status, body) = gateway.get_json("/api/ice-servers?stream=cam1&token=s3cret");
    assert_eq!(status, 200, "{body}");
    assert_minted(&body[1], "cam1", "north-wind");
    let bearer = common::client()
        .get(gateway.url("/api/ice-servers?stream=cam3"))
        .bearer_auth("s3cret")
        .send()
        .unwrap();
    assert_eq!(bearer.status(), 200);
    let body: Value = bearer.json().unwrap();
    assert_minted(&body[1], "cam3", "north-wind");
    assert!(!gateway.log().contains("north-wind"));
}
