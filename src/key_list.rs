//! Intrusive doubly linked lists of slab keys, each kept in time order, at O(1) per
//! operation: the building block of the timers and of the handshake budget.
//!
//! A key is in at most one of the `N` lists at a time. Appending always uses the current
//! time, the latest there is, so every list stays sorted by its entries' times without ever
//! being searched: the head is the oldest entry. The links live in a `Vec` indexed by key,
//! beside the slab, so nothing allocates once the vector has grown to the peak key.

use std::time::Instant;

const NIL: usize = usize::MAX;

#[derive(Debug, Clone, Copy)]
struct Node {
    list: Option<usize>,
    since: Instant,
    prev: usize,
    next: usize,
}

#[derive(Debug, Clone, Copy)]
struct Ends {
    head: usize,
    tail: usize,
    len: usize,
}

/// Time-ordered lists over slab keys; see the module documentation.
#[derive(Debug)]
pub struct KeyLists {
    lists: Vec<Ends>,
    nodes: Vec<Node>,
}

const EMPTY: Ends = Ends {
    head: NIL,
    tail: NIL,
    len: 0,
};

impl KeyLists {
    /// `count` empty lists.
    pub fn new(count: usize) -> Self {
        Self {
            lists: vec![EMPTY; count],
            nodes: Vec::new(),
        }
    }

    /// Adds an empty list and returns its index.
    pub fn add_list(&mut self) -> usize {
        self.lists.push(EMPTY);
        self.lists.len() - 1
    }

    /// How many lists there are.
    pub fn list_count(&self) -> usize {
        self.lists.len()
    }

    /// The list `key` is in, if any.
    pub fn list_of(&self, key: usize) -> Option<usize> {
        self.nodes.get(key).and_then(|n| n.list)
    }

    /// Moves `key` to the tail of `list` with time `now` (leaving any list it was in).
    /// A list that does not exist is ignored.
    pub fn push_back(&mut self, key: usize, list: usize, now: Instant) {
        self.remove(key);
        if list >= self.lists.len() {
            return;
        }
        if key >= self.nodes.len() {
            let blank = Node {
                list: None,
                since: now,
                prev: NIL,
                next: NIL,
            };
            self.nodes.resize(key + 1, blank);
        }
        let ends = &mut self.lists[list];
        let old_tail = ends.tail;
        ends.tail = key;
        ends.len += 1;
        if old_tail == NIL {
            ends.head = key;
        } else {
            self.nodes[old_tail].next = key;
        }
        self.nodes[key] = Node {
            list: Some(list),
            since: now,
            prev: old_tail,
            next: NIL,
        };
    }

    /// Takes `key` out of its list; returns which list that was.
    pub fn remove(&mut self, key: usize) -> Option<usize> {
        let list = self.list_of(key)?;
        let Node { prev, next, .. } = self.nodes[key];
        let ends = &mut self.lists[list];
        ends.len -= 1;
        if prev == NIL {
            ends.head = next;
        } else {
            self.nodes[prev].next = next;
        }
        if next == NIL {
            self.lists[list].tail = prev;
        } else {
            self.nodes[next].prev = prev;
        }
        let node = &mut self.nodes[key];
        *node = Node {
            list: None,
            prev: NIL,
            next: NIL,
            ..*node
        };
        Some(list)
    }

    /// The oldest entry of `list` and its time.
    pub fn head(&self, list: usize) -> Option<(usize, Instant)> {
        let key = self.lists.get(list)?.head;
        self.nodes.get(key).map(|node| (key, node.since))
    }

    /// How many keys are in `list`.
    pub fn len(&self, list: usize) -> usize {
        self.lists.get(list).map_or(0, |ends| ends.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lists_keep_time_order_and_counts_through_moves_and_removals() {
        let mut lists = KeyLists::new(2);
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        for key in 0..4 {
            lists.push_back(key, 0, at(key as u64));
        }
        lists.push_back(0, 0, at(10)); // moves to the tail
        lists.push_back(2, 1, at(11)); // moves to the other list
        assert_eq!(lists.remove(3), Some(0));
        assert_eq!(lists.remove(3), None);
        assert_eq!((lists.len(0), lists.len(1)), (2, 1));
        assert_eq!(lists.head(0), Some((1, at(1))));
        assert_eq!(lists.remove(1), Some(0));
        assert_eq!(lists.head(0), Some((0, at(10))));
        assert_eq!(lists.head(1), Some((2, at(11))));
        assert_eq!(lists.list_of(2), Some(1));
        lists.remove(0);
        lists.remove(2);
        assert_eq!((lists.head(0), lists.head(1)), (None, None));
    }
}
