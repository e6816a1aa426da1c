//! Every message the runtime logs goes through here, so that none is ever
//! handed to the `log` backend while the [`gate`](crate::gate) is held:
//! the backend is user code, and a backend that records a metric (a new
//! bounded label value, say) would wait for the gate forever.
//!
//! Messages written under the gate wait in the gate's per-thread queue
//! until the thread's outermost gate section ends.

use std::collections::HashSet;

use crate::gate::{self, GateCell};

/// Logs `message` at `level` with the `promshard: ` prefix, now or, under
/// the gate, as soon as the gate is released.
pub(crate) fn emit(level: log::Level, message: String) {
    if let Some((level, message)) = gate::defer(level, message) {
        log::log!(level, "promshard: {message}");
    }
}

pub(crate) fn warn(message: impl Into<String>) {
    emit(log::Level::Warn, message.into());
}

pub(crate) fn error(message: impl Into<String>) {
    emit(log::Level::Error, message.into());
}

pub(crate) fn info(message: impl Into<String>) {
    emit(log::Level::Info, message.into());
}

/// Logs a problem the first time it happens, not every scrape. For
/// messages drawn from a fixed set (a collector's family names): the set
/// of messages seen is kept for the life of the process.
pub(crate) fn warn_once(message: &str) {
    static SEEN: GateCell<Option<HashSet<String>>> = GateCell::new(None);
    if SEEN.with(|seen| seen.get_or_insert_with(HashSet::new).insert(message.to_owned())) {
        warn(message);
    }
}

thread_local! {
    /// What each source last logged from this thread.
    static SAID: core::cell::RefCell<Vec<(String, String)>> = const { core::cell::RefCell::new(Vec::new()) };
}

/// Whether `message` differs from what `source` last said on this thread:
/// a problem met at every interval (a function that panics, a full
/// disk) is logged once per change, not every second for the life of the
/// process.
pub(crate) fn changed(source: &str, message: &str) -> bool {
    SAID.with(|said| {
        let mut said = said.borrow_mut();
        match said.iter_mut().find(|(s, _)| s == source) {
            Some((_, last)) if last == message => false,
            Some((_, last)) => {
                *last = message.to_owned();
                true
            }
            None => {
                said.push((source.to_owned(), message.to_owned()));
                true
            }
        }
    })
}

/// Forgets what `source` last said on this thread (it worked again).
pub(crate) fn recovered(source: &str) {
    SAID.with(|said| said.borrow_mut().retain(|(s, _)| s != source));
}
