//! Attacks "recording never fails" on a full file system. Shard files are
//! sparse: creating one and writing its header succeeds with a page or
//! two free, and the first write to a slot page that is not backed yet
//! then raises SIGBUS inside a plain `observe()` or `inc()`, killing the
//! process. Expected: a process that cannot back its shard records in
//! memory instead (and says so); a worker forked on a full disk does not
//! die either.
//!
//! Uses a tiny tmpfs (`mount -t tmpfs -o size=256k`), unmounted by a drop
//! guard. Where `mount` is not permitted the tests skip loudly, or fail
//! under `PROMSHARD_ORACLES=require`.

mod harness;
mod support;

use std::path::PathBuf;
use std::time::Duration;

use harness::{Setup, Tmpfs, fork_child, isolated_with, own_text, value_in, wait_timeout};
use promshard::{Counter, Histogram, metric};

/// Latency by shard, many buckets: the set of metrics needs several pages.
#[metric(labels(part = ["a", "b", "c", "d", "e", "f", "g", "h", "i"]), buckets = linear(1.0, 1.0, 100))]
static FULL_LATENCY_ONE: Histogram;

/// As above.
#[metric(labels(part = ["a", "b", "c", "d", "e", "f", "g", "h", "i"]), buckets = linear(1.0, 1.0, 100))]
static FULL_LATENCY_TWO: Histogram;

/// As above.
#[metric(labels(part = ["a", "b", "c", "d", "e", "f", "g", "h", "i"]), buckets = linear(1.0, 1.0, 100))]
static FULL_LATENCY_THREE: Histogram;

/// Jobs done.
#[metric]
static FULL_JOBS_TOTAL: Counter;

const PARTS: [&str; 9] = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
const MOUNT_ENV: &str = "PROMSHARD_ADV_TMPFS";
const SCENARIO: Duration = Duration::from_secs(60);

/// Touches every slot page of every metric: one observation per bucket
/// per series.
fn record_everything() {
    for part in PARTS {
        let series = [FULL_LATENCY_ONE.with((part,)), FULL_LATENCY_TWO.with((part,)), FULL_LATENCY_THREE.with((part,))];
        for series in series {
            for v in 0..=101 {
                series.observe(v as f64);
            }
        }
    }
    FULL_JOBS_TOTAL.inc();
}

/// What `record_everything` leaves in one process's own scrape.
fn check_own_values(who: &str) {
    let text = own_text();
    for (name, part) in [("full_latency_one_count", "a"), ("full_latency_three_count", "i")] {
        assert_eq!(value_in(&text, name, &[("part", part)]), Some(102.0), "{who}: {name}{{part={part}}}");
    }
    assert_eq!(value_in(&text, "full_jobs_total", &[]), Some(1.0), "{who}: full_jobs_total");
}

fn mount_or_skip() -> Option<Tmpfs> {
    match Tmpfs::mount("256k") {
        Ok(fs) => Some(fs),
        Err(why) => {
            support::skip_or_fail(&format!("cannot mount a tmpfs to fill ({why}); run as root"));
            None
        }
    }
}

fn mounted_dir() -> PathBuf {
    PathBuf::from(std::env::var_os(MOUNT_ENV).expect("the tmpfs path"))
}

#[test]
fn recording_on_a_full_disk_does_not_kill_the_process() {
    if harness::in_any_child() && !harness::is_child("recording_on_a_full_disk_does_not_kill_the_process") {
        return;
    }
    let fs = if harness::in_any_child() { None } else { mount_or_skip() };
    if fs.is_none() && !harness::in_any_child() {
        return;
    }
    if let Some(fs) = &fs {
        std::fs::create_dir(fs.path.join("shards")).unwrap();
        harness::set_mode(&fs.path.join("shards"), 0o700);
        // One page left: enough for the header and schema, not the slots.
        fs.fill_leaving(1);
    }
    let setup = Setup { env: fs.iter().map(|fs| (MOUNT_ENV.to_owned(), fs.path.clone().into())).collect(), cwd: None };
    isolated_with("recording_on_a_full_disk_does_not_kill_the_process", SCENARIO, setup, || {
        harness::capture_logs();
        promshard::multiprocess::init(mounted_dir().join("shards")).unwrap();
        // Dies of SIGBUS here today (the parent reports the signal).
        eprintln!("recording into every series of a shard on a full tmpfs (SIGBUS here = the bug)");
        record_everything();
        check_own_values("the process on a full disk");
        let warnings = harness::warnings();
        assert!(
            warnings.iter().any(|w| w.contains("promshard")),
            "a process that could not back its shard must say so in the log; logged: {warnings:?}"
        );
    });
    drop(fs);
}

#[test]
fn a_worker_forked_on_a_full_disk_does_not_die() {
    if harness::in_any_child() && !harness::is_child("a_worker_forked_on_a_full_disk_does_not_die") {
        return;
    }
    let fs = if harness::in_any_child() { None } else { mount_or_skip() };
    if fs.is_none() && !harness::in_any_child() {
        return;
    }
    let setup = Setup { env: fs.iter().map(|fs| (MOUNT_ENV.to_owned(), fs.path.clone().into())).collect(), cwd: None };
    isolated_with("a_worker_forked_on_a_full_disk_does_not_die", SCENARIO, setup, || {
        let mount = mounted_dir();
        promshard::multiprocess::init(mount.join("shards")).unwrap();
        // The master's shard is fully backed: it touched every page.
        record_everything();
        check_own_values("the master");
        assert!(promshard::multiprocess::shard_dir().is_some(), "the master records in its shard");
        // Now the disk fills up, leaving a page: a worker forked now gets
        // a sparse shard whose slot pages cannot be backed.
        let fs = Tmpfs { path: mount.clone() };
        fs.fill_leaving(1);
        std::mem::forget(fs); // the parent test unmounts it
        let worker = fork_child(|| {
            record_everything();
            0
        });
        let status = wait_timeout(worker, Duration::from_secs(20));
        let status = status.map(harness::describe_status);
        assert_eq!(
            status.as_deref(),
            Some("exit code 0"),
            "a worker forked while the disk was full died recording a plain observe()/inc() (unbacked page of \
             its sparse shard)"
        );
        // The master is unaffected.
        FULL_JOBS_TOTAL.inc();
        assert!(value_in(&own_text(), "full_jobs_total", &[]).is_some_and(|v| v >= 2.0));
    });
    drop(fs);
}

/// The directory of [`workers_started_on_a_full_disk_still_record_into_the_directory`]'s
/// scenario, for its fresh worker.
const FRESH_DIR_ENV: &str = "PROMSHARD_ADV_FULL_DISK_DIR";

/// A process started (not forked) while the disk is full: records into
/// the directory of `FRESH_DIR_ENV` and exits.
#[test]
fn fresh_worker_on_a_full_disk() {
    if !harness::is_child("fresh_worker_on_a_full_disk") {
        return;
    }
    harness::capture_logs();
    promshard::multiprocess::init(std::env::var_os(FRESH_DIR_ENV).unwrap()).unwrap();
    record_everything();
    assert!(promshard::multiprocess::shard_dir().is_some(), "the fresh worker records in its shard");
    assert!(
        harness::warnings().iter().any(|w| w.contains("spare")),
        "it says it took from the spare: {:?}",
        harness::warnings()
    );
}

/// Workers that start after the disk filled up (forked by the master,
/// and a fresh process) take the disk their shards need from the spare
/// the master set aside while there was room, so their counts are in
/// the directory's scrape rather than in their memory only (where no
/// scrape of another process sees them). Once dead workers are folded
/// into the archive, the spare is refilled.
#[test]
fn workers_started_on_a_full_disk_still_record_into_the_directory() {
    const NAME: &str = "workers_started_on_a_full_disk_still_record_into_the_directory";
    if harness::in_any_child() && !harness::is_child(NAME) {
        return;
    }
    let fs = if harness::in_any_child() {
        None
    } else {
        match Tmpfs::mount("8m") {
            Ok(fs) => Some(fs),
            Err(why) => {
                support::skip_or_fail(&format!("cannot mount a tmpfs to fill ({why}); run as root"));
                return;
            }
        }
    };
    let setup = Setup { env: fs.iter().map(|fs| (MOUNT_ENV.to_owned(), fs.path.clone().into())).collect(), cwd: None };
    isolated_with(NAME, SCENARIO, setup, || {
        let mount = mounted_dir();
        let dir = mount.join("shards");
        std::fs::create_dir(&dir).unwrap();
        harness::set_mode(&dir, 0o700);
        promshard::multiprocess::init(&dir).unwrap();
        record_everything();
        let spare = dir.join(".promshard.spare");
        let spare_len = || std::fs::metadata(&spare).map_or(0, |m| m.len());
        let full = spare_len();
        assert!(full > 0, "the master set a spare aside while there was room");

        let fs = Tmpfs { path: mount.clone() };
        fs.fill_leaving(0);
        std::mem::forget(fs); // the parent test unmounts it
        for n in 0..2 {
            let worker = fork_child(|| {
                record_everything();
                i32::from(promshard::multiprocess::shard_dir().is_none())
            });
            let status = wait_timeout(worker, Duration::from_secs(20)).map(harness::describe_status);
            assert_eq!(status.as_deref(), Some("exit code 0"), "forked worker {n}");
        }
        let setup = Setup { env: vec![(FRESH_DIR_ENV.to_owned(), dir.clone().into())], cwd: None };
        let fresh = harness::spawn_and_wait("fresh_worker_on_a_full_disk", Duration::from_secs(30), setup).unwrap();
        assert!(fresh.status.success(), "the fresh worker: {}", fresh.stderr);
        assert!(spare_len() < full, "the spare gave its disk: {} of {full}", spare_len());

        let text = harness::encode_dir_text(&dir);
        assert_eq!(value_in(&text, "full_jobs_total", &[]), Some(4.0), "master and three workers: {text}");
        assert_eq!(value_in(&text, "full_latency_two_count", &[("part", "e")]), Some(4.0 * 102.0), "{text}");

        // The filler goes; the master's scrape folds the dead workers and
        // sets the spare aside again.
        std::fs::remove_file(mount.join("filler")).unwrap();
        let own = own_text();
        assert_eq!(value_in(&own, "full_jobs_total", &[]), Some(4.0), "{own}");
        assert_eq!(spare_len(), full, "the spare is refilled");
    });
    drop(fs);
}
