//! Attacks "gauges say how to combine" with real forked workers, some
//! alive, some exited, one SIGKILLed: every gauge mode's merged value must
//! be its definition (Python prometheus_client's), before compaction, after
//! the scrape that folds the dead into the archive, after an explicit
//! `compact_dir`, and again after more workers come and go and the archive
//! is rewritten with the old archive in it:
//!
//! - `sum`, `min`, `max`, `mostrecent`: over every process that ever
//!   wrote, dead ones included;
//! - `livesum`, `livemin`, `livemax`, `livemostrecent`: over live
//!   processes only;
//! - `all`: one series per process (live and dead) with a `pid` label;
//!   `liveall`: one per live process.
//!
//! Every process sets every gauge once, in a known order, with a pause
//! between processes so that the `mostrecent` stamps differ.

mod harness;

use std::collections::BTreeMap;
use std::time::Duration;

use harness::{TempDir, Worker, isolated, own_text, parse_samples, value_in};
use promshard::{Gauge, metric};

/// `sum`.
#[metric(mode = sum)]
static GM_SUM: Gauge;
/// `livesum`.
#[metric(mode = livesum)]
static GM_LIVESUM: Gauge;
/// `min`.
#[metric(mode = min)]
static GM_MIN: Gauge;
/// `livemin`.
#[metric(mode = livemin)]
static GM_LIVEMIN: Gauge;
/// `max`.
#[metric(mode = max)]
static GM_MAX: Gauge;
/// `livemax`.
#[metric(mode = livemax)]
static GM_LIVEMAX: Gauge;
/// `mostrecent`.
#[metric(mode = mostrecent)]
static GM_MOSTRECENT: Gauge;
/// `livemostrecent`.
#[metric(mode = livemostrecent)]
static GM_LIVEMOSTRECENT: Gauge;
/// `all`.
#[metric(mode = all)]
static GM_ALL: Gauge;
/// `liveall`.
#[metric(mode = liveall)]
static GM_LIVEALL: Gauge;

const ASK: Duration = Duration::from_secs(20);
/// Between two processes' sets: `mostrecent` compares their stamps.
const PAUSE: Duration = Duration::from_millis(30);

fn set_all(v: f64) {
    for gauge in [
        &GM_SUM,
        &GM_LIVESUM,
        &GM_MIN,
        &GM_LIVEMIN,
        &GM_MAX,
        &GM_LIVEMAX,
        &GM_MOSTRECENT,
        &GM_LIVEMOSTRECENT,
        &GM_ALL,
        &GM_LIVEALL,
    ] {
        gauge.set(v);
    }
}

/// A worker: `set V` sets every gauge to V; `exit` exits (closing the
/// command pipe is not enough: later workers inherit its write end).
fn handle(command: &str) -> String {
    if command == "exit" {
        // SAFETY: ends this forked worker at once.
        unsafe { libc::_exit(0) };
    }
    let v: f64 = command.strip_prefix("set ").expect("set V").parse().unwrap();
    set_all(v);
    "ok".into()
}

/// Every process that ever set the gauges: pid, value, alive, in the
/// order they set them.
struct Model {
    processes: Vec<(libc::pid_t, f64, bool)>,
}

impl Model {
    fn values(&self, live_only: bool) -> impl Iterator<Item = f64> + '_ {
        self.processes.iter().filter(move |p| p.2 || !live_only).map(|p| p.1)
    }

    fn last(&self, live_only: bool) -> f64 {
        self.values(live_only).last().unwrap()
    }

    fn per_pid(&self, live_only: bool) -> BTreeMap<String, f64> {
        self.processes.iter().filter(|p| p.2 || !live_only).map(|p| (p.0.to_string(), p.1)).collect()
    }

    fn died(&mut self, pid: libc::pid_t) {
        self.processes.iter_mut().find(|p| p.0 == pid).unwrap().2 = false;
    }
}

/// The `pid` → value series of `name` in `text`; a sample with any other
/// label set is reported as such.
fn per_pid_in(text: &str, name: &str) -> BTreeMap<String, f64> {
    parse_samples(text)
        .into_iter()
        .filter(|s| s.name == name)
        .map(|s| match &s.labels[..] {
            [(k, v)] if k == "pid" => (v.clone(), s.value),
            other => (format!("unexpected labels {other:?}"), s.value),
        })
        .collect()
}

/// Checks every mode against the model in a scrape of this process.
fn check(model: &Model, when: &str) {
    let text = own_text();
    let mut wrong = Vec::new();
    let mut scalar = |name: &str, want: f64| {
        let got = value_in(&text, name, &[]);
        if got != Some(want) {
            wrong.push(format!("{name}: {got:?}, want {want}"));
        }
    };
    scalar("gm_sum", model.values(false).sum());
    scalar("gm_livesum", model.values(true).sum());
    scalar("gm_min", model.values(false).fold(f64::INFINITY, f64::min));
    scalar("gm_livemin", model.values(true).fold(f64::INFINITY, f64::min));
    scalar("gm_max", model.values(false).fold(f64::NEG_INFINITY, f64::max));
    scalar("gm_livemax", model.values(true).fold(f64::NEG_INFINITY, f64::max));
    scalar("gm_mostrecent", model.last(false));
    scalar("gm_livemostrecent", model.last(true));
    for (name, live_only) in [("gm_all", false), ("gm_liveall", true)] {
        let got = per_pid_in(&text, name);
        let want = model.per_pid(live_only);
        if got != want {
            wrong.push(format!("{name} by pid: {got:?}, want {want:?}"));
        }
    }
    let files: Vec<String> = std::fs::read_dir(promshard::multiprocess::shard_dir().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".promshard"))
        .collect();
    assert!(
        wrong.is_empty(),
        "{when}: merged gauges differ from their modes' definitions:\n- {}\n(processes pid/value/alive, in set \
         order: {:?}; files: {files:?})",
        wrong.join("\n- "),
        model.processes
    );
}

fn spawn_and_set(workers: &mut Vec<Worker>, model: &mut Model, v: f64) {
    let mut worker = Worker::spawn(handle);
    std::thread::sleep(PAUSE);
    assert_eq!(worker.ask(&format!("set {v}"), ASK), "ok");
    model.processes.push((worker.pid, v, true));
    workers.push(worker);
}

fn gauge_modes() {
    let base = TempDir::new("gauge-modes");
    let dir = base.path().join("shards");
    promshard::multiprocess::init(&dir).unwrap();
    set_all(10.0);
    let mut model = Model { processes: vec![(std::process::id() as libc::pid_t, 10.0, true)] };
    let mut workers = Vec::new();
    // 0: the overall min, dies. 1: the overall max, dies. 2: the live min.
    // 3: the live max. 4: the last live writer. 5: the last writer of all,
    // SIGKILLed.
    for v in [-5.0, 100.0, 3.0, 50.0, 20.0, 7.0] {
        spawn_and_set(&mut workers, &mut model, v);
    }
    check(&model, "all seven processes alive");
    for i in [0, 1] {
        let pid = workers[i].pid;
        assert_eq!(workers[i].try_ask("exit", Duration::from_millis(200)), None);
        assert!(workers[i].exit(ASK).is_some_and(|s| libc::WIFEXITED(s)), "worker {pid} exits");
        model.died(pid);
    }
    let pid = workers[5].pid;
    workers[5].kill();
    model.died(pid);
    check(&model, "three dead (the first scrape to see them, which then compacts them)");
    check(&model, "three dead, after the scrape that compacted them");
    promshard::multiprocess::compact_dir(&dir);
    check(&model, "three dead, after compact_dir");

    // The live min exits; a new worker becomes the max and the most recent.
    let pid = workers[2].pid;
    assert_eq!(workers[2].try_ask("exit", Duration::from_millis(200)), None);
    assert!(workers[2].exit(ASK).is_some_and(|s| libc::WIFEXITED(s)));
    model.died(pid);
    spawn_and_set(&mut workers, &mut model, 1000.0);
    check(&model, "the live min gone, a new max and most recent alive");
    check(&model, "the same, after compaction into the existing archive");
    // That newest worker dies: it stays the most recent and the max of
    // all, but the live modes fall back to the live ones.
    let pid = workers[6].pid;
    workers[6].kill();
    model.died(pid);
    check(&model, "the newest worker SIGKILLed");
    promshard::multiprocess::compact_dir(&dir);
    check(&model, "the newest worker SIGKILLed, after compact_dir");
    for mut worker in workers {
        worker.kill();
    }
}

#[test]
fn every_gauge_mode_merges_by_its_definition() {
    isolated("every_gauge_mode_merges_by_its_definition", Duration::from_secs(90), gauge_modes);
}
