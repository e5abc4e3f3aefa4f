//! Idempotency keys and the bounded table of recent outcomes that makes a retried write apply
//! once.

use crate::command::LockCommand;
use crate::error::LockError;
use crate::outcome::Response;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;

/// A client-chosen key naming one logical write (the HTTP `Idempotency-Key` header): 1 to
/// [`IdempotencyKey::MAX_LEN`] bytes of visible ASCII. Keys share one table across all clients,
/// so clients should use unique values (a UUID, or `client-id:sequence`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The longest key accepted, in bytes.
    pub const MAX_LEN: usize = 128;

    /// Validate and wrap a key.
    ///
    /// # Errors
    /// [`LockError::InvalidIdempotencyKey`] if empty, longer than [`IdempotencyKey::MAX_LEN`], or
    /// not all visible ASCII (`!`..=`~`).
    pub fn new(key: impl Into<String>) -> Result<IdempotencyKey, LockError> {
        let key = key.into();
        if key.is_empty() || key.len() > Self::MAX_LEN {
            return Err(LockError::InvalidIdempotencyKey(format!(
                "length {} outside 1..={}",
                key.len(),
                Self::MAX_LEN
            )));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(LockError::InvalidIdempotencyKey(
                "only visible ASCII is allowed".into(),
            ));
        }
        Ok(IdempotencyKey(key))
    }

    /// The key as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = LockError;

    fn try_from(key: String) -> Result<IdempotencyKey, LockError> {
        IdempotencyKey::new(key)
    }
}

impl From<IdempotencyKey> for String {
    fn from(key: IdempotencyKey) -> String {
        key.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What was applied under a key, and what it answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Remembered {
    pub(crate) command: LockCommand,
    pub(crate) response: Result<Response, LockError>,
}

/// Recent keys with their outcomes, forgetting the oldest beyond a bound. Insertion order is kept
/// explicitly (not by a clock), so every replica forgets the same key at the same entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecentRequests {
    entries: BTreeMap<IdempotencyKey, Remembered>,
    order: VecDeque<IdempotencyKey>,
}

impl RecentRequests {
    pub(crate) fn get(&self, key: &IdempotencyKey) -> Option<&Remembered> {
        self.entries.get(key)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Remember `key`'s outcome. A key already present keeps its age and gets the new response.
    pub(crate) fn remember(
        &mut self,
        key: IdempotencyKey,
        command: LockCommand,
        response: Result<Response, LockError>,
        max_keys: usize,
    ) {
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.response = response;
            return;
        }
        self.order.push_back(key.clone());
        self.entries.insert(key, Remembered { command, response });
        while self.entries.len() > max_keys {
            let oldest = self
                .order
                .pop_front()
                .expect("order lists every remembered key");
            self.entries.remove(&oldest);
        }
    }

    /// Whether the order list and the map agree (checked on snapshot restore).
    pub(crate) fn is_consistent(&self) -> bool {
        self.order.len() == self.entries.len()
            && self.order.iter().all(|key| self.entries.contains_key(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_short_visible_ascii() {
        // Proves key validation: length bounds and visible ASCII only.
        assert!(IdempotencyKey::new("550e8400-e29b-41d4-a716-446655440000").is_ok());
        assert!(IdempotencyKey::new("client-7:42").is_ok());
        for bad in [String::new(), "a b".into(), "é".into(), "k".repeat(129)] {
            assert!(IdempotencyKey::new(bad).is_err());
        }
    }

    #[test]
    fn recent_requests_forget_the_oldest_key_first() {
        // Proves the table is bounded and evicts in insertion order.
        let mut recent = RecentRequests::default();
        let command = LockCommand::ExpireSessions { sessions: vec![] };
        for i in 0..5 {
            let key = IdempotencyKey::new(format!("k{i}")).expect("valid key");
            recent.remember(key, command.clone(), Err(LockError::Decode("x".into())), 3);
        }
        assert_eq!(recent.len(), 3);
        assert!(
            recent
                .get(&IdempotencyKey::new("k1").expect("valid"))
                .is_none()
        );
        assert!(
            recent
                .get(&IdempotencyKey::new("k2").expect("valid"))
                .is_some()
        );
        assert!(recent.is_consistent());
    }
}
