//! Native histograms against an outside oracle: Python's protobuf
//! decoder reads the exposition, and a bucket computation written there
//! (client_golang's, not ours) says which bucket every observation
//! belongs to at the schema the exposition chose. The merged histogram
//! must be exactly the histogram of all observations: in this process
//! (memory mode), and across forked workers sharing a shard directory,
//! through clean exits, SIGKILLs and compactions into the archive.
//!
//! The observations are seeded (`PROMSHARD_NATIVE_SEED`, or the clock;
//! printed) and adversarial: zeros of both signs, subnormals, values at
//! bucket bounds, the largest finite values, infinities, NaN (which is
//! not an observation: dropped and counted elsewhere).

mod harness;
mod rng;
mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use harness::{TempDir, Worker, isolated};
use promshard::{Format, Histogram, metric};
use rng::Rng;

/// Anything at all, in a table small enough to spill.
#[metric(native(schema = 3, max_buckets = 24))]
static NATIVE_WIDE: Histogram;

/// Positive values from 0.01 to 100, zeros, `+Inf`: 56 buckets at
/// schema 2, which fit.
#[metric(native(schema = 2, max_buckets = 100))]
static NATIVE_NARROW: Histogram;

/// Classic buckets kept alongside; both signs, each process in its own
/// band of 8 powers of two (32 buckets at schema 1, which fit its table),
/// so a merge of processes holds more buckets than the exposition may
/// show at schema 1.
#[metric(buckets = [0.1, 1.0, 10.0], native(schema = 1, max_buckets = 40))]
static NATIVE_BOTH: Histogram;

/// `native` alone: the defaults, schema 3 and 160 buckets.
#[metric(native)]
static NATIVE_DEFAULTS: Histogram;

/// A negative schema: buckets growing by 16.
#[metric(native(schema = -2, max_buckets = 8))]
static NATIVE_COARSE: Histogram;

const ASK: Duration = Duration::from_secs(20);

fn seed() -> u64 {
    let seed = std::env::var("PROMSHARD_NATIVE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 % 1_000_000_007);
    eprintln!("native histogram seed: PROMSHARD_NATIVE_SEED={seed}");
    seed
}

impl Rng {
    fn for_stream(seed: u64, stream: u64) -> Rng {
        Rng((seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1)
    }
    /// Log-uniform between `lo` and `hi`.
    fn log_between(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + self.unit() * (hi.ln() - lo.ln())).exp()
    }
}

/// The three histograms' observations for one process's stream.
fn observations(seed: u64, stream: u64) -> [Vec<f64>; 3] {
    let mut rng = Rng::for_stream(seed, stream);
    let n = 150 + (rng.next() % 150) as usize;
    let wide = (0..n)
        .map(|_| match rng.next() % 12 {
            0 => [0.0, -0.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, f64::MAX, -f64::MAX][rng.next() as usize % 7],
            1 => [5e-324, -5e-324, 2.2e-308, 2f64.powi(-128), -(2f64.powi(-128)), 1.0000001 * 2f64.powi(-128)]
                [rng.next() as usize % 6],
            // Bounds of schema 3: 2^(j/8) times a power of two.
            2 => 2f64.powf((rng.next() % 8) as f64 / 8.0) * 2f64.powi((rng.next() % 40) as i32 - 20),
            3 => f64::from_bits(rng.next()),
            4 => -rng.log_between(1e-300, 1e300),
            _ => rng.log_between(1e-6, 1e6),
        })
        .collect();
    let narrow = (0..n)
        .map(|_| match rng.next() % 20 {
            0 => [0.0, -0.0, f64::NAN, f64::INFINITY, 5e-324][rng.next() as usize % 5],
            _ => rng.log_between(0.01, 100.0),
        })
        .collect();
    let band = 2f64.powi(4 * (stream % 8) as i32 - 10);
    let both =
        (0..n).map(|_| if rng.next() % 2 == 0 { 1.0 } else { -1.0 } * rng.log_between(band, band * 256.0)).collect();
    [wide, narrow, both]
}

fn record(values: &[Vec<f64>; 3]) {
    for (histogram, values) in [&NATIVE_WIDE, &NATIVE_NARROW, &NATIVE_BOTH].into_iter().zip(values) {
        for v in values {
            histogram.observe(*v);
        }
    }
}

/// Checks `proto` against all of `streams`' observations; returns the
/// schemas chosen.
fn check(what: &str, python: &std::path::Path, work: &std::path::Path, proto: &[u8], streams: &[u64], seed: u64) {
    let mut all: [Vec<f64>; 3] = Default::default();
    for stream in streams {
        for (into, values) in all.iter_mut().zip(observations(seed, *stream)) {
            into.extend(values);
        }
    }
    let [wide, narrow, both] = all;
    eprintln!("{what}: streams {streams:?}");
    let reports = support::protobuf::check_native(
        python,
        work,
        proto,
        &[("native_wide", wide), ("native_narrow", narrow.clone()), ("native_both", both.clone())],
    );
    // Values that fit keep the declared resolution.
    assert_eq!(reports["native_narrow"].schema, 2, "{what}: seed {seed}");
    let finite: Vec<f64> = narrow.iter().copied().filter(|v| v.is_finite()).collect();
    let sum = &reports["native_narrow"].json["sum"];
    if finite.len() + narrow.iter().filter(|v| v.is_nan()).count() == narrow.len() {
        let (sum, expected) = (sum.as_f64().unwrap(), finite.iter().sum::<f64>());
        assert!((sum - expected).abs() <= expected * 1e-9, "{what}: sum {sum} vs {expected}");
    } else {
        assert_eq!(sum, "inf", "{what}");
    }
    // More buckets than `max_buckets` lower the schema until they fit:
    // in a merge of processes whose bands differ, never in one process.
    let both_report = &reports["native_both"];
    let got = &both_report.json["got"];
    let populated = got["positive"].as_object().unwrap().len() + got["negative"].as_object().unwrap().len();
    let lowered = if streams.len() > 1 { both_report.schema < 1 } else { both_report.schema == 1 };
    assert!(populated <= 40 && lowered, "{what}: {populated} buckets at schema {}", both_report.schema);
    // The classic buckets count the same observations.
    let classic = both_report.json["classic"].as_array().unwrap();
    let at_10 = classic.iter().find(|b| b[0] == 10.0).map(|b| b[1].as_u64().unwrap());
    assert_eq!(at_10, Some(both.iter().filter(|v| **v <= 10.0).count() as u64), "{what}: classic le=10");
}

#[test]
fn memory_mode_exposes_the_histogram_of_the_observations() {
    if harness::in_any_child() {
        return;
    }
    let Some(python) = support::protobuf::python_or_skip() else { return };
    let seed = seed();
    let work = TempDir::new("native-memory");
    record(&observations(seed, 0));
    let defaults = [0.0, 1.0, 1.5, -3.0, 1e-3];
    defaults.iter().for_each(|v| NATIVE_DEFAULTS.observe(*v));
    let coarse = [0.5, 1.0, 16.0, 17.0, -1e9, 1e-9];
    coarse.iter().for_each(|v| NATIVE_COARSE.observe(*v));
    let proto = promshard::encode(Format::Protobuf);
    check("memory", &python, work.path(), &proto, &[0], seed);
    let reports = support::protobuf::check_native(
        &python,
        work.path(),
        &proto,
        &[("native_defaults", defaults.to_vec()), ("native_coarse", coarse.to_vec())],
    );
    assert_eq!(reports["native_defaults"].schema, i64::from(promshard::NativeBuckets::DEFAULT_SCHEMA));
    assert_eq!(reports["native_coarse"].schema, -2);
    let native = NATIVE_DEFAULTS.core().descriptor().native.unwrap();
    assert_eq!((native.schema(), native.max_buckets()), (3, 160));
    // The text formats show what a native-only histogram has: `+Inf`,
    // `_count`, `_sum`, and agree with the protobuf.
    let text = String::from_utf8(promshard::encode(Format::Prometheus)).unwrap();
    let decoded = support::protobuf::decode(&python, work.path(), &proto, &text);
    support::protobuf::assert_same("memory", &decoded, &["promshard_", "process_"]);
    let count = harness::value_in(&text, "native_narrow_count", &[]).unwrap();
    assert_eq!(harness::value_in(&text, "native_narrow_bucket", &[("le", "+Inf")]), Some(count));
    assert!(!text.contains("native_narrow_bucket{le=\"1\"}"), "{text}");
}

/// A worker: `record <seed> <stream>` records that stream's observations.
fn worker(command: &str) -> String {
    let mut words = command.split(' ').skip(1).map(|w| w.parse::<u64>().unwrap());
    let (seed, stream) = (words.next().unwrap(), words.next().unwrap());
    record(&observations(seed, stream));
    "ok".to_owned()
}

#[test]
fn workers_merge_and_compact_into_the_histogram_of_all_observations() {
    let Some(python) = (if harness::is_child("workers_merge_and_compact_into_the_histogram_of_all_observations")
        || !harness::in_any_child()
    {
        support::protobuf::python_or_skip()
    } else {
        None
    }) else {
        return;
    };
    let seed = seed();
    isolated("workers_merge_and_compact_into_the_histogram_of_all_observations", Duration::from_secs(300), || {
        let dir = TempDir::new("native-mp");
        let work = TempDir::new("native-mp-work");
        promshard::multiprocess::init(dir.path()).unwrap();
        let scrape = || promshard::multiprocess::encode_dir(dir.path(), Format::Protobuf);
        let mut workers: Vec<(u64, Worker)> = Vec::new();
        let mut streams = Vec::new();
        let mut spawn = |stream: u64, workers: &mut Vec<(u64, Worker)>| {
            let mut w = Worker::spawn(worker);
            assert_eq!(w.ask(&format!("record {seed} {stream}"), ASK), "ok");
            workers.push((stream, w));
            streams.push(stream);
        };
        for stream in 1..=4 {
            spawn(stream, &mut workers);
        }
        let streams_now = |workers: &Vec<(u64, Worker)>, gone: &[u64]| {
            let mut all: Vec<u64> = workers.iter().map(|(s, _)| *s).chain(gone.iter().copied()).collect();
            all.sort();
            all
        };
        let mut gone = Vec::new();
        check("four live workers", &python, work.path(), &scrape(), &streams_now(&workers, &gone), seed);
        let (stream, mut w) = workers.remove(0);
        w.exit(ASK);
        gone.push(stream);
        let (stream, mut w) = workers.remove(0);
        w.kill();
        gone.push(stream);
        check("one exited, one killed", &python, work.path(), &scrape(), &streams_now(&workers, &gone), seed);
        promshard::multiprocess::compact_dir(dir.path());
        assert!(dir.path().join("archive.promshard").exists(), "{:?}", harness::shard_files(dir.path()));
        check("after a compaction", &python, work.path(), &scrape(), &streams_now(&workers, &gone), seed);
        spawn(5, &mut workers);
        let (stream, mut w) = workers.remove(0);
        w.kill();
        gone.push(stream);
        promshard::multiprocess::compact_dir(dir.path());
        check("archive and live workers", &python, work.path(), &scrape(), &streams_now(&workers, &gone), seed);
        for (stream, mut w) in workers.drain(..) {
            w.kill();
            gone.push(stream);
        }
        promshard::multiprocess::compact_dir(dir.path());
        assert_eq!(harness::shard_files(dir.path()), ["archive.promshard"]);
        check("the archive alone", &python, work.path(), &scrape(), &streams_now(&workers, &gone), seed);
    });
}
