//! Publishing helpers for the gateway's tools (the test publisher and the
//! benchmark): GStreamer encoders whose frames are pulled from an appsink, and local
//! WebRTC tracks fed with those frames. Not used by the gateway.

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtcp;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpRtxParameters,
    RtpCodecKind,
};
use rtc::sansio::Protocol;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::PeerConnection;

/// A sending track that takes whole encoded frames.
pub struct SampleTrack {
    pub kind: RtpCodecKind,
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    payload_type: u8,
}

impl SampleTrack {
    /// Adds a track of `kind` with `codec` (and a random SSRC) to `pc`; with `rtx`, its
    /// retransmissions go on a stream of their own (RFC 4588; the media engine must have
    /// the RTX format for `codec`).
    pub async fn add<P: PeerConnection + ?Sized>(
        pc: &P,
        label: &str,
        kind: RtpCodecKind,
        codec: &RTCRtpCodecParameters,
        rtx: bool,
    ) -> Result<Self, webrtc::error::Error> {
        let ssrc = rand::random::<u32>();
        let rtx = rtx.then(|| RTCRtpRtxParameters {
            ssrc: rand::random::<u32>(),
        });
        let track = Arc::new(TrackLocalStaticSample::new(
            Instant::now(),
            MediaStreamTrack::new(
                label.into(),
                format!("{label}-{kind}"),
                format!("{label}-{kind}"),
                kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        rtx,
                        ..Default::default()
                    },
                    codec: codec.rtp_codec.clone(),
                    ..Default::default()
                }],
            ),
        )?);
        pc.add_track(track.clone() as Arc<dyn TrackLocal>).await?;
        Ok(Self {
            kind,
            track,
            ssrc,
            payload_type: codec.payload_type,
        })
    }

    /// The next key-frame request (PLI or FIR) the receiver sent for this track; None once
    /// the connection has closed. The peer connection's interceptors must deliver them to
    /// the application ([`KeyFrameRequests`]).
    pub async fn key_frame_requested(&self) -> Option<()> {
        loop {
            match self.track.poll().await? {
                TrackLocalEvent::OnRtcpPacket(packets)
                    if packets.iter().any(|p| is_key_frame_request(p.as_ref())) =>
                {
                    return Some(());
                }
                _ => {}
            }
        }
    }

    /// Sends one encoded frame lasting `duration`; fails once the connection is closed.
    pub async fn write(&self, data: Bytes, duration: Duration) -> Result<(), webrtc::error::Error> {
        let sample = Sample {
            data,
            duration,
            ..Sample::new(Instant::now())
        };
        self.track
            .sample_writer(self.ssrc, self.payload_type)
            .write_sample(&sample)
            .await
    }
}

fn is_key_frame_request(packet: &dyn rtcp::Packet) -> bool {
    let packet = packet.as_any();
    packet.is::<PictureLossIndication>() || packet.is::<FullIntraRequest>()
}

/// An interceptor, last before the application, that hands the receiver's key-frame
/// requests (PLI, FIR) to the sending tracks ([`SampleTrack::key_frame_requested`]);
/// other RTCP stays with the interceptors before it.
#[derive(Default)]
pub struct KeyFrameRequests {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl KeyFrameRequests {
    /// Where it goes in the chain: after every built-in interceptor.
    pub const SLOT: usize = 14_000;
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyFrameRequests {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut message: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &message.message.packet {
            let requests: Vec<Box<dyn rtcp::Packet>> = packets
                .iter()
                .filter(|p| is_key_frame_request(p.as_ref()))
                .cloned()
                .collect();
            if requests.is_empty() {
                return Ok(());
            }
            message.message.packet = Packet::Rtcp(requests);
            message.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(message);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, message: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(message);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyFrameRequests {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    #[error("the encoder pipeline does not parse: {0}")]
    Parse(#[from] gst::glib::Error),
    #[error("the encoder pipeline lacks one of its appsinks")]
    NoSink,
    #[error("the encoder pipeline does not start: {0}")]
    Start(#[from] gst::StateChangeError),
}

/// A GStreamer encoder (a gst-launch description ending in `appsink name=sink`).
pub struct Encoder {
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
}

impl Encoder {
    pub fn new(description: &str) -> Result<Self, EncoderError> {
        let mut encoders = Self::sharing(description, &["sink"])?;
        Ok(encoders.remove(0))
    }

    /// Encoders that share one pipeline, and so one clock (audio and video of one
    /// source, in sync): one for each appsink named in `sinks`.
    pub fn sharing(description: &str, sinks: &[&str]) -> Result<Vec<Self>, EncoderError> {
        let pipeline = gst::parse::launch(description)?
            .downcast::<gst::Pipeline>()
            .map_err(|_| EncoderError::NoSink)?;
        let encoders = sinks
            .iter()
            .map(|name| {
                let sink = pipeline
                    .by_name(name)
                    .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
                    .ok_or(EncoderError::NoSink)?;
                Ok(Self {
                    pipeline: pipeline.clone(),
                    sink,
                })
            })
            .collect::<Result<Vec<_>, EncoderError>>()?;
        pipeline.set_state(gst::State::Playing)?;
        Ok(encoders)
    }

    /// An element of the encoder's pipeline, to change it while it runs.
    pub fn element(&self, name: &str) -> Option<gst::Element> {
        self.pipeline.by_name(name)
    }

    /// Asks the encoder for a key frame now (the receiver lost one).
    pub fn request_key_frame(&self) {
        if let Some(pad) = self.sink.static_pad("sink") {
            let request = gstreamer_video::UpstreamForceKeyUnitEvent::builder()
                .all_headers(true)
                .build();
            pad.push_event(request);
        }
    }

    /// The next encoded frame and how long it lasts; None at the end.
    pub fn next_frame(&self) -> Option<(Bytes, Duration)> {
        loop {
            let sample = self.sink.pull_sample().ok()?;
            let Some(buffer) = sample.buffer() else {
                continue;
            };
            let Ok(map) = buffer.map_readable() else {
                continue;
            };
            let duration = buffer
                .duration()
                .map(|d| Duration::from_nanos(d.nseconds()))
                .unwrap_or(Duration::from_millis(20));
            return Some((Bytes::copy_from_slice(&map), duration));
        }
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// The wall clock drawn into a picture, for glass-to-glass measurements: 40 blocks
/// across the top of the picture, one sixteenth of its height tall, white for a 1 and
/// black for a 0: 32 bits of the milliseconds since the Unix epoch (mod 2^32) and an
/// 8-bit checksum, so that a picture whose stamp is damaged is not read.
pub mod clock_stamp {
    const BITS: usize = 40;

    fn checksum(ms: u32) -> u8 {
        ms.to_le_bytes()
            .iter()
            .fold(0x5a, |sum, b| sum.rotate_left(3) ^ b)
    }

    /// Draws `ms` into the luma plane of a picture (`stride` bytes a row).
    pub fn draw(luma: &mut [u8], width: usize, height: usize, stride: usize, ms: u64) {
        let ms = ms as u32;
        let word = (u64::from(ms) << 8) | u64::from(checksum(ms));
        let rows = (height / 16).max(2);
        for k in 0..BITS {
            let bit = (word >> (BITS - 1 - k)) & 1 == 1;
            let value = if bit { 235 } else { 16 };
            let (x0, x1) = (k * width / BITS, (k + 1) * width / BITS);
            for y in 0..rows.min(height) {
                if let Some(row) = luma.get_mut(y * stride + x0..y * stride + x1) {
                    row.fill(value);
                }
            }
        }
    }

    /// Reads the stamp from a picture's luma (`stride` bytes a row): the milliseconds
    /// since the epoch, mod 2^32, or `None` when the checksum does not match.
    pub fn read(luma: &[u8], width: usize, height: usize, stride: usize) -> Option<u32> {
        let y = (height / 16).max(2) / 2;
        let mut word = 0u64;
        for k in 0..BITS {
            let x = (2 * k + 1) * width / (2 * BITS);
            let level = luma.get(y * stride + x)?;
            word = (word << 1) | u64::from(*level > 128);
        }
        let ms = (word >> 8) as u32;
        (checksum(ms) == (word & 0xff) as u8).then_some(ms)
    }

    /// How long ago, in milliseconds, a stamp read now was drawn.
    pub fn age_ms(stamp: u32) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u32;
        i64::from(now.wrapping_sub(stamp) as i32)
    }
}
