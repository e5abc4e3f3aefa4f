//! The lock service's state machine: sessions, shared and exclusive locks, FIFO wait queues,
//! fencing tokens and deadlock detection, applied from the Raft log on every replica.
//!
//! What it is: a pure, deterministic [`LockTable`]. The server proposes [`LockCommand`]s (encoded
//! with [`LockCommand::encode`]; Raft sees only opaque bytes), and every replica applies each
//! committed one with [`LockTable::apply`]. The [`ApplyOutcome`] carries the proposer's answer and
//! the side effects other parties need in the same step — waiters granted by a release, waits
//! withdrawn because their session ended — so the shell can hand a lock to the next waiter without
//! another round trip.
//!
//! What it is not: a clock, a network or a disk. Time never enters `apply`: keep-alives are
//! tracked by the leader's shell on its monotonic clock, and an expiry reaches the table as a
//! committed [`LockCommand::ExpireSessions`]. Same entries in, same outcomes and same
//! [`LockTable::snapshot`] bytes out, on every replica.
//!
//! Semantics (modes, FIFO, fencing, idempotency, the shared->exclusive upgrade, deadlock refusal)
//! are documented on [`LockTable`].
//!
//! ```
//! use distsync_lock::{
//!     LockCommand, LockConfig, LockError, LockEvent, LockMode, LockName, LockTable, LogIndex,
//!     Response,
//! };
//!
//! let mut table = LockTable::new(LockConfig::default())?;
//! let mut index = 0;
//! let mut apply = |table: &mut LockTable, command: LockCommand| {
//!     index += 1; // the shell passes each committed entry's log index
//!     table.apply(LogIndex(index), command)
//! };
//! let create = LockCommand::CreateSession { ttl_ms: 10_000, idempotency_key: None };
//! let Ok(Response::SessionCreated { session: alice, .. }) = apply(&mut table, create.clone()).response
//! else { unreachable!() };
//! let Ok(Response::SessionCreated { session: bob, .. }) = apply(&mut table, create).response
//! else { unreachable!() };
//!
//! let name = LockName::new("orders:42")?;
//! let acquire = |session| LockCommand::Acquire {
//!     session, name: name.clone(), mode: LockMode::Exclusive, wait: true, idempotency_key: None,
//!     tag: 0,
//! };
//! // Alice gets the lock; Bob queues behind her.
//! let granted = apply(&mut table, acquire(alice));
//! assert!(matches!(granted.response, Ok(Response::Granted(_))));
//! assert_eq!(apply(&mut table, acquire(bob)).response, Ok(Response::Waiting { mode: LockMode::Exclusive }));
//!
//! // Alice releases: Bob is granted in the same apply step, with a larger fencing token.
//! let release = LockCommand::Release {
//!     session: alice, name: name.clone(), token: None, idempotency_key: None,
//! };
//! let outcome = apply(&mut table, release);
//! let [LockEvent::Granted(grant)] = outcome.events.as_slice() else { unreachable!() };
//! assert_eq!(grant.session, bob);
//! let Ok(Response::Granted(first)) = granted.response else { unreachable!() };
//! assert!(grant.token > first.token);
//!
//! // Every replica that applies the same entries has the same state, byte for byte.
//! let replica = LockTable::restore(&table.snapshot())?;
//! assert_eq!(replica.snapshot(), table.snapshot());
//! # Ok::<(), LockError>(())
//! ```
#![warn(missing_docs)]

mod command;
mod config;
mod error;
mod fencing;
mod idempotency;
mod mode;
mod name;
mod outcome;
mod queue;
mod session;
mod table;
mod wait_for;

pub use command::LockCommand;
pub use config::LockConfig;
pub use distsync_raft::LogIndex;
pub use error::LockError;
pub use fencing::FencingToken;
pub use idempotency::IdempotencyKey;
pub use mode::LockMode;
pub use name::LockName;
pub use outcome::{ApplyOutcome, Grant, LockEvent, Response};
pub use queue::{Holder, LockInfo, RequestTag, Waiter};
pub use session::{SessionEndCause, SessionId, SessionInfo};
pub use table::LockTable;
pub use wait_for::WaitForGraph;
