//! HLS through a shared cache: Varnish from Debian, with the README's configuration, in
//! front of the gateway. Simulated low-latency viewers (`tests/tools/ll_viewers.py`)
//! and hls.js in Chromium watch through it; the gateway's own count of the HLS requests
//! that reached it says what the cache held together.

mod common;

use common::browser::{Browser, BrowserKind};
use common::fetch::fetch;
use common::servers::{Server, varnish};
use common::*;
use serde_json::{Value, json};
use std::time::Duration;
use webrtc_gateway_testkit::python;

const LIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// The HLS requests that have reached the gateway, by kind.
fn hls_requests(gateway: &TestGateway) -> std::collections::BTreeMap<String, u64> {
    let text = gateway.get("/metrics").text().unwrap();
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("webrtc_gateway_hls_requests_total{kind=\"")?;
            let (kind, value) = rest.split_once("\"} ")?;
            Some((kind.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

fn total(counts: &std::collections::BTreeMap<String, u64>) -> u64 {
    counts.values().sum()
}

/// Runs `viewers` simulated low-latency viewers of `stream` through `cache` for
/// `seconds`; their report.
fn viewers(
    gateway: &TestGateway,
    cache: &Server,
    stream: &str,
    viewers: usize,
    seconds: u32,
) -> Value {
    let output = python::tool(
        "ll_viewers.py",
        &[
            "--base",
            &cache.url(""),
            "--origin",
            &gateway.url(""),
            "--stream",
            stream,
            "--viewers",
            &viewers.to_string(),
            "--seconds",
            &seconds.to_string(),
        ],
    )
    .output()
    .expect(python::HINT);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the viewers failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Waits until the stream's low-latency playlist has a complete segment.
fn wait_for_segments(gateway: &TestGateway, stream: &str) {
    let ready = eventually(LIVE_TIMEOUT, || {
        let text = gateway
            .get(&format!("/streams/{stream}/stream.m3u8"))
            .text()
            .ok()?;
        text.contains("#EXTINF").then_some(())
    });
    assert!(ready.is_some(), "no segment: {}", gateway.log());
}

/// The media sequence number of a playlist.
fn media_sequence(playlist: &str) -> u64 {
    playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no media sequence: {playlist}"))
}

#[test]
fn media_answers_are_made_for_shared_caches() {
    let gateway = TestGateway::start("");
    let mut publisher = Publisher::start(&gateway, "headers", &[]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    wait_for_segments(&gateway, "headers");
    let playlist = fetch(&gateway, "/streams/headers/stream.m3u8");
    let text = playlist.text();
    let msn = media_sequence(&text) + text.matches("#EXTINF").count() as u64;
    let blocking = fetch(
        &gateway,
        &format!("/streams/headers/stream.m3u8?_HLS_msn={msn}&_HLS_part=0"),
    );
    let part = text
        .lines()
        .filter_map(|l| l.split("URI=\"").nth(1)?.split('"').next())
        .rfind(|uri| uri.ends_with(".m4s"))
        .unwrap_or_else(|| panic!("no part: {text}"))
        .to_string();
    let init = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MAP:URI=\""))
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_string();
    let segment = text
        .lines()
        .find(|l| l.ends_with(".m4s") && !l.starts_with('#'))
        .unwrap()
        .to_string();
    let answers = [
        ("index.m3u8", fetch(&gateway, "/streams/headers/index.m3u8")),
        ("stream.m3u8", playlist),
        ("blocking reload", blocking),
        ("part", fetch(&gateway, &format!("/streams/headers/{part}"))),
        (
            "segment",
            fetch(&gateway, &format!("/streams/headers/{segment}")),
        ),
        ("init", fetch(&gateway, &format!("/streams/headers/{init}"))),
    ];
    let mut lifetimes = Vec::new();
    for (what, answer) in &answers {
        assert_eq!(answer.status, 200, "{what}: {}", answer.text());
        // One answer for every origin: nothing in Vary splits a cache by the page.
        assert!(
            answer.headers.get("vary").is_none(),
            "{what}: {:?}",
            answer.headers
        );
        assert_eq!(answer.header("access-control-allow-origin"), "*", "{what}");
        assert!(
            answer
                .header("access-control-expose-headers")
                .to_ascii_lowercase()
                .contains("age"),
            "{what}: {:?}",
            answer.headers
        );
        assert!(answer.headers.get("set-cookie").is_none(), "{what}");
        let cache_control = answer.header("cache-control").to_string();
        assert!(
            cache_control.starts_with("public, max-age="),
            "{what}: {cache_control}"
        );
        lifetimes.push((*what, cache_control));
    }
    let lifetimes: Vec<(&str, &str)> = lifetimes.iter().map(|(w, c)| (*w, c.as_str())).collect();
    assert_eq!(
        lifetimes,
        [
            ("index.m3u8", "public, max-age=5"),
            ("stream.m3u8", "public, max-age=1"),
            ("blocking reload", "public, max-age=12"),
            ("part", "public, max-age=86400, immutable"),
            ("segment", "public, max-age=86400, immutable"),
            ("init", "public, max-age=86400, immutable"),
        ]
    );
    // The gateway counted each by kind.
    let counts = hls_requests(&gateway);
    for kind in [
        "multivariant",
        "playlist",
        "blocking",
        "part",
        "segment",
        "init",
    ] {
        assert!(
            counts.get(kind).copied().unwrap_or(0) >= 1,
            "{kind}: {counts:?}"
        );
    }
}

#[test]
fn hundreds_of_low_latency_viewers_and_hls_js_through_varnish_cost_one_request_per_url() {
    let gateway = TestGateway::start("");
    let cache = varnish(gateway.port);
    let mut publisher = Publisher::start(&gateway, "crowd", &[]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    wait_for_segments(&gateway, "crowd");

    let before = hls_requests(&gateway);
    let report = viewers(&gateway, &cache, "crowd", 300, 20);
    let after = hls_requests(&gateway);
    let reached = total(&after) - total(&before);
    eprintln!("viewers: {report}\nat the gateway: {before:?} -> {after:?}");

    let requests = report["requests"].as_u64().unwrap();
    let distinct = report["distinct_urls"].as_u64().unwrap();
    let statuses = report["status"].as_object().unwrap();
    assert_eq!(
        statuses.keys().collect::<Vec<_>>(),
        ["200"],
        "{:?}",
        report["errors"]
    );
    // What the script asked of the origin itself (its own viewer there, and the live
    // edge once a second) reached the gateway too; the rest came through the cache.
    let through_cache = reached - report["origin_requests"].as_u64().unwrap();
    assert!(
        through_cache <= distinct + distinct / 10 + 3,
        "{through_cache} requests reached the gateway through the cache for {distinct} \
         distinct URLs ({requests} asked by 300 viewers)"
    );
    assert!(
        requests >= 300 * 20,
        "the viewers asked only {requests} times"
    );
    assert!(through_cache > 0, "nothing reached the gateway");
    // Every viewer stayed at the live edge: within a second (five of the default 0.2 s
    // parts) of the origin's newest, at p99. One Python process plays the 300 viewers on
    // the same two cores as the gateway and Varnish: a tighter bound measured that.
    let parts = report["parts"].as_array().unwrap();
    assert!(
        parts.iter().all(|p| p.as_u64().unwrap() >= 20),
        "a viewer fell behind: {parts:?}"
    );
    let lag_p99 = report["lag_p99"].as_i64().unwrap();
    assert!(
        lag_p99 <= 5,
        "viewers {lag_p99} parts behind at p99: {report}"
    );

    // The dashboard's player, hls.js, through the cache.
    let mut dashboard = Browser::start(BrowserKind::Chromium);
    dashboard.open(&cache.url("/"));
    let row = "document.querySelector('tr[data-stream=\"crowd\"]')?.dataset.state";
    assert_eq!(
        dashboard.wait_for(row, &json!("live"), Duration::from_secs(20)),
        json!("live")
    );
    dashboard.eval("document.querySelector('tr[data-stream=\"crowd\"] button.watch').click()");
    // hls.js played through the cache.
    let width = dashboard.wait_for(
        "document.getElementById('player').videoWidth",
        &json!(320),
        Duration::from_secs(30),
    );
    let status = dashboard.eval("document.getElementById('player-status').textContent");
    assert_eq!(width, json!(320), "hls.js showed no picture: {status}");
    let time = "document.getElementById('player').currentTime";
    let first = dashboard.eval(time).as_f64().unwrap();
    let later = eventually(Duration::from_secs(20), || {
        let now = dashboard.eval(time).as_f64()?;
        (now > first + 2.0).then_some(now)
    });
    assert!(later.is_some(), "hls.js stopped at {first}: {status}");
}

#[test]
fn a_name_published_again_never_gets_its_earlier_publications_parts() {
    // The first publication's output is gone as soon as it ends, so the next one of the
    // same name starts a new output.
    let gateway = TestGateway::start("[hls]\nlinger_s = 0");
    let cache = varnish(gateway.port);
    let mut first = Publisher::start(&gateway, "again", &[]);
    first.wait_for("live", LIVE_TIMEOUT);
    wait_for_segments(&gateway, "again");
    let earlier = viewers(&gateway, &cache, "again", 20, 6);
    let earlier_prefixes = earlier["prefixes"].as_array().unwrap().clone();
    assert_eq!(earlier_prefixes.len(), 1, "{earlier}");
    let earlier_playlist = gateway.get("/streams/again/stream.m3u8").text().unwrap();
    let earlier_end =
        media_sequence(&earlier_playlist) + earlier_playlist.matches("#EXTINF").count() as u64;
    first.kill();
    let gone = eventually(Duration::from_secs(20), || {
        (gateway.get("/api/streams/again").status() == 404).then_some(())
    });
    assert!(gone.is_some(), "the first publication lingers");

    let mut second = Publisher::start(&gateway, "again", &[]);
    second.wait_for("live", LIVE_TIMEOUT);
    wait_for_segments(&gateway, "again");
    let later = viewers(&gateway, &cache, "again", 20, 6);
    let later_prefixes = later["prefixes"].as_array().unwrap();
    assert_eq!(later_prefixes.len(), 1, "{later}");
    assert_ne!(later_prefixes, &earlier_prefixes, "{later}");
    assert_eq!(
        later["status"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["200"]
    );
    // Its media sequence numbers start past the first one's, so no blocking reload the
    // cache kept from the first answers for the second.
    let playlist = String::from_utf8(
        reqwest::blocking::get(cache.url("/streams/again/stream.m3u8"))
            .unwrap()
            .bytes()
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(
        media_sequence(&playlist) > earlier_end,
        "{} after {earlier_end}",
        media_sequence(&playlist)
    );
    let earlier_prefix = earlier_prefixes[0].as_str().unwrap();
    assert!(!playlist.contains(earlier_prefix), "{playlist}");
}

/// The hinted part, sent by the gateway while it is made, is fetched once by Varnish
/// for every viewer that asks for it meanwhile, and each gets all of it.
#[test]
fn a_hinted_part_in_progress_reaches_the_gateway_once_through_varnish() {
    let gateway = TestGateway::start("");
    let cache = varnish(gateway.port);
    let mut publisher = Publisher::start(&gateway, "hinted", &[]);
    publisher.wait_for("live", LIVE_TIMEOUT);
    wait_for_segments(&gateway, "hinted");
    let playlist = gateway.get("/streams/hinted/stream.m3u8").text().unwrap();
    let hint = playlist
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no preload hint: {playlist}"))
        .to_string();
    let before = hls_requests(&gateway);
    let url = cache.url(&format!("/streams/hinted/{hint}"));
    let viewers: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let response = reqwest::blocking::get(&url).unwrap();
                (
                    response.status().as_u16(),
                    response.bytes().unwrap().to_vec(),
                )
            })
        })
        .collect();
    let bodies: Vec<(u16, Vec<u8>)> = viewers.into_iter().map(|v| v.join().unwrap()).collect();
    let after = hls_requests(&gateway);
    let origin = fetch(&gateway, &format!("/streams/hinted/{hint}"));
    assert_eq!(origin.status, 200);
    for (status, body) in &bodies {
        assert_eq!(*status, 200, "{hint}");
        assert!(*body == origin.body, "{hint}: a viewer got another body");
    }
    let parts =
        |counts: &std::collections::BTreeMap<String, u64>| counts.get("part").copied().unwrap_or(0);
    // The one fetch by Varnish; the test's own request to the origin came after.
    assert_eq!(parts(&after) - parts(&before), 1, "{before:?} -> {after:?}");
}
