//! `#[instrument_handler]` as users write it: sync and async functions
//! that return, fail, panic or are cancelled; methods, trait impls,
//! generics, `impl Trait`, `?` and early returns; `#[async_trait]`; HTTP
//! outcomes from `Result`, `StatusCode`, `Response` and tuples; and the
//! exposition checked by promtool and Python's parsers.
//!
//! Every test uses handlers of its own, so exact counts hold while tests
//! run in parallel.

mod calls;
mod harness;
mod support;

use std::future::Future;
use std::panic::catch_unwind;

use std::task::{Context, Waker};

use calls::{Yield, block_on, function_counts, path};
use promshard::testing::sample_value;
use promshard::{HandlerFamilies, HandlerOutcome, Outcome, instrument_handler};

// ---------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------

fn http_count(handler: &str, method: &str, status: &str) -> f64 {
    let labels = [("handler", handler), ("method", method), ("status", status)];
    sample_value("http_requests_total", &labels).unwrap_or_else(|| panic!("no series {labels:?}"))
}

// ---------------------------------------------------------------------
// Plain functions
// ---------------------------------------------------------------------

#[derive(Debug)]
struct InvoiceError;

#[instrument_handler]
fn settle_invoice(amount: i64) -> Result<i64, InvoiceError> {
    if amount == 0 {
        panic!("expected: a zero invoice");
    }
    let checked = u32::try_from(amount).map_err(|_| InvoiceError)?;
    Ok(i64::from(checked) * 2)
}

#[test]
fn sync_function_counts_ok_error_and_panic() {
    harness::quiet_expected_panics();
    assert_eq!(function_counts(&path("settle_invoice")), ([0.0; 4], 0.0, 0.0), "series exist before any call");
    assert_eq!(settle_invoice(21).unwrap(), 42);
    assert_eq!(settle_invoice(4).unwrap(), 8);
    settle_invoice(-1).unwrap_err();
    let panicked = catch_unwind(|| settle_invoice(0));
    assert!(panicked.is_err(), "the panic is resumed, never swallowed");
    assert_eq!(function_counts(&path("settle_invoice")), ([2.0, 1.0, 1.0, 0.0], 4.0, 0.0));
}

/// A consumer loop that only ends by a panic.
#[instrument_handler]
fn consume_forever(messages: &[&str]) -> ! {
    let mut at = 0;
    loop {
        if messages[at % messages.len()] == "poison" {
            panic!("expected: a poison message");
        }
        at += 1;
    }
}

/// The same, waiting between messages.
#[instrument_handler]
async fn consume_forever_async(messages: &[&str]) -> ! {
    let mut at = 0;
    loop {
        Yield(false).await;
        if messages[at % messages.len()] == "poison" {
            panic!("expected: a poison message");
        }
        at += 1;
    }
}

#[test]
fn a_function_that_never_returns_counts_the_panic_that_ends_it() {
    harness::quiet_expected_panics();
    assert!(catch_unwind(|| consume_forever(&["a", "b", "poison"])).is_err());
    assert_eq!(function_counts(&path("consume_forever")), ([0.0, 0.0, 1.0, 0.0], 1.0, 0.0));
    assert!(catch_unwind(|| block_on(consume_forever_async(&["a", "poison"]))).is_err());
    assert_eq!(function_counts(&path("consume_forever_async")), ([0.0, 0.0, 1.0, 0.0], 1.0, 0.0));
    // Dropped while it waits: cancelled.
    let mut waiting = Box::pin(consume_forever_async(&["a"]));
    assert!(waiting.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_pending());
    drop(waiting);
    assert_eq!(function_counts(&path("consume_forever_async")), ([0.0, 0.0, 1.0, 1.0], 2.0, 0.0));
}

#[instrument_handler]
async fn consume_message(body: &str) -> Result<usize, String> {
    Yield(false).await;
    match body {
        "" => Err("empty message".to_owned()),
        "poison" => panic!("expected: a poison message"),
        _ => Ok(body.len()),
    }
}

#[test]
fn async_function_counts_ok_error_and_panic() {
    harness::quiet_expected_panics();
    assert_eq!(block_on(consume_message("hello")), Ok(5));
    assert!(block_on(consume_message("")).is_err());
    let panicked = catch_unwind(|| block_on(consume_message("poison")));
    assert!(panicked.is_err());
    assert_eq!(function_counts(&path("consume_message")), ([1.0, 1.0, 1.0, 0.0], 3.0, 0.0));
}

#[instrument_handler]
async fn slow_job() -> u32 {
    Yield(false).await;
    7
}

#[test]
fn a_future_dropped_unfinished_is_cancelled_and_releases_in_flight() {
    let handler = path("slow_job");
    let mut future = Box::pin(slow_job());
    let mut cx = Context::from_waker(Waker::noop());
    assert!(future.as_mut().poll(&mut cx).is_pending());
    assert_eq!(function_counts(&handler), ([0.0; 4], 0.0, 1.0), "in flight while pending");
    drop(future);
    assert_eq!(function_counts(&handler), ([0.0, 0.0, 0.0, 1.0], 1.0, 0.0));
    // A future never polled never started: nothing to count.
    drop(slow_job());
    assert_eq!(block_on(slow_job()), 7);
    assert_eq!(function_counts(&handler), ([1.0, 0.0, 0.0, 1.0], 2.0, 0.0));
}

// ---------------------------------------------------------------------
// Methods, generics, impl Trait, `?`, early return
// ---------------------------------------------------------------------

struct Ledger {
    entries: Vec<i64>,
}

trait Store {
    fn total(&self) -> Result<i64, String>;
}

impl Ledger {
    #[instrument_handler(name = "ledger::push")]
    fn push(&mut self, amount: i64) -> &mut Self {
        self.entries.push(amount);
        self
    }

    #[instrument_handler(name = "ledger::first")]
    fn first(&self) -> Option<&i64> {
        let first = self.entries.first()?;
        Some(first)
    }

    #[instrument_handler(name = "ledger::into_sorted")]
    fn into_sorted(mut self) -> impl Iterator<Item = i64> {
        self.entries.sort();
        self.entries.into_iter()
    }
}

impl Store for Ledger {
    #[instrument_handler(name = "ledger::total")]
    fn total(&self) -> Result<i64, String> {
        if self.entries.is_empty() {
            return Err("empty ledger".into());
        }
        let total: i64 = self.entries.iter().sum();
        let total = i32::try_from(total).map_err(|e| e.to_string())?;
        Ok(total.into())
    }
}

#[instrument_handler]
fn largest<T: PartialOrd + Copy>(items: &[T]) -> Option<T> {
    let mut best = *items.first()?;
    for item in items {
        if *item > best {
            best = *item;
        }
    }
    Some(best)
}

#[instrument_handler]
fn evens(limit: u32) -> impl Iterator<Item = u32> {
    (0..limit).filter(|n| n % 2 == 0)
}

#[test]
fn methods_generics_impl_trait_question_mark_and_early_return() {
    let mut ledger = Ledger { entries: Vec::new() };
    assert_eq!(ledger.total(), Err("empty ledger".into()));
    assert_eq!(ledger.first(), None);
    ledger.push(3).push(1);
    assert_eq!(ledger.first(), Some(&3));
    assert_eq!(ledger.total(), Ok(4));
    ledger.push(i64::from(i32::MAX));
    assert!(ledger.total().is_err(), "`?` returns the error");
    assert_eq!(ledger.into_sorted().collect::<Vec<_>>(), [1, 3, i64::from(i32::MAX)]);
    assert_eq!(largest(&[3, 9, 2]), Some(9));
    assert_eq!(largest(&[0.5, 0.25]), Some(0.5));
    assert_eq!(largest::<u8>(&[]), None);
    assert_eq!(evens(7).collect::<Vec<_>>(), [0, 2, 4, 6]);

    let ok_error = |handler: &str| {
        let (calls, count, in_flight) = function_counts(handler);
        assert_eq!(in_flight, 0.0, "{handler}");
        assert_eq!(count, calls.iter().sum::<f64>(), "{handler}: _count is the calls' sum");
        [calls[0], calls[1]]
    };
    assert_eq!(ok_error("ledger::push"), [3.0, 0.0]);
    // `Option` is no outcome promshard knows: every return is ok.
    assert_eq!(ok_error("ledger::first"), [2.0, 0.0]);
    assert_eq!(ok_error("ledger::total"), [1.0, 2.0]);
    assert_eq!(ok_error("ledger::into_sorted"), [1.0, 0.0]);
    // One generic function, one handler, whatever its instances.
    assert_eq!(ok_error(&path("largest")), [3.0, 0.0]);
    assert_eq!(ok_error(&path("evens")), [1.0, 0.0]);
}

// ---------------------------------------------------------------------
// Async traits
// ---------------------------------------------------------------------

#[async_trait::async_trait]
trait Repository {
    async fn load(&self, id: u32) -> Result<String, String>;
    async fn count(&self) -> usize;
}

struct Users;

// `#[async_trait]` expands first and hands `#[instrument_handler]` a
// function returning a boxed future.
#[async_trait::async_trait]
impl Repository for Users {
    #[instrument_handler(name = "users::load")]
    async fn load(&self, id: u32) -> Result<String, String> {
        Yield(false).await;
        if id == 0 {
            return Err("no user 0".into());
        }
        Ok(format!("user {id}"))
    }

    #[instrument_handler(name = "users::count")]
    async fn count(&self) -> usize {
        Yield(false).await;
        2
    }
}

#[async_trait::async_trait(?Send)]
trait LocalRepository {
    async fn local(&self) -> u8;
}

#[async_trait::async_trait(?Send)]
impl LocalRepository for Users {
    #[instrument_handler(name = "users::local")]
    async fn local(&self) -> u8 {
        Yield(false).await;
        1
    }
}

/// A native `async fn` in a trait, which `#[instrument_handler]` expands
/// itself, as it would before a macro that expands after it.
trait NativeRepository {
    async fn native(&self, fail: bool) -> Result<(), String>;
}

impl NativeRepository for Users {
    #[instrument_handler(name = "users::native")]
    async fn native(&self, fail: bool) -> Result<(), String> {
        Yield(false).await;
        if fail { Err("failed".into()) } else { Ok(()) }
    }
}

#[test]
fn async_trait_methods_and_native_async_trait_methods() {
    let users = Users;
    assert_eq!(block_on(users.load(1)), Ok("user 1".into()));
    assert!(block_on(users.load(0)).is_err());
    assert_eq!(block_on(users.count()), 2);
    assert_eq!(block_on(users.local()), 1);
    assert!(block_on(users.native(true)).is_err());
    block_on(users.native(false)).unwrap();

    // The boxed future is what is timed and cancelled, not its creation.
    let mut pending = users.load(5);
    assert_eq!(function_counts("users::load").2, 0.0, "not started before its first poll");
    assert!(pending.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_pending());
    assert_eq!(function_counts("users::load").2, 1.0);
    drop(pending);

    assert_eq!(function_counts("users::load"), ([1.0, 1.0, 0.0, 1.0], 3.0, 0.0));
    assert_eq!(function_counts("users::count"), ([1.0, 0.0, 0.0, 0.0], 1.0, 0.0));
    assert_eq!(function_counts("users::local"), ([1.0, 0.0, 0.0, 0.0], 1.0, 0.0));
    assert_eq!(function_counts("users::native"), ([1.0, 1.0, 0.0, 0.0], 2.0, 0.0));
}

// ---------------------------------------------------------------------
// HTTP handlers
// ---------------------------------------------------------------------

#[derive(Debug)]
enum ApiError {
    NotFound,
    Unavailable,
}

impl HandlerOutcome for ApiError {
    fn outcome(&self) -> Outcome {
        match self {
            ApiError::NotFound => Outcome::status(404),
            ApiError::Unavailable => Outcome::status(503),
        }
    }
}

struct Json<T>(T);

#[instrument_handler(route = "/users/{id}", method = "GET")]
async fn get_user(id: u64) -> Result<Json<String>, ApiError> {
    Yield(false).await;
    match id {
        0 => Err(ApiError::NotFound),
        1 => Err(ApiError::Unavailable),
        2 => panic!("expected: a handler bug"),
        _ => Ok(Json(format!("user {id}"))),
    }
}

#[instrument_handler(route = "/users", method = "post")]
fn create_user(name: &str) -> Result<(http::StatusCode, String), ApiError> {
    if name.is_empty() {
        return Err(ApiError::NotFound);
    }
    Ok((http::StatusCode::CREATED, name.to_owned()))
}

#[instrument_handler(route = "/health", method = "GET")]
fn health(up: bool) -> http::StatusCode {
    if up { http::StatusCode::NO_CONTENT } else { http::StatusCode::IM_A_TEAPOT }
}

#[instrument_handler(route = "/users/{id}", method = "DELETE")]
async fn delete_user(id: u64) -> http::Response<()> {
    Yield(false).await;
    let status = if id == 0 { http::StatusCode::NOT_FOUND } else { http::StatusCode::OK };
    http::Response::builder().status(status).body(()).unwrap()
}

#[test]
fn http_handlers_label_route_method_and_status() {
    harness::quiet_expected_panics();
    assert_eq!(http_count("/users/{id}", "GET", "200"), 0.0, "the handler's own method's series exist from startup");
    assert_eq!(http_count("/users/{id}", "GET", "other"), 0.0);
    let patch = [("handler", "/users/{id}"), ("method", "PATCH"), ("status", "other")];
    assert_eq!(sample_value("http_requests_total", &patch), None, "other methods' series appear once they count");

    for id in [7, 8, 0, 1] {
        let _ = block_on(get_user(id));
    }
    assert!(catch_unwind(|| block_on(get_user(2))).is_err());
    let mut cancelled = Box::pin(get_user(9));
    assert!(cancelled.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_pending());
    assert_eq!(sample_value("http_requests_in_flight", &[("handler", "/users/{id}")]), Some(1.0));
    drop(cancelled);
    assert_eq!(http_count("/users/{id}", "GET", "200"), 2.0);
    assert_eq!(http_count("/users/{id}", "GET", "404"), 1.0);
    assert_eq!(http_count("/users/{id}", "GET", "503"), 1.0);
    assert_eq!(http_count("/users/{id}", "GET", "500"), 1.0, "a panic answers 500");
    assert_eq!(http_count("/users/{id}", "GET", "499"), 1.0, "a client gone away is 499");
    let latency = [("handler", "/users/{id}"), ("method", "GET")];
    assert_eq!(sample_value("http_request_duration_seconds_count", &latency), Some(6.0));

    // Two handlers on one route share its `handler` value.
    block_on(delete_user(0));
    block_on(delete_user(3));
    assert_eq!(http_count("/users/{id}", "DELETE", "404"), 1.0);
    assert_eq!(http_count("/users/{id}", "DELETE", "200"), 1.0);
    assert_eq!(sample_value("http_requests_in_flight", &[("handler", "/users/{id}")]), Some(0.0));

    assert_eq!(create_user("ada").unwrap().0, http::StatusCode::CREATED);
    create_user("").unwrap_err();
    assert_eq!(http_count("/users", "POST", "201"), 1.0, "a tuple led by a status, in a Result");
    assert_eq!(http_count("/users", "POST", "404"), 1.0);

    health(true);
    health(false);
    assert_eq!(http_count("/health", "GET", "204"), 1.0);
    assert_eq!(http_count("/health", "GET", "other"), 1.0, "418 is not in the default list");
}

const ADMIN: HandlerFamilies =
    HandlerFamilies::http().prefix("admin").status_classes().methods(&["GET", "POST"]).buckets(&[0.001, 0.01, 0.1]);

#[instrument_handler(route = "/admin/reindex", method = "POST", families = ADMIN)]
fn reindex(ok: bool) -> Result<(), ()> {
    if ok { Ok(()) } else { Err(()) }
}

#[instrument_handler(route = "/admin/purge", method = "DELETE", families = ADMIN)]
fn purge() {}

#[test]
fn families_take_a_prefix_buckets_methods_and_status_classes() {
    reindex(true).unwrap();
    reindex(false).unwrap_err();
    purge();
    let count = |handler, method, status| {
        let labels = [("handler", handler), ("method", method), ("status", status)];
        sample_value("admin_http_requests_total", &labels)
    };
    assert_eq!(count("/admin/reindex", "POST", "2xx"), Some(1.0));
    assert_eq!(count("/admin/reindex", "POST", "5xx"), Some(1.0));
    assert_eq!(count("/admin/purge", "other", "2xx"), Some(1.0), "DELETE is not in the list");
    assert_eq!(count("/admin/purge", "DELETE", "2xx"), None);
    let bucket = [("handler", "/admin/reindex"), ("method", "POST"), ("le", "0.1")];
    assert_eq!(sample_value("admin_http_request_duration_seconds_bucket", &bucket), Some(2.0));
    assert_eq!(sample_value("http_requests_total", &[("handler", "/admin/reindex")]), None);
}

/// Not a type promshard knows.
struct Page;

#[instrument_handler(route = "/pages", method = "GET")]
fn pages() -> Page {
    Page
}

#[test]
fn an_unsupported_return_type_records_ok() {
    let _ = pages();
    assert_eq!(http_count("/pages", "GET", "200"), 1.0);
}

// ---------------------------------------------------------------------
// The exposition, read by others
// ---------------------------------------------------------------------

#[instrument_handler(route = "/probe", method = "GET")]
fn probe() -> http::StatusCode {
    http::StatusCode::NO_CONTENT
}

#[instrument_handler]
fn probe_job() {}

#[test]
fn the_exposition_passes_promtool_and_python_parsers() {
    probe();
    probe_job();
    let text = String::from_utf8(promshard::encode(promshard::Format::Prometheus)).unwrap();
    assert!(text.contains("# TYPE http_requests_total counter"), "{text}");
    assert!(text.contains("# TYPE function_calls_in_flight gauge"), "{text}");
    match support::promtool() {
        Some(promtool) => {
            let output = support::run_with_stdin(&promtool, &["check".as_ref(), "metrics".as_ref()], &text);
            let said = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success() && said.trim().is_empty(), "promtool: {said}\n{text}");
        }
        None => support::skip_or_fail(support::PROMTOOL_MISSING),
    }
    let Some(python) = support::python_with_prometheus_client() else {
        return support::skip_or_fail(support::PYTHON_MISSING);
    };
    const SCRIPT: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families as prometheus
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
parse = prometheus if sys.argv[-1] == "prometheus" else openmetrics
for family in parse(sys.stdin.read()):
    for s in family.samples:
        if s.labels.get("handler") == "/probe" and s.name == "http_requests_total" and s.labels["status"] == "204":
            print(family.type, s.value)
"#;
    for (format, parser) in
        [(promshard::Format::Prometheus, "prometheus"), (promshard::Format::OpenMetrics, "openmetrics")]
    {
        let text = String::from_utf8(promshard::encode(format)).unwrap();
        let script = format!("import sys; sys.argv.append({parser:?})\n{SCRIPT}");
        let printed = support::run_python(&python, &script, &text);
        let value: f64 = printed.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect(&printed);
        assert!(printed.starts_with("counter ") && value >= 1.0, "{parser}: {printed}");
    }
}
