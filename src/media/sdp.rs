//! The SDP file that describes a stream's RTP output to players (ffplay, VLC, GStreamer).
//! Plain text generation, no I/O.

use std::net::IpAddr;

/// What the H.264 encoder and payloader actually produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoDescription {
    pub port: u32,
    pub profile_level_id: String,
    pub sprop_parameter_sets: String,
}

/// Everything the SDP file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpDescription<'a> {
    pub stream: &'a str,
    pub session_id: u64,
    pub host: IpAddr,
    pub multicast_ttl: u32,
    pub video: Option<VideoDescription>,
    /// The Opus RTP port.
    pub audio_port: Option<u32>,
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

pub const VIDEO_PAYLOAD_TYPE: u8 = 96;
pub const AUDIO_PAYLOAD_TYPE: u8 = 97;

/// Renders the SDP file (RFC 8866) for players receiving the stream's RTP.
pub fn render(d: &SdpDescription<'_>) -> String {
    let (family, origin) = match d.host {
        IpAddr::V4(_) => ("IP4", "127.0.0.1"),
        IpAddr::V6(_) => ("IP6", "::1"),
    };
    let connection = match d.host {
        IpAddr::V4(v4) if v4.is_multicast() => format!("{v4}/{}", d.multicast_ttl),
        host => host.to_string(),
    };
    let mut sdp = format!(
        "v=0\r\no=- {id} 1 IN {family} {origin}\r\ns={stream}\r\nc=IN {family} {connection}\r\nt=0 0\r\n",
        id = d.session_id,
        stream = d.stream,
    );
    if let Some(video) = &d.video {
        let pt = VIDEO_PAYLOAD_TYPE;
        sdp.push_str(&format!(
            "m=video {port} RTP/AVP {pt}\r\na=rtpmap:{pt} H264/90000\r\n\
             a=fmtp:{pt} packetization-mode=1;profile-level-id={profile};sprop-parameter-sets={sprop}\r\n\
             a=rtcp:{rtcp}\r\na=recvonly\r\n",
            port = video.port,
            profile = video.profile_level_id,
            sprop = video.sprop_parameter_sets,
            rtcp = video.port + 1,
        ));
    }
    if let Some(port) = d.audio_port {
        let pt = AUDIO_PAYLOAD_TYPE;
        sdp.push_str(&format!(
            "m=audio {port} RTP/AVP {pt}\r\na=rtpmap:{pt} opus/48000/2\r\n\
             a=fmtp:{pt} sprop-stereo=1\r\na=rtcp:{rtcp}\r\na=recvonly\r\n",
            rtcp = port + 1,
        ));
    }
    sdp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_and_audio() {
        let sdp = render(&SdpDescription {
            stream: "cam1",
            session_id: 7,
            host: "127.0.0.1".parse().unwrap(),
            multicast_ttl: 16,
            video: Some(VideoDescription {
                port: 5004,
                profile_level_id: "42c01f".into(),
                sprop_parameter_sets: "Z0LAH9oBQBbsBEAAAAMAQAAADyPGDKg=,aM4PyA==".into(),
            }),
            audio_port: Some(5006),
        });
        assert_eq!(
            sdp,
            "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=cam1\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=video 5004 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
             a=fmtp:96 packetization-mode=1;profile-level-id=42c01f;sprop-parameter-sets=Z0LAH9oBQBbsBEAAAAMAQAAADyPGDKg=,aM4PyA==\r\n\
             a=rtcp:5005\r\na=recvonly\r\n\
             m=audio 5006 RTP/AVP 97\r\na=rtpmap:97 opus/48000/2\r\na=fmtp:97 sprop-stereo=1\r\n\
             a=rtcp:5007\r\na=recvonly\r\n"
        );
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

    #[test]
    fn multicast_audio_only() {
        let sdp = render(&SdpDescription {
            stream: "radio",
            session_id: 1,
            host: "239.1.2.3".parse().unwrap(),
            multicast_ttl: 4,
            video: None,
            audio_port: Some(5010),
        });
        assert!(sdp.contains("c=IN IP4 239.1.2.3/4\r\n"));
        assert!(!sdp.contains("m=video"));
        assert!(sdp.contains("m=audio 5010 RTP/AVP 97\r\n"));
    }
}
