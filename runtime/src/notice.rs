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
