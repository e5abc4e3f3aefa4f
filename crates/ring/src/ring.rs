//! [`HashRing`]: members, their virtual nodes, and clockwise lookup.

use crate::error::RingError;
use crate::hash::{key_position, vnode_position};
use crate::partition::PartitionId;

/// The largest accepted `vnodes_per_member`.
///
/// Bounds memory (16 bytes per virtual node) and the cost of `add`/`remove`. Balance improves
/// like `1/sqrt(V)`, so more than a few hundred buys little.
pub const VNODES_PER_MEMBER_MAX: u32 = 1 << 16;

/// A good default for `vnodes_per_member`: the per-member load has a coefficient of variation of
/// about `1/sqrt(256) = 6 %`, for 4 KiB of ring per member.
pub const VNODES_PER_MEMBER_DEFAULT: u32 = 256;

/// One virtual node: a position on the ring and the member that owns the arc ending there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Point {
    /// Where the virtual node sits; a key belongs to the first point at or after its position.
    position: u64,
    /// Index into `HashRing::members`. Members are kept sorted by name, so ordering points by
    /// `(position, member)` breaks position collisions by name, independently of the order in
    /// which members joined.
    member: usize,
}

/// A consistent-hash ring with virtual nodes.
///
/// Each member is identified by its name (`member.as_ref()`), and its virtual nodes are placed
/// by hashing that name, so the placement depends only on the set of names and on
/// `vnodes_per_member`: every process that holds the same membership computes the same owners,
/// whatever the order in which members were added. A key is owned by the member of the first
/// virtual node clockwise from the key's hash (wrapping around). Adding a member therefore moves
/// keys only *to* it, and removing one moves only *its* keys.
///
/// The type parameter is the caller's member value (a shard or node handle, or just a `String`);
/// the ring stores it and hands it back from lookups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashRing<M = String> {
    /// Virtual nodes per member, fixed at construction so every member has the same weight.
    vnodes_per_member: u32,
    /// Members sorted by name; names are unique.
    members: Vec<M>,
    /// All virtual nodes sorted by `(position, member)`; lookups binary-search this.
    points: Vec<Point>,
}

impl<M: AsRef<str>> HashRing<M> {
    /// Creates an empty ring whose members each get `vnodes_per_member` virtual nodes.
    ///
    /// # Errors
    ///
    /// [`RingError::InvalidVnodesPerMember`] unless `1 <= vnodes_per_member <=`
    /// [`VNODES_PER_MEMBER_MAX`].
    pub fn new(vnodes_per_member: u32) -> Result<Self, RingError> {
        if !(1..=VNODES_PER_MEMBER_MAX).contains(&vnodes_per_member) {
            return Err(RingError::InvalidVnodesPerMember {
                got: vnodes_per_member,
                max: VNODES_PER_MEMBER_MAX,
            });
        }
        Ok(Self {
            vnodes_per_member,
            members: Vec::new(),
            points: Vec::new(),
        })
    }

    /// The number of virtual nodes each member gets.
    pub fn vnodes_per_member(&self) -> u32 {
        self.vnodes_per_member
    }

    /// Adds `member` and its virtual nodes. Keys move only from other members to this one.
    ///
    /// Cost: `O(P log P)` for `P` virtual nodes on the ring.
    ///
    /// # Errors
    ///
    /// [`RingError::MemberExists`] if a member with the same name is already on the ring; the
    /// ring is left unchanged.
    pub fn add(&mut self, member: M) -> Result<(), RingError> {
        let at = match self.find(member.as_ref()) {
            Ok(_) => {
                return Err(RingError::MemberExists {
                    name: member.as_ref().to_owned(),
                });
            }
            Err(at) => at,
        };
        for point in &mut self.points {
            if point.member >= at {
                point.member += 1;
            }
        }
        let mut label = Vec::with_capacity(member.as_ref().len() + 4);
        self.points.reserve(self.vnodes_per_member as usize);
        for vnode in 0..self.vnodes_per_member {
            self.points.push(Point {
                position: vnode_position(&mut label, member.as_ref(), vnode),
                member: at,
            });
        }
        self.members.insert(at, member);
        self.points.sort_unstable();
        Ok(())
    }

    /// Removes the member called `name` and returns it. Only its keys move, each to the next
    /// member clockwise.
    ///
    /// Cost: `O(P)` for `P` virtual nodes on the ring.
    ///
    /// # Errors
    ///
    /// [`RingError::UnknownMember`] if no member has that name; the ring is left unchanged.
    pub fn remove(&mut self, name: &str) -> Result<M, RingError> {
        let at = self.find(name).map_err(|_| RingError::UnknownMember {
            name: name.to_owned(),
        })?;
        self.points.retain(|point| point.member != at);
        for point in &mut self.points {
            if point.member > at {
                point.member -= 1;
            }
        }
        Ok(self.members.remove(at))
    }

    /// Whether a member called `name` is on the ring.
    pub fn contains(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    /// The member called `name`, if it is on the ring.
    pub fn get(&self, name: &str) -> Option<&M> {
        self.find(name).ok().map(|at| &self.members[at])
    }

    /// The members, sorted by name.
    pub fn members(&self) -> &[M] {
        &self.members
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the ring has no members (every lookup then answers `None`).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The member that owns `key`, or `None` if the ring is empty.
    ///
    /// Cost: one hash and a binary search, `O(log P)`.
    pub fn owner(&self, key: &[u8]) -> Option<&M> {
        let start = self.first_point_at_or_after(key_position(key))?;
        Some(&self.members[self.points[start].member])
    }

    /// Up to `n` distinct members for `key`, in clockwise order: the owner first, then the member
    /// that would own `key` if the owner left, and so on.
    ///
    /// Returns `min(n, len())` members; an empty vector if the ring is empty or `n == 0`. The
    /// cache uses the second entry as a key's next home when its home node dies.
    pub fn owners(&self, key: &[u8], n: usize) -> Vec<&M> {
        let wanted = n.min(self.members.len());
        let mut found = Vec::with_capacity(wanted);
        if wanted == 0 {
            return found;
        }
        let Some(start) = self.first_point_at_or_after(key_position(key)) else {
            return found;
        };
        let mut seen = vec![false; self.members.len()];
        let (after, before) = self.points.split_at(start);
        for point in before.iter().chain(after) {
            if !seen[point.member] {
                seen[point.member] = true;
                found.push(&self.members[point.member]);
                if found.len() == wanted {
                    break;
                }
            }
        }
        assert_eq!(
            found.len(),
            wanted,
            "every member has at least one point, so a full turn finds all of them"
        );
        found
    }

    /// The member that owns `partition`, or `None` if the ring is empty.
    ///
    /// The partition is looked up as the key [`PartitionId::ring_key`].
    pub fn partition_owner(&self, partition: PartitionId) -> Option<&M> {
        self.owner(&partition.ring_key())
    }

    /// The owner of every partition `0..partitions`, indexed by partition id, or `None` if the
    /// ring is empty.
    pub fn partition_map(&self, partitions: u32) -> Option<Vec<&M>> {
        (0..partitions)
            .map(|id| self.partition_owner(PartitionId(id)))
            .collect()
    }

    /// Binary search for `name` in the name-sorted member list.
    fn find(&self, name: &str) -> Result<usize, usize> {
        self.members
            .binary_search_by(|member| member.as_ref().cmp(name))
    }

    /// Index of the first point clockwise from `position` (wrapping to 0), or `None` if empty.
    fn first_point_at_or_after(&self, position: u64) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let at = self
            .points
            .partition_point(|point| point.position < position);
        Some(if at == self.points.len() { 0 } else { at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(names: &[&str], vnodes: u32) -> HashRing {
        let mut ring = HashRing::new(vnodes).expect("test vnodes are in range");
        for name in names {
            ring.add((*name).to_owned())
                .expect("test names are distinct");
        }
        ring
    }

    #[test]
    fn empty_ring_answers_none() {
        // Proves lookups on an empty ring are values, not panics: owner/partition_map give None.
        let ring: HashRing = HashRing::new(8).expect("8 is in range");
        assert!(ring.is_empty());
        assert_eq!(ring.owner(b"k"), None);
        assert!(ring.owners(b"k", 3).is_empty());
        assert_eq!(ring.partition_owner(PartitionId(0)), None);
        assert_eq!(ring.partition_map(4), None);
    }

    #[test]
    fn zero_or_too_many_vnodes_are_rejected() {
        // Proves construction validates vnodes_per_member at both ends of the range.
        assert!(matches!(
            HashRing::<String>::new(0),
            Err(RingError::InvalidVnodesPerMember { got: 0, .. })
        ));
        assert!(HashRing::<String>::new(VNODES_PER_MEMBER_MAX + 1).is_err());
        assert!(HashRing::<String>::new(VNODES_PER_MEMBER_MAX).is_ok());
        assert!(HashRing::<String>::new(1).is_ok());
    }

    #[test]
    fn single_member_owns_every_key() {
        // Proves the wrap-around: with one member, keys past its last point still find it.
        let ring = ring(&["r1"], 4);
        for i in 0u32..1000 {
            assert_eq!(ring.owner(&i.to_le_bytes()).map(String::as_str), Some("r1"));
        }
    }

    #[test]
    fn adding_a_duplicate_name_is_refused_and_changes_nothing() {
        // Proves a second member with an existing name is an error and leaves the ring as it was.
        let mut ring = ring(&["r1", "r2"], 16);
        let before = ring.clone();
        assert_eq!(
            ring.add("r1".to_owned()),
            Err(RingError::MemberExists { name: "r1".into() })
        );
        assert_eq!(ring, before);
    }

    #[test]
    fn removing_an_unknown_member_is_refused() {
        // Proves remove of a name that is not on the ring is an error, not a panic.
        let mut ring = ring(&["r1"], 16);
        assert_eq!(
            ring.remove("r9"),
            Err(RingError::UnknownMember { name: "r9".into() })
        );
        assert_eq!(ring.remove("r1"), Ok("r1".to_owned()));
        assert!(ring.is_empty());
        assert_eq!(ring.owner(b"k"), None);
    }

    #[test]
    fn members_are_sorted_by_name_and_counted() {
        // Proves members() is name-ordered whatever the insertion order, and len/contains/get.
        let ring = ring(&["r3", "r1", "r2"], 8);
        assert_eq!(ring.members(), ["r1", "r2", "r3"]);
        assert_eq!(ring.len(), 3);
        assert!(ring.contains("r2"));
        assert!(!ring.contains("r4"));
        assert_eq!(ring.get("r3").map(String::as_str), Some("r3"));
        assert_eq!(ring.points.len(), 3 * 8);
    }

    #[test]
    fn owners_are_distinct_and_start_with_the_owner() {
        // Proves owners(key, n) lists min(n, len) distinct members, the first being owner(key).
        let ring = ring(&["c1", "c2", "c3", "c4"], 32);
        for i in 0u32..500 {
            let key = i.to_le_bytes();
            let owners = ring.owners(&key, 3);
            assert_eq!(owners.len(), 3);
            assert_eq!(Some(owners[0]), ring.owner(&key));
            assert!(owners[1] != owners[0] && owners[2] != owners[0] && owners[2] != owners[1]);
            assert_eq!(ring.owners(&key, 10).len(), 4);
            assert!(ring.owners(&key, 0).is_empty());
        }
    }

    #[test]
    fn second_owner_is_the_owner_after_the_first_leaves() {
        // Proves the cache's failover rule: owners(key, 2)[1] is exactly where key goes when
        // owners(key, 2)[0] is removed.
        let full = ring(&["c1", "c2", "c3", "c4", "c5"], 64);
        for i in 0u32..2000 {
            let key = i.to_le_bytes();
            let owners = full.owners(&key, 2);
            let mut without = full.clone();
            without.remove(owners[0]).expect("owner is a member");
            assert_eq!(without.owner(&key), Some(owners[1]));
        }
    }

    #[test]
    fn position_collisions_are_broken_by_name() {
        // Proves the tie-break on equal positions: the member whose name sorts first wins, in
        // whichever order the members were added (collisions are forced on a hand-built ring).
        let build = |first: &str, second: &str| {
            let mut ring: HashRing = HashRing::new(1).expect("1 is in range");
            ring.add(first.to_owned()).expect("distinct");
            ring.add(second.to_owned()).expect("distinct");
            for point in &mut ring.points {
                point.position = 7;
            }
            ring.points.sort_unstable();
            ring
        };
        for ring in [build("a", "b"), build("b", "a")] {
            assert_eq!(ring.owner(b"anything").map(String::as_str), Some("a"));
            assert_eq!(ring.owners(b"anything", 2), ["a", "b"]);
        }
    }

    #[test]
    fn partition_map_matches_partition_owner() {
        // Proves partition_map(P)[p] is the owner of PartitionId(p) for every p in 0..P.
        let ring = ring(&["r1", "r2", "r3"], 128);
        let map = ring.partition_map(64).expect("ring is not empty");
        assert_eq!(map.len(), 64);
        for (id, owner) in (0u32..).zip(&map) {
            assert_eq!(ring.partition_owner(PartitionId(id)), Some(*owner));
        }
        assert_eq!(ring.partition_map(0), Some(Vec::new()));
    }

    #[test]
    fn custom_member_types_are_placed_by_name() {
        // Proves a caller's own member type is placed exactly like a String of the same name.
        #[derive(Debug, PartialEq)]
        struct Shard {
            name: String,
            url: &'static str,
        }
        impl AsRef<str> for Shard {
            fn as_ref(&self) -> &str {
                &self.name
            }
        }
        let mut shards = HashRing::new(64).expect("64 is in range");
        let plain = ring(&["r1", "r2"], 64);
        for (name, url) in [("r1", "redis://a"), ("r2", "redis://b")] {
            shards
                .add(Shard {
                    name: name.into(),
                    url,
                })
                .expect("distinct");
        }
        for i in 0u32..500 {
            let key = i.to_le_bytes();
            let shard = shards.owner(&key).expect("not empty");
            assert_eq!(Some(&shard.name), plain.owner(&key));
            assert!(shard.url.starts_with("redis://"));
        }
    }
}
