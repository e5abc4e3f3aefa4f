//! The application the simulated shell applies committed entries to: a small KV register map.
//!
//! Every command is a unique `u64` (so every committed value names its submitter), optionally
//! padded to a given size. It writes register `value % REGISTERS`. The state hash chains every
//! applied index and value, so two nodes with equal hashes applied the same sequence.

use bytes::{Bytes, BytesMut};
use distsync_raft::{Entry, EntryPayload, LogIndex};
use std::collections::BTreeMap;

const REGISTERS: u64 = 8;

/// Encodes a command value, padded with zeros to `size_bytes` (at least 8).
pub fn encode_command(value: u64, size_bytes: usize) -> Bytes {
    let mut buf = BytesMut::zeroed(size_bytes.max(8));
    buf[..8].copy_from_slice(&value.to_le_bytes());
    buf.freeze()
}

/// The value of a command, if the bytes hold one.
pub fn decode_command(data: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = data.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// The replicated KV state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStateMachine {
    /// Last applied index.
    pub applied: LogIndex,
    /// Chained hash of everything applied.
    pub hash: u64,
    /// Register -> last value written.
    pub registers: BTreeMap<u64, u64>,
}

fn mix(hash: u64, index: u64, value: u64) -> u64 {
    // splitmix64 over the chain: stable across runs and platforms.
    let mut z = hash
        .wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(value.rotate_left(17));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl KvStateMachine {
    /// Applies one committed entry and returns the command value it carried, if any.
    pub fn apply(&mut self, entry: &Entry) -> Option<u64> {
        self.applied = entry.index;
        let value = match &entry.payload {
            EntryPayload::Command(data) => decode_command(data),
            EntryPayload::Noop | EntryPayload::Membership(_) => None,
        };
        if let Some(v) = value {
            self.registers.insert(v % REGISTERS, v);
        }
        self.hash = mix(self.hash, entry.index.0, value.unwrap_or(u64::MAX));
        value
    }

    /// Serialises the state (the application snapshot).
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(24 + 16 * self.registers.len());
        out.extend_from_slice(&self.applied.0.to_le_bytes());
        out.extend_from_slice(&self.hash.to_le_bytes());
        out.extend_from_slice(&(self.registers.len() as u64).to_le_bytes());
        for (k, v) in &self.registers {
            out.extend_from_slice(&k.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        Bytes::from(out)
    }

    /// Restores a state from [`encode`](KvStateMachine::encode)'s output; `None` if malformed.
    pub fn decode(data: &[u8]) -> Option<KvStateMachine> {
        let word = |i: usize| decode_command(data.get(i * 8..)?);
        let applied = LogIndex(word(0)?);
        let hash = word(1)?;
        let n = word(2)? as usize;
        let mut registers = BTreeMap::new();
        for k in 0..n {
            registers.insert(word(3 + 2 * k)?, word(4 + 2 * k)?);
        }
        Some(KvStateMachine {
            applied,
            hash,
            registers,
        })
    }
}
