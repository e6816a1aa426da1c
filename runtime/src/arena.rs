//! Where slot values live.
//!
//! The registry asks a backend for one contiguous, zeroed run of 8-byte
//! slots big enough for every series, once, and caches a pointer into it in
//! every metric. Nothing else touches the backend, so an mmap'd shard file
//! can replace process memory without instrument code knowing.

use core::sync::atomic::AtomicU64;

/// A run of zero-initialised slots that lives as long as the process.
pub(crate) trait Arena: Send + Sync {
    /// The slots; the address of the first one never changes.
    fn slots(&self) -> &[AtomicU64];
}

/// Slots in ordinary process memory.
pub(crate) struct MemoryArena {
    slots: Box<[AtomicU64]>,
}

impl MemoryArena {
    pub(crate) fn new(len: usize) -> MemoryArena {
        MemoryArena { slots: (0..len).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl Arena for MemoryArena {
    fn slots(&self) -> &[AtomicU64] {
        &self.slots
    }
}
