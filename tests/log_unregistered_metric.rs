//! Probe: a `log` backend that records into a metric, when promshard warns
//! about a metric used without registration.
//!
//! The warning ("metric ... is used but not registered") is logged from
//! `registry.rs` `attach_unregistered` while it holds
//! `Registry::unregistered` (a std Mutex). The gate rules (never log while
//! holding a lock; the backend is user code) were applied to the gate only:
//! a backend that then touches another unregistered metric (its own
//! counter, declared with `Counter::new` and also never registered) takes
//! the same mutex on the same thread and the thread never returns.

mod harness;

use std::sync::mpsc;
use std::time::Duration;

use promshard::{Counter, Opts};

// Two forgotten registrations: the application's, and the log backend's.
static APP_FORGOTTEN_TOTAL: Counter = Counter::new(Opts::new("probe_app_forgotten_total", "Forgotten."));
static LOG_RECORDS_TOTAL: Counter = Counter::new(Opts::new("probe_log_records_total", "Log records."));

struct CountingLogger;

impl log::Log for CountingLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        eprintln!("[log] {}", record.args());
        LOG_RECORDS_TOTAL.inc();
    }
    fn flush(&self) {}
}

#[test]
fn a_log_backend_that_counts_never_deadlocks_on_the_unregistered_warning() {
    harness::isolated(
        "a_log_backend_that_counts_never_deadlocks_on_the_unregistered_warning",
        Duration::from_secs(30),
        || {
            log::set_logger(&CountingLogger).unwrap();
            log::set_max_level(log::LevelFilter::Warn);
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                APP_FORGOTTEN_TOTAL.inc();
                let _ = tx.send(());
            });
            assert!(
                rx.recv_timeout(Duration::from_secs(10)).is_ok(),
                "the first use of an unregistered metric hung: attach_unregistered logs its warning while \
                 holding Registry::unregistered, and the log backend's own (unregistered) counter waits for \
                 that same mutex"
            );
            assert_eq!(promshard::testing::sample_value("probe_app_forgotten_total", &[]), Some(1.0));
        },
    );
}
