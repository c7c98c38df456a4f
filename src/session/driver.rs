//! The session task: one publisher's peer connection and its stream's pipeline, driven
//! by `select!` over the command inbox, peer events, media events, a statistics tick and
//! the stop token. It asks the outputs (`media::output`) to do their work and keeps the
//! registry's view of the stream up to date; it ends with the reason and the HLS output,
//! which lingers.

use crate::blocking::blocking;
use crate::config::{TranscodeConfig, TranscodeMode};
use crate::gateway::Gateway;
use crate::media::output::hls::HlsOutput;
use crate::media::output::record::{Recording, RecordingState};
use crate::media::output::rtp::DestinationError;
use crate::media::output::rtp::RtpOutput;
use crate::media::{
    FileOutput, MediaEvent, MediaEventReceiver, OutputSpec, StreamPipeline, StreamSpec, VideoCodec,
};
use crate::name::StreamName;
use crate::session::handle::{ControlError, Reply, SessionCommand, SessionEvent};
use crate::session::jitter::JitterLatency;
use crate::session::keyframes::{self, KeyframeSchedule};
use crate::session::offer::OfferPlan;
use crate::session::peer::{Peer, PeerEvent};
use crate::stream::{EndReason, StreamStats};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use webrtc::peer_connection::RTCPeerConnectionState;

/// How long a publisher may take to connect before it is given up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the file outputs may take to finish their files at the end.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the statistics are sampled.
const STATS_INTERVAL: Duration = Duration::from_secs(1);

pub(super) struct Session {
    pub(super) gateway: Arc<Gateway>,
    pub(super) name: StreamName,
    pub(super) spec: StreamSpec,
    pub(super) plan: OfferPlan,
    pub(super) peer: Peer,
    pub(super) peer_events: mpsc::Receiver<PeerEvent>,
    pub(super) commands: mpsc::Receiver<SessionCommand>,
    pub(super) events: mpsc::UnboundedSender<SessionEvent>,
    pub(super) stop: CancellationToken,
    pub(super) answer_mid: Option<String>,
    pub(super) rtp: Option<RtpOutput>,
    /// The stream's HLS files, when HLS is on; handed back when the session ends.
    pub(super) hls: Option<HlsOutput>,
    /// Whether the stream is recorded from its start (`record.enabled`, or the publish
    /// hook's word).
    pub(super) record: bool,
    /// The recording, and who waits for its stop to be answered.
    pub(super) recording: RecordingState<Recording, Reply<String>>,
    pub(super) plis_sent: u64,
    /// The publisher's picture size, once known.
    pub(super) input_size: Option<(u32, u32)>,
    /// Remote candidates taken so far, and those ignored past the limit.
    pub(super) candidates_taken: usize,
    pub(super) candidates_ignored: u64,
    /// The previous statistics sample, for rates.
    pub(super) last_sample: Option<(Instant, StreamStats)>,
    /// How long the jitter buffers wait, from the publisher's round trip.
    pub(super) jitter: JitterLatency,
}

/// What the running session has seen so far.
#[derive(Default)]
pub(super) struct Progress {
    pub(super) connected_at: Option<Instant>,
    pub(super) live: bool,
    pub(super) tracks_open: usize,
    /// When to ask the publisher for key frames.
    pub(super) keyframes: KeyframeSchedule,
    /// RTP packets counted at the last check, and when that count last grew; none
    /// before the first packet.
    pub(super) packets_seen: Option<(u64, Instant)>,
    /// File outputs still to finish their files.
    pub(super) pending_outputs: Vec<FileOutput>,
}

/// When the next key-frame request is due (far ahead when none is).
fn keyframe_due_at(progress: &Progress) -> tokio::time::Instant {
    progress
        .keyframes
        .next_due()
        .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600))
}

/// Whether the publisher's video goes to the outputs without transcoding: H.264 under
/// `transcode.mode = "auto"`.
fn passes_through(transcode: &TranscodeConfig, plan: &OfferPlan) -> bool {
    transcode.mode == TranscodeMode::Auto
        && plan
            .video
            .as_ref()
            .is_some_and(|(video, _)| video.codec == VideoCodec::H264)
}

/// Says in the log whether the video passes through, and why not.
fn log_video_path(transcode: &TranscodeConfig, spec: &StreamSpec) {
    let Some(video) = &spec.video else {
        return;
    };
    if spec.video_passthrough {
        tracing::info!("the publisher's H.264 passes through: no decoding, no encoding");
    } else if transcode.mode == TranscodeMode::Always {
        tracing::info!(
            "the publisher's {} is transcoded (transcode.mode = \"always\")",
            video.codec.name()
        );
    } else {
        tracing::info!(
            "the publisher's {} is transcoded: only H.264 passes through",
            video.codec.name()
        );
    }
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        gateway: Arc<Gateway>,
        name: StreamName,
        slot: u32,
        plan: OfferPlan,
        (peer, peer_events): (Peer, mpsc::Receiver<PeerEvent>),
        commands: mpsc::Receiver<SessionCommand>,
        events: mpsc::UnboundedSender<SessionEvent>,
        answer_mid: Option<String>,
    ) -> Self {
        Self {
            spec: StreamSpec {
                name: name.clone(),
                max_input: (
                    gateway.config.limits.max_input_width,
                    gateway.config.limits.max_input_height,
                ),
                slot,
                video: plan.video.as_ref().map(|(v, _)| v.clone()),
                video_passthrough: passes_through(&gateway.config.transcode, &plan),
                audio: plan.audio.as_ref().map(|(a, _)| a.clone()),
                outputs: OutputSpec::default(),
            },
            // Shutdown ends every session.
            stop: gateway.shutdown.child_token(),
            jitter: JitterLatency::new(Duration::from_millis(
                gateway.config.transcode.jitter_buffer_ms.into(),
            )),
            record: gateway.config.record.enabled,
            gateway,
            name,
            plan,
            peer,
            peer_events,
            commands,
            events,
            answer_mid,
            rtp: None,
            hls: None,
            recording: RecordingState::Idle,
            plis_sent: 0,
            input_size: None,
            candidates_taken: 0,
            candidates_ignored: 0,
            last_sample: None,
        }
    }

    /// The offer's candidates: those taken, and those ignored past the limit.
    pub(super) fn remote_candidates(&mut self, taken: usize, ignored: u64) {
        self.candidates_taken = taken;
        self.candidates_ignored = ignored;
    }

    pub(super) async fn run(mut self) -> (EndReason, Option<HlsOutput>) {
        log_video_path(&self.gateway.config.transcode, &self.spec);
        self.spec.outputs = blocking(|| self.open_outputs());
        let pipeline = match self.start_pipeline().await {
            Ok(pipeline) => pipeline,
            Err(reason) => {
                self.peer.close().await;
                return (reason, blocking(|| self.end_hls()));
            }
        };
        self.publish_info();
        let mut progress = Progress::default();
        if self.hls.is_some() {
            progress.pending_outputs.push(FileOutput::Hls);
            if self.spec.video.is_none() {
                blocking(|| self.write_variant(None));
            }
        }
        if self.recording.current().is_some_and(Recording::is_attached) {
            progress.pending_outputs.push(FileOutput::Recording);
        }
        let (pipeline, mut media_events) = pipeline;
        let reason = self
            .drive(&pipeline, &mut media_events, &mut progress)
            .await;
        self.drain(&pipeline, &mut media_events, &mut progress)
            .await;
        pipeline.stop().await;
        self.peer.close().await;
        blocking(|| {
            if let Some(rtp) = &mut self.rtp {
                rtp.finish();
            }
            // A recording still written was finished by the end of the stream.
            if let Some(recording) = self.recording.current().filter(|r| r.is_attached()) {
                self.gateway.events.emit(self.finished_event(recording));
            }
            (reason, self.end_hls())
        })
    }

    /// Builds the pipeline, attaches the outputs and plays it.
    async fn start_pipeline(&mut self) -> Result<(StreamPipeline, MediaEventReceiver), EndReason> {
        let factory = self.gateway.media.clone();
        let spec = self.spec.clone();
        let built = tokio::task::spawn_blocking(move || factory.build(&spec))
            .await
            .map_err(|_| EndReason::InternalError)?;
        let (pipeline, media_events) = built.map_err(|e| {
            tracing::error!("pipeline did not start: {e}");
            EndReason::PipelineError(e.to_string())
        })?;
        blocking(|| self.attach_outputs(&pipeline));
        let played = tokio::task::spawn_blocking(move || pipeline.play().map(|()| pipeline))
            .await
            .map_err(|_| EndReason::InternalError)?;
        let pipeline = played.map_err(|e| {
            tracing::error!("pipeline did not start: {e}");
            EndReason::PipelineError(e.to_string())
        })?;
        Ok((pipeline, media_events))
    }

    async fn drive(
        &mut self,
        pipeline: &StreamPipeline,
        media_events: &mut MediaEventReceiver,
        progress: &mut Progress,
    ) -> EndReason {
        let connect_deadline = tokio::time::sleep(CONNECT_TIMEOUT);
        tokio::pin!(connect_deadline);
        let mut stats_tick = tokio::time::interval(STATS_INTERVAL);
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
                _ = stats_tick.tick() => {
                    if self.media_stopped(progress) {
                        tracing::warn!("no RTP for webrtc.media_timeout_s");
                        return EndReason::NoMedia;
                    }
                    self.sample_stats(pipeline).await;
                    self.keep_keyframe_interval(pipeline, progress).await;
                }
                _ = tokio::time::sleep_until(keyframe_due_at(progress)), if progress.keyframes.next_due().is_some() => {
                    self.keyframe_due(pipeline, progress).await;
                }
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

    async fn on_command(
        &mut self,
        command: SessionCommand,
        pipeline: &StreamPipeline,
        progress: &mut Progress,
    ) -> Option<EndReason> {
        match command {
            SessionCommand::AddCandidate(candidate) => {
                let max = self.gateway.config.limits.max_remote_candidates as usize;
                if self.candidates_taken < max {
                    self.candidates_taken += 1;
                    self.peer.add_candidate(candidate).await;
                } else {
                    if self.candidates_ignored == 0 {
                        tracing::warn!(
                            "remote candidates past limits.max_remote_candidates ignored"
                        );
                    }
                    self.candidates_ignored += 1;
                    self.gateway.metrics.candidates_ignored(1);
                }
            }
            SessionCommand::Stop(reason) => return Some(reason),
            SessionCommand::StartRecording(reply) => {
                let _ = reply.send(blocking(|| self.start_recording(pipeline, progress)));
            }
            SessionCommand::StopRecording(reply) => match self.recording.stop(reply) {
                Ok(cut_off) => {
                    tracing::info!("stopping the recording");
                    if let Some(recording) = cut_off {
                        recording.stop();
                    }
                }
                Err(reply) => {
                    let _ = reply.send(Err(ControlError::NotRecording));
                }
            },
            SessionCommand::AddRtpDestination {
                host,
                video_port,
                audio_port,
                reply,
            } => {
                let added =
                    blocking(|| self.add_rtp_destination(pipeline, host, video_port, audio_port));
                let _ = reply.send(added);
            }
            SessionCommand::RemoveRtpDestination { id, reply } => {
                let result = match &mut self.rtp {
                    Some(rtp) => blocking(|| rtp.remove_destination(pipeline, &id)),
                    None => Err(DestinationError::Unknown(id)),
                }
                .map_err(ControlError::from);
                if result.is_ok() {
                    self.publish_destinations();
                }
                let _ = reply.send(result);
            }
        }
        None
    }

    /// Ends the inputs and waits (at most 2 s) for the file outputs to finish their files.
    async fn drain(
        &mut self,
        pipeline: &StreamPipeline,
        media_events: &mut MediaEventReceiver,
        progress: &mut Progress,
    ) {
        if progress.pending_outputs.is_empty() {
            return;
        }
        pipeline.finish();
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
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
                    self.request_keyframe(progress).await;
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

    /// A key-frame request is due: asks the publisher unless the key frame came.
    async fn keyframe_due(&mut self, pipeline: &StreamPipeline, progress: &mut Progress) {
        let last = pipeline.measurements().last_key_frame();
        if progress.keyframes.fire(tokio::time::Instant::now(), last) {
            tracing::debug!("asking the publisher for a key frame that is due");
            self.request_keyframe(progress).await;
        }
    }

    /// Pass-through: the publisher makes every key frame, and a browser makes none it is
    /// not asked for. Without HLS nothing else asks, so the publisher is asked for one
    /// every `transcode.keyframe_interval_s`, for RTP players that join late and for
    /// recordings; with HLS the muxer asks at each segment boundary, and this asks too
    /// should a segment's key frame not have come (a muxer that missed one, as
    /// isofmp4mux can around a change of picture size, would wait for it for ever).
    async fn keep_keyframe_interval(&mut self, pipeline: &StreamPipeline, progress: &mut Progress) {
        if !self.spec.video_passthrough || progress.connected_at.is_none() {
            return;
        }
        let config = &self.gateway.config;
        let interval = if self.hls.is_some() {
            Duration::from_secs(config.hls.segment_duration_s.into()) + keyframes::REQUEST_INTERVAL
        } else {
            Duration::from_secs(config.transcode.keyframe_interval_s.into())
        };
        let since_key_frame = match (
            pipeline.running_time(),
            pipeline.measurements().last_key_frame(),
        ) {
            (Some(now), Some(last)) => Duration::from_nanos(now.saturating_sub(last)),
            _ => return,
        };
        if progress
            .keyframes
            .overdue(tokio::time::Instant::now(), since_key_frame, interval)
        {
            tracing::debug!(
                ?since_key_frame,
                "no key frame for a while: asking the publisher"
            );
            self.request_keyframe(progress).await;
        }
    }

    async fn request_keyframe(&mut self, progress: &mut Progress) {
        self.peer.request_keyframe().await;
        self.plis_sent += 1;
        progress.keyframes.asked(tokio::time::Instant::now());
    }

    async fn on_media_event(
        &mut self,
        event: MediaEvent,
        pipeline: &StreamPipeline,
        progress: &mut Progress,
    ) -> Option<EndReason> {
        match event {
            MediaEvent::KeyframeRequested => {
                let ask = progress.keyframes.on_loss(
                    tokio::time::Instant::now(),
                    pipeline.running_time(),
                    pipeline.measurements().last_key_frame(),
                );
                if ask {
                    tracing::debug!("asking the publisher for a key frame");
                    self.request_keyframe(progress).await;
                }
            }
            MediaEvent::KeyframeDue {
                running_time_ns,
                wait,
            } => {
                let at = tokio::time::Instant::now() + wait;
                progress.keyframes.on_due(running_time_ns, at);
            }
            // With RTP on, `live` waits for the RTP output, so that the SDP file is
            // served as soon as a publisher hears `live`.
            MediaEvent::VideoEncoded { codec } => {
                blocking(|| self.write_variant(codec));
                if self.rtp.is_none() {
                    self.went_live(progress);
                }
            }
            MediaEvent::AudioFlowing => {
                if self.spec.video.is_none() && self.rtp.is_none() {
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
                let sdp = blocking(|| {
                    self.rtp
                        .as_mut()
                        .and_then(|rtp| rtp.video_ready(profile_level_id, sprop_parameter_sets))
                });
                self.sdp_ready(sdp);
                self.went_live(progress);
            }
            MediaEvent::AudioRtpReady => {
                let sdp = blocking(|| self.rtp.as_mut().and_then(RtpOutput::audio_ready));
                if sdp.is_some() {
                    self.sdp_ready(sdp);
                    self.went_live(progress);
                }
            }
            MediaEvent::InputSize { width, height } => {
                if self.input_size == Some((width, height)) {
                    return None;
                }
                self.input_size = Some((width, height));
                tracing::info!(width, height, "publisher's picture size");
                let passthrough = self.spec.video_passthrough;
                self.gateway.registry().update(&self.name, |entry| {
                    if let Some(video) = &mut entry.info.video {
                        video.input_width = Some(width);
                        video.input_height = Some(height);
                        // Passed through, the output has the publisher's size.
                        if passthrough {
                            (video.width, video.height) = (width, height);
                        }
                    }
                });
            }
            MediaEvent::InputTooLarge { width, height } => {
                tracing::warn!(
                    width,
                    height,
                    "the publisher's pictures are larger than limits.max_input_*"
                );
                return Some(EndReason::InputTooLarge);
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
                    && let Err(e) = blocking(|| hls.segment_closed(pipeline, &location, end_ns))
                {
                    tracing::warn!("cannot write the HLS playlist: {e}");
                }
            }
            MediaEvent::OutputFailed { output, message } => {
                progress.pending_outputs.retain(|o| *o != output);
                self.output_failed(output, &message);
                if output == FileOutput::Recording {
                    blocking(|| self.recording_failed(pipeline, &message));
                }
            }
            MediaEvent::RecordingSizeChanged => {
                if let Some(recording) = self.recording.size_changed() {
                    recording.stop();
                    tracing::info!("the picture size changed: the recording goes on in a new file");
                }
            }
            MediaEvent::OutputFinished(output) => {
                tracing::debug!(?output, "output finished");
                progress.pending_outputs.retain(|o| *o != output);
                if output == FileOutput::Recording {
                    blocking(|| self.recording_finished(pipeline, progress));
                }
            }
        }
        None
    }

    /// Publishes the SDP file in the stream object.
    fn sdp_ready(&self, sdp: Option<String>) {
        if let Some(text) = sdp {
            self.gateway
                .registry()
                .update(&self.name, |entry| entry.sdp = Some(text));
        }
    }

    fn went_live(&mut self, progress: &mut Progress) {
        if progress.live {
            return;
        }
        progress.live = true;
        tracing::info!("stream is live");
        let outputs = self.gateway.registry().live(&self.name).unwrap_or_default();
        self.gateway.events.emit(self.published());
        let _ = self.events.send(SessionEvent::Live {
            stream: self.name.clone(),
            outputs,
        });
    }
}
