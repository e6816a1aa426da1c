//! Instrumented HTTP handlers refused for the budget, behind the layer.
//! Handlers are kept by `handler` value; values that sort after
//! `<unmatched>` (a `name = "..."`, or a route without a leading `/`) are
//! the ones refused, while the layer's own entry is kept.
//!
//! A refused site records into private families, which are never
//! exposed; it once claimed requests with its index in those, which the
//! layer read as an index of its own families: another handler's series,
//! or slots past the family's. Now only sites of the exposed families
//! claim, and a claim past the label is refused.
//!
//! `SMALL` fits 3 handlers: `<unmatched>`, `pr_a`, `pr_b` are kept;
//! `pr_c` … `pr_h` are refused (private indices 0 … 5).

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode};
use promshard::testing::sample_value;
use promshard::{HandlerFamilies, instrument_handler};
use tower::ServiceExt;

mod harness;

const SMALL: HandlerFamilies = HandlerFamilies::http().max_series(3 * 220);

macro_rules! handlers {
    ($($name:ident $label:literal $route:literal)*) => {
        $(
            #[instrument_handler(route = $route, method = "GET", name = $label)]
            async fn $name() -> StatusCode {
                StatusCode::OK
            }
        )*
        fn app() -> Router {
            Router::new()$(.route($route, get($name)))*.layer(promshard::http_layer!(SMALL))
        }
    };
}

handlers! {
    pr_a "pr_a" "/pr/a"
    pr_b "pr_b" "/pr/b"
    pr_c "pr_c" "/pr/c"
    pr_d "pr_d" "/pr/d"
    pr_e "pr_e" "/pr/e"
    pr_f "pr_f" "/pr/f"
    pr_g "pr_g" "/pr/g"
    pr_h "pr_h" "/pr/h"
}

fn send(uri: &str) -> StatusCode {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
    runtime.block_on(app().oneshot(request)).unwrap().status()
}

fn count(handler: &str) -> Option<f64> {
    sample_value("http_requests_total", &[("handler", handler), ("method", "GET"), ("status", "200")])
}

/// Once broken: a request to a refused handler is counted under another
/// handler's label: `/pr/c` (private index 0) as `<unmatched>`, `/pr/d`
/// (private index 1) as `pr_a`. The budget message says refused handlers
/// are "not recorded"; here they corrupt other handlers' series.
#[test]
fn a_refused_handler_behind_the_layer_is_not_counted_under_another_handler() {
    println!("check_registry: {:?}", promshard::check_registry());
    assert_eq!(send("/pr/a"), StatusCode::OK);
    assert_eq!(send("/pr/c"), StatusCode::OK);
    assert_eq!(send("/pr/d"), StatusCode::OK);
    let unmatched = count("<unmatched>").unwrap_or(0.0);
    println!("pr_a {:?}, <unmatched> GET 200 {unmatched}", count("pr_a"));
    assert_eq!(unmatched, 0.0, "no request went unmatched");
    // The router's templates name the requests: `/pr/a` is not a kept
    // value (the attribute named its handler `pr_a`) and the label is
    // full, so all three go to `other`, and none to another handler.
    assert_eq!(count("pr_a"), Some(0.0), "declared, and named by no request");
    assert_eq!(count("pr_b"), Some(0.0));
    assert_eq!(count("other"), Some(3.0), "each request counted once, under `other`");
}

/// Once broken: a refused handler whose private index is past the layer's
/// `handler` label (here `pr_h`, index 5, in a label of 4 values) makes
/// the layer write past the family's slots: with debug assertions the
/// claim panics and the unwinding request panics again (process abort);
/// without them (release) it writes into whatever follows in the arena.
/// Seen without debug assertions: `http_requests_total{handler="<unmatched>",
/// method="POST",status="422"} 5e-324` and `…status="504"} 0.0000231…`
/// (a gauge increment and a histogram sum landing in counter slots).
#[test]
fn a_refused_handler_past_the_label_never_writes_out_of_bounds() {
    const NAME: &str = "a_refused_handler_past_the_label_never_writes_out_of_bounds";
    if harness::is_child(NAME) {
        let text = || String::from_utf8(promshard::encode(promshard::Format::Prometheus)).unwrap();
        let before = text();
        assert_eq!(send("/pr/h"), StatusCode::OK);
        // Without debug assertions the request survives: show what the
        // out-of-bounds writes changed (a request to a refused handler
        // should change nothing but, at most, `other` or `<unmatched>`).
        let after = text();
        let changed: Vec<&str> =
            after.lines().filter(|l| !l.starts_with('#') && !before.lines().any(|b| b == *l)).collect();
        println!("changed after one request to /pr/h: {changed:#?}");
        let foreign: Vec<&&str> = changed
            .iter()
            .filter(|l| l.starts_with("http_"))
            .filter(|l| !l.contains("handler=\"other\"") && !l.contains("handler=\"pr_h\""))
            .collect();
        assert!(foreign.is_empty(), "a request to /pr/h changed other handlers' series: {foreign:#?}");
        println!("SURVIVED");
        return;
    }
    if harness::in_any_child() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture", "--test-threads=1", "--include-ignored"])
        .env(harness::ROLE_ENV, NAME)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let _ = Duration::ZERO;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("SURVIVED"),
        "the child ({}) did not survive a request to /pr/h cleanly:\n{stderr}",
        out.status
    );
}
