//! JSON Web Tokens: HS256 signed with `auth.jwt_secret`, RS256 and ES256 signed with a
//! key of the JSON Web Key Set at `auth.jwks_url`. The set is fetched when first
//! needed, kept for [`MAX_AGE`], and fetched again when a token names a key (`kid`) it
//! does not hold, at most once per [`REFETCH_INTERVAL`], so that a flood of tokens with
//! made-up keys costs the key server one request per interval. A token's `publish` and `read` claims list the stream
//! names (or `"*"`) it allows; `exp` is required and checked.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use std::time::{Duration, Instant};

/// The shortest wait between two fetches of the key set for unknown keys (or after a
/// failed one).
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// How long a fetched key set is used before it is fetched again.
pub const MAX_AGE: Duration = Duration::from_secs(3600);
/// How long a fetch of the key set may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How far a token's `exp` may be behind this node's clock.
const LEEWAY_S: u64 = 30;

/// The claims the gateway reads; others are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub publish: Vec<String>,
    #[serde(default)]
    pub read: Vec<String>,
}

/// Whether a claim's list allows `stream` (`None`: every stream, as a listing of all
/// recordings needs).
pub fn allows(list: &[String], stream: Option<&str>) -> bool {
    list.iter()
        .any(|entry| entry == "*" || stream.is_some_and(|s| s == entry))
}

/// Why a JSON Web Token is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("the token's algorithm {0:?} is not taken (HS256, RS256, ES256 are)")]
    Algorithm(Algorithm),
    #[error("the token is signed with HS256, and auth.jwt_secret is not set")]
    NoSecret,
    #[error("the token is signed with {0:?}, and auth.jwks_url is not set")]
    NoKeySet(Algorithm),
    #[error("the key set has no key {0:?}")]
    UnknownKey(String),
    #[error("the key set cannot be fetched: {0}")]
    KeySet(String),
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid: {0}")]
    Invalid(String),
}

/// Whether `token` is shaped like a JSON Web Token (three parts, a readable header).
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3 && decode_header(token).is_ok()
}

/// The key set, when it was last fetched, and when last fetched for an unknown key or
/// in vain.
#[derive(Default)]
struct KeySet {
    keys: JwkSet,
    fetched: Option<Instant>,
    attempted: Option<Instant>,
}

/// Checks JSON Web Tokens with the configured secret and key set.
pub struct Verifier {
    secret: Option<DecodingKey>,
    jwks_url: Option<String>,
    client: reqwest::Client,
    /// Read without waiting: a check never waits for a fetch of keys it has.
    keys: std::sync::RwLock<KeySet>,
    /// Held while the set is fetched, one fetch at a time.
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("secret", &self.secret.is_some())
            .field("jwks_url", &self.jwks_url)
            .finish()
    }
}

impl Verifier {
    /// A verifier, or none when neither a secret nor a key set is configured.
    pub fn new(secret: &str, jwks_url: &str) -> Option<Self> {
        if secret.is_empty() && jwks_url.is_empty() {
            return None;
        }
        Some(Self {
            secret: DecodingKey::from_secret(secret.as_bytes()).ok(),
            jwks_url: (!jwks_url.is_empty()).then(|| jwks_url.to_string()),
            client: reqwest::Client::builder()
                .timeout(FETCH_TIMEOUT)
                .build()
                .unwrap_or_default(),
            keys: std::sync::RwLock::new(KeySet::default()),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// The claims of a valid token.
    pub async fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        let header = decode_header(token).map_err(|e| JwtError::Invalid(e.to_string()))?;
        let key = match header.alg {
            Algorithm::HS256 => self.secret.clone().ok_or(JwtError::NoSecret)?,
            Algorithm::RS256 | Algorithm::ES256 => {
                self.key(header.alg, header.kid.as_deref()).await?
            }
            other => return Err(JwtError::Algorithm(other)),
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_S;
        validation.validate_aud = false;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        decode::<Claims>(token, &key, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => JwtError::Expired,
                _ => JwtError::Invalid(e.to_string()),
            })
    }

    /// The key `kid` of the set (without a `kid`, the set's only key). The set is
    /// fetched when it has none yet or is older than [`MAX_AGE`], and again when it does
    /// not hold the key, never twice within [`REFETCH_INTERVAL`]. A key the set holds is
    /// found without waiting; while the set is fetched, a stale set still serves, and
    /// only a token whose key is not held waits for the fetch.
    async fn key(&self, alg: Algorithm, kid: Option<&str>) -> Result<DecodingKey, JwtError> {
        let url = self.jwks_url.as_deref().ok_or(JwtError::NoKeySet(alg))?;
        let unknown = || JwtError::UnknownKey(kid.unwrap_or_default().to_string());
        let (found, fresh, may_fetch) = self.look_up(kid);
        if let Some(key) = &found
            && fresh
        {
            return key.clone();
        }
        if !may_fetch {
            return found.unwrap_or_else(|| Err(unknown()));
        }
        let _fetching = match found {
            // Stale but held: whoever fetches already, fetches for this token too.
            Some(held) => match self.fetching.try_lock() {
                Ok(guard) => (guard, Some(held)),
                Err(_) => return held,
            },
            None => (self.fetching.lock().await, None),
        };
        // Another token's fetch may have brought the key meanwhile.
        let (found, fresh, may_fetch) = self.look_up(kid);
        if let Some(key) = &found
            && (fresh || !may_fetch)
        {
            return key.clone();
        }
        if !may_fetch {
            return Err(unknown());
        }
        // A fresh set fetched again for a key it lacks counts as an attempt (so made-up
        // keys cost one fetch per interval); so does any fetch that fails.
        if fresh {
            self.write_keys().attempted = Some(Instant::now());
        }
        match self.fetch(url).await {
            Ok(set) => {
                let mut keys = self.write_keys();
                keys.keys = set;
                keys.fetched = Some(Instant::now());
            }
            Err(e) => {
                self.write_keys().attempted = Some(Instant::now());
                // The keys held before, if any, still serve.
                return found.unwrap_or(Err(e));
            }
        }
        self.look_up(kid).0.unwrap_or_else(|| Err(unknown()))
    }

    /// The key `kid` if the set holds it, whether the set is fresh, and whether it may
    /// be fetched now.
    fn look_up(&self, kid: Option<&str>) -> (Option<Result<DecodingKey, JwtError>>, bool, bool) {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let fresh = keys.fetched.is_some_and(|at| at.elapsed() < MAX_AGE);
        let may_fetch = keys
            .attempted
            .is_none_or(|at| at.elapsed() >= REFETCH_INTERVAL);
        (find(&keys.keys, kid), fresh, may_fetch)
    }

    fn write_keys(&self) -> std::sync::RwLockWriteGuard<'_, KeySet> {
        self.keys.write().unwrap_or_else(|e| e.into_inner())
    }

    async fn fetch(&self, url: &str) -> Result<JwkSet, JwtError> {
        let response = self
            .client
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| JwtError::KeySet(e.to_string()))?;
        response
            .json::<JwkSet>()
            .await
            .map_err(|e| JwtError::KeySet(e.to_string()))
    }
}

fn find(set: &JwkSet, kid: Option<&str>) -> Option<Result<DecodingKey, JwtError>> {
    let jwk = match kid {
        Some(kid) => set.find(kid)?,
        None if set.keys.len() == 1 => &set.keys[0],
        None => return None,
    };
    Some(DecodingKey::from_jwk(jwk).map_err(|e| JwtError::KeySet(e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn hs256(secret: &str, claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn lists() {
        let list = vec!["cam1".to_string()];
        assert!(allows(&list, Some("cam1")));
        assert!(!allows(&list, Some("cam2")));
        assert!(!allows(&list, None));
        assert!(allows(&["*".to_string()], None));
        assert!(!allows(&[], Some("cam1")));
    }

    #[tokio::test]
    async fn hs256_tokens() {
        let verifier = Verifier::new("k", "").unwrap();
        let good = hs256(
            "k",
            serde_json::json!({"publish": ["a"], "exp": now() + 60}),
        );
        assert!(looks_like_jwt(&good));
        assert!(!looks_like_jwt("s3cret"));
        let claims = verifier.verify(&good).await.unwrap();
        assert_eq!(claims.publish, vec!["a".to_string()]);
        assert!(claims.read.is_empty());
        let expired = hs256(
            "k",
            serde_json::json!({"publish": ["a"], "exp": now() - 3600}),
        );
        assert_eq!(verifier.verify(&expired).await, Err(JwtError::Expired));
        let other = hs256(
            "x",
            serde_json::json!({"publish": ["a"], "exp": now() + 60}),
        );
        assert!(matches!(
            verifier.verify(&other).await,
            Err(JwtError::Invalid(_))
        ));
        let no_exp = hs256("k", serde_json::json!({"publish": ["a"]}));
        assert!(verifier.verify(&no_exp).await.is_err());
        assert!(Verifier::new("", "").is_none());
    }
}
