//! The signature of every request the gateway sends to the operator's hooks:
//! `X-Gateway-Signature: sha256=HEX`, the HMAC-SHA256 of the body keyed with
//! `hooks.secret`, as GitHub and Stripe sign theirs.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries [`signature`].
pub const HEADER: &str = "x-gateway-signature";

/// `sha256=` and the lowercase hex HMAC-SHA256 of `body` keyed with `secret`.
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
    use super::*;

    #[test]
    fn known_value() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
