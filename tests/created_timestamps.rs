//! Created timestamps: when a counter's or histogram's counts started, as
//! OpenMetrics `_created` samples (when asked for) and protobuf
//! `created_timestamp` fields (always). A scraper that takes them as the
//! start of the series (Prometheus' created-timestamp zero ingestion)
//! sees a reset whenever the value goes up, so within a run it must
//! never change: not as workers come, die and are compacted into the
//! archive, not between scrapers, not between the protobuf and the text.
//! It changes only when the counts restart from zero.
//!
//! Read by tools we did not write: prometheus_client's strict OpenMetrics
//! parser and Google's protobuf for Python (the tests print SKIPPED
//! without them, or fail under `PROMSHARD_ORACLES=require`).

mod harness;
mod support;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use harness::Worker;
use promshard::{Counter, Exposition, Format, Gauge, Histogram, Protocol, metric};

/// Jobs run.
#[metric(labels(queue = ["fast", "slow"]))]
static CT_JOBS_TOTAL: Counter;

/// Job time.
#[metric(unit = "seconds", buckets = [0.1, 1.0])]
static CT_JOB_SECONDS: Histogram;

/// Jobs waiting.
#[metric]
static CT_WAITING: Gauge;

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn open_metrics(created: bool) -> Exposition {
    Exposition::from(Format::OpenMetrics).with_created_samples(created)
}

/// `(sample name with labels, value)` of every `_created` line of `text`.
fn created_lines(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let name = series.split('{').next()?;
            name.ends_with("_created").then(|| (series.to_owned(), value.parse().unwrap()))
        })
        .collect()
}

/// The one value every `_created` sample of `text` has (panics if they
/// differ, or if a counter or histogram series has none).
fn created_value(text: &str) -> f64 {
    let lines = created_lines(text);
    assert!(!lines.is_empty(), "no _created samples in\n{text}");
    let first = lines[0].1;
    assert!(lines.iter().all(|(_, v)| *v == first), "created timestamps differ:\n{lines:?}\n{text}");
    // Every counter series' and every histogram series' sample has one,
    // right after it, with the same labels.
    let all: Vec<&str> = text.lines().collect();
    for (i, line) in all.iter().enumerate() {
        let Some((series, _)) = line.rsplit_once(' ') else { continue };
        let (name, labels) = series.split_once('{').map_or((series, ""), |(n, l)| (n, l));
        let base = if let Some(base) = name.strip_suffix("_total") {
            base
        } else if let Some(base) = name.strip_suffix("_sum") {
            base
        } else {
            continue;
        };
        if !base.starts_with("ct_") {
            continue;
        }
        let want = if labels.is_empty() { format!("{base}_created") } else { format!("{base}_created{{{labels}") };
        let next = all.get(i + 1).and_then(|l| l.rsplit_once(' ')).map(|(s, _)| s);
        assert_eq!(next, Some(want.as_str()), "line {i} ({line}) is not followed by its _created in\n{text}");
    }
    first
}

/// Python's strict OpenMetrics parser: every `_created` sample it read,
/// as `name{labels} value`.
fn python_created(python: &Path, text: &str) -> Vec<String> {
    let code = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        if s.name.endswith('_created'):
            labels = ','.join('%s="%s"' % kv for kv in sorted(s.labels.items()))
            out.append('%s{%s} %r' % (s.name, labels, s.value))
print('\n'.join(sorted(out)))
"#;
    support::run_python(python, code, text).lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

/// In process memory: the counts started when the metrics were laid
/// out, before the first recording; every series has that start, in
/// every scrape, in OpenMetrics (when asked for) and protobuf alike,
/// never in the Prometheus text formats.
#[test]
fn memory_mode_created_timestamps() {
    harness::isolated("memory_mode_created_timestamps", Duration::from_secs(60), || {
        let before = now();
        CT_JOBS_TOTAL.with(("fast",)).inc();
        CT_JOB_SECONDS.observe(0.5);
        CT_WAITING.set(3.0);
        let after = now();

        let plain = String::from_utf8(promshard::encode(open_metrics(false))).unwrap();
        assert!(created_lines(&plain).is_empty(), "_created samples without asking:\n{plain}");
        let text = String::from_utf8(promshard::encode(open_metrics(true))).unwrap();
        let created = created_value(&text);
        assert!(created >= before - 1.0 && created <= after, "created {created} outside [{before}, {after}]");
        assert!(!text.contains("ct_waiting_created"), "a gauge has no start:\n{text}");
        // The unrecorded series started with the others.
        assert!(text.contains("ct_jobs_created{queue=\"slow\"}"), "{text}");
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(20));
            CT_JOBS_TOTAL.with(("slow",)).inc();
            let again = String::from_utf8(promshard::encode(open_metrics(true))).unwrap();
            assert_eq!(created_value(&again), created, "the start moved between scrapes");
        }

        // The process-wide switch reaches every way of asking, text
        // formats excepted.
        promshard::set_created_samples(true);
        let (negotiated, _) = promshard::render(Some("application/openmetrics-text;version=1.0.0"));
        assert_eq!(created_value(&String::from_utf8(negotiated).unwrap()), created);
        for how in [Protocol::PrometheusText0_0_4, Protocol::PrometheusText1_0_0] {
            let text = String::from_utf8(promshard::encode(Exposition::new(how, promshard::Escaping::Underscores)));
            let text = text.unwrap();
            assert!(!text.contains("_created"), "{how:?} has _created samples:\n{text}");
        }
        promshard::set_created_samples(false);

        let Some(python) = support::python_with_prometheus_client() else {
            support::skip_or_fail(support::PYTHON_MISSING);
            return;
        };
        let theirs = python_created(&python, &text);
        let ours: Vec<String> = text
            .lines()
            .filter(|l| l.split(['{', ' ']).next().is_some_and(|n| n.ends_with("_created")))
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').unwrap();
                let series = if series.contains('{') { series.to_owned() } else { format!("{series}{{}}") };
                format!("{series} {:?}", value.parse::<f64>().unwrap())
            })
            .collect();
        let mut ours = ours;
        ours.sort();
        assert_eq!(theirs, ours, "Python's OpenMetrics parser read other _created samples");
        assert!(theirs.len() >= 3, "{theirs:?}");

        protobuf_agrees(
            &text,
            "memory mode",
            || promshard::encode(Format::Protobuf),
            || promshard::encode(Format::Prometheus),
        );
    });
}

/// The protobuf exposition's created timestamps, decoded by Google's
/// protobuf, are the OpenMetrics `_created` samples of `om_text`, one for
/// one; the rest of the protobuf agrees with the text as everywhere.
fn protobuf_agrees(om_text: &str, what: &str, proto: impl Fn() -> Vec<u8>, text: impl Fn() -> Vec<u8>) {
    let Some(python) = support::protobuf::python_with_protobuf() else {
        support::skip_or_fail(support::protobuf::PROTOBUF_MISSING);
        return;
    };
    let work = harness::TempDir::new("created-proto");
    let decoded = support::protobuf::decode(&python, work.path(), &proto(), &String::from_utf8(text()).unwrap());
    let ours: Vec<(String, f64)> = decoded
        .created
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c[0].as_str().unwrap().starts_with("ct_"))
        .map(|c| {
            let labels: Vec<String> = c[1]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| format!("{}=\"{}\"", p[0].as_str().unwrap(), p[1].as_str().unwrap()))
                .collect();
            let name = c[0].as_str().unwrap();
            let series = if labels.is_empty() { name.to_owned() } else { format!("{name}{{{}}}", labels.join(",")) };
            (series, hex_float(c[2].as_str().unwrap()))
        })
        .collect();
    let mut want: Vec<(String, f64)> =
        created_lines(om_text).into_iter().filter(|(s, _)| s.starts_with("ct_")).collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    let mut ours = ours;
    ours.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(ours, want, "{what}: protobuf created timestamps differ from the OpenMetrics _created samples");
}

/// Python's `float.hex()` back to a float.
fn hex_float(hex: &str) -> f64 {
    let (negative, hex) = hex.strip_prefix('-').map_or((false, hex), |h| (true, h));
    let hex = hex.strip_prefix("0x").expect("float.hex form");
    let (mantissa, exponent) = hex.split_once('p').expect("float.hex form");
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut value = u64::from_str_radix(int, 16).unwrap() as f64;
    for (i, digit) in frac.chars().enumerate() {
        value += digit.to_digit(16).unwrap() as f64 / 16f64.powi(i as i32 + 1);
    }
    let value = value * 2f64.powi(exponent.parse().unwrap());
    if negative { -value } else { value }
}

/// A worker of the run: `jobs` records, `scrape` answers its own merged
/// OpenMetrics text with `_created` samples (and compacts dead shards, as
/// every recording process's scrape does), `proto` its protobuf as hex.
fn run_worker(command: &str) -> String {
    match command {
        "jobs" => {
            CT_JOBS_TOTAL.with(("fast",)).inc();
            CT_JOB_SECONDS.observe(0.05);
            now().to_string()
        }
        "scrape" => String::from_utf8(promshard::encode(open_metrics(true))).unwrap(),
        "proto" => promshard::encode(Format::Protobuf).iter().map(|b| format!("{b:02x}")).collect(),
        "text" => String::from_utf8(promshard::encode(Format::Prometheus)).unwrap(),
        // SAFETY: leaves at once, as a worker retired by its master does.
        "exit" => unsafe { libc::_exit(0) },
        other => panic!("unknown command {other:?}"),
    }
}

fn start_worker() {
    let dir = std::env::var("CT_DIR").unwrap();
    promshard::multiprocess::init(dir).unwrap();
}

/// Seeded churn of worker processes in one directory: each scrape, from
/// any live worker or from a reader with no shard, shows the same start,
/// no later than the first recording of the run, while workers exit, are
/// killed and are folded into the archive. When every process of the run
/// is gone, the next one starts a new run: counts from zero, a later
/// start.
#[test]
fn multiprocess_created_is_the_run_start() {
    harness::isolated("multiprocess_created_is_the_run_start", Duration::from_secs(120), || {
        let dir = harness::TempDir::new("created-run");
        // SAFETY: set before any thread of ours starts; the workers fork
        // from here and read it.
        unsafe { std::env::set_var("CT_DIR", dir.path()) };
        let seed = std::env::var("PROMSHARD_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos() as u64 | 1);
        eprintln!("multiprocess_created_is_the_run_start: PROMSHARD_SEED={seed}");
        let mut rng = seed;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let timeout = Duration::from_secs(20);
        let reader_text =
            |dir: &Path| String::from_utf8(promshard::multiprocess::encode_dir(dir, open_metrics(true))).unwrap();

        let run_began = now();
        let mut workers = vec![Worker::spawn_with(start_worker, run_worker, || {})];
        let first_record: f64 = workers[0].ask("jobs", timeout).parse().unwrap();
        let mut jobs = 1u64;
        let created = created_value(&harness::unescape(&workers[0].ask("scrape", timeout)));
        assert!(
            created >= run_began - 1.0 && created <= first_record,
            "seed {seed}: run start {created} not in [{run_began}, {first_record}]"
        );
        let mut compacted = false;
        for step in 0..40 {
            match next(6) {
                0 | 1 if workers.len() < 6 => {
                    let mut worker = Worker::spawn_with(start_worker, run_worker, || {});
                    worker.ask("jobs", timeout);
                    jobs += 1;
                    workers.push(worker);
                }
                2 if workers.len() > 1 => {
                    let mut gone = workers.remove(next(workers.len() as u64) as usize);
                    if next(2) == 0 {
                        gone.kill();
                    } else {
                        // Its command pipe is open in the workers forked
                        // after it too: told to leave, not hung up on.
                        assert_eq!(gone.try_ask("exit", timeout), None);
                        assert_eq!(gone.exit(timeout), Some(0));
                    }
                }
                _ => {
                    let i = next(workers.len() as u64) as usize;
                    workers[i].ask("jobs", timeout);
                    jobs += 1;
                }
            }
            let i = next(workers.len() as u64) as usize;
            let text = harness::unescape(&workers[i].ask("scrape", timeout));
            assert_eq!(created_value(&text), created, "seed {seed}, step {step}: a worker's scrape moved the start");
            let total = harness::value_in(&text, "ct_jobs_total", &[("queue", "fast")]).unwrap();
            assert_eq!(total, jobs as f64, "seed {seed}, step {step}: counts");
            let read = reader_text(dir.path());
            assert_eq!(created_value(&read), created, "seed {seed}, step {step}: a reader's scrape moved the start");
            compacted |= dir.path().join("archive.promshard").exists();
        }
        assert!(compacted, "seed {seed}: no dead worker was ever compacted; the archive was not tested");
        let om = harness::unescape(&workers[0].ask("scrape", timeout));
        let proto: Vec<u8> = {
            let hex = workers[0].ask("proto", timeout);
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
        };
        let text = harness::unescape(&workers[0].ask("text", timeout));
        protobuf_agrees(&om, "multiprocess", || proto.clone(), || text.clone().into_bytes());

        // Every process of the run gone, and folded into the archive: a
        // reader (a sidecar outliving its pool) still shows the run.
        for mut worker in workers.drain(..) {
            worker.kill();
        }
        promshard::multiprocess::compact_dir(dir.path());
        assert_eq!(harness::shard_files(dir.path()), ["archive.promshard"], "seed {seed}: not all compacted");
        let read = reader_text(dir.path());
        assert_eq!(created_value(&read), created, "seed {seed}: the archive lost the run's start");
        assert_eq!(harness::value_in(&read, "ct_jobs_total", &[("queue", "fast")]), Some(jobs as f64), "{read}");
        // The next process starts another run.
        std::thread::sleep(Duration::from_millis(20));
        let second_began = now();
        let mut worker = Worker::spawn_with(start_worker, run_worker, || {});
        worker.ask("jobs", timeout);
        let text = harness::unescape(&worker.ask("scrape", timeout));
        let second = created_value(&text);
        assert!(second >= second_began - 0.001, "seed {seed}: the new run's start {second} is before it began");
        assert!(second > created, "seed {seed}: a new run kept the old start");
        assert_eq!(harness::value_in(&text, "ct_jobs_total", &[("queue", "fast")]), Some(1.0), "{text}");
        let mut joined = Worker::spawn_with(start_worker, run_worker, || {});
        joined.ask("jobs", timeout);
        assert_eq!(
            created_value(&harness::unescape(&joined.ask("scrape", timeout))),
            second,
            "seed {seed}: a joiner moved the start"
        );
    });
}
