//! Every refusal a publisher or an API client can get, as a [`Problem`]: a status (the
//! HTTP status, and the `code` of a WebSocket `error` message), a token and a sentence.
//! [`Refusal`] is the one table from kinds of refusal to statuses and tokens, and the
//! typed errors of the layers below (publishing, control commands, WHIP) map onto it
//! here and nowhere else; WebSocket, WHIP and the API answer with it.

use crate::access::Denied;
use crate::media::output::record::RecordingError;
use crate::media::output::rtp::DestinationError;
use crate::name::{BadName, StreamName};
use crate::registry::RegistryError;
use crate::session::offer::OfferError;
use crate::session::{ControlError, NegotiationError, PublishError};

/// A kind of refusal. Client mistakes are 4xx, faults of this server 5xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    BadStreamName,
    Unauthorized,
    Forbidden,
    HookUnavailable,
    MalformedRequest,
    // Publishing.
    BadSdp,
    UnsupportedCodec,
    UnprocessableOffer,
    NegotiationFailed,
    StreamInUse,
    TooManyPublishers,
    ShuttingDown,
    NoCapacity,
    ClusterUnavailable,
    PeerSetupFailed,
    // The WebSocket protocol.
    MessageTooLarge,
    MalformedMessage,
    UnknownType,
    AlreadyPublishing,
    NotPublishing,
    // WHIP.
    UnsupportedMediaType,
    NoSuchSession,
    PreconditionFailed,
    IceRestartUnsupported,
    // The stream and control API.
    NoSuchStream,
    SessionTimeout,
    NotRecording,
    AlreadyRecording,
    RecordingFailed,
    RtpDisabled,
    BadDestination,
    TooManyDestinations,
    DestinationInUse,
    NoSuchDestination,
    // Files.
    NoSuchFile,
    NotReady,
    HlsDisabled,
    BadDeliveryDirective,
    NoHlsJs,
    ReadFailed,
    NodeUnreachable,
    // The cluster.
    ForwardUnsigned,
}

impl Refusal {
    /// The HTTP status (and WebSocket error code) and the token: the one table.
    pub const fn status_and_token(self) -> (u16, &'static str) {
        match self {
            Refusal::BadStreamName => (400, "bad-stream-name"),
            Refusal::Unauthorized => (401, "unauthorized"),
            Refusal::Forbidden => (403, "forbidden"),
            Refusal::HookUnavailable => (503, "hook-unavailable"),
            Refusal::MalformedRequest => (400, "malformed-request"),
            Refusal::BadSdp => (400, "bad-sdp"),
            Refusal::UnsupportedCodec => (415, "unsupported-codec"),
            Refusal::UnprocessableOffer => (422, "unprocessable-offer"),
            Refusal::NegotiationFailed => (400, "negotiation-failed"),
            Refusal::StreamInUse => (409, "stream-in-use"),
            Refusal::TooManyPublishers => (503, "too-many-publishers"),
            Refusal::ShuttingDown => (503, "shutting-down"),
            Refusal::NoCapacity => (503, "no-capacity"),
            Refusal::ClusterUnavailable => (503, "cluster-unavailable"),
            Refusal::PeerSetupFailed => (500, "peer-setup-failed"),
            Refusal::MessageTooLarge => (400, "message-too-large"),
            Refusal::MalformedMessage => (400, "malformed-message"),
            Refusal::UnknownType => (400, "unknown-type"),
            Refusal::AlreadyPublishing => (409, "already-publishing"),
            Refusal::NotPublishing => (400, "not-publishing"),
            Refusal::UnsupportedMediaType => (415, "unsupported-media-type"),
            Refusal::NoSuchSession => (404, "no-such-session"),
            Refusal::PreconditionFailed => (412, "precondition-failed"),
            Refusal::IceRestartUnsupported => (422, "ice-restart-unsupported"),
            Refusal::NoSuchStream => (404, "no-such-stream"),
            Refusal::SessionTimeout => (504, "session-timeout"),
            Refusal::NotRecording => (409, "not-recording"),
            Refusal::AlreadyRecording => (409, "already-recording"),
            Refusal::RecordingFailed => (500, "recording-failed"),
            Refusal::RtpDisabled => (404, "rtp-disabled"),
            Refusal::BadDestination => (400, "bad-destination"),
            Refusal::TooManyDestinations => (409, "too-many-destinations"),
            Refusal::DestinationInUse => (409, "destination-in-use"),
            Refusal::NoSuchDestination => (404, "no-such-destination"),
            Refusal::NoSuchFile => (404, "no-such-file"),
            Refusal::NotReady => (503, "not-ready"),
            Refusal::HlsDisabled => (404, "hls-disabled"),
            Refusal::BadDeliveryDirective => (400, "bad-delivery-directive"),
            Refusal::NoHlsJs => (404, "no-hls-js"),
            Refusal::ReadFailed => (500, "read-failed"),
            Refusal::NodeUnreachable => (502, "node-unreachable"),
            Refusal::ForwardUnsigned => (403, "forward-unsigned"),
        }
    }

    /// This refusal, saying why.
    pub fn because(self, message: impl Into<String>) -> Problem {
        let (status, error) = self.status_and_token();
        Problem {
            status,
            error,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub status: u16,
    pub error: &'static str,
    pub message: String,
}

impl Problem {
    /// A stream name that is not one.
    pub fn bad_name() -> Self {
        Refusal::BadStreamName.because(BadName.to_string())
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Refusal::Unauthorized.because(message)
    }

    /// Access refused by a token or a hook.
    pub fn denied(denied: &Denied) -> Self {
        let refusal = match denied {
            Denied::Unauthorized(_) => Refusal::Unauthorized,
            Denied::Forbidden(_) => Refusal::Forbidden,
            Denied::HookUnavailable(_) => Refusal::HookUnavailable,
        };
        refusal.because(denied.to_string())
    }

    /// No live (or lingering) stream of that name.
    pub fn no_stream(name: &str) -> Self {
        Refusal::NoSuchStream.because(format!("no live stream named {name}"))
    }

    pub fn no_file(file: &str) -> Self {
        Refusal::NoSuchFile.because(format!("no file named {file:?}"))
    }

    /// A request that says another node of the cluster forwarded it, without a valid
    /// signature of the cluster's secret.
    pub fn forward_unsigned(message: impl Into<String>) -> Self {
        Refusal::ForwardUnsigned.because(message)
    }

    /// A publication of `stream` that could not start.
    pub fn publish(stream: &StreamName, error: &PublishError) -> Self {
        let message = error.to_string();
        let refusal = match error {
            PublishError::Offer(OfferError::Malformed(_)) => Refusal::BadSdp,
            PublishError::Offer(OfferError::NoSupportedCodec) => Refusal::UnsupportedCodec,
            PublishError::Offer(OfferError::NotSending | OfferError::TooManyTracks(_)) => {
                Refusal::UnprocessableOffer
            }
            PublishError::Registry(RegistryError::InUse) => {
                return Refusal::StreamInUse
                    .because(format!("stream {stream} already has a publisher"));
            }
            PublishError::Registry(RegistryError::Full(_)) => Refusal::TooManyPublishers,
            PublishError::ShuttingDown => Refusal::ShuttingDown,
            PublishError::NoCapacity => Refusal::NoCapacity,
            PublishError::ClusterUnavailable(_) => Refusal::ClusterUnavailable,
            PublishError::Negotiation(NegotiationError::Offer(_)) => Refusal::NegotiationFailed,
            PublishError::Negotiation(NegotiationError::Setup(_)) => Refusal::PeerSetupFailed,
        };
        refusal.because(message)
    }

    /// A control command to `stream`'s session that was refused or failed.
    pub fn control(stream: &StreamName, error: &ControlError) -> Self {
        let message = error.to_string();
        let refusal = match error {
            ControlError::Ended => {
                return Refusal::NoSuchStream.because(format!("stream {stream} has ended"));
            }
            ControlError::Timeout(_) => Refusal::SessionTimeout,
            ControlError::NotRecording => Refusal::NotRecording,
            ControlError::AlreadyRecording => Refusal::AlreadyRecording,
            ControlError::Recording(
                RecordingError::Create { .. }
                | RecordingError::Attach(_)
                | RecordingError::Failed(_),
            ) => Refusal::RecordingFailed,
            ControlError::NoRtpOutput => Refusal::RtpDisabled,
            ControlError::Destination(DestinationError::Limit(_)) => Refusal::TooManyDestinations,
            ControlError::Destination(DestinationError::InUse(_)) => Refusal::DestinationInUse,
            ControlError::Destination(DestinationError::Unknown(_)) => Refusal::NoSuchDestination,
        };
        refusal.because(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::error::PipelineError;
    use std::time::Duration;

    #[test]
    fn publish_errors_have_one_status_each() {
        let stream = StreamName::new("cam1").unwrap();
        let webrtc = || webrtc::error::Error::ErrNoRemoteDescription;
        let table: Vec<(PublishError, u16, &str)> = vec![
            (OfferError::Malformed("x".into()).into(), 400, "bad-sdp"),
            (
                OfferError::NoSupportedCodec.into(),
                415,
                "unsupported-codec",
            ),
            (OfferError::NotSending.into(), 422, "unprocessable-offer"),
            (
                OfferError::TooManyTracks("video".into()).into(),
                422,
                "unprocessable-offer",
            ),
            (RegistryError::InUse.into(), 409, "stream-in-use"),
            (RegistryError::Full(16).into(), 503, "too-many-publishers"),
            (PublishError::ShuttingDown, 503, "shutting-down"),
            (PublishError::NoCapacity, 503, "no-capacity"),
            (
                PublishError::ClusterUnavailable("down".into()),
                503,
                "cluster-unavailable",
            ),
            (
                NegotiationError::Offer(webrtc()).into(),
                400,
                "negotiation-failed",
            ),
            (
                NegotiationError::Setup(webrtc()).into(),
                500,
                "peer-setup-failed",
            ),
        ];
        for (error, status, token) in table {
            let problem = Problem::publish(&stream, &error);
            assert_eq!((problem.status, problem.error), (status, token), "{error}");
        }
        assert_eq!(
            Problem::publish(&stream, &RegistryError::InUse.into()).message,
            "stream cam1 already has a publisher"
        );
    }

    #[test]
    fn control_errors_have_one_status_each() {
        let stream = StreamName::new("cam1").unwrap();
        let table: Vec<(ControlError, u16, &str)> = vec![
            (ControlError::Ended, 404, "no-such-stream"),
            (
                ControlError::Timeout(Duration::from_secs(5)),
                504,
                "session-timeout",
            ),
            (ControlError::NotRecording, 409, "not-recording"),
            (ControlError::AlreadyRecording, 409, "already-recording"),
            (
                RecordingError::Create {
                    dir: "/x".into(),
                    source: std::io::Error::other("full"),
                }
                .into(),
                500,
                "recording-failed",
            ),
            (
                RecordingError::Attach(PipelineError::Start("no tee".into())).into(),
                500,
                "recording-failed",
            ),
            (ControlError::NoRtpOutput, 404, "rtp-disabled"),
            (
                DestinationError::Limit(1).into(),
                409,
                "too-many-destinations",
            ),
            (
                DestinationError::InUse([127, 0, 0, 1].into()).into(),
                409,
                "destination-in-use",
            ),
            (
                DestinationError::Unknown("ab".into()).into(),
                404,
                "no-such-destination",
            ),
        ];
        for (error, status, token) in table {
            let problem = Problem::control(&stream, &error);
            assert_eq!((problem.status, problem.error), (status, token), "{error}");
        }
        assert_eq!(
            Problem::control(&stream, &ControlError::Ended).message,
            "stream cam1 has ended"
        );
    }

    #[test]
    fn client_mistakes_are_4xx_and_server_faults_5xx() {
        use Refusal as R;
        let server = [
            R::HookUnavailable,
            R::TooManyPublishers,
            R::ShuttingDown,
            R::NoCapacity,
            R::ClusterUnavailable,
            R::PeerSetupFailed,
            R::SessionTimeout,
            R::RecordingFailed,
            R::NotReady,
            R::ReadFailed,
            R::NodeUnreachable,
        ];
        let client = [
            R::ForwardUnsigned,
            R::BadStreamName,
            R::Unauthorized,
            R::Forbidden,
            R::MalformedRequest,
            R::BadSdp,
            R::UnsupportedCodec,
            R::UnprocessableOffer,
            R::NegotiationFailed,
            R::StreamInUse,
            R::MessageTooLarge,
            R::MalformedMessage,
            R::UnknownType,
            R::AlreadyPublishing,
            R::NotPublishing,
            R::UnsupportedMediaType,
            R::NoSuchSession,
            R::PreconditionFailed,
            R::IceRestartUnsupported,
            R::NoSuchStream,
            R::NotRecording,
            R::AlreadyRecording,
            R::RtpDisabled,
            R::BadDestination,
            R::TooManyDestinations,
            R::DestinationInUse,
            R::NoSuchDestination,
            R::NoSuchFile,
            R::HlsDisabled,
            R::BadDeliveryDirective,
            R::NoHlsJs,
        ];
        let mut tokens = std::collections::BTreeSet::new();
        for refusal in server {
            let (status, token) = refusal.status_and_token();
            assert!((500..600).contains(&status), "{refusal:?}");
            assert!(tokens.insert(token), "{token} twice");
        }
        for refusal in client {
            let (status, token) = refusal.status_and_token();
            assert!((400..500).contains(&status), "{refusal:?}");
            assert!(tokens.insert(token), "{token} twice");
        }
    }
}
