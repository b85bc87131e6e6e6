//! The request ids a stream (or a batch) has used, to refuse a repeated one: the last
//! `capacity` ids, exactly (no probabilistic filter: a valid request is never refused).
//!
//! Kept compact because every open stream holds one (65,536 ids by default): the ids' bytes
//! back to back in one buffer, a ring of (offset, length) spans, and a hash table of 8-byte
//! sequence numbers. About 27 bytes plus the id per id, where two boxed copies of each id in a
//! `HashSet` and a `VecDeque` took about 130 (16 streams held 136 MB under the stream benchmark).

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

/// Below this many dead bytes at the front the buffer is not compacted.
const MIN_COMPACT: usize = 4096;

pub struct RecentIds {
    capacity: usize,
    /// Id bytes; `bytes[0]` is at absolute offset `base`.
    bytes: Vec<u8>,
    base: usize,
    /// (absolute offset, length) of each remembered id, oldest first.
    spans: VecDeque<(usize, u32)>,
    /// Sequence number of `spans[0]`.
    first: u64,
    /// Sequence numbers, by the hash of their id.
    table: HashTable<u64>,
    hasher: RandomState,
}

impl RecentIds {
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            bytes: Vec::new(),
            base: 0,
            spans: VecDeque::new(),
            first: 0,
            table: HashTable::new(),
            hasher: RandomState::new(),
        }
    }

    /// Remember `id`; false when it is already remembered.
    pub fn insert(&mut self, id: &str) -> bool {
        let hash = self.hasher.hash_one(id.as_bytes());
        if self.find(hash, id.as_bytes()).is_some() {
            return false;
        }
        if self.spans.len() >= self.capacity {
            self.forget_oldest();
        }
        let seq = self.first + self.spans.len() as u64;
        self.spans
            .push_back((self.base + self.bytes.len(), id.len() as u32));
        self.bytes.extend_from_slice(id.as_bytes());
        let Self {
            bytes,
            base,
            spans,
            first,
            table,
            hasher,
            ..
        } = self;
        table.insert_unique(hash, seq, |s| {
            hasher.hash_one(id_at(bytes, *base, spans, *first, *s))
        });
        true
    }

    fn find(&self, hash: u64, id: &[u8]) -> Option<u64> {
        self.table
            .find(hash, |seq| {
                id_at(&self.bytes, self.base, &self.spans, self.first, *seq) == id
            })
            .copied()
    }

    fn forget_oldest(&mut self) {
        let Some(&(start, len)) = self.spans.front() else {
            return;
        };
        let local = start - self.base;
        let hash = self
            .hasher
            .hash_one(&self.bytes[local..local + len as usize]);
        let oldest = self.first;
        if let Ok(entry) = self.table.find_entry(hash, |seq| *seq == oldest) {
            entry.remove();
        }
        self.spans.pop_front();
        self.first += 1;
        let dead = local + len as usize;
        if dead >= MIN_COMPACT && dead * 2 >= self.bytes.len() {
            self.bytes.drain(..dead);
            self.base += dead;
        }
    }

    /// Ids remembered now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Bytes held (buffer, spans and table), for tests and capacity planning.
    #[must_use]
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity()
            + self.spans.capacity() * std::mem::size_of::<(usize, u32)>()
            + self.table.capacity() * (std::mem::size_of::<u64>() + 1)
    }
}

/// The bytes of the id with sequence number `seq`.
fn id_at<'a>(
    bytes: &'a [u8],
    base: usize,
    spans: &VecDeque<(usize, u32)>,
    first: u64,
    seq: u64,
) -> &'a [u8] {
    let (start, len) = spans[(seq - first) as usize];
    let start = start - base;
    &bytes[start..start + len as usize]
}

#[cfg(test)]
mod tests {
    use std::collections::{HashSet, VecDeque};

    use super::RecentIds;

    #[test]
    fn bounded_window() {
        let mut ids = RecentIds::new(2);
        assert!(ids.insert("a"));
        assert!(!ids.insert("a"));
        assert!(ids.insert("b"));
        assert!(ids.insert("c"));
        assert!(ids.insert("a"), "a fell out of the window");
        assert!(!ids.insert("c"));
        assert!(ids.insert(""));
        assert!(!ids.insert(""));
        assert_eq!(ids.len(), 2);
    }

    /// Against the plain model (a set and a queue of owned strings) on a long random run that
    /// compacts the buffer many times, with repeats both inside and just outside the window.
    #[test]
    fn agrees_with_a_set_and_a_queue() {
        let capacity = 300;
        let mut ids = RecentIds::new(capacity);
        let mut set: HashSet<String> = HashSet::new();
        let mut order: VecDeque<String> = VecDeque::new();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let id = format!(
                "id-{}-{}",
                state % 900,
                "x".repeat((state >> 20) as usize % 40)
            );
            let fresh = !set.contains(&id);
            assert_eq!(ids.insert(&id), fresh, "{id}");
            if fresh {
                set.insert(id.clone());
                order.push_back(id);
                if order.len() > capacity {
                    if let Some(old) = order.pop_front() {
                        set.remove(&old);
                    }
                }
            }
            assert_eq!(ids.len(), order.len());
        }
        assert!(ids.heap_bytes() < 64 * 1024, "{} bytes", ids.heap_bytes());
    }

    #[test]
    fn a_full_default_window_stays_small() {
        let mut ids = RecentIds::new(65_536);
        for i in 0..200_000 {
            assert!(ids.insert(&format!("request-{i:012}")));
        }
        // 20-byte ids: the bytes, 16-byte spans and 9 bytes of table per id, with growth slack
        assert!(ids.heap_bytes() < 65_536 * 90, "{} bytes", ids.heap_bytes());
    }
}
