//! The outputs of a stream's pipeline, each owning its whole life: what it adds to the
//! pipeline, its files, and how it finishes. The session asks them; the pipeline reports
//! what happens to them as [`crate::media::MediaEvent`]s.
//!
//! - `rtp`: H.264 and Opus RTP to the port slot and extra destinations; the SDP file;
//! - `hls`: segments, playlists, the stream's directory, lingering after the end;
//! - `record`: recording files, the branch that writes one, the listing.

pub mod hls;
pub mod record;
pub mod rtp;
