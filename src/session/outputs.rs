//! What a session does with its stream's outputs: opens them (RTP, HLS continuing a
//! lingering playlist, the recording) and attaches them to the pipeline, starts and
//! stops recordings (a new file when a passed-through picture changes size), adds RTP
//! destinations, writes the multivariant playlist, ends HLS, and reports an output
//! that failed while the stream goes on.

use crate::events::Event;
use crate::media::output::hls::{HlsOutput, VariantVideo, variant_of};
use crate::media::output::record::{AfterStop, Recording, RecordingError};
use crate::media::output::rtp::RtpOutput;
use crate::media::{FileOutput, OutputSpec, StreamPipeline};
use crate::session::driver::{Progress, Session};
use crate::session::handle::ControlError;
use std::net::IpAddr;

impl Session {
    /// Opens the outputs the configuration asks for: RTP, HLS (continuing a lingering
    /// playlist) and the recording; says what the pipeline must feed.
    pub(super) fn open_outputs(&mut self) -> OutputSpec {
        let gateway = self.gateway.clone();
        let config = &gateway.config;
        let (video, audio) = (self.spec.video.is_some(), self.spec.audio.is_some());
        let mut outputs = OutputSpec {
            rtp: config.rtp.enabled,
            ..OutputSpec::default()
        };
        if config.rtp.enabled {
            self.rtp = Some(RtpOutput::new(
                &self.name,
                self.spec.slot,
                &config.rtp,
                video,
                audio,
            ));
        }
        if config.hls.enabled {
            let lingering = gateway.registry().take_lingering(&self.name);
            match gateway.hls.open(&self.name, lingering) {
                Ok(hls) => {
                    outputs.hls = Some(hls.spec(config.hls.segment_duration_s));
                    let live = hls.live.clone();
                    gateway
                        .registry()
                        .update(&self.name, |entry| entry.hls = Some(live));
                    self.hls = Some(hls);
                }
                Err(e) => {
                    self.output_failed(FileOutput::Hls, &format!("cannot write HLS files: {e}"))
                }
            }
        }
        if self.record {
            match Recording::create(&config.record.dir, &self.name, config.record.format) {
                Ok(recording) => {
                    outputs.record = Some(recording.spec());
                    let _ = self.recording.start(recording);
                }
                Err(e) => self.output_failed(FileOutput::Recording, &e.to_string()),
            }
        }
        outputs
    }

    /// Attaches the opened outputs to the pipeline, before it plays.
    pub(super) fn attach_outputs(&mut self, pipeline: &StreamPipeline) {
        if let Some(rtp) = &self.rtp {
            rtp.attach(pipeline);
        }
        if let (Some(hls), Some(spec)) = (&mut self.hls, &self.spec.outputs.hls) {
            hls.attach(pipeline, spec);
        }
        if let Some(mut recording) = self.recording.take() {
            match recording.attach(pipeline) {
                Ok(()) => {
                    let _ = self.recording.start(recording);
                }
                Err(e) => {
                    recording.discard();
                    let message = format!("cannot start the recording: {e}");
                    self.output_failed(FileOutput::Recording, &message);
                }
            }
        }
    }

    pub(super) fn start_recording(
        &mut self,
        pipeline: &StreamPipeline,
        progress: &mut Progress,
    ) -> Result<String, ControlError> {
        if !self.recording.is_idle() {
            return Err(ControlError::AlreadyRecording);
        }
        let config = &self.gateway.config.record;
        let mut recording = Recording::create(&config.dir, &self.name, config.format)?;
        if let Err(e) = recording.attach(pipeline) {
            recording.discard();
            return Err(RecordingError::Attach(e).into());
        }
        progress.pending_outputs.push(FileOutput::Recording);
        let file = recording.file().to_string();
        let _ = self.recording.start(recording);
        let shown = file.clone();
        self.gateway.registry().update(&self.name, |entry| {
            entry.info.outputs.recording = Some(shown);
            entry.info.recording_error = None;
        });
        Ok(file)
    }

    /// A recording stopped from the control API (or for a new picture size) is complete:
    /// take its branch out, and in the second case go on in a new file.
    pub(super) fn recording_finished(
        &mut self,
        pipeline: &StreamPipeline,
        progress: &mut Progress,
    ) {
        let Some((recording, then)) = self.recording.finished() else {
            return;
        };
        self.gateway.events.emit(self.finished_event(&recording));
        let file = recording.detach(pipeline);
        tracing::info!(%file, "recording stopped");
        self.gateway
            .registry()
            .update(&self.name, |entry| entry.info.outputs.recording = None);
        match then {
            AfterStop::Answer(reply) => {
                let _ = reply.send(Ok(file));
            }
            AfterStop::RollOver => {
                if let Err(e) = self.start_recording(pipeline, progress) {
                    self.output_failed(FileOutput::Recording, &e.to_string());
                }
            }
        }
    }

    /// The recording's output failed (a full disk): its branch goes, whoever waits for
    /// its stop is told why, and a new recording may be started.
    pub(super) fn recording_failed(&mut self, pipeline: &StreamPipeline, message: &str) {
        let Some((recording, reply)) = self.recording.failed() else {
            return;
        };
        recording.stop();
        let file = recording.detach(pipeline);
        tracing::warn!(%file, "the recording is cut off");
        self.gateway
            .registry()
            .update(&self.name, |entry| entry.info.outputs.recording = None);
        if let Some(reply) = reply {
            let failed = RecordingError::Failed(message.to_string());
            let _ = reply.send(Err(ControlError::Recording(failed)));
        }
    }

    pub(super) fn add_rtp_destination(
        &mut self,
        pipeline: &StreamPipeline,
        host: IpAddr,
        video_port: u16,
        audio_port: u16,
    ) -> Result<crate::stream::RtpDestination, ControlError> {
        let limit = self.gateway.config.limits.max_rtp_destinations;
        let Some(rtp) = &mut self.rtp else {
            return Err(ControlError::NoRtpOutput);
        };
        let destination = rtp.add_destination(pipeline, (host, video_port, audio_port), limit)?;
        self.publish_destinations();
        Ok(destination)
    }

    pub(super) fn publish_destinations(&self) {
        let destinations = self
            .rtp
            .as_ref()
            .map(|rtp| rtp.destinations().to_vec())
            .unwrap_or_default();
        self.gateway.registry().update(&self.name, |entry| {
            entry.info.rtp_destinations = destinations
        });
    }

    /// Closes the playlist with ENDLIST and hands the HLS output back.
    pub(super) fn end_hls(&mut self) -> Option<HlsOutput> {
        let mut hls = self.hls.take()?;
        hls.end();
        Some(hls)
    }

    pub(super) fn output_failed(&self, output: FileOutput, message: &str) {
        tracing::error!(?output, "{message}; the stream goes on without it");
        let message = message.to_string();
        self.gateway
            .registry()
            .update(&self.name, |entry| match output {
                FileOutput::Hls => entry.info.hls_error = Some(message),
                FileOutput::Recording => entry.info.recording_error = Some(message),
            });
    }

    pub(super) fn write_variant(&mut self, video_codec: Option<String>) {
        let video = match (&self.spec.video, self.spec.video_passthrough) {
            (None, _) => VariantVideo::None,
            (Some(_), false) => VariantVideo::Encoded,
            (Some(_), true) => VariantVideo::PassedThrough(self.input_size),
        };
        let variant = variant_of(
            &self.gateway.config.transcode,
            video,
            self.spec.audio.is_some(),
            video_codec,
        );
        if let Some(hls) = &mut self.hls {
            hls.write_variant(&variant);
        }
    }

    /// The `recording.finished` event of a recording whose file is complete.
    pub(super) fn finished_event(&self, recording: &Recording) -> Event {
        let (file, bytes) = (recording.file(), recording.bytes());
        Event::recording_finished(&self.name, file, bytes, recording.duration())
    }
}
