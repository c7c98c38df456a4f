//! WHIP ingest (RFC 9725): a client that is not ours (aiortc) publishes, every status
//! code the protocol names, trickle, DELETE, CORS preflight, and tokens kept secret.

mod common;

use common::{BROWSER_OFFER, TestGateway, aiortc_whip, decode_sdp};
use reqwest::blocking::{Client, Response};
use std::time::{Duration, Instant};

fn post(
    gateway: &TestGateway,
    name: &str,
    content_type: &str,
    token: Option<&str>,
    body: &str,
) -> Response {
    let mut request = Client::new()
        .post(gateway.url(&format!("/whip/{name}")))
        .header("Content-Type", content_type)
        .body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().unwrap()
}

fn offer() -> String {
    BROWSER_OFFER.to_string()
}

#[test]
fn aiortc_publishes_over_whip_and_the_output_decodes() {
    let gateway = TestGateway::start("[auth]\npublish_token = \"whip-secret-token\"");
    let (mut client, mut lines) = aiortc_whip(
        &gateway.url("/whip/aio"),
        &["--token", "whip-secret-token", "--seconds", "8"],
    );
    let created: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(created["status"], 201, "{created}");
    assert!(
        created["location"]
            .as_str()
            .unwrap()
            .starts_with("/whip/aio/")
    );
    let live = common::eventually(Duration::from_secs(20), || {
        (gateway.stream("aio")?["state"] == "live").then_some(())
    });
    assert!(live.is_some(), "{}", gateway.log());
    assert_eq!(gateway.stream("aio").unwrap()["publisher"], "whip");
    let decoded = decode_sdp(&gateway.url("/streams/aio/stream.sdp"), 3.0);
    decoded.assert_h264_and_opus(70);
    // The client deletes its session at the end: the stream ends.
    let mut deleted = None;
    for line in lines.map_while(Result::ok) {
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        if value["step"] == "deleted" {
            deleted = Some(value);
        }
    }
    assert_eq!(deleted.unwrap()["status"], 200);
    gateway.wait_stream_ended("aio", Duration::from_secs(2));
    let exit = client.wait_exit(Duration::from_secs(30));
    assert!(exit.is_some_and(|status| status.success()), "{exit:?}");
    assert!(!gateway.log().contains("whip-secret-token"));
}

#[test]
fn whip_status_codes() {
    let gateway = TestGateway::start("[limits]\nmax_publishers = 2");
    let two_videos = format!(
        "{}{}",
        offer(),
        offer()
            .split("m=video")
            .nth(1)
            .map(|v| format!("m=video{}", v.replace("a=mid:1", "a=mid:2")))
            .unwrap()
    );
    let no_codec = offer()
        .replace("opus/48000/2", "ISAC/16000")
        .replace("VP8/90000", "VP9/90000")
        .replace("H264/90000", "AV1/90000");
    let table: Vec<(&str, &str, String, u16, &str)> = vec![
        ("a", "text/plain", offer(), 415, "unsupported-media-type"),
        ("a", "application/sdp", "not sdp".into(), 400, "bad-sdp"),
        (
            "a",
            "application/sdp",
            offer().replace("a=sendonly", "a=recvonly"),
            422,
            "unprocessable-offer",
        ),
        (
            "a",
            "application/sdp",
            offer().replace("a=sendonly", "a=inactive"),
            422,
            "unprocessable-offer",
        ),
        (
            "a",
            "application/sdp",
            two_videos,
            422,
            "unprocessable-offer",
        ),
        ("a", "application/sdp", no_codec, 415, "unsupported-codec"),
        (
            "bad name",
            "application/sdp",
            offer(),
            400,
            "bad-stream-name",
        ),
    ];
    for (name, content_type, body, status, error) in &table {
        let response = post(
            &gateway,
            &name.replace(' ', "%20"),
            content_type,
            None,
            body,
        );
        assert_eq!(response.status().as_u16(), *status, "{name} {content_type}");
        let body: serde_json::Value = response.json().unwrap();
        assert_eq!(body["error"], *error, "{body}");
    }

    // Created: an answer, a Location and an ETag; the offer needed no rtcp-mux-only.
    let created = post(&gateway, "one", "application/sdp", None, &offer());
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["content-type"], "application/sdp");
    assert_eq!(created.headers()["access-control-allow-origin"], "*");
    let location = created.headers()["location"].to_str().unwrap().to_string();
    let etag = created.headers()["etag"].to_str().unwrap().to_string();
    assert!(
        location.starts_with("/whip/one/") && location.len() > 30,
        "{location}"
    );
    let answer = created.text().unwrap();
    assert!(answer.contains("a=recvonly"), "{answer}");

    let conflict = post(&gateway, "one", "application/sdp", None, &offer());
    assert_eq!(conflict.status(), 409);
    assert_eq!(
        post(&gateway, "two", "application/sdp", None, &offer()).status(),
        201
    );
    let full = post(&gateway, "three", "application/sdp", None, &offer());
    assert_eq!(full.status(), 503);
    assert_eq!(full.headers()["retry-after"], "1");

    // PATCH: trickle, stale ETag, ICE restart, wrong type, unknown session.
    let client = Client::new();
    let patch = |body: &str, content_type: &str, if_match: Option<&str>, url: &str| {
        let mut request = client
            .patch(gateway.url(url))
            .header("Content-Type", content_type)
            .body(body.to_string());
        if let Some(tag) = if_match {
            request = request.header("If-Match", tag);
        }
        request.send().unwrap().status().as_u16()
    };
    let trickle = "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
                   a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\na=end-of-candidates\r\n";
    let fragment = "application/trickle-ice-sdpfrag";
    assert_eq!(patch(trickle, fragment, Some(&etag), &location), 204);
    assert_eq!(patch(trickle, fragment, None, &location), 204);
    assert_eq!(patch(trickle, fragment, Some("\"stale\""), &location), 412);
    let restart = trickle.replace("ice-ufrag:abcd", "ice-ufrag:efgh");
    assert_eq!(patch(&restart, fragment, None, &location), 422);
    assert_eq!(patch(trickle, "application/sdp", None, &location), 415);
    assert_eq!(
        patch(trickle, fragment, None, "/whip/one/nosuchsession"),
        404
    );

    // DELETE ends the stream within 1 s; again, the session is gone.
    let start = Instant::now();
    let deleted = client.delete(gateway.url(&location)).send().unwrap();
    assert_eq!(deleted.status(), 200);
    gateway.wait_stream_ended("one", Duration::from_secs(1));
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(
        client
            .delete(gateway.url(&location))
            .send()
            .unwrap()
            .status(),
        404
    );
}

#[test]
fn whip_tokens_and_preflight() {
    // A STUN server on this machine that never answers: the gateway asks it (and
    // names it in its Link headers) without reaching past loopback.
    let stun_socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let stun = format!("stun:{}", stun_socket.local_addr().unwrap());
    let gateway = TestGateway::start(&format!(
        "[auth]\npublish_token = \"global-token-123\"\n\
         [[auth.streams]]\nname = \"cam7\"\ntoken = \"cam7-token-456\"\n\
         [webrtc]\nice_servers = [\"{stun}\"]",
    ));
    for token in [None, Some("wrong"), Some("cam7-token-456")] {
        let response = post(&gateway, "other", "application/sdp", token, &offer());
        assert_eq!(response.status(), 401, "{token:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }
    assert_eq!(
        post(
            &gateway,
            "cam7",
            "application/sdp",
            Some("cam7-token-456"),
            &offer()
        )
        .status(),
        201
    );
    let created = post(
        &gateway,
        "other",
        "application/sdp",
        Some("global-token-123"),
        &offer(),
    );
    assert_eq!(created.status(), 201);
    assert_eq!(
        created.headers()["link"],
        format!("<{stun}>; rel=\"ice-server\"")
    );
    // The session URL needs the token too.
    let location = created.headers()["location"].to_str().unwrap().to_string();
    let client = Client::new();
    assert_eq!(
        client
            .delete(gateway.url(&location))
            .send()
            .unwrap()
            .status(),
        401
    );
    let deleted = client
        .delete(gateway.url(&location))
        .bearer_auth("global-token-123")
        .send()
        .unwrap();
    assert_eq!(deleted.status(), 200);

    // Preflight needs no token.
    let preflight = client
        .request(reqwest::Method::OPTIONS, gateway.url("/whip/other"))
        .header("Origin", "https://obs.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .unwrap();
    assert_eq!(preflight.status(), 204);
    let headers = preflight.headers();
    assert_eq!(headers["accept-post"], "application/sdp");
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert!(
        headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("Authorization")
    );
    assert_eq!(headers["link"], format!("<{stun}>; rel=\"ice-server\""));

    let log = gateway.log();
    for secret in ["global-token-123", "cam7-token-456"] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

#[test]
fn link_headers_carry_turn_credentials_minted_for_the_publisher() {
    let gateway = TestGateway::start(
        "[auth]\npublish_token = \"whip-token\"\n\
         [webrtc]\nice_servers = [\"stun:127.0.0.1:9\", \"turn:127.0.0.1:9?transport=udp\"]\n\
         turn_secret = \"north-wind\"",
    );
    let created = post(
        &gateway,
        "cam4",
        "application/sdp",
        Some("whip-token"),
        &offer(),
    );
    assert_eq!(created.status(), 201);
    let links: Vec<&str> = created
        .headers()
        .get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(links.len(), 2, "{links:?}");
    assert_eq!(links[0], "<stun:127.0.0.1:9>; rel=\"ice-server\"");
    let turn = links[1];
    let field = |name: &str| {
        turn.split(&format!("; {name}=\""))
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no {name} in {turn}"))
            .to_string()
    };
    assert!(
        turn.starts_with("<turn:127.0.0.1:9?transport=udp>; rel=\"ice-server\""),
        "{turn}"
    );
    let username = field("username");
    let (expiry, stream) = username.split_once(':').unwrap();
    assert_eq!(stream, "cam4");
    let expiry: u64 = expiry.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        expiry > now + 11 * 3600 && expiry <= now + 12 * 3600,
        "{expiry}"
    );
    assert_eq!(
        field("credential"),
        common::turn_rest_credential("north-wind", &username)
    );
    assert_eq!(field("credential-type"), "password");

    // Discovery needs no token, and gives no TURN credentials where publishing needs one.
    let preflight = Client::new()
        .request(reqwest::Method::OPTIONS, gateway.url("/whip/cam4"))
        .send()
        .unwrap();
    let links: Vec<&str> = preflight
        .headers()
        .get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(links, vec!["<stun:127.0.0.1:9>; rel=\"ice-server\""]);
    assert!(!gateway.log().contains("north-wind"));
}
