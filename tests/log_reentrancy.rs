//! Attacks "recording and scraping never deadlock": a `log` backend that
//! counts what it logs in a promshard metric (a common pattern: log events
//! by message, with a `bounded` label) must not hang the process when
//! promshard itself logs. Today promshard logs while it holds its
//! process-wide lock (during a scrape that meets a bad file, during the
//! first recording that finds the directory unusable), the backend's
//! recording of a new bounded value takes the same lock, and the thread
//! never returns; a later `fork()` then blocks forever too.
//!
//! Each scenario runs in a fresh process, and every step that could hang
//! runs on a thread with a deadline, so a deadlock fails the test.

mod harness;

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use harness::{TempDir, fork_child, isolated, own_text, value_in, wait_timeout};
use promshard::{Counter, metric};

/// Log records by message, as a log backend counts them.
#[metric(labels(message = bounded(64)))]
static LOG_MESSAGES_TOTAL: Counter;

/// Jobs done.
#[metric]
static LOG_JOBS_TOTAL: Counter;

const DEADLINE: Duration = Duration::from_secs(10);

/// A log backend that counts every promshard record under a label value
/// of its own (a new bounded value each time), and echoes it to stderr.
struct CountingLogger;

static SEEN: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

impl log::Log for CountingLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let message = record.args().to_string();
        eprintln!("[log {}] {message}", record.level());
        if !message.starts_with("promshard") || INSIDE.with(|i| i.replace(true)) {
            return;
        }
        let n = SEEN.fetch_add(1, Ordering::SeqCst);
        LOG_MESSAGES_TOTAL.with((format!("promshard-{n}").as_str(),)).inc();
        INSIDE.with(|i| i.set(false));
    }

    fn flush(&self) {}
}

fn install_logger() {
    log::set_boxed_logger(Box::new(CountingLogger)).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
}

/// Runs `f` on a thread; panics with `what` if it does not return in time
/// (the thread is left behind, stuck; the process ends with the test).
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, wait) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(f());
    });
    wait.recv_timeout(DEADLINE).unwrap_or_else(|_| panic!("{what} did not return within {DEADLINE:?}: deadlock"))
}

/// Forks a child that records and exits; fails if `fork()` itself or the
/// child hangs.
fn fork_still_works(after: &str) {
    let status = within(&format!("fork() after {after}"), || {
        let pid = fork_child(|| {
            LOG_JOBS_TOTAL.inc();
            0
        });
        wait_timeout(pid, DEADLINE)
    });
    assert!(status.is_some_and(|s| libc::WIFEXITED(s)), "a child forked after {after} hung or died: {status:?}");
}

#[test]
fn logger_that_records_during_a_scrape() {
    isolated("logger_that_records_during_a_scrape", Duration::from_secs(60), || {
        install_logger();
        let base = TempDir::new("log-scrape");
        let dir = base.path().join("shards");
        promshard::multiprocess::init(&dir).unwrap();
        LOG_JOBS_TOTAL.inc();
        // A bad file: every scrape skips it, and promshard logs that once.
        std::fs::write(dir.join("junk.promshard"), b"not a shard at all, just junk").unwrap();
        let text = within("a scrape that logs about a bad file (the logger records a new bounded value)", own_text);
        assert_eq!(value_in(&text, "log_jobs_total", &[]), Some(1.0));
        assert!(SEEN.load(Ordering::SeqCst) >= 1, "promshard logged about the bad file");
        let text = within("the next scrape", own_text);
        assert!(
            value_in(&text, "log_messages_total", &[("message", "promshard-0")]).is_some_and(|v| v >= 1.0),
            "the logger's own count is exposed:\n{text}"
        );
        fork_still_works("a scrape that logged");
    });
}

#[test]
fn logger_that_records_during_the_first_recording() {
    isolated("logger_that_records_during_the_first_recording", Duration::from_secs(60), || {
        install_logger();
        let base = TempDir::new("log-layout");
        // Not a directory: the first recording logs that it falls back to
        // memory, while it lays the metrics out.
        let file = base.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        promshard::multiprocess::init(&file).unwrap();
        within("the first recording (promshard logs that the directory is unusable)", || LOG_JOBS_TOTAL.inc());
        assert!(SEEN.load(Ordering::SeqCst) >= 1, "promshard logged the fallback");
        let text = within("a scrape", own_text);
        assert_eq!(value_in(&text, "log_jobs_total", &[]), Some(1.0));
        fork_still_works("the first recording");
    });
}
