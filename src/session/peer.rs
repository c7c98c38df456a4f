//! The publisher's peer connection (webrtc-rs): building it from configuration, answering
//! the offer `recvonly`, and reading its tracks into the media inputs. Its event handler is
//! an adapter: it only turns callbacks into [`PeerEvent`]s for the owning session task.

use super::offer::OfferPlan;
use crate::config::WebrtcConfig;
use crate::media::{MediaInput, VideoCodec};
use crate::net::{CandidatePorts, PeerSockets, TcpVia, rewrite_candidate, rewrite_sdp};
use crate::stream::MediaPath;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{NackGeneratorBuilder, NackResponderBuilder, Registry, Slot};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::RTCPFeedback;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::shared::marshal::Marshal;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
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

/// Longest wait for local candidates before the answer is sent anyway: later ones trickle
/// (WebSocket) or are left out (WHIP). Host candidates come at once; a STUN server that
/// does not answer within this never delays a publish.
const GATHER_TIMEOUT: Duration = Duration::from_secs(1);

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
}

pub struct Peer {
    connection: Arc<dyn PeerConnection>,
    /// Its place in the shared sockets (none with `webrtc.udp_port = 0`).
    sockets: Option<PeerSockets>,
    /// The publisher's relay candidates (TURN): media from one of these is relayed.
    relays: std::sync::Mutex<HashSet<SocketAddr>>,
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
    /// `sockets`: the publisher's place in the shared sockets, if the gateway has them.
    pub async fn negotiate(
        config: &WebrtcConfig,
        sockets: Option<PeerSockets>,
        plan: &OfferPlan,
        offer: &str,
    ) -> Result<(Peer, mpsc::Receiver<PeerEvent>, String), NegotiationError> {
        let (events, receiver) = mpsc::channel(256);
        let (gathered_tx, mut gathered) = mpsc::channel(1);
        let ports = match &sockets {
            Some(sockets) => sockets.ports(),
            None => CandidatePorts {
                nat_ips: config.nat_1to1_ips.clone(),
                ..CandidatePorts::default()
            },
        };
        let handler = Arc::new(Handler {
            events: events.clone(),
            gathered: gathered_tx,
            ports: ports.clone(),
        });
        let connection = build(config, sockets.as_ref(), plan, handler).await?;
        let peer = Peer {
            connection,
            sockets,
            relays: std::sync::Mutex::new(relay_addresses(offer.lines())),
            events,
            video: None,
            frames_in: Arc::default(),
            packets_in: Arc::default(),
        };
        let answer = peer.answer(plan, offer, &mut gathered).await;
        match answer {
            Ok(answer) => Ok((peer, receiver, rewrite_sdp(&answer, &ports))),
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
        let relays = relay_addresses(std::iter::once(candidate.candidate.as_str()));
        self.relays
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(relays);
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

    /// Which path carries the media: the selected candidate pair's, once there is one.
    pub async fn media_path(&self) -> Option<MediaPath> {
        let report = self
            .connection
            .get_stats(
                std::time::Instant::now(),
                rtc::statistics::StatsSelector::None,
            )
            .await;
        use rtc::statistics::report::RTCStatsReportEntry as Entry;
        let selected = report.iter().find_map(|entry| match entry {
            Entry::Transport(t) if !t.selected_candidate_pair_id.is_empty() => {
                Some(t.selected_candidate_pair_id.clone())
            }
            _ => None,
        });
        let pair = report.iter().find_map(|entry| match entry {
            Entry::IceCandidatePair(pair)
                if selected.as_ref() == Some(&pair.stats.id)
                    || (selected.is_none() && pair.nominated) =>
            {
                Some(pair)
            }
            _ => None,
        })?;
        // Candidate entries are named after the pair's candidate ids.
        let local = report.iter().find_map(|entry| match entry {
            Entry::LocalCandidate(c) if c.stats.id.ends_with(&pair.local_candidate_id) => Some(c),
            _ => None,
        })?;
        let remote = report.iter().find_map(|entry| match entry {
            Entry::RemoteCandidate(c) if c.stats.id.ends_with(&pair.remote_candidate_id) => Some(c),
            _ => None,
        });
        let relayed = remote.is_some_and(|r| r.candidate_type == RTCIceCandidateType::Relay)
            || self.sockets.as_ref().is_some_and(|sockets| {
                sockets.media_from().is_some_and(|from| {
                    let relays = self.relays.lock().unwrap_or_else(|e| e.into_inner());
                    relays.contains(&from)
                })
            });
        if relayed {
            return Some(MediaPath::Relay);
        }
        if !local.protocol.eq_ignore_ascii_case("tcp") {
            return Some(MediaPath::Udp);
        }
        let via = self.sockets.as_ref().and_then(PeerSockets::tcp_media_via);
        Some(match via {
            Some(TcpVia::Http) => MediaPath::TcpHttp,
            _ => MediaPath::Tcp,
        })
    }

    /// The round-trip time to the publisher: the selected candidate pair's, measured by the
    /// ICE agent's consent checks (one a second); none before the first answer.
    pub async fn round_trip_time(&self) -> Option<Duration> {
        let report = self
            .connection
            .get_stats(
                std::time::Instant::now(),
                rtc::statistics::StatsSelector::None,
            )
            .await;
        use rtc::statistics::report::RTCStatsReportEntry as Entry;
        let selected = report.iter().find_map(|entry| match entry {
            Entry::Transport(t) if !t.selected_candidate_pair_id.is_empty() => {
                Some(t.selected_candidate_pair_id.clone())
            }
            _ => None,
        })?;
        report.iter().find_map(|entry| match entry {
            Entry::IceCandidatePair(pair)
                if pair.stats.id == selected && pair.current_round_trip_time > 0.0 =>
            {
                Duration::try_from_secs_f64(pair.current_round_trip_time).ok()
            }
            _ => None,
        })
    }

    pub async fn close(&self) {
        if let Err(e) = self.connection.close().await {
            tracing::debug!("closing the peer connection: {e}");
        }
        if let Some(sockets) = &self.sockets {
            sockets.forget();
        }
    }
}

async fn build(
    config: &WebrtcConfig,
    sockets: Option<&PeerSockets>,
    plan: &OfferPlan,
    handler: Arc<Handler>,
) -> Result<Arc<dyn PeerConnection>, NegotiationError> {
    let bind_ip = config.bind_address.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let mut engine = SettingEngineBuilder::new()
        .with_ice_timeouts(
            Some(Duration::from_secs(2)),
            Some(Duration::from_secs(3)),
            Some(Duration::from_secs(1)),
        )
        .with_include_loopback_candidate(bind_ip.is_loopback());
    // The agent binds `IP:0` (a port the mux never uses): with the mux, each socket it
    // binds becomes a view of the shared one, and its candidates name the shared ports.
    let any_port = vec![SocketAddr::new(bind_ip, 0)];
    let mut builder = PeerConnectionBuilder::new();
    if let Some(sockets) = sockets {
        // The gateway chooses the username, so that the mux knows it before the
        // publisher's first STUN request.
        let ufrag = random_ice_text(16);
        if !sockets.register(&ufrag) {
            return Err(NegotiationError::Setup(webrtc::error::Error::Other(
                "ICE username taken".into(),
            )));
        }
        engine = engine
            .with_ice_credentials(ufrag, random_ice_text(32))
            .with_multicast_dns_mode(MulticastDnsMode::Disabled);
        let ports = sockets.ports();
        builder = builder.with_runtime(sockets.runtime());
        if ports.tcp.is_some() || ports.http.is_some() {
            builder = builder.with_tcp_addrs(any_port.clone());
        }
    }
    let mut media_engine = media_engine(plan).map_err(NegotiationError::Setup)?;
    let registry = interceptors(&mut media_engine).map_err(NegotiationError::Setup)?;
    let connection = builder
        .with_configuration(configuration(config))
        .with_setting_engine(engine.build())
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_handler(handler as Arc<dyn PeerConnectionEventHandler>)
        .with_udp_addrs(any_port)
        .build()
        .await
        .map_err(NegotiationError::Setup)?;
    Ok(Arc::new(connection))
}

/// The addresses of the relay candidates among `lines` (SDP lines or trickled candidates).
fn relay_addresses<'a>(lines: impl Iterator<Item = &'a str>) -> HashSet<SocketAddr> {
    lines
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(6) != Some(&"typ") || fields.get(7) != Some(&"relay") {
                return None;
            }
            Some(SocketAddr::new(
                fields[4].parse().ok()?,
                fields[5].parse().ok()?,
            ))
        })
        .collect()
}

/// ICE username fragment or password characters (RFC 8445's ice-char, letters and digits).
fn random_ice_text(len: usize) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// The gateway's own agent: STUN servers only. TURN is for publishers (their networks may
/// need it; the gateway's host candidates do not), and a TURN server that refuses the
/// gateway must not slow a publish.
fn configuration(config: &WebrtcConfig) -> webrtc::peer_connection::RTCConfiguration {
    let servers = config
        .ice_servers
        .iter()
        .filter(|url| url.starts_with("stun:") || url.starts_with("stuns:"))
        .map(|url| RTCIceServer {
            urls: vec![url.clone()],
            ..Default::default()
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
    /// What the publisher's candidates must say.
    ports: CandidatePorts,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(candidate) = event.candidate.to_json() {
            for line in rewrite_candidate(&candidate.candidate, &self.ports) {
                let rewritten = RTCIceCandidateInit {
                    candidate: line,
                    ..candidate.clone()
                };
                let _ = self.events.try_send(PeerEvent::Candidate(rewritten));
            }
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
