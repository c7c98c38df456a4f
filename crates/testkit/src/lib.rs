//! The test kit that the gateway's integration tests (`tests/common`) and its benchmark
//! (`crates/bench`) share: one process type (spawned with its log captured, waited for
//! on its port, signalled, killed when dropped), free ports, the configurations the
//! README shows (Varnish, HAProxy), the servers beside the gateway (Redis, HAProxy,
//! Varnish, s3s-fs, coturn), aiortc as a WHIP client, ffmpeg and ffprobe, an HLS
//! playlist reader, and networks of namespaces (NATs, firewalls) for publishers that are
//! not on loopback. It knows nothing of the gateway's code: only its files and its
//! programs.

#![forbid(unsafe_code)]

pub mod media;
pub mod netns;
pub mod paths;
pub mod playlist;
pub mod ports;
pub mod process;
pub mod python;
pub mod readme;
pub mod servers;

pub use paths::{binary, publisher_command, root, root_path};
pub use ports::{free_tcp_port, free_udp_port, free_udp_range};
pub use process::{Process, Signal};

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Why the kit could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot start {what} ({hint}): {source}")]
    Spawn {
        what: String,
        hint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} exited with {status} before it was ready; its log:\n{log}")]
    Exited {
        what: String,
        status: ExitStatus,
        log: String,
    },
    #[error("{what} did not listen on port {port} within {timeout:?}; its log:\n{log}")]
    NotListening {
        what: String,
        port: u16,
        timeout: Duration,
        log: String,
    },
    #[error("{what} was not ready within {timeout:?}; its log:\n{log}")]
    NotReady {
        what: String,
        timeout: Duration,
        log: String,
    },
    #[error("{what} is not running")]
    NotRunning { what: String },
    #[error(
        "{name} not found beside {beside}: run `cargo build --workspace --bins` first (`--release` too for the benchmark)"
    )]
    MissingBinary { name: String, beside: PathBuf },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed: {output}")]
    Failed { what: String, output: String },
    #[error("README.md: {0}")]
    Readme(String),
    #[error("a certificate for {what}: {source}")]
    Certificate {
        what: String,
        #[source]
        source: rcgen::Error,
    },
}

impl Error {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

/// Polls `f` every 100 ms until it gives a value or `timeout` passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
