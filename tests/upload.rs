//! Recordings in object storage: a real S3-compatible server (`s3s-fs`, which checks
//! SigV4 signatures) on a free loopback port; its objects are plain files, read back
//! and decoded by ffprobe.

mod common;

use common::fetch::ffprobe;
use common::servers::{S3_ACCESS_KEY, S3_BUCKET, S3_SECRET_KEY, Server, s3_store};
use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

const LIVE_TIMEOUT: Duration = Duration::from_secs(30);
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(60);

fn credentials(secret: &str) -> [(&str, &str); 3] {
    [
        ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("AWS_REGION", "us-east-1"),
    ]
}

/// A gateway recording in `format` to `rec/`, uploading to the store's bucket under
/// `archive/`; `extra` TOML merged over it.
fn gateway(store: &Server, format: &str, secret: &str, extra: &str) -> TestGateway {
    TestGateway::start_env(
        &format!(
            "[record]\nenabled = true\ndir = \"rec\"\nformat = \"{format}\"\n\
             upload_url = \"s3://{S3_BUCKET}/archive\"\n\
             upload_endpoint = \"http://127.0.0.1:{}\"\n{extra}",
            store.port
        ),
        &credentials(secret),
    )
}

/// Waits until every recording of `stream` is uploaded; their entries.
fn wait_uploaded(gateway: &TestGateway, stream: &str, count: usize) -> Vec<Value> {
    eventually(UPLOAD_TIMEOUT, || {
        let listed = gateway.recordings_of(stream);
        (listed.len() == count && listed.iter().all(|r| r["uploaded"].is_string()))
            .then_some(listed)
    })
    .unwrap_or_else(|| {
        panic!(
            "not uploaded: {:?}\n{}",
            gateway.recordings_of(stream),
            gateway.log()
        )
    })
}

/// Where the store keeps an uploaded recording's object.
fn object(store: &Server, file: &str) -> PathBuf {
    store
        .dir
        .path()
        .join("data")
        .join(S3_BUCKET)
        .join("archive")
        .join(file)
}

/// How far `path` plays: ffmpeg decodes it whole, and its last packet's time.
fn decoded_seconds(path: &std::path::Path) -> f64 {
    let output = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The last packet's time: a streamable Matroska file states no duration.
    let probe = ffprobe(path, &["-show_entries", "packet=pts_time"]);
    probe
        .lines()
        .filter_map(|l| l.split("pts_time=").nth(1)?.trim().parse::<f64>().ok())
        .fold(None, |max: Option<f64>, t| {
            Some(max.map_or(t, |m| m.max(t)))
        })
        .unwrap_or_else(|| panic!("no packets: {probe}"))
}

/// Publishes `stream` for about `seconds`, then unpublishes.
fn publish_for(gateway: &TestGateway, stream: &str, seconds: u64) {
    let mut publisher = Publisher::start(gateway, stream, &[]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    std::thread::sleep(Duration::from_secs(seconds));
    publisher.kill();
    gateway.wait_stream_ended(stream, Duration::from_secs(15));
}

#[test]
fn recordings_are_uploaded_whole_in_every_format() {
    let store = s3_store();
    for format in ["mp4", "mkv", "ts"] {
        let gateway = gateway(&store, format, S3_SECRET_KEY, "");
        let stream = format!("up-{format}");
        publish_for(&gateway, &stream, 5);
        let listed = wait_uploaded(&gateway, &stream, 1);
        let file = listed[0]["file"].as_str().unwrap();
        assert_eq!(
            listed[0]["uploaded"],
            format!("s3://{S3_BUCKET}/archive/{file}"),
            "{listed:?}"
        );
        assert!(listed[0]["upload_error"].is_null(), "{listed:?}");
        assert_eq!(listed[0]["local"], true);
        // The object is the recording, byte for byte, and decodes to its full length.
        let local = gateway.dir.path().join("rec").join(file);
        let uploaded = object(&store, file);
        assert_eq!(
            std::fs::read(&uploaded).unwrap(),
            std::fs::read(&local).unwrap(),
            "{format}: the object differs from the recording"
        );
        let seconds = decoded_seconds(&uploaded);
        assert!(seconds >= 4.0, "{format}: {seconds} s");
        let metrics = gateway.get("/metrics").text().unwrap();
        assert!(
            metrics.contains("webrtc_gateway_uploads_completed_total 1"),
            "{metrics}"
        );
    }
}

#[test]
fn a_long_recording_is_uploaded_while_it_is_written() {
    let store = s3_store();
    // Noise at a high bitrate, so that the recording fills its 5 MiB parts within
    // seconds. MP4: its header, in the first part, is finished at the end.
    let gateway = gateway(
        &store,
        "mp4",
        S3_SECRET_KEY,
        "[transcode]\nwidth = 1280\nheight = 720\nvideo_bitrate_kbps = 30000",
    );
    let mut publisher = Publisher::start(&gateway, "long", &["--pattern", "snow"]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    // Parts go up while the stream is recorded.
    let uploading = eventually(Duration::from_secs(90), || {
        let metrics = gateway.get("/metrics").text().ok()?;
        let bytes: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("webrtc_gateway_upload_bytes_total "))?
            .trim()
            .parse()
            .ok()?;
        (bytes >= 5 * 1024 * 1024).then_some(bytes)
    });
    let listed = gateway.recordings_of("long");
    assert!(
        uploading.is_some(),
        "nothing uploaded while recording: {listed:?}\n{}",
        gateway.log()
    );
    assert_eq!(listed[0]["finished"], false, "{listed:?}");
    assert!(listed[0]["uploaded"].is_null());
    publisher.kill();
    gateway.wait_stream_ended("long", Duration::from_secs(15));
    let listed = wait_uploaded(&gateway, "long", 1);
    let file = listed[0]["file"].as_str().unwrap();
    let local = gateway.dir.path().join("rec").join(file);
    assert!(std::fs::metadata(&local).unwrap().len() > 10 * 1024 * 1024);
    assert_eq!(
        std::fs::read(object(&store, file)).unwrap(),
        std::fs::read(&local).unwrap()
    );
}

#[test]
fn a_store_that_stops_mid_recording_gets_it_once_back() {
    let mut store = s3_store();
    let gateway = gateway(&store, "mp4", S3_SECRET_KEY, "");
    let mut publisher = Publisher::start(&gateway, "outage", &[]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    store.stop();
    std::thread::sleep(Duration::from_secs(3));
    // The stream goes on, unharmed, while the store is away.
    let stream = gateway.stream("outage").unwrap();
    assert_eq!(stream["state"], "live");
    publisher.kill();
    gateway.wait_stream_ended("outage", Duration::from_secs(15));
    let failed = eventually(Duration::from_secs(30), || {
        let listed = gateway.recordings_of("outage");
        listed[0]["upload_error"].is_string().then_some(listed)
    });
    assert!(failed.is_some(), "{:?}", gateway.recordings_of("outage"));
    let listed = failed.unwrap();
    assert!(listed[0]["uploaded"].is_null(), "{listed:?}");
    store.start_again().unwrap();
    let listed = wait_uploaded(&gateway, "outage", 1);
    assert!(listed[0]["upload_error"].is_null(), "{listed:?}");
    let file = listed[0]["file"].as_str().unwrap();
    assert!(decoded_seconds(&object(&store, file)) >= 2.0);
}

#[test]
fn a_recording_cut_short_by_sigkill_is_uploaded_at_the_next_start() {
    let store = s3_store();
    let mut gateway = gateway(&store, "mp4", S3_SECRET_KEY, "");
    let mut publisher = Publisher::start(&gateway, "crash", &[]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    std::thread::sleep(Duration::from_secs(5));
    gateway.signal("-KILL");
    publisher.kill();
    gateway.restart();
    let listed = wait_uploaded(&gateway, "crash", 1);
    let file = listed[0]["file"].as_str().unwrap();
    let local = gateway.dir.path().join("rec").join(file);
    assert_eq!(
        std::fs::read(object(&store, file)).unwrap(),
        std::fs::read(&local).unwrap()
    );
    // What the gateway wrote before it was killed plays (its fragments).
    assert!(decoded_seconds(&object(&store, file)) >= 3.0);
}

#[test]
fn wrong_credentials_say_so_once_and_keep_the_recording() {
    let store = s3_store();
    let gateway = gateway(&store, "mp4", "not-the-secret", "");
    publish_for(&gateway, "denied", 3);
    let listed = eventually(Duration::from_secs(30), || {
        let listed = gateway.recordings_of("denied");
        listed[0]["upload_error"].is_string().then_some(listed)
    })
    .unwrap_or_else(|| panic!("{:?}\n{}", gateway.recordings_of("denied"), gateway.log()));
    assert!(listed[0]["uploaded"].is_null(), "{listed:?}");
    let file = listed[0]["file"].as_str().unwrap().to_string();
    // Not tried again and again: one line in the log for the recording.
    std::thread::sleep(Duration::from_secs(4));
    let log = gateway.log();
    let said = log
        .lines()
        .filter(|l| l.contains(&file) && l.contains("refuses the recording's upload"))
        .count();
    assert_eq!(said, 1, "{log}");
    assert!(gateway.dir.path().join("rec").join(&file).exists());
    assert!(!object(&store, &file).exists());
}

#[test]
fn without_keep_local_the_file_goes_once_its_upload_is_verified() {
    let store = s3_store();
    let gateway = gateway(&store, "mkv", S3_SECRET_KEY, "keep_local = false");
    publish_for(&gateway, "away", 4);
    let listed = wait_uploaded(&gateway, "away", 1);
    let file = listed[0]["file"].as_str().unwrap().to_string();
    let gone = eventually(Duration::from_secs(20), || {
        (!gateway.dir.path().join("rec").join(&file).exists()).then_some(())
    });
    assert!(gone.is_some(), "the local file stays");
    // Still listed, with its object, no longer here.
    let listed = gateway.recordings_of("away");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["local"], false, "{listed:?}");
    assert!(listed[0]["uploaded"].is_string());
    assert!(decoded_seconds(&object(&store, &file)) >= 3.0);
    assert_eq!(
        gateway.get(&format!("/recordings/{file}")).status(),
        404,
        "served though deleted"
    );
}
