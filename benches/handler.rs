//! What `#[instrument_handler]` adds to a call, against the same function
//! uninstrumented and a hand-written `prometheus`-crate version
//! (IntCounterVec + HistogramVec + IntGaugeVec), in one criterion run.
//!
//! ```sh
//! cargo bench --bench handler
//! ```
//!
//! Every function does the same small piece of work on a `black_box`ed
//! input and returns `Result<u64, Error>`; the instrumented ones record a
//! counter by outcome, a histogram observation of the elapsed time (two
//! clock reads) and an in-flight gauge up and down. `_mmap` groups run
//! the promshard variants again in multiprocess mode (slots in a shard
//! file), in a forked child, since a process chooses its storage once.

mod forked;

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::LazyLock;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, Throughput, measurement::WallTime};
use promshard::instrument_handler;

#[derive(Debug)]
struct Error;

#[inline(never)]
fn work(x: u64) -> Result<u64, Error> {
    let y = black_box(x).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    if y == 1 { Err(Error) } else { Ok(y) }
}

#[inline(never)]
fn bare(x: u64) -> Result<u64, Error> {
    work(x)
}

#[instrument_handler(route = "/users/{id}", method = "GET")]
#[inline(never)]
fn instrumented(x: u64) -> Result<u64, Error> {
    work(x)
}

#[inline(never)]
async fn bare_async(x: u64) -> Result<u64, Error> {
    work(x)
}

#[instrument_handler(route = "/orders/{id}", method = "POST")]
#[inline(never)]
async fn instrumented_async(x: u64) -> Result<u64, Error> {
    work(x)
}

#[instrument_handler]
#[inline(never)]
fn instrumented_function(x: u64) -> Result<u64, Error> {
    work(x)
}

/// What a careful user writes with the `prometheus` crate.
struct Peers {
    requests: prometheus::IntCounterVec,
    duration: prometheus::HistogramVec,
    in_flight: prometheus::IntGaugeVec,
}

static PEERS: LazyLock<Peers> = LazyLock::new(|| {
    let requests = prometheus::IntCounterVec::new(
        prometheus::Opts::new("http_requests_total", "Requests."),
        &["handler", "method", "status"],
    )
    .unwrap();
    let duration = prometheus::HistogramVec::new(
        prometheus::HistogramOpts::new("http_request_duration_seconds", "Latency."),
        &["handler", "method"],
    )
    .unwrap();
    let in_flight =
        prometheus::IntGaugeVec::new(prometheus::Opts::new("http_requests_in_flight", "In flight."), &["handler"])
            .unwrap();
    Peers { requests, duration, in_flight }
});

#[inline(never)]
fn hand_written(x: u64) -> Result<u64, Error> {
    let peers = &*PEERS;
    let in_flight = peers.in_flight.with_label_values(&["/users/{id}"]);
    in_flight.inc();
    let start = Instant::now();
    let result = work(x);
    let status = if result.is_ok() { "200" } else { "500" };
    peers.duration.with_label_values(&["/users/{id}", "GET"]).observe(start.elapsed().as_secs_f64());
    peers.requests.with_label_values(&["/users/{id}", "GET", status]).inc();
    in_flight.dec();
    result
}

/// Polls a future that never waits to completion.
#[inline(always)]
fn run<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => value,
        Poll::Pending => unreachable!("the benchmarked bodies never wait"),
    }
}

fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
        .throughput(Throughput::Elements(1));
    group
}

fn sync_calls(c: &mut Criterion, suffix: &str, peers: bool) {
    let mut g = group(c, &format!("handler_sync{suffix}"));
    let mut x = 0u64;
    g.bench_function("bare", |b| b.iter(|| bare(black_box(next(&mut x)))));
    g.bench_function("promshard", |b| b.iter(|| instrumented(black_box(next(&mut x)))));
    g.bench_function("promshard_function", |b| b.iter(|| instrumented_function(black_box(next(&mut x)))));
    if peers {
        g.bench_function("prometheus", |b| b.iter(|| hand_written(black_box(next(&mut x)))));
    }
    g.finish();
}

fn async_calls(c: &mut Criterion, suffix: &str) {
    let mut g = group(c, &format!("handler_async{suffix}"));
    let mut x = 0u64;
    g.bench_function("bare", |b| b.iter(|| run(bare_async(black_box(next(&mut x))))));
    g.bench_function("promshard", |b| b.iter(|| run(instrumented_async(black_box(next(&mut x))))));
    g.finish();
}

#[inline(always)]
fn next(x: &mut u64) -> u64 {
    *x = x.wrapping_add(1);
    *x
}

/// The same benchmarks in multiprocess mode, where the slots are an mmap'd
/// shard file.
fn mmap_mode() {
    forked::in_shard_process("handler", |c| {
        sync_calls(c, "_mmap", false);
        async_calls(c, "_mmap");
    });
}

fn main() {
    mmap_mode();
    promshard::check_registry().expect("benchmark metrics are consistent");
    LazyLock::force(&PEERS);
    let mut c = Criterion::default().configure_from_args();
    sync_calls(&mut c, "", true);
    async_calls(&mut c, "");
    c.final_summary();
}
