//! Who may publish: the global publish token or a stream's own, compared in constant
//! time. Both signalling protocols check tokens with this one rule.

use crate::config::AuthConfig;
use crate::name::StreamName;
use subtle::ConstantTimeEq;

/// Compares a presented token with a configured one in constant time.
pub fn token_matches(configured: &str, presented: Option<&str>) -> bool {
    presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(configured.as_bytes())))
}

/// Whether `token` lets its bearer publish `stream`: the global publish token, or the
/// stream's own. With neither configured, anyone may publish.
pub fn may_publish(auth: &AuthConfig, stream: &StreamName, token: Option<&str>) -> bool {
    let own: Vec<&str> = auth
        .streams
        .iter()
        .filter(|s| s.name == *stream)
        .map(|s| s.token.as_str())
        .collect();
    if auth.publish_token.is_empty() && own.is_empty() {
        return true;
    }
    let global = !auth.publish_token.is_empty() && token_matches(&auth.publish_token, token);
    global || own.iter().any(|t| token_matches(t, token))
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
    fn who_may_publish() {
        let name = |text: &str| StreamName::new(text).unwrap();
        let may_publish =
            |auth: &AuthConfig, stream: &str, token| may_publish(auth, &name(stream), token);
        let mut auth = AuthConfig::default();
        assert!(may_publish(&auth, "any", None));
        auth.streams.push(StreamTokenConfig {
            name: name("cam1"),
            token: "cam1-secret".into(),
        });
        assert!(!may_publish(&auth, "cam1", None));
        assert!(may_publish(&auth, "cam1", Some("cam1-secret")));
        assert!(may_publish(&auth, "other", None));
        auth.publish_token = "global".into();
        assert!(!may_publish(&auth, "other", None));
        assert!(!may_publish(&auth, "other", Some("cam1-secret")));
        assert!(may_publish(&auth, "other", Some("global")));
        assert!(may_publish(&auth, "cam1", Some("global")));
        assert!(may_publish(&auth, "cam1", Some("cam1-secret")));
    }
}
