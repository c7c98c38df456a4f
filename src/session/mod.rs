//! A session is one publisher: its WebRTC peer connection (ICE, DTLS, SRTP by webrtc-rs)
//! and its media pipeline. One task owns both and is driven by its command inbox, peer
//! events, pipeline events and a cancellation token; others hold a [`SessionHandle`].
//! The same session serves every signalling protocol.

pub mod offer;
mod peer;

use crate::gateway::Gateway;
use crate::media::hls::{HlsOutput, Variant};
use crate::media::sdp::{self, SdpDescription, VideoDescription};
use crate::media::{
    FileOutput, HlsSpec, MediaEvent, OutputSpec, RecordFormat, RecordSpec, StreamPipeline,
    StreamSpec, recording,
};
use crate::registry::{
    AudioInfo, Outputs, RegistryError, RtpDestination, StreamState, StreamStats, VideoInfo,
};
use offer::{OfferError, OfferPlan};
use peer::{Peer, PeerEvent};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use webrtc::peer_connection::{RTCIceCandidateInit, RTCPeerConnectionState};

/// How long a publisher may take to connect before it is given up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Fewest milliseconds between two key-frame requests to the publisher.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// Why a publication could not start. Each maps to one signalling error code.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Offer(#[from] OfferError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error("WebRTC negotiation failed: {0}")]
    Negotiation(String),
}

/// Why a session ended, as the publisher is told in `ended`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndReason {
    #[error("unpublished")]
    Unpublished,
    #[error("publisher-gone")]
    PublisherGone,
    #[error("ice-failed")]
    IceFailed,
    #[error("connect-timeout")]
    ConnectTimeout,
    #[error("shutdown")]
    Shutdown,
    #[error("stopped-by-operator")]
    Stopped,
    #[error("pipeline-error: {0}")]
    PipelineError(String),
    #[error("internal-error")]
    InternalError,
}

/// What a session tells its signalling connection.
#[derive(Debug, Clone)]
pub enum SessionEvent {
    Candidate(RTCIceCandidateInit),
    Live { stream: String, outputs: Outputs },
    Ended { stream: String, reason: EndReason },
}

/// Answers to control commands: a result or a sentence saying why not.
pub type Reply<T> = oneshot::Sender<Result<T, String>>;

#[derive(Debug)]
pub enum SessionCommand {
    AddCandidate(RTCIceCandidateInit),
    Stop(EndReason),
    /// Starts recording; answers with the file name.
    StartRecording(Reply<String>),
    /// Stops recording; answers with the file name once the file is complete.
    StopRecording(Reply<String>),
    AddRtpDestination {
        host: IpAddr,
        video_port: u16,
        audio_port: u16,
        reply: Reply<RtpDestination>,
    },
    RemoveRtpDestination {
        id: String,
        reply: Reply<()>,
    },
}

/// Sends commands to a running session. Dropping every handle does not end it.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    pub stream: String,
    commands: mpsc::Sender<SessionCommand>,
}

impl SessionHandle {
    pub async fn add_candidate(&self, candidate: RTCIceCandidateInit) {
        let _ = self
            .commands
            .send(SessionCommand::AddCandidate(candidate))
            .await;
    }

    pub async fn stop(&self, reason: EndReason) {
        let _ = self.commands.send(SessionCommand::Stop(reason)).await;
    }

    /// Sends a command that answers, and waits (at most 5 s) for the answer.
    pub async fn ask<T>(
        &self,
        command: impl FnOnce(Reply<T>) -> SessionCommand,
    ) -> Result<T, String> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| "the stream has ended".to_string())?;
        match tokio::time::timeout(Duration::from_secs(5), answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err("the stream has ended".into()),
            Err(_) => Err("the stream did not answer in time".into()),
        }
    }
}

/// A publication request from any signalling protocol.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    pub stream: String,
    pub offer: String,
    /// `websocket` or `whip`.
    pub publisher: &'static str,
}

/// Starts a session: checks the offer, claims the name and a port slot, negotiates and
/// returns the answer. The session then runs on its own until it ends, and always
/// reports `Ended` on `events` and frees what it held.
pub async fn publish(
    gateway: &Arc<Gateway>,
    request: PublishRequest,
    events: mpsc::UnboundedSender<SessionEvent>,
) -> Result<(SessionHandle, String), PublishError> {
    if gateway.shutdown.is_cancelled() {
        return Err(PublishError::ShuttingDown);
    }
    let plan = offer::plan(&request.offer)?;
    let name = request.stream.clone();
    let reservation = gateway
        .registry()
        .reserve(&name, request.publisher, SystemTime::now())?;
    let span = tracing::info_span!("stream", name = %name);
    let negotiated = Peer::negotiate(&gateway.config.webrtc, &plan, &request.offer)
        .instrument(span.clone())
        .await;
    let (peer, peer_events, answer) = match negotiated {
        Ok(n) => n,
        Err(e) => {
            let mut registry = gateway.registry();
            registry.release(&name);
            // A lingering playlist taken over goes back to lingering.
            if let Some(hls) = reservation.hls {
                registry.linger(&name, hls, gateway.linger_deadline());
            }
            return Err(PublishError::Negotiation(e.to_string()));
        }
    };
    let (commands_tx, commands) = mpsc::channel(32);
    let handle = SessionHandle {
        stream: request.stream.clone(),
        commands: commands_tx,
    };
    let registered = handle.clone();
    gateway
        .registry()
        .update(&name, |entry| entry.handle = Some(registered));
    let session = Session {
        gateway: gateway.clone(),
        spec: StreamSpec {
            name: name.clone(),
            slot: reservation.slot,
            video: plan.video.as_ref().map(|(v, _)| v.clone()),
            audio: plan.audio.as_ref().map(|(a, _)| a.clone()),
            outputs: OutputSpec::default(),
        },
        hls: reservation.hls,
        plan,
        peer,
        peer_events,
        commands,
        events: events.clone(),
        stop: reservation.stop,
        answer_mid: offer::first_mid(&answer),
        recording: None,
        stop_recording_reply: None,
        rtp_destinations: Vec::new(),
        plis_sent: 0,
        last_sample: None,
        video_rtp: None,
    };
    let gateway_for_task = gateway.clone();
    gateway.metrics.publication_started();
    gateway.sessions.spawn(
        async move {
            tracing::info!(slot = session.spec.slot, "publisher connecting");
            // The session runs in a task of its own so that a panic ends this stream only.
            let (reason, hls) = match tokio::spawn(session.run().in_current_span()).await {
                Ok(ended) => ended,
                Err(e) => {
                    tracing::error!("session task failed: {e}");
                    (EndReason::InternalError, None)
                }
            };
            let gateway = gateway_for_task;
            match hls {
                // The playlist stays served, ended, for hls.linger_s.
                Some(hls) => gateway
                    .registry()
                    .linger(&name, hls, gateway.linger_deadline()),
                None => {
                    if let Some(entry) = gateway.registry().release(&name) {
                        entry.stop.cancel();
                        if let Some(dir) = entry.hls_dir {
                            let _ = std::fs::remove_dir_all(dir);
                        }
                    }
                }
            }
            tracing::info!(%reason, "stream ended");
            gateway.metrics.publication_ended(&reason.to_string());
            let _ = events.send(SessionEvent::Ended {
                stream: name,
                reason,
            });
        }
        .instrument(span),
    );
    Ok((handle, answer))
}

struct Session {
    gateway: Arc<Gateway>,
    spec: StreamSpec,
    /// The stream's HLS files, when HLS is on; handed back when the session ends.
    hls: Option<HlsOutput>,
    plan: OfferPlan,
    peer: Peer,
    peer_events: mpsc::Receiver<PeerEvent>,
    commands: mpsc::Receiver<SessionCommand>,
    events: mpsc::UnboundedSender<SessionEvent>,
    stop: CancellationToken,
    answer_mid: Option<String>,
    /// The recording being written: its file name and path.
    recording: Option<(String, std::path::PathBuf)>,
    /// Who asked for the recording to stop, answered once its file is complete.
    stop_recording_reply: Option<Reply<String>>,
    rtp_destinations: Vec<RtpDestination>,
    plis_sent: u64,
    /// The previous statistics sample, for rates.
    last_sample: Option<(Instant, StreamStats)>,
    /// What the H.264 RTP output carries: profile-level-id and sprop-parameter-sets.
    video_rtp: Option<(String, String)>,
}

/// What the running session has seen so far.
#[derive(Default)]
struct Progress {
    connected_at: Option<Instant>,
    live: bool,
    tracks_open: usize,
    sdp_written: Option<std::path::PathBuf>,
    last_keyframe_request: Option<Instant>,
    /// File outputs still to finish their files.
    pending_outputs: Vec<FileOutput>,
}

impl Session {
    async fn run(mut self) -> (EndReason, Option<HlsOutput>) {
        self.spec.outputs = self.prepare_outputs();
        let media = self.gateway.media.clone();
        let spec = self.spec.clone();
        let started = tokio::task::spawn_blocking(move || media.start(&spec)).await;
        let (pipeline, mut media_events) = match started {
            Ok(Ok(started)) => started,
            Ok(Err(e)) => {
                tracing::error!("pipeline did not start: {e}");
                self.peer.close().await;
                return (EndReason::PipelineError(e.to_string()), self.end_hls());
            }
            Err(_) => {
                self.peer.close().await;
                return (EndReason::InternalError, self.end_hls());
            }
        };
        self.publish_info();
        let mut progress = Progress::default();
        if self.spec.outputs.hls.is_some() {
            progress.pending_outputs.push(FileOutput::Hls);
            if self.spec.video.is_none() {
                self.write_variant(None);
            }
        }
        if self.spec.outputs.record.is_some() {
            progress.pending_outputs.push(FileOutput::Recording);
        }
        let reason = self
            .drive(&pipeline, &mut media_events, &mut progress)
            .await;
        self.drain(&pipeline, &mut media_events, &mut progress)
            .await;
        pipeline.stop().await;
        self.peer.close().await;
        if let Some(path) = progress.sdp_written {
            let _ = std::fs::remove_file(path);
        }
        (reason, self.end_hls())
    }

    /// Picks the outputs: RTP, HLS (continuing a lingering playlist) and the recording.
    fn prepare_outputs(&mut self) -> OutputSpec {
        let gateway = self.gateway.clone();
        let config = &gateway.config;
        let name = self.spec.name.clone();
        let mut outputs = OutputSpec {
            rtp: config.rtp.enabled,
            ..OutputSpec::default()
        };
        if config.hls.enabled {
            let hls = match self.hls.take() {
                Some(mut hls) => hls.resume().map(|()| hls),
                None => HlsOutput::create(
                    &gateway.hls_root,
                    &name,
                    config.hls.segment_duration_s,
                    config.hls.playlist_length as usize,
                ),
            };
            match hls {
                Ok(hls) => {
                    outputs.hls = Some(HlsSpec {
                        location: hls.location_pattern(),
                        start_index: hls.next_index,
                        segment_ns: config.hls.segment_duration_s as u64 * 1_000_000_000,
                    });
                    let dir = hls.dir.clone();
                    gateway
                        .registry()
                        .update(&name, |entry| entry.hls_dir = Some(dir));
                    self.hls = Some(hls);
                }
                Err(e) => {
                    self.output_failed(FileOutput::Hls, &format!("cannot write HLS files: {e}"))
                }
            }
        }
        if config.record.enabled {
            match self.new_recording() {
                Ok(record) => outputs.record = Some(record),
                Err(message) => self.output_failed(FileOutput::Recording, &message),
            }
        }
        outputs
    }

    /// A new recording file in `record.dir`, in `record.format`.
    fn new_recording(&mut self) -> Result<RecordSpec, String> {
        let config = &self.gateway.config.record;
        let format = RecordFormat::parse(&config.format).unwrap_or(RecordFormat::Mp4);
        let dir = &config.dir;
        let path = recording::new_path(dir, &self.spec.name, SystemTime::now(), format.extension());
        std::fs::create_dir_all(dir)
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .create_new(true)
                    .write(true)
                    .open(&path)
            })
            .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
        tracing::info!(file = %path.display(), "recording");
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.recording = Some((file, path.clone()));
        Ok(RecordSpec { path, format })
    }

    async fn on_command(
        &mut self,
        command: SessionCommand,
        pipeline: &StreamPipeline,
        progress: &mut Progress,
    ) -> Option<EndReason> {
        match command {
            SessionCommand::AddCandidate(candidate) => self.peer.add_candidate(candidate).await,
            SessionCommand::Stop(reason) => return Some(reason),
            SessionCommand::StartRecording(reply) => {
                let _ = reply.send(self.start_recording(pipeline, progress));
            }
            SessionCommand::StopRecording(reply) => {
                if self.recording.is_none() || self.stop_recording_reply.is_some() {
                    let _ = reply.send(Err("the stream is not being recorded".into()));
                } else if pipeline.stop_recording() {
                    tracing::info!("stopping the recording");
                    self.stop_recording_reply = Some(reply);
                }
            }
            SessionCommand::AddRtpDestination {
                host,
                video_port,
                audio_port,
                reply,
            } => {
                let _ =
                    reply.send(self.add_rtp_destination(pipeline, host, video_port, audio_port));
            }
            SessionCommand::RemoveRtpDestination { id, reply } => {
                let position = self.rtp_destinations.iter().position(|d| d.id == id);
                let result = match position {
                    Some(i) => {
                        let gone = self.rtp_destinations.remove(i);
                        pipeline.remove_rtp_destination(
                            &gone.host,
                            gone.video_port,
                            gone.audio_port,
                        );
                        tracing::info!(host = %gone.host, "RTP destination removed");
                        self.publish_destinations();
                        Ok(())
                    }
                    None => Err(format!("no RTP destination {id}")),
                };
                let _ = reply.send(result);
            }
        }
        None
    }

    fn start_recording(
        &mut self,
        pipeline: &StreamPipeline,
        progress: &mut Progress,
    ) -> Result<String, String> {
        if pipeline.is_recording() {
            return Err("the stream is already being recorded".into());
        }
        let record = self.new_recording()?;
        if let Err(e) = pipeline.start_recording(&record) {
            self.recording = None;
            let _ = std::fs::remove_file(&record.path);
            return Err(e.to_string());
        }
        progress.pending_outputs.push(FileOutput::Recording);
        let file = self
            .recording
            .as_ref()
            .map(|(f, _)| f.clone())
            .unwrap_or_default();
        let shown = file.clone();
        self.gateway.registry().update(&self.spec.name, |entry| {
            entry.info.outputs.recording = Some(shown);
            entry.info.recording_error = None;
        });
        Ok(file)
    }

    /// A recording stopped from the control API is complete: take its branch out.
    fn recording_finished(&mut self, pipeline: &StreamPipeline) {
        let Some(reply) = self.stop_recording_reply.take() else {
            return;
        };
        pipeline.remove_recording();
        let file = self.recording.take().map(|(f, _)| f).unwrap_or_default();
        tracing::info!(%file, "recording stopped");
        self.gateway
            .registry()
            .update(&self.spec.name, |entry| entry.info.outputs.recording = None);
        let _ = reply.send(Ok(file));
    }

    fn add_rtp_destination(
        &mut self,
        pipeline: &StreamPipeline,
        host: IpAddr,
        video_port: u16,
        audio_port: u16,
    ) -> Result<RtpDestination, String> {
        let config = &self.gateway.config;
        if !config.rtp.enabled {
            return Err("RTP output is disabled (rtp.enabled = false)".into());
        }
        if self.rtp_destinations.len() as u32 >= config.limits.max_rtp_destinations {
            return Err(format!(
                "the stream already has its limit of {} RTP destinations",
                config.limits.max_rtp_destinations
            ));
        }
        let host_text = host.to_string();
        let taken = self.rtp_destinations.iter().any(|d| {
            d.host == host_text && (d.video_port == video_port || d.audio_port == audio_port)
        });
        if taken {
            return Err(format!("{host} already gets this stream on those ports"));
        }
        pipeline.add_rtp_destination(&host_text, video_port, audio_port);
        let id = (0..8)
            .map(|_| format!("{:02x}", rand::random::<u8>()))
            .collect::<String>();
        let destination = RtpDestination {
            id,
            sdp: self.render_sdp(host, video_port as u32, audio_port as u32),
            host: host_text,
            video_port,
            audio_port,
        };
        tracing::info!(host = %destination.host, video_port, audio_port, "RTP destination added");
        self.rtp_destinations.push(destination.clone());
        self.publish_destinations();
        Ok(destination)
    }

    fn publish_destinations(&self) {
        let destinations = self.rtp_destinations.clone();
        self.gateway.registry().update(&self.spec.name, |entry| {
            entry.info.rtp_destinations = destinations
        });
    }

    /// Samples the stream's statistics and publishes them in the stream object.
    async fn sample_stats(&mut self, pipeline: &StreamPipeline) {
        let totals = self.peer.inbound_totals().await;
        let (jitter_buffer_lost, jitter_buffer_late) = pipeline.video_jitter_drops();
        let mut stats = StreamStats {
            packets_received: totals.packets,
            bytes_received: totals.bytes,
            packets_lost: totals.lost,
            nacks_sent: totals.nacks,
            plis_sent: self.plis_sent,
            frames_in: self.peer.frames_in(),
            frames_out: pipeline.frames_out(),
            pictures_out: pipeline.pictures_out(),
            encoder_delay_ms: pipeline.encoder_delay().as_secs_f64() * 1000.0,
            encoder_delay_p50_ms: pipeline.delays().percentile(0.50),
            encoder_delay_p95_ms: pipeline.delays().percentile(0.95),
            encoder_delay_p99_ms: pipeline.delays().percentile(0.99),
            jitter_buffer_lost,
            jitter_buffer_late,
            hls_segments: self.hls.as_ref().map_or(0, |h| h.next_index),
            recording_bytes: self
                .recording
                .as_ref()
                .and_then(|(_, path)| std::fs::metadata(path).ok())
                .map_or(0, |m| m.len()),
            ..StreamStats::default()
        };
        let now = Instant::now();
        if let Some((at, previous)) = &self.last_sample {
            let seconds = now.duration_since(*at).as_secs_f64().max(0.001);
            let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / seconds;
            stats.input_fps = rate(stats.frames_in, previous.frames_in);
            stats.output_fps = rate(stats.frames_out, previous.frames_out);
            stats.bitrate_kbps = rate(stats.bytes_received, previous.bytes_received) * 8.0 / 1000.0;
        }
        self.last_sample = Some((now, stats.clone()));
        self.gateway
            .registry()
            .update(&self.spec.name, |entry| entry.info.stats = stats);
    }

    /// Ends the inputs and waits (at most 2 s) for the file outputs to finish their files.
    async fn drain(
        &mut self,
        pipeline: &StreamPipeline,
        media_events: &mut mpsc::Receiver<MediaEvent>,
        progress: &mut Progress,
    ) {
        if progress.pending_outputs.is_empty() {
            return;
        }
        pipeline.finish();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !progress.pending_outputs.is_empty() {
            match tokio::time::timeout_at(deadline, media_events.recv()).await {
                Ok(Some(event)) => {
                    let _ = self.on_media_event(event, pipeline, progress).await;
                }
                _ => {
                    tracing::warn!(pending = ?progress.pending_outputs, "outputs did not finish within 2 s");
                    break;
                }
            }
        }
    }

    /// Closes the playlist with ENDLIST and hands the HLS output back.
    fn end_hls(&mut self) -> Option<HlsOutput> {
        let mut hls = self.hls.take()?;
        if let Err(e) = hls.end() {
            tracing::warn!("cannot end the HLS playlist: {e}");
        }
        Some(hls)
    }

    fn output_failed(&self, output: FileOutput, message: &str) {
        tracing::error!(?output, "{message}; the stream goes on without it");
        let message = message.to_string();
        self.gateway
            .registry()
            .update(&self.spec.name, |entry| match output {
                FileOutput::Hls => entry.info.hls_error = Some(message),
                FileOutput::Recording => entry.info.recording_error = Some(message),
            });
    }

    fn write_variant(&mut self, video_codec: Option<String>) {
        let transcode = &self.gateway.config.transcode;
        let video = self.spec.video.is_some();
        let audio = self.spec.audio.is_some();
        let kbps = if video {
            transcode.video_bitrate_kbps
        } else {
            0
        } + if audio { 128 } else { 0 };
        let variant = Variant {
            // The encoders' rates plus a tenth for MPEG-TS overhead.
            bandwidth: kbps as u64 * 1100,
            resolution: video.then_some((transcode.width, transcode.height)),
            framerate: video.then_some(transcode.framerate),
            video_codec,
            audio,
        };
        if let Some(hls) = &mut self.hls
            && let Err(e) = hls.write_variant(&variant)
        {
            tracing::warn!("cannot write the HLS multivariant playlist: {e}");
        }
    }

    async fn drive(
        &mut self,
        pipeline: &StreamPipeline,
        media_events: &mut mpsc::Receiver<MediaEvent>,
        progress: &mut Progress,
    ) -> EndReason {
        let connect_deadline = tokio::time::sleep(CONNECT_TIMEOUT);
        tokio::pin!(connect_deadline);
        let mut stats_tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => {
                    return if self.gateway.shutdown.is_cancelled() {
                        EndReason::Shutdown
                    } else {
                        EndReason::Stopped
                    };
                }
                _ = &mut connect_deadline, if progress.connected_at.is_none() => {
                    return EndReason::ConnectTimeout;
                }
                command = self.commands.recv() => {
                    let Some(command) = command else { return EndReason::PublisherGone };
                    if let Some(reason) = self.on_command(command, pipeline, progress).await {
                        return reason;
                    }
                }
                _ = stats_tick.tick() => self.sample_stats(pipeline).await,
                event = self.peer_events.recv() => {
                    let Some(event) = event else { return EndReason::PublisherGone };
                    if let Some(reason) = self.on_peer_event(event, pipeline, progress).await {
                        return reason;
                    }
                }
                event = media_events.recv() => {
                    let Some(event) = event else { continue };
                    tracing::trace!(?event, "media event");
                    if let Some(reason) = self.on_media_event(event, pipeline, progress).await {
                        return reason;
                    }
                }
            }
        }
    }

    async fn on_peer_event(
        &mut self,
        event: PeerEvent,
        pipeline: &StreamPipeline,
        progress: &mut Progress,
    ) -> Option<EndReason> {
        match event {
            PeerEvent::Candidate(mut candidate) => {
                if candidate.sdp_mid.as_deref().is_none_or(str::is_empty) {
                    candidate.sdp_mid = self.answer_mid.clone();
                    candidate.sdp_mline_index = Some(0);
                }
                let _ = self.events.send(SessionEvent::Candidate(candidate));
            }
            PeerEvent::ConnectionState(state) => {
                tracing::debug!(%state, "peer connection state");
                match state {
                    RTCPeerConnectionState::Connected if progress.connected_at.is_none() => {
                        tracing::info!("publisher connected");
                        progress.connected_at = Some(Instant::now());
                    }
                    RTCPeerConnectionState::Failed => return Some(EndReason::IceFailed),
                    RTCPeerConnectionState::Closed => return Some(EndReason::PublisherGone),
                    _ => {}
                }
            }
            PeerEvent::Track(track) => {
                let input = if track.is_video {
                    pipeline.video_input()
                } else {
                    pipeline.audio_input()
                };
                let Some(input) = input else {
                    tracing::warn!("ignoring a track the offer did not announce");
                    return None;
                };
                progress.tracks_open += 1;
                let is_video = track.is_video;
                self.peer.receive(track, input);
                if is_video {
                    self.peer.request_keyframe().await;
                    self.plis_sent += 1;
                    progress.last_keyframe_request = Some(Instant::now());
                }
            }
            PeerEvent::TrackEnded => {
                progress.tracks_open = progress.tracks_open.saturating_sub(1);
                if progress.tracks_open == 0 {
                    return Some(EndReason::PublisherGone);
                }
            }
        }
        None
    }

    async fn on_media_event(
        &mut self,
        event: MediaEvent,
        pipeline: &StreamPipeline,
        progress: &mut Progress,
    ) -> Option<EndReason> {
        match event {
            MediaEvent::KeyframeRequested => {
                let due = progress
                    .last_keyframe_request
                    .is_none_or(|at| at.elapsed() >= KEYFRAME_REQUEST_INTERVAL);
                if due {
                    tracing::debug!("asking the publisher for a key frame");
                    self.peer.request_keyframe().await;
                    self.plis_sent += 1;
                    progress.last_keyframe_request = Some(Instant::now());
                }
            }
            // With RTP on, `live` waits for the RTP output, so that the SDP file is
            // served as soon as a publisher hears `live`.
            MediaEvent::VideoEncoded { codec } => {
                self.write_variant(codec);
                if !self.spec.outputs.rtp {
                    self.went_live(progress);
                }
            }
            MediaEvent::AudioFlowing => {
                if self.spec.video.is_none() && !self.spec.outputs.rtp {
                    self.went_live(progress);
                }
            }
            MediaEvent::VideoRtpReady {
                profile_level_id,
                sprop_parameter_sets,
            } => {
                if let Some(at) = progress.connected_at {
                    tracing::info!(
                        ms = at.elapsed().as_millis() as u64,
                        "first H.264 RTP packet out after ICE connected"
                    );
                }
                self.video_rtp = Some((profile_level_id, sprop_parameter_sets));
                self.sdp_ready(progress);
                self.went_live(progress);
            }
            MediaEvent::AudioRtpReady => {
                if self.spec.video.is_none() {
                    self.sdp_ready(progress);
                    self.went_live(progress);
                }
            }
            MediaEvent::Error { element, message } => {
                tracing::error!(%element, "pipeline error: {message}");
                return Some(EndReason::PipelineError(format!("{element}: {message}")));
            }
            MediaEvent::SegmentsStarted { running_time_ns } => {
                if let Some(hls) = &mut self.hls {
                    hls.segments_started(running_time_ns);
                }
            }
            MediaEvent::SegmentClosed { location, end_ns } => {
                if let Some(hls) = &mut self.hls
                    && let Err(e) = hls.segment_closed(&location, end_ns)
                {
                    tracing::warn!("cannot write the HLS playlist: {e}");
                }
            }
            MediaEvent::OutputFailed { output, message } => {
                progress.pending_outputs.retain(|o| *o != output);
                self.output_failed(output, &message);
            }
            MediaEvent::OutputFinished(output) => {
                tracing::debug!(?output, "output finished");
                progress.pending_outputs.retain(|o| *o != output);
                if output == FileOutput::Recording {
                    self.recording_finished(pipeline);
                }
            }
        }
        None
    }

    fn went_live(&mut self, progress: &mut Progress) {
        if progress.live {
            return;
        }
        progress.live = true;
        tracing::info!("stream is live");
        let mut outputs = Outputs::default();
        self.gateway.registry().update(&self.spec.name, |entry| {
            entry.info.state = StreamState::Live;
            outputs = entry.info.outputs.clone();
        });
        let _ = self.events.send(SessionEvent::Live {
            stream: self.spec.name.clone(),
            outputs,
        });
    }

    /// Once the RTP output has started (the video's, when there is video), renders the
    /// SDP file and publishes it.
    fn sdp_ready(&mut self, progress: &mut Progress) {
        if self.spec.video.is_some() && self.video_rtp.is_none() {
            return;
        }
        let rtp = self.gateway.media.rtp();
        let port = rtp.port_base + 4 * self.spec.slot;
        let text = self.render_sdp(self.gateway.config.rtp_host(), port, port + 2);
        if !rtp.sdp_dir.as_os_str().is_empty() {
            let path = rtp.sdp_dir.join(format!("{}.sdp", self.spec.name));
            match std::fs::write(&path, &text) {
                Ok(()) => progress.sdp_written = Some(path),
                Err(e) => tracing::warn!("cannot write {}: {e}", path.display()),
            }
        }
        self.gateway
            .registry()
            .update(&self.spec.name, |entry| entry.sdp = Some(text));
        tracing::info!("SDP ready");
    }

    /// The SDP file for RTP sent to `host` on these ports.
    fn render_sdp(&self, host: IpAddr, video_port: u32, audio_port: u32) -> String {
        sdp::render(&SdpDescription {
            stream: &self.spec.name,
            session_id: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
            host,
            multicast_ttl: self.gateway.media.rtp().multicast_ttl,
            video: self
                .video_rtp
                .clone()
                .map(|(profile_level_id, sprop)| VideoDescription {
                    port: video_port,
                    profile_level_id,
                    sprop_parameter_sets: sprop,
                }),
            audio_port: self.spec.audio.as_ref().map(|_| audio_port),
        })
    }

    /// Fills the stream object with what the outputs will be.
    fn publish_info(&self) {
        let config = &self.gateway.config;
        let transcode = &config.transcode;
        let name = &self.spec.name;
        let video = self.plan.video.as_ref().map(|(input, _)| VideoInfo {
            codec: "H264".into(),
            width: transcode.width,
            height: transcode.height,
            fps: transcode.framerate,
            input_codec: input.codec.name().into(),
        });
        let audio = self.plan.audio.as_ref().map(|_| AudioInfo {
            codec: "opus".into(),
            sample_rate: 48000,
            channels: 2,
        });
        let outputs = &self.spec.outputs;
        let sdp = outputs.rtp.then(|| format!("/streams/{name}/stream.sdp"));
        let hls = outputs
            .hls
            .as_ref()
            .map(|_| format!("/streams/{name}/index.m3u8"));
        let recording = outputs
            .record
            .as_ref()
            .and_then(|r| r.path.file_name().map(|f| f.to_string_lossy().into_owned()));
        self.gateway.registry().update(name, |entry| {
            entry.info.video = video;
            entry.info.audio = audio;
            entry.info.outputs.sdp = sdp;
            entry.info.outputs.hls = hls;
            entry.info.outputs.recording = recording;
        });
    }
}
