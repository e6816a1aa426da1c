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

// ---------------------------------------------------------------------
// A scraper, and a new process, out of descriptors
// ---------------------------------------------------------------------

/// Recorded only by the process [`new_process_out_of_descriptors_helper`]
/// starts.
#[metric]
static FD_STARTER_TOTAL: Counter;

const STARVED_WORKERS: usize = 50;
/// Of them, the first ones exit while the scraper is starved.
const DYING: usize = 10;
const SPARE_ENV: &str = "PROMSHARD_TEST_SPARE_FDS";

/// The `RLIMIT_NOFILE` under which exactly `spare` more descriptors can
/// be opened: the kernel gives the lowest free number, and refuses one at
/// or past the limit, so the limit is the `spare`-th free number (open
/// descriptors need not be numbered contiguously).
fn limit_leaving(spare: u64) -> u64 {
    // The listing's own descriptor takes the lowest free number, as this
    // probe does; it is closed again, so it counts as free.
    let probe = std::fs::File::open("/dev/null").unwrap().as_raw_fd() as u64;
    let mut open: std::collections::BTreeSet<u64> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .map(|e| e.unwrap().file_name().to_string_lossy().parse().unwrap())
        .collect();
    open.remove(&probe);
    (0..).filter(|n| !open.contains(n)).nth(spare as usize).unwrap()
}

/// `promshard_shard_errors_total{reason="descriptors"}` in `text`.
fn descriptor_errors(text: &str) -> f64 {
    value_in(text, "promshard_shard_errors_total", &[("reason", "descriptors")]).unwrap_or(0.0)
}

/// The scraper, with 50 live workers it has never read, scrapes with its
/// limit leaving it 0 to 5 descriptors to open: every scrape either has the
/// exact totals or counts `reason="descriptors"`; it never shows more
/// than the truth; 10 workers die meanwhile and the scrapes keep trying to
/// compact them. Then, with the limit back: the exact totals, every live
/// worker's shard still there. Then new processes starting out of
/// descriptors (their limit leaving them 0 to 6) must not
/// clear the live run's files.
fn starved_scenario() {
    let base = TempDir::new("fdstarved");
    let dir = base.path().join("shards");
    promshard::multiprocess::init(&dir).unwrap();
    FD_JOBS_TOTAL.inc();
    FD_LIVE.inc();

    let (dying_r, dying_w) = harness::pipe();
    let (staying_r, staying_w) = harness::pipe();
    let (mut ready_r, ready_w) = harness::pipe();
    let fds = [dying_r.as_raw_fd(), dying_w.as_raw_fd(), staying_r.as_raw_fd(), staying_w.as_raw_fd()];
    let ready_fd = ready_w.as_raw_fd();
    let mut pids = Vec::new();
    for i in 0..STARVED_WORKERS {
        let release = if i < DYING { fds[0] } else { fds[2] };
        pids.push(fork_child(move || {
            // SAFETY: raw calls on inherited descriptors; both release
            // pipes' write ends are closed so that their EOF can come.
            unsafe {
                libc::close(fds[1]);
                libc::close(fds[3]);
                FD_JOBS_TOTAL.inc_by(i as u64 + 2);
                FD_LIVE.inc();
                libc::write(ready_fd, b"r".as_ptr().cast(), 1);
                let mut byte = 0u8;
                while libc::read(release, (&mut byte as *mut u8).cast(), 1) > 0 {}
            }
            0
        }));
    }
    drop(ready_w);
    let mut ready = 0;
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready < STARVED_WORKERS && Instant::now() < deadline {
        match ready_r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => ready += n,
        }
    }
    assert_eq!(ready, STARVED_WORKERS, "every worker started");
    let want_jobs = 1.0 + (0..STARVED_WORKERS).map(|i| i as f64 + 2.0).sum::<f64>();
    let before = harness::shard_files(&dir);
    assert_eq!(before.len(), STARVED_WORKERS + 1);

    let (soft, hard) = harness::get_rlimit(libc::RLIMIT_NOFILE);
    let mut problems = Vec::new();
    // The limit is lowered around each scrape only (the test needs
    // descriptors to look), and no scrape runs with plenty in between:
    // that would fill the scraper's cache of open shards again.
    let mut last_said = 0.0;
    let mut starved = |spare: u64, live_want: f64, phase: &str, problems: &mut Vec<String>| {
        for scrape in 0..3 {
            harness::set_rlimit(libc::RLIMIT_NOFILE, limit_leaving(spare), hard);
            let text = own_text();
            harness::set_rlimit(libc::RLIMIT_NOFILE, soft, hard);
            let jobs = value_in(&text, "fd_jobs_total", &[]).unwrap_or(0.0);
            let live = value_in(&text, "fd_live", &[]).unwrap_or(0.0);
            let said = descriptor_errors(&text);
            problems.push(format!(
                "{phase}, limit leaving {spare}, scrape {scrape}: fd_jobs_total {jobs}, fd_live {live}, \
                 reason=\"descriptors\" {said}"
            ));
            let complete = jobs == want_jobs && live == live_want;
            if jobs > want_jobs || live > live_want {
                problems.push(format!("  ^ more than the truth (want jobs {want_jobs}, live {live_want})"));
            }
            if !complete && said <= last_said {
                problems.push("  ^ incomplete, and this scrape counted no reason=\"descriptors\"".to_owned());
            }
            last_said = said;
        }
    };
    for spare in [2, 3, 5, 0, 1, 2] {
        starved(spare, (STARVED_WORKERS + 1) as f64, "all alive", &mut problems);
        assert_eq!(
            harness::shard_files(&dir),
            before,
            "limit leaving {spare}: no shard removed while every worker lives"
        );
    }
    // Ten workers exit while the scraper is starved: its scrapes meet dead
    // shards and try to compact them with no descriptors to spare.
    drop(dying_w);
    drop(dying_r);
    for pid in &pids[..DYING] {
        assert!(wait_timeout(*pid, Duration::from_secs(20)).is_some(), "dying worker {pid} did not exit");
    }
    let live_after = (STARVED_WORKERS - DYING + 1) as f64;
    for spare in [2, 0, 3, 4, 1, 6, 8] {
        starved(spare, live_after, "10 dead", &mut problems);
    }
    // Plenty of descriptors again: the very next scrape is exact.
    let text = own_text();
    let jobs = value_in(&text, "fd_jobs_total", &[]);
    let live = value_in(&text, "fd_live", &[]);
    let names = harness::shard_files(&dir);
    let missing: Vec<libc::pid_t> =
        pids[DYING..].iter().copied().filter(|pid| !names.iter().any(|n| n.starts_with(&format!("p{pid}-")))).collect();
    // (Checked last, so that the new processes below are tried either way.)

    // New processes start a run while out of descriptors.
    for spare in 0..=6 {
        let setup = harness::Setup {
            env: vec![
                (promshard::multiprocess::DIR_ENV.to_owned(), dir.clone().into_os_string()),
                (SPARE_ENV.to_owned(), spare.to_string().into()),
            ],
            cwd: None,
        };
        let out = harness::spawn_and_wait("new_process_out_of_descriptors_helper", Duration::from_secs(30), setup)
            .unwrap_or_else(|e| panic!("the new process (leaving it {spare} descriptors): {e}"));
        assert!(out.status.success(), "the new process (leaving it {spare} descriptors) failed:\n{}", out.stderr);
        let said = out.stdout.lines().find(|l| l.contains("joined") || l.contains("fell back")).unwrap_or("?");
        eprintln!("the new process leaving {spare} descriptors: {said}");
        let names = harness::shard_files(&dir);
        let missing: Vec<libc::pid_t> = pids[DYING..]
            .iter()
            .copied()
            .filter(|pid| !names.iter().any(|n| n.starts_with(&format!("p{pid}-"))))
            .collect();
        let text = own_text();
        assert!(
            missing.is_empty() && value_in(&text, "fd_jobs_total", &[]) == Some(want_jobs),
            "a new process starting with its descriptor limit leaving {spare} ({}) cleared the live run: live \
             workers' shards gone: {missing:?}, fd_jobs_total {:?} (want {want_jobs})\n{}",
            said,
            value_in(&text, "fd_jobs_total", &[]),
            out.stderr
        );
        assert_eq!(value_in(&text, "fd_live", &[]), Some(live_after), "leaving {spare}: live processes");
    }

    drop(staying_w);
    drop(staying_r);
    for pid in &pids[DYING..] {
        assert!(wait_timeout(*pid, Duration::from_secs(20)).is_some(), "worker {pid} did not exit");
    }
    let bad: Vec<&String> = problems.iter().filter(|l| l.starts_with("  ^")).collect();
    assert!(
        jobs == Some(want_jobs) && live == Some(live_after) && missing.is_empty() && bad.is_empty(),
        "a scraper out of descriptors with {STARVED_WORKERS} live workers ({DYING} of which die meanwhile):\n\
         with the limit back: fd_jobs_total {jobs:?} (want {want_jobs}), fd_live {live:?} (want {live_after}), \
         live workers whose shard is gone: {missing:?}\nstarved scrapes:\n{}",
        problems.join("\n")
    );
}

#[test]
fn scraper_out_of_descriptors_never_takes_live_workers_for_dead() {
    isolated(
        "scraper_out_of_descriptors_never_takes_live_workers_for_dead",
        Duration::from_secs(120),
        starved_scenario,
    );
}

/// Not a test of its own: the new process of
/// [`scraper_out_of_descriptors_never_takes_live_workers_for_dead`],
/// started with `PROMSHARD_DIR` naming a live run; it lowers its limit so
/// that it can open `PROMSHARD_TEST_SPARE_FDS` more descriptors, then
/// records.
#[test]
fn new_process_out_of_descriptors_helper() {
    if !harness::is_child("new_process_out_of_descriptors_helper") {
        return;
    }
    let spare: u64 = std::env::var(SPARE_ENV).unwrap().parse().unwrap();
    let (_, hard) = harness::get_rlimit(libc::RLIMIT_NOFILE);
    harness::set_rlimit(libc::RLIMIT_NOFILE, limit_leaving(spare), hard);
    FD_STARTER_TOTAL.inc(); // the first recording: starts or joins the run
    let mode = if promshard::multiprocess::shard_dir().is_some() { "joined the run" } else { "fell back to memory" };
    println!("{mode}");
}
