//! Folding dead workers' shards into the archive must change nothing a
//! scraper sees: not a value, not a series, not a family. A seeded random
//! sequence of rounds, each forking workers that record a random mix
//! (handler families, whose series are declared at zero; counters with a
//! list label in an unsorted order and with a bounded label, some never
//! recorded at all; a histogram; gauges of several modes), then letting
//! some exit and SIGKILLing others. After every round the directory's
//! exposition, in text 0.0.4 and OpenMetrics, is compared line for line
//! before and after `compact_dir` (but for live workers' `process_*`
//! families, which change by themselves).
//!
//! Values recorded are whole numbers and binary fractions; the handler's
//! durations are not. The archive keeps a float total rounded up (so that
//! a counter never goes down when its terms are folded), and that may add
//! an ulp or so: a value may grow by no more than that, and nothing else
//! may change.
//!
//! The seed comes from `PROMSHARD_COMPACTION_SEED` (or the clock) and is
//! printed with the steps in every failure.

mod harness;
mod rng;

use std::time::Duration;

use harness::{TempDir, Worker, isolated, shard_files};
use promshard::{Counter, Exposition, Format, Gauge, Histogram, instrument_handler, metric};
use rng::Rng;

/// Jobs by queue (declared in no sorted order).
#[metric(labels(queue = ["mail", "billing", "zeta", "alpha"]))]
static INVISIBLE_JOBS_TOTAL: Counter;

/// Hits by tenant.
#[metric(labels(tenant = bounded(8)))]
static INVISIBLE_TENANT_HITS_TOTAL: Counter;

/// Never recorded by anyone: a family with no series.
#[metric(labels(tenant = bounded(8)))]
static INVISIBLE_UNUSED_TOTAL: Counter;

/// Sizes.
#[metric(buckets = [1.0, 4.0, 16.0, 64.0])]
static INVISIBLE_SIZE: Histogram;

/// Work in flight, summed over live workers.
#[metric(mode = livesum)]
static INVISIBLE_INFLIGHT: Gauge;

/// The largest batch any worker saw.
#[metric(mode = max)]
static INVISIBLE_BATCH_MAX: Gauge;

/// The latest setting.
#[metric(mode = mostrecent)]
static INVISIBLE_SETTING: Gauge;

/// Per-worker queue depth.
#[metric(mode = all)]
static INVISIBLE_DEPTH: Gauge;

#[instrument_handler(name = "invisible_call")]
fn call(amount: i64) -> Result<i64, String> {
    if amount < 0 { Err("negative".into()) } else { Ok(amount) }
}

/// A worker's command: `op arg`.
fn handle(command: &str) -> String {
    let (op, arg) = command.split_once(' ').unwrap_or((command, "0"));
    let n: u64 = arg.parse().unwrap();
    match op {
        "jobs" => INVISIBLE_JOBS_TOTAL.with((["mail", "billing", "zeta", "alpha"][n as usize % 4],)).inc_by(n + 1),
        "tenant" => INVISIBLE_TENANT_HITS_TOTAL.with((["t0", "t1", "t2", "t3", "t4"][n as usize % 5],)).inc(),
        "size" => INVISIBLE_SIZE.observe(n as f64 * 0.25),
        "inflight" => INVISIBLE_INFLIGHT.set(n as f64),
        "batch" => INVISIBLE_BATCH_MAX.set(n as f64 * 0.5),
        "setting" => INVISIBLE_SETTING.set(n as f64),
        "depth" => INVISIBLE_DEPTH.set(n as f64),
        "call" => drop(call(n as i64 - 2)),
        "frac" => INVISIBLE_JOBS_TOTAL.with(("zeta",)).inc_by_f64(n as f64 * 0.125).unwrap(),
        // A clean exit, as a worker retired by its master makes. (Closing
        // its command pipe is not enough: its siblings inherited it.)
        "quit" => std::process::exit(0),
        // Its own shard made: a worker's file appears when it is.
        "ping" => assert!(promshard::multiprocess::shard_dir().is_some()),
        other => panic!("unknown command {other:?}"),
    }
    "ok".into()
}

const OPS: [&str; 9] = ["jobs", "tenant", "size", "inflight", "batch", "setting", "depth", "call", "frac"];

/// The directory's text scrapes without the `process_*` families, which
/// live workers' `/proc` changes from one read to the next.
fn scrapes(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (what, how) in [("text 0.0.4", Format::Prometheus), ("OpenMetrics", Format::OpenMetrics)] {
        let text = String::from_utf8(promshard::multiprocess::encode_dir(dir, Exposition::from(how))).unwrap();
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| {
                !l.starts_with("process_") && !l.starts_with("# HELP process_") && !l.starts_with("# TYPE process_")
            })
            .collect();
        out.push((what, kept.join("\n")));
    }
    out
}

/// Whether `after` shows what `before` did: the same lines, but for float
/// values that may have grown by a few ulps.
fn same_scrape(before: &str, after: &str) -> bool {
    let (before, after): (Vec<&str>, Vec<&str>) = (before.lines().collect(), after.lines().collect());
    before.len() == after.len()
        && before.iter().zip(&after).all(|(b, a)| {
            if a == b {
                return true;
            }
            let (Some((bk, bv)), Some((ak, av))) = (b.rsplit_once(' '), a.rsplit_once(' ')) else { return false };
            let (Ok(bv), Ok(av)) = (bv.parse::<f64>(), av.parse::<f64>()) else { return false };
            !b.starts_with('#') && bk == ak && av >= bv && av - bv <= bv.abs() * 4.0 * f64::EPSILON
        })
}

/// The lines only one of `a` and `b` has.
fn line_diff(a: &str, b: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let gone = a.iter().filter(|l| !b.contains(l)).map(|l| format!("- {l}"));
    let new = b.iter().filter(|l| !a.contains(l)).map(|l| format!("+ {l}"));
    gone.chain(new).collect::<Vec<_>>().join("\n")
}

fn compaction_changes_no_scrape() {
    let seed = std::env::var("PROMSHARD_COMPACTION_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("PROMSHARD_COMPACTION_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = TempDir::new("compaction-invisible");
    // This process keeps the run alive and records too; it never scrapes
    // itself (its own scrape would compact).
    promshard::multiprocess::init(dir.path()).unwrap();
    INVISIBLE_JOBS_TOTAL.with(("alpha",)).inc();
    let wait = Duration::from_secs(20);
    let mut steps: Vec<String> = Vec::new();
    let mut live: Vec<Worker> = Vec::new();
    for round in 0..12 {
        for _ in 0..1 + rng.below(3) {
            let mut worker = Worker::spawn(handle);
            assert_eq!(worker.ask("ping", wait), "ok");
            for _ in 0..rng.below(12) {
                let command = format!("{} {}", OPS[rng.below(OPS.len() as u64) as usize], rng.below(9));
                assert_eq!(worker.ask(&command, wait), "ok");
                steps.push(format!("round {round}: worker {}: {command}", worker.pid));
            }
            live.push(worker);
        }
        // Some of the live workers end: cleanly or by SIGKILL.
        let mut index = 0;
        while index < live.len() {
            match rng.below(3) {
                0 => {
                    let mut worker = live.remove(index);
                    steps.push(format!("round {round}: worker {} exits", worker.pid));
                    assert_eq!(worker.try_ask("quit", Duration::from_millis(100)), None);
                    assert_eq!(worker.exit(wait), Some(0));
                }
                1 => {
                    let mut worker = live.remove(index);
                    steps.push(format!("round {round}: worker {} killed", worker.pid));
                    worker.kill();
                }
                _ => index += 1,
            }
        }
        let before = scrapes(dir.path());
        let files_before = shard_files(dir.path());
        promshard::multiprocess::compact_dir(dir.path());
        let after = scrapes(dir.path());
        for ((what, before), (_, after)) in before.iter().zip(&after) {
            if !same_scrape(before, after) {
                panic!(
                    "seed {seed}, round {round}: compaction changed the {what} scrape\n\
                     files before: {files_before:?}\nfiles after: {:?}\n--- changed lines\n{}\n--- steps\n{}",
                    shard_files(dir.path()),
                    line_diff(before, after),
                    steps.join("\n")
                );
            }
        }
        let dead_left = shard_files(dir.path()).len() - live.len() - 1;
        assert!(dead_left <= 1, "seed {seed}: only the archive is left of the dead: {:?}", shard_files(dir.path()));
    }
}

#[test]
fn compaction_changes_no_scrape_of_the_directory() {
    isolated("compaction_changes_no_scrape_of_the_directory", Duration::from_secs(240), compaction_changes_no_scrape);
}
