//! Every refusal a publisher or an API client can get, as a [`Problem`]: a status (the
//! HTTP status, and the `code` of a WebSocket `error` message), a token and a sentence.
//! This is the one table from errors to statuses; WebSocket, WHIP and the API use it.

use crate::name::{BadName, StreamName};
use crate::registry::RegistryError;
use crate::session::PublishError;
use crate::session::offer::OfferError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub status: u16,
    pub error: &'static str,
    pub message: String,
}

impl Problem {
    pub fn new(status: u16, error: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error,
            message: message.into(),
        }
    }

    /// A stream name that is not one.
    pub fn bad_name() -> Self {
        Self::new(400, "bad-stream-name", BadName.to_string())
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "unauthorized", message)
    }

    /// A request that says another node of the cluster forwarded it, without a valid
    /// signature of the cluster's secret.
    pub fn forward_unsigned(message: impl Into<String>) -> Self {
        Self::new(403, "forward-unsigned", message)
    }

    /// A publication of `stream` that could not start.
    pub fn publish(stream: &StreamName, error: &PublishError) -> Self {
        let message = error.to_string();
        match error {
            PublishError::Offer(OfferError::Malformed(_)) => Self::new(400, "bad-sdp", message),
            PublishError::Offer(OfferError::NoSupportedCodec) => {
                Self::new(415, "unsupported-codec", message)
            }
            PublishError::Offer(OfferError::NotSending | OfferError::TooManyTracks(_)) => {
                Self::new(422, "unprocessable-offer", message)
            }
            PublishError::Registry(RegistryError::InUse) => Self::new(
                409,
                "stream-in-use",
                format!("stream {stream} already has a publisher"),
            ),
            PublishError::Registry(RegistryError::Full(_)) => {
                Self::new(503, "too-many-publishers", message)
            }
            PublishError::ShuttingDown => Self::new(503, "shutting-down", message),
            PublishError::NoCapacity => Self::new(503, "no-capacity", message),
            PublishError::ClusterUnavailable(_) => Self::new(503, "cluster-unavailable", message),
            PublishError::Negotiation(_) => Self::new(400, "negotiation-failed", message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_errors_have_one_status_each() {
        let stream = StreamName::new("cam1").unwrap();
        let table: [(PublishError, u16, &str); 9] = [
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
}
