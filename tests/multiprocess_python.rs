//! Python interop against the real oracle: several Python worker processes
//! write prometheus_client's multiprocess `.db` files, Python's own
//! `MultiProcessCollector` renders the directory, and our
//! `multiprocess::encode_dir` of the same directory must say exactly the
//! same thing, sample by sample, when both texts go through Python's own
//! 0.0.4 parser. promtool must then accept our text without a lint.
//!
//! This binary never records a metric of its own and never calls
//! `multiprocess::init`: `encode_dir` only reads.
//!
//! A missing python3/prometheus_client or promtool skips loudly, or fails
//! under `PROMSHARD_ORACLES=require` (see `support`).

mod support;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use promshard::Format;
use support::{
    PROMTOOL_MISSING, PYTHON_MISSING, promtool, python_with_prometheus_client, run_python, run_with_stdin,
    skip_or_fail, unhex,
};

/// Python workers: the parent declares every metric (unlabelled ones get a
/// file with a zero right away, as prometheus_client does), then forks four
/// workers one after the other, each recording known amounts, so that the
/// `mostrecent` timestamps increase with the worker index. Worker 3 is then
/// marked dead with `mark_process_dead`, which deletes its `live*` gauge
/// files (and nothing else). Prints `PIDS <parent> <w0> <w1> <w2> <w3>`.
const PY_WORKERS: &str = r#"
import os
from prometheus_client import Counter, Gauge, Histogram, Summary
from prometheus_client.multiprocess import mark_process_dead

ODD = ['say "hi"', 'back\\slash', 'new\nline', 'caf\u00e9 \u4e2d \U0001F600', 'tab\there', '']
ROUTE = '/caf\u00e9?q="x"&y=\\n'

jobs = Counter('py_jobs', 'Jobs done: "quoted", back\\slash, caf\u00e9\nand a second line.', ['kind', 'worker'])
batch = Gauge('py_worker_batch', 'Last batch per worker.', ['queue'], multiprocess_mode='all')
rss = Gauge('py_worker_rss_bytes', 'Resident memory per live worker.', multiprocess_mode='liveall')
inflight = Gauge('py_inflight_requests', 'Requests in flight.', multiprocess_mode='livesum')
peak = Gauge('py_peak_queue_depth', 'Deepest queue seen.', ['queue'], multiprocess_mode='max')
coldest = Gauge('py_lowest_temperature_celsius', 'Lowest temperature seen.', multiprocess_mode='min')
queued = Gauge('py_queued_items', 'Items queued.', ['queue'], multiprocess_mode='sum')
config = Gauge('py_config_version', 'Config version last loaded.', multiprocess_mode='mostrecent')
live_config = Gauge('py_live_config_version', 'Config version a live worker loaded last.',
                    multiprocess_mode='livemostrecent')
latency = Histogram('py_request_duration_seconds', 'Request latency.', ['route'],
                    buckets=[1e-05, 0.005, 0.25, 1.0, 10.0])
payload = Summary('py_payload_size_bytes', 'Payload sizes.', ['route'])
# Created but never set: a `mostrecent` series with timestamp 0 is left
# out, so the family has no samples at all.
never_set = Gauge('py_never_set_version', 'Never set.', ['source'], multiprocess_mode='mostrecent')

OBSERVATIONS = [
    [3e-06, 0.004, 0.1],
    [1e-05, 0.75, 50.0],
    [0.005, 0.005, 5.0, 2e-06],
    [0.3, 1e-07, 11.0],
]

def work(i):
    for j, kind in enumerate(ODD):
        jobs.labels(kind, str(i % 2)).inc(j + i + 0.5)
    jobs.labels('shared', '-').inc(i + 1)
    batch.labels('fast').set(i * 1.5)
    batch.labels(ODD[2]).set(-i)
    rss.set(1000 * (i + 1))
    inflight.inc(i + 1)
    peak.labels('fast').set([3, 9, -2, 7][i])
    coldest.set([-5.5, 2, -40.25, 0.5][i])
    queued.labels('fast').inc(i + 0.25)
    queued.labels('slow').dec(1)
    config.set(100 + i)
    live_config.set(200 + i)
    for x in OBSERVATIONS[i]:
        latency.labels(ROUTE).observe(x)
    payload.labels(ROUTE).observe(512 * (i + 1))
    payload.labels(ROUTE).observe(0.5)
    jobs.labels('idle', '9')
    never_set.labels('file')
    batch.labels('nan').set(float('nan') if i == 0 else -float('inf'))
    peak.labels('inf').set(float('inf') if i == 1 else -1e300)
    # The same histogram declared with other buckets by odd workers (as
    # two releases of a worker would): bounds merge by value.
    mixed = Histogram('py_mixed_buckets_seconds', 'Buckets differ by release.',
                      buckets=[0.1, 1.0] if i % 2 == 0 else [0.5, 1.0, 2.0], registry=None)
    for x in (0.05, 0.7, 1.5):
        mixed.observe(x * (i + 1))

pids = []
for i in range(4):
    pid = os.fork()
    if pid == 0:
        try:
            work(i)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert status == 0, status
    pids.append(pid)
mark_process_dead(pids[3])
print('PIDS', os.getpid(), *pids)
"#;

/// Python's own view of the directory: `generate_latest` over a registry
/// holding only a `MultiProcessCollector`.
const PY_COLLECT: &str = r#"
import sys
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

registry = CollectorRegistry()
MultiProcessCollector(registry)
sys.stdout.buffer.write(generate_latest(registry))
"#;

/// Parses stdin with Python's 0.0.4 text parser and prints
/// `F <family> <type> <hex help>` per family and
/// `S <sample name> <repr(value)> <label>=<hex value>…` per sample.
const PY_PARSE: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families

def hx(s):
    return s.encode('utf-8').hex()

out = []
for family in text_string_to_metric_families(sys.stdin.buffer.read().decode('utf-8')):
    out.append('\t'.join(['F', family.name, family.type, hx(family.documentation)]))
    for s in family.samples:
        out.append('\t'.join(['S', s.name, repr(float(s.value))] + [k + '=' + hx(v) for k, v in s.labels.items()]))
sys.stdout.write(''.join(line + '\n' for line in out))
"#;

/// A directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("promshard-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a Python program with `PROMETHEUS_MULTIPROC_DIR` set to `dir`.
fn run_in_dir(python: &Path, code: &str, dir: &Path) -> String {
    let output = Command::new(python)
        .args(["-c", code])
        .env("PROMETHEUS_MULTIPROC_DIR", dir)
        .env_remove("prometheus_multiproc_dir")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(output.status.success(), "python failed ({}):\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("python printed UTF-8")
}

type Labels = Vec<(String, String)>;

/// A sample name, its labels and the value Python must give it.
type Check<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<f64>);

/// One exposition as Python's parser read it.
#[derive(Default)]
struct Parsed {
    /// Family name → (type, help).
    families: BTreeMap<String, (String, String)>,
    /// (sample name, sorted labels) → value. A histogram's `le` is
    /// normalised through `f64` (Python prints `1e-05`, we may print
    /// `1e-5`: the same bound).
    samples: BTreeMap<(String, Labels), f64>,
    /// Families and samples seen twice: a bug on whichever side.
    duplicates: Vec<String>,
}

fn normalise_le(value: &str) -> String {
    let bound: f64 = match value {
        "+Inf" => f64::INFINITY,
        other => other.parse().unwrap_or_else(|_| panic!("le={other:?} is not a float")),
    };
    format!("{bound:?}")
}

fn parse_with_python(python: &Path, text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    for line in run_python(python, PY_PARSE, text).lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["F", name, kind, help] => {
                if parsed.families.insert((*name).to_owned(), ((*kind).to_owned(), unhex(help))).is_some() {
                    parsed.duplicates.push(format!("family {name}"));
                }
            }
            ["S", name, value, labels @ ..] => {
                let mut labels: Labels = labels
                    .iter()
                    .map(|pair| {
                        let (k, v) = pair.split_once('=').expect("label=hex");
                        let v = unhex(v);
                        let v = if k == "le" { normalise_le(&v) } else { v };
                        (k.to_owned(), v)
                    })
                    .collect();
                labels.sort();
                let value: f64 = value.parse().unwrap_or_else(|_| panic!("value {value:?}"));
                let key = ((*name).to_owned(), labels);
                if parsed.samples.contains_key(&key) {
                    parsed.duplicates.push(format!("sample {}", show(&key)));
                }
                parsed.samples.insert(key, value);
            }
            _ => panic!("unexpected line from the parse script: {line:?}"),
        }
    }
    parsed
}

/// `name{k="v",…}` with values in Rust's debug escaping, for messages.
fn show((name, labels): &(String, Labels)) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", pairs.join(","))
}

/// Numerically equal. Sums of observations that are not exact binary
/// fractions (0.004 + 3e-06 + …) may be added in another order (Python
/// globs the directory in its on-disk order, we read it sorted by name),
/// which can change the last bit; 1e-12 relative allows that and nothing
/// more.
fn same_value(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

/// Every difference between our parsed exposition and Python's, one per
/// line; empty when they agree.
fn differences(ours: &Parsed, theirs: &Parsed) -> String {
    let mut out = String::new();
    for dup in &ours.duplicates {
        let _ = writeln!(out, "ours has a duplicate {dup}");
    }
    for dup in &theirs.duplicates {
        let _ = writeln!(out, "Python's has a duplicate {dup}");
    }
    for (name, (kind, help)) in &theirs.families {
        match ours.families.get(name) {
            None => _ = writeln!(out, "family {name} ({kind}) only in Python's output"),
            Some((our_kind, our_help)) => {
                if our_kind != kind {
                    let _ = writeln!(out, "family {name}: type ours {our_kind:?}, Python's {kind:?}");
                }
                if our_help != help {
                    let _ = writeln!(out, "family {name}: help ours {our_help:?}, Python's {help:?}");
                }
            }
        }
    }
    for (name, (kind, _)) in &ours.families {
        if !theirs.families.contains_key(name) {
            let _ = writeln!(out, "family {name} ({kind}) only in our output");
        }
    }
    for (key, value) in &theirs.samples {
        match ours.samples.get(key) {
            None => _ = writeln!(out, "sample {} = {value} only in Python's output", show(key)),
            Some(ours) if !same_value(*ours, *value) => {
                let _ = writeln!(out, "sample {}: ours {ours:?}, Python's {value:?}", show(key));
            }
            Some(_) => {}
        }
    }
    for (key, value) in &ours.samples {
        if !theirs.samples.contains_key(key) {
            let _ = writeln!(out, "sample {} = {value} only in our output", show(key));
        }
    }
    out
}

/// Sorted labels, `le` normalised as [`Parsed`] keys them.
fn labels(pairs: &[(&str, &str)]) -> Labels {
    let mut labels: Labels =
        pairs.iter().map(|&(k, v)| (k.to_owned(), if k == "le" { normalise_le(v) } else { v.to_owned() })).collect();
    labels.sort();
    labels
}

#[test]
fn encode_dir_matches_python_multiprocess_collector() {
    let Some(python) = python_with_prometheus_client() else {
        return skip_or_fail(PYTHON_MISSING);
    };
    let dir = TempDir::new("python-interop");
    let printed = run_in_dir(&python, PY_WORKERS, &dir.0);
    let pids: Vec<String> = printed
        .lines()
        .find_map(|l| l.strip_prefix("PIDS "))
        .unwrap_or_else(|| panic!("no PIDS line in {printed:?}"))
        .split(' ')
        .map(str::to_owned)
        .collect();
    let (parent, workers) = (&pids[0], &pids[1..]);
    assert_eq!(workers.len(), 4, "{pids:?}");
    // mark_process_dead removed the dead worker's live gauge files only.
    let dead = &workers[3];
    for mode in ["liveall", "livesum", "livemostrecent"] {
        assert!(!dir.0.join(format!("gauge_{mode}_{dead}.db")).exists(), "{mode}");
        assert!(dir.0.join(format!("gauge_{mode}_{}.db", workers[2])).exists(), "{mode}");
    }
    for kept in ["counter", "histogram", "summary", "gauge_all", "gauge_max", "gauge_min", "gauge_mostrecent"] {
        assert!(dir.0.join(format!("{kept}_{dead}.db")).exists(), "{kept}");
    }

    let python_text = run_in_dir(&python, PY_COLLECT, &dir.0);
    let our_text = String::from_utf8(promshard::multiprocess::encode_dir(&dir.0, Format::Prometheus))
        .expect("exposition is UTF-8");
    // Reading changed nothing: Python's second look sees the same text.
    assert_eq!(run_in_dir(&python, PY_COLLECT, &dir.0), python_text, "encode_dir must only read");

    let theirs = parse_with_python(&python, &python_text);
    let ours = parse_with_python(&python, &our_text);

    // The oracle did what the workers meant (so that two empty or equally
    // wrong outputs cannot agree by accident).
    let route = "/caf\u{e9}?q=\"x\"&y=\\n";
    let checks: Vec<Check<'_>> = vec![
        // 'new\nline' is ODD[2]: j = 2, workers 0 and 2 → (2+0+.5) + (2+2+.5).
        ("py_jobs_total", vec![("kind", "new\nline"), ("worker", "0")], Some(7.0)),
        ("py_jobs_total", vec![("kind", "caf\u{e9} \u{4e2d} \u{1F600}"), ("worker", "1")], Some(11.0)),
        ("py_jobs_total", vec![("kind", "say \"hi\""), ("worker", "1")], Some(5.0)),
        ("py_jobs_total", vec![("kind", "back\\slash"), ("worker", "0")], Some(5.0)),
        ("py_jobs_total", vec![("kind", "shared"), ("worker", "-")], Some(10.0)),
        // `all` keeps every process's series, the dead worker's too.
        ("py_worker_batch", vec![("queue", "fast"), ("pid", &workers[3])], Some(4.5)),
        ("py_worker_batch", vec![("queue", "new\nline"), ("pid", &workers[1])], Some(-1.0)),
        // `liveall`: the marked-dead worker's series is gone, the parent's
        // zero (created with the metric) is there.
        ("py_worker_rss_bytes", vec![("pid", &workers[2])], Some(3000.0)),
        ("py_worker_rss_bytes", vec![("pid", dead)], None),
        ("py_worker_rss_bytes", vec![("pid", parent)], Some(0.0)),
        // `livesum`: 1 + 2 + 3, worker 3's 4 removed.
        ("py_inflight_requests", vec![], Some(6.0)),
        ("py_peak_queue_depth", vec![("queue", "fast")], Some(9.0)),
        ("py_lowest_temperature_celsius", vec![], Some(-40.25)),
        ("py_queued_items", vec![("queue", "fast")], Some(7.0)),
        ("py_queued_items", vec![("queue", "slow")], Some(-4.0)),
        // `mostrecent` keeps the dead worker's newer value, the live mode
        // falls back to the newest live one.
        ("py_config_version", vec![], Some(103.0)),
        ("py_live_config_version", vec![], Some(202.0)),
        // Observations ≤ 1e-05: 3e-06, 1e-05, 2e-06, 1e-07.
        ("py_request_duration_seconds_bucket", vec![("route", route), ("le", "1e-05")], Some(4.0)),
        ("py_request_duration_seconds_bucket", vec![("route", route), ("le", "0.005")], Some(7.0)),
        ("py_request_duration_seconds_bucket", vec![("route", route), ("le", "0.25")], Some(8.0)),
        ("py_request_duration_seconds_bucket", vec![("route", route), ("le", "10.0")], Some(11.0)),
        ("py_request_duration_seconds_bucket", vec![("route", route), ("le", "+Inf")], Some(13.0)),
        ("py_request_duration_seconds_count", vec![("route", route)], Some(13.0)),
        ("py_payload_size_bytes_count", vec![("route", route)], Some(8.0)),
        ("py_payload_size_bytes_sum", vec![("route", route)], Some(5122.0)),
        ("py_jobs_total", vec![("kind", "idle"), ("worker", "9")], Some(0.0)),
        ("py_worker_batch", vec![("queue", "nan"), ("pid", &workers[2])], Some(f64::NEG_INFINITY)),
        ("py_peak_queue_depth", vec![("queue", "inf")], Some(f64::INFINITY)),
        // 0.05, 0.7, 1.5 times 1, 2, 3 and 4, in whichever buckets each
        // worker had: 0.05 ≤ 0.1; 0.1, 0.2 ≤ 0.5; 0.7, 0.15 ≤ 1.0; 1.4 ≤ 2.0.
        ("py_mixed_buckets_seconds_bucket", vec![("le", "0.1")], Some(1.0)),
        ("py_mixed_buckets_seconds_bucket", vec![("le", "0.5")], Some(3.0)),
        ("py_mixed_buckets_seconds_bucket", vec![("le", "1.0")], Some(5.0)),
        ("py_mixed_buckets_seconds_bucket", vec![("le", "2.0")], Some(6.0)),
        ("py_mixed_buckets_seconds_count", vec![], Some(12.0)),
    ];
    for (name, pairs, want) in &checks {
        let key = (name.to_string(), labels(pairs));
        assert_eq!(theirs.samples.get(&key).copied(), *want, "Python's {}:\n{python_text}", show(&key));
    }
    let kinds: BTreeMap<&str, &str> = theirs.families.iter().map(|(n, (k, _))| (n.as_str(), k.as_str())).collect();
    let want_kinds = [
        ("py_jobs", "counter"),
        ("py_worker_batch", "gauge"),
        ("py_worker_rss_bytes", "gauge"),
        ("py_inflight_requests", "gauge"),
        ("py_peak_queue_depth", "gauge"),
        ("py_lowest_temperature_celsius", "gauge"),
        ("py_queued_items", "gauge"),
        ("py_config_version", "gauge"),
        ("py_live_config_version", "gauge"),
        ("py_request_duration_seconds", "histogram"),
        ("py_payload_size_bytes", "summary"),
        ("py_never_set_version", "gauge"),
        ("py_mixed_buckets_seconds", "histogram"),
    ];
    assert_eq!(kinds, BTreeMap::from(want_kinds), "Python's families");

    let diff = differences(&ours, &theirs);
    assert!(
        diff.is_empty(),
        "encode_dir differs from Python's MultiProcessCollector:\n{diff}\n\
         --- ours ---\n{our_text}\n--- Python's ---\n{python_text}"
    );
    assert_eq!(ours.samples.len(), theirs.samples.len());

    let Some(promtool) = promtool() else {
        return skip_or_fail(PROMTOOL_MISSING);
    };
    let output = run_with_stdin(&promtool, &[OsStr::new("check"), OsStr::new("metrics")], &our_text);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
        "promtool check metrics rejected or linted our merged output ({}):\n\
         --- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n--- input ---\n{our_text}",
        output.status,
    );
}
