//! Exact LFU order in O(1) (Shah, Mitra, Matani 2010): a list of frequency buckets in ascending
//! frequency, each holding a recency list of its entries.
//!
//! Tie-break, documented and tested against a reference model: among the least frequently used
//! entries the victim is the **least recently used** one. An entry's frequency starts at 1 when it
//! is inserted and grows by one on every access (`get` hit or `put` over an existing key);
//! removing an entry forgets its frequency.

/// Sentinel for "no node" / "no bucket".
const NIL: usize = usize::MAX;

#[derive(Debug)]
struct Node<K> {
    key: K,
    bucket: usize,
    /// Towards the more recently used entry of the same bucket.
    prev: usize,
    /// Towards the less recently used entry of the same bucket.
    next: usize,
}

#[derive(Debug)]
struct Bucket {
    frequency: u64,
    /// Most recently used entry of this bucket.
    head: usize,
    /// Least recently used entry of this bucket.
    tail: usize,
    /// Bucket with the next lower frequency.
    lower: usize,
    /// Bucket with the next higher frequency.
    higher: usize,
}

/// Frequency order over keys; the victim is the least recently used of the least frequent keys.
#[derive(Debug)]
pub(crate) struct LfuOrder<K> {
    nodes: Vec<Option<Node<K>>>,
    free_nodes: Vec<usize>,
    buckets: Vec<Option<Bucket>>,
    free_buckets: Vec<usize>,
    /// Bucket with the lowest frequency.
    lowest: usize,
    len: usize,
}

impl<K> LfuOrder<K> {
    pub(crate) fn new() -> Self {
        Self {
            nodes: Vec::new(),
            free_nodes: Vec::new(),
            buckets: Vec::new(),
            free_buckets: Vec::new(),
            lowest: NIL,
            len: 0,
        }
    }

    fn node(&self, handle: usize) -> &Node<K> {
        self.nodes[handle]
            .as_ref()
            .expect("LFU handle refers to a live node: the store keeps handles in step")
    }

    fn node_mut(&mut self, handle: usize) -> &mut Node<K> {
        self.nodes[handle]
            .as_mut()
            .expect("LFU handle refers to a live node: the store keeps handles in step")
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
            head: NIL,
            tail: NIL,
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
            (bucket.head == NIL, bucket.lower, bucket.higher)
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

    fn unlink(&mut self, handle: usize) {
        let (bucket, prev, next) = {
            let node = self.node(handle);
            (node.bucket, node.prev, node.next)
        };
        if prev == NIL {
            self.bucket_mut(bucket).head = next;
        } else {
            self.node_mut(prev).next = next;
        }
        if next == NIL {
            self.bucket_mut(bucket).tail = prev;
        } else {
            self.node_mut(next).prev = prev;
        }
    }

    fn link_front(&mut self, handle: usize, bucket: usize) {
        let old_head = self.bucket(bucket).head;
        {
            let node = self.node_mut(handle);
            node.bucket = bucket;
            node.prev = NIL;
            node.next = old_head;
        }
        if old_head == NIL {
            self.bucket_mut(bucket).tail = handle;
        } else {
            self.node_mut(old_head).prev = handle;
        }
        self.bucket_mut(bucket).head = handle;
    }

    /// Inserts `key` with frequency 1 as the most recent entry of that frequency.
    pub(crate) fn insert(&mut self, key: K) -> usize {
        let node = Node {
            key,
            bucket: NIL,
            prev: NIL,
            next: NIL,
        };
        let handle = match self.free_nodes.pop() {
            Some(handle) => {
                self.nodes[handle] = Some(node);
                handle
            }
            None => {
                self.nodes.push(Some(node));
                self.nodes.len() - 1
            }
        };
        let bucket = if self.lowest != NIL && self.bucket(self.lowest).frequency == 1 {
            self.lowest
        } else {
            self.new_bucket_above(NIL, 1)
        };
        self.link_front(handle, bucket);
        self.len += 1;
        handle
    }

    /// Counts one more access: the entry moves to the next frequency, as its most recent entry.
    pub(crate) fn touch(&mut self, handle: usize) {
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

    /// Removes the entry and returns its key.
    pub(crate) fn remove(&mut self, handle: usize) -> K {
        let bucket = self.node(handle).bucket;
        self.unlink(handle);
        self.drop_bucket_if_empty(bucket);
        let node = self.nodes[handle]
            .take()
            .expect("LFU handle refers to a live node: the store keeps handles in step");
        self.free_nodes.push(handle);
        self.len -= 1;
        node.key
    }

    /// The least recently used entry among the least frequently used ones.
    pub(crate) fn victim(&self) -> Option<usize> {
        if self.lowest == NIL {
            return None;
        }
        let tail = self.bucket(self.lowest).tail;
        assert!(tail != NIL, "LFU invariant: a live bucket is never empty");
        Some(tail)
    }

    /// The key stored under `handle`.
    pub(crate) fn key(&self, handle: usize) -> &K {
        &self.node(handle).key
    }

    /// The access count of the entry.
    pub(crate) fn frequency(&self, handle: usize) -> u64 {
        self.bucket(self.node(handle).bucket).frequency
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}
