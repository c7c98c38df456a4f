//! How the nodes of a cluster know each other: a request one node forwards to another
//! carries the forwarding node's id, the time, and an HMAC-SHA256 of the method, the
//! path with its query, the time and the id, keyed with `cluster.secret`. A node takes
//! a forwarded request only with a valid signature made in the last [`MAX_AGE_S`]
//! seconds (or as far in the future, for clocks that differ).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How old (or how far ahead of this node's clock) a signature may be, in seconds.
pub const MAX_AGE_S: u64 = 30;

/// What a forwarded request says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded<'a> {
    pub method: &'a str,
    /// The path with its query, as sent (`/api/streams?token=x`).
    pub path: &'a str,
    /// Seconds since the Unix epoch when it was signed.
    pub timestamp: u64,
    /// The forwarding node.
    pub node: &'a str,
}

/// Why a forwarded request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("a forwarded request must be signed with the cluster's secret")]
    Missing,
    #[error("the forwarded request's time is not a number of seconds")]
    BadTimestamp,
    #[error("the forwarded request was signed {0} s away from this node's time")]
    Stale(u64),
    #[error("the forwarded request's signature does not match the cluster's secret")]
    Mismatch,
}

fn mac(secret: &str, request: &Forwarded<'_>) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any size");
    let text = format!(
        "{}\n{}\n{}\n{}",
        request.method, request.path, request.timestamp, request.node
    );
    mac.update(text.as_bytes());
    mac
}

/// The signature of `request`, in lowercase hex.
pub fn sign(secret: &str, request: &Forwarded<'_>) -> String {
    mac(secret, request)
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.is_ascii() || !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// Checks `signature` (hex) over `request`, at `now` (seconds since the Unix epoch).
pub fn verify(
    secret: &str,
    request: &Forwarded<'_>,
    signature: &str,
    now: u64,
) -> Result<(), SignatureError> {
    let age = now.abs_diff(request.timestamp);
    if age > MAX_AGE_S {
        return Err(SignatureError::Stale(age));
    }
    let signature = unhex(signature).ok_or(SignatureError::Mismatch)?;
    // Compared in constant time.
    mac(secret, request)
        .verify_slice(&signature)
        .map_err(|_| SignatureError::Mismatch)
}

/// Seconds since the Unix epoch, now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cret";

    fn request() -> Forwarded<'static> {
        Forwarded {
            method: "GET",
            path: "/api/streams?token=r",
            timestamp: 1_700_000_000,
            node: "gw1",
        }
    }

    #[test]
    fn a_signed_request_verifies_and_any_change_is_seen() {
        let signature = sign(SECRET, &request());
        assert_eq!(signature.len(), 64);
        let now = request().timestamp + 5;
        assert_eq!(verify(SECRET, &request(), &signature, now), Ok(()));
        let tampered = [
            Forwarded {
                method: "DELETE",
                ..request()
            },
            Forwarded {
                path: "/api/streams?token=admin",
                ..request()
            },
            Forwarded {
                node: "gw2",
                ..request()
            },
            Forwarded {
                timestamp: request().timestamp + 1,
                ..request()
            },
        ];
        for changed in tampered {
            assert_eq!(
                verify(SECRET, &changed, &signature, now),
                Err(SignatureError::Mismatch),
                "{changed:?}"
            );
        }
        assert_eq!(
            verify("other", &request(), &signature, now),
            Err(SignatureError::Mismatch)
        );
        for bad in ["", "zz", "é", &signature[..62]] {
            assert_eq!(
                verify(SECRET, &request(), bad, now),
                Err(SignatureError::Mismatch)
            );
        }
    }

    #[test]
    fn an_old_or_early_signature_is_stale() {
        let signature = sign(SECRET, &request());
        let at = request().timestamp;
        assert_eq!(
            verify(SECRET, &request(), &signature, at + MAX_AGE_S),
            Ok(())
        );
        assert_eq!(
            verify(SECRET, &request(), &signature, at + MAX_AGE_S + 1),
            Err(SignatureError::Stale(MAX_AGE_S + 1))
        );
        assert_eq!(
            verify(SECRET, &request(), &signature, at - 120),
            Err(SignatureError::Stale(120))
        );
    }
}
