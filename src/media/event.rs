//! What a stream's pipeline reports to the task that owns it.

use crate::media::spec::FileOutput;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;

/// What a stream's pipeline reports to the task that owns it.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// The depayloader lost data it cannot repair and needs a key frame.
    KeyframeRequested,
    /// A muxer needs a key frame at this running time, `wait` from now (pass-through:
    /// the publisher makes every key frame). Bounded: one per segment or recording start.
    KeyframeDue {
        running_time_ns: u64,
        wait: std::time::Duration,
    },
    /// The first H.264 frame left the encoder; `codec` is `avc1.PPCCLL` from its SPS.
    VideoEncoded { codec: Option<String> },
    /// The first Opus frame left the depayloader.
    AudioFlowing,
    /// The H.264 RTP output started; its parameters describe it in SDP.
    VideoRtpReady {
        profile_level_id: String,
        sprop_parameter_sets: String,
    },
    /// The Opus RTP output started.
    AudioRtpReady,
    /// The publisher's pictures have this size, from now on (the first one, or a change).
    InputSize { width: u32, height: u32 },
    /// A picture larger than the limit arrived; it was not decoded.
    InputTooLarge { width: u32, height: u32 },
    /// An element failed; the stream cannot go on.
    Error { element: String, message: String },
    /// The first data reached the HLS output, at this running time.
    SegmentsStarted { running_time_ns: u64 },
    /// An HLS segment file is complete; it ends at this running time.
    SegmentClosed { location: PathBuf, end_ns: u64 },
    /// A file output failed (a full disk, say); the stream and its other outputs go on.
    OutputFailed { output: FileOutput, message: String },
    /// The pictures changed size, which the recording's file cannot describe: nothing of
    /// the new size was written to it; it is to be finished and the recording to go on in
    /// a new file.
    RecordingSizeChanged,
    /// A file output received the end of the stream and is complete.
    OutputFinished(FileOutput),
}

/// Where a pipeline's threads report [`MediaEvent`]s. No event is ever dropped: the
/// queue is unbounded, and the one event a pipeline can raise without end, a key-frame
/// request (a lossy publisher makes one per lost packet), is coalesced: at most one waits
/// in the queue at a time. Every other event happens a bounded number of times per file
/// or per stream. Cheap to clone; sending never blocks a streaming thread.
#[derive(Debug, Clone)]
pub struct MediaEvents {
    queue: mpsc::UnboundedSender<MediaEvent>,
    keyframe_pending: Arc<AtomicBool>,
}

/// The owner's end of [`MediaEvents`].
#[derive(Debug)]
pub struct MediaEventReceiver {
    queue: mpsc::UnboundedReceiver<MediaEvent>,
    keyframe_pending: Arc<AtomicBool>,
}

/// A new pair of ends for one pipeline's events.
pub fn media_events() -> (MediaEvents, MediaEventReceiver) {
    let (queue, receiver) = mpsc::unbounded_channel();
    let keyframe_pending = Arc::new(AtomicBool::new(false));
    (
        MediaEvents {
            queue,
            keyframe_pending: keyframe_pending.clone(),
        },
        MediaEventReceiver {
            queue: receiver,
            keyframe_pending,
        },
    )
}

impl MediaEvents {
    /// Queues `event`; a key-frame request is queued only when none is waiting.
    pub fn send(&self, event: MediaEvent) {
        if event == MediaEvent::KeyframeRequested
            && self.keyframe_pending.swap(true, Ordering::AcqRel)
        {
            return;
        }
        // Fails only once the owner has gone, when nobody needs the event.
        let _ = self.queue.send(event);
    }
}

impl MediaEventReceiver {
    /// The next event; `None` once every sender has gone.
    pub async fn recv(&mut self) -> Option<MediaEvent> {
        let event = self.queue.recv().await;
        if event == Some(MediaEvent::KeyframeRequested) {
            self.keyframe_pending.store(false, Ordering::Release);
        }
        event
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<MediaEvent> {
        let event = self.queue.try_recv().ok();
        if event == Some(MediaEvent::KeyframeRequested) {
            self.keyframe_pending.store(false, Ordering::Release);
        }
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn key_frame_requests_coalesce_and_nothing_else_is_dropped() {
        let (events, mut receiver) = media_events();
        for k in 0..10_000u64 {
            events.send(MediaEvent::KeyframeRequested);
            if k % 1000 == 0 {
                events.send(MediaEvent::SegmentClosed {
                    location: format!("segment{k}.ts").into(),
                    end_ns: k,
                });
            }
        }
        events.send(MediaEvent::OutputFinished(FileOutput::Hls));
        drop(events);
        let mut received = Vec::new();
        while let Some(event) = receiver.recv().await {
            received.push(event);
        }
        let requests = received
            .iter()
            .filter(|e| **e == MediaEvent::KeyframeRequested)
            .count();
        assert_eq!(requests, 1, "{received:?}");
        let segments = received
            .iter()
            .filter(|e| matches!(e, MediaEvent::SegmentClosed { .. }))
            .count();
        assert_eq!(segments, 10);
        assert_eq!(
            received.last(),
            Some(&MediaEvent::OutputFinished(FileOutput::Hls))
        );
        // Once read, a new request is queued again.
        let (events, mut receiver) = media_events();
        events.send(MediaEvent::KeyframeRequested);
        assert_eq!(receiver.try_recv(), Some(MediaEvent::KeyframeRequested));
        events.send(MediaEvent::KeyframeRequested);
        assert_eq!(receiver.try_recv(), Some(MediaEvent::KeyframeRequested));
    }
}
