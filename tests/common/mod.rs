//! The test harness: a real gateway process on free ports, real publishers
//! (`webrtc-gateway-publish`, a webrtc-rs client sending GStreamer-encoded VP8/Opus),
//! raw signalling sockets, ffmpeg decoding the outputs, and browsers over WebDriver
//! (`browser`).

#![allow(dead_code)]

pub mod browser;
pub mod fetch;
pub mod players;
pub mod servers;

use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const GATEWAY: &str = env!("CARGO_BIN_EXE_webrtc-gateway");
pub const PUBLISHER: &str = env!("CARGO_BIN_EXE_webrtc-gateway-publish");
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

pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A base port with `count` free UDP ports from it, below the kernel's ephemeral range
/// (32768 and up), so that no socket bound to port 0 later (ICE, a player) takes one.
pub fn free_udp_range(count: u16) -> u16 {
    for _ in 0..200 {
        let base = 20000 + (rand::random::<u16>() % 600) * 20;
        let all_free = (0..count).all(|i| UdpSocket::bind(("127.0.0.1", base + i)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no free UDP port range");
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
    child: Option<Child>,
    /// `http` or `https`.
    pub scheme: &'static str,
    pub port: u16,
    pub port_base: u16,
    pub dir: tempfile::TempDir,
    log: PathBuf,
    /// Environment variables the gateway is started with.
    env: Vec<(String, String)>,
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
            [limits]
            max_publishers = 4
            "#,
            root = ROOT
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
        let log = dir.path().join("gateway.log");
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
        let child = command
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir.path())
            .envs(env.iter().copied())
            .env("RUST_LOG", "info,webrtc=warn,rtc=warn,webrtc_gateway=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let https = config["http"]
            .get("tls_self_signed")
            .and_then(toml::Value::as_bool)
            .unwrap_or(false)
            || config["http"].get("tls_cert").is_some();
        let mut gateway = TestGateway {
            child: Some(child),
            scheme: if https { "https" } else { "http" },
            port,
            port_base,
            dir,
            log,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        gateway.wait_healthy();
        gateway
    }

    /// Starts the gateway again, after it exited or was killed, with the same
    /// configuration, directory and environment; its log goes on in the same file.
    pub fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(GATEWAY)
            .arg("--config")
            .arg(self.dir.path().join("gateway.toml"))
            .current_dir(self.dir.path())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info,webrtc=warn,rtc=warn,webrtc_gateway=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.as_mut().unwrap().try_wait() {
                panic!("gateway exited with {status}:\n{}", self.log());
            }
            if let Ok(r) = client().get(self.url("/healthz")).send()
                && r.status() == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("gateway did not become healthy:\n{}", self.log());
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.port)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        client().get(self.url(path)).send().unwrap()
    }

    pub fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.get(path);
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    /// The stream object, or None once the name is free.
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

    /// Sends a signal to the gateway process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        Command::new("kill").args([signal, &pid]).status().unwrap();
    }

    /// Waits for the gateway to exit; returns its exit code and how long it took.
    pub fn wait_exit(&mut self, timeout: Duration) -> (Option<i32>, Duration) {
        let start = Instant::now();
        let child = self.child.as_mut().unwrap();
        while start.elapsed() < timeout {
            if let Some(status) = child.try_wait().unwrap() {
                return (status.code(), start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("gateway did not exit within {timeout:?}");
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() || std::env::var_os("GATEWAY_LOG").is_some() {
            eprintln!("---- gateway log ----\n{}", self.log());
        }
    }
}

/// A publisher process; its printed JSON lines are the gateway's messages.
pub struct Publisher {
    child: Child,
    lines: mpsc::Receiver<Value>,
    pub seen: Vec<Value>,
}

impl Publisher {
    pub fn start(gateway: &TestGateway, stream: &str, args: &[&str]) -> Publisher {
        Self::start_at(&gateway.ws_url(), stream, args)
    }

    /// A publisher to the signalling socket at `ws_url` (a proxy in front of gateways).
    pub fn start_at(ws_url: &str, stream: &str, args: &[&str]) -> Publisher {
        let mut child = Command::new(PUBLISHER)
            .args(["--url", ws_url, "--stream", stream])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
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
            child,
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
        Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("publisher did not exit within {timeout:?}");
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.signal("-CONT");
        self.kill();
    }
}

/// A raw signalling connection speaking JSON.
pub struct Signalling {
    socket: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
}

impl Signalling {
    pub fn connect(gateway: &TestGateway) -> Signalling {
        let (socket, _) = tungstenite::connect(gateway.ws_url()).unwrap();
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = socket.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        }
        Signalling { socket }
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

/// What ffmpeg made of an SDP URL.
#[derive(Debug, Default)]
pub struct Decoded {
    pub video_codec: Option<String>,
    pub size: Option<(u32, u32)>,
    pub audio_codec: Option<String>,
    /// Video frames decoded in the first `window` seconds after the first one.
    pub video_frames: usize,
    pub audio_frames: usize,
    pub stderr: String,
}

impl Decoded {
    /// H.264 video with at least `min_frames` decoded frames, and Opus audio.
    pub fn assert_h264_and_opus(&self, min_frames: usize) {
        assert_eq!(self.video_codec.as_deref(), Some("h264"), "{}", self.stderr);
        assert!(self.video_frames >= min_frames, "{}", self.video_frames);
        assert_eq!(self.audio_codec.as_deref(), Some("opus"));
    }
}

/// Receives a stream's RTP through its SDP file with ffmpeg and decodes `window` seconds.
pub fn decode_sdp(url: &str, window: f64) -> Decoded {
    let mut child = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-protocol_whitelist",
            "file,http,tcp,udp,rtp",
        ])
        .args(["-i", url, "-t", &format!("{}", window + 2.0), "-map", "0"])
        .args(["-f", "framecrc", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ffmpeg is installed");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    let out = rx
        .recv_timeout(Duration::from_secs_f64(window + 20.0))
        .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    let stderr = err_thread.join().unwrap_or_default();
    parse_decoded(&out, stderr, window)
}

fn parse_decoded(framecrc: &str, stderr: String, window: f64) -> Decoded {
    let mut decoded = Decoded::default();
    for line in stderr.lines() {
        let line = line.trim();
        if !line.starts_with("Stream #0:") || line.contains("->") {
            continue;
        }
        if let Some(rest) = line.split("Video: ").nth(1) {
            if decoded.video_codec.is_some() {
                continue;
            }
            decoded.video_codec = rest.split([' ', ',']).next().map(String::from);
            decoded.size = rest.split([' ', ',']).find_map(|t| {
                let (w, h) = t.split_once('x')?;
                Some((w.parse().ok()?, h.parse().ok()?))
            });
        } else if let Some(rest) = line.split("Audio: ").nth(1)
            && decoded.audio_codec.is_none()
        {
            decoded.audio_codec = rest.split([' ', ',']).next().map(String::from);
        }
    }
    // Output stream 0 is video when there is video; its time base is `#tb 0: 1/N`.
    let video_index = if decoded.video_codec.is_some() {
        "0"
    } else {
        "-"
    };
    let audio_index = if decoded.video_codec.is_some() {
        "1"
    } else {
        "0"
    };
    let mut tb = 1.0 / 30.0;
    let mut first: Option<f64> = None;
    for line in framecrc.lines() {
        if let Some(rest) = line.strip_prefix(&format!("#tb {video_index}: ")) {
            if let Some((n, d)) = rest.trim().split_once('/') {
                tb = n.parse::<f64>().unwrap_or(1.0) / d.parse::<f64>().unwrap_or(30.0);
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() < 3 {
            continue;
        }
        if fields[0] == video_index {
            let pts: f64 = fields[2].parse::<f64>().unwrap_or(0.0) * tb;
            let start = *first.get_or_insert(pts);
            if pts - start < window {
                decoded.video_frames += 1;
            }
        } else if fields[0] == audio_index {
            decoded.audio_frames += 1;
        }
    }
    decoded.stderr = stderr;
    decoded
}

/// Polls `f` until it gives a value or `timeout` passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
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

pub fn root_path(relative: &str) -> PathBuf {
    Path::new(ROOT).join(relative)
}
