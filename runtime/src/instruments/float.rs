//! `f64` values in `AtomicU64` slots.
//!
//! Floats are stored as their bit pattern so that every slot has one type
//! (which the shard file format relies on) and a concurrent reader never
//! sees a torn value: each update is a single 8-byte atomic store or
//! compare-and-swap.

use core::sync::atomic::{AtomicU64, Ordering};

#[inline(always)]
pub(crate) fn load(slot: &AtomicU64) -> f64 {
    f64::from_bits(slot.load(Ordering::Relaxed))
}

#[inline(always)]
pub(crate) fn store(slot: &AtomicU64, value: f64) {
    slot.store(value.to_bits(), Ordering::Relaxed);
}

/// Adds `delta` with a compare-and-swap loop. `Relaxed` is enough: slots
/// are independent values with no data published through them.
#[inline(always)]
pub(crate) fn add(slot: &AtomicU64, delta: f64) {
    let mut current = slot.load(Ordering::Relaxed);
    loop {
        let next = (f64::from_bits(current) + delta).to_bits();
        match slot.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(actual) => current = actual,
        }
    }
}
