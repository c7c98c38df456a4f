//! Publishing helpers for the gateway's own tools (the test publisher and the
//! benchmark): local WebRTC tracks fed with encoded frames. Not used by the gateway.

use bytes::Bytes;
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::peer_connection::PeerConnection;

/// A sending track that takes whole encoded frames.
pub struct SampleTrack {
    pub kind: RtpCodecKind,
    track: Arc<TrackLocalStaticSample>,
    ssrc: u32,
    payload_type: u8,
}

impl SampleTrack {
    /// Adds a track of `kind` with `codec` (and a random SSRC) to `pc`.
    pub async fn add<P: PeerConnection + ?Sized>(
        pc: &P,
        label: &str,
        kind: RtpCodecKind,
        codec: &RTCRtpCodecParameters,
    ) -> Result<Self, webrtc::error::Error> {
        let ssrc = rand::random::<u32>();
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
