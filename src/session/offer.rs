//! What a publisher's SDP offer asks for: which media sections, which codecs. The offer
//! is parsed once, by the WebRTC stack's SDP parser; this reads the plan from it. No I/O.

use crate::media::{AudioInput, VideoCodec, VideoInput};
use rtc::sdp::{MediaDescription, SessionDescription};
use std::io::Cursor;
use webrtc::peer_connection::RTCSessionDescription;

pub use rtc::sdp::util::Codec;

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
    /// The retransmission format (RFC 4588 RTX) the offer pairs with that video codec.
    pub video_rtx: Option<Codec>,
    pub audio: Option<(AudioInput, Codec)>,
}

const DIRECTIONS: [&str; 4] = ["sendrecv", "sendonly", "recvonly", "inactive"];

/// A section's direction: its own attribute, or the session's, or `sendrecv`.
fn direction<'a>(session: &'a SessionDescription, section: &'a MediaDescription) -> &'a str {
    let own = DIRECTIONS.into_iter().find(|d| section.has_attribute(d));
    own.or_else(|| DIRECTIONS.into_iter().find(|d| session.has_attribute(d)))
        .unwrap_or("sendrecv")
}

/// A section's codecs, in the order its `m=` line prefers them.
fn codecs(section: &MediaDescription) -> Vec<Codec> {
    let mut by_type = section.codecs();
    section
        .media_name
        .formats
        .iter()
        .filter_map(|format| format.parse::<u8>().ok())
        .filter_map(|payload_type| by_type.remove(&payload_type))
        .collect()
}

/// Which video codec the gateway takes when an offer has both VP8 and H.264.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoPreference {
    /// VP8: every video is transcoded anyway, and VP8 decodes at the least cost.
    Vp8,
    /// The offer's own order: a publisher that prefers H.264 (the page's checkbox, a WHIP
    /// tool) has it passed through.
    OfferOrder,
}

/// Checks an offer and picks the codecs the gateway will receive: VP8 or H.264 with
/// packetization-mode 1 for video (by `preference`), Opus for audio.
pub fn plan(sdp: &str, preference: VideoPreference) -> Result<OfferPlan, OfferError> {
    if !sdp.trim_start().starts_with("v=0") {
        return Err(OfferError::Malformed("it does not start with v=0".into()));
    }
    let session = RTCSessionDescription::offer(sdp.to_string())
        .and_then(|offer| offer.unmarshal())
        .map_err(|e| OfferError::Malformed(e.to_string()))?;
    if session.media_descriptions.is_empty() {
        return Err(OfferError::Malformed("it has no media section".into()));
    }
    let sending: Vec<&MediaDescription> = session
        .media_descriptions
        .iter()
        .filter(|s| {
            s.media_name.port.value != 0
                && matches!(direction(&session, s), "sendrecv" | "sendonly")
        })
        .collect();
    for kind in ["audio", "video"] {
        if sending
            .iter()
            .filter(|s| s.media_name.media == kind)
            .count()
            > 1
        {
            return Err(OfferError::TooManyTracks(kind.into()));
        }
    }
    let find = |kind: &str| {
        sending
            .iter()
            .find(|s| s.media_name.media == kind)
            .map(|s| codecs(s))
    };
    let video = find("video").and_then(|codecs| {
        let vp8 = |c: &Codec| c.name.eq_ignore_ascii_case("VP8") && c.clock_rate == 90000;
        let h264 = |c: &Codec| {
            c.name.eq_ignore_ascii_case("H264")
                && c.clock_rate == 90000
                && c.fmtp.contains("packetization-mode=1")
        };
        let kind = |c: &Codec| {
            if vp8(c) {
                VideoCodec::Vp8
            } else {
                VideoCodec::H264
            }
        };
        let chosen = match preference {
            VideoPreference::Vp8 => codecs
                .iter()
                .find(|c| vp8(c))
                .or_else(|| codecs.iter().find(|c| h264(c))),
            VideoPreference::OfferOrder => codecs.iter().find(|c| vp8(c) || h264(c)),
        };
        chosen.map(|c| (kind(c), c)).map(|(codec, c)| {
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
    let audio = find("audio").and_then(|codecs| {
        codecs
            .into_iter()
            .find(|c| c.name.eq_ignore_ascii_case("opus") && c.clock_rate == 48000)
            .map(|c| {
                (
                    AudioInput {
                        payload_type: c.payload_type,
                    },
                    c,
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
    let video_rtx = video.as_ref().and_then(|(input, _)| {
        let apt = format!("apt={}", input.payload_type);
        find("video")?.into_iter().find(|c| {
            c.name.eq_ignore_ascii_case("rtx") && c.fmtp.split(';').any(|p| p.trim() == apt)
        })
    });
    Ok(OfferPlan {
        video,
        video_rtx,
        audio,
    })
}

/// The offer with at most `max` of its `a=candidate` lines (the first ones), how many
/// it kept, and how many it had past that.
pub fn limit_candidates(sdp: &str, max: usize) -> (String, usize, usize) {
    let mut kept = 0;
    let mut dropped = 0;
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        if line.trim_start().starts_with("a=candidate:") {
            if kept == max {
                dropped += 1;
                continue;
            }
            kept += 1;
        }
        out.push_str(line);
    }
    (out, kept, dropped)
}

/// The `mid` of the first media section of an SDP (the answer), which carries the
/// bundled transport.
pub fn first_mid(sdp: &str) -> Option<String> {
    let session = SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes())).ok()?;
    session
        .media_descriptions
        .iter()
        .find_map(|s| s.attribute("mid").flatten().map(str::to_string))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const BROWSER_OFFER: &str = include_str!("../../tests/common/browser_offer.sdp");

    #[test]
    fn browser_offer_prefers_vp8_and_opus() {
        let plan = plan(BROWSER_OFFER, VideoPreference::Vp8).unwrap();
        let (video, codec) = plan.video.unwrap();
        assert_eq!(video.codec, VideoCodec::Vp8);
        assert_eq!(video.payload_type, 96);
        assert_eq!(codec.name, "VP8");
        assert_eq!(plan.audio.unwrap().0.payload_type, 111);
        // Its retransmissions: RTX 97 repairs VP8 96.
        assert_eq!(plan.video_rtx.map(|c| c.payload_type), Some(97));
        assert_eq!(first_mid(BROWSER_OFFER).as_deref(), Some("0"));
    }

    #[test]
    fn h264_only_offer() {
        let offer = BROWSER_OFFER.replace("a=rtpmap:96 VP8/90000\r\n", "");
        let (video, codec) = plan(&offer, VideoPreference::Vp8).unwrap().video.unwrap();
        assert_eq!(video.codec, VideoCodec::H264);
        assert_eq!(video.payload_type, 102);
        assert!(codec.fmtp.contains("profile-level-id=42e01f"));
    }

    #[test]
    fn the_offer_order_decides_when_asked() {
        // The browser offer lists H.264 (102) before VP8 (96).
        let plan_of = |sdp: &str| {
            plan(sdp, VideoPreference::OfferOrder)
                .unwrap()
                .video
                .unwrap()
                .0
        };
        let video = plan_of(BROWSER_OFFER);
        assert_eq!((video.codec, video.payload_type), (VideoCodec::H264, 102));
        let vp8_first = BROWSER_OFFER.replacen("102 96 97", "96 97 102", 1);
        assert_ne!(
            vp8_first, BROWSER_OFFER,
            "the m= line of the fixture changed"
        );
        assert_eq!(plan_of(&vp8_first).codec, VideoCodec::Vp8);
        let preferring_vp8 = plan(BROWSER_OFFER, VideoPreference::Vp8).unwrap();
        assert_eq!(preferring_vp8.video.unwrap().0.codec, VideoCodec::Vp8);
    }

    #[test]
    fn candidates_past_the_limit_are_dropped() {
        let offer = "v=0\r\na=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n\
                     a=candidate:2 1 udp 1 127.0.0.1 10 typ host\r\na=mid:0\r\n";
        let (limited, kept, dropped) = limit_candidates(offer, 1);
        assert_eq!((kept, dropped), (1, 1));
        assert_eq!(limited.matches("a=candidate:").count(), 1);
        assert!(limited.ends_with("a=mid:0\r\n"));
        assert_eq!(limit_candidates(offer, 5), (offer.to_string(), 2, 0));
    }

    #[test]
    fn rejections() {
        assert!(matches!(
            plan("hello", VideoPreference::Vp8),
            Err(OfferError::Malformed(_))
        ));
        assert!(matches!(
            plan("", VideoPreference::Vp8),
            Err(OfferError::Malformed(_))
        ));
        let no_codecs = BROWSER_OFFER
            .replace("opus/48000/2", "ISAC/16000")
            .replace("VP8/90000", "VP9/90000")
            .replace("H264/90000", "AV1/90000");
        assert_eq!(
            plan(&no_codecs, VideoPreference::Vp8),
            Err(OfferError::NoSupportedCodec)
        );
        let receiving = BROWSER_OFFER.replace("a=sendonly", "a=recvonly");
        assert_eq!(
            plan(&receiving, VideoPreference::Vp8),
            Err(OfferError::NotSending)
        );
        let audio_only = BROWSER_OFFER.replace("m=video 9", "m=video 0");
        let p = plan(&audio_only, VideoPreference::Vp8).unwrap();
        assert!(p.video.is_none() && p.audio.is_some());
    }
}
