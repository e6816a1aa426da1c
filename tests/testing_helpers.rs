//! `promshard::testing`'s snapshot, `assert_delta!` and `parse`, tried as a
//! user's test suite would: exact deltas while other threads record into
//! the same families, through `/metrics` over HTTP, in a forked pool; and
//! `parse` against Python's parsers over seeded random expositions (the
//! seed is printed; `PROMSHARD_PARSE_SEED` replays one).

mod harness;
mod http_client;
mod rng;
mod support;

use std::time::Duration;

use harness::{TempDir, Worker, isolated};
use promshard::testing::{Snapshot, parse, snapshot};
use promshard::{Counter, Histogram, assert_delta, metric};
use rng::Rng;

/// Orders by tenant.
#[metric(labels(tenant = bounded(64)))]
static HELPERS_ORDERS_TOTAL: Counter;

/// Order sizes.
#[metric(buckets = [1.0, 10.0], labels(tenant = bounded(64)))]
static HELPERS_ORDER_SIZE: Histogram;

#[test]
fn deltas_are_exact_while_other_threads_record() {
    // Eight "tests" at once, each with a series of its own, each also
    // recording into a series all of them share.
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let me = format!("t{t}");
                for round in 0..50u32 {
                    let before = snapshot();
                    HELPERS_ORDERS_TOTAL.with((me.as_str(),)).inc_by(u64::from(round) + 1);
                    HELPERS_ORDERS_TOTAL.with(("shared",)).inc();
                    HELPERS_ORDER_SIZE.with((me.as_str(),)).observe(5.0);
                    assert_delta!(before, "helpers_orders_total", [("tenant", me.as_str())], f64::from(round) + 1.0);
                    assert_delta!(before, "helpers_order_size_count", [("tenant", me.as_str())], 1.0);
                    assert_delta!(before, "helpers_order_size_bucket", [("tenant", me.as_str()), ("le", "1.0")], 0.0);
                    assert_delta!(before, "helpers_order_size_bucket", [("le", "10.0"), ("tenant", me.as_str())], 1.0);
                    // The shared series moved by at least this thread's own.
                    assert!(before.delta("helpers_orders_total", &[("tenant", "shared")]) >= 1.0);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(snapshot().value("helpers_orders_total", &[("tenant", "shared")]), Some(400.0));
}

#[test]
fn a_failed_delta_says_what_it_saw() {
    let before = snapshot();
    HELPERS_ORDERS_TOTAL.with(("failing",)).inc_by(2);
    let failure = std::panic::catch_unwind(|| {
        assert_delta!(before, "helpers_orders_total", [("tenant", "failing")], 1.0);
    });
    let message = failure.unwrap_err();
    let message = message.downcast_ref::<String>().unwrap();
    assert!(message.contains("changed by 2") && message.contains("expected 1"), "{message}");
}

#[test]
fn snapshots_read_from_metrics_over_http() {
    let server = promshard::serve("127.0.0.1:0").unwrap();
    let get = || http_client::fetch(server.local_addr(), "GET", "/metrics", &[]).text();
    let before = Snapshot::from_text(&get()).unwrap();
    HELPERS_ORDERS_TOTAL.with(("http",)).inc_by(7);
    let after = Snapshot::from_text(&get()).unwrap();
    assert_eq!(before.delta_to(&after, "helpers_orders_total", &[("tenant", "http")]), 7.0);
    let openmetrics = http_client::fetch(
        server.local_addr(),
        "GET",
        "/metrics",
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
    )
    .text();
    let om = Snapshot::from_text(&openmetrics).unwrap();
    assert_eq!(
        om.value("helpers_orders_total", &[("tenant", "http")]),
        after.value("helpers_orders_total", &[("tenant", "http")])
    );
}

fn pool_worker(command: &str) -> String {
    match command {
        "order" => {
            HELPERS_ORDERS_TOTAL.with(("pool",)).inc();
            "ok".to_owned()
        }
        other => panic!("unknown command {other:?}"),
    }
}

#[test]
fn deltas_in_a_forked_pool_count_every_worker() {
    isolated("deltas_in_a_forked_pool_count_every_worker", Duration::from_secs(60), || {
        let dir = TempDir::new("testing-pool");
        promshard::multiprocess::init(dir.path()).unwrap();
        let before = snapshot();
        let wait = Duration::from_secs(20);
        let mut workers: Vec<Worker> = (0..3).map(|_| Worker::spawn(pool_worker)).collect();
        for worker in &mut workers {
            assert_eq!(worker.ask("order", wait), "ok");
        }
        assert_delta!(before, "helpers_orders_total", [("tenant", "pool")], 3.0);
        for worker in workers.iter_mut().rev() {
            worker.exit(wait).expect("the worker exits");
        }
        assert_delta!(before, "helpers_orders_total", [("tenant", "pool")], 3.0);
    });
}

fn random_value(rng: &mut Rng) -> String {
    const PIECES: &[&str] = &["a", "Z", "0", " ", "\\", "\"", "\n", "é", "✓", "{", "}", ",", "=", "#", "le", "\t"];
    (0..rng.below(6)).map(|_| PIECES[rng.below(PIECES.len() as u64) as usize]).collect()
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn random_number(rng: &mut Rng) -> String {
    match rng.below(8) {
        0 => "+Inf".to_owned(),
        1 => "-Inf".to_owned(),
        2 => "-0.0".to_owned(),
        3 => format!("{}", rng.below(1 << 53)),
        4 => format!("{:e}", rng.next() as f64 / 7.0),
        5 => format!("-{}.{}", rng.below(1000), rng.below(1000)),
        6 => "1e-07".to_owned(),
        _ => format!("{}", f64::from_bits(rng.next() & 0x7fef_ffff_ffff_ffff)),
    }
}

/// A random exposition in the Prometheus text format: gauges with
/// awkward label values, timestamps now and then.
fn random_exposition(rng: &mut Rng) -> String {
    let mut out = String::new();
    for family in 0..1 + rng.below(6) {
        let name = format!("fam_{family}_{}", rng.below(1000));
        out.push_str(&format!("# HELP {name} Help with \\\\ and \\n.\n# TYPE {name} gauge\n"));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1 + rng.below(5) {
            let labels: Vec<(String, String)> =
                (0..rng.below(4)).map(|i| (format!("l{i}"), random_value(rng))).collect();
            if !seen.insert(labels.clone()) {
                continue;
            }
            let text: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let labels =
                if text.is_empty() && rng.below(2) == 0 { String::new() } else { format!("{{{}}}", text.join(",")) };
            let stamp = if rng.below(4) == 0 { format!(" {}", rng.below(1 << 40)) } else { String::new() };
            out.push_str(&format!("{name}{labels} {}{stamp}\n", random_number(rng)));
        }
    }
    out
}

/// A sample as both parsers give it: name, sorted labels, value bits.
type Parsed = (String, Vec<(String, String)>, String);

const PYTHON_PARSE: &str = r#"
import json, math, struct, sys
from prometheus_client.parser import text_string_to_metric_families
def bits(v):
    return 'nan' if math.isnan(v) else str(struct.unpack('<Q', struct.pack('<d', v))[0])
for text in sys.stdin.read().split('\0'):
    out = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.append([s.name, sorted(s.labels.items()), bits(float(s.value))])
    print(json.dumps(sorted(out)))
"#;

#[test]
fn parse_reads_what_pythons_parser_reads() {
    let Some(python) = support::python_with_prometheus_client() else {
        return support::skip_or_fail(support::PYTHON_MISSING);
    };
    let seed = std::env::var("PROMSHARD_PARSE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("parse model seed: {seed} (PROMSHARD_PARSE_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let texts: Vec<String> = (0..300).map(|_| random_exposition(&mut rng)).collect();
    let theirs = support::run_python(&python, PYTHON_PARSE, &texts.join("\0"));
    assert_eq!(theirs.lines().count(), texts.len(), "one answer per exposition");
    let mut compared = 0;
    for (text, line) in texts.iter().zip(theirs.lines()) {
        let theirs: Vec<Parsed> = serde_json::from_str(line).unwrap();
        let mut ours: Vec<Parsed> = parse(text)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"))
            .into_iter()
            .map(|s| {
                let mut labels = s.labels;
                labels.sort();
                // The float's bits, as the script prints them.
                let value = if s.value.is_nan() { "nan".to_owned() } else { s.value.to_bits().to_string() };
                (s.name, labels, value)
            })
            .collect();
        ours.sort();
        assert_eq!(ours, theirs, "seed {seed}:\n{text}");
        compared += ours.len();
    }
    assert!(compared > 600, "only {compared} samples compared");
    // What is not an exposition is an error with its line, not a panic.
    for bad in ["a{b=\"c} 1", "a{b=c} 1", "a 1\n{} 2", "a{b=\"c\"", "a notanumber", "a{\"x\" 1"] {
        let error = parse(bad).expect_err(bad);
        assert!(error.line >= 1, "{bad}: {error}");
    }
}

/// Blanks around lines and between a name and its labels are part of the
/// text format ("leading and trailing whitespace is ignored"), and are
/// what an indented fixture in a test holds: read as Python reads them.
/// And a line after OpenMetrics' `# EOF` (two expositions glued
/// together) is refused, as Prometheus and Python refuse it.
#[test]
fn parse_reads_blanks_as_the_text_format_does_and_refuses_lines_after_eof() {
    let Some(python) = support::python_with_prometheus_client() else {
        return support::skip_or_fail(support::PYTHON_MISSING);
    };
    let text = "  # HELP c A help.\n  # TYPE c gauge\n  c 9\n\td\t10\ne{} 11\nf { a=\"b\" } 12\n  g{h=\"i\"}   13  \n";
    let theirs: Vec<Parsed> = serde_json::from_str(support::run_python(&python, PYTHON_PARSE, text).trim()).unwrap();
    let mut ours: Vec<Parsed> = parse(text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .into_iter()
        .map(|s| {
            let mut labels = s.labels;
            labels.sort();
            (s.name, labels, s.value.to_bits().to_string())
        })
        .collect();
    ours.sort();
    assert_eq!(ours.len(), 5);
    assert_eq!(ours, theirs);

    let glued = "a_total 1\n# EOF\nb_total 2\n# EOF\n";
    let error = parse(glued).expect_err("a line after # EOF");
    assert_eq!(error.line, 3, "{error}");
    let python_refuses = support::run_with_stdin(
        &python,
        &[
            std::ffi::OsStr::new("-c"),
            std::ffi::OsStr::new(
                "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\nlist(p(sys.stdin.read()))",
            ),
        ],
        glued,
    );
    assert!(!python_refuses.status.success(), "Python's OpenMetrics parser refuses it too");
    assert_eq!(parse("a_total 1\n# EOF\n").unwrap().len(), 1);
    assert_eq!(parse("a_total 1\n# EOF\n\n").unwrap().len(), 1, "blank lines after it are nothing");
}
