//! A master that called `multiprocess::init` is of the run from that call
//! on, shard or not: workers it forks record and exit, and the master's
//! scrape or push made afterwards (its shard made only then) carries their
//! counts instead of taking them for a previous run's and clearing them.
//! A job's master that forks a pool, waits for it and pushes is this.

mod harness;

use std::time::Duration;

use harness::{Setup, TempDir, Worker, isolated, isolated_with, own_text, value_in};
use promshard::{Counter, metric};

/// Jobs done, by every process of the pool.
#[metric]
static POOL_JOBS_TOTAL: Counter;

fn worker(command: &str) -> String {
    match command {
        "record" => {
            POOL_JOBS_TOTAL.inc_by(100);
            "ok".to_owned()
        }
        other => panic!("unknown command {other:?}"),
    }
}

fn pool_then_master(master_records: bool) {
    let dir = TempDir::new("master-run");
    promshard::multiprocess::init(dir.path().join("shards")).unwrap();
    workers_then_master(master_records);
}

/// Three workers forked from here record 100 each and exit; then the
/// master (which called `init`) records one more if asked, and scrapes.
fn workers_then_master(master_records: bool) {
    let wait = Duration::from_secs(20);
    let mut workers: Vec<Worker> = (0..3).map(|_| Worker::spawn(worker)).collect();
    for w in &mut workers {
        assert_eq!(w.ask("record", wait), "ok");
    }
    // Last forked first: a later worker holds the earlier ones' command
    // pipes, inherited at its fork.
    for w in workers.iter_mut().rev() {
        w.exit(wait).expect("the worker exits");
    }
    // Every worker is gone; the master makes its shard only now.
    if master_records {
        POOL_JOBS_TOTAL.inc();
    }
    let want = 300.0 + if master_records { 1.0 } else { 0.0 };
    assert_eq!(value_in(&own_text(), "pool_jobs_total", &[]), Some(want), "the workers' counts are the run's");
    // And they stay once folded into the archive.
    assert_eq!(value_in(&own_text(), "pool_jobs_total", &[]), Some(want));
}

#[test]
fn a_master_recording_after_its_workers_exit_keeps_their_counts() {
    isolated("a_master_recording_after_its_workers_exit_keeps_their_counts", Duration::from_secs(60), || {
        pool_then_master(true)
    });
}

#[test]
fn a_master_scraping_after_its_workers_exit_keeps_their_counts() {
    isolated("a_master_scraping_after_its_workers_exit_keeps_their_counts", Duration::from_secs(60), || {
        pool_then_master(false)
    });
}

/// The same, with `init` given a relative path and the master moving to
/// another working directory before it forks: the run is the directory
/// `init` named, not whatever the path means from elsewhere.
#[test]
fn a_master_that_moved_after_a_relative_init_keeps_its_workers_counts() {
    let base = TempDir::new("master-run-relative");
    let setup = Setup { env: Vec::new(), cwd: Some(base.path().to_owned()) };
    isolated_with(
        "a_master_that_moved_after_a_relative_init_keeps_its_workers_counts",
        Duration::from_secs(60),
        setup,
        || {
            // The directory the parent made and started this process in.
            let cwd = std::env::current_dir().unwrap();
            promshard::multiprocess::init("shards").unwrap();
            std::fs::create_dir_all("elsewhere/shards").unwrap();
            std::env::set_current_dir("elsewhere").unwrap();
            workers_then_master(true);
            let shards = cwd.join("shards");
            assert_eq!(promshard::multiprocess::shard_dir(), Some(std::fs::canonicalize(&shards).unwrap()));
            assert_eq!(
                std::fs::read_dir(cwd.join("elsewhere/shards")).unwrap().count(),
                0,
                "nothing written elsewhere"
            );
        },
    );
}

/// `PROMSHARD_DIR=` (set, empty: a template's variable left blank) records
/// in process memory, as unset does, and says so once instead of
/// silently: no other process would see these counts.
#[test]
fn an_empty_promshard_dir_is_said() {
    let setup = Setup { env: vec![("PROMSHARD_DIR".to_owned(), "".into())], cwd: None };
    isolated_with("an_empty_promshard_dir_is_said", Duration::from_secs(30), setup, || {
        harness::capture_logs();
        POOL_JOBS_TOTAL.inc();
        assert_eq!(promshard::multiprocess::shard_dir(), None);
        assert_eq!(value_in(&own_text(), "pool_jobs_total", &[]), Some(1.0));
        let said: Vec<String> = harness::warnings().into_iter().filter(|w| w.contains("set but empty")).collect();
        assert_eq!(said.len(), 1, "{:?}", harness::warnings());
    });
}
