//! What a publisher's SDP offer asks for: which media sections, which codecs. Plain text
//! reading, no I/O; the WebRTC stack parses the offer fully later.

use crate::media::{AudioInput, VideoCodec, VideoInput};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    pub payload_type: u8,
    pub name: String,
    pub clock_rate: u32,
    pub fmtp: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    pub kind: String,
    pub port: u16,
    pub direction: String,
    pub mid: Option<String>,
    pub codecs: Vec<Codec>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("the offer is not valid SDP: {0}")]
    Malformed(String),
    #[error("the offer has no video (VP8, H.264) or audio (Opus) the gateway accepts")]
    NoSupportedCodec,
    #[error("the offer sends no media (every section is recvonly or inactive)")]
    NotSending,
    #[error("the offer has more than one {0} track")]
    TooManyTracks(String),
}

/// What the gateway will receive from an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferPlan {
    pub video: Option<(VideoInput, Codec)>,
    pub audio: Option<(AudioInput, Codec)>,
}

/// Splits SDP text into its media sections.
pub fn media_sections(sdp: &str) -> Vec<MediaSection> {
    let mut sections: Vec<MediaSection> = Vec::new();
    let mut session_direction = "sendrecv".to_string();
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut fields = m.split_whitespace();
            let kind = fields.next().unwrap_or_default().to_string();
            let port = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let _proto = fields.next();
            let codecs = fields
                .filter_map(|pt| pt.parse().ok())
                .map(|payload_type| Codec {
                    payload_type,
                    name: String::new(),
                    clock_rate: 0,
                    fmtp: String::new(),
                })
                .collect();
            sections.push(MediaSection {
                kind,
                port,
                direction: session_direction.clone(),
                mid: None,
                codecs,
            });
            continue;
        }
        let Some(attribute) = line.strip_prefix("a=") else {
            continue;
        };
        let (name, value) = attribute.split_once(':').unwrap_or((attribute, ""));
        let Some(section) = sections.last_mut() else {
            if matches!(name, "sendrecv" | "sendonly" | "recvonly" | "inactive") {
                session_direction = name.to_string();
            }
            continue;
        };
        match name {
            "sendrecv" | "sendonly" | "recvonly" | "inactive" => section.direction = name.into(),
            "mid" => section.mid = Some(value.to_string()),
            "rtpmap" | "fmtp" => {
                let (pt, rest) = value.split_once(' ').unwrap_or((value, ""));
                let Ok(pt) = pt.parse::<u8>() else { continue };
                let Some(codec) = section.codecs.iter_mut().find(|c| c.payload_type == pt) else {
                    continue;
                };
                if name == "fmtp" {
                    codec.fmtp = rest.to_string();
                } else {
                    let mut parts = rest.split('/');
                    codec.name = parts.next().unwrap_or_default().to_string();
                    codec.clock_rate = parts.next().and_then(|r| r.parse().ok()).unwrap_or(0);
                }
            }
            _ => {}
        }
    }
    sections
}

/// Checks an offer and picks the codecs the gateway will receive: VP8 (preferred) or
/// H.264 with packetization-mode 1 for video, Opus for audio.
pub fn plan(sdp: &str) -> Result<OfferPlan, OfferError> {
    if !sdp.trim_start().starts_with("v=0") {
        return Err(OfferError::Malformed("it does not start with v=0".into()));
    }
    webrtc::peer_connection::RTCSessionDescription::offer(sdp.to_string())
        .map_err(|e| OfferError::Malformed(e.to_string()))?;
    let sections = media_sections(sdp);
    if sections.is_empty() {
        return Err(OfferError::Malformed("it has no media section".into()));
    }
    let sending: Vec<&MediaSection> = sections
        .iter()
        .filter(|s| s.port != 0 && matches!(s.direction.as_str(), "sendrecv" | "sendonly"))
        .collect();
    for kind in ["audio", "video"] {
        if sending.iter().filter(|s| s.kind == kind).count() > 1 {
            return Err(OfferError::TooManyTracks(kind.into()));
        }
    }
    let find = |kind: &str| sending.iter().find(|s| s.kind == kind);
    let video = find("video").and_then(|s| {
        let vp8 = s
            .codecs
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case("VP8") && c.clock_rate == 90000)
            .map(|c| (VideoCodec::Vp8, c));
        let h264 = s
            .codecs
            .iter()
            .find(|c| {
                c.name.eq_ignore_ascii_case("H264")
                    && c.clock_rate == 90000
                    && c.fmtp.contains("packetization-mode=1")
            })
            .map(|c| (VideoCodec::H264, c));
        vp8.or(h264).map(|(codec, c)| {
            (
                VideoInput {
                    codec,
                    payload_type: c.payload_type,
                    clock_rate: c.clock_rate,
                },
                c.clone(),
            )
        })
    });
    let audio = find("audio").and_then(|s| {
        s.codecs
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case("opus") && c.clock_rate == 48000)
            .map(|c| {
                (
                    AudioInput {
                        payload_type: c.payload_type,
                    },
                    c.clone(),
                )
            })
    });
    if video.is_none() && audio.is_none() {
        return Err(if sending.is_empty() {
            OfferError::NotSending
        } else {
            OfferError::NoSupportedCodec
        });
    }
    Ok(OfferPlan { video, audio })
}

/// The `mid` of the first media section, which carries the bundled transport.
pub fn first_mid(sdp: &str) -> Option<String> {
    media_sections(sdp).into_iter().find_map(|s| s.mid)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const BROWSER_OFFER: &str = include_str!("../../tests/common/browser_offer.sdp");

    #[test]
    fn browser_offer_prefers_vp8_and_opus() {
        let plan = plan(BROWSER_OFFER).unwrap();
        let (video, codec) = plan.video.unwrap();
        assert_eq!(video.codec, VideoCodec::Vp8);
        assert_eq!(video.payload_type, 96);
        assert_eq!(codec.name, "VP8");
        assert_eq!(plan.audio.unwrap().0.payload_type, 111);
        assert_eq!(first_mid(BROWSER_OFFER).as_deref(), Some("0"));
    }

    #[test]
    fn h264_only_offer() {
        let offer = BROWSER_OFFER.replace("a=rtpmap:96 VP8/90000\r\n", "");
        let (video, codec) = plan(&offer).unwrap().video.unwrap();
        assert_eq!(video.codec, VideoCodec::H264);
        assert_eq!(video.payload_type, 102);
        assert!(codec.fmtp.contains("profile-level-id=42e01f"));
    }

    #[test]
    fn rejections() {
        assert!(matches!(plan("hello"), Err(OfferError::Malformed(_))));
        assert!(matches!(plan(""), Err(OfferError::Malformed(_))));
        let no_codecs = BROWSER_OFFER
            .replace("opus/48000/2", "ISAC/16000")
            .replace("VP8/90000", "VP9/90000")
            .replace("H264/90000", "AV1/90000");
        assert_eq!(plan(&no_codecs), Err(OfferError::NoSupportedCodec));
        let receiving = BROWSER_OFFER.replace("a=sendonly", "a=recvonly");
        assert_eq!(plan(&receiving), Err(OfferError::NotSending));
        let audio_only = BROWSER_OFFER.replace("m=video 9", "m=video 0");
        let p = plan(&audio_only).unwrap();
        assert!(p.video.is_none() && p.audio.is_some());
    }
}
