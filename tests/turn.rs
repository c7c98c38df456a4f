//! TURN through Debian's coturn on loopback, configured as README.md's "Networks" shows
//! (`use-auth-secret`, no open relay), moved to this run's ports and let reach loopback
//! peers: the credentials the gateway mints (`webrtc.turn_secret`) are accepted, and a
//! publisher that may use the relay only (aiortc, `iceTransportPolicy` "relay", its ICE
//! servers from `/api/ice-servers` with its token) goes live through it; credentials
//! minted from another secret are refused.

mod common;

use common::{TestGateway, aiortc_whip, decode_sdp, free_udp_range};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;
use webrtc_gateway_testkit::Process;
use webrtc_gateway_testkit::readme::block;

/// coturn on loopback, killed when dropped.
struct Coturn {
    process: Process,
    port: u16,
    /// Its configuration, database, pid file and log.
    dir: tempfile::TempDir,
}

impl Coturn {
    /// The README's `turnserver.conf` with `secret`, on free loopback ports: its TLS
    /// listener left out (no certificate here), loopback peers allowed (the gateway is
    /// on loopback), its files in a directory of its own.
    fn start(secret: &str) -> Coturn {
        let dir = tempfile::tempdir().unwrap();
        // The listening port, then the relay range.
        let port = free_udp_range(24);
        let readme = block("turnserver").unwrap_or_else(|e| panic!("{e}"));
        let mut lines: Vec<String> = Vec::new();
        for line in readme.lines() {
            let key = line.split('=').next().unwrap_or_default();
            let line = match key {
                "tls-listening-port" | "cert" | "pkey" => continue,
                "denied-peer-ip" if line.starts_with("denied-peer-ip=127.") => continue,
                "listening-port" => format!("listening-port={port}"),
                "static-auth-secret" => format!("static-auth-secret={secret}"),
                "min-port" => format!("min-port={}", port + 4),
                "max-port" => format!("max-port={}", port + 23),
                _ => line.to_string(),
            };
            lines.push(line);
        }
        for key in ["use-auth-secret", "no-tcp-relay", "denied-peer-ip=10.0.0.0"] {
            assert!(
                lines.iter().any(|l| l.starts_with(key)),
                "the README's turnserver.conf has no {key}"
            );
        }
        let dir_path = dir.path().display().to_string();
        lines.extend([
            "listening-ip=127.0.0.1".to_string(),
            "relay-ip=127.0.0.1".to_string(),
            "allow-loopback-peers".to_string(),
            "no-tls".to_string(),
            "no-dtls".to_string(),
            // A file of its own: coturn buffers what it writes to a pipe.
            format!("log-file={dir_path}/turnserver.log"),
            "simple-log".to_string(),
            // Each allocation and refusal, with its user.
            "verbose".to_string(),
            format!("userdb={dir_path}/turndb"),
            format!("pidfile={dir_path}/turnserver.pid"),
        ]);
        let config = dir.path().join("turnserver.conf");
        std::fs::write(&config, lines.join("\n") + "\n").unwrap();
        let mut process = Process::new("coturn", move || {
            let mut command = Command::new("turnserver");
            command.arg("-c").arg(&config);
            command
        })
        .log_to(&dir.path().join("coturn.out"))
        .hint("Debian's coturn package ships turnserver")
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
        process
            .wait_port(port, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("coturn never listened on {port}: {e}"));
        Coturn { process, port, dir }
    }

    /// Its log so far, and what it printed.
    fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("turnserver.log"));
        format!("{}{}", log.unwrap_or_default(), self.process.log())
    }
}

/// A gateway whose publishers need `token`, with coturn's URL and `secret`.
fn gateway(coturn: &Coturn, secret: &str, token: &str) -> TestGateway {
    TestGateway::start(&format!(
        "[auth]\npublish_token = \"{token}\"\n\
         [webrtc]\nice_servers = [\"turn:127.0.0.1:{}?transport=udp\"]\nturn_secret = \"{secret}\"",
        coturn.port
    ))
}

/// aiortc publishing `stream` through the relay only, with the ICE servers the gateway
/// gives for its token; the steps it printed until its connection was settled.
fn publish_relayed(gateway: &TestGateway, stream: &str, token: &str) -> (Process, Vec<Value>) {
    let api = gateway.url(&format!("/api/ice-servers?stream={stream}"));
    let (process, lines) = aiortc_whip(
        &gateway.url(&format!("/whip/{stream}")),
        &[
            "--token",
            token,
            "--ice-servers",
            &api,
            "--relay",
            "--seconds",
            "8",
        ],
    );
    let mut steps = Vec::new();
    for line in lines.map_while(Result::ok) {
        let step: Value = serde_json::from_str(&line).unwrap();
        let last = step["step"] == "connection" || step["step"] == "error";
        steps.push(step);
        if last {
            break;
        }
    }
    (process, steps)
}

fn step<'a>(steps: &'a [Value], name: &str) -> &'a Value {
    steps
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no {name} step in {steps:?}"))
}

#[test]
fn minted_credentials_carry_a_publisher_through_coturn() {
    let coturn = Coturn::start("north-wind");
    let gateway = gateway(&coturn, "north-wind", "relay-token");
    let (_aiortc, steps) = publish_relayed(&gateway, "relayed", "relay-token");

    let given = step(&steps, "ice-servers");
    assert_eq!(given["status"], 200, "{steps:?}");
    let username = given["servers"][0]["username"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(username.ends_with(":relayed"), "{username}");
    // aiortc gathered a relay candidate (coturn took the credentials) and nothing else.
    let created = step(&steps, "created");
    assert_eq!(created["status"], 201, "{steps:?}\n{}", coturn.log());
    let candidates = created["candidates"].as_array().unwrap();
    assert!(
        !candidates.is_empty() && candidates.iter().all(|c| c == "relay"),
        "{candidates:?}\n{}",
        coturn.log()
    );
    assert_eq!(
        step(&steps, "connection")["state"],
        "connected",
        "{steps:?}"
    );

    // The media came through the relay: live, and the output decodes.
    let stream = common::eventually(Duration::from_secs(20), || {
        gateway.stream("relayed").filter(|s| s["state"] == "live")
    })
    .unwrap_or_else(|| panic!("never live through the relay:\n{}", gateway.log()));
    // The path is known once the selected pair is reported; it is the relay.
    let stream = common::eventually(Duration::from_secs(10), || {
        gateway
            .stream("relayed")
            .filter(|s| !s["transport"].is_null())
    })
    .unwrap_or(stream);
    assert_eq!(stream["transport"], "relay", "{stream}");
    let decoded = decode_sdp(&gateway.url("/streams/relayed/stream.sdp"), 3.0);
    assert!(decoded.video_frames >= 30, "{}", decoded.stderr);

    let log = coturn.log();
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("user <{username}>"))
                && l.contains("ALLOCATE processed, success")),
        "coturn allocated no relay for {username}:\n{log}"
    );
    assert!(!gateway.log().contains("north-wind"));
}

#[test]
fn credentials_from_another_secret_are_refused() {
    let coturn = Coturn::start("north-wind");
    let gateway = gateway(&coturn, "south-wind", "relay-token");
    let (_aiortc, steps) = publish_relayed(&gateway, "refused", "relay-token");
    let username = step(&steps, "ice-servers")["servers"][0]["username"]
        .as_str()
        .unwrap()
        .to_string();
    // No relay: aiortc has no candidate at all, and the publication never connects.
    let created = step(&steps, "created");
    assert_eq!(created["candidates"], serde_json::json!([]), "{steps:?}");
    assert_ne!(step(&steps, "connection")["state"], "connected");
    assert!(
        gateway
            .stream("refused")
            .is_none_or(|s| s["state"] != "live"),
        "{}",
        gateway.log()
    );
    let log = coturn.log();
    assert!(
        !log.lines()
            .any(|l| l.contains(&format!("user <{username}>"))
                && l.contains("ALLOCATE processed, success")),
        "coturn took a credential from another secret:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("user <{username}>")) && l.contains("401")),
        "coturn did not refuse {username}:\n{log}"
    );
}
