//! [`LineKey`]: a key as a node's line store holds it.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use bytes::Bytes;

/// Longest key held inline: with its length and the variant's tag, as large as a [`Bytes`]
/// and its tag, so that inlining costs a slot nothing.
const INLINE_BYTES_MAX: usize = 38;

/// A key as a node's line store holds it: up to 38 bytes inline, a longer one as shared
/// [`Bytes`].
///
/// A lookup compares the key it was given with the stored one. Held as `Bytes`, the stored key
/// is behind a pointer, one more cache line to fetch per hit (most keys are short, and a hit on
/// a large store misses the cache on every line it touches); inline, the comparison reads the
/// slot the lookup has already fetched. Hashes, compares and orders exactly as its bytes, so
/// the store can be searched with a `&[u8]`.
#[derive(Clone)]
pub struct LineKey(Repr);

#[derive(Clone)]
enum Repr {
    Inline {
        len: u8,
        bytes: [u8; INLINE_BYTES_MAX],
    },
    Shared(Bytes),
}

impl LineKey {
    /// The key as the protocol carries it (a copy when held inline).
    pub fn to_key(&self) -> Bytes {
        match &self.0 {
            Repr::Inline { .. } => Bytes::copy_from_slice(self),
            Repr::Shared(bytes) => bytes.clone(),
        }
    }
}

impl From<Bytes> for LineKey {
    fn from(key: Bytes) -> Self {
        if key.len() <= INLINE_BYTES_MAX {
            let mut bytes = [0; INLINE_BYTES_MAX];
            bytes[..key.len()].copy_from_slice(&key);
            LineKey(Repr::Inline {
                len: key.len() as u8,
                bytes,
            })
        } else {
            LineKey(Repr::Shared(key))
        }
    }
}

impl From<LineKey> for Bytes {
    fn from(key: LineKey) -> Self {
        match key.0 {
            Repr::Inline { .. } => key.to_key(),
            Repr::Shared(bytes) => bytes,
        }
    }
}

impl Deref for LineKey {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Shared(bytes) => bytes,
        }
    }
}

impl AsRef<[u8]> for LineKey {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Borrow<[u8]> for LineKey {
    fn borrow(&self) -> &[u8] {
        self
    }
}

impl Hash for LineKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `[u8]` and `Bytes` hash, which `Borrow<[u8]>` requires.
        self.deref().hash(state);
    }
}

impl PartialEq for LineKey {
    fn eq(&self, other: &Self) -> bool {
        self.deref() == other.deref()
    }
}

impl Eq for LineKey {}

impl PartialOrd for LineKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for LineKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.deref().cmp(other.deref())
    }
}

impl fmt::Debug for LineKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // As `Bytes` prints, so traces read the same whichever the store holds.
        fmt::Debug::fmt(&Bytes::copy_from_slice(self), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn a_line_key_is_its_bytes_inline_or_shared_and_hashes_like_them() {
        let hasher = foldhash::fast::FixedState::with_seed(7);
        for len in [0, 1, 16, INLINE_BYTES_MAX, INLINE_BYTES_MAX + 1, 200] {
            let key = Bytes::from(vec![b'k'; len]);
            let line_key = LineKey::from(key.clone());
            assert_eq!(
                matches!(line_key.0, Repr::Inline { .. }),
                len <= INLINE_BYTES_MAX
            );
            assert_eq!(&*line_key, &key[..]);
            assert_eq!(hasher.hash_one(&line_key), hasher.hash_one(&key[..]));
            assert_eq!(hasher.hash_one(&line_key), hasher.hash_one(&key));
            assert_eq!(line_key.to_key(), key);
            assert_eq!(format!("{line_key:?}"), format!("{key:?}"));
            assert_eq!(Bytes::from(line_key), key);
        }
        let (shorter, longer) = (
            LineKey::from(Bytes::from("ab")),
            LineKey::from(Bytes::from("b")),
        );
        assert!(shorter < longer, "ordered as bytes, not by length");
        assert!(
            std::mem::size_of::<LineKey>() <= std::mem::size_of::<Bytes>() + 8,
            "inline or shared, a key takes one word more than a Bytes, for the tag"
        );
    }
}
