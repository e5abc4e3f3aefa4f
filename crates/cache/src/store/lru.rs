//! Exact LRU order: the store's slots threaded on an intrusive doubly-linked list by handle.
//!
//! The list runs from the most recently used entry (`head`) to the least recently used one
//! (`tail`). Every operation is O(1). The links live in an array of their own, eight bytes per
//! slot, rather than beside the keys and values: a hit relinks its entry between two others
//! picked at random, and in a dense array those neighbours are far likelier to be in cache.

use super::Handle;

/// Sentinel for "no entry".
const NIL: Handle = Handle::MAX;

#[derive(Clone, Copy, Debug)]
struct Link {
    prev: Handle,
    next: Handle,
}

const UNLINKED: Link = Link {
    prev: NIL,
    next: NIL,
};

/// Recency order over the store's handles; the victim is the least recently used one.
#[derive(Debug)]
pub(crate) struct LruOrder {
    links: Vec<Link>,
    head: Handle,
    tail: Handle,
    len: usize,
}

impl LruOrder {
    pub(crate) fn new() -> Self {
        Self {
            links: Vec::new(),
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }

    fn link(&mut self, handle: Handle) -> &mut Link {
        &mut self.links[handle as usize]
    }

    fn unlink(&mut self, handle: Handle) {
        let Link { prev, next } = self.links[handle as usize];
        if prev == NIL {
            self.head = next;
        } else {
            self.link(prev).next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.link(next).prev = prev;
        }
    }

    fn link_front(&mut self, handle: Handle) {
        let old_head = self.head;
        *self.link(handle) = Link {
            prev: NIL,
            next: old_head,
        };
        if old_head == NIL {
            self.tail = handle;
        } else {
            self.link(old_head).prev = handle;
        }
        self.head = handle;
    }

    /// Adds the (new) entry `handle` as the most recently used.
    pub(crate) fn insert(&mut self, handle: Handle) {
        let index = handle as usize;
        if index >= self.links.len() {
            self.links.resize(index + 1, UNLINKED);
        }
        self.link_front(handle);
        self.len += 1;
    }

    /// Marks the entry as the most recently used.
    pub(crate) fn touch(&mut self, handle: Handle) {
        if self.head != handle {
            self.unlink(handle);
            self.link_front(handle);
        }
    }

    /// Forgets the entry.
    pub(crate) fn remove(&mut self, handle: Handle) {
        self.unlink(handle);
        *self.link(handle) = UNLINKED;
        self.len -= 1;
    }

    /// The least recently used entry, if any.
    pub(crate) fn victim(&self) -> Option<Handle> {
        (self.tail != NIL).then_some(self.tail)
    }

    /// The least recently used entry other than `kept`, if any.
    pub(crate) fn victim_except(&self, kept: Handle) -> Option<Handle> {
        match self.victim()? {
            tail if tail == kept => {
                let prev = self.links[tail as usize].prev;
                (prev != NIL).then_some(prev)
            }
            tail => Some(tail),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}
