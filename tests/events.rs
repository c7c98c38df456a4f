//! Event webhooks (`hooks.events_url`): a receiver in the test (axum on loopback) records
//! what it gets and checks each signature. A publication with a recording (uploaded to
//! an S3-compatible store) tells `stream.published`, `recording.finished`,
//! `upload.completed` and `stream.ended`; a receiver that refuses for a while still gets
//! every event, none twice once it drops repeated ids; events kept by a gateway killed
//! before it could deliver them arrive after its restart.

mod common;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::servers::{S3_ACCESS_KEY, S3_BUCKET, S3_SECRET_KEY, s3_store};
use common::*;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LIVE_TIMEOUT: Duration = Duration::from_secs(30);
const EVENT_TIMEOUT: Duration = Duration::from_secs(60);
const SECRET: &str = "webhook-secret-7";

/// One request the receiver took.
#[derive(Debug, Clone)]
struct Delivery {
    id_header: String,
    body: Value,
}

#[derive(Default)]
struct Shared {
    /// The deliveries answered 200, in order.
    taken: Mutex<Vec<Delivery>>,
    /// Requests answered 503 (while refusing).
    refused: Mutex<u32>,
    /// Requests whose signature did not match: must stay empty.
    bad: Mutex<Vec<String>>,
    refusing: AtomicBool,
}

/// The event receiver: an axum server on a loopback port, on a runtime of its own.
struct Receiver {
    port: u16,
    shared: Arc<Shared>,
    runtime: tokio::runtime::Runtime,
}

fn expected_signature(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

async fn take(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if shared.refusing.load(Ordering::SeqCst) {
        *shared.refused.lock().unwrap() += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let signature = header("x-gateway-signature");
    if signature != expected_signature(&body) {
        shared
            .bad
            .lock()
            .unwrap()
            .push(format!("{signature}: {}", String::from_utf8_lossy(&body)));
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(json) = serde_json::from_slice::<Value>(&body) else {
        shared.bad.lock().unwrap().push("not JSON".into());
        return StatusCode::BAD_REQUEST;
    };
    if header("content-type") != "application/json" {
        shared
            .bad
            .lock()
            .unwrap()
            .push("not application/json".into());
    }
    shared.taken.lock().unwrap().push(Delivery {
        id_header: header("x-gateway-event-id"),
        body: json,
    });
    StatusCode::OK
}

impl Receiver {
    /// A receiver on a free port, listening from now on.
    fn start() -> Receiver {
        let mut receiver = Receiver::down();
        receiver.listen();
        receiver
    }

    /// A receiver on a free port where nothing listens yet.
    fn down() -> Receiver {
        Receiver {
            port: free_tcp_port(),
            shared: Arc::default(),
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    fn listen(&mut self) {
        let app = axum::Router::new()
            .route("/events", axum::routing::post(take))
            .with_state(self.shared.clone());
        let port = self.port;
        let listener = self
            .runtime
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .unwrap();
        self.runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/events", self.port)
    }

    fn refuse(&self, refusing: bool) {
        self.shared.refusing.store(refusing, Ordering::SeqCst);
    }

    fn refused(&self) -> u32 {
        *self.shared.refused.lock().unwrap()
    }

    fn taken(&self) -> Vec<Delivery> {
        assert!(
            self.shared.bad.lock().unwrap().is_empty(),
            "badly signed: {:?}",
            self.shared.bad.lock().unwrap()
        );
        self.shared.taken.lock().unwrap().clone()
    }

    /// The events taken, with repeated ids dropped (as a receiver dedups them), by
    /// `type`; each id's header matches its body.
    fn events(&self) -> BTreeMap<String, Vec<Value>> {
        let mut seen = std::collections::BTreeSet::new();
        let mut by_type: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for delivery in self.taken() {
            let id = delivery.body["id"].as_str().unwrap_or_default().to_string();
            assert_eq!(delivery.id_header, id, "{:?}", delivery.body);
            if seen.insert(id) {
                let kind = delivery.body["type"].as_str().unwrap().to_string();
                by_type.entry(kind).or_default().push(delivery.body);
            }
        }
        by_type
    }

    /// Waits until every one of `kinds` has arrived for `stream`.
    fn wait_for(
        &self,
        gateway: &TestGateway,
        stream: &str,
        kinds: &[&str],
    ) -> BTreeMap<String, Vec<Value>> {
        eventually(EVENT_TIMEOUT, || {
            let events = self.events();
            kinds
                .iter()
                .all(|kind| {
                    events
                        .get(*kind)
                        .is_some_and(|list| list.iter().any(|e| e["stream"] == stream))
                })
                .then_some(events)
        })
        .unwrap_or_else(|| {
            panic!(
                "events {kinds:?} of {stream} did not all arrive: {:?}\n{}",
                self.taken(),
                gateway.log()
            )
        })
    }
}

fn config(receiver: &Receiver, record_dir: &Path, extra: &str) -> String {
    format!(
        "[hooks]\nevents_url = \"{}\"\nsecret = \"{SECRET}\"\ntimeout_ms = 1000\n\
         [record]\nenabled = true\nformat = \"mkv\"\ndir = \"{}\"\n{extra}",
        receiver.url(),
        record_dir.display()
    )
}

/// The events waiting in the outbox.
fn outbox(record_dir: &Path) -> usize {
    std::fs::read_dir(record_dir.join(".events"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}

/// A metric's value from `/metrics`, by its full name.
fn metric(gateway: &TestGateway, name: &str) -> f64 {
    let text = gateway.get("/metrics").text().unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} "))?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// Waits until `count` events are counted delivered, none is pending and the outbox is
/// empty.
fn delivered(gateway: &TestGateway, record_dir: &Path, count: f64) {
    eventually(Duration::from_secs(10), || {
        (metric(gateway, "webrtc_gateway_hook_events_delivered_total") == count
            && metric(gateway, "webrtc_gateway_hook_events_pending") == 0.0
            && outbox(record_dir) == 0)
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "not all delivered: {} in the outbox\n{}",
            outbox(record_dir),
            gateway.log()
        )
    });
}

#[test]
fn a_publication_with_a_recording_is_told_signed() {
    let receiver = Receiver::start();
    let store = s3_store();
    let records = tempfile::tempdir().unwrap();
    let upload = format!(
        "upload_url = \"s3://{S3_BUCKET}/archive\"\nupload_endpoint = \"http://127.0.0.1:{}\"",
        store.port
    );
    let gateway = TestGateway::start_env(
        &config(&receiver, records.path(), &upload),
        &[
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    let mut publisher = Publisher::start(&gateway, "told", &["--duration-s", "3"]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    publisher.wait_for("ended", Duration::from_secs(20));
    let events = receiver.wait_for(
        &gateway,
        "told",
        &[
            "stream.published",
            "recording.finished",
            "upload.completed",
            "stream.ended",
        ],
    );
    for list in events.values() {
        assert_eq!(list.len(), 1, "{list:?}");
        let event = &list[0];
        assert_eq!(event["id"].as_str().unwrap().len(), 32, "{event}");
        assert!(event["node"].is_string(), "{event}");
        let time = event["time"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");
    }
    let published = &events["stream.published"][0];
    assert_eq!(published["protocol"], "websocket");
    assert_eq!(published["outputs"]["hls"], "/streams/told/index.m3u8");
    let recording = &events["recording.finished"][0];
    let file = recording["file"].as_str().unwrap();
    assert!(
        file.starts_with("told-") && file.ends_with(".mkv"),
        "{file}"
    );
    assert_eq!(published["outputs"]["recording"], file);
    let bytes = std::fs::metadata(records.path().join(file)).unwrap().len();
    assert_eq!(recording["bytes"].as_u64(), Some(bytes));
    let seconds = recording["duration_s"].as_f64().unwrap();
    assert!(seconds > 1.0 && seconds < 30.0, "{seconds}");
    let uploaded = &events["upload.completed"][0];
    assert_eq!(uploaded["file"], file);
    assert_eq!(
        uploaded["url"].as_str().unwrap(),
        format!("s3://{S3_BUCKET}/archive/{file}")
    );
    assert_eq!(uploaded["bytes"].as_u64(), Some(bytes));
    assert_eq!(events["stream.ended"][0]["reason"], "unpublished");
    // Delivered: counted, and gone from the outbox.
    delivered(&gateway, records.path(), 4.0);
    assert_eq!(
        metric(&gateway, "webrtc_gateway_hook_events_failed_total"),
        0.0
    );
}

#[test]
fn a_receiver_that_refuses_for_a_while_gets_every_event_once() {
    let receiver = Receiver::start();
    let records = tempfile::tempdir().unwrap();
    let gateway = TestGateway::start(&config(&receiver, records.path(), ""));
    let mut publisher = Publisher::start(&gateway, "flaky", &["--duration-s", "4"]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    receiver.wait_for(&gateway, "flaky", &["stream.published"]);
    // Down (answering 503) for the rest of the publication.
    receiver.refuse(true);
    publisher.wait_for("ended", Duration::from_secs(20));
    gateway.wait_stream_ended("flaky", Duration::from_secs(10));
    eventually(EVENT_TIMEOUT, || (receiver.refused() >= 2).then_some(())).unwrap_or_else(|| {
        panic!("no delivery was refused:\n{}", gateway.log());
    });
    assert!(metric(&gateway, "webrtc_gateway_hook_events_failed_total") >= 2.0);
    assert!(metric(&gateway, "webrtc_gateway_hook_events_pending") >= 1.0);
    receiver.refuse(false);
    let events = receiver.wait_for(
        &gateway,
        "flaky",
        &["stream.published", "recording.finished", "stream.ended"],
    );
    let kinds: Vec<(&String, usize)> = events.iter().map(|(k, v)| (k, v.len())).collect();
    assert_eq!(
        kinds,
        [
            (&"recording.finished".to_string(), 1),
            (&"stream.ended".to_string(), 1),
            (&"stream.published".to_string(), 1),
        ],
        "{events:?}"
    );
    delivered(&gateway, records.path(), 3.0);
}

#[test]
fn events_kept_by_a_killed_gateway_arrive_after_its_restart() {
    let receiver = Receiver::down();
    let records = tempfile::tempdir().unwrap();
    let mut gateway = TestGateway::start(&config(&receiver, records.path(), ""));
    let mut publisher = Publisher::start(&gateway, "kept", &["--duration-s", "3"]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    publisher.wait_for("ended", Duration::from_secs(20));
    gateway.wait_stream_ended("kept", Duration::from_secs(10));
    // published, recording.finished, ended: all waiting on disk.
    eventually(Duration::from_secs(10), || {
        (outbox(records.path()) == 3).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{} events in the outbox:\n{}",
            outbox(records.path()),
            gateway.log()
        )
    });
    gateway.signal("-KILL");
    gateway.wait_exit(Duration::from_secs(10));
    let mut receiver = receiver;
    receiver.listen();
    gateway.restart();
    let events = receiver.wait_for(
        &gateway,
        "kept",
        &["stream.published", "recording.finished", "stream.ended"],
    );
    assert_eq!(
        events.values().map(Vec::len).sum::<usize>(),
        3,
        "{events:?}"
    );
    delivered(&gateway, records.path(), 3.0);
}
