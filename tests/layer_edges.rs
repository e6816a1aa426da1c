//! The tower layer on unusual service shapes: a `call` that
//! panics synchronously, a panic in `IntoResponse`, a response future
//! dropped on another thread, `nest_service`, merged routers with a
//! fallback service, and route templates that need escaping (quotes,
//! backslashes, a newline, unicode, over 256 bytes) checked by promtool
//! and by the in-process parser.

mod harness;
mod support;

use std::convert::Infallible;
use std::ffi::OsStr;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{Request, StatusCode};
use promshard::instrument_handler;
use promshard::layer::UNMATCHED;
use promshard::testing::sample_value;
use tower::ServiceExt;
use tower_http::catch_panic::CatchPanicLayer;

static TURN: Mutex<()> = Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
}

fn count(handler: &str, method: &str, status: &str) -> f64 {
    let labels = [("handler", handler), ("method", method), ("status", status)];
    sample_value("http_requests_total", &labels).unwrap_or(0.0)
}

fn in_flight(handler: &str) -> Option<f64> {
    sample_value("http_requests_in_flight", &[("handler", handler)])
}

fn text() -> String {
    String::from_utf8(promshard::encode(promshard::Format::Prometheus)).unwrap()
}

/// The sum of `http_requests_total` over every series.
fn total() -> f64 {
    harness::parse_samples(&text()).iter().filter(|s| s.name == "http_requests_total").map(|s| s.value).sum()
}

fn request(uri: &str) -> Request<Body> {
    Request::builder().uri(uri).body(Body::empty()).unwrap()
}

// ---------------------------------------------------------------------
// A service whose `call` panics before returning a future
// ---------------------------------------------------------------------

#[derive(Clone)]
struct PanicsInCall;

impl tower::Service<Request<Body>> for PanicsInCall {
    type Response = Response;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<Body>) -> Self::Future {
        panic!("expected: a service that panics in call")
    }
}

/// a synchronous panic in the inner `call` counts as 500 once,
/// under its route, and leaves nothing in flight, behind catch-panic.
#[test]
fn a_synchronous_panic_in_call_counts_as_500() {
    harness::quiet_expected_panics();
    let _turn = turn();
    let app: Router = Router::new()
        .route_service("/pe/sync-panic", PanicsInCall)
        .layer(promshard::http_layer!())
        .layer(CatchPanicLayer::new());
    let status = runtime().block_on(app.oneshot(request("/pe/sync-panic"))).unwrap().status();
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(count("/pe/sync-panic", "GET", "500"), 1.0);
    assert_eq!(in_flight("/pe/sync-panic"), Some(0.0));
}

// ---------------------------------------------------------------------
// A panic in `IntoResponse`
// ---------------------------------------------------------------------

struct Explodes;

impl IntoResponse for Explodes {
    fn into_response(self) -> Response {
        panic!("expected: IntoResponse panics")
    }
}

async fn explodes() -> Explodes {
    Explodes
}

#[instrument_handler(route = "/pe/instrumented-explodes", method = "GET")]
async fn instrumented_explodes() -> Explodes {
    Explodes
}

/// a panic in `into_response` (after the handler returned) counts
/// as 500 once, with catch-panic outside the layer, instrumented or not.
#[test]
fn a_panic_in_into_response_counts_as_500_once() {
    harness::quiet_expected_panics();
    let _turn = turn();
    let app: Router = Router::new()
        .route("/pe/explodes", get(explodes))
        .route("/pe/instrumented-explodes", get(instrumented_explodes))
        .layer(promshard::http_layer!())
        .layer(CatchPanicLayer::new());
    let before = total();
    runtime().block_on(async {
        for uri in ["/pe/explodes", "/pe/instrumented-explodes"] {
            let status = app.clone().oneshot(request(uri)).await.unwrap().status();
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{uri}");
        }
    });
    for handler in ["/pe/explodes", "/pe/instrumented-explodes"] {
        assert_eq!(count(handler, "GET", "500"), 1.0, "{handler}");
        assert_eq!(in_flight(handler), Some(0.0), "{handler}");
    }
    assert_eq!(total() - before, 2.0);
}

// ---------------------------------------------------------------------
// A response future dropped on another thread
// ---------------------------------------------------------------------

async fn pending_forever() -> &'static str {
    std::future::pending::<()>().await;
    "never"
}

#[instrument_handler(route = "/pe/instrumented-pending", method = "GET")]
async fn instrumented_pending() -> &'static str {
    std::future::pending::<()>().await;
    "never"
}

/// polled on this thread, dropped on another: 499 once, nothing
/// left in flight (the claim made on this thread's scope is carried by
/// the future, not the thread).
#[test]
fn a_request_dropped_on_another_thread_counts_as_499() {
    let _turn = turn();
    let app: Router = Router::new()
        .route("/pe/pending", get(pending_forever))
        .route("/pe/instrumented-pending", get(instrumented_pending))
        .layer(promshard::http_layer!());
    for handler in ["/pe/pending", "/pe/instrumented-pending"] {
        let mut future = Box::pin(app.clone().oneshot(request(handler)));
        assert!(future.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_pending());
        assert_eq!(in_flight(handler), Some(1.0), "{handler}");
        std::thread::spawn(move || drop(future)).join().unwrap();
        assert_eq!(in_flight(handler), Some(0.0), "{handler}");
        assert_eq!(count(handler, "GET", "499"), 1.0, "{handler}");
    }
}

/// A pending request dropped while an unrelated panic unwinds (a
/// `select!` whose other branch panicked, a task holding both): the
/// request was cancelled, not failed: 499, never 500, whether or not its
/// handler is instrumented too.
#[test]
fn a_request_dropped_during_an_unrelated_panic_counts_as_499() {
    #[instrument_handler(route = "/pe/unwound", method = "GET")]
    async fn unwound() -> &'static str {
        std::future::pending::<()>().await;
        "never"
    }
    let _turn = turn();
    let app: Router = Router::new()
        .route("/pe/unwound-plain", get(pending_forever))
        .route("/pe/unwound", get(unwound))
        .layer(promshard::http_layer!());
    for handler in ["/pe/unwound-plain", "/pe/unwound"] {
        let mut future = Box::pin(app.clone().oneshot(request(handler)));
        assert!(future.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_pending());
        assert_eq!(in_flight(handler), Some(1.0), "{handler}");
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _held = future;
            panic!("expected: an unrelated panic while a request is pending");
        }));
        assert!(unwound.is_err());
        assert_eq!(in_flight(handler), Some(0.0), "{handler}");
        assert_eq!(count(handler, "GET", "499"), 1.0, "{handler}: cancelled");
        assert_eq!(count(handler, "GET", "500"), 0.0, "{handler}: not a failure of the request");
    }
}

/// a request future polled first on one thread, then completed on
/// another (claim on thread A, finish on thread B) is counted once under
/// the instrumented route.
#[test]
fn a_request_polled_on_two_threads_is_counted_once() {
    #[instrument_handler(route = "/pe/two-threads", method = "GET")]
    async fn two_threads() -> &'static str {
        let mut first = true;
        std::future::poll_fn(|cx| {
            if std::mem::take(&mut first) {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        "done"
    }
    let _turn = turn();
    let app: Router = Router::new().route("/pe/two-threads", get(two_threads)).layer(promshard::http_layer!());
    let mut future: Pin<Box<_>> = Box::pin(app.oneshot(request("/pe/two-threads")));
    assert!(future.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_pending());
    let status = std::thread::spawn(move || match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(response) => response.unwrap().status(),
        Poll::Pending => panic!("still pending"),
    })
    .join()
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count("/pe/two-threads", "GET", "200"), 1.0);
    assert_eq!(in_flight("/pe/two-threads"), Some(0.0));
}

// ---------------------------------------------------------------------
// nest_service, merge, fallback_service
// ---------------------------------------------------------------------

/// merged routers keep their templates, and a fallback service is
/// `<unmatched>`.
#[test]
fn merged_routers_keep_their_templates_and_a_fallback_service_is_unmatched() {
    let _turn = turn();
    let fallback =
        tower::service_fn(|_: Request<Body>| async { Ok::<_, Infallible>(StatusCode::GONE.into_response()) });
    let other: Router = Router::new().route("/pe/merged/{id}", get(|| async { "merged" }));
    let app: Router = Router::new()
        .route("/pe/own", get(|| async { "own" }))
        .merge(other)
        .fallback_service(fallback)
        .layer(promshard::http_layer!());
    let unmatched_before = count(UNMATCHED, "GET", "other");
    runtime().block_on(async {
        for i in 0..20 {
            let uri = format!("/pe/merged/{i}");
            assert_eq!(app.clone().oneshot(request(&uri)).await.unwrap().status(), StatusCode::OK);
            let uri = format!("/pe/gone-{i}");
            assert_eq!(app.clone().oneshot(request(&uri)).await.unwrap().status(), StatusCode::GONE);
        }
    });
    assert_eq!(count("/pe/merged/{id}", "GET", "200"), 20.0);
    assert_eq!(count(UNMATCHED, "GET", "other") - unmatched_before, 20.0, "the fallback service (410 is `other`)");
}

// ---------------------------------------------------------------------
// Route templates that need escaping
// ---------------------------------------------------------------------

#[instrument_handler(route = "/pe/say \"hi\"/back\\slash", method = "GET")]
fn quoted() -> &'static str {
    "quoted"
}

#[instrument_handler(route = "/pe/new\nline", method = "GET")]
fn newline() -> &'static str {
    "newline"
}

#[instrument_handler(route = "/pe/café/ünïcode/日本", method = "GET")]
fn unicode() -> &'static str {
    "unicode"
}

const LONG: &str = "/pe/long/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// templates with quotes, backslashes, a newline and unicode are
/// escaped so that promtool accepts the exposition and the values read
/// back unchanged; a 300-byte template through the layer is counted
/// (under `other`), never dropped.
#[test]
fn route_templates_that_need_escaping_pass_promtool() {
    let _turn = turn();
    assert!(LONG.len() > 256);
    let app: Router = Router::new()
        .route("/pe/quoted", get(|| async { quoted() }))
        .route("/pe/newline", get(|| async { newline() }))
        .route("/pe/unicode", get(|| async { unicode() }))
        .route(LONG, get(|| async { "long" }))
        .layer(promshard::http_layer!());
    let before = total();
    let other_before = count("other", "GET", "200");
    runtime().block_on(async {
        for uri in ["/pe/quoted", "/pe/newline", "/pe/unicode", LONG] {
            assert_eq!(app.clone().oneshot(request(uri)).await.unwrap().status(), StatusCode::OK, "{uri}");
        }
    });
    assert_eq!(total() - before, 4.0);
    // The router's templates name the requests; the attributes' routes
    // are in the exposition as their declared rows, at zero.
    for route in ["/pe/quoted", "/pe/newline", "/pe/unicode"] {
        assert_eq!(count(route, "GET", "200"), 1.0, "{route}");
    }
    for route in ["/pe/say \"hi\"/back\\slash", "/pe/new\nline", "/pe/café/ünïcode/日本"] {
        let labels = [("handler", route), ("method", "GET"), ("status", "200")];
        assert_eq!(sample_value("http_requests_total", &labels), Some(0.0), "{route:?}");
    }
    assert_eq!(count("other", "GET", "200") - other_before, 1.0, "the 300-byte template");
    let exposition = text();
    for format in ["prometheus", "openmetrics"] {
        let exposition = if format == "prometheus" {
            exposition.clone()
        } else {
            String::from_utf8(promshard::encode(promshard::Format::OpenMetrics)).unwrap()
        };
        match support::promtool() {
            None => support::skip_or_fail(support::PROMTOOL_MISSING),
            Some(promtool) => {
                let output =
                    support::run_with_stdin(&promtool, &[OsStr::new("check"), OsStr::new("metrics")], &exposition);
                let stderr = String::from_utf8_lossy(&output.stderr);
                // What promtool says of text it cannot read; a lint names
                // families (`promshard_collector_errors_total no help
                // text` is a lint of OpenMetrics read as text).
                assert!(
                    !stderr.contains("error while")
                        && !stderr.contains("parsing error")
                        && output.status.code() != Some(1),
                    "promtool ({format}): {stderr}\n{}",
                    String::from_utf8_lossy(&output.stdout)
                );
            }
        }
    }
}

// ---------------------------------------------------------------------
// A handler's own 405
// ---------------------------------------------------------------------
