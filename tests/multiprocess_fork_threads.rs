//! `fork()` while other threads record, intern bounded label values and
//! replace info labels must never deadlock the child (Python's client
//! does: client_python#431), and every child's values must arrive.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use promshard::testing::sample_value;
use promshard::{Counter, Info, metric};

/// Events, by a run-time string.
#[metric(labels(kind = bounded(64)))]
static EVENTS_TOTAL: Counter;

/// Forks that completed.
#[metric]
static CHILDREN_TOTAL: Counter;

/// Changes all the time.
#[metric]
static BUILD_INFO: Info;

const FORKS: usize = 30;

#[test]
fn forking_while_threads_record_never_deadlocks() {
    let dir = std::env::temp_dir().join(format!("promshard-fork-threads-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    promshard::multiprocess::init(&dir).unwrap();
    CHILDREN_TOTAL.inc_by(0);

    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..3 {
            let stop = &stop;
            s.spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // New strings take the gate that fork() must not
                    // catch held: interning, the string log, info.
                    EVENTS_TOTAL.with((&format!("k{}", n % 40),)).inc();
                    if n % 50 == 0 {
                        BUILD_INFO.set(&[("thread", &t.to_string())]);
                    }
                    n += 1;
                }
            });
        }
        let mut pids = Vec::new();
        for i in 0..FORKS {
            // SAFETY: the child records (taking the gate), then _exits.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0);
            if pid == 0 {
                EVENTS_TOTAL.with((&format!("child{}", i % 8),)).inc();
                CHILDREN_TOTAL.inc();
                // SAFETY: leave at once.
                unsafe { libc::_exit(0) };
            }
            pids.push(pid);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for (n, &pid) in pids.iter().enumerate() {
            loop {
                let mut status = 0;
                // SAFETY: polling our own child.
                let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
                if done == pid {
                    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child {pid}: {status}");
                    break;
                }
                if Instant::now() > deadline {
                    // Stuck: kill this child and the ones not reaped yet,
                    // so none outlives the test, then fail.
                    for &stuck in &pids[n..] {
                        // SAFETY: our own children.
                        unsafe {
                            libc::kill(stuck, libc::SIGKILL);
                            libc::waitpid(stuck, std::ptr::null_mut(), 0);
                        }
                    }
                    stop.store(true, Ordering::Relaxed);
                    panic!("child {pid} deadlocked after fork");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        stop.store(true, Ordering::Relaxed);
    });

    assert_eq!(sample_value("children_total", &[]), Some(FORKS as f64));
    let from_children: f64 =
        (0..8).filter_map(|i| sample_value("events_total", &[("kind", &format!("child{i}"))])).sum();
    assert_eq!(from_children, FORKS as f64, "every child's bounded value reached the merge");
    let _ = std::fs::remove_dir_all(&dir);
}
