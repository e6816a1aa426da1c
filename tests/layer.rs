//! The tower layer on an axum app, called in-process: route templates
//! from flat and nested routers, requests no route matched, a request
//! counted once when its handler is instrumented too, panics with and
//! without a catch-panic layer, requests dropped before their response
//! (a client gone, a timeout), and scanners' paths.
//!
//! Every test uses routes of its own, so exact counts hold while tests
//! run in parallel; the tests that count `<unmatched>` requests take
//! turns.

mod harness;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Waker};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::routing::{get, post};
use http::{Request, StatusCode};
use promshard::layer::UNMATCHED;
use promshard::testing::sample_value;
use promshard::{HandlerFamilies, instrument_handler};
use tower::ServiceExt;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;

/// Held by the tests that count `<unmatched>` requests.
static UNMATCHED_COUNTERS: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    UNMATCHED_COUNTERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
}

/// `http_requests_total`; a series that never counted is not exposed.
fn count(handler: &str, method: &str, status: &str) -> f64 {
    let labels = [("handler", handler), ("method", method), ("status", status)];
    sample_value("http_requests_total", &labels).unwrap_or(0.0)
}

fn latency_count(handler: &str, method: &str) -> f64 {
    let labels = [("handler", handler), ("method", method)];
    sample_value("http_request_duration_seconds_count", &labels).unwrap_or(0.0)
}

fn in_flight(handler: &str) -> Option<f64> {
    sample_value("http_requests_in_flight", &[("handler", handler)])
}

fn request(method: &str, uri: &str) -> Request<Body> {
    Request::builder().method(method).uri(uri).body(Body::empty()).unwrap()
}

async fn send(app: &Router, method: &str, uri: &str) -> StatusCode {
    app.clone().oneshot(request(method, uri)).await.unwrap().status()
}

// ---------------------------------------------------------------------
// Route templates and unmatched requests
// ---------------------------------------------------------------------

async fn user(Path(id): Path<u64>) -> Result<String, StatusCode> {
    if id == 0 { Err(StatusCode::NOT_FOUND) } else { Ok(format!("user {id}")) }
}

#[test]
fn route_templates_from_flat_and_nested_routers_and_unmatched_requests() {
    let _turn = serial();
    let deeper = Router::new().route("/things/{id}", get(user));
    let api = Router::new().route("/items/{id}", get(user)).nest("/v1", deeper);
    let app: Router =
        Router::new().route("/l1/users/{id}", get(user)).nest("/l1/api", api).layer(promshard::http_layer!());
    let before = [count(UNMATCHED, "GET", "404"), count(UNMATCHED, "POST", "405"), count(UNMATCHED, "other", "404")];
    runtime().block_on(async {
        for id in [1, 2, 3] {
            assert_eq!(send(&app, "GET", &format!("/l1/users/{id}")).await, StatusCode::OK);
        }
        assert_eq!(send(&app, "GET", "/l1/users/0").await, StatusCode::NOT_FOUND, "the handler's own 404");
        assert_eq!(send(&app, "HEAD", "/l1/users/4").await, StatusCode::OK);
        assert_eq!(send(&app, "GET", "/l1/api/items/5").await, StatusCode::OK);
        assert_eq!(send(&app, "GET", "/l1/api/v1/things/6").await, StatusCode::OK);
        assert_eq!(send(&app, "GET", "/l1/nowhere").await, StatusCode::NOT_FOUND);
        assert_eq!(send(&app, "GET", "/l1/users/7/extra").await, StatusCode::NOT_FOUND);
        assert_eq!(send(&app, "POST", "/l1/users/8").await, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(send(&app, "BREW", "/l1/coffee").await, StatusCode::NOT_FOUND);
    });
    assert_eq!(count("/l1/users/{id}", "GET", "200"), 3.0);
    assert_eq!(count("/l1/users/{id}", "GET", "404"), 1.0, "a handler's 404 keeps its route");
    assert_eq!(count("/l1/users/{id}", "HEAD", "200"), 1.0);
    assert_eq!(latency_count("/l1/users/{id}", "GET"), 4.0);
    assert_eq!(count("/l1/api/items/{id}", "GET", "200"), 1.0, "a nested router's full template");
    assert_eq!(count("/l1/api/v1/things/{id}", "GET", "200"), 1.0, "two levels of nesting");
    let after = [count(UNMATCHED, "GET", "404"), count(UNMATCHED, "POST", "405"), count(UNMATCHED, "other", "404")];
    assert_eq!([after[0] - before[0], after[1] - before[1], after[2] - before[2]], [2.0, 1.0, 1.0]);
    let post = [("handler", "/l1/users/{id}"), ("method", "POST"), ("status", "405")];
    assert_eq!(sample_value("http_requests_total", &post), None, "a 405 names no route");
    assert_eq!(in_flight("/l1/users/{id}"), Some(0.0));
    assert_eq!(in_flight(UNMATCHED), Some(0.0));
}

#[test]
fn a_fallback_is_unmatched() {
    let _turn = serial();
    async fn fallback() -> (StatusCode, &'static str) {
        (StatusCode::NOT_FOUND, "no such page")
    }
    let app: Router =
        Router::new().route("/l6/home", get(|| async { "home" })).fallback(fallback).layer(promshard::http_layer!());
    let before = count(UNMATCHED, "GET", "404");
    runtime().block_on(async {
        assert_eq!(send(&app, "GET", "/l6/elsewhere").await, StatusCode::NOT_FOUND);
        assert_eq!(send(&app, "GET", "/l6/home").await, StatusCode::OK);
    });
    assert_eq!(count(UNMATCHED, "GET", "404") - before, 1.0);
    assert_eq!(count("/l6/home", "GET", "200"), 1.0);
}

// ---------------------------------------------------------------------
// The layer and the attribute together
// ---------------------------------------------------------------------

#[instrument_handler(route = "/l2/orders/{id}", method = "GET")]
async fn order(Path(id): Path<u64>) -> Result<String, StatusCode> {
    tokio::task::yield_now().await;
    if id == 0 { Err(StatusCode::NOT_FOUND) } else { Ok(format!("order {id}")) }
}

/// Declared under another route than the router's: the router's wins.
#[instrument_handler(route = "/l2/deep-by-attribute/{id}", method = "GET")]
async fn deep(Path(id): Path<u64>) -> String {
    format!("deep {id}")
}

const ADMIN: HandlerFamilies = HandlerFamilies::http().prefix("l2admin");

#[instrument_handler(route = "/l2/admin/reindex", method = "POST", families = ADMIN)]
async fn reindex() -> StatusCode {
    StatusCode::ACCEPTED
}

#[instrument_handler(name = "l2_price")]
fn price(id: u64) -> u64 {
    id * 100
}

#[instrument_handler(route = "/l2/sync/{id}", method = "GET")]
fn sync_total(id: u64) -> String {
    format!("{}", price(id))
}

async fn calls_sync(Path(id): Path<u64>) -> String {
    sync_total(id)
}

#[test]
fn an_instrumented_handler_behind_the_layer_counts_a_request_once() {
    // Its last request is in flight under `<unmatched>` until named.
    let _turn = serial();
    let nested = Router::new().route("/deep/{id}", get(deep));
    let app: Router = Router::new()
        .route("/l2/orders/{id}", get(order))
        .route("/l2/admin/reindex", post(reindex))
        .route("/l2/sync-route/{id}", get(calls_sync))
        .nest("/l2/nested", nested)
        .layer(promshard::http_layer!());
    runtime().block_on(async {
        for id in [1, 2, 3, 4, 5, 0, 0] {
            send(&app, "GET", &format!("/l2/orders/{id}")).await;
        }
        assert_eq!(send(&app, "GET", "/l2/nested/deep/9").await, StatusCode::OK);
        assert_eq!(send(&app, "POST", "/l2/admin/reindex").await, StatusCode::ACCEPTED);
        assert_eq!(send(&app, "GET", "/l2/sync-route/3").await, StatusCode::OK);
    });
    assert_eq!(count("/l2/orders/{id}", "GET", "200"), 5.0, "once, not twice");
    assert_eq!(count("/l2/orders/{id}", "GET", "404"), 2.0);
    assert_eq!(latency_count("/l2/orders/{id}", "GET"), 7.0);
    assert_eq!(in_flight("/l2/orders/{id}"), Some(0.0));

    assert_eq!(count("/l2/nested/deep/{id}", "GET", "200"), 1.0, "the router's template names the request");
    assert_eq!(count("/l2/deep-by-attribute/{id}", "GET", "200"), 0.0, "and only it");
    assert_eq!(in_flight("/l2/nested/deep/{id}"), Some(0.0));

    // A handler with families of its own counts there; the layer counts
    // the request in the default families.
    let admin = [("handler", "/l2/admin/reindex"), ("method", "POST"), ("status", "202")];
    assert_eq!(sample_value("l2admin_http_requests_total", &admin), Some(1.0));
    assert_eq!(count("/l2/admin/reindex", "POST", "202"), 1.0);

    // A synchronous handler called by the routed one counts nothing of
    // its own; a plain function it calls is a call of its own.
    assert_eq!(count("/l2/sync-route/{id}", "GET", "200"), 1.0);
    assert_eq!(count("/l2/sync/{id}", "GET", "200"), 0.0);
    let calls = [("handler", "l2_price"), ("result", "ok")];
    assert_eq!(sample_value("function_calls_total", &calls), Some(1.0));

    // Outside a layer's request the attribute counts for itself.
    assert_eq!(sync_total(1), "100");
    assert_eq!(count("/l2/sync/{id}", "GET", "200"), 1.0);

    // Where no router names the route (a plain tower service), the first
    // instrumented handler inside the request does.
    let plain = tower::service_fn(|_: Request<Body>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(Body::from(order(Path(7)).await.unwrap())))
    });
    let service = tower::ServiceBuilder::new().layer(promshard::http_layer!()).service(plain);
    runtime().block_on(service.oneshot(request("GET", "/anything/at/all"))).unwrap();
    assert_eq!(count("/l2/orders/{id}", "GET", "200"), 6.0, "named by the attribute, counted once");
    assert_eq!(in_flight("/l2/orders/{id}"), Some(0.0));
}

// ---------------------------------------------------------------------
// Panics
// ---------------------------------------------------------------------

async fn boom() -> &'static str {
    panic!("expected: a handler bug")
}

#[instrument_handler(route = "/l3/instrumented-boom", method = "GET")]
async fn instrumented_boom() -> &'static str {
    panic!("expected: an instrumented handler bug")
}

#[test]
fn a_panicking_handler_counts_as_500_with_or_without_catch_panic() {
    harness::quiet_expected_panics();
    // The layer outside catch-panic sees its 500; inside, the panic
    // unwinds through it; with none, the task dies with it.
    let outside: Router =
        Router::new().route("/l3/outside", get(boom)).layer(CatchPanicLayer::new()).layer(promshard::http_layer!());
    let inside: Router =
        Router::new().route("/l3/inside", get(boom)).layer(promshard::http_layer!()).layer(CatchPanicLayer::new());
    let bare: Router = Router::new()
        .route("/l3/bare", get(boom))
        .route("/l3/instrumented-boom", get(instrumented_boom))
        .layer(promshard::http_layer!());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    runtime.block_on(async {
        assert_eq!(send(&outside, "GET", "/l3/outside").await, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(send(&inside, "GET", "/l3/inside").await, StatusCode::INTERNAL_SERVER_ERROR);
        for uri in ["/l3/bare", "/l3/instrumented-boom"] {
            let app = bare.clone();
            let joined = tokio::spawn(async move { send(&app, "GET", uri).await }).await;
            assert!(joined.unwrap_err().is_panic(), "the panic is resumed, never swallowed");
        }
    });
    for handler in ["/l3/outside", "/l3/inside", "/l3/bare", "/l3/instrumented-boom"] {
        assert_eq!(count(handler, "GET", "500"), 1.0, "{handler}");
        assert_eq!(latency_count(handler, "GET"), 1.0, "{handler}");
        assert_eq!(in_flight(handler), Some(0.0), "{handler}");
    }
}

// ---------------------------------------------------------------------
// Requests dropped before their response
// ---------------------------------------------------------------------

/// Pending until dropped.
async fn hang() -> &'static str {
    std::future::pending::<()>().await;
    "never"
}

#[instrument_handler(route = "/l4/instrumented-hang", method = "GET")]
async fn instrumented_hang() -> &'static str {
    std::future::pending::<()>().await;
    "never"
}

fn poll_once<F: Future>(future: Pin<&mut F>) -> bool {
    future.poll(&mut Context::from_waker(Waker::noop())).is_pending()
}

#[test]
fn a_request_dropped_before_its_response_counts_as_499() {
    let app: Router = Router::new()
        .route("/l4/hang", get(hang))
        .route("/l4/instrumented-hang", get(instrumented_hang))
        .layer(promshard::http_layer!());
    for handler in ["/l4/hang", "/l4/instrumented-hang"] {
        let mut future = Box::pin(app.clone().oneshot(request("GET", handler)));
        assert!(poll_once(future.as_mut()));
        assert_eq!(in_flight(handler), Some(1.0), "{handler}");
        drop(future);
        assert_eq!(in_flight(handler), Some(0.0), "{handler}");
        assert_eq!(count(handler, "GET", "499"), 1.0, "{handler}");
        assert_eq!(latency_count(handler, "GET"), 1.0, "{handler}");
    }

    // A timeout layer outside drops the request's future.
    let timed: Router = Router::new()
        .route("/l4/timed", get(hang))
        .layer(promshard::http_layer!())
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, Duration::from_millis(20)));
    let status = runtime().block_on(send(&timed, "GET", "/l4/timed"));
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(count("/l4/timed", "GET", "499"), 1.0);
    assert_eq!(in_flight("/l4/timed"), Some(0.0));
}

// ---------------------------------------------------------------------
// Scanners
// ---------------------------------------------------------------------

/// The samples of the exposition a scanner could add to, without their
/// values: those of this test's routes, `<unmatched>`, `other`, and any
/// `handler` value that is none of the tests' routes.
fn series() -> Vec<String> {
    let text = String::from_utf8(promshard::encode(promshard::Format::Prometheus)).unwrap();
    let other_tests = |l: &str| l.contains("handler=\"/l") && !l.contains("handler=\"/l5/");
    let ours = |l: &&str| l.starts_with("http_") && !other_tests(l);
    let mut series: Vec<String> =
        text.lines().filter(ours).map(|l| l.rsplit_once(' ').map_or(l, |(s, _)| s).to_owned()).collect();
    series.sort();
    series
}

#[test]
fn a_thousand_scanner_paths_create_no_series() {
    let _turn = serial();
    let app: Router = Router::new()
        .route("/l5/users/{id}", get(user))
        .route("/l5/login", post(|| async { "ok" }))
        .layer(promshard::http_layer!());
    let mut seed = 0x2545_f491_4f6c_dd1d_u64 ^ std::process::id() as u64;
    println!("seed {seed:#x}");
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let methods = ["GET", "POST", "DELETE", "PROPFIND", "X-SCAN"];
    let runtime = runtime();
    let mut statuses = std::collections::BTreeSet::new();
    runtime.block_on(async {
        // Every kind of answer once, so that each series exists.
        for method in methods {
            for uri in ["/l5/users/1", "/l5/login", "/.env", "/l5/users/1/x"] {
                statuses.insert((method, send(&app, method, uri).await));
            }
        }
    });
    let before = series();
    runtime.block_on(async {
        for _ in 0..1000 {
            let method = methods[next() as usize % methods.len()];
            let uri = match next() % 4 {
                0 => format!("/l5/users/{}", next()),
                1 => format!("/wp-admin/{:x}.php", next()),
                2 => format!("/l5/users/{}/{:x}", next() % 100, next()),
                _ => format!("/{:x}/{:x}?q={:x}", next(), next(), next()),
            };
            let status = send(&app, method, &uri).await;
            assert!(statuses.contains(&(method, status)) || status == StatusCode::OK, "{method} {uri}: {status}");
        }
    });
    let after = series();
    let added: Vec<&String> = after.iter().filter(|s| !before.contains(s)).collect();
    assert!(added.is_empty(), "scanner paths added series: {added:?}");
}

// ---------------------------------------------------------------------
// A service that fails
// ---------------------------------------------------------------------

/// A plain tower service (no router, so no route) whose call fails.
#[test]
fn a_service_error_counts_as_500() {
    let _turn = serial();
    let failing = tower::service_fn(|_: Request<Body>| async { Err::<http::Response<Body>, _>("unavailable") });
    let service = tower::ServiceBuilder::new().layer(promshard::http_layer!()).service(failing);
    let before = count(UNMATCHED, "PUT", "500");
    let error = runtime().block_on(service.oneshot(request("PUT", "/l7/anything"))).unwrap_err();
    assert_eq!(error, "unavailable");
    assert_eq!(count(UNMATCHED, "PUT", "500") - before, 1.0);
}
