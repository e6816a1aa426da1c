//! Attacks "churn costs nothing: dead workers are folded into one archive
//! at the next scrape" while the directory is read all the time: a
//! sidecar (`promshard serve`) answering overlapping scrapes, several
//! Prometheus servers, dashboards. Every read held `.compact.lock` shared
//! for its length, and a compaction only runs if it can take the lock
//! exclusively at once: with reads overlapping, it almost never could.
//! Dead shards piled up (a pre-fork pool with `--max-requests 2` under 24
//! scraping clients of `promshard serve` left 487 files after 20 s), and
//! every scrape grew slower, which makes reads overlap more.
//!
//! Expected: compaction keeps up however busy the readers are, and the
//! readers' counts stay exact meanwhile.

mod harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harness::{TempDir, fork_child, isolated, own_text, shard_files, value_in, wait_timeout};
use promshard::{Counter, metric};

/// Jobs done.
#[metric]
static STARVED_JOBS_TOTAL: Counter;

fn scenario() {
    let dir = TempDir::new("compaction-starvation");
    let dir = dir.path().to_owned();
    promshard::multiprocess::init(&dir).unwrap();
    STARVED_JOBS_TOTAL.inc();
    let _ = own_text();
    let mut jobs = 1.0;

    // Readers that never stop reading, as a sidecar with overlapping
    // scrapes does: each checks that the count never goes down.
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let dir = dir.clone();
            fork_child(move || {
                static STOP: AtomicBool = AtomicBool::new(false);
                extern "C" fn on_term(_: libc::c_int) {
                    STOP.store(true, Ordering::Relaxed);
                }
                // SAFETY: the handler only stores an atomic.
                unsafe { libc::signal(libc::SIGTERM, on_term as extern "C" fn(libc::c_int) as libc::sighandler_t) };
                let mut last = 0.0;
                while !STOP.load(Ordering::Relaxed) {
                    let text = harness::encode_dir_text(&dir);
                    let jobs = value_in(&text, "starved_jobs_total", &[]).unwrap_or(0.0);
                    assert!(jobs >= last, "a reader saw {jobs} jobs after {last}");
                    last = jobs;
                }
                0
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut most = 0;
    for round in 0..15 {
        // Twenty workers come and go, then the pool is scraped a few
        // times (each scrape compacts what it can).
        let workers: Vec<_> = (0..20)
            .map(|_| {
                fork_child(|| {
                    STARVED_JOBS_TOTAL.inc();
                    0
                })
            })
            .collect();
        for pid in workers {
            let status = wait_timeout(pid, Duration::from_secs(20)).expect("a worker exits");
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        }
        jobs += 20.0;
        for _ in 0..3 {
            let text = own_text();
            assert_eq!(value_in(&text, "starved_jobs_total", &[]), Some(jobs), "round {round}: every job, once");
            std::thread::sleep(Duration::from_millis(20));
        }
        most = most.max(shard_files(&dir).len());
        assert!(Instant::now() < deadline, "too slow");
    }

    for pid in readers {
        // SAFETY: our own children.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = wait_timeout(pid, Duration::from_secs(20)).expect("a reader stops");
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "a reader's counts never went down: {}",
            harness::describe_status(status)
        );
    }
    // This process, three readers and the archive, plus one round of dead
    // workers not yet folded: never the whole history.
    let bound = 1 + 3 + 1 + 20;
    assert!(
        most <= bound,
        "with readers reading all the time, dead shards piled up to {most} files (300 workers came and \
         went; at most {bound} expected): compaction could not take its lock"
    );
    let _ = own_text();
    assert_eq!(value_in(&own_text(), "starved_jobs_total", &[]), Some(jobs));
    assert!(shard_files(&dir).len() <= 2, "once the readers stopped: {:?}", shard_files(&dir));
}

#[test]
fn compaction_keeps_up_while_readers_read_all_the_time() {
    isolated("compaction_keeps_up_while_readers_read_all_the_time", Duration::from_secs(120), scenario);
}
