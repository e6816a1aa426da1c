//! Real `fork()`: a parent records, forks children that record known
//! amounts, some exit, one is SIGKILLed; every scrape after that equals the
//! exact sums, before and after the dead shards are compacted.

use std::io::Read;
use std::os::fd::FromRawFd;

use promshard::testing::sample_value;
use promshard::{Counter, Gauge, Histogram, metric};

/// Jobs done.
#[metric]
static JOBS_TOTAL: Counter;

/// Jobs by queue.
#[metric(labels(queue = ["fast", "slow"]))]
static QUEUED_TOTAL: Counter;

/// Workers alive.
#[metric(mode = livesum)]
static WORKERS_ALIVE: Gauge;

/// Each process's last batch size.
#[metric(mode = all)]
static BATCH_SIZE: Gauge;

/// The largest batch any process saw.
#[metric(mode = max)]
static BATCH_MAX: Gauge;

/// Job durations.
#[metric(unit = "seconds", buckets = [0.1, 1.0])]
static JOB_SECONDS: Histogram;

/// Routes.
#[metric(labels(route = bounded(8)))]
static ROUTE_HITS_TOTAL: Counter;

fn fork() -> libc::pid_t {
    // SAFETY: the child only records metrics, writes to a pipe and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    pid
}

#[test]
fn forked_children_count_exactly_once() {
    let dir = std::env::temp_dir().join(format!("promshard-fork-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    promshard::multiprocess::init(&dir).unwrap();

    JOBS_TOTAL.inc_by(10);
    WORKERS_ALIVE.inc();
    BATCH_SIZE.set(5.0);
    JOB_SECONDS.observe(0.05);
    ROUTE_HITS_TOTAL.with(("/parent",)).inc();
    // A handle cached before the fork must count into the child's shard.
    let fast = QUEUED_TOTAL.with(("fast",));
    fast.inc();

    let mut fds = [0; 2];
    // SAFETY: a valid array for the two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let mut children = Vec::new();
    for i in 0..4u64 {
        let pid = fork();
        if pid == 0 {
            JOBS_TOTAL.inc_by(100 * (i + 1));
            fast.inc();
            QUEUED_TOTAL.with(("slow",)).inc_by(i);
            WORKERS_ALIVE.inc();
            BATCH_SIZE.set(i as f64);
            BATCH_MAX.set(10.0 + i as f64);
            JOB_SECONDS.observe(0.5);
            ROUTE_HITS_TOTAL.with((["/a", "/b"][i as usize % 2],)).inc();
            // SAFETY: write one byte to the pipe, then leave without
            // running the parent's atexit handlers or the test harness.
            unsafe {
                libc::write(fds[1], b"x".as_ptr().cast(), 1);
                if i == 3 {
                    loop {
                        libc::pause();
                    }
                }
                libc::_exit(0);
            }
        }
        children.push(pid);
    }
    // SAFETY: the read end, owned from here on.
    let mut ready = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let mut bytes = [0u8; 4];
    ready.read_exact(&mut bytes).unwrap();
    for &pid in &children[..3] {
        // SAFETY: waiting for our own children.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }
    // SAFETY: our own child.
    unsafe {
        libc::kill(children[3], libc::SIGKILL);
        libc::waitpid(children[3], std::ptr::null_mut(), 0);
    }

    // Twice: the first scrape compacts the four dead shards into the
    // archive, the second reads the archive.
    for scrape in 0..2 {
        let value = |name: &str, labels: &[(&str, &str)]| sample_value(name, labels);
        assert_eq!(value("jobs_total", &[]), Some(1010.0), "scrape {scrape}");
        assert_eq!(value("queued_total", &[("queue", "fast")]), Some(5.0), "scrape {scrape}");
        assert_eq!(value("queued_total", &[("queue", "slow")]), Some(6.0), "scrape {scrape}");
        assert_eq!(value("workers_alive", &[]), Some(1.0), "dead children leave a livesum gauge, scrape {scrape}");
        assert_eq!(value("batch_max", &[]), Some(13.0), "scrape {scrape}");
        assert_eq!(value("job_seconds_count", &[]), Some(5.0), "scrape {scrape}");
        assert_eq!(value("job_seconds_bucket", &[("le", "0.1")]), Some(1.0), "scrape {scrape}");
        assert_eq!(value("route_hits_total", &[("route", "/parent")]), Some(1.0), "scrape {scrape}");
        assert_eq!(value("route_hits_total", &[("route", "/a")]), Some(2.0), "scrape {scrape}");
        assert_eq!(value("route_hits_total", &[("route", "/b")]), Some(2.0), "scrape {scrape}");
        let parent = std::process::id().to_string();
        assert_eq!(value("batch_size", &[("pid", &parent)]), Some(5.0), "scrape {scrape}");
        for (i, pid) in children.iter().enumerate() {
            let pid = pid.to_string();
            assert_eq!(value("batch_size", &[("pid", &pid)]), Some(i as f64), "`all` keeps dead pids, scrape {scrape}");
        }
    }

    let shards = promshard::multiprocess::inspect(&dir).unwrap();
    let live: Vec<_> = shards.iter().filter(|s| s.live).collect();
    assert_eq!(live.len(), 1, "{shards:?}");
    assert_eq!(live[0].pid, Some(std::process::id()));
    assert!(shards.iter().any(|s| s.archive), "{shards:?}");
    assert_eq!(shards.len(), 2, "dead shards were folded into the archive: {shards:?}");
    assert!(shards.iter().all(|s| s.problem.is_none()), "{shards:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
