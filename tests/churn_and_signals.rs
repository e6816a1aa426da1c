//! Long runs against the `bounded(N)` promise and the merged view: an
//! unending stream of new label values from several threads while a
//! thread scrapes (memory mode), and, in multiprocess mode, workers that
//! churn values while being SIGKILLed mid-loop, stopped and resumed, and
//! replaced, each reporting over a pipe what it had done after every batch.
//! Counts must add up to every increment: nothing lost, nothing twice.

mod harness;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use harness::{TempDir, fork_child, isolated, own_text, parse_samples};
use promshard::{Counter, Histogram, metric};

/// Requests by key; the keys never repeat.
#[metric(labels(key = bounded(64)))]
static CHURN_TOTAL: Counter;

/// Sizes by key.
#[metric(labels(key = bounded(16)), buckets = [1.0, 2.0])]
static CHURN_SIZE: Histogram;

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn total(text: &str, name: &str) -> f64 {
    parse_samples(text).iter().filter(|s| s.name == name).map(|s| s.value).sum()
}

fn series(text: &str, name: &str) -> usize {
    parse_samples(text).iter().filter(|s| s.name == name).count()
}

fn overflow(text: &str, metric: &str) -> f64 {
    harness::value_in(text, "promshard_label_overflow_total", &[("metric", metric), ("label", "key")]).unwrap_or(0.0)
}

/// A million distinct values from four threads while a fifth scrapes:
/// resident memory stays flat once the table is full, every increment is
/// in a kept series or in `other`, the overflow count is every recording
/// that went to `other`, and scrapes stay fast.
#[test]
fn a_million_new_values_keep_memory_flat_and_every_count() {
    isolated("a_million_new_values_keep_memory_flat_and_every_count", Duration::from_secs(60), || {
        const THREADS: u64 = 4;
        const PER_THREAD: u64 = 250_000;
        let done = AtomicBool::new(false);
        let recorded = AtomicU64::new(0);
        let mut rss_warm = 0;
        let slowest = std::thread::scope(|scope| {
            let scraper = scope.spawn(|| {
                let mut slowest = Duration::ZERO;
                let mut last = 0.0;
                while !done.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let text = own_text();
                    slowest = slowest.max(start.elapsed());
                    let seen = total(&text, "churn_total");
                    assert!(seen >= last, "the counter went down: {last} then {seen}");
                    assert!(series(&text, "churn_total") <= 65, "more series than bounded(64) allows");
                    last = seen;
                    std::thread::sleep(Duration::from_millis(5));
                }
                slowest
            });
            let workers: Vec<_> = (0..THREADS)
                .map(|t| {
                    let recorded = &recorded;
                    scope.spawn(move || {
                        let mut key = String::with_capacity(32);
                        for i in 0..PER_THREAD {
                            use std::fmt::Write;
                            key.clear();
                            write!(key, "t{t}-{i}").unwrap();
                            CHURN_TOTAL.with((key.as_str(),)).inc_by(1 + i % 3);
                            CHURN_SIZE.with((key.as_str(),)).observe((i % 3) as f64);
                            recorded.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            while recorded.load(Ordering::Relaxed) < 100_000 {
                std::thread::sleep(Duration::from_millis(1));
            }
            rss_warm = rss_kib();
            for worker in workers {
                worker.join().unwrap();
            }
            done.store(true, Ordering::Relaxed);
            scraper.join().unwrap()
        });
        let rss_end = rss_kib();
        let text = own_text();
        let per_thread: u64 = (0..PER_THREAD).map(|i| 1 + i % 3).sum();
        assert_eq!(total(&text, "churn_total"), (THREADS * per_thread) as f64);
        assert_eq!(series(&text, "churn_total"), 65);
        let calls = THREADS * PER_THREAD;
        assert_eq!(overflow(&text, "churn"), (calls - 64) as f64);
        assert_eq!(total(&text, "churn_size_count"), calls as f64);
        assert_eq!(overflow(&text, "churn_size"), (calls - 16) as f64);
        let sum_expected: u64 = THREADS * (0..PER_THREAD).map(|i| i % 3).sum::<u64>();
        assert_eq!(total(&text, "churn_size_sum"), sum_expected as f64);
        assert!(rss_end < rss_warm + 4096, "resident memory grew from {rss_warm} KiB to {rss_end} KiB");
        assert!(slowest < Duration::from_millis(500), "a scrape took {slowest:?}");
    });
}

/// Recordings of one worker batch.
const BATCH: u64 = 500;

/// A worker: batches of increments over new keys, forever, reporting its
/// running total (`pid total\n`, one atomic pipe write) after each batch.
fn churn_worker(report: &std::fs::File, seed: u64) -> i32 {
    let mut done = 0u64;
    let mut key = String::new();
    loop {
        for i in 0..BATCH {
            use std::fmt::Write;
            key.clear();
            write!(key, "w{seed}-{}", done + i).unwrap();
            CHURN_TOTAL.with((key.as_str(),)).inc();
            CHURN_SIZE.with((key.as_str(),)).observe(1.0);
        }
        done += BATCH;
        let line = format!("{} {done}\n", std::process::id());
        // SAFETY: a valid descriptor and buffer; one write under PIPE_BUF is atomic.
        let wrote = unsafe { libc::write(report.as_raw_fd(), line.as_ptr().cast(), line.len()) };
        assert_eq!(wrote, line.len() as isize);
    }
}

/// Reads every report waiting in the (non-blocking) pipe into `reported`.
fn drain(reader: &mut std::fs::File, partial: &mut String, reported: &mut std::collections::HashMap<i32, u64>) {
    let mut buf = [0u8; 65536];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => partial.push_str(std::str::from_utf8(&buf[..n]).unwrap()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => panic!("{e}"),
        }
        while let Some(end) = partial.find('\n') {
            let line: String = partial.drain(..=end).collect();
            let (pid, done) = line.trim().split_once(' ').unwrap();
            let done: u64 = done.parse().unwrap();
            let slot = reported.entry(pid.parse().unwrap()).or_default();
            *slot = (*slot).max(done);
        }
    }
}

/// Four workers churn keys; the master SIGKILLs one at random and starts a
/// replacement, SIGSTOPs another through a few scrapes and resumes it, and
/// scrapes all the while. Each scrape must be quick, the counters never go
/// down, and at the end (every worker killed) each worker's count is what
/// it reported plus at most the one batch it was killed in.
#[test]
fn killed_and_stopped_workers_lose_and_double_nothing() {
    isolated("killed_and_stopped_workers_lose_and_double_nothing", Duration::from_secs(60), || {
        let base = TempDir::new("churn-signals");
        let dir = base.path().join("shards");
        promshard::multiprocess::init(&dir).unwrap();
        let (mut reader, writer) = harness::pipe();
        // SAFETY: our own descriptor.
        unsafe { libc::fcntl(reader.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        let mut reported = std::collections::HashMap::new();
        let mut partial = String::new();
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut seed = 0;
        let spawn = |seed: &mut u64| {
            *seed += 1;
            let s = *seed;
            let writer = &writer;
            fork_child(move || churn_worker(writer, s))
        };
        let mut live: Vec<i32> = (0..4).map(|_| spawn(&mut seed)).collect();
        let mut killed = Vec::new();
        let started = Instant::now();
        let mut last = (0.0, 0.0);
        let mut slowest = Duration::ZERO;
        while started.elapsed() < Duration::from_secs(20) {
            let victim = (next() % live.len() as u64) as usize;
            let stopped = live[(victim + 1) % live.len()];
            // SAFETY: our own children.
            unsafe { libc::kill(stopped, libc::SIGSTOP) };
            std::thread::sleep(Duration::from_millis(next() % 30));
            let pid = live[victim];
            // SAFETY: our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            assert!(harness::wait_timeout(pid, Duration::from_secs(10)).is_some());
            killed.push(pid);
            live[victim] = spawn(&mut seed);
            for _ in 0..3 {
                let start = Instant::now();
                let text = own_text();
                slowest = slowest.max(start.elapsed());
                let now = (total(&text, "churn_total"), total(&text, "churn_size_count"));
                assert!(now.0 >= last.0 && now.1 >= last.1, "went down: {last:?} then {now:?}");
                assert_eq!(harness::shard_errors(&text), 0.0, "{text}");
                last = now;
                drain(&mut reader, &mut partial, &mut reported);
            }
            // SAFETY: our own child.
            unsafe { libc::kill(stopped, libc::SIGCONT) };
        }
        for pid in live.drain(..) {
            // SAFETY: our own children.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            assert!(harness::wait_timeout(pid, Duration::from_secs(10)).is_some());
            killed.push(pid);
        }
        drain(&mut reader, &mut partial, &mut reported);
        let text = own_text();
        let reported_sum: u64 = reported.values().sum();
        let workers = killed.len() as u64;
        for name in ["churn_total", "churn_size_count"] {
            let seen = total(&text, name) as u64;
            assert!(
                seen >= reported_sum && seen <= reported_sum + workers * BATCH,
                "{name}: {seen}, workers reported {reported_sum} over {workers} workers"
            );
        }
        // Every recording is in a series: the counter and the histogram
        // record the same keys, one each, so their totals differ by at most
        // one per killed worker (killed between the two).
        let (counts, observations) = (total(&text, "churn_total") as u64, total(&text, "churn_size_count") as u64);
        assert!(counts.abs_diff(observations) <= workers, "{counts} increments, {observations} observations");
        assert!(slowest < Duration::from_secs(2), "a scrape took {slowest:?}");
        eprintln!("{workers} workers, {reported_sum} reported, {counts} counted, slowest scrape {slowest:?}");
    });
}

/// One thread scrapes (and so compacts dead children) without pause while
/// the main thread forks children one after another; each child scrapes
/// at once (its parent's scraping thread caught mid-scrape by the fork),
/// then records batches of new keys, reporting after each, and is
/// SIGKILLed mid-loop or exits. No child's scrape hangs, and the merged
/// totals are what the children reported, plus at most the batch each
/// killed one was in.
#[test]
fn forks_while_a_thread_scrapes_keep_every_count() {
    isolated("forks_while_a_thread_scrapes_keep_every_count", Duration::from_secs(60), || {
        const CHILDREN: u64 = 60;
        let base = TempDir::new("fork-scrape");
        let dir = base.path().join("shards");
        promshard::multiprocess::init(&dir).unwrap();
        CHURN_TOTAL.with(("parent",)).inc();
        let (mut reader, writer) = harness::pipe();
        // SAFETY: our own descriptor.
        unsafe { libc::fcntl(reader.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        let stop = AtomicBool::new(false);
        let mut reported = std::collections::HashMap::new();
        let mut partial = String::new();
        let mut killed = 0u64;
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut last = 0.0;
                while !stop.load(Ordering::Relaxed) {
                    let seen = total(&own_text(), "churn_total");
                    assert!(seen >= last, "went down: {last} then {seen}");
                    last = seen;
                }
            });
            for n in 0..CHILDREN {
                let writer = &writer;
                let pid = fork_child(move || {
                    let start = Instant::now();
                    own_text();
                    if start.elapsed() > Duration::from_secs(2) {
                        return 3;
                    }
                    if n % 2 == 0 {
                        churn_worker(writer, 1000 + n)
                    } else {
                        for i in 0..BATCH {
                            CHURN_TOTAL.with((format!("x{n}-{i}").as_str(),)).inc();
                            CHURN_SIZE.with((format!("x{n}-{i}").as_str(),)).observe(1.0);
                        }
                        let line = format!("{} {BATCH}\n", std::process::id());
                        // SAFETY: as in `churn_worker`.
                        unsafe { libc::write(writer.as_raw_fd(), line.as_ptr().cast(), line.len()) };
                        0
                    }
                });
                if n % 2 == 0 {
                    std::thread::sleep(Duration::from_millis(20 + n % 7 * 5));
                    // SAFETY: our own child.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                let status = harness::wait_timeout(pid, Duration::from_secs(10));
                let status = status.map(harness::describe_status);
                let expected = if n % 2 == 0 { "killed by signal 9 (SIGKILL)" } else { "exit code 0" };
                // A child that ended by itself before the kill scraped too
                // slowly (exit code 3).
                assert_eq!(status.as_deref(), Some(expected), "child {n}");
                killed += u64::from(n % 2 == 0);
                drain(&mut reader, &mut partial, &mut reported);
            }
            stop.store(true, Ordering::Relaxed);
        });
        drain(&mut reader, &mut partial, &mut reported);
        let text = own_text();
        let reported_sum: u64 = reported.values().sum::<u64>() + 1;
        for name in ["churn_total", "churn_size_count"] {
            let seen = total(&text, name) as u64 + u64::from(name == "churn_size_count");
            assert!(
                seen >= reported_sum && seen <= reported_sum + killed * BATCH,
                "{name}: {seen}, children reported {reported_sum} over {killed} killed"
            );
        }
        assert_eq!(harness::shard_errors(&text), 0.0);
    });
}
