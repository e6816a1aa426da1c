//! What the `#[instrument_handler]` tests share: running a future on the
//! test's thread, a body that awaits once, and reading a handler's
//! families back.

// Each test crate that includes this module uses a different subset.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use promshard::testing::sample_value;

/// Polls `future` to completion on this thread.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
    }
}

/// Pending on its first poll, ready on the second: a body that awaits.
pub struct Yield(pub bool);

impl Future for Yield {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            Poll::Pending
        }
    }
}

/// The `handler` label of `function`, declared at the test crate's root.
pub fn path(function: &str) -> String {
    format!("{}::{function}", env!("CARGO_CRATE_NAME"))
}

/// `function_calls_total{handler, result}` for ok, error, panic and
/// cancelled, then the histogram's `_count` and the in-flight gauge.
pub fn function_counts(handler: &str) -> ([f64; 4], f64, f64) {
    let calls = ["ok", "error", "panic", "cancelled"].map(|result| {
        sample_value("function_calls_total", &[("handler", handler), ("result", result)])
            .unwrap_or_else(|| panic!("no series for {handler}"))
    });
    let count = sample_value("function_call_duration_seconds_count", &[("handler", handler)]).unwrap();
    let in_flight = sample_value("function_calls_in_flight", &[("handler", handler)]).unwrap();
    (calls, count, in_flight)
}
