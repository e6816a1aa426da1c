//! One process-wide lock for the rare writes that must never be caught
//! half-done by `fork()`: interning a bounded label value, appending to the
//! shard's string log, replacing info labels.
//!
//! A lock held by another thread at `fork()` stays locked forever in the
//! child, which is how Python's client deadlocks (client_python#431). This
//! one is a plain pthread mutex that the `pthread_atfork` handlers take
//! before the fork and release on both sides, so the child always starts
//! with it free. Readers never take it.

use core::cell::UnsafeCell;

struct Gate(UnsafeCell<libc::pthread_mutex_t>);

// SAFETY: a pthread mutex is designed to be shared between threads; it is
// only used through the pthread functions.
unsafe impl Sync for Gate {}

static GATE: Gate = Gate(UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER));

/// Runs `f` holding the gate. `f` must not panic across the lock or
/// re-enter it; callers keep it to short, non-reentrant work.
pub(crate) fn locked<R>(f: impl FnOnce() -> R) -> R {
    struct Unlock;
    impl Drop for Unlock {
        fn drop(&mut self) {
            unlock();
        }
    }
    lock();
    let _unlock = Unlock;
    f()
}

pub(crate) fn lock() {
    // SAFETY: GATE is a valid, statically initialised mutex.
    unsafe { libc::pthread_mutex_lock(GATE.0.get()) };
}

pub(crate) fn unlock() {
    // SAFETY: called only by the thread that holds the gate (by `locked`,
    // or by the fork handlers on the thread that called `fork`).
    unsafe { libc::pthread_mutex_unlock(GATE.0.get()) };
}
