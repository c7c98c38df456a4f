//! The operator's publish and read hooks: a publish or a read is POSTed there as JSON,
//! signed (see [`super::signature`]); a 2xx allows it, 401 and 403 refuse it with the
//! hook's message, and anything else, or no answer within `hooks.timeout_ms`, refuses
//! it as the hook being unavailable. Allowed reads are remembered for `hooks.cache_s`.

use super::Denied;
use crate::hook_signature::{SIGNATURE_HEADER, signature};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The most allowed reads remembered at once.
pub const MAX_REMEMBERED: usize = 10_000;
/// The longest hook message passed on to the client.
const MAX_MESSAGE: usize = 300;

/// What a hook is asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HookRequest {
    /// `publish` or `read`.
    pub action: &'static str,
    /// The stream; none for a listing of every recording.
    pub stream: Option<String>,
    /// `websocket` or `whip`, for a publish.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<&'static str>,
    pub token: Option<String>,
    pub remote_addr: String,
    pub user_agent: String,
    pub query: String,
    /// The path read, for a read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The node that asks.
    pub node: String,
}

/// What a hook's 2xx answer may say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HookAnswer {
    /// Records this stream, or not, whatever `record.enabled` says.
    #[serde(default)]
    pub record: Option<bool>,
}

/// Sends the requests to the hooks.
#[derive(Debug)]
pub struct HookClient {
    client: reqwest::Client,
    secret: String,
    timeout: Duration,
}

impl HookClient {
    pub fn new(secret: &str, timeout: Duration) -> Self {
        Self {
            // A redirect would turn the POST into a body-less GET that someone else
            // answers: a hook's 3xx is an answer like any other that is not 2xx.
            client: reqwest::Client::builder()
                .timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
            secret: secret.to_string(),
            timeout,
        }
    }

    /// Asks the hook at `url`.
    pub async fn ask(&self, url: &str, request: &HookRequest) -> Result<HookAnswer, Denied> {
        let body = serde_json::to_vec(request).unwrap_or_default();
        let sent = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, signature(&self.secret, &body))
            .body(body)
            .send();
        let unavailable =
            |why: String| Denied::HookUnavailable(format!("the {} hook {why}", request.action));
        let response = match tokio::time::timeout(self.timeout, sent).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) if e.is_timeout() => {
                return Err(unavailable(format!(
                    "did not answer within {} ms",
                    self.timeout.as_millis()
                )));
            }
            Ok(Err(e)) => return Err(unavailable(format!("cannot be reached: {e}"))),
            Err(_) => {
                return Err(unavailable(format!(
                    "did not answer within {} ms",
                    self.timeout.as_millis()
                )));
            }
        };
        let status = response.status().as_u16();
        let text = tokio::time::timeout(self.timeout, response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        answer(request.action, status, &text)
    }
}

/// What a hook's answer means.
pub fn answer(action: &str, status: u16, body: &str) -> Result<HookAnswer, Denied> {
    match status {
        200..=299 => Ok(serde_json::from_str(body).unwrap_or_default()),
        401 => Err(Denied::Unauthorized(message(action, body))),
        403 => Err(Denied::Forbidden(message(action, body))),
        other => Err(Denied::HookUnavailable(format!(
            "the {action} hook answered {other}"
        ))),
    }
}

/// The hook's message: its JSON `message` or `error`, or its text, cut short.
fn message(action: &str, body: &str) -> String {
    #[derive(Deserialize)]
    struct Said {
        message: Option<String>,
        error: Option<String>,
    }
    let said = serde_json::from_str::<Said>(body)
        .ok()
        .and_then(|s| s.message.or(s.error))
        .unwrap_or_else(|| body.trim().to_string());
    let said: String = said
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_MESSAGE)
        .collect();
    if said.is_empty() {
        format!("the {action} hook refused")
    } else {
        said
    }
}

/// Allowed (token, stream) reads and until when they are remembered.
#[derive(Debug, Default)]
pub struct ReadCache {
    allowed: HashMap<(String, String), Instant>,
}

impl ReadCache {
    /// Whether `key` was allowed and is still remembered at `now`.
    pub fn allowed(&self, key: &(String, String), now: Instant) -> bool {
        self.allowed.get(key).is_some_and(|until| *until > now)
    }

    /// Remembers `key` until `until`; past [`MAX_REMEMBERED`], the expired go first,
    /// and if none has, everything is forgotten.
    pub fn remember(&mut self, key: (String, String), until: Instant, now: Instant) {
        if self.allowed.len() >= MAX_REMEMBERED && !self.allowed.contains_key(&key) {
            self.allowed.retain(|_, u| *u > now);
            if self.allowed.len() >= MAX_REMEMBERED {
                self.allowed.clear();
            }
        }
        self.allowed.insert(key, until);
    }

    pub fn len(&self) -> usize {
        self.allowed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.allowed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        assert_eq!(answer("publish", 200, ""), Ok(HookAnswer { record: None }));
        assert_eq!(
            answer("publish", 201, r#"{"record": false}"#),
            Ok(HookAnswer {
                record: Some(false)
            })
        );
        assert_eq!(
            answer("publish", 403, r#"{"message": "banned"}"#),
            Err(Denied::Forbidden("banned".into()))
        );
        assert_eq!(
            answer("read", 401, "  who are you\n"),
            Err(Denied::Unauthorized("who are you".into()))
        );
        assert_eq!(
            answer("read", 401, ""),
            Err(Denied::Unauthorized("the read hook refused".into()))
        );
        assert!(matches!(
            answer("read", 500, "oops"),
            Err(Denied::HookUnavailable(_))
        ));
        assert!(matches!(
            answer("read", 302, ""),
            Err(Denied::HookUnavailable(_))
        ));
    }

    #[test]
    fn the_read_cache_forgets_and_is_bounded() {
        let now = Instant::now();
        let later = now + Duration::from_secs(10);
        let mut cache = ReadCache::default();
        let key = |n: usize| (format!("t{n}"), "cam".to_string());
        cache.remember(key(0), later, now);
        assert!(cache.allowed(&key(0), now));
        assert!(!cache.allowed(&key(0), later));
        assert!(!cache.allowed(&key(1), now));
        for n in 1..MAX_REMEMBERED + 5 {
            cache.remember(key(n), later, now);
        }
        assert!(cache.len() <= MAX_REMEMBERED);
        // Expired entries are dropped first.
        let mut cache = ReadCache::default();
        for n in 0..MAX_REMEMBERED {
            cache.remember(key(n), now, now);
        }
        cache.remember(key(MAX_REMEMBERED), later, now);
        assert_eq!(cache.len(), 1);
    }
}
