//! Access beyond static tokens: a hook server in the test (plain HTTP on loopback) that
//! allows `allowed*`, refuses `refused` with 403 and answers `slow` too late, and records
//! every request it gets, each signature checked; WebSocket and WHIP publishers and
//! readers get what it says, reads are asked once per `hooks.cache_s`; JSON Web Tokens
//! signed with HS256, RS256 and ES256 (a key set served by the test) are allowed and
//! refused by claim and by `exp`, and an unknown key makes the gateway fetch the set
//! again, once; Chromium's publish page publishes with a JWT in its token field.

mod common;

use common::browser::{Browser, BrowserKind};
use common::{BROWSER_OFFER, Publisher, Signalling, TestGateway, eventually};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use reqwest::blocking::Client;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use webrtc_gateway::hook_signature::signature;

const SECRET: &str = "hook-secret";

/// What the hook server got: each request's path, signature and JSON body.
#[derive(Default)]
struct Seen {
    requests: Vec<(String, String, Value)>,
    jwks_fetches: usize,
    /// `hold` is answered once this is set.
    released: bool,
}

struct HookServer {
    port: u16,
    seen: Arc<Mutex<Seen>>,
}

impl HookServer {
    /// Serves the hooks, and `jwks` at `/jwks`.
    fn start(jwks: Value) -> HookServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let seen = shared.clone();
                let jwks = jwks.clone();
                std::thread::spawn(move || serve(stream, &seen, &jwks));
            }
        });
        HookServer { port, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self) -> Vec<(String, String, Value)> {
        self.seen.lock().unwrap().requests.clone()
    }

    fn calls(&self, action: &str, stream: &str) -> usize {
        self.requests()
            .iter()
            .filter(|(_, _, body)| body["action"] == action && body["stream"] == stream)
            .count()
    }

    fn jwks_fetches(&self) -> usize {
        self.seen.lock().unwrap().jwks_fetches
    }
}

/// One request per connection: `allowed-rec*` gets 200 and `{"record": true}`, other
/// `allowed*` 200 and `{"record": false}`,
/// `refused` 403, `slow` an answer after three seconds, `hold` once the test releases
/// it, anything else 500.
fn serve(stream: std::net::TcpStream, seen: &Mutex<Seen>, jwks: &Value) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let (mut length, mut signature) = (0usize, String::new());
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or(("", ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "x-gateway-signature" => signature = value.trim().to_string(),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let (status, answer) = if path == "/jwks" {
        seen.lock().unwrap().jwks_fetches += 1;
        (200, jwks.to_string())
    } else {
        assert_eq!(
            signature,
            signature_of(&body),
            "the hook request's signature"
        );
        let value: Value = serde_json::from_slice(&body).unwrap();
        seen.lock()
            .unwrap()
            .requests
            .push((path, signature, value.clone()));
        match value["stream"].as_str().unwrap_or("") {
            s if s.starts_with("allowed-rec") => (200, r#"{"record": true}"#.to_string()),
            s if s.starts_with("allowed") => (200, r#"{"record": false}"#.to_string()),
            "refused" => (403, r#"{"message": "not you"}"#.to_string()),
            "slow" => {
                std::thread::sleep(Duration::from_secs(3));
                (200, "{}".to_string())
            }
            "hold" => {
                eventually(Duration::from_secs(20), || {
                    seen.lock().unwrap().released.then_some(())
                });
                (200, "{}".to_string())
            }
            _ => (500, String::new()),
        }
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
}

fn signature_of(body: &[u8]) -> String {
    signature(SECRET, body)
}

fn hooks(server: &HookServer, publish: bool, read: bool) -> String {
    format!(
        "[hooks]\npublish_url = \"{}\"\nread_url = \"{}\"\nsecret = \"{SECRET}\"\ntimeout_ms = 500\ncache_s = 2\n",
        if publish {
            server.url("/publish")
        } else {
            String::new()
        },
        if read {
            server.url("/read")
        } else {
            String::new()
        },
    )
}

/// A WHIP publish's status; a created session is deleted at once.
fn whip(gateway: &TestGateway, name: &str, token: Option<&str>) -> u16 {
    let client = Client::new();
    let mut request = client
        .post(gateway.url(&format!("/whip/{name}?from=test")))
        .header("Content-Type", "application/sdp")
        .header("User-Agent", "access-test")
        .body(BROWSER_OFFER);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    if status == 201 {
        let location = response.headers()["location"].to_str().unwrap().to_string();
        let mut delete = client.delete(gateway.url(&location));
        if let Some(token) = token {
            delete = delete.bearer_auth(token);
        }
        assert_eq!(delete.send().unwrap().status(), 200);
    }
    status
}

/// A WebSocket publish: the answer's type, and the error's code and token if any.
fn websocket(gateway: &TestGateway, name: &str, token: Option<&str>) -> (String, Value) {
    let mut ws = Signalling::connect(gateway);
    let mut message = json!({"type": "publish", "stream": name, "sdp": BROWSER_OFFER});
    if let Some(token) = token {
        message["token"] = token.into();
    }
    ws.send(&message);
    let reply = ws.receive();
    ws.close();
    (reply["type"].as_str().unwrap_or("").to_string(), reply)
}

fn read(gateway: &TestGateway, path: &str) -> u16 {
    Client::new()
        .get(gateway.url(path))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn the_publish_hook_decides_for_websocket_and_whip() {
    let server = HookServer::start(json!({}));
    let gateway = TestGateway::start(&format!(
        "{}[auth]\npublish_token = \"static-token\"\n",
        hooks(&server, true, false)
    ));
    // WHIP: allowed, refused with the hook's message, unavailable.
    assert_eq!(whip(&gateway, "allowed-whip", Some("user-1")), 201);
    let refused = Client::new()
        .post(gateway.url("/whip/refused"))
        .header("Content-Type", "application/sdp")
        .bearer_auth("user-2")
        .body(BROWSER_OFFER)
        .send()
        .unwrap();
    assert_eq!(refused.status(), 403);
    let problem: Value = refused.json().unwrap();
    assert_eq!(problem["error"], "forbidden");
    assert_eq!(problem["message"], "not you");
    assert_eq!(whip(&gateway, "slow", Some("user-3")), 503);

    // WebSocket: the same three.
    let (kind, _) = websocket(&gateway, "allowed-ws", Some("user-4"));
    assert_eq!(kind, "answer");
    let (kind, error) = websocket(&gateway, "refused", Some("user-5"));
    assert_eq!((kind.as_str(), &error["code"]), ("error", &json!(403)));
    assert_eq!(error["error"], "forbidden");
    let (_, error) = websocket(&gateway, "slow", Some("user-6"));
    assert_eq!(
        (&error["code"], &error["error"]),
        (&json!(503), &json!("hook-unavailable"))
    );

    // A static token allows without asking the hook.
    let before = server.requests().len();
    assert_eq!(whip(&gateway, "refused", Some("static-token")), 201);
    assert_eq!(server.requests().len(), before);

    // What the hook was told.
    let requests = server.requests();
    let whip_request = &requests
        .iter()
        .find(|(_, _, b)| b["stream"] == "allowed-whip")
        .unwrap()
        .2;
    assert_eq!(whip_request["action"], "publish");
    assert_eq!(whip_request["protocol"], "whip");
    assert_eq!(whip_request["token"], "user-1");
    assert_eq!(whip_request["user_agent"], "access-test");
    assert_eq!(whip_request["query"], "from=test");
    assert!(
        whip_request["remote_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(!whip_request["node"].as_str().unwrap().is_empty());
    let ws_request = &requests
        .iter()
        .find(|(_, _, b)| b["stream"] == "allowed-ws")
        .unwrap()
        .2;
    assert_eq!(ws_request["protocol"], "websocket");
    assert_eq!(ws_request["token"], "user-4");
    assert!(requests.iter().all(|(path, _, _)| path == "/publish"));
    assert!(!gateway.log().contains("user-1"));

    // A page with a token asks for its ICE servers as it would publish: the hook decides,
    // told the protocol `ice-servers`.
    let ice = |stream: &str| {
        read(
            &gateway,
            &format!("/api/ice-servers?stream={stream}&token=user-7"),
        )
    };
    assert_eq!(ice("allowed-ice"), 200);
    assert_eq!(ice("refused"), 403);
    let requests = server.requests();
    let ice_request = &requests
        .iter()
        .find(|(_, _, b)| b["stream"] == "allowed-ice")
        .unwrap()
        .2;
    assert_eq!(ice_request["action"], "publish");
    assert_eq!(ice_request["protocol"], "ice-servers");
    assert_eq!(ice_request["token"], "user-7");
}

#[test]
fn a_publish_waiting_for_the_hook_holds_up_no_other() {
    let server = HookServer::start(json!({}));
    let gateway = TestGateway::start(
        &hooks(&server, true, true).replace("timeout_ms = 500", "timeout_ms = 20000"),
    );
    let held = std::thread::scope(|scope| {
        let held = scope.spawn(|| whip(&gateway, "hold", None));
        eventually(Duration::from_secs(10), || {
            (server.calls("publish", "hold") == 1).then_some(())
        });
        // While the hook holds that publish, others publish and read.
        assert_eq!(whip(&gateway, "allowed-1", None), 201);
        let (kind, _) = websocket(&gateway, "allowed-2", None);
        assert_eq!(kind, "answer");
        assert_eq!(read(&gateway, "/streams/allowed-3/index.m3u8"), 404);
        assert!(!held.is_finished());
        server.seen.lock().unwrap().released = true;
        held.join().unwrap()
    });
    assert_eq!(held, 201);
}

#[test]
fn the_publish_hook_says_whether_a_stream_is_recorded() {
    let server = HookServer::start(json!({}));
    let dir = tempfile::tempdir().unwrap();
    // record.enabled is off: the hook turns it on for one stream, and off for another
    // (which would be off anyway; the one that says nothing keeps the configuration).
    let gateway = TestGateway::start(&format!(
        "{}[record]\nenabled = false\ndir = \"{}\"\n",
        hooks(&server, true, false),
        dir.path().display()
    ));
    let mut recorded = Publisher::start(&gateway, "allowed-rec", &["--duration-s", "3"]);
    let mut plain = Publisher::start(&gateway, "allowed-plain", &["--duration-s", "3"]);
    recorded.wait_for("live", Duration::from_secs(30));
    plain.wait_for("live", Duration::from_secs(30));
    recorded.wait_for("ended", Duration::from_secs(20));
    plain.wait_for("ended", Duration::from_secs(20));
    assert_eq!(gateway.recordings_of("allowed-rec").len(), 1);
    assert!(gateway.recordings_of("allowed-plain").is_empty());
    assert_eq!(server.calls("publish", "allowed-rec"), 1);
}

#[test]
fn reads_are_asked_once_per_cache_s() {
    let server = HookServer::start(json!({}));
    let gateway = TestGateway::start(&hooks(&server, false, true));
    // No stream is live: an allowed read gets 404, after the hook said yes.
    for _ in 0..5 {
        assert_eq!(
            read(&gateway, "/streams/allowed/index.m3u8?token=viewer"),
            404
        );
        assert_eq!(
            read(&gateway, "/streams/allowed/part1.m4s?token=viewer"),
            404
        );
    }
    assert_eq!(server.calls("read", "allowed"), 1);
    let asked = &server.requests()[0].2;
    assert_eq!(asked["token"], "viewer");
    assert_eq!(asked["path"], "/streams/allowed/index.m3u8");
    // Another token is asked of its own.
    assert_eq!(
        read(&gateway, "/streams/allowed/index.m3u8?token=other"),
        404
    );
    assert_eq!(server.calls("read", "allowed"), 2);
    assert_eq!(read(&gateway, "/streams/refused/index.m3u8?token=v"), 403);
    assert_eq!(read(&gateway, "/streams/refused/index.m3u8?token=v"), 403);
    assert_eq!(server.calls("read", "refused"), 2, "refusals are not kept");
    assert_eq!(read(&gateway, "/streams/slow/index.m3u8?token=v"), 503);
    // Past cache_s, the hook is asked again.
    eventually(Duration::from_secs(10), || {
        read(&gateway, "/streams/allowed/index.m3u8?token=viewer");
        (server.calls("read", "allowed") == 3).then_some(())
    });
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(b"jwt-secret").unwrap(),
    )
    .unwrap()
}

#[test]
fn hs256_tokens_allow_by_claim() {
    let gateway = TestGateway::start("[auth]\njwt_secret = \"jwt-secret\"\n");
    let cam = hs256(json!({"publish": ["cam"], "read": ["watch"], "exp": now() + 600}));
    let any = hs256(json!({"publish": ["*"], "exp": now() + 600}));
    let expired = hs256(json!({"publish": ["cam"], "exp": now() - 3600}));
    assert_eq!(whip(&gateway, "cam", Some(&cam)), 201);
    assert_eq!(whip(&gateway, "other", Some(&cam)), 403);
    assert_eq!(whip(&gateway, "other", Some(&any)), 201);
    assert_eq!(whip(&gateway, "cam", Some(&expired)), 401);
    assert_eq!(whip(&gateway, "cam", None), 401);
    assert_eq!(whip(&gateway, "cam", Some("not-a-jwt")), 401);
    let (kind, _) = websocket(&gateway, "cam", Some(&cam));
    assert_eq!(kind, "answer");
    let (_, error) = websocket(&gateway, "other", Some(&cam));
    assert_eq!(error["code"], 403);
    // Reads: the read claim, as ?token= or a bearer header (no stream `watch` is live:
    // an allowed read gets 404).
    assert_eq!(
        read(&gateway, &format!("/streams/watch/index.m3u8?token={cam}")),
        404
    );
    assert_eq!(
        read(&gateway, &format!("/streams/x/index.m3u8?token={cam}")),
        403
    );
    assert_eq!(
        read(&gateway, &format!("/streams/watch/index.m3u8?token={any}")),
        403
    );
    assert_eq!(read(&gateway, "/streams/watch/index.m3u8"), 401);
    let bearer = Client::new()
        .get(gateway.url("/streams/watch/index.m3u8"))
        .bearer_auth(&cam)
        .send()
        .unwrap();
    assert_eq!(bearer.status(), 404);
}

/// A fresh RSA key (openssl): its PEM and its public key as a JWK named `kid`.
fn rsa_key(dir: &std::path::Path, kid: &str) -> (Vec<u8>, Value) {
    use base64::Engine;
    let path = dir.join("key.pem");
    let made = std::process::Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&path)
        .arg("2048")
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let modulus = std::process::Command::new("openssl")
        .args(["rsa", "-noout", "-modulus", "-in"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8(modulus.stdout).unwrap();
    let hex = text.trim().trim_start_matches("Modulus=");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let jwk = json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": n, "e": "AQAB"});
    (std::fs::read(&path).unwrap(), jwk)
}

/// A fresh P-256 key (openssl): its PKCS#8 PEM and its public key as a JWK named `kid`.
fn ec_key(dir: &std::path::Path, kid: &str) -> (Vec<u8>, Value) {
    use base64::Engine;
    let path = dir.join("ec.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let public = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&path)
        .output()
        .unwrap();
    // The DER ends with the uncompressed point: 0x04, X, Y.
    let der = public.stdout;
    let point = &der[der.len() - 64..];
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
                     "x": b64(&point[..32]), "y": b64(&point[32..])});
    (std::fs::read(&path).unwrap(), jwk)
}

#[test]
fn rs256_and_es256_tokens_from_a_key_set_and_an_unknown_key_fetched_once() {
    let dir = tempfile::tempdir().unwrap();
    let (pem, jwk) = rsa_key(dir.path(), "k1");
    let (ec_pem, ec_jwk) = ec_key(dir.path(), "e1");
    let server = HookServer::start(json!({"keys": [jwk, ec_jwk]}));
    let gateway = TestGateway::start(&format!("[auth]\njwks_url = \"{}\"\n", server.url("/jwks")));
    let key = EncodingKey::from_rsa_pem(&pem).unwrap();
    let token = |kid: &str, claims: Value| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_string());
        encode(&header, &claims, &key).unwrap()
    };
    let cam = token("k1", json!({"publish": ["cam"], "exp": now() + 600}));
    assert_eq!(whip(&gateway, "cam", Some(&cam)), 201);
    assert_eq!(whip(&gateway, "other", Some(&cam)), 403);
    let es256 = encode(
        &Header {
            kid: Some("e1".into()),
            ..Header::new(Algorithm::ES256)
        },
        &json!({"publish": ["ec"], "exp": now() + 600}),
        &EncodingKey::from_ec_pem(&ec_pem).unwrap(),
    )
    .unwrap();
    assert_eq!(whip(&gateway, "ec", Some(&es256)), 201);
    assert_eq!(whip(&gateway, "cam", Some(&es256)), 403);
    assert_eq!(server.jwks_fetches(), 1);
    let expired = token("k1", json!({"publish": ["cam"], "exp": now() - 3600}));
    assert_eq!(whip(&gateway, "cam", Some(&expired)), 401);
    // An unknown key: the set is fetched again, once, however many such tokens come.
    let unknown = token("k2", json!({"publish": ["cam"], "exp": now() + 600}));
    for _ in 0..5 {
        assert_eq!(whip(&gateway, "cam", Some(&unknown)), 401);
    }
    assert_eq!(server.jwks_fetches(), 2);
    // A token signed with another key under a known kid is refused.
    let (other_pem, _) = rsa_key(dir.path(), "k1");
    let forged = encode(
        &Header {
            kid: Some("k1".into()),
            ..Header::new(Algorithm::RS256)
        },
        &json!({"publish": ["cam"], "exp": now() + 600}),
        &EncodingKey::from_rsa_pem(&other_pem).unwrap(),
    )
    .unwrap();
    assert_eq!(whip(&gateway, "cam", Some(&forged)), 401);
}

#[test]
fn chromium_publishes_with_a_jwt_in_the_pages_token_field() {
    let gateway = TestGateway::start("[auth]\njwt_secret = \"jwt-secret\"\n");
    let token = hs256(json!({"publish": ["page"], "exp": now() + 600}));
    let mut browser = Browser::start(BrowserKind::Chromium);
    browser.open(&gateway.url(&format!(
        "/publish.html?stream=page&token={token}&autostart=1"
    )));
    let state = browser.wait_for(
        "document.body.dataset.state",
        &json!("live"),
        Duration::from_secs(30),
    );
    assert_eq!(
        state,
        json!("live"),
        "{}",
        browser.eval("document.getElementById('reason').textContent")
    );
    assert_eq!(gateway.stream("page").unwrap()["state"], "live");
    // The same page with a token for another stream is refused.
    let other = hs256(json!({"publish": ["other"], "exp": now() + 600}));
    browser.open(&gateway.url(&format!(
        "/publish.html?stream=page2&token={other}&autostart=1"
    )));
    let state = browser.wait_for(
        "document.body.dataset.state",
        &json!("error"),
        Duration::from_secs(30),
    );
    assert_eq!(state, json!("error"));
    assert_eq!(
        browser.eval("document.getElementById('reason').textContent"),
        json!("(403 forbidden: the token does not allow publishing page2)")
    );
}
