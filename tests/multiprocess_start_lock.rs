//! A process that stops while it starts its shard (SIGSTOP, a debugger, a
//! frozen cgroup) holds the directory's start lock for as long as it is
//! stopped. The processes that start after it must not hang in their
//! first `inc()`: they wait a bounded time, start without the lock, and
//! their counts are in the directory's scrape as any other's.

mod harness;

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use harness::{TempDir, Worker, encode_dir_text, fork_child, isolated, value_in};
use promshard::{Counter, metric};

/// Jobs done.
#[metric]
static STUCK_START_JOBS_TOTAL: Counter;

fn worker(command: &str) -> String {
    match command {
        "inc" => STUCK_START_JOBS_TOTAL.inc(),
        other => panic!("unknown command {other:?}"),
    }
    "ok".into()
}

fn a_stopped_starter_does_not_hang_the_others() {
    let dir = TempDir::new("stuck-start");
    // The stopped starter: takes the start lock, as a starting process
    // does, and stops itself there.
    let lock_path = dir.path().join(".promshard.lock");
    let starter = fork_child(move || {
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).unwrap();
        // SAFETY: a valid descriptor; the child then stops until killed.
        unsafe {
            assert_eq!(libc::flock(file.as_raw_fd(), libc::LOCK_EX), 0);
            libc::raise(libc::SIGSTOP);
        }
        0
    });
    let mut status = 0;
    // SAFETY: our child; WUNTRACED reports it once it has stopped.
    let stopped = unsafe { libc::waitpid(starter, &mut status, libc::WUNTRACED) };
    assert!(stopped == starter && libc::WIFSTOPPED(status), "the starter stopped with the lock held");

    promshard::multiprocess::init(dir.path()).unwrap();
    let began = Instant::now();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        STUCK_START_JOBS_TOTAL.inc();
        let _ = done.send(());
    });
    let waited = finished.recv_timeout(Duration::from_secs(40));
    assert!(waited.is_ok(), "the first inc() still hangs after 40 s behind a stopped starter");
    let took = began.elapsed();
    assert!(took < Duration::from_secs(30), "the first inc() took {took:?}");
    assert_eq!(promshard::multiprocess::shard_dir().as_deref(), Some(dir.path()), "recording in the directory");

    // A worker forked after it joins the run (its shard is made at fork,
    // without the start lock) and one started fresh waits its bound too.
    let mut child = Worker::spawn(worker);
    assert_eq!(child.ask("inc", Duration::from_secs(40)), "ok");
    assert_eq!(child.ask("inc", Duration::from_secs(40)), "ok");
    let text = encode_dir_text(dir.path());
    assert_eq!(value_in(&text, "stuck_start_jobs_total", &[]), Some(3.0), "{text}");
    assert_eq!(child.exit(Duration::from_secs(20)), Some(0));
    let text = encode_dir_text(dir.path());
    assert_eq!(value_in(&text, "stuck_start_jobs_total", &[]), Some(3.0), "a dead worker's counts stay: {text}");

    // SAFETY: our stopped child.
    unsafe {
        libc::kill(starter, libc::SIGKILL);
        libc::waitpid(starter, std::ptr::null_mut(), 0);
    }
}

#[test]
fn a_stopped_starter_does_not_hang_the_processes_that_start_after_it() {
    isolated(
        "a_stopped_starter_does_not_hang_the_processes_that_start_after_it",
        Duration::from_secs(120),
        a_stopped_starter_does_not_hang_the_others,
    );
}
