//! the default families (`http_layer!()`, 45 `handler` values per
//! family) in an app with 45 instrumented routes, a realistic size.
//!
//! At 8a2e4ef the routes sorted before `<unmatched>`, so the layer's own
//! entry was refused for the budget and the layer recorded nothing. At
//! f899d2f the layer's entry is kept and `/pd/44` is refused instead: its
//! requests are counted as `<unmatched>` 200s.

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode};
use promshard::instrument_handler;
use tower::ServiceExt;

macro_rules! routes {
    ($($name:ident $route:literal)*) => {
        $(
            #[instrument_handler(route = $route, method = "GET")]
            async fn $name() -> &'static str {
                $route
            }
        )*
        fn instrumented(router: Router) -> Router {
            router$(.route($route, get($name)))*
        }
    };
}

routes! {
    r00 "/pd/00" r01 "/pd/01" r02 "/pd/02" r03 "/pd/03" r04 "/pd/04" r05 "/pd/05" r06 "/pd/06" r07 "/pd/07"
    r08 "/pd/08" r09 "/pd/09" r10 "/pd/10" r11 "/pd/11" r12 "/pd/12" r13 "/pd/13" r14 "/pd/14" r15 "/pd/15"
    r16 "/pd/16" r17 "/pd/17" r18 "/pd/18" r19 "/pd/19" r20 "/pd/20" r21 "/pd/21" r22 "/pd/22" r23 "/pd/23"
    r24 "/pd/24" r25 "/pd/25" r26 "/pd/26" r27 "/pd/27" r28 "/pd/28" r29 "/pd/29" r30 "/pd/30" r31 "/pd/31"
    r32 "/pd/32" r33 "/pd/33" r34 "/pd/34" r35 "/pd/35" r36 "/pd/36" r37 "/pd/37" r38 "/pd/38" r39 "/pd/39"
    r40 "/pd/40" r41 "/pd/41" r42 "/pd/42" r43 "/pd/43" r44 "/pd/44"
}

fn total_requests() -> f64 {
    let text = String::from_utf8(promshard::encode(promshard::Format::Prometheus)).unwrap();
    text.lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// Once broken: 45 instrumented routes with the default families: at 8a2e4ef
/// the uninstrumented `/pd/plain` and a 404 were counted nowhere; at
/// f899d2f the request to the refused `/pd/44` is counted as `<unmatched>`.
#[test]
fn with_45_instrumented_routes_the_layer_still_counts_every_request() {
    let app: Router =
        instrumented(Router::new()).route("/pd/plain", get(|| async { "plain" })).layer(promshard::http_layer!());
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        for uri in ["/pd/00", "/pd/44", "/pd/plain", "/nowhere"] {
            let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
            let status = app.clone().oneshot(request).await.unwrap().status();
            assert_eq!(status == StatusCode::OK, uri != "/nowhere");
        }
    });
    println!("check_registry: {:?}", promshard::check_registry());
    assert_eq!(total_requests(), 4.0, "every request through the layer is counted somewhere");
    // Each under a label of its own: the route, or `other` past the
    // budget; `<unmatched>` only for the 404.
    let unmatched_200 = [("handler", "<unmatched>"), ("method", "GET"), ("status", "200")];
    assert_eq!(
        promshard::testing::sample_value("http_requests_total", &unmatched_200),
        None,
        "a routed 200 is never `<unmatched>`"
    );
}
