//! Attacks "files and the directory are private and never reached through
//! a symlink" and "compaction keeps the directory small":
//!
//! - A shard directory that others can write (0777, or group-writable
//!   0770) lets anyone plant, swap or delete shards: it must be refused,
//!   with a clear log message, and the process records in memory.
//! - A planted `.compact.lock` that is a directory or a symlink must not
//!   switch every process to memory-only recording: recording still goes
//!   to the shard and compaction still happens.
//! - A planted `.archive.tmp` that is a symlink or a directory must not
//!   stop compaction for good, and nothing is written through the link.

mod harness;

use std::path::Path;
use std::time::Duration;

use harness::{TempDir, fork_child, isolated, own_text, value_in, wait_timeout};
use promshard::{Counter, metric};

/// Jobs done.
#[metric]
static HOSTILE_JOBS_TOTAL: Counter;

const SCENARIO: Duration = Duration::from_secs(60);

fn promshard_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".promshard"))
        .collect();
    names.sort();
    names
}

fn writable_by_others(mode: u32) {
    harness::capture_logs();
    let base = TempDir::new("hostile-mode");
    let dir = base.path().join("shards");
    std::fs::create_dir(&dir).unwrap();
    harness::set_mode(&dir, mode);
    promshard::multiprocess::init(&dir).unwrap();
    HOSTILE_JOBS_TOTAL.inc_by(2);
    assert_eq!(value_in(&own_text(), "hostile_jobs_total", &[]), Some(2.0), "recording works either way");
    let used = promshard::multiprocess::shard_dir();
    let warnings = harness::warnings();
    assert!(
        used.is_none() && promshard_files(&dir).is_empty(),
        "a shard directory with mode {mode:o} (writable by others, who could plant, swap or delete shards) \
         must be refused, recording in memory; it was used: shard_dir() = {used:?}, files {:?}",
        promshard_files(&dir)
    );
    assert!(
        warnings.iter().any(|w| w.contains(&dir.display().to_string())),
        "the refusal must be logged, naming the directory; logged: {warnings:?}"
    );
}

#[test]
fn world_writable_directory_is_refused() {
    isolated("world_writable_directory_is_refused", SCENARIO, || writable_by_others(0o777));
}

#[test]
fn group_writable_directory_is_refused() {
    isolated("group_writable_directory_is_refused", SCENARIO, || writable_by_others(0o770));
}

/// Records in the directory, lets a worker record and die, scrapes and
/// compacts: the worker's counts are in the archive and its shard is gone.
fn records_and_compacts(dir: &Path, what: &str) {
    promshard::multiprocess::init(dir).unwrap();
    HOSTILE_JOBS_TOTAL.inc_by(1);
    assert_eq!(
        promshard::multiprocess::shard_dir().as_deref(),
        Some(dir),
        "{what}: the process must still record into its shard (recover from the planted file), not fall back to \
         memory"
    );
    let worker = fork_child(|| {
        HOSTILE_JOBS_TOTAL.inc_by(10);
        0
    });
    assert!(wait_timeout(worker, Duration::from_secs(20)).is_some_and(|s| libc::WIFEXITED(s)));
    assert_eq!(value_in(&own_text(), "hostile_jobs_total", &[]), Some(11.0), "{what}: the first scrape");
    promshard::multiprocess::compact_dir(dir);
    assert_eq!(value_in(&own_text(), "hostile_jobs_total", &[]), Some(11.0), "{what}: after compaction");
    let files = promshard_files(dir);
    assert!(
        files.iter().any(|f| f == "archive.promshard") && files.len() == 2,
        "{what}: the dead worker must be compacted into archive.promshard (left: {files:?})"
    );
}

#[test]
fn planted_compact_lock_directory() {
    isolated("planted_compact_lock_directory", SCENARIO, || {
        let base = TempDir::new("hostile-lockdir");
        let dir = base.path().join("shards");
        std::fs::create_dir(&dir).unwrap();
        harness::set_mode(&dir, 0o700);
        std::fs::create_dir(dir.join(".compact.lock")).unwrap();
        records_and_compacts(&dir, "a directory planted as .compact.lock");
    });
}

#[test]
fn planted_compact_lock_symlink() {
    isolated("planted_compact_lock_symlink", SCENARIO, || {
        let base = TempDir::new("hostile-locklink");
        let dir = base.path().join("shards");
        std::fs::create_dir(&dir).unwrap();
        harness::set_mode(&dir, 0o700);
        let target = base.path().join("elsewhere");
        std::fs::write(&target, b"not yours").unwrap();
        std::os::unix::fs::symlink(&target, dir.join(".compact.lock")).unwrap();
        records_and_compacts(&dir, "a symlink planted as .compact.lock");
        assert_eq!(std::fs::read(&target).unwrap(), b"not yours", "nothing written through the symlink");
    });
}

#[test]
fn planted_archive_tmp_symlink() {
    isolated("planted_archive_tmp_symlink", SCENARIO, || {
        let base = TempDir::new("hostile-tmplink");
        let dir = base.path().join("shards");
        std::fs::create_dir(&dir).unwrap();
        harness::set_mode(&dir, 0o700);
        let target = base.path().join("elsewhere");
        std::fs::write(&target, b"not yours").unwrap();
        std::os::unix::fs::symlink(&target, dir.join(".archive.tmp")).unwrap();
        records_and_compacts(&dir, "a symlink planted as .archive.tmp");
        assert_eq!(std::fs::read(&target).unwrap(), b"not yours", "nothing written through the symlink");
    });
}

#[test]
fn planted_archive_tmp_directory() {
    isolated("planted_archive_tmp_directory", SCENARIO, || {
        let base = TempDir::new("hostile-tmpdir");
        let dir = base.path().join("shards");
        std::fs::create_dir(&dir).unwrap();
        harness::set_mode(&dir, 0o700);
        std::fs::create_dir(dir.join(".archive.tmp")).unwrap();
        std::fs::write(dir.join(".archive.tmp").join("keep"), b"x").unwrap();
        records_and_compacts(&dir, "a directory planted as .archive.tmp");
    });
}
