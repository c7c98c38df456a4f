//! The HTTP server (axum), split by concern:
//!
//! - `router`: the routes, their layers, and the state they share (`state`);
//! - `error`: API errors as JSON `{"error", "message"}`, statuses from
//!   `signalling::problem`;
//! - `auth`: the read and admin tokens;
//! - `media_files`: SDP files, HLS playlists and segments, recordings, hls.js;
//! - `control`: the stream API, the control API and the metrics;
//! - `whip`: WHIP ingest over HTTP; `websocket`: the `/ws` socket adapter;
//! - `forward`: in a cluster, requests for other nodes' streams forwarded to them,
//!   signed with `cluster.secret`, and forwarded requests checked for that signature;
//! - `gather`: lists (`/api/streams`, `/recordings`) gathered from every node, and a
//!   recording not here asked of the others;
//! - `placement`: a publisher that reaches a full node placed on the node with most
//!   room;
//! - `ice_servers`: `/api/ice-servers`, a publisher's ICE servers (TURN credentials
//!   minted for it) behind the publish token;
//! - `serve`: the accept loop, bounded in connections and time, HTTP and HTTPS.
//!
//! Handlers only translate between HTTP and `signalling` or `session`; nothing imports
//! this module.

mod auth;
mod control;
mod error;
mod forward;
mod gather;
mod ice_servers;
mod media_files;
mod placement;
mod router;
mod serve;
mod state;
mod websocket;
mod whip;

pub use router::router;
pub use serve::{ConnectionLimits, serve};
