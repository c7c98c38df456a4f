//! The signature of every request the gateway sends to the operator's hooks (the
//! publish and read hooks, the event webhooks): `sha256=HEX`, the HMAC-SHA256 of the
//! exact body bytes keyed with `hooks.secret`, sent as `X-Gateway-Signature` (as GitHub
//! and Stripe sign their webhooks).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries [`signature`].
pub const SIGNATURE_HEADER: &str = "X-Gateway-Signature";

/// `sha256=` and the HMAC-SHA256 of `body` with `secret`, in lowercase hex.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any size");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::signature;

    #[test]
    fn matches_the_rfc_4231_test_vector() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn an_empty_secret_still_signs() {
        let signed = signature("", b"{}");
        assert!(signed.starts_with("sha256="));
        assert_eq!(signed.len(), "sha256=".len() + 64);
    }
}
