//! webrtc-gateway: a browser publishes over WebRTC; players that do not speak WebRTC get
//! H.264 RTP with an SDP file. See README.md, "Architecture", for the module map.

#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod gateway;
pub mod http;
pub mod media;
pub mod metrics;
pub mod registry;
pub mod session;
pub mod signalling;
pub mod tls;
