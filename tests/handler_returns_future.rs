//! Attacks "the outcome comes from the return type; a future dropped
//! before it completes is counted as cancelled" for handlers written
//! without `async fn`: a `fn` returning `impl Future` (what axum accepts
//! as a handler, and what a trait method with a `Send` future returns) or
//! the futures crate's `BoxFuture`. Such a function does its work when
//! its future is polled, not when it is called; it used to be timed and
//! classified as a plain function: a call of no duration, counted `ok`
//! (the future is not a `Result`) the moment the future was made, its
//! errors, panics and cancellations never seen.
//!
//! Expected: the call is the future's life, as for `async fn`: from its
//! first poll to its end, with the outcome of its output.

mod calls;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use calls::{Yield, path};
use promshard::instrument_handler;
use promshard::testing::sample_value;

/// Polls `future` once; `Some(output)` if it completed.
fn poll_once<F: Future>(future: Pin<&mut F>) -> Option<F::Output> {
    match future.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => Some(value),
        Poll::Pending => None,
    }
}

/// Runs `future`, waiting `pause` after its first (pending) poll.
fn run_with_pause<F: Future>(future: F, pause: Duration) -> F::Output {
    let mut future = Box::pin(future);
    assert!(poll_once(future.as_mut()).is_none(), "the body awaits once");
    std::thread::sleep(pause);
    poll_once(future.as_mut()).expect("ready on the second poll")
}

/// Calls by result (`ok`, `error`, `panic`, `cancelled`), the duration's
/// `_count` and `_sum`, and the in-flight gauge.
fn counts(handler: &str) -> ([f64; 4], f64, f64, f64) {
    let calls = ["ok", "error", "panic", "cancelled"]
        .map(|result| sample_value("function_calls_total", &[("handler", handler), ("result", result)]).unwrap());
    let count = sample_value("function_call_duration_seconds_count", &[("handler", handler)]).unwrap();
    let sum = sample_value("function_call_duration_seconds_sum", &[("handler", handler)]).unwrap();
    let in_flight = sample_value("function_calls_in_flight", &[("handler", handler)]).unwrap();
    (calls, count, sum, in_flight)
}

#[instrument_handler]
fn load_profile(id: u32) -> impl Future<Output = Result<String, String>> + Send + 'static {
    async move {
        Yield(false).await;
        match id {
            0 => Err("no profile 0".into()),
            13 => panic!("expected: profile 13 is cursed"),
            _ => Ok(format!("profile {id}")),
        }
    }
}

#[test]
fn a_fn_returning_impl_future_is_timed_and_classified_by_its_future() {
    let handler = path("load_profile");
    let pause = Duration::from_millis(60);
    assert_eq!(run_with_pause(load_profile(7), pause), Ok("profile 7".into()));
    assert!(run_with_pause(load_profile(0), pause).is_err());
    let (calls, count, sum, in_flight) = counts(&handler);
    assert_eq!(
        calls,
        [1.0, 1.0, 0.0, 0.0],
        "one ok and one error: the futures' outputs, not the futures (counted ok when made)"
    );
    assert_eq!((count, in_flight), (2.0, 0.0));
    assert!(
        sum >= 2.0 * pause.as_secs_f64(),
        "each call lasted its future's life (over {pause:?}), not {sum} s in all"
    );

    // Made but never polled: no call. Polled, then dropped: cancelled,
    // and in flight meanwhile.
    drop(load_profile(1));
    let mut pending = Box::pin(load_profile(2));
    assert!(poll_once(pending.as_mut()).is_none());
    assert_eq!(counts(&handler).3, 1.0, "in flight while its future is pending");
    drop(pending);
    // A panic in the future's body.
    let panicked = std::panic::catch_unwind(|| run_with_pause(load_profile(13), Duration::ZERO));
    assert!(panicked.is_err());
    let (calls, count, _, in_flight) = counts(&handler);
    assert_eq!(calls, [1.0, 1.0, 1.0, 1.0], "a cancellation and a panic, each once");
    assert_eq!((count, in_flight), (4.0, 0.0));
}

/// The futures crate's alias, as `futures::future::BoxFuture`.
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

trait Repository {
    fn fetch(&self, key: &str) -> BoxFuture<'_, Result<u64, String>>;
}

struct Ledger;

impl Repository for Ledger {
    #[instrument_handler(name = "ledger::fetch")]
    fn fetch(&self, key: &str) -> BoxFuture<'_, Result<u64, String>> {
        let key = key.to_owned();
        Box::pin(async move {
            Yield(false).await;
            key.parse().map_err(|_| format!("not a number: {key}"))
        })
    }
}

#[test]
fn a_fn_returning_a_box_future_is_timed_and_classified_by_its_future() {
    let pause = Duration::from_millis(60);
    assert_eq!(run_with_pause(Ledger.fetch("42"), pause), Ok(42));
    assert!(run_with_pause(Ledger.fetch("x"), pause).is_err());
    let (calls, count, sum, in_flight) = counts("ledger::fetch");
    assert_eq!(calls, [1.0, 1.0, 0.0, 0.0], "one ok and one error, from the futures' outputs");
    assert_eq!((count, in_flight), (2.0, 0.0));
    assert!(sum >= 2.0 * pause.as_secs_f64(), "each call lasted its future's life, not {sum} s in all");
}

#[instrument_handler(route = "/fr/users/{id}", method = "GET")]
fn get_user(id: u32) -> impl Future<Output = http::StatusCode> {
    async move {
        Yield(false).await;
        if id == 0 { http::StatusCode::NOT_FOUND } else { http::StatusCode::OK }
    }
}

#[test]
fn an_http_handler_returning_impl_future_counts_its_status() {
    assert_eq!(run_with_pause(get_user(0), Duration::ZERO), http::StatusCode::NOT_FOUND);
    assert_eq!(run_with_pause(get_user(5), Duration::ZERO), http::StatusCode::OK);
    let count = |status: &str| {
        let labels = [("handler", "/fr/users/{id}"), ("method", "GET"), ("status", status)];
        sample_value("http_requests_total", &labels).unwrap()
    };
    assert_eq!((count("200"), count("404")), (1.0, 1.0), "the status the future answered");
}
