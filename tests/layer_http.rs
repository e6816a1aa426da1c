//! The tower layer on an axum app served by `axum::serve` on loopback and
//! driven over real HTTP/1.1 by a blocking client written here: route
//! templates with path parameters and nested routers, 404s and 405s,
//! panics behind a catch-panic layer, a client that hangs up mid-request,
//! `/metrics` served by `promshard::layer::metrics`, scanners' paths, and
//! the served exposition checked by promtool and Python's strict
//! OpenMetrics parser.
//!
//! Every value is read from `/metrics` fetched over HTTP. The tests share
//! this process's registry, so they take turns: counts of routes unique to
//! this file (`/h1/…`) are exact, counts of `<unmatched>` are deltas.

mod harness;
mod http_client;
mod support;

use http_client::{IO_TIMEOUT, connect, fetch, request_bytes, status};

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::routing::{get, post};
use harness::{isolated, parse_samples, value_in};
use http::StatusCode;
use promshard::instrument_handler;
use promshard::layer::UNMATCHED;
use support::{PROMTOOL_MISSING, PYTHON_MISSING, promtool, python_with_prometheus_client, run_python, skip_or_fail};
use tower_http::catch_panic::CatchPanicLayer;

/// How long any one socket operation of the client may block.
/// How long a server may take to stop once asked.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS_ACCEPT: &str = "application/openmetrics-text; version=1.0.0";

/// The tests share one registry: each holds this while it runs.
static TURN: Mutex<()> = Mutex::new(());

fn turn() -> MutexGuard<'static, ()> {
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------

/// An app served by `axum::serve` on 127.0.0.1, on a runtime of its own
/// on a thread of its own. Stopped by [`stop`](Server::stop), or on drop
/// when a test fails.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(app: Router) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let (sender, receiver) = std::sync::mpsc::channel();
        let asked = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
                sender.send(listener.local_addr().unwrap()).unwrap();
                let serve = axum::serve(listener, app).with_graceful_shutdown(stop_asked(Arc::clone(&asked)));
                let overdue = async {
                    stop_asked(asked).await;
                    tokio::time::sleep(STOP_TIMEOUT).await;
                };
                tokio::select! {
                    served = serve => served.expect("axum::serve"),
                    () = overdue => panic!("graceful shutdown took over {STOP_TIMEOUT:?}: a connection stayed open"),
                }
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        });
        let addr = receiver.recv_timeout(IO_TIMEOUT).expect("the server starts listening");
        Server { addr, stop, thread: Some(thread) }
    }

    /// Shuts the server down gracefully and checks that it stopped in
    /// time and no longer accepts connections.
    fn stop(mut self) {
        let started = Instant::now();
        self.stop.store(true, Ordering::Release);
        let thread = self.thread.take().unwrap();
        while !thread.is_finished() {
            assert!(started.elapsed() < STOP_TIMEOUT * 2, "the server did not stop within {:?}", STOP_TIMEOUT * 2);
            std::thread::sleep(Duration::from_millis(5));
        }
        if let Err(panic) = thread.join() {
            std::panic::resume_unwind(panic);
        }
        println!("server stopped in {:?}", started.elapsed());
        let refused = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        assert!(refused.is_err(), "{} still accepts connections after shutdown", self.addr);
    }
}

impl Drop for Server {
    /// A failing test's server: asked to stop, given a bounded time, and
    /// left behind (its thread dies with the test process) if it hangs.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + STOP_TIMEOUT * 2;
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

async fn stop_asked(stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------
// Reading /metrics over HTTP
// ---------------------------------------------------------------------

/// `/metrics` over HTTP, as 0.0.4 text.
fn scrape(addr: SocketAddr) -> String {
    let response = fetch(addr, "GET", "/metrics", &[]);
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("content-type"), Some(PROMETHEUS_TEXT));
    response.text()
}

fn count_in(text: &str, handler: &str, method: &str, status: &str) -> f64 {
    let labels = [("handler", handler), ("method", method), ("status", status)];
    value_in(text, "http_requests_total", &labels).unwrap_or(0.0)
}

fn latency_count_in(text: &str, handler: &str, method: &str) -> f64 {
    let labels = [("handler", handler), ("method", method)];
    value_in(text, "http_request_duration_seconds_count", &labels).unwrap_or(0.0)
}

fn in_flight_in(text: &str, handler: &str) -> Option<f64> {
    value_in(text, "http_requests_in_flight", &[("handler", handler)])
}

/// Every `http_requests_total` sample of `handler`: (method, status) →
/// value, zeros left out.
fn counts_of(text: &str, handler: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for sample in parse_samples(text) {
        let label = |name: &str| sample.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        if sample.name == "http_requests_total" && label("handler").as_deref() == Some(handler) && sample.value != 0.0 {
            out.insert((label("method").unwrap_or_default(), label("status").unwrap_or_default()), sample.value);
        }
    }
    out
}

/// The series a text exposes: each sample line without its value.
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.rsplit_once(' ').map_or(l, |(series, _)| series).to_owned())
        .collect()
}

// ---------------------------------------------------------------------
// The app
// ---------------------------------------------------------------------

async fn user(Path(id): Path<u64>) -> Result<String, StatusCode> {
    if id == 0 { Err(StatusCode::NOT_FOUND) } else { Ok(format!("user {id}")) }
}

async fn boom() -> &'static str {
    panic!("expected: a handler bug")
}

/// Routed at `/h1/shop/{id}`: the router's template names the request,
/// which the attribute, inside it, does not count again.
#[instrument_handler(route = "/h1/orders/{id}", method = "GET")]
async fn order(Path(id): Path<u64>) -> Result<String, StatusCode> {
    tokio::task::yield_now().await;
    if id == 0 { Err(StatusCode::CONFLICT) } else { Ok(format!("order {id}")) }
}

/// Answers after 20 seconds, longer than the test waits: only the client
/// hanging up ends it.
async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(20)).await;
    "late"
}

fn app() -> Router {
    let deeper = Router::new().route("/things/{id}", get(user));
    let api = Router::new().route("/items/{id}", get(user)).nest("/v1", deeper);
    Router::new()
        .route("/h1/users/{id}", get(user))
        .route("/h1/shop/{id}", get(order))
        .route("/h1/login", post(|| async { "welcome" }))
        // Caught inside the layer: it sees the 500 response.
        .route("/h1/boom-inside", get(boom).layer(CatchPanicLayer::new()))
        // Caught outside the layer: the panic unwinds through it.
        .route("/h1/boom-outside", get(boom))
        .route("/h1/slow", get(slow))
        .route("/h1/teapot", get(|| async { StatusCode::IM_A_TEAPOT }))
        .nest("/h1/api", api)
        .route("/metrics", get(promshard::layer::metrics))
        .layer(promshard::http_layer!())
        .layer(CatchPanicLayer::new())
}

// ---------------------------------------------------------------------
// Route templates, 404s, 405s, panics, a client gone
// ---------------------------------------------------------------------

#[test]
fn requests_over_http_are_counted_by_route_template() {
    let _turn = turn();
    harness::quiet_expected_panics();
    let server = Server::start(app());
    let addr = server.addr;
    let unmatched = |text: &str| counts_of(text, UNMATCHED);
    let before = scrape(addr);

    // (method, target, status the client must get)
    let requests: &[(&str, &str, u16)] = &[
        ("GET", "/h1/users/1", 200),
        ("GET", "/h1/users/2", 200),
        ("GET", "/h1/users/3?with=query", 200),
        ("GET", "/h1/users/%34%32", 200),
        ("GET", "/h1/users/0", 404),
        ("GET", "/h1/users/not-a-number", 400),
        ("HEAD", "/h1/users/5", 200),
        ("GET", "/h1/api/items/6", 200),
        ("GET", "/h1/api/v1/things/7", 200),
        ("GET", "/h1/api/v1/things/0", 404),
        ("GET", "/h1/shop/8", 200),
        ("GET", "/h1/shop/0", 409),
        ("POST", "/h1/login", 200),
        ("GET", "/h1/boom-inside", 500),
        ("GET", "/h1/boom-outside", 500),
        ("GET", "/h1/boom-outside", 500),
        // No route: <unmatched>.
        ("GET", "/h1/nowhere", 404),
        ("GET", "/h1/users/9/extra", 404),
        ("GET", "/h1/users/9/", 404),
        ("GET", "/h1/api/v2/things/1", 404),
        ("DELETE", "/h1/nowhere/at/all", 404),
        ("BREW", "/h1/coffee", 404),
        // A route, not for this method: <unmatched> too.
        ("POST", "/h1/users/10", 405),
        ("GET", "/h1/login", 405),
        ("BREW", "/h1/users/11", 405),
        // A code outside the families' list.
        ("GET", "/h1/teapot", 418),
    ];
    for &(method, target, expected) in requests {
        let response = fetch(addr, method, target, &[]);
        assert_eq!(response.status, expected, "{method} {target}: {response:?}");
        if method == "HEAD" {
            assert!(response.body.is_empty());
        }
    }
    assert_eq!(fetch(addr, "GET", "/h1/users/12", &[]).text(), "user 12", "bodies pass through the layer");

    // Two requests pipelined on one kept-alive connection: two counts.
    let mut pipelined = connect(addr);
    let mut both = format!("GET /h1/api/items/13 HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes();
    both.extend(request_bytes(addr, "GET", "/h1/api/items/14", &[]));
    pipelined.write_all(&both).unwrap();
    let mut raw = String::new();
    pipelined.read_to_string(&mut raw).unwrap();
    assert_eq!(raw.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{raw}");

    // Clients hammering one route from several threads.
    std::thread::scope(|scope| {
        for thread in 0..4 {
            scope.spawn(move || {
                for i in 0..25 {
                    assert_eq!(status(addr, "GET", &format!("/h1/api/v1/things/{}", 100 + thread * 25 + i)), 200);
                }
            });
        }
    });

    // Clients that hang up while their requests are being handled.
    let gone: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = connect(addr);
            stream.write_all(&request_bytes(addr, "GET", "/h1/slow", &[])).unwrap();
            stream
        })
        .collect();
    wait_for(addr, "three slow requests in flight", |text| in_flight_in(text, "/h1/slow") == Some(3.0));
    assert_eq!(count_in(&scrape(addr), "/h1/slow", "GET", "499"), 0.0, "not counted while in flight");
    drop(gone);
    wait_for(addr, "the slow requests counted as 499", |text| count_in(text, "/h1/slow", "GET", "499") == 3.0);

    let text = scrape(addr);
    let expected: &[(&str, &str, &str, f64)] = &[
        ("/h1/users/{id}", "GET", "200", 5.0),
        ("/h1/users/{id}", "GET", "404", 1.0),
        ("/h1/users/{id}", "GET", "400", 1.0),
        ("/h1/users/{id}", "HEAD", "200", 1.0),
        ("/h1/api/items/{id}", "GET", "200", 3.0),
        ("/h1/api/v1/things/{id}", "GET", "200", 101.0),
        ("/h1/api/v1/things/{id}", "GET", "404", 1.0),
        ("/h1/shop/{id}", "GET", "200", 1.0),
        ("/h1/shop/{id}", "GET", "409", 1.0),
        ("/h1/login", "POST", "200", 1.0),
        ("/h1/boom-inside", "GET", "500", 1.0),
        ("/h1/boom-outside", "GET", "500", 2.0),
        ("/h1/slow", "GET", "499", 3.0),
        ("/h1/teapot", "GET", "other", 1.0),
    ];
    for &(handler, method, status, value) in expected {
        assert_eq!(count_in(&text, handler, method, status), value, "{handler} {method} {status}\n{text}");
    }
    // Nothing else under these routes: no status counted twice or under
    // another code, no route under its concrete path, and the attribute's
    // route, where the router names the request, under nothing.
    let mut routes: BTreeSet<&str> = expected.iter().map(|e| e.0).collect();
    routes.insert("/h1/orders/{id}");
    for handler in &routes {
        let want: BTreeMap<(String, String), f64> =
            expected.iter().filter(|e| e.0 == *handler).map(|e| ((e.1.to_owned(), e.2.to_owned()), e.3)).collect();
        assert_eq!(counts_of(&text, handler), want, "{handler}");
        let latency: f64 = want.iter().filter(|((m, _), _)| m == "GET").map(|(_, v)| v).sum();
        assert_eq!(latency_count_in(&text, handler, "GET"), latency, "{handler}");
        assert_eq!(in_flight_in(&text, handler).unwrap_or(0.0), 0.0, "{handler}");
    }
    for sample in parse_samples(&text) {
        for (name, value) in &sample.labels {
            let known = routes.contains(value.as_str()) || value == UNMATCHED || !value.starts_with("/h1");
            assert!(known, "a raw path as a label: {name}={value:?} in {}", sample.name);
        }
    }

    // <unmatched>, as deltas: 6 404s (one of them method `other`) and 3 405s.
    let (before, after) = (unmatched(&before), unmatched(&text));
    let delta = |method: &str, status: &str| {
        let key = (method.to_owned(), status.to_owned());
        after.get(&key).unwrap_or(&0.0) - before.get(&key).unwrap_or(&0.0)
    };
    let deltas = [delta("GET", "404"), delta("DELETE", "404"), delta("other", "404")];
    assert_eq!(deltas, [4.0, 1.0, 1.0], "404s: {after:?}");
    assert_eq!([delta("POST", "405"), delta("GET", "405"), delta("other", "405")], [1.0, 1.0, 1.0], "405s");
    let total_delta: f64 = after.values().sum::<f64>() - before.values().sum::<f64>();
    assert_eq!(total_delta, 9.0, "no other <unmatched> request: {before:?} -> {after:?}");
    assert_eq!(in_flight_in(&text, UNMATCHED), Some(0.0));

    // The scrape counts itself in flight, and every earlier scrape once.
    assert_eq!(in_flight_in(&text, "/metrics"), Some(1.0), "this scrape, in flight while it renders");
    let scrapes = count_in(&text, "/metrics", "GET", "200");
    let again = scrape(addr);
    assert_eq!(count_in(&again, "/metrics", "GET", "200"), scrapes + 1.0);
    server.stop();
}

/// Scrapes until `done` holds for the exposition (at most 10 s).
fn wait_for(addr: SocketAddr, what: &str, done: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(addr);
        if done(&text) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}:\n{text}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------
// More routes than the budget
// ---------------------------------------------------------------------

/// Routes the router names past the families' budget of `handler` values
/// are counted under `other`; none is lost and none adds a series. In a
/// process of its own: it fills this binary's budget.
#[test]
fn routes_past_the_budget_are_counted_under_other() {
    isolated("routes_past_the_budget_are_counted_under_other", Duration::from_secs(25), || {
        const ROUTES: usize = 80;
        let mut app = Router::new().route("/metrics", get(promshard::layer::metrics));
        for i in 0..ROUTES {
            app = app.route(&format!("/h4/r{i}/{{id}}"), get(|| async { "ok" }));
        }
        let server = Server::start(app.layer(promshard::http_layer!()));
        let addr = server.addr;
        scrape(addr);
        let hits = |i: usize| i % 3 + 1;
        for i in 0..ROUTES {
            for n in 0..hits(i) {
                assert_eq!(status(addr, "GET", &format!("/h4/r{i}/{n}")), 200);
            }
        }
        let text = scrape(addr);
        let samples = parse_samples(&text);
        let handler = |s: &harness::Sample| s.labels.iter().find(|(k, _)| k == "handler").map(|(_, v)| v.clone());
        let handlers: BTreeSet<String> =
            samples.iter().filter(|s| s.name.starts_with("http_")).filter_map(handler).collect();
        println!("{} handler values: {handlers:?}", handlers.len());
        // The documented budget: 44 values (`<unmatched>` and this
        // binary's instrumented handler among them), and `other`.
        assert_eq!(handlers.len(), 45, "{handlers:?}");
        assert!(handlers.contains("other") && handlers.contains(UNMATCHED), "{handlers:?}");
        assert!(handlers.contains("/h1/orders/{id}"), "an instrumented handler keeps its room: {handlers:?}");

        // The routes met first keep their template; every request counts.
        let mut kept = 0.0;
        for i in 0..ROUTES {
            let template = format!("/h4/r{i}/{{id}}");
            let counted = count_in(&text, &template, "GET", "200");
            if i < 30 {
                assert_eq!(counted, hits(i) as f64, "{template}");
            }
            if handlers.contains(&template) {
                assert_eq!(counted, hits(i) as f64, "{template}");
                assert_eq!(latency_count_in(&text, &template, "GET"), hits(i) as f64, "{template}");
            }
            kept += counted;
        }
        let other = count_in(&text, "other", "GET", "200");
        let sent: usize = (0..ROUTES).map(hits).sum();
        assert_eq!(kept + other, sent as f64, "every request counted once:\n{text}");
        assert_eq!(latency_count_in(&text, "other", "GET"), other);
        assert_eq!(in_flight_in(&text, "other").unwrap_or(0.0), 0.0);
        // Named by family, as `tests/recording.rs` reads it.
        for family in ["http_requests", "http_request_duration_seconds"] {
            let overflow = [("metric", family), ("label", "handler")];
            let overflowed = value_in(&text, "promshard_label_overflow_total", &overflow);
            assert_eq!(overflowed, Some(other), "{family}: each request past the budget is an overflow:\n{text}");
        }
        server.stop();
    });
}

// ---------------------------------------------------------------------
// Scanners
// ---------------------------------------------------------------------

fn seed() -> u64 {
    if let Some(seed) = std::env::var("PROMSHARD_TEST_SEED").ok().and_then(|s| s.parse().ok()) {
        return seed;
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    (nanos ^ u64::from(std::process::id()).rotate_left(32)) | 1
}

/// What a scanner tries: (target, kind), the kind fixing the answer.
fn scanner_target(kind: u64, next: &mut impl FnMut() -> u64) -> String {
    match kind {
        0 => format!("/h3/users/{}", next() % 1_000_000),
        1 => format!("/h3/users/x{:x}", next()),
        2 => format!("/wp-admin/{:x}.php", next()),
        3 => format!("/h3/users/{}/{:x}", next() % 100, next()),
        4 => format!("/{:x}/{:x}?q={:x}", next(), next(), next()),
        5 => format!("/%2e%2e/%2f{:x}/%00%ff", next()),
        6 => format!("/{}", format!("{:016x}", next()).repeat(64)),
        _ => format!("/h3/login/{:x}", next()),
    }
}

const SCANNER_KINDS: u64 = 8;
const SCANNER_METHODS: [&str; 6] = ["GET", "POST", "DELETE", "HEAD", "PROPFIND", "X-SCAN"];

#[test]
fn a_thousand_scanner_paths_over_http_add_no_series() {
    let _turn = turn();
    let app: Router = Router::new()
        .route("/h3/users/{id}", get(user))
        .route("/h3/login", post(|| async { "ok" }))
        .route("/metrics", get(promshard::layer::metrics))
        .layer(promshard::http_layer!());
    let server = Server::start(app);
    let addr = server.addr;
    let seed = seed();
    println!("seed {seed} (rerun with PROMSHARD_TEST_SEED={seed})");
    let mut state = seed;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };

    // Every kind of answer once, so that each series it touches exists;
    // a scrape too, for the `/metrics` series.
    let mut answers = BTreeSet::new();
    for method in SCANNER_METHODS {
        for kind in 0..SCANNER_KINDS {
            let target = scanner_target(kind, &mut next);
            answers.insert((method, kind, status(addr, method, &target)));
        }
        answers.insert((method, u64::MAX, status(addr, method, "/h3/login")));
    }
    scrape(addr);
    let before_text = scrape(addr);
    let before = series(&before_text);

    let started = Instant::now();
    let mut unmatched_answers = 0.0;
    for _ in 0..1000 {
        let method = SCANNER_METHODS[(next() % SCANNER_METHODS.len() as u64) as usize];
        let kind = next() % SCANNER_KINDS;
        let target = scanner_target(kind, &mut next);
        let status = status(addr, method, &target);
        assert!(answers.contains(&(method, kind, status)), "{method} {target}: {status}, unlike its warm-up");
        if status == 404 || status == 405 {
            unmatched_answers += 1.0;
        }
    }
    println!("1000 requests in {:?}", started.elapsed());

    let after_text = scrape(addr);
    let after = series(&after_text);
    let added: Vec<&String> = after.difference(&before).collect();
    let removed: Vec<&String> = before.difference(&after).collect();
    assert!(added.is_empty() && removed.is_empty(), "scanner paths changed the series: +{added:?} -{removed:?}");
    assert_eq!(before.len(), after.len());
    println!("{} series exposed before and after", after.len());
    assert!(after.iter().filter(|s| s.starts_with("http_requests_total{handler=\"<unmatched>\"")).count() >= 6);
    // …and every one of them was counted, under `<unmatched>` or a template.
    let unmatched = |text: &str| counts_of(text, UNMATCHED).values().sum::<f64>();
    assert_eq!(unmatched(&after_text) - unmatched(&before_text), unmatched_answers);
    assert!(!after_text.contains("wp-admin") && !after_text.contains("/h3/users/x"), "a raw path leaked");
    server.stop();
}

// ---------------------------------------------------------------------
// The served exposition, checked by parsers we did not write
// ---------------------------------------------------------------------

/// Parses stdin with prometheus_client's strict OpenMetrics parser and
/// prints `S <name> <value> <label>=<hex value>…` for each sample.
const OPENMETRICS_SCRIPT: &str = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
text = sys.stdin.buffer.read().decode("utf-8")
for family in text_string_to_metric_families(text):
    for s in family.samples:
        labels = " ".join(k + "=" + v.encode("utf-8").hex() for k, v in sorted(s.labels.items()))
        print("S", s.name, repr(float(s.value)), labels)
"#;

#[test]
fn the_served_exposition_passes_promtool_and_the_strict_openmetrics_parser() {
    let _turn = turn();
    harness::quiet_expected_panics();
    let server = Server::start(app());
    let addr = server.addr;
    for target in ["/h1/users/21", "/h1/users/22", "/h1/nowhere-else", "/h1/boom-inside", "/h1/shop/23"] {
        fetch(addr, "GET", target, &[]);
    }
    fetch(addr, "POST", "/h1/users/24", &[]);

    let text = scrape(addr);
    match promtool() {
        None => skip_or_fail(PROMTOOL_MISSING),
        Some(promtool) => {
            let output = support::run_with_stdin(&promtool, &[OsStr::new("check"), OsStr::new("metrics")], &text);
            let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
            assert!(
                output.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
                "promtool check metrics rejected or linted /metrics ({}):\n--- stdout ---\n{stdout}\n\
                 --- stderr ---\n{stderr}\n--- input ---\n{text}",
                output.status,
            );
        }
    }

    let response = fetch(addr, "GET", "/metrics", &[("Accept", OPENMETRICS_ACCEPT)]);
    assert_eq!(response.status, 200);
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("application/openmetrics-text; version=1.0.0"), "{content_type}");
    let openmetrics = response.text();
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    assert_eq!(openmetrics.matches("# EOF").count(), 1);
    let Some(python) = python_with_prometheus_client() else {
        skip_or_fail(PYTHON_MISSING);
        return server.stop();
    };
    let parsed = run_python(&python, OPENMETRICS_SCRIPT, &openmetrics);
    let value = |name: &str, labels: &[(&str, &str)]| -> Option<f64> {
        let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={}", hex(v))).collect();
        labels.sort();
        let labels = labels.join(" ");
        parsed.lines().find_map(|line| {
            let (value, rest) = line.strip_prefix("S ")?.strip_prefix(name)?.strip_prefix(' ')?.split_once(' ')?;
            (rest == labels).then(|| value.parse().unwrap())
        })
    };
    for (handler, method, status) in
        [("/h1/users/{id}", "GET", "200"), ("/h1/shop/{id}", "GET", "200"), (UNMATCHED, "POST", "405")]
    {
        let labels = [("handler", handler), ("method", method), ("status", status)];
        let expected = count_in(&text, handler, method, status);
        assert!(expected >= 1.0, "{handler} {method} {status} counted:\n{text}");
        // One more scrape since the 0.0.4 one: only `/metrics` moved.
        assert_eq!(value("http_requests_total", &labels), Some(expected), "{handler} {method} {status}\n{parsed}");
    }
    assert_eq!(value("http_requests_in_flight", &[("handler", "/metrics")]), Some(1.0), "{parsed}");
    server.stop();
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------
// gzip
// ---------------------------------------------------------------------

/// The axum handler answers every `Accept-Encoding` as the built-in
/// server does (the same cases as `tests/gzip.rs`): the same series,
/// compressed or not, for `GET` and `HEAD`.
#[test]
fn metrics_is_gzipped_for_clients_that_accept_it() {
    let _turn = turn();
    let server = Server::start(app());
    let addr = server.addr;
    // The first GET and HEAD add `/metrics`' own series. (No `/h1/`
    // route: another test counts those exactly.)
    scrape(addr);
    fetch(addr, "HEAD", "/metrics", &[]);
    let plain = series(&scrape(addr));
    // hyper's default limit on a request head is about 400 KiB.
    for (accept_encoding, gzip) in support::gzip::cases(64 * 1024) {
        let what = format!("Accept-Encoding {:.80?} ({} lines)", accept_encoding.first(), accept_encoding.len());
        let headers: Vec<(&str, &str)> =
            accept_encoding.iter().map(|value| ("Accept-Encoding", value.as_str())).collect();
        let response = fetch(addr, "GET", "/metrics", &headers);
        assert_eq!(response.status, 200, "{what}");
        assert_eq!(response.header("content-type"), Some(PROMETHEUS_TEXT), "{what}");
        let decoded = support::gzip::decode(&what, &response.headers, &response.body, gzip);
        assert_eq!(series(&String::from_utf8(decoded).unwrap()), plain, "{what}");

        let head = fetch(addr, "HEAD", "/metrics", &headers);
        assert_eq!(head.status, 200, "HEAD, {what}");
        assert_eq!(head.header("content-encoding"), response.header("content-encoding"), "HEAD, {what}");
        assert_eq!(head.header("vary"), response.header("vary"), "HEAD, {what}");
        // Not equal to the GET's: every scrape counts itself.
        assert!(head.header("content-length").is_some_and(|l| l != "0"), "HEAD, {what}");
    }

    match python_with_prometheus_client() {
        None => skip_or_fail(PYTHON_MISSING),
        Some(python) => {
            let scrape = support::gzip::python_scrape(&python, addr, support::gzip::PROMETHEUS_ACCEPT);
            assert!(scrape.content_type.starts_with("application/openmetrics-text"), "{}", scrape.content_type);
            let text = String::from_utf8(scrape.body).unwrap();
            assert!(text.contains("http_requests_total{handler=\"/metrics\",method=\"GET\",status=\"200\"}"));
            assert!(scrape.samples > 0);
        }
    }
    match support::gzip::curl() {
        None => skip_or_fail(support::gzip::CURL_MISSING),
        Some(curl) => {
            let (headers, body) = support::gzip::curl_scrape(&curl, addr, "text/plain");
            assert!(headers.iter().any(|(name, value)| name == "content-encoding" && value == "gzip"), "{headers:?}");
            assert_eq!(series(&String::from_utf8(body).unwrap()), plain);
        }
    }
    // Protobuf, as Prometheus with native histograms asks for it: gzipped,
    // and every sample the text's (but `/metrics`' own, which count each
    // scrape).
    let headers = [("Accept", support::protobuf::PROMETHEUS_PROTOBUF_ACCEPT), ("Accept-Encoding", "gzip")];
    let response = fetch(addr, "GET", "/metrics", &headers);
    assert_eq!(response.header("content-type"), Some(support::protobuf::PROTOBUF_CONTENT_TYPE));
    let proto = support::gzip::decode("protobuf", &response.headers, &response.body, true);
    match support::protobuf::python_with_protobuf() {
        None => skip_or_fail(support::protobuf::PROTOBUF_MISSING),
        Some(python) => {
            let work = harness::TempDir::new("layer-protobuf");
            let decoded = support::protobuf::decode(&python, work.path(), &proto, &scrape(addr));
            support::protobuf::assert_same_but("the axum handler", &decoded, &["process_"], &["/metrics"]);
        }
    }
    server.stop();
}
