//! Probe: `fork()` while another thread releases a directory lock.
//!
//! A directory lock (`flock` on `.compact.lock`) belongs to the open file,
//! which a forked child shares, so the fork handler closes in the child
//! every descriptor registered in `fork.rs` `LOCK_FDS`. But `DirLock`'s
//! drop unregisters the descriptor *before* closing it, outside the gate:
//! a fork that lands between the two gives the child a descriptor nobody
//! closes, and the child holds the lock for its whole life. When the lock
//! was the compactor's exclusive one, every scrape in every process (they
//! wait for the lock shared) blocks until that worker exits: for a pre-fork
//! server, hours.
//!
//! The master here compacts in a loop on one thread (as its scrapes do)
//! and forks workers on another, as a pre-fork master does. Each worker
//! looks at its own descriptor table right away.

mod harness;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use promshard::{Counter, metric};

/// Requests served.
#[metric]
static PROBE_FORK_LOCK_REQUESTS_TOTAL: Counter;

/// Whether this process has a descriptor open on the directory's
/// compaction lock file.
fn holds_compact_lock_fd() -> bool {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else { return false };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .any(|target| target.to_string_lossy().ends_with("/.compact.lock"))
}

#[test]
fn a_forked_worker_never_keeps_the_compaction_lock() {
    harness::isolated("a_forked_worker_never_keeps_the_compaction_lock", Duration::from_secs(90), || {
        let dir = harness::TempDir::new("forklock");
        promshard::multiprocess::init(dir.path()).unwrap();
        PROBE_FORK_LOCK_REQUESTS_TOTAL.inc();
        assert!(!holds_compact_lock_fd(), "the master holds no lock between operations");

        let stop = Arc::new(AtomicBool::new(false));
        let compactor = {
            let (stop, dir) = (stop.clone(), dir.path().to_owned());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    promshard::multiprocess::compact_dir(&dir);
                }
            })
        };

        let deadline = Instant::now() + Duration::from_secs(40);
        let (mut forks, mut leaked) = (0u32, None);
        while Instant::now() < deadline && leaked.is_none() {
            let (mut r, w) = harness::pipe();
            let pid = harness::fork_child(move || {
                let mut w = w;
                if holds_compact_lock_fd() {
                    let _ = w.write_all(b"L");
                    // Stay alive as a worker would, holding what it got.
                    std::thread::sleep(Duration::from_secs(60));
                } else {
                    let _ = w.write_all(b"N");
                }
                0
            });
            forks += 1;
            let mut byte = [0u8; 1];
            let _ = r.read(&mut byte);
            if byte[0] == b'L' {
                leaked = Some(pid);
            } else {
                harness::wait_timeout(pid, Duration::from_secs(10));
            }
        }
        stop.store(true, Ordering::Relaxed);
        compactor.join().unwrap();

        let Some(worker) = leaked else {
            eprintln!("no leak in {forks} forks");
            return;
        };
        // The consequence: does a scrape still finish while that worker lives?
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let scraper = dir.path().to_owned();
        std::thread::spawn(move || {
            let _ = promshard::multiprocess::encode_dir(&scraper, promshard::Format::Prometheus);
            let _ = done_tx.send(());
        });
        let scrape_finished = done_rx.recv_timeout(Duration::from_secs(5)).is_ok();
        // SAFETY: our own child.
        unsafe { libc::kill(worker, libc::SIGKILL) };
        harness::wait_timeout(worker, Duration::from_secs(10));
        let after_kill = scrape_finished || done_rx.recv_timeout(Duration::from_secs(5)).is_ok();
        panic!(
            "worker {worker} (fork {forks}) inherited a descriptor of .compact.lock that the fork handler did not \
             close (DirLock::drop unregisters it from LOCK_FDS before closing it, outside the gate); \
             a scrape while it lived {}{}",
            if scrape_finished {
                "still finished (it was a shared lock: compaction is blocked instead)"
            } else {
                "blocked for 5 s (the worker holds the compactor's exclusive lock; every scrape waits for it)"
            },
            if after_kill { "; killing the worker unblocked it" } else { "" }
        );
    });
}
