//! The string table behind a [`Bounded`](crate::Bounded) label: the first
//! `capacity` distinct strings a process records get indices in the order
//! they are seen, everything after that is `other`.
//!
//! Lookups never lock: the table is open addressing over atomics, and a
//! string is published in it only after its index holds the string. Inserts
//! take the process-wide [`gate`](crate::gate), which `fork()` cannot catch
//! half-done.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use crate::gate;
use crate::labels::OTHER;

/// The longest value kept; longer values count as overflow, so that a
/// shard's string log can hold every kept value.
pub(crate) const MAX_VALUE_LEN: usize = crate::descriptor::MAX_LABEL_VALUE;

/// Receives each newly kept value: its index and text.
pub(crate) type StringSink = dyn Fn(usize, &str) + Sync;

pub(crate) struct Interner {
    capacity: usize,
    /// Index → string.
    values: Box<[OnceLock<Box<str>>]>,
    /// Hash buckets holding `index + 1`, 0 when empty; twice the capacity
    /// rounded to a power of two, so probes stay short.
    buckets: Box<[AtomicU32]>,
    len: AtomicUsize,
    full: AtomicBool,
    /// Recordings folded into `other` because the table was full.
    overflow: AtomicU64,
    /// Called with each newly kept value (index, text), under the gate.
    on_insert: Option<&'static StringSink>,
}

impl Interner {
    pub(crate) fn new(capacity: usize, on_insert: Option<&'static StringSink>) -> Interner {
        let buckets = (capacity * 2).next_power_of_two().max(4);
        Interner {
            capacity,
            values: (0..capacity).map(|_| OnceLock::new()).collect(),
            buckets: (0..buckets).map(|_| AtomicU32::new(0)).collect(),
            len: AtomicUsize::new(0),
            full: AtomicBool::new(capacity == 0),
            overflow: AtomicU64::new(0),
            on_insert,
        }
    }

    /// The index of `value`, assigning the next free one if needed;
    /// `capacity` means `other`.
    pub(crate) fn index(&self, value: &str) -> usize {
        if value == OTHER {
            return self.capacity;
        }
        if let Some(index) = self.find(value) {
            return index;
        }
        if self.full.load(Ordering::Relaxed) || value.len() > MAX_VALUE_LEN {
            self.overflow.fetch_add(1, Ordering::Relaxed);
            return self.capacity;
        }
        gate::locked(|| self.insert(value))
    }

    /// Whether every value the table can keep is taken.
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) fn is_full(&self) -> bool {
        self.full.load(Ordering::Relaxed)
    }

    /// The index of `value` if it was kept (`capacity` for `other`),
    /// without keeping it.
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) fn lookup(&self, value: &str) -> Option<usize> {
        if value == OTHER { Some(self.capacity) } else { self.find(value) }
    }

    fn find(&self, value: &str) -> Option<usize> {
        let mask = self.buckets.len() - 1;
        let mut at = hash(value) as usize & mask;
        loop {
            let entry = self.buckets[at].load(Ordering::Acquire) as usize;
            if entry == 0 {
                return None;
            }
            if self.values[entry - 1].get().is_some_and(|v| **v == *value) {
                return Some(entry - 1);
            }
            at = (at + 1) & mask;
        }
    }

    #[cold]
    fn insert(&self, value: &str) -> usize {
        if let Some(index) = self.find(value) {
            return index;
        }
        let index = self.len.load(Ordering::Relaxed);
        if index >= self.capacity {
            self.full.store(true, Ordering::Relaxed);
            self.overflow.fetch_add(1, Ordering::Relaxed);
            return self.capacity;
        }
        let _ = self.values[index].set(value.into());
        if let Some(on_insert) = self.on_insert {
            on_insert(index, value);
        }
        let mask = self.buckets.len() - 1;
        let mut at = hash(value) as usize & mask;
        while self.buckets[at].load(Ordering::Relaxed) != 0 {
            at = (at + 1) & mask;
        }
        // Release: a reader that finds the bucket also sees the string.
        self.buckets[at].store(index as u32 + 1, Ordering::Release);
        self.len.store(index + 1, Ordering::Relaxed);
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

impl core::fmt::Debug for Interner {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Interner").field("capacity", &self.capacity).field("len", &self.len).finish_non_exhaustive()
    }
}

/// FNV-1a: short label strings, no adversary that gains from collisions
/// (the table is bounded either way).
fn hash(s: &str) -> u64 {
    crate::shard::format::checksum(s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::Interner;

    #[test]
    fn keeps_the_first_values_and_folds_the_rest() {
        let t = Interner::new(2, None);
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
    fn many_threads_agree_on_indices() {
        let t = std::sync::Arc::new(Interner::new(100, None));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || (0..150).map(|i| t.index(&format!("v{i}"))).collect::<Vec<_>>())
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(results.windows(2).all(|w| w[0] == w[1]), "every thread sees the same index per value");
        let kept: std::collections::HashSet<_> = results[0].iter().filter(|i| **i < 100).collect();
        assert_eq!(kept.len(), 100);
        assert_eq!(t.index(&"x".repeat(300)), 100, "over-long values overflow");
    }
}
