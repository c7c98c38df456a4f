//! The ICE servers a publisher is given (the `welcome` message, `GET /api/ice-servers`,
//! WHIP's `Link` headers): the STUN URLs of `webrtc.ice_servers` as they are, and its
//! TURN URLs with credentials. With `webrtc.turn_secret` the credentials are made for
//! each publisher by the TURN REST scheme that coturn's `use-auth-secret` checks:
//! username `EXPIRY:STREAM` (unix seconds), credential base64(HMAC-SHA1(secret,
//! username)); without it, `webrtc.ice_username` and `webrtc.ice_credential`. Plain
//! functions of the configuration and the clock, no I/O.

use crate::config::WebrtcConfig;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha1::Sha1;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long minted TURN credentials stay valid. A TURN server checks the expiry when a
/// relay is allocated and refreshed, so this bounds a relayed publication's length too.
pub const CREDENTIAL_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// One entry of an `RTCConfiguration`'s `iceServers`, as the page and
/// `/api/ice-servers` get it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Whether the TURN servers are given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// With their credentials (minted, or the configured ones).
    Given,
    /// Left out: the caller has not shown that it may publish, and a TURN URL is of no
    /// use without its credentials (a browser refuses one).
    Withheld,
}

fn is_turn(url: &str) -> bool {
    url.starts_with("turn:") || url.starts_with("turns:")
}

/// The TURN REST credential of `username`: base64(HMAC-SHA1(secret, username)).
pub fn turn_credential(secret: &str, username: &str) -> String {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any size");
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// The TURN username and credential for a publisher of `stream` (`who` it is, for the
/// TURN server's logs) at `now`: minted from `turn_secret`, else the configured ones,
/// else none.
pub fn turn_credentials(
    config: &WebrtcConfig,
    who: &str,
    now: SystemTime,
) -> Option<(String, String)> {
    if !config.turn_secret.is_empty() {
        let expiry = (now + CREDENTIAL_LIFETIME)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let username = format!("{expiry}:{who}");
        let credential = turn_credential(&config.turn_secret, &username);
        return Some((username, credential));
    }
    (!config.ice_username.is_empty())
        .then(|| (config.ice_username.clone(), config.ice_credential.clone()))
}

/// The ICE servers for a publisher of `who` (a stream name, or a label where none is
/// known yet): one entry with every STUN URL, one with every TURN URL and its
/// credentials. A TURN URL with no credentials to give is left out.
pub fn for_publisher(
    config: &WebrtcConfig,
    who: &str,
    turn: Turn,
    now: SystemTime,
) -> Vec<IceServer> {
    let (turn_urls, stun_urls): (Vec<String>, Vec<String>) =
        config.ice_servers.iter().cloned().partition(|u| is_turn(u));
    let mut servers = Vec::new();
    if !stun_urls.is_empty() {
        servers.push(IceServer {
            urls: stun_urls,
            username: None,
            credential: None,
        });
    }
    if turn == Turn::Given
        && !turn_urls.is_empty()
        && let Some((username, credential)) = turn_credentials(config, who, now)
    {
        servers.push(IceServer {
            urls: turn_urls,
            username: Some(username),
            credential: Some(credential),
        });
    }
    servers
}

/// `Link` header values for WHIP (RFC 9725 section 4.6), one per URL.
pub fn links(servers: &[IceServer]) -> Vec<String> {
    let mut links = Vec::new();
    for server in servers {
        for url in &server.urls {
            let mut link = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(username), Some(credential)) = (&server.username, &server.credential) {
                link.push_str(&format!(
                    "; username=\"{username}\"; credential=\"{credential}\"; \
                     credential-type=\"password\""
                ));
            }
            links.push(link);
        }
    }
    links
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(secret: &str) -> WebrtcConfig {
        WebrtcConfig {
            ice_servers: vec![
                "stun:stun.example.net".into(),
                "turn:turn.example.net:3478?transport=udp".into(),
                "turns:turn.example.net:5349".into(),
            ],
            ice_username: "user".into(),
            ice_credential: "pass".into(),
            turn_secret: secret.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_credential_matches_one_made_by_openssl() {
        // printf '%s' '1700000000:cam1' | openssl dgst -sha1 -hmac 'north-wind' -binary | base64
        assert_eq!(
            turn_credential("north-wind", "1700000000:cam1"),
            "9YDxpSPAsYGSQrHEpvENrN/Vl/4="
        );
    }

    #[test]
    fn minted_credentials_name_the_expiry_and_the_stream() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000 - 12 * 3600);
        let servers = for_publisher(&config("north-wind"), "cam1", Turn::Given, now);
        assert_eq!(
            serde_json::to_value(&servers).unwrap(),
            serde_json::json!([
                {"urls": ["stun:stun.example.net"]},
                {"urls": ["turn:turn.example.net:3478?transport=udp", "turns:turn.example.net:5349"],
                 "username": "1700000000:cam1", "credential": "9YDxpSPAsYGSQrHEpvENrN/Vl/4="},
            ])
        );
    }

    #[test]
    fn without_a_secret_the_configured_credentials_are_given() {
        let servers = for_publisher(&config(""), "cam1", Turn::Given, SystemTime::now());
        assert_eq!(servers[1].username.as_deref(), Some("user"));
        assert_eq!(servers[1].credential.as_deref(), Some("pass"));
        // No credentials at all: the TURN URLs are of no use, and left out.
        let bare = WebrtcConfig {
            ice_username: String::new(),
            ..config("")
        };
        let servers = for_publisher(&bare, "cam1", Turn::Given, SystemTime::now());
        assert_eq!(servers.len(), 1);
        assert_eq!(servers[0].urls, vec!["stun:stun.example.net".to_string()]);
    }

    #[test]
    fn withheld_turn_leaves_the_stun_urls() {
        let servers = for_publisher(&config("s"), "cam1", Turn::Withheld, SystemTime::now());
        assert_eq!(
            servers,
            vec![IceServer {
                urls: vec!["stun:stun.example.net".into()],
                username: None,
                credential: None,
            }]
        );
        assert!(
            for_publisher(
                &WebrtcConfig::default(),
                "x",
                Turn::Given,
                SystemTime::now()
            )
            .is_empty()
        );
    }

    #[test]
    fn links_carry_the_credentials() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000 - 12 * 3600);
        let servers = for_publisher(&config("north-wind"), "cam1", Turn::Given, now);
        assert_eq!(
            links(&servers),
            vec![
                "<stun:stun.example.net>; rel=\"ice-server\"".to_string(),
                "<turn:turn.example.net:3478?transport=udp>; rel=\"ice-server\"; \
                 username=\"1700000000:cam1\"; credential=\"9YDxpSPAsYGSQrHEpvENrN/Vl/4=\"; \
                 credential-type=\"password\""
                    .to_string(),
                "<turns:turn.example.net:5349>; rel=\"ice-server\"; \
                 username=\"1700000000:cam1\"; credential=\"9YDxpSPAsYGSQrHEpvENrN/Vl/4=\"; \
                 credential-type=\"password\""
                    .to_string(),
            ]
        );
    }
}
