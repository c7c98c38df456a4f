//! HLS as its players see it: the media and multivariant playlists as plain data
//! ([`playlist`]), and a live stream's playlist and low-latency parts in memory, shared
//! between the pipeline that adds to them and the HTTP requests that read and wait on
//! them ([`live`]). No GStreamer, no I/O but the directory a playlist is written to: the
//! registry holds a stream's [`live::LiveHls`], the media layer fills it, HTTP serves it.

pub mod live;
pub mod playlist;
