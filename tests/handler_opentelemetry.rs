//! With the `opentelemetry` feature, `#[instrument_handler]` and the
//! layer attach the trace id and span id of the OpenTelemetry span active
//! when a call ends as the exemplar of its count and of its duration's
//! bucket: for a sync function, an async one (whose context is carried
//! with its future), and a request through the layer. A call without an
//! active span counts as before and leaves the exemplar alone. Python's
//! strict OpenMetrics parser reads the exemplars back; the text 0.0.4
//! format has none.

mod support;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use opentelemetry::trace::{FutureExt, SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use promshard::instrument_handler;
use tower::ServiceExt;

#[instrument_handler(name = "otel_sync_job")]
fn sync_job(n: u32) -> Result<u32, String> {
    if n == 0 { Err("zero".into()) } else { Ok(n) }
}

#[instrument_handler(name = "otel_async_job")]
async fn async_job() -> u32 {
    7
}

/// A context whose active span has these ids, as a tracing layer or an
/// incoming `traceparent` would make it.
fn context(trace: u8, span: u8) -> opentelemetry::Context {
    let ids = SpanContext::new(
        TraceId::from_bytes([trace; 16]),
        SpanId::from_bytes([span; 8]),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    opentelemetry::Context::new().with_remote_span_context(ids)
}

fn ids(trace: u8, span: u8) -> String {
    format!("trace_id=\"{}\",span_id=\"{}\"", format!("{trace:02x}").repeat(16), format!("{span:02x}").repeat(8))
}

fn openmetrics() -> String {
    String::from_utf8(promshard::encode(promshard::Format::OpenMetrics)).unwrap()
}

/// The line of `text` that starts with `prefix`.
fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
}

/// Prints every exemplar Python's strict OpenMetrics parser finds, as
/// `sample trace_id span_id`.
const STRICT: &str = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        if s.exemplar is not None:
            print(s.name, s.exemplar.labels['trace_id'], s.exemplar.labels['span_id'])
"#;

#[test]
fn calls_carry_the_active_spans_ids_as_exemplars() {
    // No span: counted, no exemplar.
    assert_eq!(sync_job(1), Ok(1));
    let calls = "function_calls_total{handler=\"otel_sync_job\",result=\"ok\"}";
    assert!(!line(&openmetrics(), calls).contains(" # {"), "{}", openmetrics());

    // A sync call inside an active span.
    {
        let _active = context(0xa1, 0x01).attach();
        assert_eq!(sync_job(2), Ok(2));
    }
    let text = openmetrics();
    let counted = line(&text, calls);
    assert!(counted.starts_with(&format!("{calls} 2 # {{{}}} 1 ", ids(0xa1, 0x01))), "{counted}");
    let with_exemplar = text
        .lines()
        .filter(|l| l.starts_with("function_call_duration_seconds_bucket{handler=\"otel_sync_job\""))
        .filter(|l| l.contains(&ids(0xa1, 0x01)))
        .count();
    assert_eq!(with_exemplar, 1, "one bucket has the call's duration as exemplar:\n{text}");

    // Another call without a span keeps the exemplar of the last one
    // that had one.
    assert_eq!(sync_job(3), Ok(3));
    assert!(line(&openmetrics(), calls).starts_with(&format!("{calls} 3 # {{{}}}", ids(0xa1, 0x01))));

    // An async call: its context travels with its future.
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert_eq!(runtime.block_on(async_job().with_context(context(0xb2, 0x02))), 7);
    let async_calls = "function_calls_total{handler=\"otel_async_job\",result=\"ok\"}";
    assert!(line(&openmetrics(), async_calls).contains(&ids(0xb2, 0x02)), "{}", openmetrics());

    // A request through the layer, served inside a span.
    let app: Router = Router::new().route("/otel/items", get(|| async { "items" })).layer(promshard::http_layer!());
    let request = http::Request::builder().uri("/otel/items").body(Body::empty()).unwrap();
    let response = runtime.block_on(app.oneshot(request).with_context(context(0xc3, 0x03))).unwrap();
    assert_eq!(response.status(), 200);
    let text = openmetrics();
    let requests = "http_requests_total{handler=\"/otel/items\",method=\"GET\",status=\"200\"}";
    assert!(line(&text, requests).starts_with(&format!("{requests} 1 # {{{}}} 1 ", ids(0xc3, 0x03))), "{text}");

    // The text format has no exemplars.
    let plain = String::from_utf8(promshard::encode(promshard::Format::Prometheus)).unwrap();
    assert!(!plain.contains("trace_id"), "{plain}");

    match support::python_with_prometheus_client() {
        None => support::skip_or_fail(support::PYTHON_MISSING),
        Some(python) => {
            let seen = support::run_python(&python, STRICT, &text);
            for (sample, trace, span) in [
                ("function_calls_total", 0xa1u8, 0x01u8),
                ("function_calls_total", 0xb2, 0x02),
                ("http_requests_total", 0xc3, 0x03),
            ] {
                let wanted =
                    format!("{sample} {} {}", format!("{trace:02x}").repeat(16), format!("{span:02x}").repeat(8));
                assert!(seen.lines().any(|l| l == wanted), "{wanted} not in Python's parse:\n{seen}");
            }
        }
    }
}
