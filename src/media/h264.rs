//! What the outputs say of the encoder's H.264: its profile and level, read from the
//! SPS, for the HLS `CODECS` attribute and the SDP `profile-level-id`; and whether a
//! publisher's access unit holds a B slice, which pass-through cannot carry.

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

/// Whether an access unit (H.264 byte stream) is a B picture: its first coded slice's
/// `slice_type` (after `first_mb_in_slice`, both Exp-Golomb) is 1 or 6. Reads no further
/// than that slice's header.
pub fn has_b_slice(byte_stream: &[u8]) -> bool {
    let mut i = 0;
    while i + 3 < byte_stream.len() {
        if byte_stream[i..i + 3] != [0, 0, 1] {
            i += 1;
            continue;
        }
        let nal = &byte_stream[i + 3..];
        if matches!(nal[0] & 0x1f, 1 | 5) {
            return slice_type(&nal[1..]).is_some_and(|t| t % 5 == 1);
        }
        i += 3;
    }
    false
}

/// The `slice_type` of a slice header: the second Exp-Golomb number of `header`.
fn slice_type(header: &[u8]) -> Option<u32> {
    let mut bits = header
        .iter()
        .take(8)
        .flat_map(|byte| (0..8).rev().map(move |k| byte >> k & 1 == 1));
    let mut read = || -> Option<u32> {
        let mut zeros = 0;
        while !bits.next()? {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let mut value = 1u32;
        for _ in 0..zeros {
            value = value << 1 | u32::from(bits.next()?);
        }
        Some(value - 1)
    };
    read()?;
    read()
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
    fn b_slices_are_found() {
        // first_mb_in_slice 0 ('1'), slice_type: 0 P ('1'), 1 B ('010'), 2 I ('011'),
        // 6 B ('00111').
        let slice = |nal: u8, bits: u8| [0, 0, 0, 1, nal, bits, 0x88, 0x84];
        assert!(!has_b_slice(&slice(0x41, 0b1100_0000)), "P");
        assert!(has_b_slice(&slice(0x01, 0b1010_0000)), "B");
        assert!(!has_b_slice(&slice(0x65, 0b1011_0000)), "I in an IDR");
        assert!(has_b_slice(&slice(0x01, 0b1001_1100)), "B, type 6");
        let mut unit = vec![0, 0, 0, 1, 0x67, 0xff, 0xff];
        unit.extend(slice(0x41, 0b1010_0000));
        assert!(has_b_slice(&unit), "after an SPS");
        assert!(!has_b_slice(&[0, 0, 1, 0x01]), "cut short");
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
