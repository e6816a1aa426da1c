//! The sequence word that guards slots a reader must see whole (an info
//! metric's pairs, an exemplar): the writer makes it odd, changes the
//! slots, then makes it even again with release ordering; a reader copies
//! the slots between two loads of the word and keeps the copy only if
//! both loads gave the same even value. 0 means never written. Readers
//! may be other processes mapping the same file: the word and the slots
//! are plain atomics in shared memory, nothing else is shared.

use core::sync::atomic::{AtomicU64, Ordering, fence};

/// Starts a write the caller already serialises (under the gate): the
/// sequence to hand to [`end_write`].
pub(crate) fn begin_write(sequence: &AtomicU64) -> u64 {
    let before = sequence.load(Ordering::Relaxed);
    sequence.store(before | 1, Ordering::Relaxed);
    // The odd word is ordered before every store of the write.
    fence(Ordering::Release);
    before | 1
}

/// Starts a write that may race other writers of the same slots: `None`
/// when another writer holds them (the caller skips its write), so two
/// writers never interleave their stores.
#[inline]
pub(crate) fn try_begin_write(sequence: &AtomicU64) -> Option<u64> {
    let before = sequence.load(Ordering::Relaxed);
    if before & 1 == 1 {
        return None;
    }
    sequence.compare_exchange(before, before | 1, Ordering::Relaxed, Ordering::Relaxed).ok()?;
    fence(Ordering::Release);
    Some(before | 1)
}

/// Ends a write begun with [`begin_write`] or [`try_begin_write`].
pub(crate) fn end_write(sequence: &AtomicU64, odd: u64) {
    sequence.store(odd + 1, Ordering::Release);
}

/// In a forked child, before any other thread exists: a write begun (the
/// word odd) by a thread of the parent will never end, as that thread is
/// not in the child, and would keep the slots from every writer and
/// reader for good. Sets such a word to 0, "never written" (what the
/// slots held before that write is half overwritten); an even word is
/// left alone. A load and at most a store: safe in a fork handler.
pub(crate) fn clear_interrupted_write(sequence: &AtomicU64) {
    if sequence.load(Ordering::Relaxed) & 1 == 1 {
        sequence.store(0, Ordering::Relaxed);
    }
}

/// Copies what `copy` reads between two equal, even loads of `sequence`,
/// trying up to `tries` times; `None` when never written, or when a
/// writer was busy every time (or died mid-write, in another process).
pub(crate) fn read<T>(sequence: &AtomicU64, tries: usize, mut copy: impl FnMut() -> T) -> Option<T> {
    for _ in 0..tries {
        let before = sequence.load(Ordering::Acquire);
        if before == 0 {
            return None;
        }
        if before & 1 == 1 {
            std::thread::yield_now();
            continue;
        }
        let value = copy();
        // The copy's loads are ordered before the second load.
        fence(Ordering::Acquire);
        if sequence.load(Ordering::Relaxed) == before {
            return Some(value);
        }
    }
    None
}
