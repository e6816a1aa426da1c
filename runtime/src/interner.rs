//! The string table behind a [`Bounded`](crate::Bounded) label: the first
//! `capacity` distinct strings a process records get indices in the order
//! they are seen, everything after that is `other`.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use crate::labels::OTHER;

#[derive(Debug)]
pub(crate) struct Interner {
    capacity: usize,
    lookup: RwLock<HashMap<Box<str>, usize>>,
    /// Index → string, readable by a scrape without taking the lock.
    values: Box<[OnceLock<Box<str>>]>,
    /// Set once every index is taken, so overflowing strings skip the
    /// write lock.
    full: AtomicBool,
    /// Recordings folded into `other` because the table was full.
    overflow: AtomicU64,
}

impl Interner {
    pub(crate) fn new(capacity: usize) -> Interner {
        Interner {
            capacity,
            lookup: RwLock::new(HashMap::new()),
            values: (0..capacity).map(|_| OnceLock::new()).collect(),
            full: AtomicBool::new(capacity == 0),
            overflow: AtomicU64::new(0),
        }
    }

    /// The index of `value`, assigning the next free one if needed;
    /// `capacity` means `other`.
    pub(crate) fn index(&self, value: &str) -> usize {
        if value == OTHER {
            return self.capacity;
        }
        if let Some(&index) = self.lookup.read().unwrap_or_else(|e| e.into_inner()).get(value) {
            return index;
        }
        if self.full.load(Ordering::Relaxed) {
            self.overflow.fetch_add(1, Ordering::Relaxed);
            return self.capacity;
        }
        self.insert(value)
    }

    #[cold]
    fn insert(&self, value: &str) -> usize {
        let mut lookup = self.lookup.write().unwrap_or_else(|e| e.into_inner());
        if let Some(&index) = lookup.get(value) {
            return index;
        }
        let index = lookup.len();
        if index >= self.capacity {
            self.full.store(true, Ordering::Relaxed);
            self.overflow.fetch_add(1, Ordering::Relaxed);
            return self.capacity;
        }
        let _ = self.values[index].set(value.into());
        lookup.insert(value.into(), index);
        if index + 1 == self.capacity {
            self.full.store(true, Ordering::Relaxed);
        }
        index
    }

    /// The string at `index`: `None` for an index not yet assigned,
    /// `other` for `capacity`.
    pub(crate) fn get(&self, index: usize) -> Option<&str> {
        if index == self.capacity {
            return Some(OTHER);
        }
        self.values.get(index)?.get().map(|s| &**s)
    }

    pub(crate) fn overflow(&self) -> u64 {
        self.overflow.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::Interner;

    #[test]
    fn keeps_the_first_values_and_folds_the_rest() {
        let t = Interner::new(2);
        assert_eq!(t.index("/a"), 0);
        assert_eq!(t.index("/b"), 1);
        assert_eq!(t.index("/a"), 0);
        assert_eq!(t.index("/c"), 2);
        assert_eq!(t.index("/d"), 2);
        assert_eq!(t.index("other"), 2, "the literal value is the overflow series");
        assert_eq!(t.overflow(), 2);
        assert_eq!((t.get(0), t.get(1), t.get(2), t.get(3)), (Some("/a"), Some("/b"), Some("other"), None));
    }

    #[test]
    fn unassigned_indices_read_as_none() {
        let t = Interner::new(3);
        t.index("x");
        assert_eq!(t.get(1), None);
    }
}
