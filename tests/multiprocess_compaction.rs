//! Dead workers' shards folded into the archive: two compactors racing,
//! and a compactor killed at each step, never lose or double-count.

use promshard::testing::sample_value;
use promshard::{Counter, Format, Gauge, Histogram, metric};

/// Jobs done.
#[metric]
static JOBS_TOTAL: Counter;

/// Job sizes.
#[metric(buckets = [10.0, 100.0])]
static JOB_SIZE: Histogram;

/// Live workers.
#[metric(mode = livesum)]
static WORKERS: Gauge;

/// Largest job ever.
#[metric(mode = max)]
static LARGEST_JOB: Gauge;

fn fork(child: impl FnOnce()) -> libc::pid_t {
    // SAFETY: children only record, scrape, and _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        child();
        // SAFETY: leave without the test harness's exit handlers.
        unsafe { libc::_exit(0) };
    }
    pid
}

fn wait(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status), "child {pid} did not exit normally: {status}");
    libc::WEXITSTATUS(status)
}

/// Forks `n` workers that record and exit; returns what they added.
fn dead_workers(n: u64, round: u64) -> u64 {
    let pids: Vec<_> = (0..n)
        .map(|i| {
            fork(move || {
                JOBS_TOTAL.inc_by(round * 100 + i);
                JOB_SIZE.observe(50.0);
                WORKERS.inc();
                LARGEST_JOB.set((round * 10 + i) as f64);
            })
        })
        .collect();
    for pid in pids {
        assert_eq!(wait(pid), 0);
    }
    (0..n).map(|i| round * 100 + i).sum()
}

fn check(expected_jobs: u64, expected_observations: u64, largest: f64, when: &str) {
    assert_eq!(sample_value("jobs_total", &[]), Some(expected_jobs as f64), "{when}");
    assert_eq!(sample_value("job_size_count", &[]), Some(expected_observations as f64), "{when}");
    assert_eq!(sample_value("job_size_bucket", &[("le", "100.0")]), Some(expected_observations as f64), "{when}");
    assert_eq!(sample_value("workers", &[]), Some(1.0), "{when}: only the parent is live");
    assert_eq!(sample_value("largest_job", &[]), Some(largest), "{when}");
}

#[test]
fn compaction_races_and_crashes_lose_nothing() {
    let dir = std::env::temp_dir().join(format!("promshard-compact-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    promshard::multiprocess::init(&dir).unwrap();
    JOBS_TOTAL.inc();
    WORKERS.inc();
    let mut jobs = 1;
    let mut observations = 0;
    let mut largest = 0.0;

    // Two processes scraping (and so compacting) at once.
    jobs += dead_workers(6, 1);
    observations += 6;
    largest = f64::max(largest, 15.0);
    let scrapers: Vec<_> = (0..2)
        .map(|_| {
            fork(|| {
                for _ in 0..20 {
                    let _ = promshard::encode(Format::Prometheus);
                }
            })
        })
        .collect();
    for pid in scrapers {
        assert_eq!(wait(pid), 0);
    }
    check(jobs, observations, largest, "after racing compactors");

    // A compactor killed after writing, after renaming, after deleting one.
    for (round, point) in [(2u64, 1u8), (3, 2), (4, 3)] {
        jobs += dead_workers(3, round);
        observations += 3;
        largest = f64::max(largest, (round * 10 + 2) as f64);
        let crasher = fork(move || {
            promshard::__private::crash_compaction_at(point);
            let _ = promshard::encode(Format::Prometheus);
        });
        assert_eq!(wait(crasher), 70, "the compactor stopped at point {point}");
        check(jobs, observations, largest, &format!("right after a crash at point {point}"));
        // The next scrape compacts again, over whatever was left.
        let _ = promshard::encode(Format::Prometheus);
        check(jobs, observations, largest, &format!("after recovering from point {point}"));
    }

    let files = promshard::multiprocess::inspect(&dir).unwrap();
    assert_eq!(files.len(), 2, "our shard and the archive remain: {files:?}");
    assert!(files.iter().all(|f| f.problem.is_none()), "{files:?}");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".promshard") || n == ".archive.tmp")
        .collect();
    assert_eq!(leftovers.len(), 2, "{leftovers:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
