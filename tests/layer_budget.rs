//! the layer when the instrumented handlers fill the families'
//! budget. Handlers are kept by name; routes (`/…`) sort before the
//! layer's `<unmatched>` (`'/' < '<'`), so the layer's own entry is the
//! one refused when the routes alone fit the budget exactly.
//!
//! `SMALL` fits 3 handlers per family (3 × 220 counter series); the app
//! has three instrumented routes and the layer: 4 handlers.

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode};
use promshard::layer::UNMATCHED;
use promshard::testing::sample_value;
use promshard::{HandlerFamilies, instrument_handler};
use tower::ServiceExt;

const SMALL: HandlerFamilies = HandlerFamilies::http().max_series(3 * 220);

#[instrument_handler(route = "/pb/a", method = "GET")]
async fn a() -> &'static str {
    "a"
}

#[instrument_handler(route = "/pb/b", method = "GET")]
async fn b() -> &'static str {
    "b"
}

#[instrument_handler(route = "/pb/c", method = "GET")]
async fn c() -> &'static str {
    "c"
}

fn sum_of(name: &str) -> f64 {
    let text = String::from_utf8(promshard::encode(promshard::Format::Prometheus)).unwrap();
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

async fn send(app: &Router, uri: &str) -> StatusCode {
    let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
    app.clone().oneshot(request).await.unwrap().status()
}

/// Once broken: at 8a2e4ef, with as many instrumented routes as the budget
/// fits, the layer's `<unmatched>` entry was the one refused (it sorts
/// last), the layer's families were never set up, and the layer silently
/// recorded nothing: uninstrumented routes and 404s vanished.
///
/// At f899d2f the layer's entry is kept first, and `/pb/c` is the one
/// refused; a request to it is then claimed with its index in its private
/// families (0), which the layer reads as its own index 0: `<unmatched>`
/// (see `tests/layer_refused.rs`).
#[test]
fn every_request_is_counted_when_instrumented_routes_fill_the_budget() {
    let app: Router = Router::new()
        .route("/pb/a", get(a))
        .route("/pb/b", get(b))
        .route("/pb/c", get(c))
        .route("/pb/plain", get(|| async { "plain" }))
        .layer(promshard::http_layer!(SMALL));
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        assert_eq!(send(&app, "/pb/a").await, StatusCode::OK);
        assert_eq!(send(&app, "/pb/c").await, StatusCode::OK);
        assert_eq!(send(&app, "/pb/plain").await, StatusCode::OK);
        assert_eq!(send(&app, "/pb/nowhere").await, StatusCode::NOT_FOUND);
    });
    println!("check_registry: {:?}", promshard::check_registry());
    let a = [("handler", "/pb/a"), ("method", "GET"), ("status", "200")];
    assert_eq!(sample_value("http_requests_total", &a), Some(1.0));
    // Four requests went through the layer: each must be counted
    // somewhere (a route, `other` or `<unmatched>`).
    assert_eq!(
        sum_of("http_requests_total"),
        4.0,
        "requests counted in total; unmatched 404: {:?}",
        sample_value("http_requests_total", &[("handler", UNMATCHED), ("method", "GET"), ("status", "404")])
    );
    // And each under a label that is its own: the route, or `other` past
    // the budget; `<unmatched>` only for the 404.
    let unmatched_200 = [("handler", UNMATCHED), ("method", "GET"), ("status", "200")];
    assert_eq!(sample_value("http_requests_total", &unmatched_200), None, "a routed 200 is never `<unmatched>`");
    let b = [("handler", "/pb/b"), ("method", "GET"), ("status", "200")];
    assert_eq!(sample_value("http_requests_total", &b), Some(0.0), "/pb/b, kept and declared, got no request");
}
