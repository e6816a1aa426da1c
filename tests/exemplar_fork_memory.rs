//! `fork()` while other threads write exemplars, in memory mode (no
//! shard directory): the child inherits the parent's slots as they were,
//! and a thread caught in the middle of an exemplar's write (its sequence
//! word odd) does not exist in the child. Its slots must not stay "busy"
//! for good there: the child's own exemplar, written right after the
//! fork, must land and show in the child's scrape.
//!
//! Covers a registered counter and histogram (the registry's arena) and
//! a counter used without registration (an arena of its own).

mod harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use promshard::{Counter, Histogram, Opts, metric};

/// Hammered with exemplars by the threads, then written once by each
/// child.
#[metric(exemplars)]
static FORKEX_HITS_TOTAL: Counter;

/// Observed with exemplars by the threads, then once by each child: the
/// exemplar of bucket `le="1.0"`, after the bucket counts.
#[metric(buckets = [1.0], exemplars)]
static FORKEX_WAIT_SECONDS: Histogram;

/// Never passed to `register!`: slots of its own, outside the registry's
/// arena.
static FORKEX_UNREGISTERED: Counter =
    Counter::new(Opts::new("forkex_unregistered_total", "Used without registration.").exemplars());

const FORKS: usize = 200;
const THREADS: usize = 3;

/// What a child exits with: 0, or the sum of the bits of the series
/// whose exemplar is not the child's.
const REGISTERED_COUNTER: i32 = 1;
const UNREGISTERED_COUNTER: i32 = 2;
const HISTOGRAM: i32 = 4;

/// Whether `text` has the sample line of `series` with the exemplar
/// `{child="<pid>"} <value>`.
fn shows(text: &str, series: &str, pid: u32, value: &str) -> bool {
    let exemplar = format!(" # {{child=\"{pid}\"}} {value} ");
    text.lines().any(|l| l.starts_with(series) && l.contains(&exemplar))
}

#[test]
fn a_fork_during_an_exemplar_write_leaves_the_child_a_usable_slot() {
    harness::isolated(
        "a_fork_during_an_exemplar_write_leaves_the_child_a_usable_slot",
        Duration::from_secs(120),
        scenario,
    );
}

fn scenario() {
    assert!(std::env::var_os(promshard::multiprocess::DIR_ENV).is_none(), "memory mode");
    FORKEX_HITS_TOTAL.inc();
    FORKEX_UNREGISTERED.inc();
    FORKEX_WAIT_SECONDS.observe(0.5);
    // Long values: the longer a write, the likelier a fork lands in one.
    let long: Vec<String> = (0..4).map(|t| format!("{t}").repeat(120)).collect();
    let stop = AtomicBool::new(false);
    let mut failures = Vec::new();
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (stop, value) = (&stop, long[t % long.len()].as_str());
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    FORKEX_HITS_TOTAL.inc_with_exemplar(&[("trace_id", value)]);
                    FORKEX_UNREGISTERED.inc_with_exemplar(&[("trace_id", value)]);
                    FORKEX_WAIT_SECONDS.observe_with_exemplar(0.5, &[("trace_id", value)]);
                }
            });
        }
        for _ in 0..FORKS {
            let pid = harness::fork_child(|| {
                let me = std::process::id();
                let label = me.to_string();
                FORKEX_HITS_TOTAL.inc_with_exemplar(&[("child", &label)]);
                FORKEX_UNREGISTERED.inc_with_exemplar(&[("child", &label)]);
                FORKEX_WAIT_SECONDS.observe_with_exemplar(0.5, &[("child", &label)]);
                let text = String::from_utf8(promshard::encode(promshard::Format::OpenMetrics)).unwrap();
                let mut missing = 0;
                if !shows(&text, "forkex_hits_total ", me, "1") {
                    missing |= REGISTERED_COUNTER;
                }
                if !shows(&text, "forkex_unregistered_total ", me, "1") {
                    missing |= UNREGISTERED_COUNTER;
                }
                if !shows(&text, "forkex_wait_seconds_bucket{le=\"1", me, "0.5") {
                    missing |= HISTOGRAM;
                }
                missing
            });
            match harness::wait_timeout(pid, Duration::from_secs(20)) {
                Some(status) if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 => {}
                Some(status) => failures.push(harness::describe_status(status)),
                None => failures.push("timed out".to_owned()),
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let mut by_status = std::collections::BTreeMap::new();
    for failure in &failures {
        *by_status.entry(failure.as_str()).or_insert(0) += 1;
    }
    assert!(
        failures.is_empty(),
        "{} of {FORKS} children did not see their own exemplar (exit code: 1 the registered \
         counter's missing, + 2 the unregistered counter's, + 4 the histogram's); children by status: {by_status:?}",
        failures.len()
    );
    // The parent's own slots were never stuck.
    FORKEX_HITS_TOTAL.inc_with_exemplar(&[("child", "parent")]);
    let text = String::from_utf8(promshard::encode(promshard::Format::OpenMetrics)).unwrap();
    assert!(text.contains("forkex_hits_total ") && text.contains("{child=\"parent\"} 1 "), "{text}");
}
