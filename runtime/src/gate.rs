//! One process-wide lock for the short writes that must never be caught
//! half-done by `fork()`: interning a bounded label value, appending to the
//! shard's string log, replacing info labels, one-time initialisations and
//! the few process-wide tables (scrape caches) that a child may use.
//!
//! A lock held by another thread at `fork()` stays locked forever in the
//! child, which is how Python's client deadlocks (client_python#431). This
//! one is a plain pthread mutex that the `pthread_atfork` handlers take
//! before the fork and release on both sides, so the child always starts
//! with it free.
//!
//! Two rules keep it from ever deadlocking on user code: nothing holds it
//! while user code runs, and nothing logs while holding it (a `log`
//! backend is user code, and may record a metric that needs the gate).
//! Messages written under the gate are queued here and logged when the
//! thread's outermost [`locked`] section ends; `notice` decides which.

use core::cell::{Cell, RefCell, UnsafeCell};

struct Gate(UnsafeCell<libc::pthread_mutex_t>);

// SAFETY: a pthread mutex is designed to be shared between threads; it is
// only used through the pthread functions.
unsafe impl Sync for Gate {}

static GATE: Gate = Gate(UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER));

thread_local! {
    /// How deep this thread is inside [`locked`]: internal code that
    /// already holds the gate may call code that takes it again.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

thread_local! {
    /// Messages said while this thread held the gate.
    static PENDING: RefCell<Vec<(log::Level, String)>> = const { RefCell::new(Vec::new()) };
}

thread_local! {
    /// How many things this thread has out that other threads may wait
    /// for (the scrape cache): it logs nothing until they are back, as
    /// under the gate, so that a `log` backend never runs while others
    /// wait on it.
    static OUT: Cell<u32> = const { Cell::new(0) };
}

/// Marks this thread as having out something other threads wait for:
/// what it logs is queued until [`give_back`].
pub(crate) fn take_out() {
    OUT.with(|o| o.set(o.get() + 1));
}

/// Ends a [`take_out`]; logs what was queued once this thread has
/// nothing out and holds no gate.
pub(crate) fn give_back() {
    let last = OUT.with(|o| {
        o.set(o.get().saturating_sub(1));
        o.get() == 0
    });
    if last && DEPTH.with(|d| d.get()) == 0 {
        flush();
    }
}

/// Queues `message` if this thread holds the gate (or has something out,
/// see [`take_out`]); otherwise hands it back, to be logged now.
pub(crate) fn defer(level: log::Level, message: String) -> Option<(log::Level, String)> {
    if DEPTH.with(|d| d.get() > 0) || OUT.with(|o| o.get() > 0) {
        PENDING.with(|p| p.borrow_mut().push((level, message)));
        None
    } else {
        Some((level, message))
    }
}

/// Logs what was queued under the gate; called once it is released.
fn flush() {
    loop {
        let Some(batch) = PENDING.with(|p| {
            let mut p = p.borrow_mut();
            (!p.is_empty()).then(|| std::mem::take(&mut *p))
        }) else {
            return;
        };
        for (level, message) in batch {
            log::log!(level, "promshard: {message}");
        }
    }
}

/// Runs `f` holding the gate; reentrant on the same thread. `f` must be
/// internal code: no user callback, no logging (use [`crate::notice`]).
pub(crate) fn locked<R>(f: impl FnOnce() -> R) -> R {
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            let outermost = DEPTH.with(|d| {
                d.set(d.get() - 1);
                d.get() == 0
            });
            if outermost {
                unlock();
                if OUT.with(|o| o.get()) == 0 {
                    flush();
                }
            }
        }
    }
    if DEPTH.with(|d| d.get()) == 0 {
        lock();
    }
    DEPTH.with(|d| d.set(d.get() + 1));
    let _leave = Leave;
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

/// A process-wide value only touched under the gate, so a forked child
/// never finds it locked by a thread that does not exist there.
pub(crate) struct GateCell<T> {
    value: UnsafeCell<T>,
    /// Set while a closure has the value: a reentrant use would alias it.
    busy: Cell<bool>,
}

// SAFETY: the value is only reached through `with`, under the gate, one
// closure at a time (reentry is refused).
unsafe impl<T: Send> Sync for GateCell<T> {}

impl<T> GateCell<T> {
    pub(crate) const fn new(value: T) -> GateCell<T> {
        GateCell { value: UnsafeCell::new(value), busy: Cell::new(false) }
    }

    /// The value, for a thread that already holds the gate without a
    /// [`locked`] section: the fork handlers.
    ///
    /// # Safety
    ///
    /// The calling thread must hold the gate (taken by `lock`), and no
    /// closure of [`with`](Self::with) may be running on it.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn get_mut_holding_gate(&self) -> &mut T {
        // SAFETY: per the contract, no one else can reach the value.
        unsafe { &mut *self.value.get() }
    }

    /// Runs `f` on the value under the gate. Keep `f` short: I/O and
    /// parsing belong outside, on values taken out of the cell.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        locked(|| {
            assert!(!self.busy.replace(true), "promshard: internal table entered twice");
            struct Free<'a>(&'a Cell<bool>);
            impl Drop for Free<'_> {
                fn drop(&mut self) {
                    self.0.set(false);
                }
            }
            let _free = Free(&self.busy);
            // SAFETY: under the gate and not re-entered (checked above).
            f(unsafe { &mut *self.value.get() })
        })
    }
}
