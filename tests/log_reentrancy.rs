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

/// Log records, each with the logger's exemplar.
#[metric(exemplars)]
static LOG_TRACED_TOTAL: Counter;

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
        LOG_TRACED_TOTAL.inc_with_exemplar(&[("trace_id", "logger")]);
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

/// A log backend that hands each promshard record to another thread,
/// which scrapes (a backend that attaches the current metrics to what it
/// ships), and waits for it.
struct ScrapingLogger;

impl log::Log for ScrapingLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let message = record.args().to_string();
        eprintln!("[log {}] {message}", record.level());
        if message.starts_with("promshard") {
            std::thread::spawn(|| promshard::encode(promshard::Format::Prometheus).len()).join().unwrap();
            SEEN.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn flush(&self) {}
}

/// A scrape waits for the cache another thread's scrape has out: that
/// scrape must not be waiting in turn for a `log` backend that waits for
/// the first one.
#[test]
fn logger_that_waits_for_a_scrape_on_another_thread() {
    isolated("logger_that_waits_for_a_scrape_on_another_thread", Duration::from_secs(60), || {
        log::set_boxed_logger(Box::new(ScrapingLogger)).unwrap();
        log::set_max_level(log::LevelFilter::Trace);
        let base = TempDir::new("log-scrape-thread");
        let dir = base.path().join("shards");
        promshard::multiprocess::init(&dir).unwrap();
        LOG_JOBS_TOTAL.inc();
        std::fs::write(dir.join("junk.promshard"), b"not a shard at all, just junk").unwrap();
        let text = within("a scrape whose warning the logger hands to a scraping thread", own_text);
        assert_eq!(value_in(&text, "log_jobs_total", &[]), Some(1.0));
        assert!(SEEN.load(Ordering::SeqCst) >= 1, "promshard logged about the bad file");
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

/// A refused exemplar is logged from inside `inc_with_exemplar`; the
/// logger then records an exemplar of the same series. Neither hangs,
/// both counts land, and the exemplar kept is the logger's (the refused
/// one never was).
#[test]
fn logger_that_records_an_exemplar_when_one_is_refused() {
    isolated("logger_that_records_an_exemplar_when_one_is_refused", Duration::from_secs(60), || {
        install_logger();
        let base = TempDir::new("log-exemplar");
        promshard::multiprocess::init(base.path().join("shards")).unwrap();
        let too_long = "x".repeat(200);
        within("a refused exemplar whose warning the logger answers with one of its own", move || {
            LOG_TRACED_TOTAL.inc_with_exemplar(&[("trace_id", too_long.as_str())])
        });
        assert!(SEEN.load(Ordering::SeqCst) >= 1, "promshard logged the refusal");
        let text = within("a scrape", || String::from_utf8(promshard::encode(promshard::Format::OpenMetrics)).unwrap());
        let line = text.lines().find(|l| l.starts_with("log_traced_total ")).unwrap_or_else(|| panic!("{text}"));
        let logged = SEEN.load(Ordering::SeqCst) as f64;
        assert!(line.starts_with(&format!("log_traced_total {} # {{trace_id=\"logger\"}} 1 ", 1.0 + logged)), "{line}");
        fork_still_works("a refused exemplar");
    });
}

// ---------------------------------------------------------------------
// Collectors that call back into promshard
// ---------------------------------------------------------------------

/// Set by each collector scenario, so that other metrics exist.
#[metric]
static REENTRANT_INFO: promshard::Info;

/// What [`Reentrant`] does on each call.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Action {
    /// Records a new `bounded` value (which takes promshard's lock).
    RecordNewBoundedValue,
    /// Scrapes this process from inside the scrape.
    Encode,
    /// Registers another collector (once).
    RegisterCollector,
    /// Forks a child that records, scrapes and exits; waits for it.
    Fork,
    /// Sets an `Info`.
    SetInfo,
}

static ACTION: std::sync::Mutex<Option<Action>> = std::sync::Mutex::new(None);
/// Calls of [`Reentrant::collect`] (outer ones: a reentrant scrape's
/// inner call does not act again).
static CALLS: AtomicU64 = AtomicU64::new(0);
/// What the inner scrapes returned.
static INNER: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
/// Wait statuses of the children forked inside collectors (`None`: hung).
static CHILDREN: std::sync::Mutex<Vec<Option<i32>>> = std::sync::Mutex::new(Vec::new());

thread_local! {
    static COLLECTING: Cell<bool> = const { Cell::new(false) };
}

/// A collector that calls back into promshard, as [`ACTION`] says, then
/// writes one family.
struct Reentrant;

impl promshard::Collector for Reentrant {
    fn collect(&self, out: &mut promshard::MetricWriter<'_>) {
        if COLLECTING.with(|c| c.replace(true)) {
            // The inner call of a reentrant scrape.
            out.gauge("reentrant_inner", "Written by the inner call.").sample(&[], 1.0);
            return;
        }
        let n = CALLS.fetch_add(1, Ordering::SeqCst);
        match ACTION.lock().unwrap().expect("an action") {
            Action::RecordNewBoundedValue => LOG_MESSAGES_TOTAL.with((format!("collector-{n}").as_str(),)).inc(),
            Action::Encode => {
                let inner = String::from_utf8(promshard::encode(promshard::Format::Prometheus)).unwrap();
                INNER.lock().unwrap().push(inner);
            }
            Action::RegisterCollector if n == 0 => promshard::register_collector(Late),
            Action::RegisterCollector => {}
            Action::Fork => {
                let pid = fork_child(|| {
                    LOG_JOBS_TOTAL.inc_by(5);
                    // A scrape in the child, forked in the middle of ours.
                    let text = own_text();
                    i32::from(value_in(&text, "log_jobs_total", &[]).is_none())
                });
                CHILDREN.lock().unwrap().push(wait_timeout(pid, DEADLINE));
            }
            Action::SetInfo => REENTRANT_INFO.set(&[("call", &n.to_string())]),
        }
        COLLECTING.with(|c| c.set(false));
        out.gauge("reentrant_calls", "Calls of the reentrant collector.").sample(&[], (n + 1) as f64);
    }
}

/// Registered by [`Reentrant`] while a scrape runs.
struct Late;

impl promshard::Collector for Late {
    fn collect(&self, out: &mut promshard::MetricWriter<'_>) {
        out.gauge("late_family", "From a collector registered during a scrape.").sample(&[], 4.0);
    }
}

const SCRAPES: u64 = 3;

/// Registers [`Reentrant`] doing `action`, scrapes [`SCRAPES`] times, each
/// on a thread with a deadline (text, then through `sample_value`), and
/// checks what each action must give.
fn collector_that(action: Action, multiprocess: bool) {
    let _dir = multiprocess.then(|| {
        let base = TempDir::new("collector-reentrant");
        promshard::multiprocess::init(base.path().join("shards")).unwrap();
        base
    });
    // promshard's own log records land in a backend that records too.
    install_logger();
    let mode = if multiprocess { "multiprocess mode" } else { "memory mode" };
    *ACTION.lock().unwrap() = Some(action);
    LOG_JOBS_TOTAL.inc();
    promshard::register_collector(Reentrant);
    let mut texts = Vec::new();
    for scrape in 0..SCRAPES {
        let text = within(&format!("{mode}: scrape {scrape} with a collector that does {action:?}"), own_text);
        assert_eq!(
            value_in(&text, "reentrant_calls", &[]),
            Some((scrape + 1) as f64),
            "{mode}, {action:?}: the collector's own family in scrape {scrape}:\n{text}"
        );
        assert!(
            !text.contains("reentrant_inner"),
            "{mode}, {action:?}: only the outer call writes into the outer scrape"
        );
        texts.push(text);
    }
    // Through the sample callback as well (it runs the collectors too).
    let calls = within(&format!("{mode}: sample_value with a collector that does {action:?}"), || {
        promshard::testing::sample_value("reentrant_calls", &[])
    });
    assert_eq!(calls, Some((SCRAPES + 1) as f64), "{mode}, {action:?}: sample_value's scrape");
    let last = within(&format!("{mode}: the last scrape"), own_text);
    let calls = SCRAPES + 2;
    match action {
        Action::RecordNewBoundedValue => {
            for n in 0..calls - 1 {
                assert_eq!(
                    value_in(&last, "log_messages_total", &[("message", &format!("collector-{n}"))]),
                    Some(1.0),
                    "{mode}: what the collector recorded in call {n} is exposed:\n{last}"
                );
            }
        }
        Action::Encode => {
            let inner = INNER.lock().unwrap();
            assert_eq!(inner.len() as u64, calls, "{mode}: one inner scrape per call");
            for (i, text) in inner.iter().enumerate() {
                assert_eq!(value_in(text, "log_jobs_total", &[]), Some(1.0), "{mode}: inner scrape {i}:\n{text}");
                assert_eq!(value_in(text, "reentrant_inner", &[]), Some(1.0), "{mode}: inner scrape {i}'s collector");
            }
        }
        Action::RegisterCollector => {
            for (scrape, text) in texts.iter().enumerate().skip(1).chain([(SCRAPES as usize, &last)]) {
                assert_eq!(
                    value_in(text, "late_family", &[]),
                    Some(4.0),
                    "{mode}: a collector registered during scrape 0 is scraped from then on (scrape {scrape}):\n{text}"
                );
                assert_eq!(text.matches("# TYPE late_family").count(), 1, "{mode}: once");
            }
        }
        Action::Fork => {
            let children = CHILDREN.lock().unwrap().clone();
            assert_eq!(children.len() as u64, calls, "{mode}: one child per call");
            for (i, status) in children.iter().enumerate() {
                assert!(
                    status.is_some_and(|s| libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0),
                    "{mode}: the child forked inside collector call {i} hung, died or could not scrape: {:?}",
                    status.map(harness::describe_status)
                );
            }
            // Memory mode: a child's counts are its own. Multiprocess
            // mode: every child's shard is merged (the last child's from
            // this scrape on: it was forked during the one before).
            let want = if multiprocess { 1.0 + 5.0 * (calls - 1) as f64 } else { 1.0 };
            assert_eq!(
                value_in(&last, "log_jobs_total", &[]),
                Some(want),
                "{mode}: log_jobs_total with {} children forked inside collectors, each adding 5",
                calls - 1
            );
            fork_still_works("collectors that forked");
        }
        Action::SetInfo => {
            let shown: Vec<&str> = last.lines().filter(|l| l.starts_with("reentrant_info{")).collect();
            let previous = format!("reentrant_info{{call=\"{}\"}} 1", calls - 2);
            let this = format!("reentrant_info{{call=\"{}\"}} 1", calls - 1);
            assert!(
                shown.len() == 1 && (shown[0] == previous || shown[0] == this),
                "{mode}: the Info the collector set in the previous call (or this one) is exposed, once: {shown:?}"
            );
        }
    }
    within("a recording after the scrapes", || LOG_MESSAGES_TOTAL.with(("after",)).inc());
}

macro_rules! collector_tests {
    ($($memory:ident, $multi:ident: $action:expr;)*) => {$(
        #[test]
        fn $memory() {
            isolated(stringify!($memory), Duration::from_secs(60), || collector_that($action, false));
        }
        #[test]
        fn $multi() {
            isolated(stringify!($multi), Duration::from_secs(60), || collector_that($action, true));
        }
    )*};
}

collector_tests! {
    collector_records_a_new_bounded_value, collector_records_a_new_bounded_value_in_multiprocess_mode:
        Action::RecordNewBoundedValue;
    collector_scrapes_reentrantly, collector_scrapes_reentrantly_in_multiprocess_mode: Action::Encode;
    collector_registers_a_collector, collector_registers_a_collector_in_multiprocess_mode:
        Action::RegisterCollector;
    collector_forks_a_recording_child, collector_forks_a_recording_child_in_multiprocess_mode: Action::Fork;
    collector_sets_an_info, collector_sets_an_info_in_multiprocess_mode: Action::SetInfo;
}
