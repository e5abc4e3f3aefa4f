//! The log-entry payload: what the lock service proposes to Raft and applies once committed.

use crate::error::LockError;
use crate::fencing::FencingToken;
use crate::idempotency::IdempotencyKey;
use crate::mode::LockMode;
use crate::name::LockName;
use crate::queue::RequestTag;
use crate::session::SessionId;
use serde::{Deserialize, Serialize};

/// One command of the lock state machine, as stored in a Raft log entry.
///
/// Keep-alives are not commands: they are leader-local (the leader tracks deadlines on its
/// monotonic clock), and the leader turns a missed deadline into [`LockCommand::ExpireSessions`].
/// After a failover the new leader rebuilds its deadline table from
/// [`crate::LockTable::sessions`] and grants each session a fresh TTL.
///
/// Client-originated commands carry an optional `idempotency_key` (the HTTP `Idempotency-Key`
/// header): a command applied again with a key seen recently returns the first outcome instead of
/// acting twice (see [`crate::LockTable::apply`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockCommand {
    /// Create a session; its id is the log index of this entry.
    CreateSession {
        /// Time-to-live between keep-alives, in milliseconds.
        ttl_ms: u64,
        /// Deduplicates a retried create (otherwise a lost response leaks a session).
        idempotency_key: Option<IdempotencyKey>,
    },
    /// Close a session: release its locks and withdraw its waits.
    CloseSession {
        /// The session to close.
        session: SessionId,
        /// Deduplicates a retried close.
        idempotency_key: Option<IdempotencyKey>,
    },
    /// Expire sessions whose keep-alive deadline passed on the leader. Sessions that no longer
    /// exist are ignored (a new leader may re-propose an expiry that already committed).
    ExpireSessions {
        /// The sessions to expire.
        sessions: Vec<SessionId>,
    },
    /// Acquire `name` in `mode` for `session`. Idempotent per (session, name): repeating it returns
    /// the existing grant or "still waiting".
    Acquire {
        /// The requesting session.
        session: SessionId,
        /// The lock.
        name: LockName,
        /// Shared or exclusive.
        mode: LockMode,
        /// Queue when the lock is not free; `false` is a try-lock, which never waits and never
        /// adds a wait-for edge.
        wait: bool,
        /// Deduplicates a retried acquire.
        idempotency_key: Option<IdempotencyKey>,
        /// Identifies this request for a later [`LockCommand::Abandon`] (0: never abandoned).
        tag: RequestTag,
    },
    /// Withdraw a pending wait (the shell proposes it when an acquire's `wait_ms` runs out).
    CancelWait {
        /// The waiting session.
        session: SessionId,
        /// The lock waited for.
        name: LockName,
    },
    /// Undo what the acquire tagged `tag` did, if nothing later claimed it: withdraw its wait,
    /// release the hold it was granted, or turn the exclusive hold of its upgrade back into the
    /// shared hold the session had. The shell proposes it for a request that ended without the
    /// table's answer reaching the client (the client went away, or the proposal's fate was
    /// unknown). A retry of the acquire re-tags the wait or hold, so an abandonment applied after
    /// the retry leaves alone what the retry was answered with.
    Abandon {
        /// The requesting session.
        session: SessionId,
        /// The lock.
        name: LockName,
        /// The abandoned request.
        tag: RequestTag,
    },
    /// Release a held lock.
    Release {
        /// The holding session.
        session: SessionId,
        /// The lock.
        name: LockName,
        /// When present, the release only applies to the hold with this token, so a delayed
        /// release from an earlier grant cannot drop a later one.
        token: Option<FencingToken>,
        /// Deduplicates a retried release (otherwise the retry reports `NotHeld`).
        idempotency_key: Option<IdempotencyKey>,
    },
}

impl LockCommand {
    /// The command's idempotency key, if it has one.
    pub fn idempotency_key(&self) -> Option<&IdempotencyKey> {
        match self {
            LockCommand::CreateSession {
                idempotency_key, ..
            }
            | LockCommand::CloseSession {
                idempotency_key, ..
            }
            | LockCommand::Acquire {
                idempotency_key, ..
            }
            | LockCommand::Release {
                idempotency_key, ..
            } => idempotency_key.as_ref(),
            LockCommand::ExpireSessions { .. }
            | LockCommand::CancelWait { .. }
            | LockCommand::Abandon { .. } => None,
        }
    }

    /// Encode for a Raft log entry (postcard).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("serialising plain data into a growable Vec cannot fail")
    }

    /// Decode a Raft log entry's bytes.
    ///
    /// # Errors
    /// [`LockError::Decode`] if the bytes are not exactly one command, or carry an invalid lock
    /// name or idempotency key.
    pub fn decode(bytes: &[u8]) -> Result<LockCommand, LockError> {
        let (command, rest) = postcard::take_from_bytes::<LockCommand>(bytes)
            .map_err(|e| LockError::Decode(e.to_string()))?;
        if !rest.is_empty() {
            return Err(LockError::Decode(format!(
                "{} trailing bytes after the command",
                rest.len()
            )));
        }
        Ok(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_command() -> Vec<LockCommand> {
        let name = LockName::new("orders:1").expect("valid name");
        let key = Some(IdempotencyKey::new("k-1").expect("valid key"));
        vec![
            LockCommand::CreateSession {
                ttl_ms: 10_000,
                idempotency_key: key.clone(),
            },
            LockCommand::CloseSession {
                session: SessionId(3),
                idempotency_key: None,
            },
            LockCommand::ExpireSessions {
                sessions: vec![SessionId(3), SessionId(9)],
            },
            LockCommand::Acquire {
                session: SessionId(3),
                name: name.clone(),
                mode: LockMode::Shared,
                wait: true,
                idempotency_key: key.clone(),
                tag: 0x5eed_0001,
            },
            LockCommand::CancelWait {
                session: SessionId(3),
                name: name.clone(),
            },
            LockCommand::Abandon {
                session: SessionId(3),
                name: name.clone(),
                tag: 0x5eed_0001,
            },
            LockCommand::Release {
                session: SessionId(3),
                name,
                token: Some(FencingToken(12)),
                idempotency_key: key,
            },
        ]
    }

    #[test]
    fn every_command_round_trips_through_encode_and_decode() {
        // Proves encode/decode is lossless for each variant.
        for command in every_command() {
            assert_eq!(LockCommand::decode(&command.encode()), Ok(command));
        }
    }

    #[test]
    fn decode_rejects_garbage_trailing_bytes_and_bad_names() {
        // Proves malformed entry bytes are a Decode error, never a panic or a bad name.
        assert!(matches!(
            LockCommand::decode(&[]),
            Err(LockError::Decode(_))
        ));
        assert!(matches!(
            LockCommand::decode(&[0xff; 8]),
            Err(LockError::Decode(_))
        ));
        let mut bytes = every_command()[1].encode();
        bytes.push(0);
        assert!(matches!(
            LockCommand::decode(&bytes),
            Err(LockError::Decode(_))
        ));
        // Acquire (variant 3) with a name containing '/': re-encode by hand via a look-alike.
        #[derive(Serialize)]
        enum Forged {
            _A,
            _B,
            _C,
            Acquire {
                session: u64,
                name: String,
                mode: LockMode,
                wait: bool,
                key: Option<String>,
            },
        }
        let forged = postcard::to_allocvec(&Forged::Acquire {
            session: 1,
            name: "a/b".into(),
            mode: LockMode::Shared,
            wait: false,
            key: None,
        })
        .expect("serialising plain data");
        assert!(matches!(
            LockCommand::decode(&forged),
            Err(LockError::Decode(_))
        ));
    }
}
