//! The macros' output must not depend on names the user can shadow, and
//! must compile without warnings.

#![deny(warnings)]
#![allow(dead_code)]

struct Result;
struct Ok;
struct Some;
struct None;
struct Option;
mod core {}
mod promshard {}

use ::promshard::{Counter, Enum, Gauge, Histogram, LabelValue, metric};

#[derive(Clone, Copy, LabelValue)]
enum Mode {
    Fast,
    Safe,
}

/// Jobs.
#[metric(labels(mode: Mode, queue = ["a", "b"] else "a", shard = bounded(4)))]
static JOBS_TOTAL: Counter;

/// Depth.
#[metric(mode = max, labels(queue = ["a", "b"]))]
static DEPTH: Gauge;

/// Latency.
#[metric(unit = "seconds", buckets = linear(0.1, 0.1, 5))]
static LATENCY_SECONDS: Histogram;

/// Mode.
#[metric]
static CURRENT_MODE: Enum<Mode>;

/// Bodies that always panic leave the macro's own code unreachable: that
/// must not warn.
#[::promshard::instrument_handler]
fn always_fails() -> u32 {
    panic!("never returns")
}

#[::promshard::instrument_handler(route = "/trip/{id}", method = "GET")]
async fn always_fails_async(id: u32) -> ::core::result::Result<u32, ()> {
    if id > 0 {
        return ::core::result::Result::Err(());
    }
    panic!("never returns")
}

#[::promshard::instrument_handler(route = "/trip", method = "POST")]
fn returns_unit() {}

#[::promshard::instrument_handler]
fn never_returns() -> ! {
    loop {
        ::std::thread::park();
    }
}

#[::promshard::instrument_handler]
async fn never_returns_async(limit: u32) -> ! {
    let mut seen = 0;
    loop {
        seen += 1;
        if seen > limit {
            panic!("stopped after {seen}");
        }
        ::std::future::ready(()).await;
    }
}

fn layer() -> ::promshard::layer::HttpMetricsLayer {
    ::promshard::http_layer!()
}

#[test]
fn expands_beside_shadowing_names() {
    let _ = (always_fails, always_fails_async, returns_unit, never_returns, never_returns_async, layer);
    JOBS_TOTAL.with((Mode::Safe, "b", "7")).inc();
    DEPTH.with(("a",)).set(1.0);
    LATENCY_SECONDS.observe(0.25);
    CURRENT_MODE.set(Mode::Fast);
    assert_eq!(
        ::promshard::testing::sample_value("jobs_total", &[("mode", "safe"), ("queue", "b"), ("shard", "7")]),
        ::core::option::Option::Some(1.0)
    );
}
