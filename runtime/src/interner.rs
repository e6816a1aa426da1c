//! The string table behind a [`Bounded`](crate::Bounded) label: the first
//! `capacity` distinct strings a process records get indices in the order
//! they are seen, everything after that is `other`.
//!
//! Lookups never lock: the table is open addressing over atomics, and a
//! string is published in it only after its index holds the string. Inserts
//! take the process-wide [`gate`](crate::gate), which `fork()` cannot catch
//! half-done.

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
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
    /// Recordings folded into `other` because the table was full (or
    /// the value too long): the label's series of
    /// `promshard_label_overflow_total`, once laid out.
    overflow: Tally,
    /// Called with each newly kept value (index, text), under the gate.
    on_insert: Option<&'static StringSink>,
}

impl Interner {
    /// A table keeping `capacity` values, sending each to `on_insert`
    /// and counting overflow at `overflow` (null: in the table itself).
    pub(crate) fn new(capacity: usize, on_insert: Option<&'static StringSink>, overflow: *const AtomicU64) -> Interner {
        let buckets = (capacity * 2).next_power_of_two().max(4);
        Interner {
            capacity,
            values: (0..capacity).map(|_| OnceLock::new()).collect(),
            buckets: (0..buckets).map(|_| AtomicU32::new(0)).collect(),
            len: AtomicUsize::new(0),
            full: AtomicBool::new(capacity == 0),
            overflow: Tally::at(overflow),
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
            self.overflow.add();
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
            self.overflow.add();
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

    #[cfg(test)]
    pub(crate) fn overflow(&self) -> u64 {
        self.overflow.get()
    }
}

/// A count promshard keeps of what it could not record as asked (a
/// label's overflow, a metric's refused values or dropped observations).
///
/// It is added to the series of its `promshard_*` family, a slot in the
/// arena the registry points it at, so that in multiprocess mode each
/// process counts in its own shard and every scrape sums them, dead
/// workers included. Before that, and for good in a metric that is never
/// laid out (unregistered, or hidden by a clash), it counts in an atomic
/// of its own, which no scrape shows.
#[derive(Debug)]
pub(crate) struct Tally {
    /// The series' count slot, or null. Stored with `Release` once the
    /// arena is zeroed, loaded with `Acquire` (a plain load on x86), as
    /// `MetricCore`'s base is.
    slot: AtomicPtr<AtomicU64>,
    own: AtomicU64,
}

impl Tally {
    pub(crate) const fn new() -> Tally {
        Tally { slot: AtomicPtr::new(core::ptr::null_mut()), own: AtomicU64::new(0) }
    }

    /// A tally counting at `slot` from the start (null: in itself).
    pub(crate) fn at(slot: *const AtomicU64) -> Tally {
        Tally { slot: AtomicPtr::new(slot as *mut AtomicU64), own: AtomicU64::new(0) }
    }

    /// Counts at `slot` from now on; what was counted before moves there.
    ///
    /// `slot` must be a counter slot that lives for the rest of the
    /// process (the registry's arena).
    pub(crate) fn point_at(&self, slot: *const AtomicU64) {
        self.slot.store(slot as *mut AtomicU64, Ordering::Release);
        let before = self.own.swap(0, Ordering::Relaxed);
        if before > 0 {
            // SAFETY: a live slot, per the contract.
            unsafe { (*slot).fetch_add(before, Ordering::Relaxed) };
        }
    }

    fn target(&self) -> &AtomicU64 {
        let slot = self.slot.load(Ordering::Acquire);
        // SAFETY: a non-null slot lives for the rest of the process (see
        // `point_at`); after `fork()` it is the child's own (the shard is
        // mapped again at the same address).
        if slot.is_null() { &self.own } else { unsafe { &*slot } }
    }

    /// Adds one; returns the count before.
    #[inline]
    pub(crate) fn add(&self) -> u64 {
        self.target().fetch_add(1, Ordering::Relaxed)
    }

    /// The count so far (of this process, or of this table).
    #[cfg(test)]
    pub(crate) fn get(&self) -> u64 {
        self.target().load(Ordering::Relaxed)
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
        let t = Interner::new(2, None, core::ptr::null());
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
        let t = std::sync::Arc::new(Interner::new(100, None, core::ptr::null()));
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
