//! Sessions: a session is one publisher, its WebRTC peer connection (ICE, DTLS, SRTP by
//! webrtc-rs) and its stream's media pipeline, owned by one task. The same session serves
//! every signalling protocol.
//!
//! - `sessions`: [`Sessions::publish`] starts one; live sessions' handles by name;
//! - `handle`: [`SessionHandle`], its commands and the events a session reports;
//! - `driver`: the task itself, the `select!` loop over commands and events;
//! - `outputs`: what the task does with the outputs: opens and attaches them, recordings,
//!   RTP destinations, the multivariant playlist, failures;
//! - `keyframes`: when to ask the publisher for a key frame (plain data);
//! - `jitter`: how long the jitter buffers wait, from the publisher's round trip (plain data);
//! - `report`: the stream object, its statistics, the media timeout;
//! - `offer`: what an SDP offer asks for; `peer`: the peer connection and its callbacks.

mod driver;
pub mod handle;
mod jitter;
mod keyframes;
pub mod offer;
mod outputs;
mod peer;
mod report;
pub mod sessions;

pub use handle::{ControlError, Reply, SessionCommand, SessionEvent, SessionHandle};
pub use peer::NegotiationError;
pub use sessions::{PublishError, PublishRequest, Sessions};
