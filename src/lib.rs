//! webrtc-gateway: a browser publishes over WebRTC; players that do not speak WebRTC get
//! H.264 RTP with an SDP file, HLS and recordings. See README.md, "Architecture", for the
//! module map and the rules of which module may import which.

#![forbid(unsafe_code)]

pub mod access;
pub mod blocking;
pub mod cluster;
pub mod config;
pub mod events;
pub mod gateway;
pub mod hls;
pub mod hook_signature;
pub mod http;
pub mod ice_servers;
pub mod media;
pub mod metrics;
pub mod name;
pub mod net;
pub mod registry;
pub mod session;
pub mod signalling;
pub mod stream;
pub mod tls;
pub mod upload;
