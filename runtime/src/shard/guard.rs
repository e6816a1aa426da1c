//! Surviving a shard that shrinks while it is mapped.
//!
//! Readers map other processes' shards so that every slot is read with one
//! atomic load. If someone truncates such a file in place, touching a
//! mapped page past its new end raises SIGBUS, which would kill the
//! scraping process. Mappings a scrape reads are registered here; a SIGBUS
//! inside one is answered by mapping a page of zeros over the faulting
//! page and marking the mapping damaged, so the load completes, and the
//! scrape then discards that shard. A SIGBUS anywhere else goes to the
//! handler that was installed before ours.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Once;

/// Mappings guarded at once; a scrape needs one per shard file.
const RANGES: usize = 4096;

struct Range {
    start: AtomicUsize,
    len: AtomicUsize,
    damaged: AtomicBool,
}

static TABLE: [Range; RANGES] =
    [const { Range { start: AtomicUsize::new(0), len: AtomicUsize::new(0), damaged: AtomicBool::new(false) } }; RANGES];
static PAGE: AtomicUsize = AtomicUsize::new(4096);

struct Previous(UnsafeCell<core::mem::MaybeUninit<libc::sigaction>>);

// SAFETY: written once, inside `Once`, before the handler that reads it is
// installed.
unsafe impl Sync for Previous {}

static PREVIOUS: Previous = Previous(UnsafeCell::new(core::mem::MaybeUninit::zeroed()));

fn install() {
    static ONCE: Once = Once::new();
    if ONCE.is_completed() {
        return;
    }
    // Under the gate: a fork must never catch the `Once` half run.
    crate::gate::locked(|| {
        ONCE.call_once(|| {
            // SAFETY: sysconf and sigaction with valid arguments; PREVIOUS is
            // written before our handler can run.
            unsafe {
                let page = libc::sysconf(libc::_SC_PAGESIZE);
                if page > 0 {
                    PAGE.store(page as usize, Ordering::Relaxed);
                }
                let mut action: libc::sigaction = core::mem::zeroed();
                action.sa_sigaction = on_sigbus as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(libc::SIGBUS, &action, (*PREVIOUS.0.get()).as_mut_ptr());
            }
        })
    });
}

extern "C" fn on_sigbus(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let address = unsafe { (*info).si_addr() } as usize;
    let page = PAGE.load(Ordering::Relaxed);
    for range in &TABLE {
        let start = range.start.load(Ordering::Acquire);
        if start == 0 || address < start || address - start >= range.len.load(Ordering::Acquire) {
            continue;
        }
        // SAFETY: replaces one page inside a mapping we registered (and
        // so own) with zeros; mmap is a plain system call.
        let mapped = unsafe {
            libc::mmap(
                (address & !(page - 1)) as *mut libc::c_void,
                page,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if mapped != libc::MAP_FAILED {
            range.damaged.store(true, Ordering::Release);
            return;
        }
    }
    // Not ours: hand the signal to whoever handled it before.
    // SAFETY: PREVIOUS holds the action saved at install.
    unsafe {
        let previous = &*(*PREVIOUS.0.get()).as_ptr();
        if previous.sa_flags & libc::SA_SIGINFO != 0 && previous.sa_sigaction > 1 {
            let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                core::mem::transmute(previous.sa_sigaction);
            handler(signal, info, context);
        } else if previous.sa_sigaction > 1 {
            let handler: extern "C" fn(libc::c_int) = core::mem::transmute(previous.sa_sigaction);
            handler(signal);
        } else {
            // Default or ignored: restore it; the faulting access repeats
            // and the default action (ending the process) applies.
            libc::sigaction(libc::SIGBUS, previous, core::ptr::null_mut());
        }
    }
}

/// A registered mapping; unregistered on drop.
pub(crate) struct Guarded {
    index: usize,
}

impl Guarded {
    /// Registers `len` bytes at `start`, or `None` when the table is full
    /// (the mapping is then read unguarded).
    pub(crate) fn new(start: *const u8, len: usize) -> Option<Guarded> {
        install();
        let start = start as usize;
        for (index, range) in TABLE.iter().enumerate() {
            // Claim the entry with a start no address can reach, then fill
            // it in: the handler never sees a half-written range.
            if range.start.compare_exchange(0, usize::MAX, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                range.len.store(len, Ordering::Release);
                range.damaged.store(false, Ordering::Release);
                range.start.store(start, Ordering::Release);
                return Some(Guarded { index });
            }
        }
        None
    }

    /// Whether a page of the mapping vanished while it was read.
    pub(crate) fn damaged(&self) -> bool {
        TABLE[self.index].damaged.load(Ordering::Acquire)
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        TABLE[self.index].start.store(0, Ordering::Release);
    }
}
