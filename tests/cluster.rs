//! Several gateways as one service: Redis from Debian holds the cluster, HAProxy from
//! Debian (with the README's configuration) is the one address in front, every server
//! on free loopback ports and stopped at the end.

mod common;

use common::browser::{Browser, BrowserKind};
use common::fetch::decode_playlist;
use common::servers::{Server, haproxy, redis, redis_tls};
use common::{
    BROWSER_OFFER, Publisher, Signalling, TestGateway, aiortc_whip, client, decode_sdp, eventually,
    free_udp_range,
};
use serde_json::{Value, json};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const PASSWORD: &str = "cluster-secret";
/// The secret the tests' nodes sign their forwarded requests with.
const SECRET: &str = "nodes-know-each-other";
const LIVE_TIMEOUT: Duration = Duration::from_secs(30);
/// The lease the tests' nodes hold their claims by.
const LEASE_MS: u64 = 2000;
const PAGE_STATE: &str = "document.body.dataset.state";
const PAGE_REASON: &str = "document.getElementById('reason').textContent";

/// Redis and nodes `gw1`, `gw2`, ... sending RTP to one host and port range.
struct Cluster {
    redis: Server,
    nodes: Vec<TestGateway>,
}

impl Cluster {
    /// Nodes with these `limits.max_publishers`, and `extra` TOML each.
    fn start(max_publishers: &[u32], extra: &str) -> Cluster {
        Self::start_leased(max_publishers, extra, LEASE_MS)
    }

    /// The same, with claims held by `lease_ms`.
    fn start_leased(max_publishers: &[u32], extra: &str, lease_ms: u64) -> Cluster {
        let redis = redis(PASSWORD);
        let total: u32 = max_publishers.iter().sum();
        let port_base = free_udp_range(4 * total as u16);
        let nodes = max_publishers
            .iter()
            .enumerate()
            .map(|(k, max)| {
                TestGateway::start(&format!(
                    "[cluster]\nredis_url = \"redis://:{PASSWORD}@127.0.0.1:{}/0\"\n\
                     node_id = \"gw{}\"\nlease_ms = {lease_ms}\nsecret = \"{SECRET}\"\n\
                     [limits]\nmax_publishers = {max}\n[rtp]\nport_base = {port_base}\n{extra}",
                    redis.port,
                    k + 1
                ))
            })
            .collect::<Vec<_>>();
        let cluster = Cluster { redis, nodes };
        // Each node has joined: every one lists them all.
        for node in &cluster.nodes {
            let joined = eventually(Duration::from_secs(10), || {
                let (_, view) = node.get_json("/api/cluster");
                (view["redis"] == "connected"
                    && view["nodes"].as_array()?.len() == cluster.nodes.len())
                .then_some(())
            });
            assert!(joined.is_some(), "{:?}", node.get_json("/api/cluster"));
        }
        cluster
    }

    fn proxy(&self) -> Server {
        haproxy(&self.nodes.iter().map(|n| n.port).collect::<Vec<_>>())
    }
}

/// A WHIP offer posted to `url`: its status, its `Location`, and its error token.
fn whip_post(url: &str) -> (u16, Option<String>, Value) {
    let response = client()
        .post(url)
        .header("Content-Type", "application/sdp")
        .body(BROWSER_OFFER)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string());
    let retry_after = response.headers().get("retry-after").is_some();
    let body = if status == 201 {
        json!({})
    } else {
        let mut body: Value = response.json().unwrap_or(json!({}));
        body["retry_after"] = json!(retry_after);
        body
    };
    (status, location, body)
}

/// The ids of the nodes that an `/api/cluster` answer lists.
fn node_ids(view: &Value) -> Vec<&str> {
    view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect()
}

/// The node a stream is on, as `gateway` (any node) answers.
fn node_of(gateway: &TestGateway, name: &str) -> Option<String> {
    let (status, stream) = gateway.get_json(&format!("/api/streams/{name}"));
    (status == 200).then(|| stream["node"].as_str().unwrap().to_string())
}

#[test]
fn one_name_has_one_publisher_across_the_cluster_even_when_they_race() {
    let cluster = Cluster::start(&[4, 4], "");
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    for round in 0..20 {
        let name = format!("race{round}");
        let barrier = Arc::new(Barrier::new(2));
        let posts: Vec<_> = [
            a.url(&format!("/whip/{name}")),
            b.url(&format!("/whip/{name}")),
        ]
        .into_iter()
        .map(|url| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                whip_post(&url)
            })
        })
        .collect();
        let answers: Vec<_> = posts.into_iter().map(|p| p.join().unwrap()).collect();
        let won: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 201).collect();
        let lost: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 409).collect();
        assert_eq!(
            (won.len(), lost.len()),
            (1, 1),
            "round {round}: {answers:?}"
        );
        assert_eq!(lost[0].2["error"], "stream-in-use", "{answers:?}");
        // The session ends from either node: the other forwards its DELETE.
        let winner = if answers[0].0 == 201 { 0 } else { 1 };
        let location = won[0].1.clone().unwrap();
        let other = &cluster.nodes[1 - winner];
        if round == 0 {
            // Its trickle too.
            let trickle = "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
                           m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n\
                           a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n";
            let patched = client()
                .patch(other.url(&location))
                .header("Content-Type", "application/trickle-ice-sdpfrag")
                .body(trickle)
                .send()
                .unwrap();
            assert_eq!(
                patched.status(),
                204,
                "PATCH {location} through the other node"
            );
        }
        let deleted = client().delete(other.url(&location)).send().unwrap();
        assert_eq!(
            deleted.status(),
            200,
            "DELETE {location} through the other node"
        );
        let free = eventually(Duration::from_secs(10), || {
            (cluster.nodes[winner].stream(&name)?["state"] == "ended").then_some(())
        });
        assert!(free.is_some(), "{name} did not end");
    }
    // Ended, the names are free again, on any node.
    let (status, location, _) = whip_post(&b.url("/whip/race0"));
    assert_eq!(status, 201);
    assert_eq!(node_of(a, "race0").as_deref(), Some("gw2"));

    // A WebSocket publisher of a name live on the other node gets 409 too.
    let mut signalling = Signalling::connect(a);
    signalling.send(&json!({"type": "publish", "stream": "race0", "sdp": BROWSER_OFFER}));
    let error = signalling.receive();
    assert_eq!(
        (error["code"].as_u64(), error["error"].as_str()),
        (Some(409), Some("stream-in-use")),
        "{error}"
    );
    client().delete(a.url(&location.unwrap())).send().unwrap();

    // RTP slots are distinct across the nodes that send to one host.
    let slots: Vec<u64> = [(a, "slot1"), (b, "slot2"), (a, "slot3"), (b, "slot4")]
        .iter()
        .map(|(node, name)| {
            let (status, _, body) = whip_post(&node.url(&format!("/whip/{name}")));
            assert_eq!(status, 201, "{body}");
            node.stream(name).unwrap()["slot"].as_u64().unwrap()
        })
        .collect();
    let mut distinct = slots.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "slots {slots:?}");

    // A third node that takes a live node's id is refused, and says why.
    let config = std::fs::read_to_string(a.dir.path().join("gateway.toml")).unwrap();
    let other_port = common::free_tcp_port();
    let config = config.replace(&format!(":{}\"", a.port), &format!(":{other_port}\""));
    // Its own ICE ports too, so that the node id is what refuses it.
    let config: String = config
        .lines()
        .map(|line| match line.trim_start() {
            l if l.starts_with("udp_port =") => format!("udp_port = {}", common::free_udp_port()),
            l if l.starts_with("tcp_port =") => format!("tcp_port = {}", common::free_tcp_port()),
            _ => line.to_owned(),
        })
        .map(|line| line + "\n")
        .collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gateway.toml"), config).unwrap();
    let refused = Command::new(common::GATEWAY)
        .arg("--config")
        .arg(dir.path().join("gateway.toml"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("cluster.node_id \"gw1\" is taken by the live node at"),
        "{stderr}"
    );
}

#[test]
fn every_node_serves_every_stream_and_haproxy_is_one_address() {
    let cluster = Cluster::start(&[4, 4], "[record]\nenabled = true\nformat = \"mp4\"");
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let proxy = cluster.proxy();
    let mut on_b = Publisher::start(b, "onb", &["--duration-s", "90"]);
    on_b.wait_for("live", LIVE_TIMEOUT);
    let mut on_a = Publisher::start(a, "ona", &["--duration-s", "90"]);
    on_a.wait_for("live", LIVE_TIMEOUT);

    // A lists B's stream with its node, and answers for it.
    let (_, streams) = a.get_json("/api/streams");
    let nodes: Vec<(String, String)> = streams
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let field = |k: &str| s[k].as_str().unwrap().to_string();
            (field("name"), field("node"))
        })
        .collect();
    assert_eq!(
        nodes,
        [("ona".into(), "gw1".into()), ("onb".into(), "gw2".into())]
    );
    assert_eq!(node_of(a, "onb").as_deref(), Some("gw2"));
    let (_, view) = a.get_json("/api/cluster");
    assert_eq!(view["node"], "gw1");
    assert_eq!(view["redis"], "connected");
    let ids = node_ids(&view);
    assert_eq!(ids, ["gw1", "gw2"]);
    assert_eq!(view["nodes"][1]["publishers"], 1);

    // B's SDP file through A: ffmpeg decodes the stream; its slot is not A's stream's.
    let decoded = decode_sdp(&a.url("/streams/onb/stream.sdp"), 3.0);
    decoded.assert_h264_and_opus(40);
    let port = |node: &TestGateway, name: &str| {
        let sdp = node
            .get(&format!("/streams/{name}/stream.sdp"))
            .text()
            .unwrap();
        sdp.lines()
            .find(|l| l.starts_with("m=video"))
            .unwrap()
            .to_string()
    };
    assert_ne!(port(a, "onb"), port(a, "ona"));

    // B's HLS through A, and a blocking reload for the next part, forwarded.
    let (ok, frames, errors) = decode_playlist(&a.url("/streams/onb/index.m3u8"), Some(3));
    assert!(ok && frames > 0, "{errors}");
    // The media sequence number and complete segments of a media playlist.
    let position = |text: &str| -> u64 {
        let msn: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
            .unwrap()
            .parse()
            .unwrap();
        msn + text.lines().filter(|l| l.starts_with("#EXTINF")).count() as u64
    };
    let next = position(&a.get("/streams/onb/stream.m3u8").text().unwrap()) + 1;
    let blocking = a.get(&format!(
        "/streams/onb/stream.m3u8?_HLS_msn={next}&_HLS_part=0"
    ));
    assert_eq!(blocking.status(), 200);
    let text = blocking.text().unwrap();
    // Answered once segment `next` had its first part: the segments before it complete.
    assert!(position(&text) >= next, "waited for {next}: {text}");
    let part = text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PART:"))
        .next_back()
        .and_then(|l| l.split("URI=\"").nth(1))
        .and_then(|l| l.split('"').next())
        .unwrap()
        .to_string();
    let bytes = a.get(&format!("/streams/onb/{part}")).bytes().unwrap();
    assert!(!bytes.is_empty(), "part {part} through A");

    // hls.js in the dashboard, through HAProxy, whichever node it reaches.
    let mut dashboard = Browser::start(BrowserKind::Chromium);
    dashboard.open(&proxy.url("/"));
    let row = "document.querySelector('tr[data-stream=\"onb\"]')?.dataset.state";
    assert_eq!(
        dashboard.wait_for(row, &json!("live"), Duration::from_secs(20)),
        json!("live")
    );
    let nodes_shown = "document.querySelectorAll('#nodes tr[data-node]').length";
    assert_eq!(
        dashboard.wait_for(nodes_shown, &json!(2), Duration::from_secs(10)),
        json!(2)
    );
    dashboard.eval("document.querySelector('tr[data-stream=\"onb\"] button.watch').click()");
    let width = dashboard.wait_for(
        "document.getElementById('player').videoWidth",
        &json!(320),
        Duration::from_secs(30),
    );
    assert_eq!(
        width,
        json!(320),
        "hls.js through HAProxy showed no picture"
    );
    let time = "document.getElementById('player').currentTime";
    let first = dashboard.eval(time).as_f64().unwrap();
    let later = eventually(Duration::from_secs(20), || {
        (dashboard.eval(time).as_f64()? > first + 2.0).then_some(())
    });
    assert!(later.is_some(), "hls.js stopped at {first} s");
    drop(dashboard);

    // B's recording, listed and served by A, whole.
    on_b.kill();
    let done = eventually(Duration::from_secs(20), || {
        let files = a.recordings_of("onb");
        files
            .iter()
            .find(|f| f["finished"] == true)
            .map(|f| f["file"].as_str().unwrap().to_string())
    });
    let file = done.expect("B's recording listed through A");
    let through_a = a.get(&format!("/recordings/{file}")).bytes().unwrap();
    let from_b = b.get(&format!("/recordings/{file}")).bytes().unwrap();
    assert!(through_a.len() > 10_000);
    assert_eq!(through_a, from_b);
    let metrics = a.get("/metrics").text().unwrap();
    assert!(
        metrics.contains("webrtc_gateway_forwarded_requests_total{kind=\"playlist\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("webrtc_gateway_cluster_nodes 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("webrtc_gateway_cluster_redis_up 1"),
        "{metrics}"
    );
}

#[test]
fn forwarded_reads_keep_their_token() {
    let cluster = Cluster::start(
        &[4, 4],
        "[auth]\nread_token = \"viewer-token\"\n[record]\nenabled = true\nformat = \"mp4\"",
    );
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut on_b = Publisher::start(b, "guarded", &["--duration-s", "8"]);
    on_b.wait_for("live", LIVE_TIMEOUT);
    // Through A, B asks for the token as it would itself.
    assert_eq!(a.get("/streams/guarded/stream.sdp").status(), 401);
    let sdp = a.get("/streams/guarded/stream.sdp?token=viewer-token");
    assert_eq!(sdp.status(), 200);
    assert!(sdp.text().unwrap().contains("m=video"));
    let bearer = client()
        .get(a.url("/streams/guarded/index.m3u8"))
        .header("Authorization", "Bearer viewer-token")
        .send()
        .unwrap();
    assert_eq!(bearer.status(), 200);
    // B's recording is listed by A with the token in the query, and only with it.
    on_b.wait_for("ended", Duration::from_secs(20));
    assert_eq!(a.get("/recordings").status(), 401);
    let listed = eventually(Duration::from_secs(10), || {
        let files: Value = a.get("/recordings?token=viewer-token").json().ok()?;
        files
            .as_array()?
            .iter()
            .any(|f| f["stream"] == "guarded" && f["finished"] == true)
            .then_some(())
    });
    assert!(listed.is_some(), "{}", b.log());
}

#[test]
fn a_node_refuses_forwarded_requests_not_signed_by_the_clusters_secret() {
    use webrtc_gateway::cluster::signature::{Forwarded, sign};
    let cluster = Cluster::start(&[4, 4], "");
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (status, _, body) = whip_post(&b.url("/whip/signed"));
    assert_eq!(status, 201, "{body}");
    // A forwards to B, signed with the cluster's secret: B answers.
    assert_eq!(node_of(a, "signed").as_deref(), Some("gw2"));
    let (_, streams) = a.get_json("/api/streams");
    assert!(streams.to_string().contains("\"signed\""), "{streams}");

    let path = "/api/streams/signed";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signed_by = |secret: &str, timestamp: u64| {
        let request = Forwarded {
            method: "GET",
            path,
            timestamp,
            node: "gw1",
        };
        client()
            .get(b.url(path))
            .header("X-Gateway-Forwarded-By", "gw1")
            .header("X-Gateway-Forwarded-At", timestamp.to_string())
            .header("X-Gateway-Forward-Signature", sign(secret, &request))
            .send()
            .unwrap()
    };
    let refused = |response: reqwest::blocking::Response, why: &str| {
        assert_eq!(response.status(), 403, "{why}");
        let body: Value = response.json().unwrap();
        assert_eq!(body["error"], "forward-unsigned", "{why}: {body}");
    };
    // Whoever only says it is a node is not taken for one, on any path.
    for unsigned in [path, "/api/streams", "/recordings"] {
        let response = client()
            .get(b.url(unsigned))
            .header("X-Gateway-Forwarded-By", "gw1")
            .send()
            .unwrap();
        refused(response, unsigned);
    }
    refused(signed_by("not-the-secret", now), "another secret");
    refused(signed_by(SECRET, now - 600), "ten minutes old");
    // The cluster's own signature, fresh, is taken.
    let response = signed_by(SECRET, now);
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().unwrap()["node"], "gw2");
}

#[test]
fn nodes_on_https_check_each_others_certificates_against_the_clusters_authority() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let mut authority = CertificateParams::new(Vec::<String>::new()).unwrap();
    authority.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let authority_key = KeyPair::generate().unwrap();
    let authority_cert = authority.self_signed(&authority_key).unwrap();
    let issuer = Issuer::new(authority, authority_key);
    let node_key = KeyPair::generate().unwrap();
    let node_cert = CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .signed_by(&node_key, &issuer)
        .unwrap();
    let file = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let ca_file = file("ca.pem", authority_cert.pem());
    let cert = file("node.pem", node_cert.pem());
    let key = file("node-key.pem", node_key.serialize_pem());

    let redis = redis(PASSWORD);
    let port_base = free_udp_range(4 * 8);
    // gw1 trusts the cluster's authority; gw2 only the system's roots, which never
    // signed the nodes' certificates.
    let node = |id: &str, ca_file: &str| {
        TestGateway::start(&format!(
            "[http]\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n\
             [cluster]\nredis_url = \"redis://:{PASSWORD}@127.0.0.1:{}/0\"\n\
             node_id = \"{id}\"\nlease_ms = {LEASE_MS}\nsecret = \"{SECRET}\"\n\
             ca_file = \"{ca_file}\"\n[rtp]\nport_base = {port_base}",
            redis.port
        ))
    };
    let (a, b) = (node("gw1", &ca_file), node("gw2", ""));
    for node in [&a, &b] {
        let joined = eventually(Duration::from_secs(10), || {
            let (_, view) = node.get_json("/api/cluster");
            (view["nodes"].as_array()?.len() == 2).then_some(view)
        });
        let view = joined.expect("both nodes joined");
        assert!(
            view["nodes"][0]["url"]
                .as_str()
                .unwrap()
                .starts_with("https://"),
            "{view}"
        );
    }
    let (status, _, body) = whip_post(&b.url("/whip/onb"));
    assert_eq!(status, 201, "{body}");
    let (status, _, body) = whip_post(&a.url("/whip/ona"));
    assert_eq!(status, 201, "{body}");
    // gw1 checks gw2's certificate against the authority, and forwards.
    assert_eq!(node_of(&a, "onb").as_deref(), Some("gw2"));
    // gw2 cannot check gw1's: it never sends gw1 the request (nor its token).
    let (status, answer) = b.get_json("/api/streams/ona");
    assert_eq!(
        (status, answer["error"].as_str()),
        (502, Some("node-unreachable")),
        "{answer}"
    );
}

#[test]
fn a_full_node_places_publishers_on_the_node_with_room() {
    let cluster = Cluster::start(&[1, 4], "");
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let proxy = cluster.proxy();
    let mut first = Publisher::start(a, "first", &[]);
    first.wait_for("live", LIVE_TIMEOUT);

    // A is full: a WebSocket publisher that reaches it is relayed to B.
    let mut second = Publisher::start(a, "second", &[]);
    second.wait_for("live", LIVE_TIMEOUT);
    assert_eq!(node_of(a, "second").as_deref(), Some("gw2"));
    let decoded = decode_sdp(&a.url("/streams/second/stream.sdp"), 2.0);
    decoded.assert_h264_and_opus(25);

    // aiortc over WHIP through HAProxy, wherever HAProxy sends its offer, trickle and
    // DELETE: live on B.
    let (mut whip, mut lines) = aiortc_whip(&proxy.url("/whip/third"), &["--seconds", "60"]);
    let created: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(created["status"], 201, "{created}");
    let live = eventually(LIVE_TIMEOUT, || {
        (b.stream("third")?["state"] == "live").then_some(())
    });
    assert!(live.is_some(), "{}", b.log());

    // And the page, through HAProxy, wherever HAProxy sends it.
    let mut browser = Browser::start(BrowserKind::Chromium);
    browser.open(&proxy.url("/publish.html?stream=fourth&autostart=1"));
    let state = browser.wait_for(PAGE_STATE, &json!("live"), LIVE_TIMEOUT);
    assert_eq!(state, json!("live"), "{}", browser.eval(PAGE_REASON));
    assert_eq!(node_of(a, "fourth").as_deref(), Some("gw2"));

    // A WHIP offer that reaches A goes to B too: A posts it there and answers with B's
    // answer. (Without media, it holds B's last place until its connect timeout.)
    let (status, location, body) = whip_post(&a.url("/whip/offered"));
    assert_eq!(status, 201, "{body}");
    assert!(location.unwrap().starts_with("/whip/offered/"));
    assert_eq!(node_of(a, "offered").as_deref(), Some("gw2"));

    // No node has room: 503 no-capacity, with Retry-After.
    for node in [a, b] {
        let (status, _, body) = whip_post(&node.url("/whip/fifth"));
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"], "no-capacity", "{body}");
        assert_eq!(body["retry_after"], true);
    }
    whip.kill();
}

#[test]
fn a_killed_node_frees_its_names_and_the_page_publishes_again_elsewhere() {
    let mut cluster = Cluster::start(&[4, 4], "");
    let proxy = cluster.proxy();
    let mut browser = Browser::start(BrowserKind::Chromium);
    browser.open(&proxy.url("/publish.html?stream=phoenix&autostart=1"));
    let state = browser.wait_for(PAGE_STATE, &json!("live"), LIVE_TIMEOUT);
    assert_eq!(state, json!("live"), "{}", browser.eval(PAGE_REASON));
    let holder = node_of(&cluster.nodes[0], "phoenix").unwrap();
    let dead = if holder == "gw1" { 0 } else { 1 };
    let survivor_id = if dead == 0 { "gw2" } else { "gw1" };

    let killed = Instant::now();
    cluster.nodes[dead].signal("-KILL");
    let survivor = &cluster.nodes[1 - dead];
    // Within the lease (and a renewal), the cluster forgets the node.
    let dropped = eventually(Duration::from_secs(10), || {
        let (_, view) = survivor.get_json("/api/cluster");
        (view["nodes"].as_array()?.len() == 1).then(|| killed.elapsed())
    });
    let dropped = dropped.expect("the killed node stays listed");
    assert!(
        dropped < Duration::from_millis(LEASE_MS * 3),
        "dropped after {dropped:?}"
    );
    // The page reconnects through HAProxy, and publishes the name on the survivor.
    let back = eventually(Duration::from_secs(60), || {
        let stream = survivor.stream("phoenix")?;
        (stream["state"] == "live" && stream["node"] == survivor_id).then_some(())
    });
    assert!(
        back.is_some(),
        "page: {}; survivor: {}",
        browser.eval(PAGE_REASON),
        survivor.log()
    );
    eprintln!(
        "republished on the survivor {:?} after the kill",
        killed.elapsed()
    );
    drop(cluster.nodes.remove(dead));
    drop(proxy);
}

#[test]
fn sigterm_frees_a_nodes_claims_at_once() {
    // A lease far longer than the test: only leaving frees the claims.
    let mut cluster = Cluster::start_leased(&[4, 4], "", 600_000);
    let (status, _, body) = whip_post(&cluster.nodes[0].url("/whip/leaving"));
    assert_eq!(status, 201, "{body}");
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    assert_eq!(node_of(b, "leaving").as_deref(), Some("gw1"));
    let (_, view) = b.get_json("/api/cluster");
    assert_eq!(view["nodes"].as_array().unwrap().len(), 2);
    a.signal("-TERM");
    let (code, _) = cluster.nodes[0].wait_exit(Duration::from_secs(15));
    assert_eq!(code, Some(0));
    let b = &cluster.nodes[1];
    let (_, view) = b.get_json("/api/cluster");
    let ids = node_ids(&view);
    assert_eq!(ids, ["gw2"]);
    let (status, _, body) = whip_post(&b.url("/whip/leaving"));
    assert_eq!(status, 201, "the name is free at once: {body}");
}

#[test]
fn live_streams_outlast_redis_and_a_paused_node_gives_its_name_up() {
    let mut cluster = Cluster::start(&[4, 4], "");
    let mut publisher = Publisher::start(&cluster.nodes[0], "steady", &["--duration-s", "90"]);
    publisher.wait_for("live", LIVE_TIMEOUT);

    // Redis stops: the stream goes on, new publishers get 503, the API says so.
    cluster.redis.stop();
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let unavailable = eventually(Duration::from_secs(10), || {
        (a.get_json("/api/cluster").1["redis"] == "unavailable").then_some(())
    });
    assert!(unavailable.is_some());
    let (status, _, body) = whip_post(&a.url("/whip/newcomer"));
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("cluster-unavailable")),
        "{body}"
    );
    assert_eq!(body["retry_after"], true);
    std::thread::sleep(Duration::from_millis(LEASE_MS + 500));
    assert_eq!(a.stream("steady").unwrap()["state"], "live");
    decode_sdp(&a.url("/streams/steady/stream.sdp"), 2.0).assert_h264_and_opus(25);

    // Redis is back, empty: the node takes its claim back, and B refuses the name.
    cluster.redis.start_again().unwrap();
    let back = eventually(Duration::from_secs(15), || {
        (node_of(b, "steady")? == "gw1").then_some(())
    });
    assert!(back.is_some(), "{}", a.log());
    assert_eq!(a.get_json("/api/cluster").1["redis"], "connected");
    let (status, _, body) = whip_post(&b.url("/whip/steady"));
    assert_eq!(status, 409, "{body}");

    // A pauses past its lease; B claims the name; A, back, finds the newer claim and
    // ends its stream with a clear reason.
    a.signal("-STOP");
    std::thread::sleep(Duration::from_millis(LEASE_MS + 1500));
    let (status, _, body) = whip_post(&b.url("/whip/steady"));
    a.signal("-CONT");
    assert_eq!(status, 201, "{body}");
    let ended = publisher.wait_for("ended", Duration::from_secs(15));
    assert_eq!(ended["reason"], "name-claimed-elsewhere", "{ended}");
    assert!(
        a.log().contains("another node claimed the name"),
        "{}",
        a.log()
    );
    let on_b = eventually(Duration::from_secs(10), || {
        (node_of(a, "steady")? == "gw2").then_some(())
    });
    assert!(on_b.is_some());
}

#[test]
fn a_redis_over_tls_with_a_password_holds_the_cluster() {
    // Redis from Debian speaking only TLS, with a certificate of its own (so the URL
    // says `#insecure`: no authority vouches for it).
    let tls = redis_tls(PASSWORD);
    let node = TestGateway::start(&format!(
        "[cluster]\nredis_url = \"rediss://:{PASSWORD}@127.0.0.1:{}/0#insecure\"\n\
         node_id = \"tls1\"\nlease_ms = {LEASE_MS}",
        tls.port
    ));
    let joined = eventually(Duration::from_secs(10), || {
        let (_, view) = node.get_json("/api/cluster");
        (view["redis"] == "connected").then_some(view)
    });
    assert!(joined.is_some(), "{}", node.log());
    let (status, _, body) = whip_post(&node.url("/whip/overtls"));
    assert_eq!(status, 201, "{body}");
    assert_eq!(node_of(&node, "overtls").as_deref(), Some("tls1"));
    // The password never reaches the log.
    assert!(!node.log().contains(PASSWORD), "{}", node.log());
}
