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
