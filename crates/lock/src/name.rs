//! Validated lock names.

use crate::error::LockError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The name of a lock: 1 to [`LockName::MAX_LEN`] bytes of `[A-Za-z0-9._:-]`, and not `.` or `..`.
///
/// The charset keeps a name usable as one URL path segment (`/v1/locks/{name}`) without escaping:
/// `/` is excluded because it would split the segment, and `.`/`..` because URL normalisation
/// rewrites them. Hierarchies can use `:` or `.` (`orders:eu:42`). Validation happens on every
/// construction, including deserialisation, so a decoded command never carries a bad name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LockName(String);

impl LockName {
    /// The longest name accepted, in bytes.
    pub const MAX_LEN: usize = 256;

    /// Validate and wrap a name.
    ///
    /// # Errors
    /// [`LockError::InvalidName`] if the name is empty, longer than [`LockName::MAX_LEN`] bytes,
    /// uses a character outside `[A-Za-z0-9._:-]`, or is `.` or `..`.
    pub fn new(name: impl Into<String>) -> Result<LockName, LockError> {
        let name = name.into();
        if name.is_empty() {
            return Err(LockError::InvalidName("empty".into()));
        }
        if name.len() > Self::MAX_LEN {
            return Err(LockError::InvalidName(format!(
                "{} bytes, at most {} allowed",
                name.len(),
                Self::MAX_LEN
            )));
        }
        if let Some(bad) = name.chars().find(|c| !Self::is_allowed(*c)) {
            return Err(LockError::InvalidName(format!(
                "character {bad:?} not in [A-Za-z0-9._:-]"
            )));
        }
        if name == "." || name == ".." {
            return Err(LockError::InvalidName(format!("{name:?} is reserved")));
        }
        Ok(LockName(name))
    }

    fn is_allowed(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for LockName {
    type Error = LockError;

    fn try_from(name: String) -> Result<LockName, LockError> {
        LockName::new(name)
    }
}

impl From<LockName> for String {
    fn from(name: LockName) -> String {
        name.0
    }
}

impl FromStr for LockName {
    type Err = LockError;

    fn from_str(name: &str) -> Result<LockName, LockError> {
        LockName::new(name)
    }
}

impl fmt::Display for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for LockName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_are_accepted() {
        // Proves every character class of the documented charset and the length limit pass.
        for name in ["a", "orders:eu:42", "A-b_c.d", "0", "..x", &"z".repeat(256)] {
            assert_eq!(
                LockName::new(name).map(|n| n.to_string()),
                Ok(name.to_string())
            );
        }
    }

    #[test]
    fn invalid_names_are_rejected() {
        // Proves empty, too long, out-of-charset and dot-segment names are refused as InvalidName.
        let too_long = "z".repeat(257);
        for name in ["", &too_long, "a/b", "a b", "é", "a\n", ".", "..", "a%2F"] {
            assert!(
                matches!(LockName::new(name), Err(LockError::InvalidName(_))),
                "{name:?} was accepted"
            );
        }
    }

    #[test]
    fn deserialising_an_invalid_name_fails() {
        // Proves validation also guards the decode path (a name can't be smuggled in bytes).
        let bytes = postcard::to_allocvec(&"a/b".to_string()).expect("serialising a String");
        assert!(postcard::from_bytes::<LockName>(&bytes).is_err());
        let bytes = postcard::to_allocvec(&"ok".to_string()).expect("serialising a String");
        assert_eq!(
            postcard::from_bytes::<LockName>(&bytes).ok(),
            LockName::new("ok").ok()
        );
    }
}
