//! The publisher's peer connection (webrtc-rs): building it from configuration, answering
//! the offer `recvonly`, and reading its tracks into the media inputs. Its event handler is
//! an adapter: it only turns callbacks into [`PeerEvent`]s for the owning session task.

use super::offer::OfferPlan;
use crate::config::WebrtcConfig;
use crate::media::{MediaInput, VideoCodec};
use rtc::interceptor::{NackGeneratorBuilder, NackResponderBuilder, Registry, Slot};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RTCPFeedback;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::shared::marshal::Marshal;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceCandidateType, RTCIceGatheringState,
    RTCIceServer, RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription,
    SettingEngineBuilder,
};

/// Longest wait for local candidates before the answer is sent anyway (later ones trickle).
const GATHER_TIMEOUT: Duration = Duration::from_secs(2);

/// How often missing packets are asked for again (RFC 4585 NACK). A retransmission comes
/// back after a round trip; the jitter buffer (`transcode.jitter_buffer_ms`, 200 ms by
/// default) waits for it. Asking every 20 ms, up to 10 times, covers that wait: a packet
/// lost again on its way back (on a 10% lossy link, one in ten) is asked for again after
/// its round trip plus 20 ms, not after 100 ms (the WebRTC stack's default), so it can
/// still arrive in time.
const NACK_INTERVAL: Duration = Duration::from_millis(20);
const NACKS_PER_PACKET: u16 = 10;

/// The WebRTC stack's default interceptors (NACK, RTCP reports, transport-wide congestion
/// control feedback), with the NACK timing above.
fn interceptors(media_engine: &mut MediaEngine) -> Result<Registry, webrtc::error::Error> {
    for parameter in ["", "pli"] {
        media_engine.register_feedback(
            RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
    let nack = NackGeneratorBuilder::new()
        .with_interval(NACK_INTERVAL)
        .with_max_nacks_per_packet(NACKS_PER_PACKET)
        .build();
    let registry = Registry::new()
        .with(Slot::NackResponder, NackResponderBuilder::new().build())
        .with(Slot::NackGenerator, nack);
    configure_simulcast_extension_headers(media_engine)?;
    let registry = configure_twcc_receiver_only(registry, media_engine)?;
    Ok(configure_rtcp_reports(registry))
}

/// A track the publisher started sending.
pub struct RemoteTrack {
    track: Arc<dyn TrackRemote>,
    ssrc: u32,
    pub is_video: bool,
}

impl std::fmt::Debug for RemoteTrack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteTrack")
            .field("ssrc", &self.ssrc)
            .field("is_video", &self.is_video)
            .finish()
    }
}

#[derive(Debug)]
pub enum PeerEvent {
    Candidate(RTCIceCandidateInit),
    ConnectionState(RTCPeerConnectionState),
    Track(RemoteTrack),
    /// A track's packets stopped for good.
    TrackEnded,
}

#[derive(Debug, thiserror::Error)]
pub enum NegotiationError {
    /// The publisher's offer could not be applied or answered.
    #[error("{0}")]
    Offer(webrtc::error::Error),
    /// This server could not build a peer connection.
    #[error("the peer connection cannot be set up: {0}")]
    Setup(webrtc::error::Error),
    #[error("no UDP port free between {0} and {1}")]
    NoPort(u32, u32),
}

pub struct Peer {
    connection: Arc<dyn PeerConnection>,
    events: mpsc::Sender<PeerEvent>,
    video: Option<(Arc<dyn TrackRemote>, u32)>,
    /// Video frames received (RTP packets with the marker bit).
    frames_in: Arc<std::sync::atomic::AtomicU64>,
    /// RTP packets received on every track, counted as they arrive.
    packets_in: Arc<std::sync::atomic::AtomicU64>,
}

/// What the peer connection has received, as its statistics say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboundTotals {
    pub packets: u64,
    pub bytes: u64,
    pub lost: i64,
    pub nacks: u64,
}

impl Peer {
    /// Builds a peer connection for `plan`, applies the offer and returns the complete answer.
    pub async fn negotiate(
        config: &WebrtcConfig,
        plan: &OfferPlan,
        offer: &str,
    ) -> Result<(Peer, mpsc::Receiver<PeerEvent>, String), NegotiationError> {
        let (events, receiver) = mpsc::channel(256);
        let (gathered_tx, mut gathered) = mpsc::channel(1);
        let handler = Arc::new(Handler {
            events: events.clone(),
            gathered: gathered_tx,
        });
        let connection = build(config, plan, handler).await?;
        let peer = Peer {
            connection,
            events,
            video: None,
            frames_in: Arc::default(),
            packets_in: Arc::default(),
        };
        let answer = peer.answer(plan, offer, &mut gathered).await;
        match answer {
            Ok(answer) => Ok((peer, receiver, answer)),
            Err(e) => {
                peer.close().await;
                Err(e)
            }
        }
    }

    async fn answer(
        &self,
        plan: &OfferPlan,
        offer: &str,
        gathered: &mut mpsc::Receiver<()>,
    ) -> Result<String, NegotiationError> {
        let recvonly = || {
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                ..Default::default()
            })
        };
        if plan.audio.is_some() {
            self.connection
                .add_transceiver_from_kind(RtpCodecKind::Audio, recvonly())
                .await
                .map_err(NegotiationError::Setup)?;
        }
        if plan.video.is_some() {
            self.connection
                .add_transceiver_from_kind(RtpCodecKind::Video, recvonly())
                .await
                .map_err(NegotiationError::Setup)?;
        }
        let offer =
            RTCSessionDescription::offer(offer.to_string()).map_err(NegotiationError::Offer)?;
        self.connection
            .set_remote_description(offer)
            .await
            .map_err(NegotiationError::Offer)?;
        let answer = self
            .connection
            .create_answer(None)
            .await
            .map_err(NegotiationError::Offer)?;
        // An answer this server made and cannot apply is its own fault, not the offer's.
        self.connection
            .set_local_description(answer)
            .await
            .map_err(NegotiationError::Setup)?;
        let _ = tokio::time::timeout(GATHER_TIMEOUT, gathered.recv()).await;
        let local = self
            .connection
            .local_description()
            .await
            .ok_or(NegotiationError::Setup(
                webrtc::error::Error::ErrNoRemoteDescription,
            ))?;
        Ok(local.sdp)
    }

    pub async fn add_candidate(&self, candidate: RTCIceCandidateInit) {
        if let Err(e) = self.connection.add_ice_candidate(candidate).await {
            tracing::warn!("ignoring a remote candidate: {e}");
        }
    }

    /// Starts reading `track` into `input` on a task of its own.
    pub fn receive(&mut self, track: RemoteTrack, input: MediaInput) {
        if track.is_video {
            self.video = Some((track.track.clone(), track.ssrc));
        }
        let events = self.events.clone();
        let frames_in = track.is_video.then(|| self.frames_in.clone());
        let packets_in = self.packets_in.clone();
        tokio::spawn(async move {
            while let Some(event) = track.track.poll().await {
                match event {
                    TrackRemoteEvent::OnRtpPacket(packet) => {
                        packets_in.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if let Some(frames) = &frames_in
                            && packet.header.marker
                        {
                            frames.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        if let Ok(bytes) = packet.marshal() {
                            input.push(bytes.freeze());
                        }
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
            let _ = events.try_send(PeerEvent::TrackEnded);
        });
    }

    /// Asks the publisher for a key frame (RTCP PLI).
    pub async fn request_keyframe(&self) {
        if let Some((track, ssrc)) = &self.video {
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: *ssrc,
            };
            if let Err(e) = track.write_rtcp(vec![Box::new(pli)]).await {
                tracing::debug!("cannot send PLI: {e}");
            }
        }
    }

    /// RTP packets received so far, on every track.
    pub fn packets_in(&self) -> u64 {
        self.packets_in.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn frames_in(&self) -> u64 {
        self.frames_in.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Totals over the received RTP streams.
    pub async fn inbound_totals(&self) -> InboundTotals {
        let report = self
            .connection
            .get_stats(
                std::time::Instant::now(),
                rtc::statistics::StatsSelector::None,
            )
            .await;
        let mut totals = InboundTotals::default();
        for entry in report.iter() {
            if let rtc::statistics::report::RTCStatsReportEntry::InboundRtp(s) = entry {
                totals.packets += s.received_rtp_stream_stats.packets_received;
                totals.bytes += s.bytes_received;
                totals.lost += s.received_rtp_stream_stats.packets_lost;
                totals.nacks += s.nack_count as u64;
            }
        }
        totals
    }

    pub async fn close(&self) {
        if let Err(e) = self.connection.close().await {
            tracing::debug!("closing the peer connection: {e}");
        }
    }
}

async fn build(
    config: &WebrtcConfig,
    plan: &OfferPlan,
    handler: Arc<Handler>,
) -> Result<Arc<dyn PeerConnection>, NegotiationError> {
    let bind_ip = config.bind_address.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let nat_ips: Vec<String> = config.nat_1to1_ips.iter().map(IpAddr::to_string).collect();
    let (min, max) = (config.udp_port_min, config.udp_port_max);
    let ports: Vec<u32> = if min == 0 {
        vec![0]
    } else {
        // Start at a random port so that concurrent sessions rarely collide.
        let span = max - min + 1;
        let start = rand::random_range(0..span);
        (0..span).map(|i| min + (start + i) % span).collect()
    };
    let mut last_error = None;
    for port in ports {
        let builder = PeerConnectionBuilder::new()
            .with_configuration(configuration(config))
            .with_setting_engine({
                let mut engine = SettingEngineBuilder::new()
                    .with_ice_timeouts(
                        Some(Duration::from_secs(2)),
                        Some(Duration::from_secs(3)),
                        Some(Duration::from_secs(1)),
                    )
                    .with_include_loopback_candidate(bind_ip.is_loopback());
                if !config.nat_1to1_ips.is_empty() {
                    engine = engine.with_nat_1to1_ips(nat_ips.clone(), RTCIceCandidateType::Host);
                }
                engine.build()
            });
        let mut media_engine = media_engine(plan).map_err(NegotiationError::Setup)?;
        let registry = interceptors(&mut media_engine).map_err(NegotiationError::Setup)?;
        let built = builder
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_handler(handler.clone() as Arc<dyn PeerConnectionEventHandler>)
            .with_udp_addrs(vec![std::net::SocketAddr::new(bind_ip, port as u16)])
            .build()
            .await;
        match built {
            Ok(connection) => return Ok(Arc::new(connection)),
            Err(e) => last_error = Some(e),
        }
    }
    match last_error {
        Some(e) if min == 0 => Err(NegotiationError::Setup(e)),
        _ => Err(NegotiationError::NoPort(min, max)),
    }
}

fn configuration(config: &WebrtcConfig) -> webrtc::peer_connection::RTCConfiguration {
    let servers = config
        .ice_servers
        .iter()
        .map(|url| RTCIceServer {
            urls: vec![url.clone()],
            username: config.ice_username.clone(),
            credential: config.ice_credential.clone(),
        })
        .collect();
    RTCConfigurationBuilder::new()
        .with_ice_servers(servers)
        .build()
}

/// Registers exactly the codecs the plan picked, so the answer carries no others.
fn media_engine(plan: &OfferPlan) -> Result<MediaEngine, webrtc::error::Error> {
    let mut engine = MediaEngine::default();
    if let Some((input, codec)) = &plan.video {
        let mime = match input.codec {
            VideoCodec::Vp8 => "video/VP8",
            VideoCodec::H264 => "video/H264",
        };
        engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: mime.into(),
                    clock_rate: 90000,
                    channels: 0,
                    sdp_fmtp_line: codec.fmtp.clone(),
                    rtcp_feedback: vec![],
                },
                payload_type: input.payload_type,
            },
            RtpCodecKind::Video,
        )?;
    }
    // Retransmissions on their own stream when the publisher offers it (browsers do).
    if let Some(rtx) = &plan.video_rtx {
        engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: "video/rtx".into(),
                    clock_rate: 90000,
                    channels: 0,
                    sdp_fmtp_line: rtx.fmtp.clone(),
                    rtcp_feedback: vec![],
                },
                payload_type: rtx.payload_type,
            },
            RtpCodecKind::Video,
        )?;
    }
    if let Some((input, codec)) = &plan.audio {
        engine.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: "audio/opus".into(),
                    clock_rate: 48000,
                    channels: 2,
                    sdp_fmtp_line: codec.fmtp.clone(),
                    rtcp_feedback: vec![],
                },
                payload_type: input.payload_type,
            },
            RtpCodecKind::Audio,
        )?;
    }
    Ok(engine)
}

/// Turns peer-connection callbacks into events for the session task.
struct Handler {
    events: mpsc::Sender<PeerEvent>,
    gathered: mpsc::Sender<()>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(candidate) = event.candidate.to_json() {
            let _ = self.events.try_send(PeerEvent::Candidate(candidate));
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.try_send(());
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.events.try_send(PeerEvent::ConnectionState(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let is_video = track.kind().await == RtpCodecKind::Video;
        let ssrc = track.ssrcs().await.first().copied().unwrap_or_default();
        let _ = self.events.try_send(PeerEvent::Track(RemoteTrack {
            track,
            ssrc,
            is_video,
        }));
    }
}
