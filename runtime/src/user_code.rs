//! Calling user code that may panic (gauge functions, collectors) without
//! running the panic hook.
//!
//! The standard hook takes a process-wide lock while it prints (and, with
//! `RUST_BACKTRACE` set, while it walks and symbolises the stack). When it
//! runs on one of our threads (the refresher, the publisher) at the moment
//! another thread forks, the child inherits that lock held by a thread it
//! does not have, and its next panic, even one caught here, waits for it
//! forever: a pre-fork worker whose gauge function panics would hang in
//! every scrape. So the hook is wrapped, once, by one that does nothing
//! for a panic raised inside [`call`] but note where and why; the caller
//! counts and logs it (without holding any lock of ours). Panics anywhere
//! else go to the hook that was there before. A hook the application sets
//! later replaces the wrapper, and then applies to these panics too.

use core::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, PanicHookInfo};
use std::sync::Once;

thread_local! {
    /// Set while this thread runs user code through [`call`].
    static QUIET: Cell<bool> = const { Cell::new(false) };
    /// What the last quiet panic of this thread said.
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Wraps the panic hook, once: when a gauge function or a collector is
/// registered, and before the first call. (Done at the moment of a fork,
/// it could leave the child waiting on the hook's lock or on this `Once`:
/// doing it at registration, which a pre-fork app does before it forks,
/// keeps that window out of the workers.)
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // `set_hook` panics when called while this thread panics; a call
        // from a panic's unwinding (a drop) simply goes without it.
        if std::thread::panicking() {
            return;
        }
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info: &PanicHookInfo<'_>| {
            if QUIET.with(Cell::get) {
                let what = describe(info);
                LAST.with(|l| *l.borrow_mut() = Some(what));
            } else {
                previous(info);
            }
        }));
    });
}

fn describe(info: &PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".to_owned());
    match info.location() {
        Some(at) => format!("{what}, at {}:{}", at.file(), at.line()),
        None => what,
    }
}

/// Runs `f`; a panic is caught without the panic hook and returned as
/// what it said and where.
pub(crate) fn call<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    install();
    let was = QUIET.with(|q| q.replace(true));
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    result.map_err(|payload| {
        LAST.with(|l| l.borrow_mut().take()).unwrap_or_else(|| {
            // Caught, but our hook did not see it (the application replaced
            // it): the payload is all there is.
            payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string payload".to_owned())
        })
    })
}
