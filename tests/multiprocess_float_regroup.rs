//! Attacks "counters never go down between scrapes" for the float parts
//! of counters: a histogram's `_sum` and a counter's fractional total.
//! Float addition rounds at every step, so a sum depends on how its terms
//! are grouped, and the merge regroups them as workers come and go: a
//! dead worker's shard is folded into the archive, one rounded value,
//! added first at the next scrape. `1 + 1 + 2^53` is `2^53 + 2`, but
//! `2^53 + 1 + 1` is `2^53`: the same counts, scraped before and after a
//! compaction, went down by 2 (by a last bit with everyday values: a
//! pre-fork pool's `http_request_duration_seconds_sum` did so under
//! churn, which Prometheus takes for a counter reset and turns into a
//! spike of `rate()`).
//!
//! Expected: the sums are exact whatever the grouping, and what is folded
//! into the archive is never below the sum of its terms, so no scrape is
//! smaller than the one before. The same holds for Python
//! prometheus_client files, whose dead writers' values are folded too:
//! `python_files_folded_...` drives real Python writers (skipped loudly
//! without prometheus_client, a failure under `PROMSHARD_ORACLES=require`).

mod harness;
mod support;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use harness::{TempDir, Worker, encode_dir_text, isolated, own_text, value_in};
use promshard::{Counter, Histogram, metric};

/// Seconds spent, in one bucket.
#[metric(buckets = [1.0])]
static REGROUP_SECONDS: Histogram;

/// Work done, in fractional units.
#[metric]
static REGROUP_WORK_TOTAL: Counter;

const BIG: f64 = 9007199254740992.0; // 2^53

fn handle(command: &str) -> String {
    let record = |v: f64| {
        REGROUP_SECONDS.observe(v);
        REGROUP_WORK_TOTAL.inc_by_f64(v).unwrap();
        "ok".to_owned()
    };
    match command {
        "record one" => record(1.0),
        "record big" => record(BIG),
        "ping" => "ok".to_owned(),
        other => panic!("unknown command {other:?}"),
    }
}

/// `(histogram sum, counter)` in `text`.
fn sums(text: &str) -> (f64, f64) {
    let sum = value_in(text, "regroup_seconds_sum", &[]).expect("a _sum");
    let work = value_in(text, "regroup_work_total", &[]).expect("a counter");
    (sum, work)
}

fn shard_name_of(dir: &Path, pid: libc::pid_t) -> String {
    let prefix = format!("p{pid}-");
    harness::shard_files(dir)
        .into_iter()
        .find(|name| name.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no shard for {pid}: {:?}", harness::shard_files(dir)))
}

fn scenario() {
    let dir = TempDir::new("float-regroup");
    promshard::multiprocess::init(dir.path()).unwrap();
    REGROUP_WORK_TOTAL.inc_by(0);
    let wait = Duration::from_secs(20);
    let mut workers: Vec<Worker> = (0..3).map(|_| Worker::spawn(handle)).collect();
    for worker in &mut workers {
        assert_eq!(worker.ask("ping", wait), "ok", "the worker runs, its shard made");
    }
    // The worker whose shard the merge adds last records 2^53, the others
    // 1 each: merged in name order, 1 + 1 + 2^53.
    workers.sort_by_key(|w| shard_name_of(dir.path(), w.pid));
    for (i, worker) in workers.iter_mut().enumerate() {
        assert_eq!(worker.ask(if i == 2 { "record big" } else { "record one" }, wait), "ok");
    }
    let exact = BIG + 2.0;
    let live = sums(&encode_dir_text(dir.path()));
    assert_eq!(live, (exact, exact), "three live workers: 1 + 1 + 2^53");

    // The big one dies; its shard is read as it was, then folded.
    workers[2].kill();
    let dead = sums(&encode_dir_text(dir.path()));
    assert_eq!(dead, (exact, exact), "a dead worker's shard counts as it did");
    let _ = own_text(); // merges, then compacts
    let folded = sums(&own_text());
    assert!(
        folded.0 >= dead.0 && folded.1 >= dead.1,
        "after the dead worker's shard was folded into the archive, the histogram's _sum went from {} to {} \
         and the counter from {} to {}: counters went down",
        dead.0,
        folded.0,
        dead.1,
        folded.1
    );
    assert_eq!(folded, (exact, exact), "and the exact sums stay");
    assert_eq!(sums(&encode_dir_text(dir.path())), folded, "a reader holding no shard agrees");
    for worker in workers.iter_mut().rev() {
        worker.kill();
    }
}

#[test]
fn folding_a_dead_worker_never_lowers_a_float_sum() {
    isolated("folding_a_dead_worker_never_lowers_a_float_sum", Duration::from_secs(60), scenario);
}

/// A Python writer that reads a value, adds it to its counter and
/// histogram, says `ready`, and exits when its stdin closes.
const PYTHON_WRITER: &str = r#"
import sys
from prometheus_client import Counter, Histogram
value = float(sys.stdin.readline())
Counter("regroup_py_work", "Work.").inc(value)
Histogram("regroup_py_seconds", "Seconds.", buckets=[1.0]).observe(value)
print("ready", flush=True)
sys.stdin.read()
"#;

/// `(histogram sum, counter)` of the Python families in `text`.
fn python_sums(text: &str) -> (Option<f64>, Option<f64>) {
    (value_in(text, "regroup_py_seconds_sum", &[]), value_in(text, "regroup_py_work_total", &[]))
}

fn python_scenario(python: &Path) {
    let dir = TempDir::new("float-regroup-python");
    let mut writers: Vec<std::process::Child> = (0..3)
        .map(|_| {
            std::process::Command::new(python)
                .args(["-c", PYTHON_WRITER])
                .env("PROMETHEUS_MULTIPROC_DIR", dir.path())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("python runs")
        })
        .collect();
    // Files are read in name order: the writer whose files sort last adds
    // 2^53, the others 1 each.
    writers.sort_by_key(|w| format!("counter_{}.db", w.id()));
    for (i, writer) in writers.iter_mut().enumerate() {
        let value = if i == 2 { BIG } else { 1.0 };
        writeln!(writer.stdin.as_mut().unwrap(), "{value}").unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(writer.stdout.as_mut().unwrap()), &mut line).unwrap();
        assert_eq!(line.trim(), "ready");
    }
    let exact = (Some(BIG + 2.0), Some(BIG + 2.0));
    let live = python_sums(&encode_dir_text(dir.path()));
    let mut big = writers.pop().unwrap();
    drop(big.stdin.take());
    big.wait().unwrap();
    let folded = python_sums(&encode_dir_text(dir.path()));
    let again = python_sums(&encode_dir_text(dir.path()));
    assert!(
        folded.0 >= live.0 && folded.1 >= live.1 && again == folded,
        "after the 2^53 writer exited and its files were folded, the histogram's _sum went from {:?} to \
         {:?} and the counter from {:?} to {:?} (then {again:?}): counters went down",
        live.0,
        folded.0,
        live.1,
        folded.1
    );
    assert_eq!((live, folded), (exact, exact), "1 + 1 + 2^53, exactly, before and after");
    for writer in &mut writers {
        drop(writer.stdin.take());
        writer.wait().unwrap();
    }
}

#[test]
fn python_files_folded_after_their_writer_exits_never_lower_a_float_sum() {
    let Some(python) = support::python_with_prometheus_client() else {
        support::skip_or_fail(support::PYTHON_MISSING);
        return;
    };
    isolated("python_files_folded_after_their_writer_exits_never_lower_a_float_sum", Duration::from_secs(60), || {
        python_scenario(&python)
    });
}
