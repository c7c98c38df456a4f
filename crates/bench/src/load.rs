//! The load generator: a clip encoded once, synthetic WebRTC publishers that send it,
//! and the counters of H.264 frames arriving at each stream's RTP port.

use crate::cli::*;
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rtc::interceptor::{Registry, Slot};
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use serde_json::{Value, json};
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceGatheringState, RTCIceServer, RTCIceTransportPolicy,
    RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
    register_default_interceptors,
};
use webrtc_gateway_publish::client::{Encoder, KeyFrameRequests, SampleTrack};

// ── The clip, encoded once ───────────────────────────────────────────────────

pub struct Clip {
    pub codec: SourceCodec,
    pub video: Vec<(Bytes, Duration)>,
    /// Which video frames are key frames.
    pub key_frames: Vec<bool>,
    pub audio: Vec<(Bytes, Duration)>,
}

pub fn encode(description: &str) -> Result<Vec<(Bytes, Duration)>> {
    let encoder = Encoder::new(description)?;
    Ok(std::iter::from_fn(|| encoder.next_frame()).collect())
}

/// Ten seconds of VP8 or H.264 (constrained baseline, as browsers send it; a key frame
/// every two seconds) and Opus.
pub fn clip(width: u32, height: u32, codec: SourceCodec) -> Result<Clip> {
    let encoder = match codec {
        SourceCodec::Vp8 => {
            "vp8enc deadline=1 cpu-used=8 keyframe-max-dist=60 target-bitrate=800000 \
             error-resilient=partitions"
        }
        SourceCodec::H264 => {
            "x264enc tune=zerolatency speed-preset=veryfast key-int-max=60 bitrate=800 \
             ! video/x-h264,profile=constrained-baseline,stream-format=byte-stream,alignment=au"
        }
    };
    let video = encode(&format!(
        "videotestsrc num-buffers=300 pattern=ball ! video/x-raw,width={width},height={height},framerate=30/1 \
         ! {encoder} ! appsink name=sink sync=false"
    ))?;
    Ok(Clip {
        codec,
        key_frames: video.iter().map(|(f, _)| is_key_frame(codec, f)).collect(),
        video,
        audio: encode(
            "audiotestsrc num-buffers=500 samplesperbuffer=960 wave=sine freq=440 \
             ! audio/x-raw,rate=48000,channels=2 ! opusenc frame-size=20 ! appsink name=sink sync=false",
        )?,
    })
}

/// Whether an encoded frame is a key frame: a VP8 key frame (RFC 6386, 9.1), or H.264
/// with an IDR slice.
fn is_key_frame(codec: SourceCodec, frame: &[u8]) -> bool {
    match codec {
        SourceCodec::Vp8 => frame.first().is_some_and(|b| b & 1 == 0),
        SourceCodec::H264 => frame
            .windows(4)
            .any(|w| w[..3] == [0, 0, 1] && w[3] & 0x1f == 5),
    }
}

// ── Synthetic publishers ──────────────────────────────────────────────────────

pub struct Handler(mpsc::UnboundedSender<Option<RTCPeerConnectionState>>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.0.send(None);
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.0.send(Some(state));
    }
}

/// A running synthetic publisher; dropping it stops it.
pub struct Publisher {
    pub connected_at: Instant,
    /// From the offer sent on the signalling socket to its answer.
    pub answered_in: Duration,
    pub stop: Arc<AtomicBool>,
    pub _tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Publisher {
    /// Ends the publication as a client does: the peer connection closed, the WHIP
    /// session deleted, then the signalling socket closed.
    pub async fn end(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The last task closes the connection once stopped.
        if let Some(closer) = self._tasks.pop() {
            let _ = tokio::time::timeout(Duration::from_secs(5), closer).await;
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in &self._tasks {
            task.abort();
        }
    }
}

pub fn codec(kind: RtpCodecKind, video: SourceCodec) -> RTCRtpCodecParameters {
    let (mime, clock_rate, channels, pt, fmtp) = match (kind, video) {
        (RtpCodecKind::Audio, _) => ("audio/opus", 48000, 2, 111, ""),
        (_, SourceCodec::Vp8) => ("video/VP8", 90000, 0, 96, ""),
        (_, SourceCodec::H264) => (
            "video/H264",
            90000,
            0,
            102,
            "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        ),
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime.into(),
            clock_rate,
            channels,
            sdp_fmtp_line: fmtp.into(),
            rtcp_feedback: vec![],
        },
        payload_type: pt,
    }
}

/// How a synthetic publisher signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signalling {
    WebSocket,
    /// WHIP (RFC 9725): the offer with its candidates POSTed, the session DELETEd at the
    /// end.
    Whip,
}

/// How a synthetic publisher reaches the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// Host candidates over UDP.
    Udp,
    /// Active ICE-TCP candidates only (RFC 6544), no UDP.
    Tcp,
    /// Only relayed candidates from the TURN server at the URL, with a user and password.
    Relay {
        url: String,
        username: String,
        password: String,
    },
}

pub async fn publish(stream: &str, clip: Arc<Clip>) -> Result<Publisher> {
    publish_with(stream, clip, Signalling::WebSocket, Via::Udp).await
}

pub async fn publish_via(
    stream: &str,
    clip: Arc<Clip>,
    signalling: Signalling,
) -> Result<Publisher> {
    publish_with(stream, clip, signalling, Via::Udp).await
}

/// A synthetic publisher that reaches the gateway over `via`, signalling over WebSocket.
pub async fn publish_over(stream: &str, clip: Arc<Clip>, via: Via) -> Result<Publisher> {
    publish_with(stream, clip, Signalling::WebSocket, via).await
}

/// A synthetic publisher that signals with `signalling` and reaches the gateway over `via`.
pub async fn publish_with(
    stream: &str,
    clip: Arc<Clip>,
    signalling: Signalling,
    via: Via,
) -> Result<Publisher> {
    let mut media_engine = MediaEngine::default();
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        media_engine.register_codec(codec(kind, clip.codec), kind)?;
    }
    // Key-frame requests reach the sender, which answers with the clip's next key frame
    // at once, as a browser makes one.
    let registry = register_default_interceptors(Registry::new(), &mut media_engine)?.with(
        Slot::from(KeyFrameRequests::SLOT),
        KeyFrameRequests::default(),
    );
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let configuration = match &via {
        Via::Relay {
            url,
            username,
            password,
        } => RTCConfigurationBuilder::new()
            .with_ice_servers(vec![RTCIceServer {
                urls: vec![url.clone()],
                username: username.clone(),
                credential: password.clone(),
            }])
            .with_ice_transport_policy(RTCIceTransportPolicy::Relay),
        _ => RTCConfigurationBuilder::new(),
    };
    let builder = PeerConnectionBuilder::new()
        .with_configuration(configuration.build())
        .with_setting_engine(
            SettingEngineBuilder::new()
                .with_include_loopback_candidate(true)
                .build(),
        )
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler(events_tx)));
    let builder = match via {
        Via::Tcp => builder.with_tcp_addrs(vec!["127.0.0.1:0"]),
        _ => builder.with_udp_addrs(vec!["127.0.0.1:0"]),
    };
    let pc: Arc<dyn PeerConnection> = Arc::new(builder.build().await?);
    let mut tracks = Vec::new();
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        let parameters = codec(kind, clip.codec);
        tracks.push(SampleTrack::add(pc.as_ref(), "bench", kind, &parameters, false).await?);
    }
    pc.set_local_description(pc.create_offer(None).await?)
        .await?;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(event) = events.recv().await {
            if event.is_none() {
                break;
            }
        }
    })
    .await;
    let offer = pc.local_description().await.context("no offer")?;
    let mut tasks = Vec::new();
    let mut whip_session = None;
    let offered_at = Instant::now();
    let answered_in;
    match signalling {
        Signalling::WebSocket => {
            let (socket, _) =
                tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws", http_port()))
                    .await?;
            let (mut sink, mut incoming) = socket.split();
            let publish = json!({"type": "publish", "stream": stream, "sdp": offer.sdp});
            let offered_at = Instant::now();
            sink.send(Message::Text(publish.to_string().into())).await?;
            loop {
                let Some(Ok(Message::Text(text))) = incoming.next().await else {
                    bail!("the gateway closed the signalling socket");
                };
                let value: Value = serde_json::from_str(&text)?;
                match value["type"].as_str() {
                    Some("answer") => {
                        let sdp = value["sdp"].as_str().unwrap_or_default().to_string();
                        pc.set_remote_description(RTCSessionDescription::answer(sdp)?)
                            .await?;
                        answered_in = offered_at.elapsed();
                        break;
                    }
                    Some("error") => bail!("{value}"),
                    _ => {}
                }
            }
            // The socket stays open for as long as the publication lasts.
            tasks.push(tokio::spawn(async move {
                let _sink = sink;
                while incoming.next().await.is_some() {}
            }));
        }
        Signalling::Whip => {
            let base = format!("http://127.0.0.1:{}", http_port());
            let response = reqwest::Client::new()
                .post(format!("{base}/whip/{stream}"))
                .header("Content-Type", "application/sdp")
                .body(offer.sdp.clone())
                .send()
                .await?;
            let status = response.status();
            let location = response
                .headers()
                .get("Location")
                .and_then(|l| l.to_str().ok())
                .map(String::from);
            let answer = response.text().await?;
            answered_in = offered_at.elapsed();
            if status.as_u16() != 201 {
                bail!("WHIP answered {status}: {answer}");
            }
            let location = location.context("a WHIP answer without Location")?;
            whip_session = Some(if location.starts_with("http") {
                location
            } else {
                format!("{base}{location}")
            });
            pc.set_remote_description(RTCSessionDescription::answer(answer)?)
                .await?;
        }
    };
    let connected_at = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = events.recv().await {
            if event == Some(RTCPeerConnectionState::Connected) {
                return Some(Instant::now());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .context("ICE did not connect")?;

    let stop = Arc::new(AtomicBool::new(false));
    for track in tracks {
        let track = Arc::new(track);
        let video = track.kind == RtpCodecKind::Video;
        let (frames, key_frames) = if video {
            (clip.video.clone(), clip.key_frames.clone())
        } else {
            (clip.audio.clone(), vec![true; clip.audio.len()])
        };
        let key_wanted = Arc::new(AtomicBool::new(false));
        if video {
            let (track, key_wanted) = (track.clone(), key_wanted.clone());
            tasks.push(tokio::spawn(async move {
                while track.key_frame_requested().await.is_some() {
                    key_wanted.store(true, Ordering::Relaxed);
                }
            }));
        }
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let period = frames.first().map_or(Duration::from_millis(20), |f| f.1);
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                if key_wanted.swap(false, Ordering::Relaxed) && !key_frames[k] {
                    // Skips ahead to the next key frame.
                    while !key_frames[k] {
                        k = (k + 1) % frames.len();
                    }
                }
                tick.tick().await;
                let (data, duration) = &frames[k];
                if track.write(data.clone(), *duration).await.is_err() {
                    break;
                }
                k = (k + 1) % frames.len();
            }
        }));
    }
    let closer = pc.clone();
    let stop_watch = stop.clone();
    tasks.push(tokio::spawn(async move {
        while !stop_watch.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if let Some(session) = whip_session {
            let _ = reqwest::Client::new().delete(session).send().await;
        }
        let _ = closer.close().await;
    }));
    Ok(Publisher {
        connected_at,
        answered_in,
        stop,
        _tasks: tasks,
    })
}

// ── Output frame counting ─────────────────────────────────────────────────────

/// Counts H.264 frames (RTP packets with the marker bit) arriving at a port.
pub struct FrameCounter {
    pub frames: Arc<AtomicU64>,
    pub first: Arc<std::sync::Mutex<Option<Instant>>>,
    pub stop: Arc<AtomicBool>,
    pub thread: Option<std::thread::JoinHandle<()>>,
}

impl FrameCounter {
    pub fn listen(port: u16) -> Result<FrameCounter> {
        let socket = UdpSocket::bind(("127.0.0.1", port))
            .with_context(|| format!("cannot receive on UDP port {port}"))?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let frames = Arc::new(AtomicU64::new(0));
        let first = Arc::new(std::sync::Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, fi, s) = (frames.clone(), first.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    fi.lock().unwrap().get_or_insert_with(Instant::now);
                    if n > 1 && buf[1] & 0x80 != 0 {
                        f.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        Ok(FrameCounter {
            frames,
            first,
            stop,
            thread: Some(thread),
        })
    }

    pub fn count(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    pub fn first_packet(&self) -> Option<Instant> {
        *self.first.lock().unwrap()
    }
}

impl Drop for FrameCounter {
    /// Frees the port before returning.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
