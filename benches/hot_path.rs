//! Recording and exposition costs of promshard against a bare atomic (the
//! floor) and against the `prometheus` crate, in one criterion run; and
//! what gzip adds to a scrape of 100,000 series, at promshard's level and
//! at gzip's default (the bytes of each are printed).
//!
//! ```sh
//! cargo bench --bench hot_path
//! ```
//!
//! Every hot-path group measures `floor` beside its variants, so ratios come
//! from the same run. The benchmark hygiene is the same for every variant:
//!
//! - instruments are `static`s, as in real programs (the `prometheus` peers
//!   in a `LazyLock`, their usual form), and are used by name;
//! - inputs (label values, observed values) come from a table indexed by a
//!   cycling counter, and each table goes through `black_box` once, so the
//!   compiler cannot fold the label index or the value into a constant;
//! - atomic read-modify-writes are never elided, and criterion passes
//!   every iteration's result through `black_box`, so each recording is a
//!   real memory operation.

mod forked;

use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, measurement::WallTime};
use promshard::{Counter, Format, Gauge, Histogram, LabelValue, Opts};

// ---------------------------------------------------------------------------
// Inputs

/// An index that walks `0..N` again and again, kept in a register by the
/// closure that owns it (`move`), with no division.
struct Cycle<const N: usize>(usize);

impl<const N: usize> Cycle<N> {
    #[inline(always)]
    fn next(&mut self) -> usize {
        let i = self.0;
        self.0 = if i + 1 == N { 0 } else { i + 1 };
        i
    }
}

#[derive(Clone, Copy)]
enum Method {
    Get,
    Post,
    Put,
}

impl LabelValue for Method {
    const VALUES: &'static [&'static str] = &["get", "post", "put"];
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Copy)]
enum Status {
    Ok,
    ClientError,
    ServerError,
}

impl LabelValue for Status {
    const VALUES: &'static [&'static str] = &["2xx", "4xx", "5xx"];
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Copy)]
enum Region {
    East,
    West,
    North,
}

impl LabelValue for Region {
    const VALUES: &'static [&'static str] = &["east", "west", "north"];
    fn index(self) -> usize {
        self as usize
    }
}

const METHODS: [Method; 3] = [Method::Get, Method::Post, Method::Put];
const STATUSES: [Status; 3] = [Status::Ok, Status::ClientError, Status::ServerError];
const REGIONS: [Region; 3] = [Region::East, Region::West, Region::North];

/// Ten histogram buckets, and one observation inside each of them.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
const OBSERVATIONS: [f64; 10] = [0.0005, 0.002, 0.004, 0.008, 0.02, 0.04, 0.08, 0.2, 0.4, 0.8];

/// Values for the gauges.
const GAUGE_VALUES: [f64; 8] = [0.5, 1.0, 2.5, 4.0, 8.25, 16.0, 32.5, 64.0];

/// The 9 (method, status) combinations, in one order for every library.
fn counter_labels() -> [(usize, usize); 9] {
    core::array::from_fn(|i| (i / 3, i % 3))
}

/// 30 (region, observation) pairs: every region meets every bucket.
fn histogram_inputs() -> [(usize, f64); 30] {
    core::array::from_fn(|i| (i % 3, OBSERVATIONS[i % 10]))
}

// ---------------------------------------------------------------------------
// promshard instruments

static REQUESTS: Counter = Counter::new(Opts::new("bench_requests_total", "Unlabelled counter."));
static LABELLED: Counter<(Method, Status)> =
    Counter::new(Opts::new("bench_labelled_requests_total", "Counter with 3x3 labels.").labels(&["method", "status"]));
static LEVEL: Gauge = Gauge::new(Opts::new("bench_level", "Unlabelled gauge."));
static LATENCY: Histogram<(Region,)> = Histogram::new(
    Opts::new("bench_latency_seconds", "Histogram with 10 buckets, 3 regions.")
        .unit("seconds")
        .labels(&["region"])
        .buckets(&BUCKETS),
);
promshard::register!(REQUESTS, LABELLED, LEVEL, LATENCY);

// ---------------------------------------------------------------------------
// 100,000 series for the exposition: label values generated at compile time

const SHARDS: usize = 100;
const ROUTES: usize = 1000;
const ENCODED_SERIES: usize = SHARDS * ROUTES;

/// `N` ASCII names of `W` bytes: `prefix` then the zero-padded index.
const fn numbered<const N: usize, const W: usize>(prefix: u8) -> [[u8; W]; N] {
    let mut out = [[b'0'; W]; N];
    let mut i = 0;
    while i < N {
        out[i][0] = prefix;
        let mut n = i;
        let mut d = W;
        while d > 1 {
            d -= 1;
            out[i][d] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        assert!(n == 0, "name width too small");
        i += 1;
    }
    out
}

/// Views each generated name as a `&'static str`.
const fn as_strs<const N: usize, const W: usize>(names: &'static [[u8; W]; N]) -> [&'static str; N] {
    let mut out = [""; N];
    let mut i = 0;
    while i < N {
        out[i] = match core::str::from_utf8(&names[i]) {
            Ok(s) => s,
            Err(_) => panic!("generated names are ASCII"),
        };
        i += 1;
    }
    out
}

static SHARD_BYTES: [[u8; 3]; SHARDS] = numbered(b's'); // s00 ..= s99
static ROUTE_BYTES: [[u8; 4]; ROUTES] = numbered(b'r'); // r000 ..= r999
const SHARD_NAMES: [&str; SHARDS] = as_strs(&SHARD_BYTES);
const ROUTE_NAMES: [&str; ROUTES] = as_strs(&ROUTE_BYTES);

#[derive(Clone, Copy)]
struct Shard(usize);

impl LabelValue for Shard {
    const VALUES: &'static [&'static str] = &SHARD_NAMES;
    fn index(self) -> usize {
        self.0
    }
}

#[derive(Clone, Copy)]
struct Route(usize);

impl LabelValue for Route {
    const VALUES: &'static [&'static str] = &ROUTE_NAMES;
    fn index(self) -> usize {
        self.0
    }
}

static ENCODED: Counter<(Shard, Route)> = Counter::new(
    Opts::new("bench_encoded_requests_total", "Counter with 100 x 1000 series.").labels(&["shard", "route"]),
);
promshard::register!(ENCODED);

/// The value every encoded series holds, in both libraries.
fn encoded_value(shard: usize, route: usize) -> u64 {
    ((shard * 7919 + route * 31) % 100_000) as u64
}

// ---------------------------------------------------------------------------
// `prometheus` crate peers, in a registry of their own

struct Peers {
    requests: prometheus::IntCounter,
    labelled: prometheus::IntCounterVec,
    level: prometheus::Gauge,
    latency: prometheus::HistogramVec,
    _registry: prometheus::Registry,
}

static PEERS: LazyLock<Peers> = LazyLock::new(|| {
    let registry = prometheus::Registry::new();
    let requests = prometheus::IntCounter::new("bench_requests_total", "Unlabelled counter.").unwrap();
    let labelled = prometheus::IntCounterVec::new(
        prometheus::Opts::new("bench_labelled_requests_total", "Counter with 3x3 labels."),
        &["method", "status"],
    )
    .unwrap();
    let level = prometheus::Gauge::new("bench_level", "Unlabelled gauge.").unwrap();
    let latency = prometheus::HistogramVec::new(
        prometheus::HistogramOpts::new("bench_latency_seconds", "Histogram with 10 buckets, 3 regions.")
            .buckets(BUCKETS.to_vec()),
        &["region"],
    )
    .unwrap();
    registry.register(Box::new(requests.clone())).unwrap();
    registry.register(Box::new(labelled.clone())).unwrap();
    registry.register(Box::new(level.clone())).unwrap();
    registry.register(Box::new(latency.clone())).unwrap();
    Peers { requests, labelled, level, latency, _registry: registry }
});

/// The 100,000-series peer of [`ENCODED`], alone in its registry.
fn encoded_peer() -> prometheus::Registry {
    let registry = prometheus::Registry::new();
    let counter = prometheus::IntCounterVec::new(
        prometheus::Opts::new("bench_encoded_requests_total", "Counter with 100 x 1000 series."),
        &["shard", "route"],
    )
    .unwrap();
    registry.register(Box::new(counter.clone())).unwrap();
    for (s, shard) in SHARD_NAMES.iter().enumerate() {
        for (r, route) in ROUTE_NAMES.iter().enumerate() {
            counter.with_label_values(&[shard, route]).inc_by(encoded_value(s, r));
        }
    }
    registry
}

// ---------------------------------------------------------------------------
// Benchmarks

/// Which storage the recordings run on, and so which variants to add: the
/// peers have no multiprocess mode, so they run once, beside memory mode.
#[derive(Clone, Copy)]
struct Mode {
    suffix: &'static str,
    peers: bool,
}

const MEMORY: Mode = Mode { suffix: "", peers: true };
const MMAP: Mode = Mode { suffix: "_mmap", peers: false };

static FLOOR: AtomicU64 = AtomicU64::new(0);
/// The floor for labelled recording: nine atomics chosen by a table index.
static FLOOR_SLOTS: [AtomicU64; 9] = [const { AtomicU64::new(0) }; 9];

fn floor(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.bench_function("floor", |b| {
        b.iter(|| {
            FLOOR.fetch_add(1, Ordering::Relaxed);
        })
    });
}

fn hot_group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
        .throughput(Throughput::Elements(1));
    group
}

fn counter_inc(c: &mut Criterion, mode: Mode) {
    let mut group = hot_group(c, &format!("counter_inc{}", mode.suffix));
    floor(&mut group);
    group.bench_function("promshard", |b| b.iter(|| REQUESTS.inc()));
    if mode.peers {
        group.bench_function("prometheus", |b| b.iter(|| PEERS.requests.inc()));
    }
    group.finish();
}

fn labelled_counter_inc(c: &mut Criterion, mode: Mode) {
    let mut group = hot_group(c, &format!("labelled_counter_inc{}", mode.suffix));
    floor(&mut group);

    let slots: [usize; 9] = core::array::from_fn(|i| i);
    group.bench_function("floor_cycled", |b| {
        let table = black_box(&slots);
        let mut i = Cycle::<9>(0);
        b.iter(move || {
            FLOOR_SLOTS[table[i.next()]].fetch_add(1, Ordering::Relaxed);
        })
    });

    let labels = counter_labels().map(|(m, s)| (METHODS[m], STATUSES[s]));
    group.bench_function("promshard", |b| {
        let table = black_box(&labels);
        let mut i = Cycle::<9>(0);
        b.iter(move || LABELLED.with(table[i.next()]).inc())
    });

    if mode.peers {
        let labels = counter_labels().map(|(m, s)| [Method::VALUES[m], Status::VALUES[s]]);
        group.bench_function("prometheus", |b| {
            let table = black_box(&labels);
            let mut i = Cycle::<9>(0);
            b.iter(move || PEERS.labelled.with_label_values(&table[i.next()]).inc())
        });
    }
    group.finish();
}

fn gauge_set(c: &mut Criterion, mode: Mode) {
    let mut group = hot_group(c, &format!("gauge_set{}", mode.suffix));
    floor(&mut group);
    group.bench_function("promshard", |b| {
        let table = black_box(&GAUGE_VALUES);
        let mut i = Cycle::<8>(0);
        b.iter(move || LEVEL.set(table[i.next()]))
    });
    if mode.peers {
        group.bench_function("prometheus", |b| {
            let table = black_box(&GAUGE_VALUES);
            let mut i = Cycle::<8>(0);
            b.iter(move || PEERS.level.set(table[i.next()]))
        });
    }
    group.finish();
}

fn histogram_observe(c: &mut Criterion, mode: Mode) {
    let mut group = hot_group(c, &format!("histogram_observe{}", mode.suffix));
    floor(&mut group);

    let inputs = histogram_inputs().map(|(r, v)| (REGIONS[r], v));
    group.bench_function("promshard", |b| {
        let table = black_box(&inputs);
        let mut i = Cycle::<30>(0);
        b.iter(move || {
            let (region, v) = table[i.next()];
            LATENCY.with((region,)).observe(v)
        })
    });

    if !mode.peers {
        group.finish();
        return;
    }
    let inputs = histogram_inputs().map(|(r, v)| (Region::VALUES[r], v));
    group.bench_function("prometheus_with_label_values", |b| {
        let table = black_box(&inputs);
        let mut i = Cycle::<30>(0);
        b.iter(move || {
            let (region, v) = table[i.next()];
            PEERS.latency.with_label_values(&[region]).observe(v)
        })
    });

    let children: [prometheus::Histogram; 3] =
        core::array::from_fn(|r| PEERS.latency.with_label_values(&[Region::VALUES[r]]));
    let inputs = histogram_inputs();
    group.bench_function("prometheus_cached", |b| {
        let table = black_box(&inputs);
        let children = &children;
        let mut i = Cycle::<30>(0);
        b.iter(move || {
            let (region, v) = table[i.next()];
            children[region].observe(v)
        })
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    for s in 0..SHARDS {
        for r in 0..ROUTES {
            ENCODED.with((Shard(s), Route(r))).inc_by(encoded_value(s, r));
        }
    }
    let peer = encoded_peer();
    let encoder = prometheus::TextEncoder::new();

    // Same content: one family, the same 100,000 label sets and values.
    let ours = String::from_utf8(promshard::encode(Format::Prometheus)).unwrap();
    let theirs = encoder.encode_to_string(&peer.gather()).unwrap();
    let count = |text: &str| text.lines().filter(|l| l.starts_with("bench_encoded_requests_total{")).count();
    assert_eq!(count(&ours), ENCODED_SERIES);
    assert_eq!(count(&theirs), ENCODED_SERIES);

    let mut group = c.benchmark_group("encode_100k_series");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(ENCODED_SERIES as u64));
    group.bench_function("promshard", |b| b.iter(|| promshard::encode(Format::Prometheus)));
    // The same, into an output buffer kept from one scrape to the next.
    let mut reused = Vec::new();
    group.bench_function("promshard_encode_into_reused", |b| {
        b.iter(|| {
            reused.clear();
            promshard::encode_into(Format::Prometheus, &mut reused);
            reused.len()
        })
    });
    // What a scrape costs: gathering the families, then writing them.
    group.bench_function("prometheus_gather_encode", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            prometheus::Encoder::encode(&encoder, &peer.gather(), &mut out).unwrap();
            out
        })
    });
    // The text encoder alone, on families gathered once.
    let families = peer.gather();
    group.bench_function("prometheus_encode_only", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            prometheus::Encoder::encode(&encoder, &families, &mut out).unwrap();
            out
        })
    });
    // What a scrape with `Accept-Encoding: gzip` costs (Prometheus always
    // sends it): encoding, then gzip at the level promshard chose.
    let content_type = Format::Prometheus.content_type();
    group.bench_function("promshard_gzip", |b| {
        b.iter(|| {
            promshard::MetricsResponse::new(promshard::encode(Format::Prometheus), content_type, Some("gzip"))
                .into_body()
        })
    });
    // The same at gzip's default level, the alternative to the level
    // promshard chose.
    group.bench_function("promshard_gzip_level_6", |b| b.iter(|| gzip(&promshard::encode(Format::Prometheus), 6)));
    group.finish();

    let sent = promshard::MetricsResponse::new(ours.clone().into_bytes(), content_type, Some("gzip")).into_body();
    let level_6 = gzip(ours.as_bytes(), 6);
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&sent[..]).read_to_end(&mut decoded).unwrap();
    assert!(decoded == ours.as_bytes(), "gzip round trip");
    let ratio = |n: usize| n as f64 / ours.len() as f64;
    println!(
        "encode_100k_series bytes: text {}, gzip as sent {} ({:.3} of the text), gzip level 6 {} ({:.3}; sent/level 6 {:.2})",
        ours.len(),
        sent.len(),
        ratio(sent.len()),
        level_6.len(),
        ratio(level_6.len()),
        sent.len() as f64 / level_6.len() as f64,
    );
}

/// `body` gzipped at `level` with flate2 directly.
fn gzip(body: &[u8], level: u32) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    encoder.write_all(body).unwrap();
    encoder.finish().unwrap()
}

/// The same benchmarks in multiprocess mode, where the slots are an mmap'd
/// shard file.
fn mmap_mode() {
    forked::in_shard_process("mmap", |c| {
        counter_inc(c, MMAP);
        labelled_counter_inc(c, MMAP);
        gauge_set(c, MMAP);
        histogram_observe(c, MMAP);
    });
}

fn main() {
    mmap_mode();
    // Lay the registry out (100,000 series) before anything is timed.
    promshard::check_registry().expect("benchmark metrics are consistent");
    LazyLock::force(&PEERS);

    let mut c = Criterion::default().configure_from_args();
    counter_inc(&mut c, MEMORY);
    labelled_counter_inc(&mut c, MEMORY);
    gauge_set(&mut c, MEMORY);
    histogram_observe(&mut c, MEMORY);
    encode(&mut c);
    c.final_summary();
}
