//! Stream names. A [`StreamName`] can only be made from text that matches
//! `^[A-Za-z0-9_-]{1,64}$`, so a name is never a file-system path, never empty and always
//! safe in a URL, a file name and a log line. Everything that takes a name takes this type.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A valid stream name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamName(String);

/// Text that is not a stream name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream names are 1 to 64 letters, digits, '_' or '-'")]
pub struct BadName;

impl StreamName {
    /// The longest name.
    pub const MAX_LEN: usize = 64;

    pub fn new(name: &str) -> Result<Self, BadName> {
        let valid = (1..=Self::MAX_LEN).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(Self(name.to_string()))
        } else {
            Err(BadName)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for StreamName {
    type Err = BadName;

    fn from_str(name: &str) -> Result<Self, BadName> {
        Self::new(name)
    }
}

impl TryFrom<String> for StreamName {
    type Error = BadName;

    fn try_from(name: String) -> Result<Self, BadName> {
        Self::new(&name)
    }
}

impl From<StreamName> for String {
    fn from(name: StreamName) -> String {
        name.0
    }
}

impl std::borrow::Borrow<str> for StreamName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for StreamName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_are_names() {
        for good in ["cam1", "a", "A-b_9", &"x".repeat(64)] {
            assert_eq!(StreamName::new(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "../etc",
            "a/b",
            "a b",
            "ü",
            &"x".repeat(65),
            "a.sdp",
            "%2e",
            "a\0",
        ] {
            assert_eq!(StreamName::new(bad), Err(BadName), "{bad:?}");
        }
    }

    #[test]
    fn deserializing_checks_the_name() {
        let name: StreamName = serde_json::from_str("\"cam1\"").unwrap();
        assert_eq!(name.to_string(), "cam1");
        assert!(serde_json::from_str::<StreamName>("\"../x\"").is_err());
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"cam1\"");
    }
}
