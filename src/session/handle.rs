//! How others talk to a running session: a cloneable [`SessionHandle`] that sends
//! [`SessionCommand`]s (with a `oneshot` for answers), and the [`SessionEvent`]s a session
//! tells its signalling connection.

use crate::media::output::record::RecordingError;
use crate::media::output::rtp::DestinationError;
use crate::name::StreamName;
use crate::stream::{EndReason, Outputs, RtpDestination};
use std::net::IpAddr;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use webrtc::peer_connection::RTCIceCandidateInit;

/// Longest wait for a session to answer a command.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a session tells its signalling connection.
#[derive(Debug, Clone)]
pub enum SessionEvent {
    Candidate(RTCIceCandidateInit),
    Live {
        stream: StreamName,
        outputs: Outputs,
    },
    Ended {
        stream: StreamName,
        reason: EndReason,
    },
}

/// Why a control command was refused or failed; `signalling::problem` gives each its
/// status.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The session ended before it could answer.
    #[error("the stream has ended")]
    Ended,
    #[error("the stream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the stream is not being recorded")]
    NotRecording,
    #[error("the stream is already being recorded")]
    AlreadyRecording,
    #[error(transparent)]
    Recording(#[from] RecordingError),
    #[error("RTP output is disabled (rtp.enabled = false)")]
    NoRtpOutput,
    #[error(transparent)]
    Destination(#[from] DestinationError),
}

/// Answers to control commands: a result or why not.
pub type Reply<T> = oneshot::Sender<Result<T, ControlError>>;

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
    pub stream: StreamName,
    commands: mpsc::Sender<SessionCommand>,
}

impl SessionHandle {
    pub(super) fn new(stream: StreamName, commands: mpsc::Sender<SessionCommand>) -> Self {
        Self { stream, commands }
    }

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
    ) -> Result<T, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| ControlError::Ended)?;
        match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ControlError::Ended),
            Err(_) => Err(ControlError::Timeout(ANSWER_TIMEOUT)),
        }
    }
}
