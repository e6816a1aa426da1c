//! Scrapes while two processes × two threads record as fast as they can:
//! counters never go down between scrapes, no float is ever torn, and the
//! final totals are exact.

use std::io::Read;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use promshard::testing::sample_value;
use promshard::{Counter, Gauge, metric};

/// Operations.
#[metric]
static OPS_TOTAL: Counter;

/// Bytes moved, counted in halves.
#[metric(unit = "bytes")]
static MOVED_BYTES_TOTAL: Counter;

/// A gauge flipped between two values whose bit patterns share nothing.
#[metric(mode = all)]
static FLIP: Gauge;

const A: f64 = 1.0e300;
const B: f64 = -2.5e-300;
const RUN: Duration = Duration::from_millis(800);

#[test]
fn scrapes_during_recording_are_monotonic_and_untorn() {
    let dir = std::env::temp_dir().join(format!("promshard-concurrent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    promshard::multiprocess::init(&dir).unwrap();
    OPS_TOTAL.inc_by(0);

    let mut fds = [0; 2];
    // SAFETY: a valid array for the pipe's two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let mut children = Vec::new();
    for _ in 0..2 {
        // SAFETY: the child records on two threads, reports, and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let stop = AtomicBool::new(false);
            let done = AtomicU64::new(0);
            std::thread::scope(|s| {
                for t in 0..2 {
                    let (stop, done) = (&stop, &done);
                    s.spawn(move || {
                        let mut n = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            OPS_TOTAL.inc();
                            MOVED_BYTES_TOTAL.inc_by_f64(0.5).unwrap();
                            FLIP.set(if (n + t) % 2 == 0 { A } else { B });
                            n += 1;
                        }
                        done.fetch_add(n, Ordering::Relaxed);
                    });
                }
                std::thread::sleep(RUN);
                stop.store(true, Ordering::Relaxed);
            });
            let n = done.load(Ordering::Relaxed).to_le_bytes();
            // SAFETY: write our count to the pipe, then leave.
            unsafe {
                libc::write(fds[1], n.as_ptr().cast(), 8);
                libc::_exit(0);
            }
        }
        children.push(pid);
    }
    // SAFETY: the parent does not write.
    unsafe { libc::close(fds[1]) };

    let started = Instant::now();
    let (mut last_ops, mut last_moved, mut scrapes) = (0.0, 0.0, 0);
    while started.elapsed() < RUN {
        let ops = sample_value("ops_total", &[]).unwrap();
        let moved = sample_value("moved_bytes_total", &[]).unwrap();
        assert!(ops >= last_ops, "ops went down: {last_ops} -> {ops}");
        assert!(moved >= last_moved, "moved went down: {last_moved} -> {moved}");
        assert_eq!(moved % 0.5, 0.0, "a float counter read torn: {moved}");
        for pid in &children {
            if let Some(flip) = sample_value("flip", &[("pid", &pid.to_string())]) {
                assert!(flip == A || flip == B || flip == 0.0, "torn gauge: {flip:e}");
            }
        }
        (last_ops, last_moved) = (ops, moved);
        scrapes += 1;
    }
    assert!(scrapes > 3, "only {scrapes} scrapes ran");

    // SAFETY: the read end, owned from here on.
    let mut reports = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let mut total = 0;
    for _ in 0..2 {
        let mut n = [0u8; 8];
        reports.read_exact(&mut n).unwrap();
        total += u64::from_le_bytes(n);
    }
    for pid in children {
        // SAFETY: our own children.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }
    assert!(total > 1000, "the children recorded only {total} operations");
    assert_eq!(sample_value("ops_total", &[]), Some(total as f64));
    assert_eq!(sample_value("moved_bytes_total", &[]), Some(total as f64 * 0.5));
    let _ = std::fs::remove_dir_all(&dir);
}
