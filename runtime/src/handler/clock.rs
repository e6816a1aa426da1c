//! The clock of handler calls: the CPU's time-stamp counter where the
//! kernel itself keeps time with it, `Instant` elsewhere.
//!
//! Two `Instant::now()` calls (a `clock_gettime` each, about 25 ns on a
//! typical virtual machine) would be most of a call's recording cost;
//! `rdtsc` is a few nanoseconds. The counter is trusted only when the
//! kernel's clock source is `tsc`, which it chooses only once it has found
//! the counter constant-rate and synchronised across cores, and its rate
//! is measured against `Instant` once, when the handler families are laid
//! out.

use core::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Nanoseconds per counter tick as `f64` bits; 0 when the counter is not
/// used.
static NANOS_PER_TICK: AtomicU64 = AtomicU64::new(0);

/// When `Instant` is the clock: its origin.
static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// A point in time: counter ticks, or nanoseconds since [`ORIGIN`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stamp(u64);

/// Chooses the clock; called once, at layout, before any call starts.
pub(crate) fn calibrate() {
    ORIGIN.get_or_init(Instant::now);
    if !counter_is_trusted() {
        return;
    }
    // About a millisecond against `Instant`: a rate good to a few parts in
    // a hundred thousand, once per process.
    let (start, ticks) = (Instant::now(), ticks_now());
    let mut elapsed = Duration::ZERO;
    while elapsed < Duration::from_millis(1) {
        elapsed = start.elapsed();
    }
    let counted = ticks_now().saturating_sub(ticks);
    if counted > 0 {
        let rate = elapsed.as_nanos() as f64 / counted as f64;
        NANOS_PER_TICK.store(rate.to_bits(), Ordering::Relaxed);
    }
}

#[inline(always)]
pub(crate) fn now() -> Stamp {
    if NANOS_PER_TICK.load(Ordering::Relaxed) != 0 { Stamp(ticks_now()) } else { Stamp(since_origin()) }
}

impl Stamp {
    /// A stamp never read: for calls the tower layer times instead.
    #[cfg(feature = "tower")]
    pub(crate) const ZERO: Stamp = Stamp(0);

    /// Seconds from this stamp to now.
    #[inline(always)]
    pub(crate) fn elapsed_seconds(self) -> f64 {
        let rate = f64::from_bits(NANOS_PER_TICK.load(Ordering::Relaxed));
        if rate != 0.0 {
            ticks_now().saturating_sub(self.0) as f64 * rate * 1e-9
        } else {
            since_origin().saturating_sub(self.0) as f64 * 1e-9
        }
    }
}

fn since_origin() -> u64 {
    ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn ticks_now() -> u64 {
    // SAFETY: `rdtsc` exists on every x86_64 CPU and has no preconditions.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn ticks_now() -> u64 {
    0
}

fn counter_is_trusted() -> bool {
    cfg!(target_arch = "x86_64")
        && std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .is_ok_and(|source| source.trim() == "tsc")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_clock_agrees_with_instant() {
        super::calibrate();
        let start = std::time::Instant::now();
        let stamp = super::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (ours, theirs) = (stamp.elapsed_seconds(), start.elapsed().as_secs_f64());
        assert!((ours - theirs).abs() < 0.002, "{ours} vs {theirs}");
    }
}
