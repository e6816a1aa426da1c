//! Probe: `fork()` while another thread scrapes, with a metric that was
//! used but never registered.
//!
//! A metric missing from the registry's slice degrades to a warning and
//! gets slots of its own, listed in `Registry::unregistered`, a plain
//! `std::sync::Mutex` that every scrape locks to encode those families
//! (`expose/mod.rs` `encode_into`, `registry.rs` `attach_unregistered`).
//! Unlike the gate, nothing releases it in a forked child: a fork that
//! lands while a scrape holds it gives a child whose every scrape waits
//! for it forever. "Forking while other threads record cannot deadlock"
//! (README) does not hold for that lock.

mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use promshard::{Counter, Histogram, Opts, metric};

/// Requests served (registered).
#[metric]
static PROBE_UNREG_REQUESTS_TOTAL: Counter;

// Declared with `new` and never passed to `promshard::register!`: the
// forgotten registration the runtime tolerates with a warning.
static FORGOTTEN: [Histogram; 8] = [
    Histogram::new(Opts::new("probe_forgotten_0_seconds", "Forgotten.")),
    Histogram::new(Opts::new("probe_forgotten_1_seconds", "Forgotten.")),
    Histogram::new(Opts::new("probe_forgotten_2_seconds", "Forgotten.")),
    Histogram::new(Opts::new("probe_forgotten_3_seconds", "Forgotten.")),
    Histogram::new(Opts::new("probe_forgotten_4_seconds", "Forgotten.")),
    Histogram::new(Opts::new("probe_forgotten_5_seconds", "Forgotten.")),
    Histogram::new(Opts::new("probe_forgotten_6_seconds", "Forgotten.")),
    Histogram::new(Opts::new("probe_forgotten_7_seconds", "Forgotten.")),
];

fn run(multiprocess: bool) {
    let dir = harness::TempDir::new("forkunreg");
    if multiprocess {
        promshard::multiprocess::init(dir.path()).unwrap();
    }
    PROBE_UNREG_REQUESTS_TOTAL.inc();
    for h in &FORGOTTEN {
        h.observe(0.5);
    }
    let text = harness::own_text();
    assert!(text.contains("probe_forgotten_0_seconds_count 1"), "the forgotten metric is exposed:\n{text}");

    let stop = Arc::new(AtomicBool::new(false));
    let scraper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = promshard::encode(promshard::Format::Prometheus);
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut forks, mut hung) = (0u32, 0u32);
    while Instant::now() < deadline && hung == 0 {
        let pid = harness::fork_child(|| {
            PROBE_UNREG_REQUESTS_TOTAL.inc();
            let _ = promshard::encode(promshard::Format::Prometheus);
            0
        });
        forks += 1;
        if harness::wait_timeout(pid, Duration::from_secs(5)).is_none() {
            hung += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    scraper.join().unwrap();
    assert_eq!(
        hung, 0,
        "a child forked while the parent scraped hung in its own first scrape (fork {forks}, killed after 5 s): \
         it inherited Registry::unregistered (a std Mutex) locked by the parent's scraping thread"
    );
}

#[test]
fn fork_during_scrape_with_an_unregistered_metric_never_deadlocks_the_child() {
    harness::isolated(
        "fork_during_scrape_with_an_unregistered_metric_never_deadlocks_the_child",
        Duration::from_secs(90),
        || run(true),
    );
}

#[test]
fn fork_during_scrape_with_an_unregistered_metric_never_deadlocks_the_child_in_memory() {
    harness::isolated(
        "fork_during_scrape_with_an_unregistered_metric_never_deadlocks_the_child_in_memory",
        Duration::from_secs(90),
        || run(false),
    );
}
