//! Reading `gateway.toml`: unknown keys, each section's types, then every value's range,
//! each problem on one line naming its key.

use super::sections::Config;
use super::values::redact_password;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// A configuration that could not be loaded: every problem found, one line each.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

impl Config {
    /// Reads `path`; a missing file means built-in defaults only when `path` was not given
    /// explicitly by the user.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Parses and validates TOML text. Each section is read on its own, so that one
    /// section's type error does not hide another's problems.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut value: toml::Table = toml::from_str(text).map_err(|e| {
            ConfigError::Invalid(vec![format!("syntax: {}", one_line(e.message()))])
        })?;
        let mut problems = Vec::new();
        let schema = toml::Table::try_from(Config::default()).expect("defaults serialize");
        unknown_keys(&value, &schema, "", &mut problems);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems));
        }
        let mut config = Config::default();
        let mut failed = Vec::new();
        macro_rules! read {
            ($($field:ident),*) => {$(
                let name = stringify!($field);
                if let Some(given) = value.remove(name) {
                    match read_section(name, given) {
                        Ok(parsed) => config.$field = parsed,
                        Err(problem) => {
                            problems.push(problem);
                            failed.push(name);
                        }
                    }
                }
            )*};
        }
        read!(
            http, rtp, hls, record, transcode, webrtc, signalling, limits, auth, hooks, cluster
        );
        if let Err(invalid) = config.validate() {
            // A failed section holds defaults: its values were not checked.
            problems.extend(
                invalid
                    .into_iter()
                    .filter(|p| !failed.iter().any(|f| p.starts_with(&format!("{f}.")))),
            );
        }
        if problems.is_empty() {
            return Ok(config);
        }
        // In the file's section order, as one reads it.
        problems.sort_by_key(|p| {
            SECTIONS
                .iter()
                .position(|s| p.starts_with(&format!("{s}.")))
        });
        Err(ConfigError::Invalid(problems))
    }

    /// Checks every value's range and form; returns one message per problem.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut p = Problems::default();
        p.range(
            "http.request_timeout_s",
            self.http.request_timeout_s,
            1,
            3600,
        );
        p.range(
            "signalling.publish_timeout_s",
            self.signalling.publish_timeout_s,
            1,
            3600,
        );
        p.range(
            "webrtc.media_timeout_s",
            self.webrtc.media_timeout_s,
            1,
            3600,
        );
        p.range(
            "limits.max_connections",
            self.limits.max_connections,
            16,
            1_000_000,
        );
        p.range(
            "limits.max_remote_candidates",
            self.limits.max_remote_candidates,
            1,
            1000,
        );
        p.range(
            "limits.max_input_width",
            self.limits.max_input_width,
            16,
            16384,
        );
        p.range(
            "limits.max_input_height",
            self.limits.max_input_height,
            16,
            16384,
        );
        let (cert, key) = (&self.http.tls_cert, &self.http.tls_key);
        if cert.as_os_str().is_empty() != key.as_os_str().is_empty() {
            p.push(
                "http.tls_key",
                "http.tls_cert and http.tls_key must both be set or both be empty".into(),
            );
        }
        if self.http.tls_self_signed && !cert.as_os_str().is_empty() {
            p.push(
                "http.tls_self_signed",
                "must be false when http.tls_cert is set".into(),
            );
        }
        p.range("hooks.timeout_ms", self.hooks.timeout_ms, 100, 60_000);
        p.range("hooks.cache_s", self.hooks.cache_s, 0, 3600);
        for (key, url) in [
            ("hooks.publish_url", &self.hooks.publish_url),
            ("hooks.read_url", &self.hooks.read_url),
            ("hooks.events_url", &self.hooks.events_url),
            ("auth.jwks_url", &self.auth.jwks_url),
        ] {
            if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
                p.push(
                    key,
                    format!("must be an http:// or https:// URL or empty, got {url:?}"),
                );
            }
        }
        p.range("cluster.lease_ms", self.cluster.lease_ms, 1000, 600_000);
        let redis = &self.cluster.redis_url;
        if !redis.is_empty() {
            match url::Url::parse(redis) {
                Ok(url) if ["redis", "rediss"].contains(&url.scheme()) && url.has_host() => {}
                _ => p.push(
                    "cluster.redis_url",
                    format!(
                        "must be redis://[user:password@]host:port[/db] or rediss://..., \
                         or empty, got {:?}",
                        redact_password(redis)
                    ),
                ),
            }
        }
        let node_id = &self.cluster.node_id;
        if !node_id.chars().all(|c| c.is_ascii_graphic()) {
            // It goes in headers between the nodes.
            p.push(
                "cluster.node_id",
                format!(
                    "must be letters, digits and punctuation of ASCII (no spaces), got {node_id:?}"
                ),
            );
        }
        let url = &self.cluster.advertise_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            p.push(
                "cluster.advertise_url",
                format!("must be an http:// or https:// URL or empty, got {url:?}"),
            );
        }
        let ca_file = &self.cluster.ca_file;
        if !ca_file.as_os_str().is_empty() {
            match std::fs::read_to_string(ca_file) {
                Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => {}
                Ok(_) => p.push(
                    "cluster.ca_file",
                    format!("{} holds no PEM certificate", ca_file.display()),
                ),
                Err(e) => p.push(
                    "cluster.ca_file",
                    format!("cannot read {}: {e}", ca_file.display()),
                ),
            }
        }
        if let Err(e) = super::values::StoreUrl::parse(&self.record.upload_url) {
            p.push("record.upload_url", e);
        }
        let endpoint = &self.record.upload_endpoint;
        if !(endpoint.is_empty()
            || endpoint.starts_with("http://")
            || endpoint.starts_with("https://"))
        {
            p.push(
                "record.upload_endpoint",
                format!("must be an http:// or https:// URL or empty, got {endpoint:?}"),
            );
        }
        p.range(
            "record.upload_part_kib",
            self.record.upload_part_kib,
            5 * 1024,
            4 * 1024 * 1024,
        );
        p.range("rtp.port_base", self.rtp.port_base, 1024, 65532);
        let last_port = self.rtp.port_base as u64 + 4 * self.limits.max_publishers as u64 - 1;
        if last_port > 65535 && (1024..=65532).contains(&self.rtp.port_base) {
            p.push(
                "rtp.port_base",
                format!(
                    "leaves no room for limits.max_publishers = {} streams (4 ports each), got {}",
                    self.limits.max_publishers, self.rtp.port_base
                ),
            );
        }
        p.range("rtp.multicast_ttl", self.rtp.multicast_ttl, 1, 255);
        p.range("hls.segment_duration_s", self.hls.segment_duration_s, 1, 10);
        p.range("hls.playlist_length", self.hls.playlist_length, 1, 100);
        p.range("hls.linger_s", self.hls.linger_s, 0, 3600);
        p.range("hls.part_duration_ms", self.hls.part_duration_ms, 100, 2000);
        if self.hls.part_duration_ms > self.hls.segment_duration_s * 500
            && (100..=2000).contains(&self.hls.part_duration_ms)
            && (1..=10).contains(&self.hls.segment_duration_s)
        {
            p.push(
                "hls.part_duration_ms",
                format!(
                    "must be at most half of hls.segment_duration_s ({} ms), got {}",
                    self.hls.segment_duration_s * 500,
                    self.hls.part_duration_ms
                ),
            );
        }
        p.range("transcode.width", self.transcode.width, 16, 3840);
        p.range("transcode.height", self.transcode.height, 16, 2160);
        for (key, value) in [
            ("transcode.width", self.transcode.width),
            ("transcode.height", self.transcode.height),
        ] {
            if value % 2 == 1 {
                p.push(key, format!("must be even, got {value}"));
            }
        }
        p.range("transcode.framerate", self.transcode.framerate, 1, 120);
        p.range(
            "transcode.video_bitrate_kbps",
            self.transcode.video_bitrate_kbps,
            100,
            100_000,
        );
        p.range(
            "transcode.keyframe_interval_s",
            self.transcode.keyframe_interval_s,
            1,
            10,
        );
        if self.transcode.keyframe_interval_s > self.hls.segment_duration_s
            && (1..=10).contains(&self.hls.segment_duration_s)
        {
            p.push(
                "transcode.keyframe_interval_s",
                format!(
                    "must not be longer than hls.segment_duration_s ({}), got {}",
                    self.hls.segment_duration_s, self.transcode.keyframe_interval_s
                ),
            );
        }
        p.range(
            "transcode.encoder_threads",
            self.transcode.encoder_threads,
            0,
            16,
        );
        p.range(
            "transcode.jitter_buffer_ms",
            self.transcode.jitter_buffer_ms,
            0,
            2000,
        );
        for (i, url) in self.webrtc.ice_servers.iter().enumerate() {
            let scheme_ok = ["stun:", "stuns:", "turn:", "turns:"]
                .iter()
                .any(|s| url.starts_with(s) && url.len() > s.len());
            if !scheme_ok {
                p.push(
                    &format!("webrtc.ice_servers[{i}]"),
                    format!("must be a stun:, stuns:, turn: or turns: URL, got {url:?}"),
                );
            }
        }
        p.range("webrtc.udp_port", self.webrtc.udp_port, 0, 65535);
        p.range("webrtc.tcp_port", self.webrtc.tcp_port, 0, 65535);
        p.range("limits.max_publishers", self.limits.max_publishers, 1, 1000);
        p.range(
            "limits.max_message_bytes",
            self.limits.max_message_bytes,
            1024,
            16 * 1024 * 1024,
        );
        p.range(
            "limits.max_rtp_destinations",
            self.limits.max_rtp_destinations,
            0,
            64,
        );
        for (i, stream) in self.auth.streams.iter().enumerate() {
            if stream.token.is_empty() {
                p.push(
                    &format!("auth.streams[{i}].token"),
                    "must not be empty".into(),
                );
            }
        }
        if p.0.is_empty() { Ok(()) } else { Err(p.0) }
    }

    /// The effective configuration as TOML text.
    /// What is valid but unsafe, one line per key: `check-config` and the start say it.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if !self.cluster.redis_url.is_empty() && self.cluster.secret.is_empty() {
            warnings.push(
                "cluster.secret: empty while cluster.redis_url is set: the nodes take \
                 forwarded requests from anyone who can reach them; set the same secret on \
                 every node"
                    .to_string(),
            );
        }
        let hooks = &self.hooks;
        let hooked = [&hooks.publish_url, &hooks.read_url, &hooks.events_url];
        if hooked.iter().any(|url| !url.is_empty()) && hooks.secret.is_empty() {
            warnings.push(
                "hooks.secret: empty while a hook is set: its requests are signed with an                  empty key, so the hook cannot tell them from anyone else's"
                    .to_string(),
            );
        }
        let webrtc = &self.webrtc;
        let turn = |url: &String| url.starts_with("turn:") || url.starts_with("turns:");
        if !webrtc.turn_secret.is_empty() && !webrtc.ice_servers.iter().any(turn) {
            warnings.push(
                "webrtc.turn_secret: set while webrtc.ice_servers has no turn: or turns: URL, \
                 so no publisher is given a TURN server"
                    .to_string(),
            );
        }
        warnings
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("configuration serializes")
    }
}

/// The sections, in the order `gateway.toml` has them.
const SECTIONS: [&str; 11] = [
    "http",
    "rtp",
    "hls",
    "record",
    "transcode",
    "webrtc",
    "signalling",
    "limits",
    "auth",
    "hooks",
    "cluster",
];

/// One section of the file, or its first problem, named by its key.
fn read_section<T: DeserializeOwned>(section: &str, given: toml::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(given).map_err(|e| {
        // The TOML deserializer ends its messages with the key, which is said first.
        let message = one_line(&e.inner().to_string());
        let message = message
            .rsplit_once(" in `")
            .map_or(message.as_str(), |(head, _)| head);
        match e.path().to_string().as_str() {
            "." => format!("{section}: {message}"),
            path => format!("{section}.{path}: {message}"),
        }
    })
}

#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn push(&mut self, key: &str, message: String) {
        self.0.push(format!("{key}: {message}"));
    }

    fn range(&mut self, key: &str, value: u32, min: u32, max: u32) {
        if !(min..=max).contains(&value) {
            self.push(key, format!("must be between {min} and {max}, got {value}"));
        }
    }
}

/// Keys that earlier versions had, with what to set instead.
const REMOVED: &[(&str, &str)] = &[
    (
        "webrtc.udp_port_min",
        "every publisher now shares one UDP port: set webrtc.udp_port (0: a port per publisher)",
    ),
    (
        "webrtc.udp_port_max",
        "every publisher now shares one UDP port: set webrtc.udp_port (0: a port per publisher)",
    ),
];

/// Reports every key of `value` that the default configuration does not have.
fn unknown_keys(value: &toml::Table, schema: &toml::Table, prefix: &str, out: &mut Vec<String>) {
    for (key, item) in value {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (schema.get(key), item) {
            (None, _) => match REMOVED.iter().find(|(key, _)| *key == path) {
                Some((_, instead)) => out.push(format!("{path}: removed; {instead}")),
                None => out.push(format!("{path}: unknown key")),
            },
            (Some(toml::Value::Table(inner)), toml::Value::Table(given)) => {
                unknown_keys(given, inner, &path, out)
            }
            _ => {}
        }
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RecordFormat, X264Preset};

    fn problems(text: &str) -> Vec<String> {
        match Config::parse(text) {
            Ok(_) => vec![],
            Err(ConfigError::Invalid(p)) => p,
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn empty_file_gives_contract_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.http.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.rtp.port_base, 5004);
        assert_eq!(c.hls.segment_duration_s, 2);
        assert_eq!(c.hls.playlist_length, 6);
        assert!(!c.record.enabled);
        assert_eq!(c.record.format, RecordFormat::Mp4);
        assert_eq!((c.transcode.width, c.transcode.height), (1280, 720));
        assert_eq!(c.transcode.x264_preset, X264Preset::Veryfast);
        assert_eq!(c.limits.max_publishers, 16);
    }

    #[test]
    fn errors_name_the_key() {
        let table: &[(&str, &[&str])] = &[
            (
                "[hls]\nsegment_duration_s = 0",
                &["hls.segment_duration_s: must be between 1 and 10, got 0"],
            ),
            ("[http]\nfoo = 1", &["http.foo: unknown key"]),
            ("bogus = true", &["bogus: unknown key"]),
            (
                "[rtp]\nport_base = \"x\"",
                &["rtp.port_base: invalid type: string \"x\", expected u32"],
            ),
            (
                "[rtp]\nhost = \"nowhere\"",
                &["rtp.host: must be an IP address, got \"nowhere\""],
            ),
            (
                "[record]\nformat = \"avi\"",
                &["record.format: must be one of \"mp4\", \"mkv\", \"ts\", got \"avi\""],
            ),
            (
                "[transcode]\nwidth = 641",
                &["transcode.width: must be even, got 641"],
            ),
            (
                "[transcode]\nx264_preset = \"slow\"",
                &[
                    "transcode.x264_preset: must be one of ultrafast, superfast, veryfast, faster, fast, medium, got \"slow\"",
                ],
            ),
            (
                "[transcode]\nencoder_threads = 64",
                &["transcode.encoder_threads: must be between 0 and 16, got 64"],
            ),
            (
                "[transcode]\nkeyframe_interval_s = 4",
                &[
                    "transcode.keyframe_interval_s: must not be longer than hls.segment_duration_s (2), got 4",
                ],
            ),
            (
                "[webrtc]\nice_servers = [\"http://x\"]",
                &[
                    "webrtc.ice_servers[0]: must be a stun:, stuns:, turn: or turns: URL, got \"http://x\"",
                ],
            ),
            (
                "[webrtc]\nudp_port = 70000",
                &["webrtc.udp_port: must be between 0 and 65535, got 70000"],
            ),
            (
                "[webrtc]\ntcp_port = 70000",
                &["webrtc.tcp_port: must be between 0 and 65535, got 70000"],
            ),
            (
                "[webrtc]\nudp_port_min = 50000\nudp_port_max = 50100",
                &[
                    "webrtc.udp_port_max: removed; every publisher now shares one UDP port: set webrtc.udp_port (0: a port per publisher)",
                    "webrtc.udp_port_min: removed; every publisher now shares one UDP port: set webrtc.udp_port (0: a port per publisher)",
                ],
            ),
            (
                "[hls]\nvariant = \"dash\"",
                &["hls.variant: must be one of \"lowlatency\", \"fmp4\", \"mpegts\", got \"dash\""],
            ),
            (
                "[hls]\npart_duration_ms = 1500",
                &[
                    "hls.part_duration_ms: must be at most half of hls.segment_duration_s (1000 ms), got 1500",
                ],
            ),
            (
                "[hls]\npart_duration_ms = 50",
                &["hls.part_duration_ms: must be between 100 and 2000, got 50"],
            ),
            (
                "[limits]\nmax_publishers = 0",
                &["limits.max_publishers: must be between 1 and 1000, got 0"],
            ),
            (
                "[http]\nlisten = \"8080\"\n[hls]\nplaylist_length = 0",
                &[
                    "http.listen: must be an address such as \"0.0.0.0:8080\", got \"8080\"",
                    "hls.playlist_length: must be between 1 and 100, got 0",
                ],
            ),
            (
                "[transcode]\nx264_preset = \"slow\"\n[hls]\nsegment_duration_s = 1",
                &[
                    "transcode.x264_preset: must be one of ultrafast, superfast, veryfast, faster, fast, medium, got \"slow\"",
                ],
            ),
            (
                "[webrtc]\nbind_address = \"here\"\nnat_1to1_ips = [\"x\"]",
                &["webrtc.bind_address: must be an IP address or empty, got \"here\""],
            ),
            (
                "[record]\nupload_url = \"ftp://archive/x\"\nupload_endpoint = \"minio:9000\"\nupload_part_kib = 1024",
                &[
                    "record.upload_url: must be s3://, gs://, az:// or file:///, got ftp:// in \"ftp://archive/x\"",
                    "record.upload_endpoint: must be an http:// or https:// URL or empty, got \"minio:9000\"",
                    "record.upload_part_kib: must be between 5120 and 4194304, got 1024",
                ],
            ),
            (
                "[webrtc]\nnat_1to1_ips = [\"1.2.3.4\", \"x\"]",
                &["webrtc.nat_1to1_ips: must be IP addresses, got \"x\""],
            ),
            (
                "[[auth.streams]]\nname = \"../x\"\ntoken = \"t\"",
                &["auth.streams[0].name: stream names are 1 to 64 letters, digits, '_' or '-'"],
            ),
            (
                "http = 5",
                &["http: invalid type: integer `5`, expected struct HttpConfig"],
            ),
            (
                "[cluster]\nredis_url = \"http://h\"\nlease_ms = 10\nadvertise_url = \"gw1\"\nnode_id = \"gw 1\"",
                &[
                    "cluster.lease_ms: must be between 1000 and 600000, got 10",
                    "cluster.redis_url: must be redis://[user:password@]host:port[/db] or rediss://..., or empty, got \"http://h\"",
                    "cluster.node_id: must be letters, digits and punctuation of ASCII (no spaces), got \"gw 1\"",
                    "cluster.advertise_url: must be an http:// or https:// URL or empty, got \"gw1\"",
                ],
            ),
            (
                "[transcode]\nmode = \"never\"",
                &["transcode.mode: must be one of \"always\", \"auto\", got \"never\""],
            ),
            (
                "[cluster]\nca_file = \"/nonexistent/ca.pem\"",
                &[
                    "cluster.ca_file: cannot read /nonexistent/ca.pem: No such file or directory (os error 2)",
                ],
            ),
            (
                "[cluster]\nca_file = \"/dev/null\"",
                &["cluster.ca_file: /dev/null holds no PEM certificate"],
            ),
        ];
        for (text, want) in table {
            assert_eq!(&problems(text), want, "for {text:?}");
        }
    }

    #[test]
    fn a_cluster_without_a_secret_is_warned_of() {
        let redis = "[cluster]\nredis_url = \"redis://127.0.0.1:6379\"";
        let warnings = Config::parse(redis).unwrap().warnings();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].starts_with("cluster.secret: empty while cluster.redis_url is set"));
        let signed = format!("{redis}\nsecret = \"s\"");
        assert!(Config::parse(&signed).unwrap().warnings().is_empty());
        assert!(Config::default().warnings().is_empty());
    }

    #[test]
    fn hooks_without_a_secret_are_warned_of() {
        let hooked = "[hooks]\nevents_url = \"http://127.0.0.1:9/events\"";
        let warnings = Config::parse(hooked).unwrap().warnings();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].starts_with("hooks.secret: empty while a hook is set"));
        let signed = format!("{hooked}\nsecret = \"s\"");
        assert!(Config::parse(&signed).unwrap().warnings().is_empty());
    }

    #[test]
    fn a_turn_secret_without_a_turn_url_is_warned_of() {
        let secret = "[webrtc]\nturn_secret = \"s\"\nice_servers = [\"stun:127.0.0.1:3478\"]";
        assert_eq!(
            Config::parse(secret).unwrap().warnings(),
            vec![
                "webrtc.turn_secret: set while webrtc.ice_servers has no turn: or turns: URL, \
                 so no publisher is given a TURN server"
                    .to_string()
            ]
        );
        let turn = "[webrtc]\nturn_secret = \"s\"\nice_servers = [\"turn:127.0.0.1:3478\"]";
        assert!(Config::parse(turn).unwrap().warnings().is_empty());
    }

    #[test]
    fn syntax_error_is_one_line() {
        let p = problems("[http\nlisten=");
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("syntax: "), "{p:?}");
        assert!(!p[0].contains('\n'));
    }

    #[test]
    fn effective_config_round_trips() {
        let c = Config::parse("[transcode]\nwidth = 640\nheight = 360").unwrap();
        assert_eq!(Config::parse(&c.to_toml()).unwrap(), c);
    }
}
