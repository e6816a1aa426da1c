//! Probe: more than 64 threads scraping at once in multiprocess mode.
//!
//! Every scrape opens the directory's `.compact.lock` and registers its
//! descriptor in the fork handler's fixed table of 64 (`fork.rs`
//! `LOCK_FDS`). Registration happens under the gate and, when the table is
//! full, spins *holding the gate* until a slot frees; but the 64 scrapes
//! holding slots need the gate to finish (the shard cache is taken and
//! put back under it), so none ever releases its slot. Once that happens
//! every thread that needs the gate (a new bounded label value, an
//! `Info::set`, any scrape) waits forever.
//!
//! A web server whose handler calls `promshard::render` from a thread pool
//! larger than 64, under a burst of scrapes (several Prometheus replicas,
//! a slow directory), gets there.

mod harness;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use promshard::{Counter, metric};

/// Requests, by path seen at run time.
#[metric(labels(path = bounded(500)))]
static PROBE_LOCK_REQUESTS_TOTAL: Counter;

#[test]
fn more_than_64_concurrent_scrapes_never_deadlock() {
    harness::isolated("more_than_64_concurrent_scrapes_never_deadlock", Duration::from_secs(120), || {
        let dir = harness::TempDir::new("lockslots");
        promshard::multiprocess::init(dir.path()).unwrap();
        PROBE_LOCK_REQUESTS_TOTAL.with(("/start",)).inc();

        // Live workers, so that each scrape has files to read and takes a
        // while (a real pool).
        let mut workers = Vec::new();
        for _ in 0..24 {
            workers.push(harness::Worker::spawn(|cmd| {
                PROBE_LOCK_REQUESTS_TOTAL.with((cmd,)).inc();
                "ok".to_owned()
            }));
        }
        for (i, w) in workers.iter_mut().enumerate() {
            w.ask(&format!("/w{i}"), Duration::from_secs(20));
        }

        let stop = Arc::new(AtomicBool::new(false));
        let scrapes = Arc::new(AtomicU64::new(0));
        let recorded = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for _ in 0..96 {
            let (stop, scrapes) = (stop.clone(), scrapes.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = promshard::encode(promshard::Format::Prometheus);
                    scrapes.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        // A request thread recording new bounded values: the hot path of
        // the application, which needs the gate for each new value.
        {
            let (stop, recorded) = (stop.clone(), recorded.clone());
            threads.push(std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    PROBE_LOCK_REQUESTS_TOTAL.with((format!("/p{}", n % 400).as_str(),)).inc();
                    n += 1;
                    recorded.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_micros(200));
                }
            }));
        }

        // Watch for progress: a 5 s window with no scrape finishing and no
        // recording made is a deadlock.
        let run_until = Instant::now() + Duration::from_secs(20);
        let (mut last_scrapes, mut last_recorded, mut last_progress) = (0, 0, Instant::now());
        while Instant::now() < run_until {
            std::thread::sleep(Duration::from_millis(100));
            let (s, r) = (scrapes.load(Ordering::Relaxed), recorded.load(Ordering::Relaxed));
            if s != last_scrapes || r != last_recorded {
                (last_scrapes, last_recorded, last_progress) = (s, r, Instant::now());
            }
            assert!(
                last_progress.elapsed() < Duration::from_secs(5),
                "deadlock: with 96 threads scraping, no scrape finished and no label value was recorded \
                 for 5 s ({s} scrapes, {r} recordings before it stopped); the 65th scrape spins in \
                 fork::remember_lock_fd holding the gate while the other 64 wait for the gate"
            );
        }
        stop.store(true, Ordering::Relaxed);
        eprintln!("{} scrapes, {} recordings", scrapes.load(Ordering::Relaxed), recorded.load(Ordering::Relaxed));
        for t in threads {
            t.join().unwrap();
        }
    });
}
