//! `#[instrument_handler]` in multiprocess mode: forked workers call an
//! instrumented function (ok, error, panic, cancelled, and one call left in
//! flight) and a scrape of the directory sums them exactly; the in-flight
//! gauge (`livesum`) drops a worker that was killed mid-call.

mod harness;

use std::future::Future;
use std::panic::catch_unwind;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use harness::{TempDir, Worker, encode_dir_text, isolated, value_in};
use promshard::instrument_handler;

struct Yield(bool);

impl Future for Yield {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if std::mem::replace(&mut self.0, true) { Poll::Ready(()) } else { Poll::Pending }
    }
}

#[instrument_handler(name = "settle")]
fn settle(amount: i64) -> Result<i64, String> {
    match amount {
        0 => panic!("expected: zero"),
        a if a < 0 => Err("negative".into()),
        a => Ok(a),
    }
}

#[instrument_handler(name = "consume")]
async fn consume() -> u32 {
    Yield(false).await;
    1
}

fn poll_once<F: Future>(future: Pin<&mut F>) -> bool {
    future.poll(&mut Context::from_waker(Waker::noop())).is_pending()
}

fn handle(command: &str) -> String {
    match command {
        "ok" => drop(settle(1)),
        "error" => drop(settle(-1)),
        "panic" => assert!(catch_unwind(|| settle(0)).is_err()),
        "cancel" => {
            let mut future = Box::pin(consume());
            assert!(poll_once(future.as_mut()));
        }
        // Started and never finished: this worker dies with it in flight.
        "hold" => {
            let future = Box::leak(Box::new(Box::pin(consume())));
            assert!(poll_once(future.as_mut()));
        }
        other => panic!("unknown command {other:?}"),
    }
    "done".into()
}

fn counts(text: &str, handler: &str) -> [f64; 4] {
    ["ok", "error", "panic", "cancelled"].map(|result| {
        value_in(text, "function_calls_total", &[("handler", handler), ("result", result)]).unwrap_or(f64::NAN)
    })
}

fn workers_merge_exactly() {
    std::panic::set_hook(Box::new(|info| {
        if !info.payload().downcast_ref::<&str>().is_some_and(|m| m.starts_with("expected:")) {
            eprintln!("{info}");
        }
    }));
    let dir = TempDir::new("handler");
    promshard::multiprocess::init(dir.path()).unwrap();
    settle(5).unwrap();
    let wait = Duration::from_secs(20);
    let mut first = Worker::spawn(handle);
    let mut second = Worker::spawn(handle);
    for command in ["ok", "ok", "ok", "error", "panic"] {
        first.ask(command, wait);
    }
    for command in ["ok", "ok", "cancel", "hold"] {
        second.ask(command, wait);
    }

    let text = encode_dir_text(dir.path());
    assert_eq!(counts(&text, "settle"), [6.0, 1.0, 1.0, 0.0], "{text}");
    assert_eq!(counts(&text, "consume"), [0.0, 0.0, 0.0, 1.0], "{text}");
    let in_flight = |text: &str, handler| value_in(text, "function_calls_in_flight", &[("handler", handler)]);
    assert_eq!(in_flight(&text, "consume"), Some(1.0), "the held call, in a live worker");
    assert_eq!(in_flight(&text, "settle"), Some(0.0));
    let count = value_in(&text, "function_call_duration_seconds_count", &[("handler", "settle")]);
    assert_eq!(count, Some(8.0));

    // Killed first: it holds a copy of the first worker's command pipe.
    second.kill();
    first.exit(wait).expect("the first worker exits");
    let text = encode_dir_text(dir.path());
    assert_eq!(counts(&text, "settle"), [6.0, 1.0, 1.0, 0.0], "counts outlive their workers: {text}");
    assert_eq!(counts(&text, "consume"), [0.0, 0.0, 0.0, 1.0]);
    assert_eq!(in_flight(&text, "consume"), Some(0.0), "a dead worker's call is no longer in flight");
}

#[test]
fn forked_workers_merge_exactly() {
    isolated("forked_workers_merge_exactly", Duration::from_secs(120), workers_merge_exactly);
}
