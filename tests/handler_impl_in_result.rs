//! `#[instrument_handler]` on functions returning `Result<impl Trait, E>`
//! and using `?`, the shape of most axum handlers (`Result<impl
//! IntoResponse, AppError>`) where the error type knows nothing of
//! promshard: they compile, and count `Ok` as ok (200) and `Err` as an
//! error (500). And a `fn` returning `impl Future` with an early
//! `return` of the same future type as its tail, which did not compile
//! either (the `return` left the function with the bare future).
//!
//! Every test uses handlers of its own, so exact counts hold while tests
//! run in parallel.

use std::fmt::Display;
use std::future::Future;
use std::num::ParseIntError;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use axum::response::{IntoResponse, Response};
use promshard::instrument_handler;
use promshard::testing::sample_value;

fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
    }
}

fn function_calls(function: &str, result: &str) -> f64 {
    let handler = format!("{}::{function}", module_path!());
    sample_value("function_calls_total", &[("handler", &handler), ("result", result)]).unwrap()
}

#[instrument_handler]
fn parse_display(text: &str) -> Result<impl Display, ParseIntError> {
    let n: u32 = text.parse()?;
    Ok(n + 1)
}

#[instrument_handler]
async fn parse_display_async(text: String) -> Result<impl Display, ParseIntError> {
    let n: u32 = text.parse()?;
    Ok(n + 1)
}

/// An application's error, as axum's examples write it.
struct AppError(String);

impl From<ParseIntError> for AppError {
    fn from(e: ParseIntError) -> AppError {
        AppError(e.to_string())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        (http::StatusCode::INTERNAL_SERVER_ERROR, self.0).into_response()
    }
}

#[instrument_handler(route = "/impl-in-result/{n}", method = "GET")]
async fn get_number(n: String) -> Result<impl IntoResponse, AppError> {
    let n: u32 = n.parse()?;
    Ok(format!("number {n}"))
}

#[test]
fn impl_trait_in_a_result_with_question_mark_counts_ok_and_error() {
    assert_eq!(parse_display("41").unwrap().to_string(), "42");
    assert!(parse_display("x").is_err());
    assert_eq!([function_calls("parse_display", "ok"), function_calls("parse_display", "error")], [1.0, 1.0]);

    assert_eq!(block_on(parse_display_async("1".into())).unwrap().to_string(), "2");
    assert!(block_on(parse_display_async("y".into())).is_err());
    let async_calls = [function_calls("parse_display_async", "ok"), function_calls("parse_display_async", "error")];
    assert_eq!(async_calls, [1.0, 1.0]);

    assert_eq!(block_on(get_number("7".into())).into_response().status(), 200);
    assert_eq!(block_on(get_number("seven".into())).into_response().status(), 500);
    let http = |status: &str| {
        let labels = [("handler", "/impl-in-result/{n}"), ("method", "GET"), ("status", status)];
        sample_value("http_requests_total", &labels).unwrap()
    };
    assert_eq!([http("200"), http("500")], [1.0, 1.0]);
}

/// An early `return` of the same future type as the tail.
#[instrument_handler]
fn lookup_ready(id: u32) -> impl Future<Output = Result<u32, String>> {
    if id == 0 {
        return std::future::ready(Err("no id 0".to_owned()));
    }
    std::future::ready(Ok(id * 2))
}

#[test]
fn an_impl_future_returned_early_is_counted_too() {
    assert_eq!(block_on(lookup_ready(4)), Ok(8));
    assert!(block_on(lookup_ready(0)).is_err());
    assert_eq!([function_calls("lookup_ready", "ok"), function_calls("lookup_ready", "error")], [1.0, 1.0]);
}
