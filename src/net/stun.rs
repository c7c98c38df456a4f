//! The one thing the mux reads of a packet: the ICE username fragment of a STUN Binding
//! request (the part of USERNAME before ':', which is the receiver's own), parsed by the
//! WebRTC stack's STUN crate once the framing says it is STUN at all.

use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::message::{BINDING_REQUEST, MAGIC_COOKIE, Message};

/// A STUN header's length.
const HEADER: usize = 20;

/// Whether `bytes` start like a STUN message (RFC 5389: the first two bits zero, the magic
/// cookie at bytes 4 to 8). Enough bytes to tell: 8.
pub fn looks_like_stun(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[0] & 0xC0 == 0 && bytes[4..8] == MAGIC_COOKIE.to_be_bytes()
}

/// The username fragment a Binding request is for, if `packet` is one.
pub fn request_ufrag(packet: &[u8]) -> Option<String> {
    if packet.len() < HEADER || !looks_like_stun(packet) {
        return None;
    }
    let mut message = Message::new();
    message.unmarshal_binary(packet).ok()?;
    if message.typ != BINDING_REQUEST {
        return None;
    }
    let username = message.get(ATTR_USERNAME).ok()?;
    let username = std::str::from_utf8(&username).ok()?;
    let ufrag = username.split(':').next()?;
    (!ufrag.is_empty()).then(|| ufrag.to_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rtc::stun::message::{Setter, TransactionId};
    use rtc::stun::textattrs::TextAttribute;

    /// A Binding request with this USERNAME, as an ICE agent sends it.
    pub(crate) fn binding_request(username: &str) -> Vec<u8> {
        let mut message = Message::new();
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(TextAttribute::new(ATTR_USERNAME, username.to_owned())),
        ];
        message.build(&setters).unwrap();
        message.raw.clone()
    }

    #[test]
    fn the_username_fragment_of_a_binding_request() {
        let request = binding_request("abcd:efgh");
        assert!(looks_like_stun(&request));
        assert_eq!(request_ufrag(&request).as_deref(), Some("abcd"));
    }

    #[test]
    fn anything_else_names_nobody() {
        assert_eq!(request_ufrag(b""), None);
        assert_eq!(request_ufrag(&[0x80; 200]), None);
        // DTLS and RTP start with other bits.
        let mut dtls = binding_request("abcd:efgh");
        dtls[0] = 0x16;
        assert_eq!(request_ufrag(&dtls), None);
        // A STUN header whose length runs past the packet.
        let request = binding_request("abcd:efgh");
        assert_eq!(request_ufrag(&request[..HEADER + 2]), None);
        // A Binding request without a username.
        let mut message = Message::new();
        let setters: Vec<Box<dyn Setter>> =
            vec![Box::new(BINDING_REQUEST), Box::new(TransactionId::new())];
        message.build(&setters).unwrap();
        assert_eq!(request_ufrag(&message.raw), None);
    }

    #[test]
    fn random_bytes_never_panic() {
        for _ in 0..2000 {
            let len = rand::random_range(0..120);
            let mut bytes: Vec<u8> = (0..len).map(|_| rand::random()).collect();
            if bytes.len() >= 8 {
                bytes[0] &= 0x3F;
                bytes[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            }
            let _ = request_ufrag(&bytes);
        }
    }
}
