//! Recording costs of promshard against a bare atomic (the floor) and
//! against every other Prometheus client for Rust, in one criterion run.
//!
//! ```sh
//! cargo bench --bench hot_path
//! ```
//!
//! `benches/run.sh` runs it with the rest and writes BENCHMARKS.md. Every
//! group measures `floor` beside its variants, so ratios come from the same
//! run. Each peer is used the way its own README recommends for a hot path
//! (and, for the libraries that look labels up, also through handles cached
//! once, the way their docs suggest for hot code):
//!
//! - `prometheus` (tikv/rust-prometheus): `IntCounter::inc`,
//!   `with_label_values(&[..]).inc()`, children cached by label values, and
//!   `prometheus-static-metric`'s generated structs;
//! - `prometheus-client`: `Family::get_or_create(&labels)` with a derived
//!   label struct of enums, and handles from `get_or_create_owned`;
//! - `metrics` through `metrics-exporter-prometheus`'s recorder:
//!   `counter!(name, labels).increment(1)` on every call, and the handle the
//!   macro returns kept;
//! - `measured`: `CounterVec::inc(LabelGroup)` with `FixedCardinalityLabel`
//!   enums (its dense storage).
//!
//! The hygiene is the same for every variant:
//!
//! - instruments are `static`s or built once before timing, as in real
//!   programs, and are used by name;
//! - inputs (label values, observed values) come from a table indexed by a
//!   cycling counter, and each table goes through `black_box` once, so the
//!   compiler cannot fold the label index or the value into a constant;
//! - atomic read-modify-writes are never elided, and criterion passes
//!   every iteration's result through `black_box`, so each recording is a
//!   real memory operation.
//!
//! `_mmap` groups run the promshard variants again in multiprocess mode
//! (slots in a shard file), in a forked child, since a process chooses its
//! storage once; the peers have no such mode.

mod forked;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, LazyLock};
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, Throughput, measurement::WallTime};
use promshard::{Counter, Gauge, Histogram, LabelValue, Opts};

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

// Label values as real programs declare them: in an order of their own,
// not sorted.

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    prometheus_client::encoding::EncodeLabelValue,
    measured::FixedCardinalityLabel,
)]
enum Method {
    Get,
    Post,
    Delete,
}

impl LabelValue for Method {
    const VALUES: &'static [&'static str] = &["GET", "POST", "DELETE"];
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    prometheus_client::encoding::EncodeLabelValue,
    measured::FixedCardinalityLabel,
)]
enum Status {
    Ok,
    NotFound,
    Error,
}

impl LabelValue for Status {
    const VALUES: &'static [&'static str] = &["ok", "not_found", "error"];
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    prometheus_client::encoding::EncodeLabelValue,
    measured::FixedCardinalityLabel,
)]
enum Region {
    West,
    East,
    Central,
}

impl LabelValue for Region {
    const VALUES: &'static [&'static str] = &["us-west", "us-east", "eu-central"];
    fn index(self) -> usize {
        self as usize
    }
}

const METHODS: [Method; 3] = [Method::Get, Method::Post, Method::Delete];
const STATUSES: [Status; 3] = [Status::Ok, Status::NotFound, Status::Error];
const REGIONS: [Region; 3] = [Region::West, Region::East, Region::Central];

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
static IN_FLIGHT: Gauge = Gauge::new(Opts::new("bench_in_flight", "Unlabelled gauge, up and down."));
static LATENCY: Histogram<(Region,)> = Histogram::new(
    Opts::new("bench_latency_seconds", "Histogram with 10 buckets, 3 regions.")
        .unit("seconds")
        .labels(&["region"])
        .buckets(&BUCKETS),
);
static CONTENDED: Counter = Counter::new(Opts::new("bench_contended_total", "Counter of two threads."));
/// Native only: schema 3 (growth 2^(1/8)), 160 buckets, as
/// client_golang's usual `NativeHistogramBucketFactor: 1.1`.
static NATIVE: Histogram = Histogram::new(Opts::new("bench_native_seconds", "Native histogram.").native(3, 160));
/// A native histogram whose 160 buckets are all taken before timing, so
/// that every observation timed misses them: its table is marked full,
/// and each goes to the schema -4 counts at once.
static NATIVE_FULL: Histogram =
    Histogram::new(Opts::new("bench_native_full_seconds", "Full native table.").native(8, 160));
/// The same observations into 10 classic buckets, unlabelled.
static CLASSIC: Histogram = Histogram::new(Opts::new("bench_classic_seconds", "Classic histogram.").buckets(&BUCKETS));
/// The same unlabelled counter, declared with exemplar storage.
static WITH_EXEMPLARS: Counter =
    Counter::new(Opts::new("bench_exemplar_requests_total", "Unlabelled counter with exemplars.").exemplars());
promshard::register!(
    REQUESTS,
    LABELLED,
    LEVEL,
    IN_FLIGHT,
    LATENCY,
    CONTENDED,
    NATIVE,
    NATIVE_FULL,
    CLASSIC,
    WITH_EXEMPLARS
);

// ---------------------------------------------------------------------------
// A histogram written by hand with atomics: the least a cumulative
// histogram can do (one add on the bucket, one on the count, one
// compare-and-swap loop on the sum), as the floor for `histogram_observe`.

struct AtomicHistogram {
    buckets: [AtomicU64; 11],
    count: AtomicU64,
    sum: AtomicU64,
}

impl AtomicHistogram {
    const fn new() -> AtomicHistogram {
        AtomicHistogram { buckets: [const { AtomicU64::new(0) }; 11], count: AtomicU64::new(0), sum: AtomicU64::new(0) }
    }

    #[inline(always)]
    fn observe(&self, v: f64) {
        let bucket = BUCKETS.iter().position(|&b| v <= b).unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let mut old = self.sum.load(Ordering::Relaxed);
        loop {
            let new = (f64::from_bits(old) + v).to_bits();
            match self.sum.compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => old = actual,
            }
        }
    }
}

static HAND_WRITTEN: [AtomicHistogram; 3] = [const { AtomicHistogram::new() }; 3];

// ---------------------------------------------------------------------------
// `prometheus` crate peers, in a registry of their own

/// prometheus-static-metric's generated structs, in a module of their own
/// (the macro's glob imports would meet promshard's `Histogram` here).
mod static_metric {
    prometheus_static_metric::make_static_metric! {
        pub label_enum StaticMethod {
            get: "GET",
            post: "POST",
            delete: "DELETE",
        }
        pub label_enum StaticStatus {
            ok,
            not_found,
            error,
        }
        pub label_enum StaticRegion {
            west: "us-west",
            east: "us-east",
            central: "eu-central",
        }
        pub struct StaticRequests: IntCounter {
            "method" => StaticMethod,
            "status" => StaticStatus,
        }
        pub struct StaticLatency: Histogram {
            "region" => StaticRegion,
        }
    }
}
use static_metric::{StaticLatency, StaticMethod, StaticRegion, StaticRequests, StaticStatus};

const STATIC_METHODS: [StaticMethod; 3] = [StaticMethod::get, StaticMethod::post, StaticMethod::delete];
const STATIC_STATUSES: [StaticStatus; 3] = [StaticStatus::ok, StaticStatus::not_found, StaticStatus::error];
const STATIC_REGIONS: [StaticRegion; 3] = [StaticRegion::west, StaticRegion::east, StaticRegion::central];

struct Prometheus {
    requests: prometheus::IntCounter,
    labelled: prometheus::IntCounterVec,
    labelled_static: StaticRequests,
    level: prometheus::Gauge,
    in_flight: prometheus::IntGauge,
    latency: prometheus::HistogramVec,
    latency_static: StaticLatency,
    contended: prometheus::IntCounter,
    _registry: prometheus::Registry,
}

static PROMETHEUS: LazyLock<Prometheus> = LazyLock::new(|| {
    let registry = prometheus::Registry::new();
    let requests = prometheus::IntCounter::new("bench_requests_total", "Unlabelled counter.").unwrap();
    let labelled = prometheus::IntCounterVec::new(
        prometheus::Opts::new("bench_labelled_requests_total", "Counter with 3x3 labels."),
        &["method", "status"],
    )
    .unwrap();
    let level = prometheus::Gauge::new("bench_level", "Unlabelled gauge.").unwrap();
    let in_flight = prometheus::IntGauge::new("bench_in_flight", "Unlabelled gauge, up and down.").unwrap();
    let latency = prometheus::HistogramVec::new(
        prometheus::HistogramOpts::new("bench_latency_seconds", "Histogram with 10 buckets, 3 regions.")
            .buckets(BUCKETS.to_vec()),
        &["region"],
    )
    .unwrap();
    let contended = prometheus::IntCounter::new("bench_contended_total", "Counter of two threads.").unwrap();
    registry.register(Box::new(requests.clone())).unwrap();
    registry.register(Box::new(labelled.clone())).unwrap();
    registry.register(Box::new(level.clone())).unwrap();
    registry.register(Box::new(in_flight.clone())).unwrap();
    registry.register(Box::new(latency.clone())).unwrap();
    registry.register(Box::new(contended.clone())).unwrap();
    Prometheus {
        labelled_static: StaticRequests::from(&labelled),
        latency_static: StaticLatency::from(&latency),
        requests,
        labelled,
        level,
        in_flight,
        latency,
        contended,
        _registry: registry,
    }
});

// ---------------------------------------------------------------------------
// `prometheus-client` peers

#[derive(Clone, Debug, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
struct ClientRequestLabels {
    method: Method,
    status: Status,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
struct ClientRegionLabels {
    region: Region,
}

type ClientHistogramFamily =
    prometheus_client::metrics::family::Family<ClientRegionLabels, prometheus_client::metrics::histogram::Histogram>;

/// The exemplar label set of prometheus-client's exemplar counter.
#[derive(Clone, Debug, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
struct ClientTraceLabels {
    trace_id: &'static str,
}

struct PrometheusClient {
    requests: prometheus_client::metrics::counter::Counter,
    with_exemplar: prometheus_client::metrics::exemplar::CounterWithExemplar<ClientTraceLabels>,
    labelled:
        prometheus_client::metrics::family::Family<ClientRequestLabels, prometheus_client::metrics::counter::Counter>,
    level: prometheus_client::metrics::gauge::Gauge<f64, AtomicU64>,
    in_flight: prometheus_client::metrics::gauge::Gauge,
    latency: ClientHistogramFamily,
    contended: prometheus_client::metrics::counter::Counter,
    _registry: prometheus_client::registry::Registry,
}

static PROMETHEUS_CLIENT: LazyLock<PrometheusClient> = LazyLock::new(|| {
    use prometheus_client::metrics::histogram::Histogram;
    let mut registry = prometheus_client::registry::Registry::default();
    let peers = PrometheusClient {
        requests: Default::default(),
        with_exemplar: Default::default(),
        labelled: Default::default(),
        level: Default::default(),
        in_flight: Default::default(),
        latency: ClientHistogramFamily::new_with_constructor(|| Histogram::new(BUCKETS)),
        contended: Default::default(),
        _registry: prometheus_client::registry::Registry::default(),
    };
    registry.register("bench_requests", "Unlabelled counter.", peers.requests.clone());
    registry.register("bench_labelled_requests", "Counter with 3x3 labels.", peers.labelled.clone());
    registry.register("bench_exemplar_requests", "Counter with exemplars.", peers.with_exemplar.clone());
    registry.register("bench_level", "Unlabelled gauge.", peers.level.clone());
    registry.register("bench_in_flight", "Unlabelled gauge, up and down.", peers.in_flight.clone());
    registry.register("bench_latency_seconds", "Histogram with 10 buckets, 3 regions.", peers.latency.clone());
    registry.register("bench_contended", "Counter of two threads.", peers.contended.clone());
    PrometheusClient { _registry: registry, ..peers }
});

// ---------------------------------------------------------------------------
// `metrics` peers, recording through metrics-exporter-prometheus

static METRICS: LazyLock<metrics_exporter_prometheus::PrometheusHandle> = LazyLock::new(|| {
    metrics_exporter_prometheus::PrometheusBuilder::new().set_buckets(&BUCKETS).unwrap().install_recorder().unwrap()
});

/// metrics-exporter-prometheus keeps histogram observations in a queue
/// that its upkeep drains: its own `install()` runs the upkeep every few
/// seconds on a background task. While this lives, a thread does it every
/// 100 ms, so the queue stays small while millions of observations a
/// second go in.
struct Upkeep {
    stop: &'static AtomicBool,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upkeep {
    fn start() -> Upkeep {
        let stop: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
        let thread = std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                METRICS.run_upkeep();
            }
        });
        Upkeep { stop, thread: Some(thread) }
    }
}

impl Drop for Upkeep {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

// ---------------------------------------------------------------------------
// `measured` peers

#[derive(Clone, Copy, measured::LabelGroup)]
#[label(set = MeasuredRequestSet)]
struct MeasuredRequest {
    method: Method,
    status: Status,
}

#[derive(Clone, Copy, measured::LabelGroup)]
#[label(set = MeasuredRegionSet)]
struct MeasuredRegion {
    region: Region,
}

struct Measured {
    requests: measured::Counter,
    labelled: measured::CounterVec<MeasuredRequestSet>,
    level: measured::FloatGauge,
    in_flight: measured::Gauge,
    latency: measured::HistogramVec<MeasuredRegionSet, 10>,
    contended: measured::Counter,
}

static MEASURED: LazyLock<Measured> = LazyLock::new(|| Measured {
    requests: measured::Counter::new(),
    labelled: measured::CounterVec::with_label_set(MeasuredRequestSet::new()),
    level: measured::FloatGauge::new(),
    in_flight: measured::Gauge::new(),
    latency: measured::HistogramVec::with_label_set_and_metadata(
        MeasuredRegionSet::new(),
        measured::metric::histogram::Thresholds::with_buckets(BUCKETS),
    ),
    contended: measured::Counter::new(),
});

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
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
        .throughput(Throughput::Elements(1));
    group
}

fn counter_inc(c: &mut Criterion, mode: Mode) {
    let mut group = hot_group(c, &format!("counter_inc{}", mode.suffix));
    floor(&mut group);
    group.bench_function("promshard", |b| b.iter(|| REQUESTS.inc()));
    if mode.peers {
        group.bench_function("prometheus", |b| b.iter(|| PROMETHEUS.requests.inc()));
        group.bench_function("prometheus_client", |b| b.iter(|| PROMETHEUS_CLIENT.requests.inc()));
        group.bench_function("metrics_macro", |b| b.iter(|| metrics::counter!("bench_requests_total").increment(1)));
        let handle = metrics::counter!("bench_requests_total");
        group.bench_function("metrics_cached", |b| b.iter(|| handle.increment(1)));
        group.bench_function("measured", |b| b.iter(|| MEASURED.requests.inc()));
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

    if !mode.peers {
        group.finish();
        return;
    }

    let values = counter_labels().map(|(m, s)| [Method::VALUES[m], Status::VALUES[s]]);
    group.bench_function("prometheus_with_label_values", |b| {
        let table = black_box(&values);
        let mut i = Cycle::<9>(0);
        b.iter(move || PROMETHEUS.labelled.with_label_values(&table[i.next()]).inc())
    });
    let children = values.map(|v| PROMETHEUS.labelled.with_label_values(&v));
    group.bench_function("prometheus_cached", |b| {
        let table = black_box(&children);
        let mut i = Cycle::<9>(0);
        b.iter(move || table[i.next()].inc())
    });
    let statics = counter_labels().map(|(m, s)| (STATIC_METHODS[m], STATIC_STATUSES[s]));
    group.bench_function("prometheus_static_metric", |b| {
        let table = black_box(&statics);
        let mut i = Cycle::<9>(0);
        b.iter(move || {
            let (m, s) = table[i.next()];
            PROMETHEUS.labelled_static.get(m).get(s).inc()
        })
    });

    let client_labels = labels.map(|(method, status)| ClientRequestLabels { method, status });
    group.bench_function("prometheus_client_get_or_create", |b| {
        let table = black_box(&client_labels);
        let mut i = Cycle::<9>(0);
        b.iter(move || PROMETHEUS_CLIENT.labelled.get_or_create(&table[i.next()]).inc())
    });
    let client_handles = client_labels.clone().map(|l| PROMETHEUS_CLIENT.labelled.get_or_create_owned(&l));
    group.bench_function("prometheus_client_cached", |b| {
        let table = black_box(&client_handles);
        let mut i = Cycle::<9>(0);
        b.iter(move || table[i.next()].inc())
    });

    group.bench_function("metrics_macro", |b| {
        let table = black_box(&values);
        let mut i = Cycle::<9>(0);
        b.iter(move || {
            let [method, status] = table[i.next()];
            metrics::counter!("bench_labelled_requests_total", "method" => method, "status" => status).increment(1)
        })
    });
    let metrics_handles = values.map(
        |[method, status]| metrics::counter!("bench_labelled_requests_total", "method" => method, "status" => status),
    );
    group.bench_function("metrics_cached", |b| {
        let table = black_box(&metrics_handles);
        let mut i = Cycle::<9>(0);
        b.iter(move || table[i.next()].increment(1))
    });

    let measured_labels = labels.map(|(method, status)| MeasuredRequest { method, status });
    group.bench_function("measured", |b| {
        let table = black_box(&measured_labels);
        let mut i = Cycle::<9>(0);
        b.iter(move || MEASURED.labelled.inc(table[i.next()]))
    });
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
            b.iter(move || PROMETHEUS.level.set(table[i.next()]))
        });
        group.bench_function("prometheus_client", |b| {
            let table = black_box(&GAUGE_VALUES);
            let mut i = Cycle::<8>(0);
            b.iter(move || PROMETHEUS_CLIENT.level.set(table[i.next()]))
        });
        let handle = metrics::gauge!("bench_level");
        group.bench_function("metrics_cached", |b| {
            let table = black_box(&GAUGE_VALUES);
            let handle = &handle;
            let mut i = Cycle::<8>(0);
            b.iter(move || handle.set(table[i.next()]))
        });
        group.bench_function("measured", |b| {
            let table = black_box(&GAUGE_VALUES);
            let mut i = Cycle::<8>(0);
            b.iter(move || MEASURED.level.set(table[i.next()]))
        });
    }
    group.finish();
}

/// One `inc` and one `dec` per iteration, as an in-flight gauge does
/// around a request. promshard's gauges hold an `f64` (a compare-and-swap
/// loop each way); the integer gauges of the peers that have one are used,
/// as their users would for a count (one `fetch_add` each way).
fn gauge_inc_dec(c: &mut Criterion, mode: Mode) {
    let mut group = hot_group(c, &format!("gauge_inc_dec{}", mode.suffix));
    group.bench_function("floor", |b| {
        b.iter(|| {
            FLOOR.fetch_add(1, Ordering::Relaxed);
            FLOOR.fetch_sub(1, Ordering::Relaxed);
        })
    });
    group.bench_function("promshard", |b| {
        b.iter(|| {
            IN_FLIGHT.inc();
            IN_FLIGHT.dec();
        })
    });
    if mode.peers {
        group.bench_function("prometheus", |b| {
            b.iter(|| {
                PROMETHEUS.in_flight.inc();
                PROMETHEUS.in_flight.dec();
            })
        });
        // The same type as promshard's: an f64 behind compare-and-swap.
        group.bench_function("prometheus_f64", |b| {
            b.iter(|| {
                PROMETHEUS.level.inc();
                PROMETHEUS.level.dec();
            })
        });
        group.bench_function("prometheus_client", |b| {
            b.iter(|| {
                PROMETHEUS_CLIENT.in_flight.inc();
                PROMETHEUS_CLIENT.in_flight.dec();
            })
        });
        let handle = metrics::gauge!("bench_in_flight");
        group.bench_function("metrics_cached", |b| {
            b.iter(|| {
                handle.increment(1.0);
                handle.decrement(1.0);
            })
        });
        group.bench_function("measured", |b| {
            b.iter(|| {
                MEASURED.in_flight.inc();
                MEASURED.in_flight.dec();
            })
        });
    }
    group.finish();
}

fn histogram_observe(c: &mut Criterion, mode: Mode) {
    let mut group = hot_group(c, &format!("histogram_observe{}", mode.suffix));
    floor(&mut group);

    let inputs = histogram_inputs();
    group.bench_function("hand_written_atomic", |b| {
        let table = black_box(&inputs);
        let mut i = Cycle::<30>(0);
        b.iter(move || {
            let (region, v) = table[i.next()];
            HAND_WRITTEN[region].observe(v)
        })
    });

    let regions = histogram_inputs().map(|(r, v)| (REGIONS[r], v));
    group.bench_function("promshard", |b| {
        let table = black_box(&regions);
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

    let values = histogram_inputs().map(|(r, v)| (Region::VALUES[r], v));
    group.bench_function("prometheus_with_label_values", |b| {
        let table = black_box(&values);
        let mut i = Cycle::<30>(0);
        b.iter(move || {
            let (region, v) = table[i.next()];
            PROMETHEUS.latency.with_label_values(&[region]).observe(v)
        })
    });
    let children: [prometheus::Histogram; 3] =
        core::array::from_fn(|r| PROMETHEUS.latency.with_label_values(&[Region::VALUES[r]]));
    group.bench_function("prometheus_cached", |b| {
        let table = black_box(&inputs);
        let children = &children;
        let mut i = Cycle::<30>(0);
        b.iter(move || {
            let (region, v) = table[i.next()];
            children[region].observe(v)
        })
    });
    let statics = histogram_inputs().map(|(r, v)| (STATIC_REGIONS[r], v));
    group.bench_function("prometheus_static_metric", |b| {
        let table = black_box(&statics);
        let mut i = Cycle::<30>(0);
        b.iter(move || {
            let (region, v) = table[i.next()];
            PROMETHEUS.latency_static.get(region).observe(v)
        })
    });

    let client_labels = histogram_inputs().map(|(r, v)| (ClientRegionLabels { region: REGIONS[r] }, v));
    group.bench_function("prometheus_client_get_or_create", |b| {
        let table = black_box(&client_labels);
        let mut i = Cycle::<30>(0);
        b.iter(move || {
            let (region, v) = &table[i.next()];
            PROMETHEUS_CLIENT.latency.get_or_create(region).observe(*v)
        })
    });
    let client_handles: [prometheus_client::metrics::histogram::Histogram; 3] = core::array::from_fn(|r| {
        PROMETHEUS_CLIENT.latency.get_or_create_owned(&ClientRegionLabels { region: REGIONS[r] })
    });
    group.bench_function("prometheus_client_cached", |b| {
        let table = black_box(&inputs);
        let handles = &client_handles;
        let mut i = Cycle::<30>(0);
        b.iter(move || {
            let (region, v) = table[i.next()];
            handles[region].observe(v)
        })
    });

    {
        let _upkeep = Upkeep::start();
        group.bench_function("metrics_macro", |b| {
            let table = black_box(&values);
            let mut i = Cycle::<30>(0);
            b.iter(move || {
                let (region, v) = table[i.next()];
                metrics::histogram!("bench_latency_seconds", "region" => region).record(v)
            })
        });
        let handles: [metrics::Histogram; 3] =
            core::array::from_fn(|r| metrics::histogram!("bench_latency_seconds", "region" => Region::VALUES[r]));
        group.bench_function("metrics_cached", |b| {
            let table = black_box(&inputs);
            let handles = &handles;
            let mut i = Cycle::<30>(0);
            b.iter(move || {
                let (region, v) = table[i.next()];
                handles[region].record(v)
            })
        });
    }

    let measured_labels = histogram_inputs().map(|(r, v)| (MeasuredRegion { region: REGIONS[r] }, v));
    group.bench_function("measured", |b| {
        let table = black_box(&measured_labels);
        let mut i = Cycle::<30>(0);
        b.iter(move || {
            let (region, v) = table[i.next()];
            MEASURED.latency.observe(region, v)
        })
    });
    group.finish();
}

/// Runs `op` `iters` times on this thread and on a second one at once;
/// the time is the slower thread's, so each iteration is one recording on
/// each of the two threads.
/// Trace ids for the exemplar rows, cycled.
const TRACE_IDS: [&str; 8] = [
    "4bf92f3577b34da6a3ce929d0e0e4736",
    "00f067aa0ba902b7a3ce929d0e0e4736",
    "b7ad6b7169203331a3ce929d0e0e4736",
    "0af7651916cd43dd8448eb211c80319c",
    "53995c3f42cd8ad8a3ce929d0e0e4736",
    "5b8efff798038103d269b633813fc60c",
    "eee19b7ec3c1b174a3ce929d0e0e4736",
    "0123456789abcdef0123456789abcdef",
];

/// Exemplars: what an exemplar-enabled counter costs without one (it
/// must cost what a plain counter does), and with one, against
/// prometheus-client's exemplar counter (which takes a lock and keeps
/// its label set; given the time, as promshard takes it).
fn counter_inc_exemplar(c: &mut Criterion, mode: Mode) {
    let mut group = hot_group(c, &format!("counter_inc_exemplar{}", mode.suffix));
    floor(&mut group);
    group.bench_function("promshard", |b| b.iter(|| REQUESTS.inc()));
    group.bench_function("promshard_exemplars_enabled", |b| b.iter(|| WITH_EXEMPLARS.inc()));
    group.bench_function("promshard_with_exemplar", |b| {
        let table = black_box(&TRACE_IDS);
        let mut i = Cycle::<8>(0);
        b.iter(move || WITH_EXEMPLARS.inc_with_exemplar(&[("trace_id", table[i.next()])]))
    });
    if mode.peers {
        group.bench_function("prometheus_client_with_exemplar", |b| {
            let table = black_box(&TRACE_IDS);
            let mut i = Cycle::<8>(0);
            b.iter(move || {
                let labels = ClientTraceLabels { trace_id: table[i.next()] };
                PROMETHEUS_CLIENT.with_exemplar.inc_by(1, Some(labels), Some(std::time::SystemTime::now()))
            })
        });
    }
    group.finish();
}

fn two_threads(iters: u64, op: &(dyn Fn() + Sync)) -> Duration {
    let start = Barrier::new(2);
    std::thread::scope(|scope| {
        let run = || {
            start.wait();
            let t = Instant::now();
            for _ in 0..iters {
                op();
            }
            t.elapsed()
        };
        let other = scope.spawn(run);
        let mine = run();
        mine.max(other.join().unwrap())
    })
}

/// One counter, no labels, incremented from two threads at once: what
/// every library then pays is the cache line moving between cores.
fn contended_inc(c: &mut Criterion, mode: Mode) {
    let mut group = hot_group(c, &format!("counter_inc_2_threads{}", mode.suffix));
    let mut add = |name: &str, op: &(dyn Fn() + Sync)| {
        group.bench_function(name, |b| b.iter_custom(|iters| two_threads(iters, op)));
    };
    add("floor", &|| {
        black_box(FLOOR.fetch_add(1, Ordering::Relaxed));
    });
    add("promshard", &|| CONTENDED.inc());
    if mode.peers {
        add("prometheus", &|| PROMETHEUS.contended.inc());
        add("prometheus_client", &|| {
            black_box(PROMETHEUS_CLIENT.contended.inc());
        });
        let handle = metrics::counter!("bench_contended_total");
        add("metrics_cached", &|| handle.increment(1));
        add("measured", &|| MEASURED.contended.inc());
    }
    group.finish();
}

/// One unlabelled native histogram (schema 3, 160 buckets): promshard's
/// beside prometheus-client's (`Histogram::new_native`, a mutex-guarded
/// bucket map), with each library's classic histogram of the same values
/// for scale. The values span 6 powers of ten, so about 160 buckets.
fn native_observe(c: &mut Criterion, mode: Mode) {
    let mut group = hot_group(c, &format!("native_observe{}", mode.suffix));
    floor(&mut group);
    let values: [f64; 30] = core::array::from_fn(|i| OBSERVATIONS[i % 10] * 10f64.powi((i / 10) as i32 * 2 - 1));
    group.bench_function("promshard_native", |b| {
        let table = black_box(&values);
        let mut i = Cycle::<30>(0);
        b.iter(move || NATIVE.observe(table[i.next()]))
    });
    group.bench_function("promshard_classic", |b| {
        let table = black_box(&values);
        let mut i = Cycle::<30>(0);
        b.iter(move || CLASSIC.observe(table[i.next()]))
    });
    // 160 buckets of schema 8 between 1 and 1.6; the values timed are
    // all above 2.
    (0..160).for_each(|j| NATIVE_FULL.observe(2f64.powf((j as f64 + 0.5) / 256.0)));
    group.bench_function("promshard_native_full_table", |b| {
        let table = black_box(&values);
        let mut i = Cycle::<30>(0);
        b.iter(move || NATIVE_FULL.observe(table[i.next()] * 1000.0 + 2.0))
    });
    if !mode.peers {
        group.finish();
        return;
    }
    use prometheus_client::metrics::histogram::{Histogram as ClientHistogram, NativeHistogramConfig};
    let native = ClientHistogram::new_native(NativeHistogramConfig::with_schema(3).max_buckets(160));
    group.bench_function("prometheus_client_native", |b| {
        let table = black_box(&values);
        let mut i = Cycle::<30>(0);
        b.iter(|| native.observe(table[i.next()]))
    });
    let classic = ClientHistogram::new(BUCKETS);
    group.bench_function("prometheus_client_classic", |b| {
        let table = black_box(&values);
        let mut i = Cycle::<30>(0);
        b.iter(|| classic.observe(table[i.next()]))
    });
    group.finish();
}

fn all(c: &mut Criterion, mode: Mode) {
    counter_inc(c, mode);
    labelled_counter_inc(c, mode);
    histogram_observe(c, mode);
    native_observe(c, mode);
    gauge_set(c, mode);
    gauge_inc_dec(c, mode);
    contended_inc(c, mode);
    counter_inc_exemplar(c, mode);
}

fn main() {
    // The same benchmarks in multiprocess mode, where the slots are an
    // mmap'd shard file.
    forked::in_shard_process("mmap", |c| all(c, MMAP));

    promshard::check_registry().expect("benchmark metrics are consistent");
    LazyLock::force(&PROMETHEUS);
    LazyLock::force(&PROMETHEUS_CLIENT);
    LazyLock::force(&METRICS);
    LazyLock::force(&MEASURED);

    let mut c = Criterion::default().configure_from_args();
    all(&mut c, MEMORY);
    c.final_summary();
}
