//! `webrtc-gateway-publish`: a WebRTC publisher for tests and benchmarks. It encodes a
//! GStreamer test source (VP8 or H.264 video, Opus audio), publishes it to a gateway over
//! the WebSocket signalling (or WHIP, `--whip`), and prints every message the gateway sends as one JSON line
//! on stdout, plus `{"type":"ice","state":...}` lines for its own connection state.

#![forbid(unsafe_code)]

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use futures::{SinkExt, StreamExt};
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::VideoFrameExt;
use rtc::interceptor::{Registry, Slot};
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceGatheringState, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
    register_default_interceptors,
};
use webrtc_gateway_publish::client::{Encoder, KeyFrameRequests, SampleTrack, clock_stamp};

mod relay;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Codec {
    Vp8,
    H264,
}

#[derive(Parser)]
#[command(name = "webrtc-gateway-publish", version, about)]
struct Cli {
    /// The gateway's signalling URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Stream name to publish.
    #[arg(long, default_value = "cam1")]
    stream: String,
    /// Publish token.
    #[arg(long)]
    token: Option<String>,
    #[arg(long, default_value_t = 640)]
    width: u32,
    #[arg(long, default_value_t = 360)]
    height: u32,
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Video codec to send.
    #[arg(long, value_enum, default_value = "vp8")]
    codec: Codec,
    /// Send no video.
    #[arg(long)]
    no_video: bool,
    /// Send no audio.
    #[arg(long)]
    no_audio: bool,
    /// Publish over WHIP to this endpoint (`http://HOST:PORT/whip/NAME`) instead of the
    /// WebSocket signalling at `--url`; the session is deleted after `--duration-s`.
    #[arg(long)]
    whip: Option<String>,
    /// Unpublish after this many seconds (0: publish until killed).
    #[arg(long, default_value_t = 0)]
    duration_s: u64,
    /// Trickle candidates instead of sending them inside the offer.
    #[arg(long)]
    trickle: bool,
    /// Local address for ICE.
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// Replace every video frame with bytes no decoder accepts (to test error handling).
    #[arg(long)]
    corrupt_video: bool,
    /// Keep the connection up but send no media (to test the media timeout).
    #[arg(long)]
    silent: bool,
    /// Offer RTX (RFC 4588): retransmissions on a stream of their own, as browsers send.
    #[arg(long)]
    rtx: bool,
    /// Send through a lossy link that drops this share of the RTP packets, in percent
    /// (retransmissions too).
    #[arg(long, default_value_t = 0.0)]
    loss_percent: f64,
    /// ... and delays each packet by a random time up to this.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// ... and by this fixed time before that (a link's one-way delay).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Change the picture size to `WxH` mid-stream, as a browser does when its bandwidth
    /// estimate grows.
    #[arg(long, value_parser = parse_size)]
    resize: Option<(u32, u32)>,
    /// ... this many seconds after the video starts.
    #[arg(long, default_value_t = 5)]
    resize_after_s: u64,
    /// With `--source`: send no audio for this many ms (a publisher that starts its
    /// audio late); what follows stays in sync with the video.
    #[arg(long, default_value_t = 0)]
    audio_delay_ms: u64,
    /// Send this Matroska file (MJPEG video, PCM audio) once, at its pace, instead of
    /// the test sources: its audio and video stay in sync.
    #[arg(long)]
    source: Option<std::path::PathBuf>,
    /// Draw the wall clock into each picture as it is made (for glass-to-glass latency:
    /// `webrtc_gateway_publish::client::clock_stamp` reads it back).
    #[arg(long)]
    clock_stamp: bool,
    /// Make key frames only when the gateway asks for one (PLI, FIR), as browsers do;
    /// without it the encoder makes one every 2 s too.
    #[arg(long)]
    keyframes_on_request: bool,
    /// With `--codec h264`: B-frames, as some encoders make and no browser does.
    #[arg(long)]
    b_frames: bool,
    /// The test picture (`videotestsrc`'s pattern): `snow` is noise, which no encoder
    /// makes small (large recordings quickly).
    #[arg(long, default_value = "ball")]
    pattern: String,
}

const VIDEO_PT: u8 = 96;
const VIDEO_RTX_PT: u8 = 97;
const AUDIO_PT: u8 = 111;

enum LocalEvent {
    Candidate(RTCIceCandidateInit),
    Gathered,
    State(RTCPeerConnectionState),
}

struct Handler(mpsc::UnboundedSender<LocalEvent>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(c) = event.candidate.to_json() {
            let _ = self.0.send(LocalEvent::Candidate(c));
        }
    }
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.0.send(LocalEvent::Gathered);
        }
    }
    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.0.send(LocalEvent::State(state));
    }
}

fn say(value: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

fn codec(kind: RtpCodecKind, cli: &Cli) -> RTCRtpCodecParameters {
    let rtp_codec = match kind {
        RtpCodecKind::Audio => RTCRtpCodec {
            mime_type: "audio/opus".into(),
            clock_rate: 48000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
            rtcp_feedback: vec![],
        },
        _ => match cli.codec {
            Codec::Vp8 => RTCRtpCodec {
                mime_type: "video/VP8".into(),
                clock_rate: 90000,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![],
            },
            Codec::H264 => RTCRtpCodec {
                mime_type: "video/H264".into(),
                clock_rate: 90000,
                channels: 0,
                sdp_fmtp_line:
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f".into(),
                rtcp_feedback: vec![],
            },
        },
    };
    RTCRtpCodecParameters {
        rtp_codec,
        payload_type: if kind == RtpCodecKind::Audio {
            AUDIO_PT
        } else {
            VIDEO_PT
        },
    }
}

fn parse_size(text: &str) -> Result<(u32, u32), String> {
    text.split_once('x')
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        .ok_or_else(|| format!("{text:?} is not WxH"))
}

/// The video encoder the publisher uses, ending in H.264 or VP8 frames.
fn video_encoder(cli: &Cli) -> String {
    // A key frame every 2 s, or (as a browser) none but those asked for.
    let interval = if cli.keyframes_on_request {
        1_000_000
    } else {
        60
    };
    match cli.codec {
        Codec::Vp8 => format!(
            "vp8enc deadline=1 cpu-used=8 keyframe-max-dist={interval} \
             target-bitrate=800000 error-resilient=partitions"
        ),
        Codec::H264 if cli.b_frames => format!(
            "x264enc speed-preset=ultrafast key-int-max={interval} bitrate=800 bframes=2 \
             b-adapt=false ! video/x-h264,profile=main,stream-format=byte-stream,alignment=au"
        ),
        Codec::H264 => format!(
            "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={interval} bitrate=800 \
             ! video/x-h264,profile=constrained-baseline,stream-format=byte-stream,alignment=au"
        ),
    }
}

/// Feeds the tracks from one file, decoded and encoded in one pipeline whose sinks play
/// it at its pace: what was together in the file is sent together.
fn feed_file(source: &std::path::Path, cli: &Cli, tracks: &[Arc<SampleTrack>]) -> Result<()> {
    let description = format!(
        "filesrc location=\"{}\" ! matroskademux name=demux \
         demux.video_0 ! queue ! jpegdec ! videoconvert ! {} \
           ! appsink name=video sync=true max-buffers=50 \
         demux.audio_0 ! queue ! audioconvert ! audioresample \
           ! audio/x-raw,rate=48000,channels=2 ! opusenc frame-size=20 \
           ! appsink name=audio sync=true max-buffers=50",
        source.display(),
        video_encoder(cli)
    );
    let encoders = Encoder::sharing(&description, &["video", "audio"])?;
    for (encoder, kind) in encoders
        .into_iter()
        .zip([RtpCodecKind::Video, RtpCodecKind::Audio])
    {
        if let Some(track) = tracks.iter().find(|t| t.kind == kind) {
            let skip = match kind {
                RtpCodecKind::Audio => Duration::from_millis(cli.audio_delay_ms),
                _ => Duration::ZERO,
            };
            feed(encoder, track.clone(), false, skip)?;
        }
    }
    Ok(())
}

/// Draws the wall clock into each raw picture before the encoder takes it.
fn stamp_clock(encoder: &Encoder) {
    let Some(pad) = encoder.element("size").and_then(|e| e.static_pad("src")) else {
        return;
    };
    pad.add_probe(gst::PadProbeType::BUFFER, |pad, info| {
        let video = pad
            .current_caps()
            .and_then(|caps| gst_video::VideoInfo::from_caps(&caps).ok());
        if let (Some(video), Some(buffer)) = (video, info.buffer_mut()) {
            let buffer = buffer.make_mut();
            if let Ok(mut frame) =
                gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, &video)
            {
                let stride = frame.plane_stride()[0] as usize;
                let (width, height) = (frame.width() as usize, frame.height() as usize);
                if let Ok(luma) = frame.plane_data_mut(0) {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default();
                    clock_stamp::draw(luma, width, height, stride, now.as_millis() as u64);
                }
            }
        }
        gst::PadProbeReturn::Ok
    });
}

/// Pulls encoded frames on a thread of its own and writes them to the track.
/// The frames of the first `skip` of the stream are not sent.
fn feed(encoder: Encoder, track: Arc<SampleTrack>, corrupt: bool, skip: Duration) -> Result<()> {
    let (frames, mut received) = mpsc::channel::<(bytes::Bytes, Duration)>(64);
    let encoder = Arc::new(encoder);
    if track.kind == RtpCodecKind::Video {
        // The receiver lost a picture: a key frame now, as a browser makes one.
        let (encoder, track) = (encoder.clone(), track.clone());
        tokio::spawn(async move {
            while track.key_frame_requested().await.is_some() {
                encoder.request_key_frame();
            }
        });
    }
    std::thread::spawn(move || {
        let mut skipped = Duration::ZERO;
        while let Some((data, duration)) = encoder.next_frame() {
            if skipped < skip {
                skipped += duration;
                continue;
            }
            let data = if corrupt {
                // The frame header stays, so the frame is taken in; its data is junk.
                let mut junk = data.to_vec();
                junk.iter_mut().skip(10).for_each(|b| *b = 0xa5);
                bytes::Bytes::from(junk)
            } else {
                data
            };
            if frames.blocking_send((data, duration)).is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Some((data, duration)) = received.recv().await {
            // Fails once the connection is closed: the publication is over.
            if track.write(data, duration).await.is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// Feeds the tracks from the test sources (or `--source`), once ICE has connected.
fn start_feeding(cli: &Cli, tracks: &[Arc<SampleTrack>]) -> Result<()> {
    if let Some(source) = &cli.source {
        return feed_file(source, cli, tracks);
    }
    for track in tracks {
        let description = if track.kind == RtpCodecKind::Audio {
            "audiotestsrc is-live=true wave=sine freq=440 \
             ! audio/x-raw,rate=48000,channels=2 ! opusenc frame-size=20 \
             ! appsink name=sink sync=false max-buffers=50"
                .to_string()
        } else {
            let encode = video_encoder(cli);
            format!(
                "videotestsrc is-live=true pattern={} \
                 ! capsfilter name=size caps=video/x-raw,format=I420,width={},height={},framerate={}/1 \
                 ! {encode} ! appsink name=sink sync=false max-buffers=50",
                cli.pattern, cli.width, cli.height, cli.fps
            )
        };
        let encoder = Encoder::new(&description)?;
        if cli.clock_stamp && track.kind == RtpCodecKind::Video {
            stamp_clock(&encoder);
        }
        if let (Some(size), RtpCodecKind::Video) = (&cli.resize, track.kind) {
            let caps = format!(
                "video/x-raw,width={},height={},framerate={}/1",
                size.0, size.1, cli.fps
            );
            let after = Duration::from_secs(cli.resize_after_s);
            let size = encoder.element("size");
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                if let (Some(size), Ok(caps)) = (size, caps.parse::<gst::Caps>()) {
                    size.set_property("caps", caps);
                }
            });
        }
        let corrupt = cli.corrupt_video && track.kind == RtpCodecKind::Video;
        feed(encoder, track.clone(), corrupt, Duration::ZERO)?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    gst::init()?;

    let mut media_engine = MediaEngine::default();
    if !cli.no_video {
        media_engine.register_codec(codec(RtpCodecKind::Video, &cli), RtpCodecKind::Video)?;
        if cli.rtx {
            let rtx = RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: "video/rtx".into(),
                    clock_rate: 90000,
                    channels: 0,
                    sdp_fmtp_line: format!("apt={VIDEO_PT}"),
                    rtcp_feedback: vec![],
                },
                payload_type: VIDEO_RTX_PT,
            };
            media_engine.register_codec(rtx, RtpCodecKind::Video)?;
        }
    }
    if !cli.no_audio {
        media_engine.register_codec(codec(RtpCodecKind::Audio, &cli), RtpCodecKind::Audio)?;
    }
    let registry = register_default_interceptors(Registry::new(), &mut media_engine)?.with(
        Slot::from(KeyFrameRequests::SLOT),
        KeyFrameRequests::default(),
    );
    let (local_tx, mut local) = mpsc::unbounded_channel();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(
            SettingEngineBuilder::new()
                .with_include_loopback_candidate(cli.bind.is_loopback())
                .build(),
        )
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler(local_tx)))
        .with_udp_addrs(vec![std::net::SocketAddr::new(cli.bind, 0)])
        .build()
        .await?;

    let mut tracks = Vec::new();
    for (kind, skip) in [
        (RtpCodecKind::Video, cli.no_video),
        (RtpCodecKind::Audio, cli.no_audio),
    ] {
        if skip {
            continue;
        }
        let rtx = cli.rtx && kind == RtpCodecKind::Video;
        let track = SampleTrack::add(&pc, "publisher", kind, &codec(kind, &cli), rtx).await?;
        tracks.push(Arc::new(track));
    }

    let offer = pc.create_offer(None).await?;
    pc.set_local_description(offer).await?;
    if !cli.trickle {
        let deadline = tokio::time::sleep(Duration::from_secs(3));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                event = local.recv() => match event {
                    Some(LocalEvent::Gathered) | None => break,
                    Some(LocalEvent::Candidate(_)) | Some(LocalEvent::State(_)) => {}
                },
            }
        }
    }
    let offer = pc
        .local_description()
        .await
        .context("no local description")?;
    let relay = if cli.loss_percent > 0.0 || cli.jitter_ms > 0 || cli.delay_ms > 0 {
        let loss = relay::share(cli.loss_percent)?;
        let (delay, jitter) = (
            Duration::from_millis(cli.delay_ms),
            Duration::from_millis(cli.jitter_ms),
        );
        Some(relay::Relay::start(cli.bind, loss, delay, jitter).await?)
    } else {
        None
    };
    let offer_sdp = match &relay {
        Some(relay) => relay.rewrite_offer(&offer.sdp)?,
        None => offer.sdp.clone(),
    };
    let from_gateway = |text: &str| -> Result<String> {
        match &relay {
            Some(relay) => relay.rewrite_from_gateway(text),
            None => Ok(text.to_string()),
        }
    };

    if let Some(endpoint) = &cli.whip {
        let client = reqwest::Client::new();
        let mut request = client
            .post(endpoint)
            .header("Content-Type", "application/sdp")
            .body(offer_sdp);
        if let Some(token) = &cli.token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {endpoint}"))?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("Location")
            .and_then(|l| l.to_str().ok())
            .map(String::from);
        let answer = response.text().await?;
        if status != 201 {
            say(serde_json::json!({"type": "error", "code": status, "message": answer}));
            let _ = pc.close().await;
            std::process::exit(3);
        }
        let location = location.context("a WHIP answer without Location")?;
        // A path is on the endpoint's origin.
        let session = match location.strip_prefix('/') {
            Some(path) => {
                let origin = endpoint
                    .splitn(4, '/')
                    .take(3)
                    .collect::<Vec<_>>()
                    .join("/");
                format!("{origin}/{path}")
            }
            None => location,
        };
        say(serde_json::json!({"type": "answer", "sdp": answer}));
        pc.set_remote_description(RTCSessionDescription::answer(from_gateway(&answer)?)?)
            .await?;
        let stop_at = tokio::time::sleep(Duration::from_secs(if cli.duration_s > 0 {
            cli.duration_s
        } else {
            365 * 24 * 3600
        }));
        tokio::pin!(stop_at);
        let mut feeding = false;
        loop {
            tokio::select! {
                _ = &mut stop_at => break,
                event = local.recv() => match event {
                    Some(LocalEvent::State(state)) => {
                        say(serde_json::json!({"type": "ice", "state": state.to_string()}));
                        if state == RTCPeerConnectionState::Connected && !feeding && !cli.silent {
                            feeding = true;
                            start_feeding(&cli, &tracks)?;
                        }
                        if state == RTCPeerConnectionState::Failed {
                            bail!("ICE failed");
                        }
                    }
                    None => break,
                    _ => {}
                },
            }
        }
        let deleted = client.delete(&session).send().await;
        say(
            serde_json::json!({"type": "ended", "deleted": deleted.is_ok_and(|r| r.status().is_success())}),
        );
        let _ = pc.close().await;
        return Ok(());
    }

    let (socket, _) = tokio_tungstenite::connect_async(&cli.url)
        .await
        .with_context(|| format!("cannot connect to {}", cli.url))?;
    let (mut sink, mut stream) = socket.split();
    let mut publish =
        serde_json::json!({"type": "publish", "stream": cli.stream, "sdp": offer_sdp});
    if let Some(token) = &cli.token {
        publish["token"] = token.clone().into();
    }
    sink.send(Message::Text(publish.to_string().into())).await?;

    let until = if cli.duration_s > 0 {
        Some(tokio::time::Instant::now() + Duration::from_secs(cli.duration_s))
    } else {
        None
    };
    let stop_at = tokio::time::sleep_until(
        until.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600)),
    );
    tokio::pin!(stop_at);
    let mut feeding = false;
    let mut answered = false;
    let mut pending_remote: Vec<RTCIceCandidateInit> = Vec::new();
    loop {
        tokio::select! {
            _ = &mut stop_at => {
                sink.send(Message::Text(r#"{"type":"unpublish"}"#.into())).await?;
                stop_at.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(3600));
            }
            event = local.recv() => match event {
                Some(LocalEvent::Candidate(c)) if cli.trickle => {
                    let candidate = match &relay {
                        Some(relay) => relay.rewrite_offer(&c.candidate)?,
                        None => c.candidate,
                    };
                    let message = serde_json::json!({"type": "candidate", "candidate": candidate,
                        "sdpMid": c.sdp_mid, "sdpMLineIndex": c.sdp_mline_index});
                    sink.send(Message::Text(message.to_string().into())).await?;
                }
                Some(LocalEvent::Gathered) if cli.trickle => {
                    sink.send(Message::Text(r#"{"type":"candidate","candidate":null}"#.into())).await?;
                }
                Some(LocalEvent::State(state)) => {
                    say(serde_json::json!({"type": "ice", "state": state.to_string()}));
                    if state == RTCPeerConnectionState::Connected && !feeding && !cli.silent {
                        feeding = true;
                        start_feeding(&cli, &tracks)?;
                    }
                    if state == RTCPeerConnectionState::Failed {
                        bail!("ICE failed");
                    }
                }
                _ => {}
            },
            message = stream.next() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text.to_string(),
                    Some(Ok(Message::Close(_))) | None => {
                        say(serde_json::json!({"type": "closed"}));
                        break;
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => bail!("signalling: {e}"),
                };
                let value: serde_json::Value = serde_json::from_str(&text)?;
                say(value.clone());
                match value["type"].as_str() {
                    Some("answer") => {
                        let sdp = from_gateway(value["sdp"].as_str().context("answer without sdp")?)?;
                        pc.set_remote_description(RTCSessionDescription::answer(sdp)?).await?;
                        answered = true;
                        for c in pending_remote.drain(..) {
                            pc.add_ice_candidate(c).await?;
                        }
                    }
                    Some("candidate") => {
                        let c = RTCIceCandidateInit {
                            candidate: from_gateway(value["candidate"].as_str().unwrap_or_default())?,
                            sdp_mid: value["sdpMid"].as_str().map(String::from),
                            sdp_mline_index: value["sdpMLineIndex"].as_u64().map(|i| i as u16),
                            ..Default::default()
                        };
                        if answered {
                            let _ = pc.add_ice_candidate(c).await;
                        } else {
                            pending_remote.push(c);
                        }
                    }
                    Some("ended") => break,
                    Some("error") => {
                        let _ = pc.close().await;
                        std::process::exit(3);
                    }
                    _ => {}
                }
            }
        }
    }
    let _ = pc.close().await;
    Ok(())
}
