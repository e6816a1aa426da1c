//! `http_layer!(FAMILIES)`: the layer's families set up by the user
//! (budget, buckets, status classes), followed by handlers that name no
//! families of their own, and a handler that disagrees reported by name.

mod harness;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use promshard::testing::sample_value;
use promshard::{HandlerFamilies, RegistryError, instrument_handler};
use tower::ServiceExt;

/// Room for 150 route templates, classes instead of codes, two buckets.
const API: HandlerFamilies = HandlerFamilies::http().max_series(200_000).status_classes().buckets(&[0.1, 1.0]);

/// Follows the layer's families: it names none.
#[instrument_handler(route = "/f/orders/{id}", method = "GET")]
async fn order() -> &'static str {
    "order"
}

/// Families of its own, without a prefix: they cannot be the layer's too.
const OTHER_SETTINGS: HandlerFamilies = HandlerFamilies::http().max_series(20_000);

#[instrument_handler(route = "/f/disagrees", method = "GET", families = OTHER_SETTINGS)]
fn disagrees() {}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
}

#[test]
fn the_layer_and_default_handlers_follow_http_layer_families() {
    let mut app: Router = Router::new().route("/f/orders/{id}", get(order));
    for i in 0..150 {
        app = app.route(&format!("/f/route{i}"), get(|| async { "ok" }));
    }
    let app = app.layer(promshard::http_layer!(API));
    runtime().block_on(async {
        for uri in
            ["/f/orders/1", "/f/orders/2"].into_iter().map(String::from).chain((0..150).map(|i| format!("/f/route{i}")))
        {
            let response = app.clone().oneshot(http::Request::get(uri.as_str()).body(Body::empty()).unwrap()).await;
            assert_eq!(response.unwrap().status(), 200, "{uri}");
        }
    });
    let count = |handler: &str, status: &str| {
        sample_value("http_requests_total", &[("handler", handler), ("method", "GET"), ("status", status)])
    };
    assert_eq!(count("/f/orders/{id}", "2xx"), Some(2.0), "the attribute's handler counts under the layer's classes");
    assert_eq!(count("/f/orders/{id}", "200"), None);
    for i in 0..150 {
        assert_eq!(count(&format!("/f/route{i}"), "2xx"), Some(1.0), "route {i} fits the raised budget");
    }
    assert_eq!(count("other", "2xx"), None, "nothing overflowed");
    let bucket = |le: &str| {
        let labels = [("handler", "/f/orders/{id}"), ("method", "GET"), ("le", le)];
        sample_value("http_request_duration_seconds_bucket", &labels)
    };
    assert_eq!((bucket("0.1"), bucket("1.0"), bucket("+Inf")), (Some(2.0), Some(2.0), Some(2.0)));
    assert_eq!(bucket("0.005"), None, "the layer's buckets, not the defaults");

    let problems = promshard::check_registry().unwrap_err();
    let named = problems.iter().any(|p| {
        matches!(p, RegistryError::HandlerFamily { family, message }
            if family == "http_requests_total" && message.contains("`/f/disagrees`"))
    });
    assert!(named, "the disagreeing handler is reported by name: {problems:?}");
    disagrees();
    assert_eq!(count("/f/disagrees", "2xx"), Some(1.0), "and still counted, under the group's settings");
}
