//! The string log: strings a process learns at run time (bounded label
//! values) appended to its shard so that any reader can name the series
//! they belong to. (An info metric's pairs live in its slots instead: they
//! change, and an append-only log would run out.)
//!
//! Appends happen under the [`gate`](crate::gate), one at a time; the first
//! 8 bytes hold the number of bytes used, stored with `Release` after the
//! record is complete, so a reader that loads it with `Acquire` only ever
//! parses whole records.

use core::sync::atomic::{AtomicU64, Ordering};

use super::format::{MAX_STRING, get_u32};

pub(crate) const RECORD_HEADER: usize = 20;

/// `position` of an archive record naming a shard file it absorbed.
pub(crate) const ABSORBED_POSITION: u16 = u16::MAX - 1;

/// `position` of a record declaring series of a sparse metric that are
/// shown at zero: `index` is the first series, the payload a `u32` count.
pub(crate) const DECLARED_POSITION: u16 = u16::MAX - 2;

/// The size of a [`DECLARED_POSITION`] record.
const DECLARED_RECORD: usize = (RECORD_HEADER + 4).next_multiple_of(8);

/// Bytes a log needs for `bounded` label capacities and `declared`
/// records.
pub(crate) fn capacity(bounded: impl Iterator<Item = usize>, declared: usize) -> usize {
    8 + bounded.map(|n| n * (RECORD_HEADER + MAX_STRING + 8)).sum::<usize>() + declared * DECLARED_RECORD
}

/// The writable log of this process's own shard.
pub(crate) struct StringLog {
    base: *mut u8,
    capacity: usize,
}

// SAFETY: the log is only written under the gate; the pointer addresses a
// mapping that lives for the rest of the process.
unsafe impl Send for StringLog {}
unsafe impl Sync for StringLog {}

impl StringLog {
    /// # Safety
    ///
    /// `base` must address `capacity` writable bytes, 8-aligned, that stay
    /// mapped for the rest of the process.
    pub(crate) unsafe fn new(base: *mut u8, capacity: usize) -> StringLog {
        StringLog { base, capacity }
    }

    fn used(&self) -> &AtomicU64 {
        // SAFETY: 8-aligned and inside the region, per `new`.
        unsafe { &*(self.base as *const AtomicU64) }
    }

    /// Appends a record; false when the log is full. Call under the gate.
    pub(crate) fn append(&self, metric: u32, position: u16, index: u32, payload: &[u8]) -> bool {
        let used = self.used().load(Ordering::Relaxed) as usize;
        let start = 8 + used;
        let size = (RECORD_HEADER + payload.len()).next_multiple_of(8);
        if start + size > self.capacity {
            return false;
        }
        let mut record = Vec::with_capacity(size);
        record.extend_from_slice(&(size as u32).to_le_bytes());
        record.extend_from_slice(&metric.to_le_bytes());
        record.extend_from_slice(&position.to_le_bytes());
        record.extend_from_slice(&[0, 0]);
        record.extend_from_slice(&index.to_le_bytes());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(payload);
        record.resize(size, 0);
        // SAFETY: [start, start + size) is inside the region and past the
        // published length, so no reader looks at it yet.
        unsafe { core::ptr::copy_nonoverlapping(record.as_ptr(), self.base.add(start), size) };
        self.used().store((used + size) as u64, Ordering::Release);
        true
    }
}

/// One record read back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    pub(crate) metric: u32,
    pub(crate) position: u16,
    pub(crate) index: u32,
    pub(crate) payload: &'a [u8],
}

/// Parses the records of a log region (a snapshot copy or a mapping);
/// stops at the first malformed record.
pub(crate) fn read(region: &[u8], used: u64) -> Vec<Record<'_>> {
    let end = usize::try_from(used).unwrap_or(usize::MAX).saturating_add(8).min(region.len());
    let mut at = 8;
    let mut out = Vec::new();
    while at + RECORD_HEADER <= end {
        let size = get_u32(region, at) as usize;
        let len = get_u32(region, at + 16) as usize;
        if size < RECORD_HEADER || size % 8 != 0 || at + size > end || RECORD_HEADER + len > size {
            break;
        }
        out.push(Record {
            metric: get_u32(region, at + 4),
            position: u16::from_le_bytes([region[at + 8], region[at + 9]]),
            index: get_u32(region, at + 12),
            payload: &region[at + RECORD_HEADER..at + RECORD_HEADER + len],
        });
        at += size;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_and_read_back() {
        let mut region = vec![0u64; 64];
        let bytes = region.len() * 8;
        // SAFETY: the vector outlives the log in this test.
        let log = unsafe { StringLog::new(region.as_mut_ptr() as *mut u8, bytes) };
        assert!(log.append(3, 1, 0, b"/users"));
        assert!(log.append(3, 2, 1, b"/items"));
        assert!(!log.append(0, 0, 0, &[0; 1000]), "full");
        let used = log.used().load(Ordering::Acquire);
        let raw: Vec<u8> = region.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let records = read(&raw, used);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0], Record { metric: 3, position: 1, index: 0, payload: b"/users" });
        assert_eq!(records[1], Record { metric: 3, position: 2, index: 1, payload: b"/items" });
        assert!(read(&raw[..30], used).is_empty() || read(&raw[..30], used).len() == 1);
    }
}
