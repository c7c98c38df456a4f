//! Who may publish and who may read: the static tokens of `[auth]`, JSON Web Tokens
//! (`auth.jwt_secret`, `auth.jwks_url`) and the operator's hooks (`hooks.publish_url`,
//! `hooks.read_url`), tried in that order:
//!
//! 1. a token equal to a configured static token allows, without asking the hook;
//! 2. with JWTs configured, a token shaped like a JWT is judged by its signature, its
//!    `exp` and its `publish` or `read` claim alone: valid and naming the stream allows
//!    (without asking the hook), anything else refuses;
//! 3. otherwise, with a hook configured, the hook decides;
//! 4. otherwise, what needs no token (nothing configured for it) is allowed, and the
//!    rest refused.
//!
//! Both signalling protocols and the HTTP media files ask [`Access`].

pub mod hooks;
pub mod jwt;

use crate::config::{AuthConfig, Config, HooksConfig};
use crate::name::StreamName;
use hooks::{HookAnswer, HookClient, HookRequest, ReadCache};
use jwt::{JwtError, Verifier};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Compares a presented token with a configured one in constant time.
pub fn token_matches(configured: &str, presented: Option<&str>) -> bool {
    presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(configured.as_bytes())))
}

/// Who asks, as the hooks are told.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub token: Option<String>,
    pub remote_addr: String,
    pub user_agent: String,
    /// The request's query string (the WebSocket's, for a WebSocket publish).
    pub query: String,
}

/// An allowed publish.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allowed {
    /// The publish hook's word on recording this stream, if it said one.
    pub record: Option<bool>,
}

/// Why access is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No valid token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// A valid token that does not allow this, or a hook's 403.
    #[error("{0}")]
    Forbidden(String),
    /// The hook did not answer, or answered neither 2xx nor 401/403 (503).
    #[error("{0}")]
    HookUnavailable(String),
}

/// What a presented JWT says, for [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtVerdict {
    /// No JWT: none configured, or the token is not shaped like one.
    None,
    /// A valid token; whether its claim names the stream.
    Valid { allows: bool },
    /// A token that is not taken, and why.
    Invalid(String),
}

/// The next step of a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Allow,
    Refuse(Denied),
    AskHook,
}

/// The order of [`Access`]: a matching static token, then a JWT, then the hook, then
/// open access where nothing is configured. `action` (`publishing`, `reading`) and
/// `what` (`publishing cam1`) word the refusals.
pub fn decide(
    static_match: bool,
    jwt: JwtVerdict,
    hook: bool,
    open: bool,
    (action, what): (&str, &str),
) -> Step {
    if static_match {
        return Step::Allow;
    }
    match jwt {
        JwtVerdict::Valid { allows: true } => Step::Allow,
        JwtVerdict::Valid { allows: false } => Step::Refuse(Denied::Forbidden(format!(
            "the token does not allow {what}"
        ))),
        JwtVerdict::Invalid(why) => Step::Refuse(Denied::Unauthorized(why)),
        JwtVerdict::None if hook => Step::AskHook,
        JwtVerdict::None if open => Step::Allow,
        JwtVerdict::None => Step::Refuse(Denied::Unauthorized(format!(
            "{action} needs a valid token"
        ))),
    }
}

/// The access rules of this node.
#[derive(Debug)]
pub struct Access {
    auth: AuthConfig,
    hooks: HooksConfig,
    node: String,
    jwt: Option<Verifier>,
    client: HookClient,
    reads: Mutex<ReadCache>,
}

impl Access {
    pub fn new(config: &Config, node: &str) -> Self {
        Self {
            auth: config.auth.clone(),
            hooks: config.hooks.clone(),
            node: node.to_string(),
            jwt: Verifier::new(&config.auth.jwt_secret, &config.auth.jwks_url),
            client: HookClient::new(
                &config.hooks.secret,
                Duration::from_millis(config.hooks.timeout_ms as u64),
            ),
            reads: Mutex::new(ReadCache::default()),
        }
    }

    async fn jwt_verdict(
        &self,
        token: Option<&str>,
        claim: impl Fn(&jwt::Claims) -> bool,
    ) -> JwtVerdict {
        let (Some(verifier), Some(token)) = (&self.jwt, token) else {
            return JwtVerdict::None;
        };
        if !jwt::looks_like_jwt(token) {
            return JwtVerdict::None;
        }
        match verifier.verify(token).await {
            Ok(claims) => JwtVerdict::Valid {
                allows: claim(&claims),
            },
            Err(e @ (JwtError::KeySet(_) | JwtError::UnknownKey(_))) => {
                tracing::warn!("a JSON Web Token is refused: {e}");
                JwtVerdict::Invalid(e.to_string())
            }
            Err(e) => JwtVerdict::Invalid(e.to_string()),
        }
    }

    async fn ask(&self, url: &str, request: &HookRequest) -> Result<HookAnswer, Denied> {
        let answer = self.client.ask(url, request).await;
        if let Err(Denied::HookUnavailable(why)) = &answer {
            tracing::warn!("{why}");
        }
        answer
    }

    /// Whether `caller` may publish `stream` over `protocol` (`websocket`, `whip`).
    pub async fn publish(
        &self,
        stream: &StreamName,
        protocol: &'static str,
        caller: &Caller,
    ) -> Result<Allowed, Denied> {
        let token = caller.token.as_deref();
        let own: Vec<&str> = self
            .auth
            .streams
            .iter()
            .filter(|s| s.name == *stream)
            .map(|s| s.token.as_str())
            .collect();
        let static_match = (!self.auth.publish_token.is_empty()
            && token_matches(&self.auth.publish_token, token))
            || own.iter().any(|t| token_matches(t, token));
        let open = self.auth.publish_token.is_empty() && own.is_empty() && self.jwt.is_none();
        let jwt = self
            .jwt_verdict(token, |c| jwt::allows(&c.publish, Some(stream.as_str())))
            .await;
        let hook = !self.hooks.publish_url.is_empty();
        let what = format!("publishing {stream}");
        match decide(static_match, jwt, hook, open, ("publishing", &what)) {
            Step::Allow => Ok(Allowed::default()),
            Step::Refuse(denied) => Err(denied),
            Step::AskHook => {
                let request = HookRequest {
                    action: "publish",
                    stream: Some(stream.to_string()),
                    protocol: Some(protocol),
                    token: caller.token.clone(),
                    remote_addr: caller.remote_addr.clone(),
                    user_agent: caller.user_agent.clone(),
                    query: caller.query.clone(),
                    path: None,
                    node: self.node.clone(),
                };
                let answer = self.ask(&self.hooks.publish_url, &request).await?;
                Ok(Allowed {
                    record: answer.record,
                })
            }
        }
    }

    /// Whether publishing `stream` (`None`: a stream not named yet) needs a token: a
    /// publish token, a JWT or a hook is configured, or the stream has a token of its own.
    pub fn publish_needs_token(&self, stream: Option<&StreamName>) -> bool {
        !self.auth.publish_token.is_empty()
            || self.jwt.is_some()
            || !self.hooks.publish_url.is_empty()
            || stream.is_some_and(|stream| self.auth.streams.iter().any(|s| s.name == *stream))
    }

    /// Whether `caller` may read `path` of `stream` (`None`: every stream's, as the
    /// list of recordings).
    pub async fn read(
        &self,
        stream: Option<&str>,
        path: &str,
        caller: &Caller,
    ) -> Result<(), Denied> {
        let token = caller.token.as_deref();
        let configured = &self.auth.read_token;
        let static_match = !configured.is_empty() && token_matches(configured, token);
        let open = configured.is_empty() && self.jwt.is_none();
        let jwt = self
            .jwt_verdict(token, |c| jwt::allows(&c.read, stream))
            .await;
        let hook = !self.hooks.read_url.is_empty();
        let what = match stream {
            Some(stream) => format!("reading {stream}"),
            None => "reading every stream".to_string(),
        };
        match decide(static_match, jwt, hook, open, ("reading", &what)) {
            Step::Allow => Ok(()),
            Step::Refuse(denied) => Err(denied),
            Step::AskHook => {
                // Without a token the hook could only judge the caller by its address:
                // its yes is remembered for that address alone, not for everyone.
                let who = match &caller.token {
                    Some(token) => token.clone(),
                    None => format!("\u{0}{}", caller.remote_addr),
                };
                let key = (who, stream.unwrap_or_default().to_string());
                if self.reads().allowed(&key, Instant::now()) {
                    return Ok(());
                }
                let request = HookRequest {
                    action: "read",
                    stream: stream.map(String::from),
                    protocol: None,
                    token: caller.token.clone(),
                    remote_addr: caller.remote_addr.clone(),
                    user_agent: caller.user_agent.clone(),
                    query: caller.query.clone(),
                    path: Some(path.to_string()),
                    node: self.node.clone(),
                };
                self.ask(&self.hooks.read_url, &request).await?;
                let now = Instant::now();
                let until = now + Duration::from_secs(self.hooks.cache_s as u64);
                self.reads().remember(key, until, now);
                Ok(())
            }
        }
    }

    fn reads(&self) -> std::sync::MutexGuard<'_, ReadCache> {
        self.reads.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StreamTokenConfig;

    #[test]
    fn tokens() {
        assert!(token_matches("s3cret", Some("s3cret")));
        assert!(!token_matches("s3cret", Some("s3cre")));
        assert!(!token_matches("s3cret", None));
    }

    #[test]
    fn the_order() {
        use JwtVerdict as J;
        let refused = |step: Step| matches!(step, Step::Refuse(_));
        // A static token wins over everything.
        assert_eq!(
            decide(true, J::Invalid("x".into()), true, false, ("w", "w")),
            Step::Allow
        );
        // A JWT is judged alone.
        assert_eq!(
            decide(false, J::Valid { allows: true }, true, false, ("w", "w")),
            Step::Allow
        );
        assert_eq!(
            decide(false, J::Valid { allows: false }, true, true, ("w", "w")),
            Step::Refuse(Denied::Forbidden("the token does not allow w".into()))
        );
        assert!(refused(decide(
            false,
            J::Invalid("x".into()),
            true,
            true,
            ("w", "w")
        )));
        // Then the hook, then open access.
        assert_eq!(
            decide(false, J::None, true, false, ("w", "w")),
            Step::AskHook
        );
        assert_eq!(
            decide(false, J::None, true, true, ("w", "w")),
            Step::AskHook
        );
        assert_eq!(decide(false, J::None, false, true, ("w", "w")), Step::Allow);
        assert!(refused(decide(false, J::None, false, false, ("w", "w"))));
    }

    fn access(auth: AuthConfig) -> Access {
        let config = Config {
            auth,
            ..Config::default()
        };
        Access::new(&config, "node")
    }

    async fn may_publish(access: &Access, stream: &str, token: Option<&str>) -> bool {
        let caller = Caller {
            token: token.map(String::from),
            ..Caller::default()
        };
        let stream = StreamName::new(stream).unwrap();
        access.publish(&stream, "websocket", &caller).await.is_ok()
    }

    #[tokio::test]
    async fn who_may_publish_with_static_tokens() {
        let name = |text: &str| StreamName::new(text).unwrap();
        let mut auth = AuthConfig::default();
        assert!(may_publish(&access(auth.clone()), "any", None).await);
        auth.streams.push(StreamTokenConfig {
            name: name("cam1"),
            token: "cam1-secret".into(),
        });
        let a = access(auth.clone());
        assert!(!may_publish(&a, "cam1", None).await);
        assert!(may_publish(&a, "cam1", Some("cam1-secret")).await);
        assert!(may_publish(&a, "other", None).await);
        auth.publish_token = "global".into();
        let a = access(auth.clone());
        assert!(!may_publish(&a, "other", None).await);
        assert!(!may_publish(&a, "other", Some("cam1-secret")).await);
        assert!(may_publish(&a, "other", Some("global")).await);
        assert!(may_publish(&a, "cam1", Some("global")).await);
        assert!(may_publish(&a, "cam1", Some("cam1-secret")).await);
    }

    #[test]
    fn whether_publishing_needs_a_token() {
        let name = |text: &str| StreamName::new(text).unwrap();
        let mut auth = AuthConfig::default();
        assert!(!access(auth.clone()).publish_needs_token(None));
        auth.streams.push(StreamTokenConfig {
            name: name("cam1"),
            token: "cam1-secret".into(),
        });
        let a = access(auth.clone());
        assert!(a.publish_needs_token(Some(&name("cam1"))));
        assert!(!a.publish_needs_token(Some(&name("other"))));
        assert!(!a.publish_needs_token(None));
        auth.publish_token = "global".into();
        assert!(access(auth.clone()).publish_needs_token(None));
        let jwt = AuthConfig {
            jwt_secret: "k".into(),
            ..AuthConfig::default()
        };
        assert!(access(jwt).publish_needs_token(Some(&name("other"))));
    }
}
