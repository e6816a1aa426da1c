//! Gauges whose value a function gives (`Gauge::set_function`): a
//! connection pool's idle count, a queue's depth, read when they are
//! exposed rather than kept up to date by the code that changes them.
//!
//! A scrape calls this process's functions first, so the process that
//! answers shows fresh values. In multiprocess mode every other process
//! must put its own values into its own shard, where the merge combines
//! them by the gauge's mode (`livesum`, `liveall`, `max` …) and drops
//! dead workers: a thread per process calls its functions every
//! [`interval`], so another worker's value is at most that old. The
//! thread starts with the first function of a process in multiprocess
//! mode, and again in every forked child (threads do not survive `fork`),
//! so a pre-fork worker needs no hook.
//!
//! Functions are user code: none runs under the gate, a function that
//! panics keeps its series at the last value and is counted in
//! `promshard_set_function_panics_total`, and one that scrapes (or sets
//! another function) is not called again from inside itself.

use core::cell::Cell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::counter::Counter;
use super::gauge::GaugeSeries;
use crate::descriptor::Opts;
use crate::gate::GateCell;
use crate::metric::MetricCore;

type Function = Arc<dyn Fn() -> f64 + Send + Sync>;

/// One series and the function that gives its value.
struct Entry {
    series: GaugeSeries,
    function: Function,
}

/// Every function of this process, one per series. Under the gate, so a
/// fork never copies it half-changed.
static FUNCTIONS: GateCell<Vec<Entry>> = GateCell::new(Vec::new());

/// Whether this process's refresher thread runs (reset in a forked child).
static REFRESHER: AtomicBool = AtomicBool::new(false);

/// The refresher's period, in milliseconds.
static INTERVAL_MS: AtomicU64 = AtomicU64::new(1000);

static PANICS: Counter = Counter::new(Opts::new(
    "promshard_set_function_panics",
    "Panics of gauge functions (Gauge::set_function); each left its series at its last value.",
));

#[linkme::distributed_slice(crate::registry::METRICS)]
static PANICS_ENTRY: &MetricCore = PANICS.core();

thread_local! {
    /// Set while this thread calls functions: a function that scrapes
    /// must not call the functions again.
    static REFRESHING: Cell<bool> = const { Cell::new(false) };
}

/// Gives `series` its value from `function` from now on, replacing an
/// earlier function of the same series.
pub(crate) fn set(series: GaugeSeries, function: Function) {
    crate::user_code::install();
    let replaced = FUNCTIONS.with(|functions| match functions.iter_mut().find(|e| e.series.same_value_slot(series)) {
        Some(entry) => Some(core::mem::replace(&mut entry.function, function)),
        None => {
            functions.push(Entry { series, function });
            None
        }
    });
    // Dropped outside the gate: the closure's captures are user code.
    drop(replaced);
    crate::shard::fork::after_fork_in_child(after_fork_in_child);
    start_refresher();
}

/// How often each process of a multiprocess pool calls its functions
/// (default one second): another worker's value in a scrape is at most
/// this old. Applies from the refresher's next sleep.
pub fn set_interval(interval: Duration) {
    let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX).max(1);
    INTERVAL_MS.store(ms, Ordering::Relaxed);
}

/// The current period of the refresher; see [`set_interval`].
pub fn interval() -> Duration {
    Duration::from_millis(INTERVAL_MS.load(Ordering::Relaxed))
}

/// Calls every function of this process and stores what each returns.
/// A scrape's first step, outside the gate.
pub(crate) fn refresh() {
    if REFRESHING.with(|r| r.replace(true)) {
        return;
    }
    let entries: Vec<(GaugeSeries, Function)> =
        FUNCTIONS.with(|functions| functions.iter().map(|e| (e.series, e.function.clone())).collect());
    for (series, function) in entries {
        // Without the panic hook: see `user_code`. Logged once per change
        // of what it says, not at every call.
        let source = format!("gauge function {:x}", series.slot_address());
        match crate::user_code::call(|| function()) {
            Ok(value) => {
                series.set(value);
                crate::notice::recovered(&source);
            }
            Err(what) => {
                PANICS.inc();
                if crate::notice::changed(&source, &what) {
                    crate::notice::error(format!(
                        "a gauge function panicked ({what}); its series keeps its last value"
                    ));
                }
            }
        }
    }
    REFRESHING.with(|r| r.set(false));
}

/// Starts this process's refresher thread if it has functions, is in
/// multiprocess mode and runs none yet.
fn start_refresher() {
    if crate::shard::own().is_none() || FUNCTIONS.with(|f| f.is_empty()) {
        return;
    }
    if REFRESHER.swap(true, Ordering::AcqRel) {
        return;
    }
    let spawned = std::thread::Builder::new().name("promshard-gauge-fn".into()).spawn(|| {
        loop {
            std::thread::sleep(interval());
            refresh();
        }
    });
    if spawned.is_err() {
        REFRESHER.store(false, Ordering::Release);
        crate::notice::warn("no thread to call gauge functions; other workers' values show only at their own scrapes");
    }
}

/// In a forked child, after the fork handler: the parent's refresher did
/// not come along. (Starting a thread there is what Python's
/// `os.register_at_fork` does for its own: the gate was taken before the
/// fork and glibc's allocator is usable in the child.)
fn after_fork_in_child() {
    REFRESHER.store(false, Ordering::Release);
    start_refresher();
}
