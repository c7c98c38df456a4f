//! The RTP output: H.264 and Opus RTP through `rtpbin` to the stream's port slot, and to
//! the extra destinations the control API adds, described to players (ffplay, VLC,
//! GStreamer) by an SDP file. [`RtpOutput`] owns the SDP (served, and written to
//! `rtp.sdp_dir` while the stream is live) and the destinations; [`render`] is the plain
//! text generation.

use crate::config::RtpConfig;
use crate::media::event::MediaEvent;
use crate::media::h264::profile_level_id;
use crate::media::pipeline::StreamPipeline;
use crate::media::probe::on_first_buffer;
use crate::media::templates::names;
use crate::name::StreamName;
use crate::stream::RtpDestination;
use gstreamer::prelude::*;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::SystemTime;

/// Why a destination could not be added or removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error("the stream already has its limit of {0} RTP destinations")]
    Limit(u32),
    #[error("{0} already gets this stream on those ports")]
    InUse(IpAddr),
    #[error("no RTP destination {0}")]
    Unknown(String),
}

/// One stream's RTP output.
#[derive(Debug)]
pub struct RtpOutput {
    name: StreamName,
    config: RtpConfig,
    /// The slot's video RTP port; RTCP is on the next, audio on the two after.
    port: u32,
    has_video: bool,
    has_audio: bool,
    /// What the H.264 payloader carries: profile-level-id and sprop-parameter-sets.
    video: Option<(String, String)>,
    /// The SDP file for the slot, once the RTP output has started.
    sdp: Option<String>,
    /// The copy written to `rtp.sdp_dir`.
    sdp_file: Option<PathBuf>,
    destinations: Vec<RtpDestination>,
}

impl RtpOutput {
    pub fn new(name: &StreamName, slot: u32, config: &RtpConfig, video: bool, audio: bool) -> Self {
        Self {
            name: name.clone(),
            config: config.clone(),
            port: config.port_base + 4 * slot,
            has_video: video,
            has_audio: audio,
            video: None,
            sdp: None,
            sdp_file: None,
            destinations: Vec::new(),
        }
    }

    /// Reports the first packet of each payloader: the H.264 one's caps describe it in SDP.
    pub fn attach(&self, pipeline: &StreamPipeline) {
        let gst = pipeline.gst();
        on_first_buffer(
            gst,
            (names::VIDEO_PAY, "src"),
            pipeline.events(),
            |pad, _| {
                let sprop = pad
                    .current_caps()?
                    .structure(0)?
                    .get::<String>("sprop-parameter-sets")
                    .ok()?;
                Some(MediaEvent::VideoRtpReady {
                    profile_level_id: profile_level_id(&sprop)?,
                    sprop_parameter_sets: sprop,
                })
            },
        );
        on_first_buffer(gst, (names::AUDIO_PAY, "src"), pipeline.events(), |_, _| {
            Some(MediaEvent::AudioRtpReady)
        });
    }

    /// The H.264 RTP output started; returns the SDP file once it can be written.
    pub fn video_ready(&mut self, profile_level_id: String, sprop: String) -> Option<String> {
        self.video = Some((profile_level_id, sprop));
        self.ready()
    }

    /// The Opus RTP output started; returns the SDP file when the stream has no video.
    pub fn audio_ready(&mut self) -> Option<String> {
        if self.has_video {
            return None;
        }
        self.ready()
    }

    /// Renders the SDP file for the slot and writes it to `rtp.sdp_dir`, when set.
    fn ready(&mut self) -> Option<String> {
        if self.sdp.is_some() || (self.has_video && self.video.is_none()) {
            return None;
        }
        let text = self.render(self.config.host, self.port, self.port + 2);
        if !self.config.sdp_dir.as_os_str().is_empty() {
            let path = self.config.sdp_dir.join(format!("{}.sdp", self.name));
            match std::fs::write(&path, &text) {
                Ok(()) => self.sdp_file = Some(path),
                Err(e) => tracing::warn!("cannot write {}: {e}", path.display()),
            }
        }
        tracing::info!("SDP ready");
        self.sdp = Some(text.clone());
        Some(text)
    }

    /// The SDP file for RTP sent to `host` on these ports.
    fn render(&self, host: IpAddr, video_port: u32, audio_port: u32) -> String {
        render(&SdpDescription {
            stream: self.name.as_str(),
            session_id: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
            host,
            multicast_ttl: self.config.multicast_ttl,
            video: self
                .video
                .clone()
                .map(|(profile_level_id, sprop)| VideoDescription {
                    port: video_port,
                    profile_level_id,
                    sprop_parameter_sets: sprop,
                }),
            audio_port: self.has_audio.then_some(audio_port),
        })
    }

    pub fn destinations(&self) -> &[RtpDestination] {
        &self.destinations
    }

    /// Sends the stream's RTP to one more destination too, at most `limit` of them.
    pub fn add_destination(
        &mut self,
        pipeline: &StreamPipeline,
        (host, video_port, audio_port): (IpAddr, u16, u16),
        limit: u32,
    ) -> Result<RtpDestination, DestinationError> {
        if self.destinations.len() as u32 >= limit {
            return Err(DestinationError::Limit(limit));
        }
        let host_text = host.to_string();
        let taken = self.destinations.iter().any(|d| {
            d.host == host_text && (d.video_port == video_port || d.audio_port == audio_port)
        });
        if taken {
            return Err(DestinationError::InUse(host));
        }
        send_to(pipeline, "add", &host_text, video_port, audio_port);
        let destination = RtpDestination {
            id: format!("{:016x}", rand::random::<u64>()),
            sdp: self.render(host, video_port as u32, audio_port as u32),
            host: host_text,
            video_port,
            audio_port,
        };
        tracing::info!(host = %destination.host, video_port, audio_port, "RTP destination added");
        self.destinations.push(destination.clone());
        Ok(destination)
    }

    pub fn remove_destination(
        &mut self,
        pipeline: &StreamPipeline,
        id: &str,
    ) -> Result<(), DestinationError> {
        let position = self.destinations.iter().position(|d| d.id == id);
        let Some(i) = position else {
            return Err(DestinationError::Unknown(id.to_string()));
        };
        let gone = self.destinations.remove(i);
        send_to(
            pipeline,
            "remove",
            &gone.host,
            gone.video_port,
            gone.audio_port,
        );
        tracing::info!(host = %gone.host, "RTP destination removed");
        Ok(())
    }

    /// The stream ended: its SDP file goes away.
    pub fn finish(&mut self) {
        if let Some(path) = self.sdp_file.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Adds or removes a destination at every RTP and RTCP sink.
fn send_to(pipeline: &StreamPipeline, action: &str, host: &str, video_port: u16, audio_port: u16) {
    for (sink, port) in [
        (names::VIDEO_RTP_OUT, video_port),
        (names::VIDEO_RTCP_OUT, video_port + 1),
        (names::AUDIO_RTP_OUT, audio_port),
        (names::AUDIO_RTCP_OUT, audio_port + 1),
    ] {
        if let Some(sink) = pipeline.element(sink) {
            sink.emit_by_name::<()>(action, &[&host, &(port as i32)]);
        }
    }
}

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
