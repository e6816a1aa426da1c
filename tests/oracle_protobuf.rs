//! The protobuf exposition read by a decoder we did not write (Google's
//! `protobuf` for Python, see `support::protobuf`), sample by sample
//! against the text exposition of the same state read by prometheus_client's
//! parser: seeded random values in every kind of declared metric and
//! random collector families (odd label values, UTF-8 names, every
//! escaping scheme), then a directory of Python `.db` files merged by
//! `multiprocess::encode_dir`. The seed is printed; `PROMSHARD_SEED`
//! replays one.
//!
//! Without python3, prometheus_client and protobuf the tests print
//! SKIPPED, or fail under `PROMSHARD_ORACLES=require`.

mod harness;
mod rng;
mod support;

use std::sync::Mutex;

use promshard::{
    Collector, Counter, Enum, Escaping, Exposition, Gauge, Histogram, Info, LabelValue, MetricWriter, Protocol, metric,
};
use rng::Rng;
use support::protobuf::{PROTOBUF_MISSING, assert_same, decode, python_with_protobuf};

#[derive(Clone, Copy, LabelValue)]
enum Method {
    Get,
    Post,
    Delete,
}

/// Requests served.
#[metric(labels(method: Method, code = ["200", "404", "500"]))]
static PB_REQUESTS_TOTAL: Counter;

/// Work done, in fractions.
#[metric]
static PB_WORK_TOTAL: Counter;

/// Queue depth by "queue" \ name.
#[metric(labels(queue = bounded(6)))]
static PB_QUEUE_DEPTH: Gauge;

/// Latency.
#[metric(unit = "seconds", labels(method: Method), buckets = [1e-7, 0.005, 1.0, 100000.0, 1e6])]
static PB_LATENCY_SECONDS: Histogram;

/// Build.
#[metric]
static PB_BUILD_INFO: Info;

/// Phase.
#[metric]
static PB_PHASE: Enum<Method>;

/// Events with UTF-8 names.
#[metric(name = "pb.events", labels("url.scheme" = ["http", "https"]))]
static PB_EVENTS: Counter;

const ODD: [&str; 7] = ["say \"hi\"", "back\\slash", "new\nline", "caf\u{e9} \u{4e2d} \u{1F600}", "", "tab\there", "x"];

impl Rng {
    /// Any float a gauge may hold, the awkward ones often.
    fn float(&mut self) -> f64 {
        match self.below(10) {
            0 => self.pick(&[f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 0.0, f64::MAX, f64::MIN_POSITIVE, 5e-324]),
            1 => self.below(1_000_000) as f64,
            2 => -(self.below(1000) as f64) / 8.0,
            _ => f64::from_bits(self.next() >> 2) * if self.below(2) == 0 { 1.0 } else { -1.0 },
        }
    }
}

/// A series' labels.
type Labels = Vec<(&'static str, String)>;
/// Cumulative counts by upper bound.
type Buckets = Vec<(f64, u64)>;

/// One collector family: kind, name, help, and series as (labels,
/// value) or (labels, buckets, sum).
#[derive(Clone)]
enum Spec {
    Plain { kind: u8, name: String, help: String, series: Vec<(Labels, f64)> },
    Histogram { name: String, series: Vec<(Labels, Buckets, f64)> },
}

static SPECS: Mutex<Vec<Spec>> = Mutex::new(Vec::new());

struct Random;

impl Collector for Random {
    fn collect(&self, out: &mut MetricWriter<'_>) {
        for spec in SPECS.lock().unwrap().iter() {
            match spec {
                Spec::Plain { kind, name, help, series } => {
                    let mut family = match kind {
                        0 => out.counter(name, help),
                        1 => out.gauge(name, help),
                        _ => out.info(name, help),
                    };
                    for (labels, value) in series {
                        let pairs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                        family.sample(&pairs, *value);
                    }
                }
                Spec::Histogram { name, series } => {
                    let mut family = out.histogram(name, "A random histogram.");
                    for (labels, buckets, sum) in series {
                        let pairs: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                        family.histogram(&pairs, buckets, *sum);
                    }
                }
            }
        }
    }
}

fn random_specs(rng: &mut Rng, round: u64) -> Vec<Spec> {
    // Label names no scheme writes alike.
    const LABELS: [&str; 4] = ["zone", "url.scheme", "service.name", "b"];
    let mut specs = Vec::new();
    for i in 0..2 + rng.below(5) {
        let name = if rng.below(3) == 0 { format!("pb.rand.r{round}.f{i}") } else { format!("pb_rand_r{round}_f{i}") };
        let names: Vec<&'static str> = LABELS.iter().copied().filter(|_| rng.below(2) == 0).collect();
        let labels = |rng: &mut Rng, n: u64| -> Labels {
            let mut labels: Labels = names.iter().map(|k| (*k, rng.pick(&ODD).to_owned())).collect();
            labels.push(("series", n.to_string()));
            labels
        };
        let count = 1 + rng.below(4);
        match rng.below(4) {
            3 => {
                let series = (0..count)
                    .map(|n| {
                        let mut bounds: Vec<f64> = [1e-7, 0.005, 0.25, 1.0, 100000.0, 1e6, 2.5e10]
                            .into_iter()
                            .filter(|_| rng.below(2) == 0)
                            .collect();
                        if rng.below(3) == 0 {
                            bounds.push(f64::INFINITY);
                        }
                        let mut cumulative = 0;
                        let buckets = bounds
                            .into_iter()
                            .map(|b| {
                                cumulative += rng.below(1000);
                                (b, cumulative)
                            })
                            .collect();
                        let sum = loop {
                            let sum = rng.float();
                            if !sum.is_nan() {
                                break sum;
                            }
                        };
                        (labels(rng, n), buckets, sum)
                    })
                    .collect();
                specs.push(Spec::Histogram { name, series });
            }
            kind => {
                let series = (0..count)
                    .map(|n| {
                        let value = match kind {
                            0 => rng.float().abs(),
                            _ => rng.float(),
                        };
                        (labels(rng, n), if value.is_nan() && kind == 0 { 1.5 } else { value })
                    })
                    .collect();
                let help = format!("Random {} \"{}\" \\ {}", kind, rng.pick(&ODD), round);
                specs.push(Spec::Plain { kind: kind as u8, name, help, series });
            }
        }
    }
    specs
}

fn record(rng: &mut Rng) {
    for method in [Method::Get, Method::Post, Method::Delete] {
        for code in ["200", "404", "500"] {
            PB_REQUESTS_TOTAL.with((method, code)).inc_by(rng.below(1 << 40));
        }
        for _ in 0..rng.below(20) {
            let v = match rng.below(4) {
                0 => rng.float(),
                1 => rng.pick(&[1e-7, 0.005, 1.0, 100000.0, 1e6, 0.0]),
                _ => rng.below(2_000_000) as f64 / 1000.0,
            };
            PB_LATENCY_SECONDS.with((method,)).observe(v);
        }
    }
    let _ = PB_WORK_TOTAL.inc_by_f64(rng.below(1000) as f64 / 7.0);
    for _ in 0..3 {
        PB_QUEUE_DEPTH.with((rng.pick(&ODD),)).set(rng.float());
    }
    PB_BUILD_INFO.set(&[("version", rng.pick(&ODD)), ("commit", "abc")]);
    PB_PHASE.set(rng.pick(&[Method::Get, Method::Post, Method::Delete]));
    PB_EVENTS.with((rng.pick(&["http", "https"]),)).inc_by(rng.below(100));
}

/// The text twin of protobuf under `escaping`: 0.0.4 for legacy names,
/// 1.0.0 otherwise.
fn text_for(escaping: Escaping) -> Exposition {
    match escaping {
        Escaping::Underscores => Exposition::new(Protocol::PrometheusText0_0_4, escaping),
        _ => Exposition::new(Protocol::PrometheusText1_0_0, escaping),
    }
}

#[test]
fn random_metric_sets_read_the_same_in_protobuf_and_text() {
    let Some(python) = python_with_protobuf() else {
        support::skip_or_fail(PROTOBUF_MISSING);
        return;
    };
    let seed = std::env::var("PROMSHARD_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("random_metric_sets_read_the_same_in_protobuf_and_text: PROMSHARD_SEED={seed}");
    let mut rng = Rng(seed);
    promshard::register_collector(Random);
    let work = harness::TempDir::new("protobuf");
    let mut samples = 0;
    for round in 0..4 {
        record(&mut rng);
        *SPECS.lock().unwrap() = random_specs(&mut rng, round);
        for escaping in Escaping::ALL {
            let proto = promshard::encode(Exposition::new(Protocol::PrometheusProtobuf, escaping));
            let text = String::from_utf8(promshard::encode(text_for(escaping))).unwrap();
            let decoded = decode(&python, work.path(), &proto, &text);
            // The process metrics move between two renderings.
            let what = format!("seed {seed}, round {round}, {escaping:?}");
            assert_same(&what, &decoded, &["process_"]);
            samples += decoded.proto["samples"].as_array().unwrap().len();
        }
    }
    eprintln!("{samples} samples compared");
    assert!(samples > 400, "{samples}");
}

/// Python workers write counters, gauges of every mode, histograms and
/// summaries into `.db` files, then exit; `encode_dir` merges them.
const PY_WORKERS: &str = r#"
import os, random, sys
from prometheus_client import Counter, Gauge, Histogram, Summary
rng = random.Random(int(sys.argv[1]))
ODD = ['say "hi"', 'back\\slash', 'new\nline', 'caf\u00e9 \u4e2d', '']
jobs = Counter('pyp_jobs', 'Jobs "done" \\ here.', ['kind'])
level = Gauge('pyp_level', 'Level.', ['queue'], multiprocess_mode='all')
peak = Gauge('pyp_peak', 'Peak.', multiprocess_mode='max')
total = Gauge('pyp_total_items', 'Items.', multiprocess_mode='sum')
latency = Histogram('pyp_latency_seconds', 'Latency.', ['route'], buckets=[1e-05, 0.005, 1.0, 1e6])
size = Summary('pyp_payload_bytes', 'Payload sizes.', ['route'])
for worker in range(3):
    pid = os.fork()
    if pid == 0:
        for _ in range(20):
            jobs.labels(rng.choice(ODD)).inc(rng.choice([1, 0.25, 1e6]))
            level.labels(rng.choice(ODD)).set(rng.uniform(-1e3, 1e3))
            peak.set(rng.uniform(-5, 5))
            total.inc(rng.randrange(100))
            latency.labels(rng.choice(ODD)).observe(rng.choice([1e-6, 0.003, 0.5, 2.0, 5e6]))
            size.labels(rng.choice(ODD)).observe(rng.uniform(0, 1e4))
        os._exit(0)
    os.waitpid(pid, 0)
"#;

#[test]
fn python_files_merged_read_the_same_in_protobuf_and_text() {
    let Some(python) = python_with_protobuf() else {
        support::skip_or_fail(PROTOBUF_MISSING);
        return;
    };
    let seed = std::env::var("PROMSHARD_SEED").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 % 1_000_000_007
    });
    eprintln!("python_files_merged_read_the_same_in_protobuf_and_text: PROMSHARD_SEED={seed}");
    let dir = harness::TempDir::new("protobuf-python");
    let status = std::process::Command::new(&python)
        .args(["-c", PY_WORKERS, &seed.to_string()])
        .env("PROMETHEUS_MULTIPROC_DIR", dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let mut summaries = 0;
    for escaping in Escaping::ALL {
        let proto =
            promshard::multiprocess::encode_dir(dir.path(), Exposition::new(Protocol::PrometheusProtobuf, escaping));
        let text = String::from_utf8(promshard::multiprocess::encode_dir(dir.path(), text_for(escaping))).unwrap();
        let decoded = decode(&python, dir.path(), &proto, &text);
        assert_same(&format!("seed {seed}, {escaping:?}"), &decoded, &[]);
        let families = decoded.proto["families"].as_array().unwrap();
        summaries += families.iter().filter(|f| f[1] == "summary").count();
        assert_eq!(families.len(), 6, "{families:?}");
    }
    assert_eq!(summaries, 4, "the Python summary is a SUMMARY in every scheme");
}
