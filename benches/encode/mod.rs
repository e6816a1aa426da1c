//! Shared by `encode_1k`, `encode_100k` and `encode_1m`: the cost of a
//! scrape (text exposition) of one counter family of that many series, and
//! the bytes each library holds for those series, for promshard (memory
//! mode, and multiprocess mode: merge + encode of its shard) and every peer
//! that encodes Prometheus text.
//!
//! One binary per size, because promshard exposes every series it
//! declares from the start: a binary holding the 1M-series family would
//! expose it in every scrape. Each binary's registry holds exactly one
//! family (plus promshard's self-metrics and process metrics, which every
//! promshard scrape carries).
//!
//! The family is `requests_total{route, tenant}`, with label values as
//! real programs have them, not sorted: `route` is `/api/v1/resource/<n>`
//! in numeric order (`/…/10` sorts before `/…/2`), `tenant` a scrambled
//! hex id. Every series holds a different value.
//!
//! Every library writes into an output buffer kept from one scrape to the
//! next where its API allows it (promshard's `encode_into`; the others'
//! writers); `promshard` also without, as `promshard::encode()` returns a
//! fresh `Vec`. What each row includes:
//!
//! - `prometheus`: `Registry::gather()` (a snapshot of every series into
//!   protobuf structs, sorted) then `TextEncoder::encode`;
//! - `prometheus_client`: `encoding::text::encode` of its registry;
//! - `measured`: `collect_group_into` a `BufferedTextEncoder`, labels in
//!   `lasso` interners fixed at startup (its high-cardinality path), in the
//!   storage `with_label_set` picks for that cardinality (sparse over 1,024);
//! - `metrics_exporter_prometheus`: `PrometheusHandle::render_to_write`;
//! - `promshard`: `encode_into` (memory mode), and in `promshard_mmap` the
//!   same call in multiprocess mode, which merges the directory (here its
//!   own shard) before it encodes. Both include promshard's process
//!   metrics (`/proc/self` read at every scrape), which no peer here adds.
//!   At 100,000 series, `promshard_gzip` adds what a scrape asking for
//!   gzip costs (at promshard's level, and at gzip's default level 6), and
//!   `promshard_protobuf` the protobuf exposition, plain and gzipped.
//!
//! Memory: a counting global allocator sums the bytes requested from the
//! allocator (not its own overhead) and not yet freed, from before a
//! library's registry is made until its series all hold their values.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::Duration;

use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, measurement::WallTime};
use promshard::{Counter, Format, LabelValue, Opts};

use crate::forked;
use crate::results::record;

// ---------------------------------------------------------------------------
// Counting allocator

/// Counts the bytes held while [`COUNTING`] is on; a relaxed load
/// otherwise, so that the encoding benches (where some peers allocate per
/// series) are not slowed by it.
pub struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
static HELD: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            HELD.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            HELD.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            HELD.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            HELD.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
}

/// The bytes `f` leaves allocated, and what it returns.
pub fn held_by<T>(f: impl FnOnce() -> T) -> (T, usize) {
    HELD.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::SeqCst);
    let value = f();
    COUNTING.store(false, Ordering::SeqCst);
    (value, HELD.load(Ordering::Relaxed).max(0) as usize)
}

// ---------------------------------------------------------------------------
// Label values, generated at compile time

const ROUTE_WIDTH: usize = 24;
const TENANT_WIDTH: usize = 15;
const MAX_VALUES: usize = 1000;

/// `/api/v1/resource/<i>`, in a fixed-width buffer, and its length.
const fn route_bytes() -> [([u8; ROUTE_WIDTH], usize); MAX_VALUES] {
    let prefix = b"/api/v1/resource/";
    let mut out = [([0u8; ROUTE_WIDTH], 0); MAX_VALUES];
    let mut i = 0;
    while i < MAX_VALUES {
        let mut p = 0;
        while p < prefix.len() {
            out[i].0[p] = prefix[p];
            p += 1;
        }
        let digits = if i >= 100 {
            3
        } else if i >= 10 {
            2
        } else {
            1
        };
        let mut n = i;
        let mut d = digits;
        while d > 0 {
            d -= 1;
            out[i].0[p + d] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out[i].1 = p + digits;
        i += 1;
    }
    out
}

/// `tenant-<8 hex digits>`: index `i` scrambled by a bijection of `u32`,
/// so the ids look random and no two are equal.
const fn tenant_bytes() -> [([u8; TENANT_WIDTH], usize); MAX_VALUES] {
    let prefix = b"tenant-";
    let hex = b"0123456789abcdef";
    let mut out = [([0u8; TENANT_WIDTH], TENANT_WIDTH); MAX_VALUES];
    let mut i = 0;
    while i < MAX_VALUES {
        let mut p = 0;
        while p < prefix.len() {
            out[i].0[p] = prefix[p];
            p += 1;
        }
        let mut x = (i as u32).wrapping_mul(0x9e37_79b1) ^ 0x5bd1_e995;
        let mut d = 8;
        while d > 0 {
            d -= 1;
            out[i].0[p + d] = hex[(x & 15) as usize];
            x >>= 4;
        }
        i += 1;
    }
    out
}

/// Views each generated value as a `&'static str`.
const fn as_strs<const W: usize>(values: &'static [([u8; W], usize); MAX_VALUES]) -> [&'static str; MAX_VALUES] {
    let mut out = [""; MAX_VALUES];
    let mut i = 0;
    while i < MAX_VALUES {
        let (bytes, _) = values[i].0.split_at(values[i].1);
        out[i] = match core::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(_) => panic!("generated values are ASCII"),
        };
        i += 1;
    }
    out
}

static ROUTE_BYTES: [([u8; ROUTE_WIDTH], usize); MAX_VALUES] = route_bytes();
static TENANT_BYTES: [([u8; TENANT_WIDTH], usize); MAX_VALUES] = tenant_bytes();
pub static ROUTES: [&str; MAX_VALUES] = as_strs(&ROUTE_BYTES);
pub static TENANTS: [&str; MAX_VALUES] = as_strs(&TENANT_BYTES);

/// The first `N` routes as a promshard label.
#[derive(Clone, Copy)]
pub struct Route<const N: usize>(pub usize);

impl<const N: usize> LabelValue for Route<N> {
    const VALUES: &'static [&'static str] = ROUTES.split_at(N).0;
    fn index(self) -> usize {
        self.0
    }
}

/// The first `N` tenants as a promshard label.
#[derive(Clone, Copy)]
pub struct Tenant<const N: usize>(pub usize);

impl<const N: usize> LabelValue for Tenant<N> {
    const VALUES: &'static [&'static str] = TENANTS.split_at(N).0;
    fn index(self) -> usize {
        self.0
    }
}

/// The family every library builds.
pub type Requests<const R: usize, const T: usize> = Counter<(Route<R>, Tenant<T>)>;

pub const NAME: &str = "requests_total";
pub const HELP: &str = "Requests by route and tenant.";

pub const fn requests<const R: usize, const T: usize>() -> Requests<R, T> {
    Counter::new(Opts::new(NAME, HELP).labels(&["route", "tenant"]))
}

/// The value series (route, tenant) holds, in every library.
pub fn value(route: usize, tenant: usize) -> u64 {
    ((route * 7919 + tenant * 31) % 100_000) as u64 + 1
}

/// Every (route, tenant) pair.
fn pairs(routes: usize, tenants: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..routes).flat_map(move |r| (0..tenants).map(move |t| (r, t)))
}

/// How many samples of the family an exposition holds.
fn samples(text: &[u8]) -> usize {
    let prefix = format!("{NAME}{{");
    text.split(|&b| b == b'\n').filter(|line| line.starts_with(prefix.as_bytes())).count()
}

// ---------------------------------------------------------------------------
// The benchmark

pub struct Size {
    /// `1k`, `100k`, `1m`: in group names and results.
    pub name: &'static str,
    pub routes: usize,
    pub tenants: usize,
    /// Whether to measure what gzip adds to promshard's scrape too.
    pub gzip: bool,
}

impl Size {
    fn series(&self) -> usize {
        self.routes * self.tenants
    }
}

fn group<'a>(c: &'a mut Criterion, size: &Size) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(format!("encode_{}", size.name));
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(size.series() as u64));
    group
}

fn memory(size: &Size, library: &str, mode: &str, bytes: usize) {
    record(
        "memory.jsonl",
        &[
            ("size", size.name.into()),
            ("series", size.series().into()),
            ("library", library.into()),
            ("mode", mode.into()),
            ("bytes", bytes.into()),
            ("bytes_per_series", (bytes as f64 / size.series() as f64).into()),
        ],
    );
}

/// Runs `child` in a forked child and waits for it.
fn in_child(child: impl FnOnce()) {
    // SAFETY: the child runs `child` and _exits; the parent waits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        child();
        // SAFETY: leave without running the parent's benchmarks.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child failed");
}

/// Runs the whole benchmark for one size; `fill` records every series'
/// value into promshard's family.
pub fn run<const R: usize, const T: usize>(size: Size, metric: &'static Requests<R, T>) {
    assert_eq!((R, T), (size.routes, size.tenants));
    let series = size.series();
    let fill = move || {
        for (r, t) in pairs(R, T) {
            metric.with((Route(r), Tenant(t))).inc_by(value(r, t));
        }
    };

    // Memory mode: everything promshard's layout allocates (the slots, and
    // the label text of every series, rendered once), then the recordings.
    in_child(|| {
        let ((), bytes) = held_by(|| {
            promshard::check_registry().expect("one family");
            fill();
        });
        memory(&size, "promshard", "memory", bytes);
    });

    // Multiprocess mode: the shard file, and what the process keeps in
    // memory beside it.
    in_child(|| {
        let dir = std::env::temp_dir().join(format!("promshard-bench-encode-memory-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        promshard::multiprocess::init(&dir).unwrap();
        let ((), bytes) = held_by(|| {
            promshard::check_registry().expect("one family");
            fill();
        });
        let shard = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".promshard"))
            .map(|e| e.metadata().unwrap().len() as usize)
            .max()
            .expect("a shard file");
        memory(&size, "promshard", "shard_file", shard);
        memory(&size, "promshard", "shard_heap", bytes);
        let _ = std::fs::remove_dir_all(&dir);
    });

    // The same scrape in multiprocess mode: merge + encode.
    forked::in_shard_process(&format!("encode-{}", size.name), |c| {
        fill();
        let mut out = Vec::new();
        promshard::encode_into(Format::Prometheus, &mut out);
        assert_eq!(samples(&out), series);
        let mut group = group(c, &size);
        group.bench_function("promshard_mmap", |b| {
            b.iter(|| {
                out.clear();
                promshard::encode_into(Format::Prometheus, &mut out);
                out.len()
            })
        });
        group.finish();
    });

    promshard::check_registry().expect("one family");
    fill();
    let mut c = Criterion::default().configure_from_args();

    {
        let mut out = Vec::new();
        promshard::encode_into(Format::Prometheus, &mut out);
        assert_eq!(samples(&out), series);
        let mut group = group(&mut c, &size);
        group.bench_function("promshard", |b| {
            b.iter(|| {
                out.clear();
                promshard::encode_into(Format::Prometheus, &mut out);
                out.len()
            })
        });
        group.bench_function("promshard_fresh_vec", |b| b.iter(|| promshard::encode(Format::Prometheus)));
        if size.gzip {
            gzip(&mut group, &size);
        }
        group.finish();
    }

    prometheus(&mut c, &size);
    prometheus_client(&mut c, &size);
    measured(&mut c, &size);
    metrics_exporter(&mut c, &size);
    c.final_summary();
}

/// What a scrape with `Accept-Encoding: gzip` costs (Prometheus always
/// sends it): encoding, then gzip at the level promshard chose
/// (`runtime/src/content_encoding.rs`); the same at gzip's default level
/// 6, the alternative; and the protobuf exposition, plain and gzipped. The
/// bytes of each are recorded beside.
fn gzip(group: &mut BenchmarkGroup<'_, WallTime>, size: &Size) {
    use std::io::{Read, Write};
    let content_type = Format::Prometheus.content_type();
    let level_6 = |body: &[u8]| {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        encoder.write_all(body).unwrap();
        encoder.finish().unwrap()
    };
    group.bench_function("promshard_gzip", |b| {
        b.iter(|| {
            promshard::MetricsResponse::new(promshard::encode(Format::Prometheus), content_type, Some("gzip"))
                .into_body()
        })
    });
    group.bench_function("promshard_gzip_level_6", |b| b.iter(|| level_6(&promshard::encode(Format::Prometheus))));
    // The protobuf exposition of the same series (what Prometheus asks for
    // first with native histograms on), plain and as sent gzipped.
    let proto_type = Format::Protobuf.content_type();
    group.bench_function("promshard_protobuf", |b| b.iter(|| promshard::encode(Format::Protobuf)));
    group.bench_function("promshard_protobuf_gzip", |b| {
        b.iter(|| {
            promshard::MetricsResponse::new(promshard::encode(Format::Protobuf), proto_type, Some("gzip")).into_body()
        })
    });

    let text = promshard::encode(Format::Prometheus);
    let sent = promshard::MetricsResponse::new(text.clone(), content_type, Some("gzip")).into_body();
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&sent[..]).read_to_end(&mut decoded).unwrap();
    assert!(decoded == text, "gzip round trip");
    record(
        "gzip.jsonl",
        &[
            ("size", size.name.into()),
            ("text_bytes", text.len().into()),
            ("sent_bytes", sent.len().into()),
            ("level_6_bytes", level_6(&text).len().into()),
        ],
    );
    let proto = promshard::encode(Format::Protobuf);
    let proto_sent = promshard::MetricsResponse::new(proto.clone(), proto_type, Some("gzip")).into_body();
    record(
        "gzip.jsonl",
        &[
            ("size", format!("{}_protobuf", size.name).into()),
            ("text_bytes", text.len().into()),
            ("sent_bytes", proto_sent.len().into()),
            ("protobuf_bytes", proto.len().into()),
        ],
    );
}

fn prometheus(c: &mut Criterion, size: &Size) {
    let ((registry, _counter), bytes) = held_by(|| {
        let registry = prometheus::Registry::new();
        let counter = prometheus::IntCounterVec::new(prometheus::Opts::new(NAME, HELP), &["route", "tenant"]).unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        for (r, t) in pairs(size.routes, size.tenants) {
            counter.with_label_values(&[ROUTES[r], TENANTS[t]]).inc_by(value(r, t));
        }
        (registry, counter)
    });
    memory(size, "prometheus", "memory", bytes);
    let encoder = prometheus::TextEncoder::new();
    let mut out = Vec::new();
    prometheus::Encoder::encode(&encoder, &registry.gather(), &mut out).unwrap();
    assert_eq!(samples(&out), size.series());
    let mut group = group(c, size);
    group.bench_function("prometheus", |b| {
        b.iter(|| {
            out.clear();
            prometheus::Encoder::encode(&encoder, &registry.gather(), &mut out).unwrap();
            out.len()
        })
    });
    group.finish();
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
struct ClientLabels {
    route: &'static str,
    tenant: &'static str,
}

fn prometheus_client(c: &mut Criterion, size: &Size) {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    let ((registry, _family), bytes) = held_by(|| {
        let mut registry = prometheus_client::registry::Registry::default();
        let family = Family::<ClientLabels, Counter>::default();
        registry.register("requests", HELP, family.clone());
        for (r, t) in pairs(size.routes, size.tenants) {
            family.get_or_create(&ClientLabels { route: ROUTES[r], tenant: TENANTS[t] }).inc_by(value(r, t));
        }
        (registry, family)
    });
    memory(size, "prometheus_client", "memory", bytes);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
    assert_eq!(samples(out.as_bytes()), size.series());
    let mut group = group(c, size);
    group.bench_function("prometheus_client", |b| {
        b.iter(|| {
            out.clear();
            prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
            out.len()
        })
    });
    group.finish();
}

type Interned = lasso::RodeoReader<lasso::Spur, std::hash::RandomState>;

#[derive(Clone, Copy, measured::LabelGroup)]
#[label(set = MeasuredLabelSet)]
struct MeasuredLabels<'a> {
    #[label(fixed_with = Interned)]
    route: &'a str,
    #[label(fixed_with = Interned)]
    tenant: &'a str,
}

#[derive(measured::MetricGroup)]
struct MeasuredMetrics {
    /// Requests by route and tenant.
    requests_total: measured::CounterVec<MeasuredLabelSet>,
}

fn measured(c: &mut Criterion, size: &Size) {
    use measured::MetricGroup;
    let (metrics, bytes) = held_by(|| {
        let set = MeasuredLabelSet {
            route: lasso::Rodeo::from_iter(&ROUTES[..size.routes]).into_reader(),
            tenant: lasso::Rodeo::from_iter(&TENANTS[..size.tenants]).into_reader(),
        };
        let metrics = MeasuredMetrics { requests_total: measured::CounterVec::with_label_set(set) };
        for (r, t) in pairs(size.routes, size.tenants) {
            metrics.requests_total.inc_by(MeasuredLabels { route: ROUTES[r], tenant: TENANTS[t] }, value(r, t));
        }
        metrics
    });
    memory(size, "measured", "memory", bytes);
    let mut encoder = measured::text::BufferedTextEncoder::new();
    metrics.collect_group_into(&mut encoder).unwrap();
    assert_eq!(samples(&encoder.finish()), size.series());
    let mut group = group(c, size);
    group.bench_function("measured", |b| {
        b.iter(|| {
            metrics.collect_group_into(&mut encoder).unwrap();
            encoder.finish().len()
        })
    });
    group.finish();
}

fn metrics_exporter(c: &mut Criterion, size: &Size) {
    let (recorder, bytes) = held_by(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        metrics::with_local_recorder(&recorder, || {
            metrics::describe_counter!(NAME, HELP);
            for (r, t) in pairs(size.routes, size.tenants) {
                metrics::counter!(NAME, "route" => ROUTES[r], "tenant" => TENANTS[t]).increment(value(r, t));
            }
        });
        recorder
    });
    memory(size, "metrics_exporter_prometheus", "memory", bytes);
    let handle = recorder.handle();
    let mut out = Vec::new();
    handle.render_to_write(&mut out).unwrap();
    assert_eq!(samples(&out), size.series());
    let mut group = group(c, size);
    group.bench_function("metrics_exporter_prometheus", |b| {
        b.iter(|| {
            out.clear();
            handle.render_to_write(&mut out).unwrap();
            black_box(out.len())
        })
    });
    group.finish();
}
