//! Exemplars across processes: a seeded model test. Worker processes,
//! each with its own shard, record exemplars in a known order (one
//! command at a time, so each is later than the one before); workers exit
//! or are SIGKILLed, and their shards are folded into the archive. After
//! every step the merged scrape (from a reader with no shard, and from a
//! live worker) must show per counter series and per histogram bucket the
//! exemplar recorded last by any process, dead ones included, and every
//! count exactly.
//!
//! Metrics: a counter with a fixed label (merged slot by slot), one with
//! a bounded label (merged by label text, the other path), a histogram.
//! The seed comes from `PROMSHARD_SEED` (or the clock) and is printed.

mod harness;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use harness::Worker;
use promshard::{Counter, Exposition, Format, Histogram, metric};

/// Requests by kind.
#[metric(labels(kind = ["a", "b"]), exemplars)]
static EM_REQUESTS_TOTAL: Counter;

/// Hits by route.
#[metric(labels(route = bounded(16)), exemplars)]
static EM_ROUTES_TOTAL: Counter;

/// Latency.
#[metric(buckets = [1.0, 5.0, 10.0], exemplars)]
static EM_LATENCY: Histogram;

const KINDS: [&str; 2] = ["a", "b"];
const ROUTES: [&str; 3] = ["/x", "/y", "/z"];
/// One observation per bucket: `le` 1, 5, 10, +Inf.
const VALUES: [(f64, &str); 4] = [(0.5, "1.0"), (3.0, "5.0"), (7.0, "10.0"), (20.0, "+Inf")];
const ASK: Duration = Duration::from_secs(20);

fn run_worker(command: &str) -> String {
    let words: Vec<&str> = command.split(' ').collect();
    match words.as_slice() {
        ["c", kind, label] => EM_REQUESTS_TOTAL.with((*kind,)).inc_with_exemplar(&[("trace_id", label)]),
        ["r", route, label] => EM_ROUTES_TOTAL.with((*route,)).inc_with_exemplar(&[("trace_id", label)]),
        ["h", v, label] => EM_LATENCY.observe_with_exemplar(v.parse().unwrap(), &[("trace_id", label)]),
        ["ping"] => {}
        ["scrape"] => return String::from_utf8(promshard::encode(Format::OpenMetrics)).unwrap(),
        // SAFETY: leaves at once, as a worker retired by its master does.
        ["exit"] => unsafe { libc::_exit(0) },
        _ => panic!("unknown command {command:?}"),
    }
    "ok".into()
}

fn start_worker() {
    promshard::multiprocess::init(std::env::var("EM_DIR").unwrap()).unwrap();
    // Joins the run now, with a shard of its own: a worker that made its
    // shard only when it first recorded could find every other process
    // of the run gone by then, and rightly start a new run from zero.
    assert!(promshard::multiprocess::shard_dir().is_some());
}

/// What the merged scrape must show: per series (`sample{labels}` as
/// written), the count and the label of the newest exemplar.
#[derive(Default)]
struct Model {
    series: BTreeMap<String, (u64, Option<String>)>,
}

impl Model {
    fn record(&mut self, series: String, label: &str) {
        let entry = self.series.entry(series).or_default();
        entry.0 += 1;
        entry.1 = Some(label.to_owned());
    }

    /// Checks `text` (OpenMetrics); `None` when it matches.
    fn mismatch(&self, text: &str) -> Option<String> {
        let mut seen: BTreeMap<String, (u64, Option<String>)> = BTreeMap::new();
        for line in text.lines().filter(|l| l.starts_with("em_")) {
            let (sample, exemplar) = match line.split_once(" # ") {
                Some((sample, exemplar)) => (sample, Some(exemplar)),
                None => (line, None),
            };
            let (series, value) = sample.rsplit_once(' ').unwrap();
            if series.starts_with("em_latency_sum") || series.starts_with("em_latency_count") {
                continue;
            }
            let label = exemplar.map(|e| {
                let rest = e.strip_prefix("{trace_id=\"").unwrap_or_else(|| panic!("{line}"));
                rest.split_once('"').unwrap().0.to_owned()
            });
            seen.insert(series.to_owned(), (value.parse().unwrap(), label));
        }
        // Buckets are cumulative in the text: the model's are not.
        let mut want = self.series.clone();
        let mut cumulative = 0;
        for (_, le) in VALUES {
            let key = format!("em_latency_bucket{{le=\"{le}\"}}");
            let entry = want.entry(key).or_default();
            cumulative += entry.0;
            entry.0 = cumulative;
        }
        if cumulative == 0 {
            want.retain(|k, _| !k.starts_with("em_latency"));
        }
        // Series shown at zero (fixed labels) carry no exemplar.
        for kind in KINDS {
            want.entry(format!("em_requests_total{{kind=\"{kind}\"}}")).or_default();
        }
        if cumulative == 0 {
            for (_, le) in VALUES {
                want.insert(format!("em_latency_bucket{{le=\"{le}\"}}"), (0, None));
            }
        }
        let seen_routes_other = seen.remove("em_routes_total{route=\"other\"}");
        if seen_routes_other.is_some_and(|(n, e)| n != 0 || e.is_some()) {
            return Some("the bounded label overflowed".into());
        }
        (seen != want).then(|| format!("want {want:#?}\nseen {seen:#?}"))
    }
}

impl Clone for Model {
    fn clone(&self) -> Model {
        Model { series: self.series.clone() }
    }
}

#[test]
fn merged_scrape_shows_the_newest_exemplar_of_any_worker() {
    // Chosen (and printed) here, in the test's own process: the scenario
    // runs in a child whose output is shown only when it fails.
    let seed: u64 = std::env::var("PROMSHARD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos() as u64 | 1);
    if !harness::in_any_child() {
        eprintln!("merged_scrape_shows_the_newest_exemplar_of_any_worker: PROMSHARD_SEED={seed}");
    }
    let setup = harness::Setup { env: vec![("PROMSHARD_SEED".into(), seed.to_string().into())], cwd: None };
    let name = "merged_scrape_shows_the_newest_exemplar_of_any_worker";
    harness::isolated_with(name, Duration::from_secs(240), setup, || {
        let dir = harness::TempDir::new("exemplars-model");
        // SAFETY: set before any thread of ours starts; workers fork from here.
        unsafe { std::env::set_var("EM_DIR", dir.path()) };
        let mut rng = seed;
        let mut next = move |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let spawn = || {
            let mut worker = Worker::spawn_with(start_worker, run_worker, || {});
            assert_eq!(worker.ask("ping", ASK), "ok");
            worker
        };
        let reader = |dir: &std::path::Path| {
            String::from_utf8(promshard::multiprocess::encode_dir(dir, Exposition::from(Format::OpenMetrics))).unwrap()
        };
        let mut model = Model::default();
        let mut workers = vec![spawn(), spawn()];
        let (mut killed, mut exited, mut compactions) = (0, 0, 0);
        let mut log = Vec::new();
        for step in 0..120 {
            let label = format!("s{step}");
            let choice = next(10);
            let what = match choice {
                0..=5 => {
                    let w = next(workers.len());
                    let command = match next(3) {
                        0 => {
                            let kind = KINDS[next(KINDS.len())];
                            model.record(format!("em_requests_total{{kind=\"{kind}\"}}"), &label);
                            format!("c {kind} {label}")
                        }
                        1 => {
                            let route = ROUTES[next(ROUTES.len())];
                            model.record(format!("em_routes_total{{route=\"{route}\"}}"), &label);
                            format!("r {route} {label}")
                        }
                        _ => {
                            let (v, le) = VALUES[next(VALUES.len())];
                            model.record(format!("em_latency_bucket{{le=\"{le}\"}}"), &label);
                            format!("h {v} {label}")
                        }
                    };
                    assert_eq!(workers[w].ask(&command, ASK), "ok");
                    format!("worker {w}: {command}")
                }
                6 if workers.len() < 5 => {
                    workers.push(spawn());
                    "fork".to_owned()
                }
                7 if workers.len() > 1 => {
                    let mut gone = workers.remove(next(workers.len()));
                    gone.kill();
                    killed += 1;
                    "kill".to_owned()
                }
                8 if workers.len() > 1 => {
                    let mut gone = workers.remove(next(workers.len()));
                    assert_eq!(gone.try_ask("exit", ASK), None);
                    assert_eq!(gone.exit(ASK), Some(0));
                    exited += 1;
                    "exit".to_owned()
                }
                _ => {
                    promshard::multiprocess::compact_dir(dir.path());
                    compactions += 1;
                    "compact".to_owned()
                }
            };
            log.push(format!("{what} {:?}", harness::shard_files(dir.path())));
            let text = reader(dir.path());
            if let Some(diff) = model.mismatch(&text) {
                panic!("seed {seed}, step {step} ({}):\n{diff}\nsteps: {log:?}\n{text}", log.last().unwrap());
            }
            if step % 10 == 0 {
                let w = next(workers.len());
                let own = harness::unescape(&workers[w].ask("scrape", ASK));
                if let Some(diff) = model.mismatch(&own) {
                    panic!("seed {seed}, step {step}, worker {w}'s scrape:\n{diff}\nsteps: {log:?}\n{own}");
                }
            }
        }
        // However the steps fell: every worker but one dies, the archive
        // absorbs them, and the last one records nothing new.
        while workers.len() > 1 {
            workers.remove(0).kill();
            killed += 1;
        }
        promshard::multiprocess::compact_dir(dir.path());
        let shards = harness::shard_files(dir.path());
        assert!(shards.contains(&"archive.promshard".to_owned()) && shards.len() == 2, "{shards:?}");
        let text = reader(dir.path());
        if let Some(diff) = model.mismatch(&text) {
            panic!("seed {seed}, after the last compaction:\n{diff}\n{text}");
        }
        let own = harness::unescape(&workers[0].ask("scrape", ASK));
        assert_eq!(model.mismatch(&own), None, "seed {seed}: the last worker's scrape\n{own}");
        eprintln!("seed {seed}: {killed} killed, {exited} exited, {compactions} compactions");
        // The merged protobuf, decoded by Google's library, carries the
        // same exemplars (both merge paths, the archive's included).
        if let Some(python) = support::protobuf::python_with_protobuf() {
            let proto = promshard::multiprocess::encode_dir(dir.path(), Format::Protobuf);
            let text = String::from_utf8(promshard::multiprocess::encode_dir(dir.path(), Format::Prometheus)).unwrap();
            let work = harness::TempDir::new("exemplars-model-proto");
            let decoded = support::protobuf::decode(&python, work.path(), &proto, &text);
            let mut seen = BTreeMap::new();
            for e in decoded.exemplars.as_array().unwrap() {
                let name = e[0].as_str().unwrap();
                if !name.starts_with("em_") {
                    continue;
                }
                let labels: Vec<String> = e[1]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|kv| format!("{}=\"{}\"", kv[0].as_str().unwrap(), kv[1].as_str().unwrap()))
                    .collect();
                assert_eq!(e[2][0][0], "trace_id", "{e}");
                seen.insert(format!("{name}{{{}}}", labels.join(",")), e[2][0][1].as_str().unwrap().to_owned());
            }
            let want: BTreeMap<String, String> =
                model.series.iter().filter_map(|(k, (_, e))| Some((k.clone(), e.clone()?))).collect();
            assert_eq!(seen, want, "seed {seed}: protobuf exemplars");
        } else {
            support::skip_or_fail(support::protobuf::PROTOBUF_MISSING);
        }
        // The merged text is valid OpenMetrics to a strict parser.
        if let Some(python) = support::python_with_prometheus_client() {
            let check = "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
                         n = sum(1 for f in text_string_to_metric_families(sys.stdin.read()) for s in f.samples if s.exemplar)\n\
                         print(n)";
            let exemplars: usize = support::run_python(&python, check, &text).trim().parse().unwrap();
            let want = model.series.values().filter(|(_, e)| e.is_some()).count();
            assert_eq!(exemplars, want, "{text}");
        } else {
            support::skip_or_fail(support::PYTHON_MISSING);
        }
    });
}
