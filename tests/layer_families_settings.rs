//! `http_layer!(FAMILIES)` with settings of its own (status
//! classes, buckets, methods, budget), beside instrumented handlers with
//! no `families` argument, one with other prefix-less families that
//! disagree, and one with a prefix. The layer's settings must win for
//! every prefix-less site, the disagreement must be reported, and every
//! request counted once.
//!
//! Beyond `tests/layer_families.rs` (added in 200bb49): a `methods(...)`
//! list on the layer (other methods are `other`), the disagreeing site
//! answering requests through the layer (its 404 read by the layer's
//! classes), a prefixed site counted both by the layer and in its own
//! families, and the declared zero rows spelled in classes.

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use http::{Request, StatusCode};
use promshard::testing::sample_value;
use promshard::{HandlerFamilies, instrument_handler};
use tower::ServiceExt;

const LAYER: HandlerFamilies =
    HandlerFamilies::http().status_classes().buckets(&[0.05, 0.5]).methods(&["GET", "POST"]).max_series(50_000);

/// Prefix-less, so it shares the layer's families, but set up otherwise.
const DISAGREES: HandlerFamilies = HandlerFamilies::http().status_codes(&[200, 404]).buckets(&[1.0]);

const ADMIN: HandlerFamilies = HandlerFamilies::http().prefix("pfadmin");

#[instrument_handler(route = "/pf/disagrees", method = "GET", families = DISAGREES)]
async fn disagrees() -> StatusCode {
    StatusCode::NOT_FOUND
}

#[instrument_handler(route = "/pf/default", method = "POST")]
async fn default_families() -> StatusCode {
    StatusCode::CREATED
}

#[instrument_handler(route = "/pf/admin", method = "PUT", families = ADMIN)]
async fn admin() -> StatusCode {
    StatusCode::NO_CONTENT
}

fn text() -> String {
    String::from_utf8(promshard::encode(promshard::Format::Prometheus)).unwrap()
}

/// one request each way, counted once, with the layer's labels.
#[test]
fn the_layers_settings_win_for_every_prefixless_site() {
    let app: Router = Router::new()
        .route("/pf/disagrees", get(disagrees))
        .route("/pf/default", post(default_families))
        .route("/pf/admin", axum::routing::put(admin))
        .route("/pf/plain", get(|| async { "plain" }).delete(|| async { StatusCode::ACCEPTED }))
        .layer(promshard::http_layer!(LAYER));
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        for (method, uri, status) in [
            ("GET", "/pf/disagrees", 404),
            ("POST", "/pf/default", 201),
            ("PUT", "/pf/admin", 204),
            ("GET", "/pf/plain", 200),
            ("DELETE", "/pf/plain", 202),
        ] {
            let request = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
            assert_eq!(app.clone().oneshot(request).await.unwrap().status().as_u16(), status, "{method} {uri}");
        }
    });
    // Outside any request: the sites count for themselves, in the same
    // (layer's) families.
    runtime.block_on(async {
        assert_eq!(disagrees().await, StatusCode::NOT_FOUND);
        assert_eq!(default_families().await, StatusCode::CREATED);
    });
    let count = |handler: &str, method: &str, status: &str| {
        sample_value("http_requests_total", &[("handler", handler), ("method", method), ("status", status)])
    };
    assert_eq!(count("/pf/disagrees", "GET", "4xx"), Some(2.0));
    assert_eq!(count("/pf/disagrees", "GET", "404"), None, "the disagreeing site's codes are not used");
    assert_eq!(count("/pf/default", "POST", "2xx"), Some(2.0));
    assert_eq!(count("/pf/plain", "GET", "2xx"), Some(1.0));
    assert_eq!(count("/pf/plain", "other", "2xx"), Some(1.0), "DELETE is not among the layer's methods");
    assert_eq!(count("/pf/admin", "other", "2xx"), Some(1.0), "the layer counts the request (PUT is `other`)");
    let admin = [("handler", "/pf/admin"), ("method", "PUT"), ("status", "204")];
    assert_eq!(sample_value("pfadmin_http_requests_total", &admin), Some(1.0), "the prefixed site counts its own");
    let text = text();
    assert!(
        text.contains("http_request_duration_seconds_bucket{handler=\"/pf/disagrees\",method=\"GET\",le=\"0.5\"} 2"),
        "{text}"
    );
    assert!(!text.contains("http_request_duration_seconds_bucket{handler=\"/pf/disagrees\",method=\"GET\",le=\"1\"}"));
    // Declared rows in the layer's spelling: the handler's own method by class.
    assert_eq!(count("/pf/disagrees", "GET", "5xx"), Some(0.0));
    assert_eq!(count("/pf/default", "POST", "1xx"), Some(0.0));
    let problems = promshard::check_registry().unwrap_err();
    let text = format!("{problems:?}");
    assert!(text.contains("/pf/disagrees") && text.contains("differently"), "{text}");
}
