//! Property tests over every parser of untrusted input: signalling messages, SDP offers
//! (read and negotiated), WHIP trickle fragments, stream names, and, through the real
//! router in process, request paths, `Range` headers and the read token in the query.
//! No input panics, and every refusal is a 4xx with a sentence.
//!
//! Each property runs from a fixed seed: `FUZZ_CASES` multiplies the cases (`make fuzz`
//! runs a thousand times more) and `FUZZ_SEED` picks another seed.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;
use webrtc_gateway::config::Config as GatewayConfig;
use webrtc_gateway::gateway::Gateway;
use webrtc_gateway::media::PipelineFactory;
use webrtc_gateway::media::output::hls::HlsStore;
use webrtc_gateway::name::StreamName;
use webrtc_gateway::session::offer::{self, OfferError};
use webrtc_gateway::session::{PublishError, PublishRequest, SessionEvent, Sessions};
use webrtc_gateway::signalling::problem::Problem;
use webrtc_gateway::signalling::{websocket, whip};

const BROWSER_OFFER: &str = include_str!("common/browser_offer.sdp");

/// `cases` per property in `make test`, times `FUZZ_CASES` when set, from `FUZZ_SEED`
/// (fixed otherwise).
fn config(cases: u32) -> Config {
    let scale = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(1);
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0x6761_7465);
    Config {
        cases: cases.saturating_mul(scale),
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 2000,
        ..Config::default()
    }
}

fn assert_client_error(problem: &Problem) {
    assert!(
        (400..500).contains(&problem.status),
        "status {} for {problem:?}",
        problem.status
    );
    assert!(!problem.message.is_empty(), "{problem:?}");
}

/// Text that looks like JSON for one of the messages, with odd values in its fields.
fn message_text() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        Just("null".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<String>().prop_map(|s| serde_json::Value::String(s).to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("\"cam1\"".to_string()),
        Just(serde_json::Value::String(BROWSER_OFFER.into()).to_string()),
    ];
    let key = prop_oneof![
        Just("type"),
        Just("stream"),
        Just("sdp"),
        Just("token"),
        Just("candidate"),
        Just("sdpMid"),
        Just("sdpMLineIndex"),
        Just("usernameFragment"),
        Just("extra"),
    ];
    let kind = prop_oneof![
        Just("\"publish\"".to_string()),
        Just("\"candidate\"".to_string()),
        Just("\"unpublish\"".to_string()),
        any::<String>().prop_map(|s| serde_json::Value::String(s).to_string()),
        Just("7".to_string()),
    ];
    (
        kind,
        proptest::collection::vec((key, value), 0..6),
        any::<bool>(),
    )
        .prop_map(|(kind, fields, typed)| {
            let mut parts: Vec<String> = fields
                .into_iter()
                .map(|(k, v)| format!("\"{k}\":{v}"))
                .collect();
            if typed {
                parts.insert(0, format!("\"type\":{kind}"));
            }
            format!("{{{}}}", parts.join(","))
        })
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn signalling_messages_parse_or_are_refused_with_400(
        text in prop_oneof![any::<String>(), message_text()],
        limit in prop_oneof![Just(65_536usize), 0usize..64],
    ) {
        match websocket::parse(&text, limit) {
            Ok(_) => prop_assert!(text.len() <= limit),
            Err(problem) => {
                assert_client_error(&problem);
                prop_assert_eq!(problem.status, 400);
            }
        }
    }

    #[test]
    fn names_are_only_safe_words(text in prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_./%-]{0,70}",
    ]) {
        match StreamName::new(&text) {
            Ok(name) => {
                prop_assert_eq!(name.as_str(), text.as_str());
                prop_assert!((1..=64).contains(&text.len()));
                prop_assert!(!text.contains(['/', '.', '%', '\0', '\\']));
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn valid_names_are_taken(text in "[A-Za-z0-9_-]{1,64}") {
        prop_assert!(StreamName::new(&text).is_ok());
    }

    #[test]
    fn trickle_fragments_yield_only_candidate_lines(
        lines in proptest::collection::vec(prop_oneof![
            any::<String>(),
            "a=candidate:[0-9a-z ]{0,40}",
            "a=ice-ufrag:[a-z]{0,8}",
            "a=mid:[0-9]",
        ], 0..12),
        separator in prop_oneof![Just("\r\n"), Just("\n"), Just("\r")],
    ) {
        let fragment = lines.join(separator);
        for candidate in whip::fragment_candidates(&fragment) {
            prop_assert!(candidate.starts_with("candidate:"));
        }
        let _ = whip::attribute(&fragment, "ice-ufrag");
    }

    #[test]
    fn every_trickled_candidate_and_the_ufrag_are_read(
        lines in proptest::collection::vec(prop_oneof![
            "a=candidate:[0-9a-z ]{0,40}",
            "a=ice-ufrag:[a-z]{1,8}",
            "a=mid:[0-9]",
        ], 0..12),
        separator in prop_oneof![Just("\r\n"), Just("\n")],
    ) {
        let fragment = lines.join(separator);
        let candidates: Vec<&str> = whip::fragment_candidates(&fragment).collect();
        let sent: Vec<&str> = lines
            .iter()
            .filter(|l| l.starts_with("a=candidate:"))
            .map(|l| l.trim()[2..].as_ref())
            .collect();
        prop_assert_eq!(candidates, sent);
        let ufrag = lines.iter().find_map(|l| l.strip_prefix("a=ice-ufrag:"));
        let read = whip::attribute(&fragment, "ice-ufrag");
        prop_assert_eq!(read.as_deref(), ufrag);
    }
}

/// One change to an SDP offer's lines.
#[derive(Debug, Clone)]
enum Edit {
    Delete(usize),
    Duplicate(usize),
    Replace(usize, String),
    Truncate(usize),
    Insert(usize, String),
}

fn sdp_line() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z]=[ -~]{0,40}",
        "m=(audio|video|application) [0-9]{1,6} [A-Z/]{0,20}( [0-9]{1,4}){0,4}",
        "a=rtpmap:[0-9]{1,4} (VP8|H264|opus|VP9)/[0-9]{1,6}(/[0-9])?",
        "a=fmtp:[0-9]{1,4} [ -~]{0,40}",
        "a=(sendonly|recvonly|inactive|sendrecv)",
        "a=candidate:[0-9] 1 udp [0-9]{1,10} 127\\.0\\.0\\.1 [0-9]{1,5} typ host",
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (0usize..40).prop_map(Edit::Delete),
        (0usize..40).prop_map(Edit::Duplicate),
        (0usize..40, sdp_line()).prop_map(|(at, l)| Edit::Replace(at, l)),
        (0usize..2000).prop_map(Edit::Truncate),
        (0usize..40, sdp_line()).prop_map(|(at, l)| Edit::Insert(at, l)),
    ]
}

/// The browser offer with `edits` applied.
fn edited_offer(edits: &[Edit]) -> String {
    let mut lines: Vec<String> = BROWSER_OFFER.lines().map(String::from).collect();
    for edit in edits {
        let n = lines.len().max(1);
        match edit {
            Edit::Delete(at) if !lines.is_empty() => {
                lines.remove(at % n);
            }
            Edit::Duplicate(at) if !lines.is_empty() => {
                let line = lines[at % n].clone();
                lines.insert(at % n, line);
            }
            Edit::Replace(at, line) if !lines.is_empty() => lines[at % n] = line.clone(),
            Edit::Insert(at, line) => lines.insert(at % (lines.len() + 1), line.clone()),
            Edit::Truncate(at) => {
                let text = lines.join("\r\n");
                let mut cut = (*at).min(text.len());
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                lines = text[..cut].lines().map(String::from).collect();
            }
            _ => {}
        }
    }
    let mut text = lines.join("\r\n");
    text.push_str("\r\n");
    text
}

fn offer_problem(error: OfferError) -> Problem {
    Problem::publish(&StreamName::new("p").unwrap(), &PublishError::Offer(error))
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn offers_are_planned_or_refused_with_4xx(
        edits in proptest::collection::vec(edit(), 0..6),
        raw in proptest::option::weighted(0.1, any::<String>()),
    ) {
        let sdp = raw.unwrap_or_else(|| edited_offer(&edits));
        for preference in [offer::VideoPreference::Vp8, offer::VideoPreference::OfferOrder] {
            match offer::plan(&sdp, preference) {
                Ok(plan) => prop_assert!(plan.video.is_some() || plan.audio.is_some()),
                Err(error) => assert_client_error(&offer_problem(error)),
            }
        }
        let _ = offer::first_mid(&sdp);
    }

    #[test]
    fn offer_candidates_are_limited(
        edits in proptest::collection::vec(edit(), 0..4),
        candidates in 0usize..40,
        max in 0usize..20,
    ) {
        let mut sdp = edited_offer(&edits);
        for k in 0..candidates {
            sdp.push_str(&format!("a=candidate:{k} 1 udp 1 127.0.0.1 {} typ host\r\n", 1000 + k));
        }
        let had = sdp.lines().filter(|l| l.trim_start().starts_with("a=candidate:")).count();
        let (limited, kept, dropped) = offer::limit_candidates(&sdp, max);
        prop_assert!(kept <= max);
        prop_assert_eq!(kept + dropped, had);
        prop_assert_eq!(limited.matches("a=candidate:").count(), kept);
    }
}

/// A gateway in this process (no HTTP server: requests go straight to its router), with
/// a read token and one recording on disk.
struct InProcess {
    runtime: tokio::runtime::Runtime,
    sessions: Arc<Sessions>,
    router: axum::Router,
    recording: &'static str,
    recording_len: usize,
    _dir: tempfile::TempDir,
}

fn in_process() -> &'static InProcess {
    static GATEWAY: OnceLock<InProcess> = OnceLock::new();
    GATEWAY.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let recordings = dir.path().join("recordings");
        std::fs::create_dir_all(&recordings).unwrap();
        let recording = "cam1-20261121T101500Z.mkv";
        let recording_len = 10_000;
        let bytes: Vec<u8> = (0..recording_len).map(|i| (i % 251) as u8).collect();
        std::fs::write(recordings.join(recording), bytes).unwrap();
        let config = GatewayConfig::parse(&format!(
            r#"
            [http]
            listen = "127.0.0.1:0"
            www_dir = "{root}/www"
            [transcode]
            width = 320
            height = 180
            x264_preset = "ultrafast"
            pipelines_dir = "{root}/pipelines"
            [webrtc]
            bind_address = "127.0.0.1"
            [rtp]
            enabled = false
            [hls]
            enabled = false
            [record]
            dir = "{recordings}"
            [auth]
            read_token = "secret"
            "#,
            root = env!("CARGO_MANIFEST_DIR"),
            recordings = recordings.display(),
        ))
        .unwrap();
        let media = PipelineFactory::new(
            &config.transcode.pipelines_dir,
            config.transcode.clone(),
            config.rtp.clone(),
        )
        .unwrap();
        let hls = HlsStore::new(&config.hls).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let sessions = {
            let _entered = runtime.enter();
            Sessions::new(Gateway::new(config, media, hls).unwrap())
        };
        let router = webrtc_gateway::http::router(sessions.clone());
        InProcess {
            runtime,
            sessions,
            router,
            recording,
            recording_len,
            _dir: dir,
        }
    })
}

impl InProcess {
    fn request(&self, request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        self.runtime.block_on(async {
            let response = self.router.clone().oneshot(request).await.unwrap();
            let (parts, body) = response.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            (parts.status, parts.headers, body.to_vec())
        })
    }
}

/// A path of segments made of characters that matter to routers and file systems.
fn odd_path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        "[a-z0-9]{0,8}",
        Just("..".to_string()),
        Just("%2e%2e".to_string()),
        Just("%2f".to_string()),
        Just("%00".to_string()),
        Just("%ff".to_string()),
        Just("streams".to_string()),
        Just("recordings".to_string()),
        Just("cam1".to_string()),
        Just("index.m3u8".to_string()),
        Just("stream.sdp".to_string()),
        Just("cam1-20261121T101500Z.mkv".to_string()),
        "[a-z]{300}",
        "[ -~]{0,12}",
        any::<String>(),
    ];
    proptest::collection::vec(segment, 0..5).prop_map(|segments| {
        let path = format!("/{}", segments.join("/"));
        // Only what a URI may carry: the rest percent-encoded, as a client must send it.
        path.bytes()
            .map(|b| match b {
                b'!'..=b'~' if b != b'#' && b != b'?' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    })
}

fn range_header() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        (any::<u32>(), any::<u32>()).prop_map(|(a, b)| format!("bytes={a}-{b}")),
        (0u32..12_000, 0u32..12_000).prop_map(|(a, b)| format!("bytes={a}-{b}")),
        (0u32..12_000).prop_map(|a| format!("bytes={a}-")),
        (0u32..12_000).prop_map(|a| format!("bytes=-{a}")),
        (0u32..12_000, 0u32..12_000, 0u32..12_000)
            .prop_map(|(a, b, c)| format!("bytes={a}-{b},{c}-")),
        "(bytes|items|BYTES)=[-0-9, ]{0,20}",
    ]
}

proptest! {
    #![proptest_config(config(1500))]

    #[test]
    fn odd_paths_are_never_server_errors(
        path in odd_path(),
        head in any::<bool>(),
        token in proptest::option::of(prop_oneof![Just("secret"), Just("wrong")]),
    ) {
        let uri = match token {
            Some(t) => format!("{path}?token={t}"),
            None => path.clone(),
        };
        let method = if head { Method::HEAD } else { Method::GET };
        let Ok(request) = Request::builder().method(method).uri(&uri).body(Body::empty()) else {
            return Ok(());
        };
        let (status, _, _) = in_process().request(request);
        prop_assert!(!status.is_server_error(), "{uri}: {status}");
    }

    #[test]
    fn ranges_are_served_exactly_or_refused(range in range_header()) {
        let gateway = in_process();
        let Ok(request) = Request::builder()
            .uri(format!("/recordings/{}?token=secret", gateway.recording))
            .header(header::RANGE, &range)
            .body(Body::empty())
        else {
            return Ok(());
        };
        let (status, headers, body) = gateway.request(request);
        let len = gateway.recording_len;
        match status {
            StatusCode::OK => prop_assert_eq!(body.len(), len),
            StatusCode::PARTIAL_CONTENT => {
                let content_range = headers[header::CONTENT_RANGE].to_str().unwrap();
                let spec = content_range.strip_prefix("bytes ").unwrap();
                let (span, total) = spec.split_once('/').unwrap();
                let (start, end) = span.split_once('-').unwrap();
                let (start, end): (usize, usize) = (start.parse().unwrap(), end.parse().unwrap());
                prop_assert_eq!(total, len.to_string());
                prop_assert!(start <= end && end < len, "{content_range}");
                prop_assert_eq!(body.len(), end - start + 1);
                let expected: Vec<u8> = (start..=end).map(|i| (i % 251) as u8).collect();
                prop_assert_eq!(body, expected);
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {}
            other => prop_assert!(false, "{range:?}: {other}"),
        }
    }

    #[test]
    fn only_the_read_token_reads(query in prop_oneof![
        any::<String>(),
        "(token|tok|TOKEN|t)=(secret|secre|secrets|)(&[a-z]{0,4}=[a-z]{0,6}){0,2}",
        "([a-z]{0,4}=[a-z%0-9]{0,6}&){0,2}token=secret",
    ]) {
        let gateway = in_process();
        let encoded: String = query
            .bytes()
            .map(|b| match b {
                b'!'..=b'~' if b != b'#' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let Ok(request) = Request::builder()
            .uri(format!("/recordings/{}?{encoded}", gateway.recording))
            .body(Body::empty())
        else {
            return Ok(());
        };
        let (status, _, _) = gateway.request(request);
        let has_token = encoded.split('&').any(|pair| pair == "token=secret");
        if has_token {
            prop_assert!(status == StatusCode::OK || status.is_client_error(), "{encoded}: {status}");
        } else {
            prop_assert!(status.is_client_error(), "{encoded}: {status}");
        }
    }
}

proptest! {
    // Each case negotiates a real peer connection: fewer of them.
    #![proptest_config(config(150))]

    #[test]
    fn published_offers_are_answered_or_refused_with_4xx(
        edits in proptest::collection::vec(edit(), 0..5),
    ) {
        let gateway = in_process();
        let sdp = edited_offer(&edits);
        gateway.runtime.block_on(async {
            let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
            let request = PublishRequest {
                stream: StreamName::new("fuzz").unwrap(),
                offer: sdp.clone(),
                publisher: "websocket",
                record: None,
            };
            match gateway.sessions.publish(request, events).await {
                Ok((handle, answer)) => {
                    assert!(answer.starts_with("v=0"), "{answer}");
                    handle.stop(webrtc_gateway::stream::EndReason::Unpublished).await;
                    // The name is free again once the session has ended.
                    while let Some(event) = received.recv().await {
                        if matches!(event, SessionEvent::Ended { .. }) {
                            break;
                        }
                    }
                }
                Err(error) => {
                    let problem = Problem::publish(&StreamName::new("fuzz").unwrap(), &error);
                    assert_client_error(&problem);
                }
            }
        });
    }
}
