//! Attacks "a full disk does not kill" with the other way a file system
//! fills up: no inode left (a tmpfs mounted with a small `nr_inodes`, as
//! container runtimes do for /run and /dev/shm). Space is plenty, so the
//! spare is no help: no file can be created at all. Expected: no process
//! dies or hangs, no count is lost or counted twice while compaction
//! cannot write its archive, and the totals are exact once inodes are back.

mod harness;
mod support;

use std::time::Duration;

use harness::{Setup, Tmpfs, Worker, isolated_with, own_text, value_in};
use promshard::{Counter, metric};

/// Jobs done.
#[metric]
static INODE_JOBS_TOTAL: Counter;

const MOUNT_ENV: &str = "PROMSHARD_ADV_TMPFS_INODES";
const ASK: Duration = Duration::from_secs(10);

fn worker(command: &str) -> String {
    let (verb, arg) = command.split_once(' ').unwrap_or((command, ""));
    match verb {
        "inc" => {
            INODE_JOBS_TOTAL.inc_by(arg.parse().unwrap());
            "ok".to_owned()
        }
        "scrape" => value_in(&own_text(), "inode_jobs_total", &[]).unwrap_or(-1.0).to_string(),
        other => panic!("unknown command {other:?}"),
    }
}

fn jobs() -> f64 {
    value_in(&own_text(), "inode_jobs_total", &[]).unwrap_or(-1.0)
}

#[test]
fn no_inode_left_loses_and_doubles_nothing() {
    let fs = match Tmpfs::mount("8m,nr_inodes=64") {
        Ok(fs) => Some(fs),
        Err(why) => {
            support::skip_or_fail(&format!("cannot mount a tmpfs ({why}); run as root"));
            None
        }
    };
    let Some(fs) = fs else { return };
    let setup = Setup { env: vec![(MOUNT_ENV.to_owned(), fs.path.clone().into_os_string())], cwd: None };
    isolated_with("no_inode_left_loses_and_doubles_nothing", Duration::from_secs(60), setup, || {
        let root = std::path::PathBuf::from(std::env::var_os(MOUNT_ENV).unwrap());
        let dir = root.join("metrics");
        promshard::multiprocess::init(&dir).unwrap();
        INODE_JOBS_TOTAL.inc();
        let mut done = Worker::spawn(worker);
        done.ask("inc 10", ASK);
        assert_eq!(done.exit(ASK), Some(0));
        // Every inode taken.
        let mut fillers = Vec::new();
        for i in 0.. {
            let path = root.join(format!("filler{i}"));
            match std::fs::File::create(&path) {
                Ok(_) => fillers.push(path),
                Err(_) => break,
            }
        }
        assert!(!fillers.is_empty());
        assert_eq!(jobs(), 11.0, "a dead worker's counts with no inode left for the archive");
        let mut late = Worker::spawn(worker);
        late.ask("inc 100", ASK);
        let seen = late.ask("scrape", ASK);
        eprintln!("late worker's scrape: {seen}; master: {}", jobs());
        let master = jobs();
        assert!(master == 11.0 || master == 111.0, "master sees {master}");
        assert_eq!(jobs(), master, "second scrape");
        for path in &fillers {
            std::fs::remove_file(path).unwrap();
        }
        assert_eq!(jobs(), master, "inodes back");
        assert_eq!(jobs(), master, "after compaction");
        assert_eq!(late.exit(ASK), Some(0));
        let after = jobs();
        assert!(after == 111.0 || (master == 11.0 && after == 11.0), "after the late worker left: {after}");
    });
}
