//! The test harness: a real gateway process on free ports, real publishers
//! (`webrtc-gateway-publish`, a webrtc-rs client sending GStreamer-encoded VP8/Opus),
//! raw signalling sockets, ffmpeg decoding the outputs, and browsers over WebDriver
//! (`browser`). Processes, servers, players and free ports come from the workspace's
//! test kit (`crates/testkit`), which the benchmark uses too.

#![allow(dead_code, unused_imports)]

pub mod browser;
pub mod fetch;
pub mod players;
pub mod servers;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};
use webrtc_gateway_testkit::{Process, Signal};

pub use webrtc_gateway_testkit::media::{Decoded, decode_sdp};
pub use webrtc_gateway_testkit::{
    eventually, free_tcp_port, free_udp_port, free_udp_range, root_path,
};

pub const GATEWAY: &str = env!("CARGO_BIN_EXE_webrtc-gateway");
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// An offer as a browser sends it: VP8 + H.264 video, Opus audio, no candidates.
pub const BROWSER_OFFER: &str = include_str!("browser_offer.sdp");

/// An HTTP client that also takes the gateway's self-signed certificates.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
}

/// aiortc publishing over WHIP to `url` with `args` (the test kit's launcher), and the
/// JSON lines it prints, one per step.
pub fn aiortc_whip(
    url: &str,
    args: &[&str],
) -> (
    Process,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
) {
    webrtc_gateway_testkit::python::aiortc_whip(url, args).unwrap_or_else(|e| panic!("{e}"))
}

/// The signal a `kill` flag names (`-TERM`, `-KILL`, `-STOP`, `-CONT`, `-INT`).
pub fn signal_named(flag: &str) -> Signal {
    match flag.trim_start_matches('-') {
        "TERM" => Signal::Term,
        "KILL" => Signal::Kill,
        "STOP" => Signal::Stop,
        "CONT" => Signal::Cont,
        "INT" => Signal::Int,
        other => panic!("no signal {other} in the test kit"),
    }
}

fn merge(base: &mut toml::Table, extra: toml::Table) {
    for (key, value) in extra {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(e)) => merge(b, e),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// A running gateway, killed when dropped.
pub struct TestGateway {
    /// Declared before `dir`, which holds its log: dropped first.
    process: Process,
    /// `http` or `https`.
    pub scheme: &'static str,
    pub port: u16,
    pub port_base: u16,
    pub dir: tempfile::TempDir,
}

impl TestGateway {
    /// Starts a gateway with test defaults (loopback, 320x180 ultrafast) and `extra` TOML
    /// merged over them.
    pub fn start(extra: &str) -> TestGateway {
        Self::start_limited(extra, None)
    }

    /// Like `start`, with no file the gateway writes allowed past `file_limit_kib`
    /// (a disk that fills): writes beyond it fail with EFBIG.
    pub fn start_limited(extra: &str, file_limit_kib: Option<u64>) -> TestGateway {
        Self::start_with(extra, file_limit_kib, &[])
    }

    /// Like `start`, with these environment variables.
    pub fn start_env(extra: &str, env: &[(&str, &str)]) -> TestGateway {
        Self::start_with(extra, None, env)
    }

    fn start_with(extra: &str, file_limit_kib: Option<u64>, env: &[(&str, &str)]) -> TestGateway {
        let dir = tempfile::tempdir().unwrap();
        let port = free_tcp_port();
        let mut config: toml::Table = toml::from_str(&format!(
            r#"
            [http]
            listen = "127.0.0.1:{port}"
            www_dir = "{root}/www"
            hls_js = "{root}/node_modules/hls.js/dist/hls.min.js"
            [transcode]
            width = 320
            height = 180
            x264_preset = "ultrafast"
            video_bitrate_kbps = 600
            pipelines_dir = "{root}/pipelines"
            [webrtc]
            bind_address = "127.0.0.1"
            udp_port = {udp_port}
            tcp_port = {tcp_port}
            [limits]
            max_publishers = 4
            "#,
            root = ROOT,
            // Gateways run side by side: each on ICE ports of its own.
            udp_port = free_udp_port(),
            tcp_port = free_tcp_port(),
        ))
        .unwrap();
        merge(&mut config, toml::from_str(extra).unwrap());
        // `extra` may name the port (a gateway restarted where its clients expect it).
        let port = config["http"]["listen"]
            .as_str()
            .and_then(|listen| listen.rsplit_once(':')?.1.parse().ok())
            .unwrap_or(port);
        let max = config["limits"]["max_publishers"].as_integer().unwrap() as u16;
        // `extra` may name the ports (nodes of a cluster that send to one host).
        let given = config
            .get("rtp")
            .and_then(|rtp| rtp.get("port_base"))
            .and_then(toml::Value::as_integer);
        let port_base = match given {
            Some(port_base) => port_base as u16,
            None => free_udp_range(4 * max),
        };
        merge(
            &mut config,
            toml::from_str(&format!("[rtp]\nport_base = {port_base}")).unwrap(),
        );
        let config_path = dir.path().join("gateway.toml");
        std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
        let https = config["http"]
            .get("tls_self_signed")
            .and_then(toml::Value::as_bool)
            .unwrap_or(false)
            || config["http"].get("tls_cert").is_some();
        // The one start path: `restart` runs this same command again (with its file-size
        // limit, its environment, in its directory).
        let work_dir = dir.path().to_path_buf();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let process = Process::new("gateway", move || {
            let mut command = match file_limit_kib {
                None => Command::new(GATEWAY),
                Some(kib) => {
                    let mut c = Command::new("bash");
                    c.args([
                        "-c",
                        &format!("trap '' XFSZ; ulimit -f {kib}; exec \"$0\" \"$@\""),
                        GATEWAY,
                    ]);
                    c
                }
            };
            command
                .arg("--config")
                .arg(&config_path)
                .current_dir(&work_dir)
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .env("RUST_LOG", "info,webrtc=warn,rtc=warn,webrtc_gateway=debug");
            command
        })
        .log_to(&dir.path().join("gateway.log"))
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
        let mut gateway = TestGateway {
            process,
            scheme: if https { "https" } else { "http" },
            port,
            port_base,
            dir,
        };
        gateway.wait_healthy();
        gateway
    }

    /// Starts the gateway again, after it exited or was killed, with the same command
    /// (configuration, directory, environment, file-size limit); its log goes on in the
    /// same file.
    pub fn restart(&mut self) {
        self.process.start().unwrap_or_else(|e| panic!("{e}"));
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        let url = self.url("/healthz");
        self.process
            .wait_until(Duration::from_secs(15), || {
                client().get(&url).send().is_ok_and(|r| r.status() == 200)
            })
            .unwrap_or_else(|e| panic!("the gateway did not become healthy: {e}"));
    }

    /// The gateway's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.port)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        client().get(self.url(path)).send().unwrap()
    }

    pub fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.get(path);
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    /// The recordings of `stream`, as `GET /recordings` lists them.
    pub fn recordings_of(&self, stream: &str) -> Vec<Value> {
        let (status, list) = self.get_json("/recordings");
        assert_eq!(status, 200);
        list.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["stream"] == stream)
            .cloned()
            .collect()
    }

    /// The stream object, or None once the name is free.
    pub fn stream(&self, name: &str) -> Option<Value> {
        let (status, body) = self.get_json(&format!("/api/streams/{name}"));
        (status == 200).then_some(body)
    }

    /// Whether `name` has no running publisher: not listed, or listed as ended (its HLS
    /// playlist lingers) with no port slot.
    pub fn stream_ended(&self, name: &str) -> bool {
        self.stream(name)
            .is_none_or(|s| s["state"] == "ended" && s["slot"].is_null())
    }

    /// Waits until `name` has no running publisher.
    pub fn wait_stream_ended(&self, name: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.stream_ended(name) {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "stream {name} still running after {timeout:?}:\n{}",
            self.log()
        );
    }

    /// Sends a signal (`-TERM`, `-KILL`, `-STOP`, `-CONT`) to the gateway process.
    pub fn signal(&self, signal: &str) {
        self.process.signal(signal_named(signal));
    }

    /// Waits for the gateway to exit; returns its exit code and how long it took.
    pub fn wait_exit(&mut self, timeout: Duration) -> (Option<i32>, Duration) {
        let start = Instant::now();
        match self.process.wait_exit(timeout) {
            Some(status) => (status.code(), start.elapsed()),
            None => panic!("gateway did not exit within {timeout:?}"),
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        // A failing test prints the log as the process is dropped; GATEWAY_LOG asks for
        // it always.
        if !std::thread::panicking() && std::env::var_os("GATEWAY_LOG").is_some() {
            eprintln!("---- gateway log ----\n{}", self.log());
        }
    }
}

/// A publisher process; its printed JSON lines are the gateway's messages.
pub struct Publisher {
    process: Process,
    lines: mpsc::Receiver<Value>,
    pub seen: Vec<Value>,
}

impl Publisher {
    pub fn start(gateway: &TestGateway, stream: &str, args: &[&str]) -> Publisher {
        Self::start_at(&gateway.ws_url(), stream, args)
    }

    /// A publisher to the signalling socket at `ws_url` (a proxy in front of gateways).
    pub fn start_at(ws_url: &str, stream: &str, args: &[&str]) -> Publisher {
        use webrtc_gateway_testkit::publisher_command;
        // Found now, or the test fails saying how to build it.
        publisher_command(ws_url, stream, args).unwrap_or_else(|e| panic!("{e}"));
        let (ws_url, name) = (ws_url.to_string(), stream.to_string());
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut process = Process::new(&format!("publisher {stream}"), move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut command = publisher_command(&ws_url, &name, &args).expect("found before");
            command.env("RUST_LOG", "warn");
            command
        })
        .stdout_piped()
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
        let stdout = process.take_stdout().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str::<Value>(&line)
                    && tx.send(value).is_err()
                {
                    break;
                }
            }
        });
        Publisher {
            process,
            lines,
            seen: Vec::new(),
        }
    }
    /// Waits for the publisher's own connection to reach `state`; panics on timeout.
    pub fn wait_for_ice(&mut self, state: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self
            .seen
            .iter()
            .any(|v| v["type"] == "ice" && v["state"] == state)
        {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(value) => self.seen.push(value),
                Err(_) => panic!("publisher's connection never {state}: {:?}", self.seen),
            }
        }
    }

    /// Waits for a message of type `kind`; panics on timeout.
    pub fn wait_for(&mut self, kind: &str, timeout: Duration) -> Value {
        if let Some(v) = self.seen.iter().find(|v| v["type"] == kind) {
            return v.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(value) => {
                    self.seen.push(value.clone());
                    if value["type"] == kind {
                        return value;
                    }
                }
                Err(_) => panic!(
                    "publisher saw no {kind:?} within {timeout:?}; saw {:?}",
                    self.seen
                        .iter()
                        .map(|v| v["type"].clone())
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    pub fn signal(&self, signal: &str) {
        self.process.signal(signal_named(signal));
    }

    pub fn kill(&mut self) {
        self.process.kill();
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        match self.process.wait_exit(timeout) {
            Some(status) => status.code(),
            None => panic!("publisher did not exit within {timeout:?}"),
        }
    }
}

/// A raw signalling connection speaking JSON.
pub struct Signalling {
    socket: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    /// The gateway's first message, `{"type": "welcome", "ice_servers": [...]}`.
    pub welcome: Value,
}

impl Signalling {
    pub fn connect(gateway: &TestGateway) -> Signalling {
        Self::connect_to(&gateway.ws_url())
    }

    /// A connection to `url` (`/ws` with a query); its `welcome` read.
    pub fn connect_to(url: &str) -> Signalling {
        let (socket, _) = tungstenite::connect(url).unwrap();
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = socket.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        }
        let mut signalling = Signalling {
            socket,
            welcome: Value::Null,
        };
        let welcome = signalling.receive();
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        signalling.welcome = welcome;
        signalling
    }

    pub fn send_text(&mut self, text: &str) {
        self.socket
            .send(tungstenite::Message::Text(text.to_string().into()))
            .unwrap();
    }

    pub fn send(&mut self, value: &Value) {
        self.send_text(&value.to_string());
    }

    /// The next message that is not a candidate.
    pub fn receive(&mut self) -> Value {
        loop {
            match self.socket.read().expect("a message from the gateway") {
                tungstenite::Message::Text(text) => {
                    let value: Value = serde_json::from_str(&text).unwrap();
                    if value["type"] != "candidate" {
                        return value;
                    }
                }
                tungstenite::Message::Close(_) => panic!("gateway closed the socket"),
                _ => {}
            }
        }
    }

    pub fn close(mut self) {
        let _ = self.socket.close(None);
        let _ = self.socket.flush();
    }
}

/// The TURN REST credential of `username` (base64 of HMAC-SHA1 keyed with `secret`),
/// made by openssl, apart from the gateway.
pub fn turn_rest_credential(secret: &str, username: &str) -> String {
    let output = Command::new("bash")
        .args([
            "-c",
            "printf '%s' \"$1\" | openssl dgst -sha1 -hmac \"$2\" -binary | base64",
            "bash",
            username,
            secret,
        ])
        .output()
        .expect("openssl runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}
