//! Signalling: how publishers reach a session, transport-free. `websocket` speaks the
//! gateway's JSON protocol on `/ws`; `whip` speaks WHIP (RFC 9725) on `/whip/{name}`. Both
//! start the same sessions. `auth` says who may publish; `problem` is the one table from
//! errors to statuses and tokens that both, and the HTTP API, answer with.

pub mod auth;
pub mod problem;
pub mod websocket;
pub mod whip;
