//! Attacks "any process's scrape returns the merge of all shards" under a
//! file descriptor limit: a scraper with `RLIMIT_NOFILE` at 128 and 300
//! live workers must count every live process, or say loudly which it
//! could not read. Today it opens (and keeps open) one descriptor per
//! shard, runs out, and exposes the rest as if they did not exist.
//!
//! What counts as "loud" is an assumption of this test, to adjust with
//! the fix: a `promshard_*` sample other than the generic
//! `promshard_shard_errors_total` whose value is the number of shards
//! that were not read, e.g. `promshard_shards_unread{reason="fd_limit"}`
//! (see [`unread_reported`]); the exact totals are preferred.
//!
//! Workers are tiny: fork, record, report ready on a shared pipe, block
//! on a shared pipe read, exit when it closes.

mod harness;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use harness::{TempDir, fork_child, isolated, own_text, parse_samples, value_in, wait_timeout};
use promshard::{Counter, Gauge, metric};

/// Jobs done.
#[metric]
static FD_JOBS_TOTAL: Counter;

/// Live processes.
#[metric(mode = livesum)]
static FD_LIVE: Gauge;

const WORKERS: usize = 300;

/// A `promshard_*` self-metric (not the generic error counter) that says
/// how many shards were not read: the sum of such samples.
fn unread_reported(text: &str) -> f64 {
    parse_samples(text)
        .iter()
        .filter(|s| s.name.starts_with("promshard_") && s.name != "promshard_shard_errors_total")
        .filter(|s| {
            let n = s.name.to_ascii_lowercase();
            n.contains("unread") || n.contains("skipped") || n.contains("not_read") || n.contains("fd")
        })
        .map(|s| s.value)
        .sum::<f64>()
        + 0.0
}

fn scenario() {
    let base = TempDir::new("fdlimit");
    let dir = base.path().join("shards");
    promshard::multiprocess::init(&dir).unwrap();
    FD_JOBS_TOTAL.inc();
    FD_LIVE.inc();

    let (release_r, release_w) = harness::pipe();
    let (mut ready_r, ready_w) = harness::pipe();
    let (release_r_fd, release_w_fd, ready_w_fd) = (release_r.as_raw_fd(), release_w.as_raw_fd(), ready_w.as_raw_fd());
    let mut pids = Vec::with_capacity(WORKERS);
    for _ in 0..WORKERS {
        pids.push(fork_child(|| {
            // SAFETY: raw calls on inherited descriptors; the write end of
            // the release pipe is closed so that its EOF can come.
            unsafe {
                libc::close(release_w_fd);
                FD_JOBS_TOTAL.inc();
                FD_LIVE.inc();
                libc::write(ready_w_fd, b"r".as_ptr().cast(), 1);
                let mut byte = 0u8;
                while libc::read(release_r_fd, (&mut byte as *mut u8).cast(), 1) > 0 {}
            }
            0
        }));
    }
    drop(ready_w);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ready = 0;
    let mut buf = [0u8; 64];
    while ready < WORKERS && Instant::now() < deadline {
        match ready_r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => ready += n,
            Err(_) => break,
        }
    }
    assert_eq!(ready, WORKERS, "every worker started");

    let (_, hard) = harness::get_rlimit(libc::RLIMIT_NOFILE);
    harness::set_rlimit(libc::RLIMIT_NOFILE, 128, hard);
    let text = own_text();
    let jobs = value_in(&text, "fd_jobs_total", &[]).unwrap_or(0.0);
    let live = value_in(&text, "fd_live", &[]).unwrap_or(0.0);
    let reported = unread_reported(&text);
    let errors = harness::shard_errors(&text);

    drop(release_w);
    drop(release_r);
    for pid in pids {
        assert!(wait_timeout(pid, Duration::from_secs(20)).is_some(), "worker {pid} did not exit");
    }
    let want = (WORKERS + 1) as f64;
    let complete = jobs == want && live == want;
    let missing = want - live;
    assert!(
        complete || (reported == missing && missing > 0.0),
        "with RLIMIT_NOFILE at 128 and {WORKERS} live workers, the scrape counts {live} of {want} live processes \
         (fd_jobs_total {jobs}, want {want}) and no promshard_* self-metric says which shards were not read \
         (unread reported: {reported}; the generic promshard_shard_errors_total says {errors})"
    );
}

#[test]
fn scraper_with_a_low_descriptor_limit_and_300_workers() {
    isolated("scraper_with_a_low_descriptor_limit_and_300_workers", Duration::from_secs(120), scenario);
}
