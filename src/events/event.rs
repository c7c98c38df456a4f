//! An event and its JSON: `id` (128 random bits in hex), `type`, `time` (RFC 3339, UTC),
//! `node`, and what happened.

use crate::name::StreamName;
use crate::stream::{EndReason, Outputs};
use serde::Serialize;
use std::time::{Duration, SystemTime};

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
            crate::events::outbox::id_of(&crate::events::outbox::file_name(UNIX_EPOCH, &a)),
            Some(a.as_str())
        );
    }
}
