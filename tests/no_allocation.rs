//! Attacks "recording is one atomic operation on a slot: no lock, no
//! allocation": every recording call, after the first use of a series,
//! is run under an allocator that counts this thread's allocations, in
//! memory mode and (in a fresh process) with a shard directory.

mod harness;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use promshard::{Counter, Gauge, Histogram, LabelValue, metric};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[derive(Clone, Copy, LabelValue)]
enum Method {
    Get,
    Post,
}

/// Requests.
#[metric(labels(method: Method, status = ["2xx", "5xx"]))]
static NOALLOC_REQUESTS_TOTAL: Counter;

/// Routes.
#[metric(labels(route = bounded(4)))]
static NOALLOC_ROUTES_TOTAL: Counter;

/// In flight.
#[metric(mode = livesum)]
static NOALLOC_IN_FLIGHT: Gauge;

/// Latency.
#[metric(unit = "seconds", buckets = [0.01, 0.1, 1.0])]
static NOALLOC_LATENCY_SECONDS: Histogram;

/// Orders, with exemplars.
#[metric(labels(shop = ["a", "b"]), exemplars)]
static NOALLOC_ORDERS_TOTAL: Counter;

/// Checkout time, with exemplars.
#[metric(buckets = [0.1, 1.0], exemplars)]
static NOALLOC_CHECKOUT_SECONDS: Histogram;

/// Allocations made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

/// An exemplar value over OpenMetrics' limit.
const LONG: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

fn record_everything() {
    for i in 0..1000u32 {
        let method = if i % 2 == 0 { Method::Get } else { Method::Post };
        NOALLOC_REQUESTS_TOTAL.with((method, ["2xx", "5xx"][i as usize % 2])).inc();
        NOALLOC_ROUTES_TOTAL.with((["/a", "/b"][i as usize % 2],)).inc_by(2);
        NOALLOC_IN_FLIGHT.inc();
        NOALLOC_LATENCY_SECONDS.observe(f64::from(i) / 1000.0);
        NOALLOC_IN_FLIGHT.dec();
        let _ = NOALLOC_REQUESTS_TOTAL.with((method, "2xx")).inc_by_f64(0.5);
        NOALLOC_LATENCY_SECONDS.observe(f64::NAN);
        let trace = ["4bf92f3577b34da6", "00f067aa0ba902b7"][i as usize % 2];
        NOALLOC_ORDERS_TOTAL.with((["a", "b"][i as usize % 2],)).inc_with_exemplar(&[("trace_id", trace)]);
        NOALLOC_CHECKOUT_SECONDS.observe_with_exemplar(f64::from(i) / 500.0, &[("trace_id", trace), ("n", "é")]);
        // Refused (too long; logged the first time only): counted all the same.
        NOALLOC_ORDERS_TOTAL.with(("a",)).inc_with_exemplar(&[("trace_id", LONG)]);
    }
}

fn check() {
    // The first use lays the registry out and interns the bounded values:
    // those allocate, once.
    record_everything();
    assert!(allocations(|| drop(std::hint::black_box(vec![0u8; 64]))) > 0, "the counting allocator counts");
    let made = allocations(record_everything);
    assert_eq!(made, 0, "recording allocated {made} times after the first use");
    let text = String::from_utf8(promshard::encode(promshard::Format::Prometheus)).unwrap();
    assert!(text.contains("noalloc_routes_total{route=\"/a\"} 2000"), "{text}");
    assert!(text.contains("noalloc_orders_total{shop=\"a\"} 3000"), "{text}");
    let text = String::from_utf8(promshard::encode(promshard::Format::OpenMetrics)).unwrap();
    assert!(text.contains("noalloc_orders_total{shop=\"b\"} 1000 # {trace_id=\"00f067aa0ba902b7\"} 1 "), "{text}");
}

#[test]
fn recording_never_allocates_in_memory() {
    harness::isolated("recording_never_allocates_in_memory", Duration::from_secs(60), check);
}

#[test]
fn recording_never_allocates_into_a_shard() {
    harness::isolated("recording_never_allocates_into_a_shard", Duration::from_secs(60), || {
        let dir = harness::TempDir::new("noalloc");
        promshard::multiprocess::init(dir.path().join("shards")).unwrap();
        check();
        assert!(promshard::multiprocess::shard_dir().is_some(), "recorded into a shard");
    });
}
