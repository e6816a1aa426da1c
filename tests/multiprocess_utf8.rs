//! UTF-8 names across processes: a Rust worker's shard and Python
//! prometheus_client workers' `.db` files, both with OpenTelemetry-style
//! names, merge into one family per name and one series per bucket under
//! every escaping scheme; the shard is written as format version 3 (a
//! shard with legacy names only stays version 2); families of different
//! names that a scheme writes alike are decided as documented.
//!
//! This binary records only in its re-executed child; the test itself
//! only reads the directory (`multiprocess::encode_dir`).

mod harness;
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use promshard::{Counter, Escaping, Exposition, Gauge, Histogram, Protocol, metric};
use support::{PYTHON_MISSING, python_with_prometheus_client, run_python, skip_or_fail};

/// HTTP server requests, by route.
#[metric(name = "http.server.requests", labels("http.route" = ["/a", "/b"]))]
static REQUESTS: Counter;

/// Duration of HTTP server requests.
#[metric(name = "http.server.request.duration", buckets = [0.1, 1e6])]
static DURATION: Histogram;

/// Queue depth, with a name Python's `queue.depth` is written as by
/// scrapers without UTF-8 support.
#[metric(mode = max)]
static QUEUE_DEPTH: Gauge;

/// The Python side: a dead worker's counter, histogram and gauge.
const PYTHON: &str = r#"
from prometheus_client import Counter, Gauge, Histogram
Counter('http.server.requests', 'HTTP server requests, by route.', ['http.route']).labels('/a').inc(2)
h = Histogram('http.server.request.duration', 'Duration of HTTP server requests.', buckets=[0.1, 1e6])
h.observe(0.05)
h.observe(5e5)
Gauge('queue.depth', 'Depth.', multiprocess_mode='max').set(4)
"#;

fn run_python_in(python: &Path, dir: &Path) {
    let output = Command::new(python)
        .args(["-c", PYTHON])
        .env("PROMETHEUS_MULTIPROC_DIR", dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "python: {}", String::from_utf8_lossy(&output.stderr));
}

/// Python's parser of the text exposition, as `name{k=v,…} value` lines.
const PARSE: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ','.join('%s=%s' % kv for kv in sorted(s.labels.items()))
        print('%s{%s} %r' % (s.name, labels, float(s.value)))
"#;

#[test]
fn rust_and_python_workers_merge_in_every_scheme() {
    const NAME: &str = "rust_and_python_workers_merge_in_every_scheme";
    let dir = std::env::temp_dir().join(format!("promshard-mp-utf8-{}", std::process::id()));
    if harness::in_any_child() {
        harness::isolated(NAME, Duration::from_secs(60), || {
            REQUESTS.with(("/a",)).inc();
            DURATION.observe(2.0);
            QUEUE_DEPTH.set(1.0);
        });
        return;
    }
    let Some(python) = python_with_prometheus_client() else { return skip_or_fail(PYTHON_MISSING) };
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    harness::set_mode(&dir, 0o700);
    run_python_in(&python, &dir);
    let setup = harness::Setup { env: vec![(promshard::multiprocess::DIR_ENV.into(), dir.clone().into())], cwd: None };
    harness::isolated_with(NAME, Duration::from_secs(60), setup, || unreachable!("the parent runs no scenario"));

    // The worker's shard holds UTF-8 names: format version 3.
    let shards: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "promshard"))
        .collect();
    assert_eq!(shards.len(), 1, "{shards:?}");
    let bytes = std::fs::read(&shards[0]).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 3);

    let text = |e| {
        let x = Exposition::new(Protocol::PrometheusText1_0_0, e);
        String::from_utf8(promshard::multiprocess::encode_dir(&dir, x)).unwrap()
    };
    let utf8 = text(Escaping::AllowUtf8);
    for line in [
        "{\"http.server.requests_total\",\"http.route\"=\"/a\"} 3",
        "{\"http.server.requests_total\",\"http.route\"=\"/b\"} 0",
        // Python's `1e+06` and ours are one bound: one series per bucket.
        "{\"http.server.request.duration_bucket\",le=\"0.1\"} 1",
        "{\"http.server.request.duration_bucket\",le=\"1e+06\"} 3",
        "{\"http.server.request.duration_bucket\",le=\"+Inf\"} 3",
        "{\"http.server.request.duration_count\"} 3",
        "{\"queue.depth\"} 4",
        "queue_depth 1",
    ] {
        assert_eq!(utf8.lines().filter(|l| *l == line).count(), 1, "{line:?} once in:\n{utf8}");
    }
    assert_eq!(utf8.matches("le=\"1e+06\"").count(), 1, "{utf8}");
    // Python's parser reads it, every sample once.
    let parsed = run_python(&python, PARSE, &utf8);
    assert!(parsed.lines().any(|l| l == "http.server.requests_total{http.route=/a} 3.0"), "{parsed}");
    assert!(parsed.lines().any(|l| l == "http.server.request.duration_bucket{le=1e+06} 3.0"), "{parsed}");
    assert!(parsed.lines().any(|l| l == "queue.depth{} 4.0") && parsed.lines().any(|l| l == "queue_depth{} 1.0"));

    // Scrapers without UTF-8 support: `queue.depth` and `queue_depth` are
    // one name to them; the first by name (`.` sorts before `_`) is kept.
    let legacy = text(Escaping::Underscores);
    assert!(legacy.contains("\nhttp_server_requests_total{http_route=\"/a\"} 3\n"), "{legacy}");
    assert!(legacy.contains("\nhttp_server_request_duration_bucket{le=\"1e+06\"} 3\n"), "{legacy}");
    assert_eq!(legacy.matches("# TYPE queue_depth gauge").count(), 1, "{legacy}");
    assert!(legacy.contains("\nqueue_depth 4\n") && !legacy.contains("\nqueue_depth 1\n"), "{legacy}");
    let dots = text(Escaping::Dots);
    assert!(dots.contains("\nhttp_dot_server_dot_requests_total{http_dot_route=\"/a\"} 3\n"), "{dots}");
    assert!(dots.contains("\nqueue_dot_depth 4\n") && dots.contains("\nqueue_depth 1\n"), "{dots}");
    let values = text(Escaping::Values);
    assert!(values.contains("\nU__http_2e_server_2e_requests_total{U__http_2e_route=\"/a\"} 3\n"), "{values}");
    let _ = std::fs::remove_dir_all(&dir);
}
