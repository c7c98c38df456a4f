//! Real servers beside the gateway in tests (Varnish, an S3 store, Redis, HAProxy), from
//! the test kit: each on a free loopback port in a directory of its own, stopped with
//! SIGTERM (then SIGKILL) when dropped. A server that does not start fails the test with
//! its log.

use webrtc_gateway_testkit::servers;

pub use webrtc_gateway_testkit::servers::{S3_ACCESS_KEY, S3_BUCKET, S3_SECRET_KEY, Server};

fn started(server: Result<Server, webrtc_gateway_testkit::Error>) -> Server {
    server.unwrap_or_else(|e| panic!("{e}"))
}

/// Varnish from Debian with the README's configuration in front of `backend_port`.
pub fn varnish(backend_port: u16) -> Server {
    started(servers::varnish(backend_port))
}

/// An S3-compatible store (`s3s-fs`) with one bucket, `S3_BUCKET`, its objects plain
/// files under `dir/data/<bucket>/`.
pub fn s3_store() -> Server {
    started(servers::s3_store())
}

/// Redis from Debian, on loopback, keeping nothing on disk, with `password` required.
pub fn redis(password: &str) -> Server {
    started(servers::redis(Some(password)))
}

/// Redis speaking only TLS (a self-signed certificate), with `password` required.
pub fn redis_tls(password: &str) -> Server {
    started(servers::redis_tls(password))
}

/// HAProxy from Debian with the README's configuration in front of `backends`.
pub fn haproxy(backends: &[u16]) -> Server {
    started(servers::haproxy(backends))
}
