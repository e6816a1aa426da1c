//! Attacks "bad files never fail a scrape, and churn costs nothing" for
//! the files a process leaves when it is killed while creating its shard:
//! a 0-byte `p<pid>-<nonce>.promshard` (killed after `open`) and a
//! zero-filled one of full size (killed after `ftruncate`, before the
//! header was written). Expected: such files are recognised and removed,
//! `promshard_shard_errors_total` does not grow on every scrape for the
//! same file, and a *live* process's file that is still being created
//! (locked, header not written yet) is never touched.

mod harness;

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use harness::{TempDir, Worker, isolated, own_text, shard_errors, value_in};
use promshard::{Counter, metric};

/// Jobs done.
#[metric]
static HALF_JOBS_TOTAL: Counter;

const ASK: Duration = Duration::from_secs(20);

/// A process in the middle of creating its shard: `create NAME SIZE`
/// creates the file, sizes it (zeros), takes the liveness lock (as the
/// runtime does) and stops there, holding it.
fn creator(command: &str) -> String {
    let mut words = command.split_whitespace();
    assert_eq!(words.next(), Some("create"));
    let path = words.next().unwrap();
    let size: u64 = words.next().unwrap().parse().unwrap();
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(path).unwrap();
    file.set_len(size).unwrap();
    // SAFETY: a zeroed flock is valid; a whole-file write lock.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as i16;
    lock.l_whence = libc::SEEK_SET as i16;
    // SAFETY: a valid descriptor and flock struct.
    assert_eq!(unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &lock) }, 0);
    std::mem::forget(file); // held until the process ends
    "ok".into()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

fn half_created_files() {
    let base = TempDir::new("half");
    let dir = base.path().join("shards");
    promshard::multiprocess::init(&dir).unwrap();
    HALF_JOBS_TOTAL.inc_by(3);
    let own = own_text();
    let size = std::fs::metadata(dir.join(names(&dir).iter().find(|n| n.starts_with('p')).unwrap())).unwrap().len();

    // Left by processes killed while creating their shards: nobody holds them.
    let empty = "p3999991-00000000deadbeef.promshard";
    let zeroed = "p3999992-00000000feedface.promshard";
    std::fs::write(dir.join(empty), b"").unwrap();
    std::fs::write(dir.join(zeroed), vec![0u8; size as usize]).unwrap();
    // Being created right now by live processes: locked, not written yet.
    let mut live_empty = Worker::spawn(creator);
    let mut live_zeroed = Worker::spawn(creator);
    let live_empty_name = format!("p{}-0000000000000001.promshard", live_empty.pid);
    let live_zeroed_name = format!("p{}-0000000000000002.promshard", live_zeroed.pid);
    assert_eq!(live_empty.ask(&format!("create {} 0", dir.join(&live_empty_name).display()), ASK), "ok");
    assert_eq!(live_zeroed.ask(&format!("create {} {size}", dir.join(&live_zeroed_name).display()), ASK), "ok");

    let before = shard_errors(&own);
    let mut errors = Vec::new();
    for _ in 0..6 {
        let text = own_text();
        assert_eq!(value_in(&text, "half_jobs_total", &[]), Some(3.0), "our counts are kept:\n{text}");
        errors.push(shard_errors(&text) - before);
    }
    promshard::multiprocess::compact_dir(&dir);
    let after_compaction = shard_errors(&own_text()) - before;
    let left = names(&dir);

    let mut wrong = Vec::new();
    if errors[5] > errors[1] || after_compaction > errors[1] {
        wrong.push(format!(
            "promshard_shard_errors_total grows on every scrape for the same half-created files (increase after \
             each of 6 scrapes: {errors:?}, after compact_dir: {after_compaction})"
        ));
    }
    for dead in [empty, zeroed] {
        if left.iter().any(|n| n == dead) {
            wrong.push(format!(
                "{dead} (half-created by a dead process) is still there after 6 scrapes and compact_dir"
            ));
        }
    }
    for live in [&live_empty_name, &live_zeroed_name] {
        if !left.iter().any(|n| n == live) {
            wrong.push(format!("{live}, being created by a LIVE process (it holds the lock), was removed"));
        }
    }
    assert_eq!(
        std::fs::metadata(dir.join(&live_zeroed_name)).map(|m| m.len()).ok(),
        left.contains(&live_zeroed_name).then_some(size),
        "a live process's file must not be truncated"
    );
    assert!(wrong.is_empty(), "half-created shard files:\n- {}\n(directory: {left:?})", wrong.join("\n- "));
}

#[test]
fn files_half_created_by_killed_processes() {
    isolated("files_half_created_by_killed_processes", Duration::from_secs(60), half_created_files);
}

// ---------------------------------------------------------------------
// Temporaries of creators killed midway
// ---------------------------------------------------------------------

/// Sets `path`'s modification time `seconds` in the past.
fn age(path: &Path, seconds: i64) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    let then = libc::timespec { tv_sec: now.tv_sec - seconds, tv_nsec: now.tv_nsec };
    let times = [then, then];
    // SAFETY: a valid path and two timespecs.
    let done = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
    assert_eq!(done, 0, "utimensat {}: {}", path.display(), std::io::Error::last_os_error());
}

/// The temporary name a creator with `pid` uses.
fn temp_name(pid: libc::pid_t, nonce: u64) -> String {
    format!(".p{pid}-{nonce:016x}.promshard.tmp")
}

/// A child that creates its temporary (some header bytes, no lock: killed
/// before it locked) and dies; the file's name.
fn dead_unlocked_temp(dir: &Path, nonce: u64) -> String {
    let dir = dir.to_owned();
    let pid = harness::fork_child(move || {
        let name = temp_name(std::process::id() as libc::pid_t, nonce);
        std::fs::write(dir.join(name), b"PSHARD\0\0half a header").map_or(1, |()| 0)
    });
    let status = harness::wait_timeout(pid, ASK).expect("the creator ends");
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "the creator made its file");
    temp_name(pid, nonce)
}

/// A creator that created, sized and locked its temporary, then was
/// SIGKILLed (its lock went with it); the file's name.
fn killed_locked_temp(dir: &Path, nonce: u64, size: u64) -> String {
    let mut worker = Worker::spawn(creator);
    let name = temp_name(worker.pid, nonce);
    assert_eq!(worker.ask(&format!("create {} {size}", dir.join(&name).display()), ASK), "ok");
    worker.kill();
    name
}

/// A creator in the middle of creating its temporary: alive, holding its
/// lock. The caller keeps the worker alive.
fn live_locked_temp(dir: &Path, nonce: u64, size: u64) -> (Worker, String) {
    let mut worker = Worker::spawn(creator);
    let name = temp_name(worker.pid, nonce);
    assert_eq!(worker.ask(&format!("create {} {size}", dir.join(&name).display()), ASK), "ok");
    (worker, name)
}

fn expect(dir: &Path, when: &str, gone: &[&String], kept: &[&String]) {
    let left = names(dir);
    let mut wrong = Vec::new();
    for name in gone {
        if left.contains(name) {
            wrong.push(format!("{name} must be removed"));
        }
    }
    for name in kept {
        if !left.contains(name) {
            wrong.push(format!("{name} must be kept"));
        }
    }
    assert!(wrong.is_empty(), "{when}:\n- {}\n(directory: {left:?})", wrong.join("\n- "));
}

/// `compact_dir` removes a temporary whose creator died (with or without
/// its lock) once it is 2 s old; it keeps one a live creator holds, however
/// old, and a dead creator's younger than 2 s, until it is old enough.
#[test]
fn abandoned_temporaries_are_removed_by_compaction() {
    isolated("abandoned_temporaries_are_removed_by_compaction", Duration::from_secs(60), || {
        let base = TempDir::new("temps-compact");
        let dir = base.path().join("shards");
        promshard::multiprocess::init(&dir).unwrap();
        HALF_JOBS_TOTAL.inc_by(3);
        let unlocked = dead_unlocked_temp(&dir, 1);
        let killed = killed_locked_temp(&dir, 2, 65536);
        let young = dead_unlocked_temp(&dir, 3);
        let (mut live, held) = live_locked_temp(&dir, 4, 65536);
        for name in [&unlocked, &killed, &held] {
            age(&dir.join(name), 10);
        }
        // Just under the limit: a creator may be between create and lock.
        age(&dir.join(&young), 1);
        promshard::multiprocess::compact_dir(&dir);
        expect(&dir, "after compact_dir", &[&unlocked, &killed], &[&young, &held]);
        assert_eq!(value_in(&own_text(), "half_jobs_total", &[]), Some(3.0));

        age(&dir.join(&young), 3);
        promshard::multiprocess::compact_dir(&dir);
        expect(&dir, "after compact_dir, the young one now 3 s old", &[&young], &[&held]);
        // Its creator dies: the lock is free, the file is old.
        live.kill();
        promshard::multiprocess::compact_dir(&dir);
        expect(&dir, "after compact_dir, its live creator now dead", &[&held], &[]);
        assert_eq!(value_in(&own_text(), "half_jobs_total", &[]), Some(3.0));
        // Left: our shard, and the archive of the creators' own shards
        // (forked after our first recording, each had one).
        let left = names(&dir);
        let others: Vec<&String> = left
            .iter()
            .filter(|n| !n.starts_with(&format!("p{}-", std::process::id())) && *n != "archive.promshard")
            .filter(|n| n.ends_with(".promshard") || n.ends_with(".tmp"))
            .collect();
        assert!(others.is_empty(), "nothing but our shard and the archive is left: {left:?}");
    });
}

/// A scrape that meets abandoned temporaries compacts, and so removes the
/// old dead ones, without touching a live creator's.
#[test]
fn a_scrape_removes_abandoned_temporaries() {
    isolated("a_scrape_removes_abandoned_temporaries", Duration::from_secs(60), || {
        let base = TempDir::new("temps-scrape");
        let dir = base.path().join("shards");
        promshard::multiprocess::init(&dir).unwrap();
        HALF_JOBS_TOTAL.inc();
        let before = shard_errors(&own_text());
        let unlocked = dead_unlocked_temp(&dir, 5);
        let killed = killed_locked_temp(&dir, 6, 4096);
        let (_live, held) = live_locked_temp(&dir, 7, 4096);
        for name in [&unlocked, &killed, &held] {
            age(&dir.join(name), 10);
        }
        for scrape in 0..3 {
            let text = own_text();
            assert_eq!(value_in(&text, "half_jobs_total", &[]), Some(1.0), "scrape {scrape}");
            assert_eq!(shard_errors(&text), before, "scrape {scrape}: a temporary is not a bad shard");
        }
        expect(&dir, "after 3 scrapes (no compact_dir)", &[&unlocked, &killed], &[&held]);
    });
}

/// The first process of a new run removes the old temporaries of dead
/// creators when it starts, and leaves a live creator's and a young one.
#[test]
fn a_new_run_removes_abandoned_temporaries() {
    isolated("a_new_run_removes_abandoned_temporaries", Duration::from_secs(60), || {
        let base = TempDir::new("temps-run");
        let dir = base.path().join("shards");
        std::fs::create_dir(&dir).unwrap();
        harness::set_mode(&dir, 0o700);
        let unlocked = dead_unlocked_temp(&dir, 8);
        let killed = killed_locked_temp(&dir, 9, 4096);
        let young = dead_unlocked_temp(&dir, 10);
        let (_live, held) = live_locked_temp(&dir, 11, 4096);
        for name in [&unlocked, &killed, &held] {
            age(&dir.join(name), 10);
        }
        promshard::multiprocess::init(&dir).unwrap();
        HALF_JOBS_TOTAL.inc(); // the first recording starts the run
        expect(&dir, "after the new run's first recording", &[&unlocked, &killed], &[&young, &held]);
        assert_eq!(value_in(&own_text(), "half_jobs_total", &[]), Some(1.0));
    });
}
