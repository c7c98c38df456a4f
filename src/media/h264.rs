//! What the outputs say of the encoder's H.264: its profile and level, read from the
//! SPS, for the HLS `CODECS` attribute and the SDP `profile-level-id`.

/// `avc1.PPCCLL` (profile, constraint flags, level) from the first SPS in an H.264
/// byte stream.
pub fn avc1_codec(byte_stream: &[u8]) -> Option<String> {
    let mut i = 0;
    while i + 3 < byte_stream.len() {
        if byte_stream[i..i + 3] == [0, 0, 1] {
            let nal = &byte_stream[i + 3..];
            if nal.len() >= 4 && nal[0] & 0x1f == 7 {
                return Some(format!("avc1.{:02x}{:02x}{:02x}", nal[1], nal[2], nal[3]));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    None
}

/// `profile-level-id` (RFC 6184): the SPS's profile, constraint flags and level, in hex,
/// from the first of the `sprop-parameter-sets`.
pub fn profile_level_id(sprop_parameter_sets: &str) -> Option<String> {
    use base64::Engine;
    let first = sprop_parameter_sets.split(',').next()?;
    let sps = base64::engine::general_purpose::STANDARD
        .decode(first)
        .ok()?;
    (sps.len() >= 4 && sps[0] & 0x1f == 7)
        .then(|| format!("{:02x}{:02x}{:02x}", sps[1], sps[2], sps[3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_from_sps() {
        let stream = [
            0, 0, 0, 1, 0x09, 0xf0, 0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f, 0xda, 0, 0, 1, 0x68,
        ];
        assert_eq!(avc1_codec(&stream).as_deref(), Some("avc1.42c01f"));
        assert_eq!(avc1_codec(&[0, 0, 1, 0x65, 1, 2, 3]), None);
    }

    #[test]
    fn profile_from_the_sps() {
        assert_eq!(
            profile_level_id("Z0LAHtoCgL/lwFqDAwNSgAAAAwCAAAAeR4sXUA==,aM48gA==").as_deref(),
            Some("42c01e")
        );
        assert_eq!(profile_level_id("aM48gA=="), None);
        assert_eq!(profile_level_id("%%%"), None);
    }
}
