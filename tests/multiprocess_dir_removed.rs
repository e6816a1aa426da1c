//! Attacks the shard directory's life outside promshard: a deploy script
//! (or an operator cleaning up) that runs `rm -rf "$PROMSHARD_DIR"` and
//! recreates it while a pool is running. Live workers keep recording into
//! shards no one can see any more (their files are unlinked, only their
//! mappings remain). Expected: no count lost silently. Every scrape
//! either still shows the live workers' counts, or says the loss: a
//! warning in the log and a count in the self-metrics.

mod harness;

use std::time::Duration;

use harness::{TempDir, Worker, capture_logs, isolated, own_text, parse_samples, value_in, warnings};
use promshard::{Counter, metric};

/// Jobs done.
#[metric]
static REMOVED_JOBS_TOTAL: Counter;

const ASK: Duration = Duration::from_secs(10);

fn worker(command: &str) -> String {
    let (verb, arg) = command.split_once(' ').unwrap_or((command, ""));
    match verb {
        "inc" => {
            REMOVED_JOBS_TOTAL.inc_by(arg.parse().unwrap());
            "ok".to_owned()
        }
        "scrape" => {
            let text = own_text();
            let jobs = value_in(&text, "removed_jobs_total", &[]).unwrap_or(-1.0);
            format!("{jobs} {}", self_metric_errors(&text))
        }
        other => panic!("unknown command {other:?}"),
    }
}

/// Every `promshard_*` error-like counter of a scrape, summed.
fn self_metric_errors(text: &str) -> f64 {
    parse_samples(text)
        .iter()
        .filter(|s| s.name.starts_with("promshard_") && s.name.ends_with("_total"))
        .map(|s| s.value)
        .sum()
}

fn scrape(w: &mut Worker) -> (f64, f64) {
    let reply = w.ask("scrape", ASK);
    let (jobs, errors) = reply.split_once(' ').unwrap();
    (jobs.parse().unwrap(), errors.parse().unwrap())
}

/// Two workers count 10 each; the directory is removed and recreated;
/// they count 5 more each. Each worker's scrape then shows 30 (its own
/// 15 and the other's 15), or says in its self-metrics and the log that
/// it cannot.
#[test]
fn directory_removed_and_recreated_under_live_workers() {
    isolated("directory_removed_and_recreated_under_live_workers", Duration::from_secs(60), || {
        capture_logs();
        let base = TempDir::new("dir-removed");
        let dir = base.path().join("metrics");
        promshard::multiprocess::init(&dir).unwrap();
        // The master records nothing but holds a shard, as a pre-fork
        // master that touches a metric does.
        REMOVED_JOBS_TOTAL.inc_by(0);
        let mut a = Worker::spawn(worker);
        let mut b = Worker::spawn(worker);
        a.ask("inc 10", ASK);
        b.ask("inc 10", ASK);
        assert_eq!(scrape(&mut a).0, 20.0);
        assert_eq!(scrape(&mut b).0, 20.0);
        let before = self_metric_errors(&own_text());

        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        harness::set_mode(&dir, 0o700);

        a.ask("inc 5", ASK);
        b.ask("inc 5", ASK);
        let (jobs_a, errors_a) = scrape(&mut a);
        let (jobs_b, errors_b) = scrape(&mut b);
        let master = own_text();
        let jobs_master = value_in(&master, "removed_jobs_total", &[]).unwrap_or(0.0);
        let errors_master = self_metric_errors(&master);
        let said = warnings();
        eprintln!(
            "after: a {jobs_a} (errors {errors_a}), b {jobs_b} (errors {errors_b}), master {jobs_master} (errors {errors_master}, before {before}); warnings {said:?}"
        );
        for (who, jobs, errors) in
            [("a", jobs_a, errors_a), ("b", jobs_b, errors_b), ("master", jobs_master, errors_master)]
        {
            assert!(
                jobs == 30.0 || errors > before,
                "{who}'s scrape shows {jobs} of the pool's 30 jobs after the directory was recreated, and no self-metric says why"
            );
            assert!(jobs <= 30.0, "{who}'s scrape counts {jobs} of 30 jobs");
        }
        assert!(
            jobs_master == 30.0 || said.iter().any(|w| w.contains(&*dir.to_string_lossy())),
            "nothing logged about {} being replaced: {said:?}",
            dir.display()
        );
        // `b` holds `a`'s command pipe (forked after it): `b` goes first.
        assert_eq!(b.exit(ASK), Some(0));
        assert_eq!(a.exit(ASK), Some(0));
    });
}
