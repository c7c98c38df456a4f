//! Timing: key frames asked of the publisher only when needed.

mod common;

use common::{Publisher, TestGateway};
use std::time::{Duration, Instant};

#[test]
fn a_clean_publication_asks_for_key_frames_only_at_start() {
    // HLS on, 1 s segments: each segment's key unit must come from the encoder.
    let gateway =
        TestGateway::start("[hls]\nsegment_duration_s = 1\n[transcode]\nkeyframe_interval_s = 1");
    let mut publisher = Publisher::start(&gateway, "clean", &[]);
    publisher.wait_for("live", Duration::from_secs(30));
    let live = Instant::now();
    let stats = || gateway.stream("clean").expect("the stream is listed")["stats"].clone();
    // 30 s of a clean publication: at least 20 segments made.
    let segments = common::eventually(Duration::from_secs(90), || {
        let stats = stats();
        let segments = stats["hls_segments"].as_u64().unwrap_or(0);
        (live.elapsed() >= Duration::from_secs(30) && segments >= 20).then_some(segments)
    })
    .expect("20 HLS segments within 90 s");
    let plis = stats()["plis_sent"].as_u64().unwrap();
    eprintln!(
        "{plis} key-frame requests in {:?}, {segments} segments",
        live.elapsed()
    );
    assert!(
        plis <= 2,
        "{plis} key-frame requests over a clean link in {:?} ({segments} segments)",
        live.elapsed()
    );
}
