//! Exact LRU order: a slab of nodes threaded on an intrusive doubly-linked list by index.
//!
//! The list runs from the most recently used entry (`head`) to the least recently used one
//! (`tail`). Every operation is O(1): a handle is the node's slab index.

/// Sentinel for "no node".
const NIL: usize = usize::MAX;

#[derive(Debug)]
struct Node<K> {
    key: K,
    prev: usize,
    next: usize,
}

/// Recency order over keys; the victim is the least recently used key.
#[derive(Debug)]
pub(crate) struct LruOrder<K> {
    nodes: Vec<Option<Node<K>>>,
    free: Vec<usize>,
    head: usize,
    tail: usize,
    len: usize,
}

impl<K> LruOrder<K> {
    pub(crate) fn new() -> Self {
        Self {
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }

    fn node(&self, handle: usize) -> &Node<K> {
        self.nodes[handle]
            .as_ref()
            .expect("LRU handle refers to a live node: the store keeps handles in step")
    }

    fn node_mut(&mut self, handle: usize) -> &mut Node<K> {
        self.nodes[handle]
            .as_mut()
            .expect("LRU handle refers to a live node: the store keeps handles in step")
    }

    fn unlink(&mut self, handle: usize) {
        let (prev, next) = {
            let node = self.node(handle);
            (node.prev, node.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.node_mut(prev).next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.node_mut(next).prev = prev;
        }
    }

    fn link_front(&mut self, handle: usize) {
        let old_head = self.head;
        {
            let node = self.node_mut(handle);
            node.prev = NIL;
            node.next = old_head;
        }
        if old_head == NIL {
            self.tail = handle;
        } else {
            self.node_mut(old_head).prev = handle;
        }
        self.head = handle;
    }

    /// Inserts `key` as the most recently used entry and returns its handle.
    pub(crate) fn insert(&mut self, key: K) -> usize {
        let node = Node {
            key,
            prev: NIL,
            next: NIL,
        };
        let handle = match self.free.pop() {
            Some(handle) => {
                self.nodes[handle] = Some(node);
                handle
            }
            None => {
                self.nodes.push(Some(node));
                self.nodes.len() - 1
            }
        };
        self.link_front(handle);
        self.len += 1;
        handle
    }

    /// Marks the entry as the most recently used.
    pub(crate) fn touch(&mut self, handle: usize) {
        if self.head != handle {
            self.unlink(handle);
            self.link_front(handle);
        }
    }

    /// Removes the entry and returns its key.
    pub(crate) fn remove(&mut self, handle: usize) -> K {
        self.unlink(handle);
        let node = self.nodes[handle]
            .take()
            .expect("LRU handle refers to a live node: the store keeps handles in step");
        self.free.push(handle);
        self.len -= 1;
        node.key
    }

    /// The least recently used entry, if any.
    pub(crate) fn victim(&self) -> Option<usize> {
        (self.tail != NIL).then_some(self.tail)
    }

    /// The key stored under `handle`.
    pub(crate) fn key(&self, handle: usize) -> &K {
        &self.node(handle).key
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}
