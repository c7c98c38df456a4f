//! The test publisher's library: what `webrtc-gateway-publish` and the benchmark's
//! synthetic publishers share (`client`).

#![forbid(unsafe_code)]

pub mod client;
