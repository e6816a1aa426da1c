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
//!   stop compaction for good, and nothing is written through the link;
//!   nor through a `.promshard.spare` planted as a symlink.

mod harness;

use std::path::Path;
use std::time::Duration;

use harness::{TempDir, fork_child, isolated, own_text, value_in, wait_timeout};
use promshard::{Counter, metric};

/// Jobs done.
#[metric]
static HOSTILE_JOBS_TOTAL: Counter;

const SCENARIO: Duration = Duration::from_secs(60);

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
        used.is_none() && harness::shard_files(&dir).is_empty(),
        "a shard directory with mode {mode:o} (writable by others, who could plant, swap or delete shards) \
         must be refused, recording in memory; it was used: shard_dir() = {used:?}, files {:?}",
        harness::shard_files(&dir)
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
    let files = harness::shard_files(dir);
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

/// The spare kept for a full disk (`.promshard.spare`) planted as a
/// symlink: recording and compaction go on, and the spare is never grown
/// or shrunk through the link (its target keeps its size and bytes).
#[test]
fn planted_spare_symlink() {
    isolated("planted_spare_symlink", SCENARIO, || {
        let base = TempDir::new("hostile-sparelink");
        let dir = base.path().join("shards");
        std::fs::create_dir(&dir).unwrap();
        harness::set_mode(&dir, 0o700);
        let target = base.path().join("elsewhere");
        std::fs::write(&target, b"not yours").unwrap();
        std::os::unix::fs::symlink(&target, dir.join(".promshard.spare")).unwrap();
        records_and_compacts(&dir, "a symlink planted as .promshard.spare");
        assert_eq!(std::fs::read(&target).unwrap(), b"not yours", "nothing written through the symlink");
        let link = std::fs::symlink_metadata(dir.join(".promshard.spare")).unwrap();
        assert!(link.file_type().is_symlink(), "the planted link is left as it is");
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
        assert!(
            std::fs::symlink_metadata(dir.join(".archive.tmp")).is_err(),
            "the planted .archive.tmp must be removed by the compaction"
        );
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
        assert!(
            std::fs::symlink_metadata(dir.join(".archive.tmp")).is_err(),
            "the planted .archive.tmp must be removed by the compaction"
        );
    });
}

// ---------------------------------------------------------------------
// Planted lock files and temporary archives
// ---------------------------------------------------------------------

/// What is planted under a lock file's name.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Plant {
    Directory,
    Symlink,
    Fifo,
    /// A regular file of another user (uid 65534); needs root.
    OtherUsersFile,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Plants `what` at `path`; `elsewhere` is a file outside the directory a
/// symlink points to.
fn plant(path: &Path, what: Plant, elsewhere: &Path) {
    use std::os::unix::ffi::OsStrExt;
    match what {
        Plant::Directory => {
            std::fs::create_dir(path).unwrap();
            std::fs::write(path.join("keep"), b"x").unwrap();
        }
        Plant::Symlink => std::os::unix::fs::symlink(elsewhere, path).unwrap(),
        Plant::Fifo => {
            let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
            // SAFETY: a valid path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        }
        Plant::OtherUsersFile => {
            std::fs::write(path, b"someone else's").unwrap();
            std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
        }
    }
}

/// Whether the entry at `path` (not followed) is what was planted.
fn is_planted(path: &Path, what: Plant) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(meta) = std::fs::symlink_metadata(path) else { return false };
    match what {
        Plant::Directory => meta.is_dir() && path.join("keep").exists(),
        Plant::Symlink => meta.file_type().is_symlink(),
        Plant::Fifo => meta.file_type().is_fifo(),
        Plant::OtherUsersFile => meta.is_file() && meta.uid() == 65534,
    }
}

/// `name` is now a regular 0600 file of ours, and what was planted there
/// was moved, whole, to `<name>.planted-<nanos>`.
fn moved_aside(dir: &Path, name: &str, what: Plant, when: &str) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let all: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let prefix = format!("{name}.planted-");
    let aside: Vec<&String> = all
        .iter()
        .filter(|n| n.strip_prefix(&prefix).is_some_and(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())))
        .collect();
    assert!(
        aside.len() == 1 && is_planted(&dir.join(aside[0]), what),
        "{when}: the {what:?} planted as {name} must be moved, as it is, to {prefix}<nanos> (directory: {all:?})"
    );
    let meta = std::fs::symlink_metadata(dir.join(name)).unwrap();
    // SAFETY: geteuid has no preconditions.
    let ours = meta.uid() == unsafe { libc::geteuid() };
    assert!(
        meta.is_file() && ours && meta.permissions().mode() & 0o777 == 0o600,
        "{when}: {name} must now be a regular 0600 file of ours (is a file: {}, uid {}, mode {:o})",
        meta.is_file(),
        meta.uid(),
        meta.permissions().mode() & 0o7777
    );
}

/// Plants `what` as lock file `name` before the first recording; the
/// process must still record into its shard and compact, with the planted
/// thing moved aside and nothing written through it.
fn planted_before_start(name: &str, what: Plant) {
    if what == Plant::OtherUsersFile && !is_root() {
        eprintln!("SKIPPED: making a file of another user needs root");
        return;
    }
    let base = TempDir::new("hostile-plant");
    let dir = base.path().join("shards");
    std::fs::create_dir(&dir).unwrap();
    harness::set_mode(&dir, 0o700);
    let elsewhere = base.path().join("elsewhere");
    std::fs::write(&elsewhere, b"not yours").unwrap();
    plant(&dir.join(name), what, &elsewhere);
    let when = format!("a {what:?} planted as {name}");
    records_and_compacts(&dir, &when);
    moved_aside(&dir, name, what, &when);
    assert_eq!(std::fs::read(&elsewhere).unwrap(), b"not yours", "{when}: nothing written through the symlink");
}

macro_rules! planted_lock_tests {
    ($($test:ident: $name:expr, $what:expr;)*) => {$(
        #[test]
        fn $test() {
            isolated(stringify!($test), SCENARIO, || planted_before_start($name, $what));
        }
    )*};
}

planted_lock_tests! {
    compact_lock_planted_as_directory_is_moved_aside: ".compact.lock", Plant::Directory;
    compact_lock_planted_as_symlink_is_moved_aside: ".compact.lock", Plant::Symlink;
    compact_lock_planted_as_fifo_is_moved_aside: ".compact.lock", Plant::Fifo;
    compact_lock_planted_as_other_users_file_is_moved_aside: ".compact.lock", Plant::OtherUsersFile;
    start_lock_planted_as_directory_is_moved_aside: ".promshard.lock", Plant::Directory;
    start_lock_planted_as_symlink_is_moved_aside: ".promshard.lock", Plant::Symlink;
    start_lock_planted_as_fifo_is_moved_aside: ".promshard.lock", Plant::Fifo;
    start_lock_planted_as_other_users_file_is_moved_aside: ".promshard.lock", Plant::OtherUsersFile;
    run_lock_planted_as_directory_is_moved_aside: ".run.lock", Plant::Directory;
    run_lock_planted_as_symlink_is_moved_aside: ".run.lock", Plant::Symlink;
    run_lock_planted_as_fifo_is_moved_aside: ".run.lock", Plant::Fifo;
    run_lock_planted_as_other_users_file_is_moved_aside: ".run.lock", Plant::OtherUsersFile;
}

/// `.compact.lock` swapped for something else while the run is live: the
/// next compaction (a worker died) must still happen, and move it aside.
fn compact_lock_planted_mid_run(what: Plant) {
    if what == Plant::OtherUsersFile && !is_root() {
        eprintln!("SKIPPED: making a file of another user needs root");
        return;
    }
    let base = TempDir::new("hostile-midrun");
    let dir = base.path().join("shards");
    promshard::multiprocess::init(&dir).unwrap();
    HOSTILE_JOBS_TOTAL.inc();
    assert_eq!(value_in(&own_text(), "hostile_jobs_total", &[]), Some(1.0));
    let elsewhere = base.path().join("elsewhere");
    std::fs::write(&elsewhere, b"not yours").unwrap();
    std::fs::remove_file(dir.join(".compact.lock")).unwrap();
    plant(&dir.join(".compact.lock"), what, &elsewhere);
    let worker = fork_child(|| {
        HOSTILE_JOBS_TOTAL.inc_by(10);
        0
    });
    assert!(wait_timeout(worker, Duration::from_secs(20)).is_some_and(|s| libc::WIFEXITED(s)));
    let when = format!("a {what:?} planted as .compact.lock mid-run");
    for scrape in 0..2 {
        assert_eq!(value_in(&own_text(), "hostile_jobs_total", &[]), Some(11.0), "{when}: scrape {scrape}");
    }
    let files = harness::shard_files(&dir);
    assert!(
        files.iter().any(|f| f == "archive.promshard") && files.len() == 2,
        "{when}: the scrapes after the worker died must compact it into archive.promshard (left: {files:?})"
    );
    moved_aside(&dir, ".compact.lock", what, &when);
    assert_eq!(std::fs::read(&elsewhere).unwrap(), b"not yours", "{when}: nothing written through the symlink");
}

#[test]
fn compact_lock_replaced_by_directory_mid_run() {
    isolated("compact_lock_replaced_by_directory_mid_run", SCENARIO, || compact_lock_planted_mid_run(Plant::Directory));
}

#[test]
fn compact_lock_replaced_by_fifo_mid_run() {
    isolated("compact_lock_replaced_by_fifo_mid_run", SCENARIO, || compact_lock_planted_mid_run(Plant::Fifo));
}

#[test]
fn compact_lock_replaced_by_other_users_file_mid_run() {
    isolated("compact_lock_replaced_by_other_users_file_mid_run", SCENARIO, || {
        compact_lock_planted_mid_run(Plant::OtherUsersFile)
    });
}

/// Stale or planted temporary archives of every shape (the old fixed name
/// and per-compactor names; files, a directory tree, a symlink to a
/// directory outside) are all removed under the next compaction, and
/// nothing outside is touched.
#[test]
fn stale_archive_temporaries_are_removed_by_compaction() {
    isolated("stale_archive_temporaries_are_removed_by_compaction", SCENARIO, || {
        let base = TempDir::new("hostile-archtmp");
        let dir = base.path().join("shards");
        std::fs::create_dir(&dir).unwrap();
        harness::set_mode(&dir, 0o700);
        let outside = base.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("precious"), b"keep me").unwrap();
        std::fs::write(dir.join(".archive.tmp"), b"half an archive").unwrap();
        std::fs::write(dir.join(".archive-4000000-1a2b.tmp"), b"a dead compactor's").unwrap();
        std::fs::create_dir_all(dir.join(".archive-4000001-3c4d.tmp/sub")).unwrap();
        std::fs::write(dir.join(".archive-4000001-3c4d.tmp/sub/f"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join(".archive-4000002-5e6f.tmp")).unwrap();
        let planted =
            [".archive.tmp", ".archive-4000000-1a2b.tmp", ".archive-4000001-3c4d.tmp", ".archive-4000002-5e6f.tmp"];
        records_and_compacts(&dir, "stale temporary archives");
        let left: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        let still: Vec<&&str> = planted.iter().filter(|p| left.iter().any(|n| n == **p)).collect();
        assert!(
            still.is_empty(),
            "stale temporary archives must be gone after compaction: {still:?} (directory: {left:?})"
        );
        assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"keep me", "nothing outside is removed");
    });
}
