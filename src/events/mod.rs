//! Event webhooks (`hooks.events_url`): what happened to this node's streams —
//! `stream.published`, `stream.ended`, `recording.finished`, `upload.completed` — POSTed
//! as JSON, at least once. [`Events::emit`] writes the event to the [`outbox`] on disk
//! (beside the recordings) and hands it to the one [`delivery`] task without waiting;
//! that task signs each request ([`signature`]) and tries again with backoff until the
//! receiver answers 2xx. A restart, even a crash, loses no event: the outbox is read at
//! start. This module sits low (config, name and stream below it) so that the sessions
//! and the uploads can both emit.

pub mod delivery;
pub mod outbox;
pub mod signature;

pub use signature::signature;

use crate::config::HooksConfig;
use crate::name::StreamName;
use crate::stream::{EndReason, Outputs};
use outbox::Outbox;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// Events handed to the delivery task without waiting; past this many waiting in the
/// channel, an event is left for the task's next look at the outbox.
const QUEUED: usize = 256;

/// What happened, with what the event's JSON carries besides `id`, `type`, `time` and
/// `node`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Event {
    /// A stream went live: its publisher's protocol (`websocket`, `whip`) and the paths
    /// of its outputs.
    StreamPublished {
        stream: StreamName,
        protocol: String,
        outputs: Outputs,
    },
    /// A stream ended: the reason's token (as its publisher is told in `ended`), and its
    /// details where it has any.
    StreamEnded {
        stream: StreamName,
        reason: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A recording's file is complete in `record.dir`.
    RecordingFinished {
        stream: StreamName,
        file: String,
        bytes: u64,
        /// Seconds from the start of its writing to its end.
        #[serde(skip_serializing_if = "Option::is_none")]
        duration_s: Option<f64>,
    },
    /// A recording's upload to `record.upload_url` is complete and verified.
    UploadCompleted {
        #[serde(skip_serializing_if = "Option::is_none")]
        stream: Option<String>,
        file: String,
        url: String,
        bytes: u64,
    },
}

impl Event {
    /// The event's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::StreamPublished { .. } => "stream.published",
            Event::StreamEnded { .. } => "stream.ended",
            Event::RecordingFinished { .. } => "recording.finished",
            Event::UploadCompleted { .. } => "upload.completed",
        }
    }

    pub fn ended(stream: &StreamName, reason: &EndReason) -> Self {
        let text = reason.to_string();
        Event::StreamEnded {
            stream: stream.clone(),
            reason: reason.kind(),
            detail: (text != reason.kind()).then_some(text),
        }
    }

    pub fn recording_finished(
        stream: &StreamName,
        file: &str,
        bytes: u64,
        duration: Option<Duration>,
    ) -> Self {
        Event::RecordingFinished {
            stream: stream.clone(),
            file: file.to_string(),
            bytes,
            duration_s: duration.map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0),
        }
    }
}

/// The JSON an event is delivered as.
#[derive(Serialize)]
struct Envelope<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    /// RFC 3339, UTC.
    time: String,
    node: &'a str,
    #[serde(flatten)]
    event: &'a Event,
}

/// An event's JSON body, as sent and as signed.
pub fn body(id: &str, time: SystemTime, node: &str, event: &Event) -> Vec<u8> {
    let envelope = Envelope {
        id,
        kind: event.kind(),
        time: humantime::format_rfc3339_millis(time).to_string(),
        node,
        event,
    };
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// A new event id: 128 random bits in hex.
pub fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// What the delivery of events counts (registered with the metrics).
#[derive(Debug, Clone, Default)]
pub struct DeliveryCounters {
    pub delivered: Counter,
    /// Tries that failed (refused or unanswered).
    pub failed: Counter,
    /// Events given up after an hour of failures.
    pub dropped: Counter,
    /// Events waiting for delivery.
    pub pending: Gauge,
}

/// An event written to the outbox, for the delivery task.
#[derive(Debug)]
pub struct Queued {
    name: String,
    body: Vec<u8>,
}

/// The handle that emits events; cheap to clone. Without `hooks.events_url` it does
/// nothing.
#[derive(Debug, Clone, Default)]
pub struct Events {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    outbox: Outbox,
    node: String,
    receiver: delivery::Receiver,
    counters: DeliveryCounters,
    queue: mpsc::Sender<Queued>,
    /// The channel's other end, until the delivery task takes it.
    queued: Mutex<Option<mpsc::Receiver<Queued>>>,
}

impl Events {
    /// Events of node `node`, kept in `record_dir`'s outbox until delivered.
    pub fn new(
        config: &HooksConfig,
        record_dir: &Path,
        node: &str,
        counters: DeliveryCounters,
    ) -> Self {
        if config.events_url.is_empty() {
            return Self::default();
        }
        let (queue, queued) = mpsc::channel(QUEUED);
        Self {
            inner: Some(Arc::new(Inner {
                outbox: Outbox::new(record_dir),
                node: node.to_string(),
                receiver: delivery::Receiver {
                    url: config.events_url.clone(),
                    secret: config.secret.clone(),
                    timeout: Duration::from_millis(config.timeout_ms.into()),
                },
                counters,
                queue,
                queued: Mutex::new(Some(queued)),
            })),
        }
    }

    /// Creates the outbox and starts the delivery task, which first delivers what a
    /// previous run left there. Once; later calls do nothing.
    pub fn spawn(&self) -> std::io::Result<()> {
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let Some(queued) = inner
            .queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return Ok(());
        };
        inner.outbox.prepare()?;
        let waiting = inner.outbox.list().len();
        tracing::info!(url = %inner.receiver.url, outbox = %inner.outbox.dir().display(), waiting, "events are delivered");
        tokio::spawn(delivery::run(
            inner.outbox.clone(),
            inner.receiver.clone(),
            queued,
            inner.counters.clone(),
        ));
        Ok(())
    }

    /// Keeps `event` on disk and hands it to the delivery task; never waits for the
    /// delivery. Writing the small file is the only blocking part.
    pub fn emit(&self, event: Event) {
        let Some(inner) = &self.inner else {
            return;
        };
        let id = new_id();
        let now = SystemTime::now();
        let name = outbox::file_name(now, &id);
        let body = body(&id, now, &inner.node, &event);
        if let Err(e) = crate::blocking::blocking(|| inner.outbox.write(&name, &body)) {
            tracing::error!(kind = event.kind(), %id, "cannot keep an event in the outbox ({}): {e}; it is not delivered", inner.outbox.dir().display());
            return;
        }
        tracing::debug!(kind = event.kind(), %id, "event");
        // Full: the delivery task finds the file at its next look at the outbox.
        let _ = inner.queue.try_send(Queued { name, body });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn name(s: &str) -> StreamName {
        StreamName::new(s).unwrap()
    }

    #[test]
    fn bodies_carry_id_type_time_node_and_the_event() {
        let event = Event::ended(&name("cam"), &EndReason::PipelineError("boom".into()));
        let body = body("ab12", UNIX_EPOCH, "node-1", &event);
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "ab12",
                "type": "stream.ended",
                "time": "1970-01-01T00:00:00.000Z",
                "node": "node-1",
                "stream": "cam",
                "reason": "pipeline-error",
                "detail": "pipeline-error: boom",
            })
        );
        let ended = Event::ended(&name("cam"), &EndReason::Unpublished);
        let json: serde_json::Value =
            serde_json::from_slice(&super::body("x", UNIX_EPOCH, "n", &ended)).unwrap();
        assert_eq!(json["reason"], "unpublished");
        assert!(json.get("detail").is_none());
    }

    #[test]
    fn a_recording_says_its_file_bytes_and_seconds() {
        let event = Event::recording_finished(
            &name("cam"),
            "cam-20260101T000000Z.mp4",
            1234,
            Some(Duration::from_millis(2500)),
        );
        let json: serde_json::Value =
            serde_json::from_slice(&body("x", UNIX_EPOCH, "n", &event)).unwrap();
        assert_eq!(json["type"], "recording.finished");
        assert_eq!(json["file"], "cam-20260101T000000Z.mp4");
        assert_eq!(json["bytes"], 1234);
        assert_eq!(json["duration_s"], 2.5);
    }

    #[test]
    fn ids_are_128_bits_of_hex_and_differ() {
        let (a, b) = (new_id(), new_id());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(
            outbox::id_of(&outbox::file_name(UNIX_EPOCH, &a)),
            Some(a.as_str())
        );
    }

    #[test]
    fn without_a_url_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let events = Events::new(&HooksConfig::default(), dir.path(), "n", Default::default());
        events.emit(Event::ended(&name("cam"), &EndReason::Unpublished));
        events.spawn().unwrap();
        assert!(!dir.path().join(outbox::OUTBOX_DIR).exists());
    }

    #[test]
    fn emitted_events_wait_in_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let config = HooksConfig {
            events_url: "http://127.0.0.1:9/events".into(),
            ..HooksConfig::default()
        };
        let events = Events::new(&config, dir.path(), "n", Default::default());
        events.emit(Event::ended(&name("cam"), &EndReason::Unpublished));
        let outbox = Outbox::new(dir.path());
        let files = outbox.list();
        assert_eq!(files.len(), 1);
        let json: serde_json::Value =
            serde_json::from_slice(&outbox.read(&files[0]).unwrap()).unwrap();
        assert_eq!(json["id"].as_str(), outbox::id_of(&files[0]));
        assert_eq!(json["type"], "stream.ended");
    }
}
