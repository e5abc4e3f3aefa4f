//! Node-to-node transport for distsync: persistent TCP connections carrying length-prefixed
//! binary frames, one outbound connection per peer, reconnected with backoff.
//!
//! The transport is generic over the message type (Raft messages for the lock service, coherence
//! messages for the cache). It is deliberately lossy: a message that cannot be delivered (peer
//! down, queue full, connection reset mid-frame) is dropped and counted, because both protocols
//! above it already retransmit. A peer that vanishes mid-message costs a reconnect, nothing more.
//!
//! Frame format: `[len: u32 little-endian][payload: postcard]`, `len` ≤ [`MAX_FRAME_BYTES`].
//! Every connection opens with a [`Hello`] frame naming the sender, so the receiver knows who is
//! speaking regardless of addresses (a test proxy may sit in between).
#![warn(missing_docs)]

mod frame;
mod transport;

pub use frame::{Hello, MAX_FRAME_BYTES, WireError, read_frame, write_frame};
pub use transport::{Inbound, PeerTransport, TransportStats, serve_inbound};
