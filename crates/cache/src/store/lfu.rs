//! Exact LFU order in O(1) (Shah, Mitra, Matani 2010): a list of frequency buckets in ascending
//! frequency, each holding a recency list of its entries.
//!
//! Tie-break, documented and tested against a reference model: among the least frequently used
//! entries the victim is the **least recently used** one. An entry's frequency starts at 1 when it
//! is inserted and grows by one on every access (`get` hit or `put` over an existing key);
//! removing an entry forgets its frequency.
//!
//! Like the LRU order, the nodes are indexed by the store's handles and hold no key.

use super::Handle;

/// Sentinel for "no bucket".
const NIL: usize = usize::MAX;
/// Sentinel for "no node".
const NO_NODE: Handle = Handle::MAX;

#[derive(Clone, Copy, Debug)]
struct Node {
    /// `NIL` while the handle holds no entry.
    bucket: usize,
    /// Towards the more recently used entry of the same bucket.
    prev: Handle,
    /// Towards the less recently used entry of the same bucket.
    next: Handle,
}

const UNUSED: Node = Node {
    bucket: NIL,
    prev: NO_NODE,
    next: NO_NODE,
};

#[derive(Debug)]
struct Bucket {
    frequency: u64,
    /// Most recently used entry of this bucket.
    head: Handle,
    /// Least recently used entry of this bucket.
    tail: Handle,
    /// Bucket with the next lower frequency.
    lower: usize,
    /// Bucket with the next higher frequency.
    higher: usize,
}

/// Frequency order over the store's handles; the victim is the least recently used of the
/// least frequent entries.
#[derive(Debug)]
pub(crate) struct LfuOrder {
    nodes: Vec<Node>,
    buckets: Vec<Option<Bucket>>,
    free_buckets: Vec<usize>,
    /// Bucket with the lowest frequency.
    lowest: usize,
    len: usize,
}

impl LfuOrder {
    pub(crate) fn new() -> Self {
        Self {
            nodes: Vec::new(),
            buckets: Vec::new(),
            free_buckets: Vec::new(),
            lowest: NIL,
            len: 0,
        }
    }

    fn node(&self, handle: Handle) -> &Node {
        let node = &self.nodes[handle as usize];
        assert!(
            node.bucket != NIL,
            "LFU handle refers to a live node: the store keeps handles in step"
        );
        node
    }

    fn node_mut(&mut self, handle: Handle) -> &mut Node {
        &mut self.nodes[handle as usize]
    }

    fn bucket(&self, index: usize) -> &Bucket {
        self.buckets[index]
            .as_ref()
            .expect("bucket index refers to a live bucket")
    }

    fn bucket_mut(&mut self, index: usize) -> &mut Bucket {
        self.buckets[index]
            .as_mut()
            .expect("bucket index refers to a live bucket")
    }

    /// Creates a bucket with `frequency` right above `lower` (or as the lowest when `lower` is NIL).
    fn new_bucket_above(&mut self, lower: usize, frequency: u64) -> usize {
        let higher = if lower == NIL {
            self.lowest
        } else {
            self.bucket(lower).higher
        };
        let bucket = Bucket {
            frequency,
            head: NO_NODE,
            tail: NO_NODE,
            lower,
            higher,
        };
        let index = match self.free_buckets.pop() {
            Some(index) => {
                self.buckets[index] = Some(bucket);
                index
            }
            None => {
                self.buckets.push(Some(bucket));
                self.buckets.len() - 1
            }
        };
        if lower == NIL {
            self.lowest = index;
        } else {
            self.bucket_mut(lower).higher = index;
        }
        if higher != NIL {
            self.bucket_mut(higher).lower = index;
        }
        index
    }

    fn drop_bucket_if_empty(&mut self, index: usize) {
        let (empty, lower, higher) = {
            let bucket = self.bucket(index);
            (bucket.head == NO_NODE, bucket.lower, bucket.higher)
        };
        if !empty {
            return;
        }
        if lower == NIL {
            self.lowest = higher;
        } else {
            self.bucket_mut(lower).higher = higher;
        }
        if higher != NIL {
            self.bucket_mut(higher).lower = lower;
        }
        self.buckets[index] = None;
        self.free_buckets.push(index);
    }

    fn unlink(&mut self, handle: Handle) {
        let Node { bucket, prev, next } = *self.node(handle);
        if prev == NO_NODE {
            self.bucket_mut(bucket).head = next;
        } else {
            self.node_mut(prev).next = next;
        }
        if next == NO_NODE {
            self.bucket_mut(bucket).tail = prev;
        } else {
            self.node_mut(next).prev = prev;
        }
    }

    fn link_front(&mut self, handle: Handle, bucket: usize) {
        let old_head = self.bucket(bucket).head;
        *self.node_mut(handle) = Node {
            bucket,
            prev: NO_NODE,
            next: old_head,
        };
        if old_head == NO_NODE {
            self.bucket_mut(bucket).tail = handle;
        } else {
            self.node_mut(old_head).prev = handle;
        }
        self.bucket_mut(bucket).head = handle;
    }

    /// Adds the (new) entry `handle` with frequency 1, as the most recent entry of that frequency.
    pub(crate) fn insert(&mut self, handle: Handle) {
        let index = handle as usize;
        if index >= self.nodes.len() {
            self.nodes.resize(index + 1, UNUSED);
        }
        let bucket = if self.lowest != NIL && self.bucket(self.lowest).frequency == 1 {
            self.lowest
        } else {
            self.new_bucket_above(NIL, 1)
        };
        self.link_front(handle, bucket);
        self.len += 1;
    }

    /// Counts one more access: the entry moves to the next frequency, as its most recent entry.
    pub(crate) fn touch(&mut self, handle: Handle) {
        let from = self.node(handle).bucket;
        let frequency = self.bucket(from).frequency + 1;
        let higher = self.bucket(from).higher;
        let to = if higher != NIL && self.bucket(higher).frequency == frequency {
            higher
        } else {
            self.new_bucket_above(from, frequency)
        };
        self.unlink(handle);
        self.link_front(handle, to);
        self.drop_bucket_if_empty(from);
    }

    /// Forgets the entry (and its frequency).
    pub(crate) fn remove(&mut self, handle: Handle) {
        let bucket = self.node(handle).bucket;
        self.unlink(handle);
        self.drop_bucket_if_empty(bucket);
        *self.node_mut(handle) = UNUSED;
        self.len -= 1;
    }

    /// The least recently used entry among the least frequently used ones.
    pub(crate) fn victim(&self) -> Option<Handle> {
        if self.lowest == NIL {
            return None;
        }
        let tail = self.bucket(self.lowest).tail;
        assert!(
            tail != NO_NODE,
            "LFU invariant: a live bucket is never empty"
        );
        Some(tail)
    }

    /// The victim among every entry but `kept`: `kept`'s neighbour in the same bucket when it
    /// is the victim itself, else the least recent entry of the next bucket up.
    pub(crate) fn victim_except(&self, kept: Handle) -> Option<Handle> {
        let victim = self.victim()?;
        if victim != kept {
            return Some(victim);
        }
        let Node { bucket, prev, .. } = *self.node(kept);
        if prev != NO_NODE {
            return Some(prev);
        }
        let higher = self.bucket(bucket).higher;
        (higher != NIL).then(|| self.bucket(higher).tail)
    }

    /// The access count of the entry.
    pub(crate) fn frequency(&self, handle: Handle) -> u64 {
        self.bucket(self.node(handle).bucket).frequency
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}
