//! Attacks "any number of processes scrape the directory, whichever
//! answers" when one of them is stopped (SIGSTOP, a debugger attached,
//! a frozen cgroup, a VM paused) in the middle of a compaction. The
//! compactor holds `.compact.lock` exclusively from its first read to its
//! last delete, and every scrape (every worker's `/metrics`, `promshard
//! serve`, `encode_dir`) used to wait for that lock without a bound: one
//! stopped worker took every scrape of the pool down with it, for as long
//! as it stayed stopped.
//!
//! Expected: scrapes go on while the compactor is stopped, with exact
//! counts (nothing the stopped compactor absorbed is lost, nothing is
//! counted twice, no file is reported bad), and once it resumes it
//! finishes its compaction. A second scenario races compactors that run
//! (and are stopped and resumed at random) against scrapes that check
//! every count against what the workers had done before and after it.

mod harness;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use harness::{TempDir, fork_child, isolated, own_text, shard_errors, shard_files, value_in, wait_timeout};
use promshard::{Counter, Histogram, metric};

/// Jobs done.
#[metric]
static STOPPED_JOBS_TOTAL: Counter;

/// Job sizes.
#[metric(buckets = [10.0, 100.0])]
static STOPPED_JOB_SIZE: Histogram;

/// Forks `n` workers that each record one job and exit; waits for them.
fn dead_workers(n: usize) {
    let pids: Vec<_> = (0..n)
        .map(|_| {
            fork_child(|| {
                STOPPED_JOBS_TOTAL.inc();
                STOPPED_JOB_SIZE.observe(50.0);
                0
            })
        })
        .collect();
    for pid in pids {
        let status = wait_timeout(pid, Duration::from_secs(20)).expect("a worker exits");
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "worker {pid}");
    }
}

/// Whether `pid` holds a write `flock` on the file whose inode is `ino`
/// (`/proc/locks`: `N: FLOCK  ADVISORY  WRITE <pid> <maj>:<min>:<ino> ...`).
fn holds_exclusive(pid: libc::pid_t, ino: u64) -> bool {
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    locks.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 5
            && fields[1] == "FLOCK"
            && fields[3] == "WRITE"
            && fields[4] == pid.to_string()
            && fields[5].rsplit(':').next() == Some(&ino.to_string())
    })
}

/// Whether `pid` is stopped (`T` in `/proc/<pid>/stat`).
fn is_stopped(pid: libc::pid_t) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
}

/// Runs `scrape` on another thread; its text, or `None` if it has not
/// answered within `timeout` (the thread is left behind).
fn scrape_within(timeout: Duration, scrape: impl FnOnce() -> String + Send + 'static) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(scrape());
    });
    rx.recv_timeout(timeout).ok()
}

fn check(text: &str, jobs: u64, who: &str) {
    assert_eq!(value_in(text, "stopped_jobs_total", &[]), Some(jobs as f64), "{who}: every job, once");
    assert_eq!(value_in(text, "stopped_job_size_count", &[]), Some(jobs as f64 - 1.0), "{who}: every observation");
    assert_eq!(shard_errors(text), 0.0, "{who}: no file reported bad\n{text}");
}

fn stopped_scenario() {
    let dir = TempDir::new("stopped-compactor");
    let dir = dir.path().to_owned();
    promshard::multiprocess::init(&dir).unwrap();
    STOPPED_JOBS_TOTAL.inc();
    let mut jobs = 1u64;
    let lock_ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(dir.join(".compact.lock")).unwrap());

    // Dead workers to fold, then a worker whose one scrape folds them;
    // stopped once it is seen holding the compaction lock. A compaction
    // of hundreds of shards takes long enough to be caught; a miss just
    // tries again.
    let mut compactor = None;
    for _attempt in 0..40 {
        dead_workers(300);
        jobs += 300;
        let pid = fork_child(|| {
            let _ = own_text();
            0
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut caught = false;
        while Instant::now() < deadline {
            if holds_exclusive(pid, lock_ino) {
                // SAFETY: our own child.
                unsafe { libc::kill(pid, libc::SIGSTOP) };
                while !is_stopped(pid) && Instant::now() < deadline {
                    std::thread::yield_now();
                }
                caught = holds_exclusive(pid, lock_ino);
                if !caught {
                    // SAFETY: our own child.
                    unsafe { libc::kill(pid, libc::SIGCONT) };
                }
                break;
            }
            let mut status = 0;
            // SAFETY: our own child.
            if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                break;
            }
        }
        if caught {
            compactor = Some(pid);
            break;
        }
        wait_timeout(pid, Duration::from_secs(20));
    }
    let Some(compactor) = compactor else {
        panic!("no compaction was caught holding its lock in 40 attempts of 300 dead shards each");
    };

    // Every kind of scrape goes on while it is stopped.
    let within = Duration::from_secs(10);
    let own = scrape_within(within, own_text);
    let from_dir = {
        let dir = dir.clone();
        scrape_within(within, move || harness::encode_dir_text(&dir))
    };
    let stuck = own.is_none() || from_dir.is_none();
    if stuck {
        // SAFETY: our own child; lets the stuck scrapes finish.
        unsafe { libc::kill(compactor, libc::SIGCONT) };
    }
    assert!(
        !stuck,
        "a worker stopped while compacting (it holds .compact.lock exclusively) blocked every scrape of \
         the directory for more than {within:?}: this process's own scrape answered: {}, encode_dir \
         answered: {}",
        own.is_some(),
        from_dir.is_some()
    );
    check(&own.unwrap(), jobs, "a scrape while the compactor is stopped");
    check(&from_dir.unwrap(), jobs, "encode_dir while the compactor is stopped");

    // Resumed, it finishes: the dead shards are folded, nothing is lost.
    // SAFETY: our own child.
    unsafe { libc::kill(compactor, libc::SIGCONT) };
    let status = wait_timeout(compactor, Duration::from_secs(30)).expect("the compactor finishes once resumed");
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    check(&own_text(), jobs, "after the compactor resumed");
    check(&own_text(), jobs, "after the next compaction");
    let files = shard_files(&dir);
    assert_eq!(files.len(), 2, "our shard and the archive: {files:?}");
}

#[test]
fn a_compactor_stopped_mid_compaction_blocks_no_scrape() {
    isolated("a_compactor_stopped_mid_compaction_blocks_no_scrape", Duration::from_secs(240), stopped_scenario);
}

/// Compactors that run, and are stopped and resumed, while this process
/// scrapes: each scrape's count lies between the jobs of the workers
/// reaped before it started and those forked before it ended, and never
/// goes down.
fn racing_scenario() {
    let dir = TempDir::new("racing-compactors");
    promshard::multiprocess::init(dir.path()).unwrap();
    STOPPED_JOBS_TOTAL.inc();
    let _ = own_text();
    // Workers are forked and reaped by a thread of their own; it counts
    // the jobs of those reaped (done) and those forked (possibly done).
    let reaped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1));
    let forked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (reaped, forked, stop) = (reaped.clone(), forked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut round = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                round += 1;
                let n = 20;
                forked.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                let pids: Vec<_> = (0..n)
                    .map(|i| {
                        fork_child(move || {
                            STOPPED_JOBS_TOTAL.inc();
                            STOPPED_JOB_SIZE.observe(50.0);
                            // Every fifth worker compacts, and some of
                            // those are stopped for a while.
                            if i % 5 == 0 {
                                let _ = own_text();
                            }
                            0
                        })
                    })
                    .collect();
                for (i, pid) in pids.iter().enumerate() {
                    if i % 10 == 0 && round % 2 == 0 {
                        // SAFETY: our own child.
                        unsafe { libc::kill(*pid, libc::SIGSTOP) };
                        std::thread::sleep(Duration::from_millis(3));
                        // SAFETY: our own child.
                        unsafe { libc::kill(*pid, libc::SIGCONT) };
                    }
                }
                for pid in pids {
                    let status = wait_timeout(pid, Duration::from_secs(30)).expect("a worker exits");
                    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
                }
                reaped.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut last = 0.0;
    let mut scrapes = 0;
    while Instant::now() < deadline {
        let low = reaped.load(std::sync::atomic::Ordering::SeqCst) as f64;
        let text = if scrapes % 2 == 0 { own_text() } else { harness::encode_dir_text(dir.path()) };
        let high = forked.load(std::sync::atomic::Ordering::SeqCst) as f64;
        let jobs = value_in(&text, "stopped_jobs_total", &[]).expect("the counter");
        assert!(low <= jobs && jobs <= high, "scrape {scrapes}: {jobs} jobs, not within [{low}, {high}]");
        assert!(jobs >= last, "scrape {scrapes}: {jobs} jobs after {last}");
        assert_eq!(shard_errors(&text), 0.0, "scrape {scrapes}: no file reported bad\n{text}");
        last = jobs;
        scrapes += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    churn.join().unwrap();
    let total = forked.load(std::sync::atomic::Ordering::SeqCst);
    check(&own_text(), total, "after the churn");
    assert!(scrapes > 20, "only {scrapes} scrapes");
}

#[test]
fn scrapes_racing_compactors_stay_exact() {
    isolated("scrapes_racing_compactors_stay_exact", Duration::from_secs(120), racing_scenario);
}
