//! The tower layer in multiprocess mode: a parent binds one listener and
//! forks two workers that each serve the same axum app from it with a
//! tokio runtime of their own. A client sends a known set of requests over
//! real HTTP; `/metrics` from either worker and the parent's read of the
//! directory both show exactly the merged counts, and keep showing them
//! after the workers are SIGKILLed and their shards compacted. A request
//! left in flight in a worker disappears from `http_requests_in_flight`
//! when the worker dies.
//!
//! Two parents: one that records nothing (it only forks), and one that
//! records before forking, the pre-fork pattern that keeps a run open
//! (its values must not be counted again by its children).

mod harness;
mod http_client;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path as UrlPath;
use axum::http::HeaderValue;
use axum::response::Response as AxumResponse;
use axum::routing::{get, post};
use harness::{TempDir, describe_status, encode_dir_text, fork_child, isolated, parse_samples, value_in, wait_timeout};
use http::StatusCode;
use http_client::{Response, connect, fetch, parse_response, request_bytes};
use promshard::instrument_handler;
use promshard::layer::UNMATCHED;
use tower::ServiceExt;

/// How long any one socket operation of the client may block.
/// The deadline of a whole scenario; a hang is a failure.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(28);
/// The header a worker stamps on every response.
const PID_HEADER: &str = "x-worker-pid";
const WORKERS: usize = 2;
const CLIENT_THREADS: usize = 4;
const REQUESTS_PER_THREAD: usize = 55;

// ---------------------------------------------------------------------
// The app each worker serves
// ---------------------------------------------------------------------

async fn user(UrlPath(id): UrlPath<u64>) -> Result<String, StatusCode> {
    if id == 0 { Err(StatusCode::NOT_FOUND) } else { Ok(format!("user {id}")) }
}

/// Routed at `/m/shop/{id}`: the router's template names the request, and
/// the layer counts it once.
#[instrument_handler(route = "/m/orders/{id}", method = "GET")]
async fn order(UrlPath(id): UrlPath<u64>) -> Result<String, StatusCode> {
    tokio::task::yield_now().await;
    if id == 0 { Err(StatusCode::CONFLICT) } else { Ok(format!("order {id}")) }
}

/// Called in the parent before it forks (in the recording-parent
/// scenario), outside any layer: a call of its own.
#[instrument_handler(route = "/m/master", method = "GET")]
fn master_call() -> StatusCode {
    StatusCode::OK
}

/// Where the handlers that never answer leave a file per request, named
/// by the request's id and holding the worker's pid.
static MARKERS: OnceLock<PathBuf> = OnceLock::new();

/// Marks which worker holds request `id`, then waits until the client
/// hangs up or the worker dies.
async fn never_answer(id: u64) -> &'static str {
    std::fs::write(MARKERS.get().unwrap().join(id.to_string()), std::process::id().to_string()).unwrap();
    std::future::pending::<()>().await;
    "never"
}

async fn hang(UrlPath(id): UrlPath<u64>) -> &'static str {
    never_answer(id).await
}

/// Routed at `/m/slow/{id}`: in flight under the router's template, counted once.
#[instrument_handler(route = "/m/held/{id}", method = "GET")]
async fn held(UrlPath(id): UrlPath<u64>) -> &'static str {
    never_answer(id).await
}

async fn stamp_pid(mut response: AxumResponse) -> AxumResponse {
    response.headers_mut().insert(PID_HEADER, HeaderValue::from(std::process::id()));
    response
}

fn app() -> Router {
    Router::new()
        .route("/m/users/{id}", get(user))
        .route("/m/shop/{id}", get(order))
        .route("/m/login", post(|| async { "welcome" }))
        .route("/m/hang/{id}", get(hang))
        .route("/m/slow/{id}", get(held))
        .nest("/m/api", Router::new().route("/items/{id}", get(user)))
        .route("/metrics", get(promshard::layer::metrics))
        .layer(promshard::http_layer!())
        .layer(axum::middleware::map_response(stamp_pid))
}

/// Requests each worker sends itself before serving, in an order of its
/// own (rotated by its index), so that its shard numbers the route
/// templates unlike its siblings': the merge must go by name.
/// (method, target, handler).
const WARM_UP: [(&str, &str, &str); 3] = [
    ("GET", "/m/api/items/1", "/m/api/items/{id}"),
    ("GET", "/m/users/1", "/m/users/{id}"),
    ("POST", "/m/login", "/m/login"),
];

/// A worker: serves `app()` from the inherited listener until killed.
fn worker(listener: &std::net::TcpListener, parent: libc::pid_t, index: usize) -> i32 {
    // Never outlive the scenario, even if the parent dies without running
    // its guard (that guard and the harness's kill of the process group
    // come first; this is the last resort).
    // SAFETY: plain prctl/getppid calls.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            return 3;
        }
    }
    let listener = listener.try_clone().expect("dup the listener");
    listener.set_nonblocking(true).expect("non-blocking listener");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        for i in 0..WARM_UP.len() {
            let (method, target, _) = WARM_UP[(i + index) % WARM_UP.len()];
            let request = http::Request::builder().method(method).uri(target).body(axum::body::Body::empty()).unwrap();
            let response = app().oneshot(request).await.expect("infallible");
            assert_eq!(response.status(), StatusCode::OK, "warm-up {method} {target}");
        }
        let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
        axum::serve(listener, app()).await.expect("axum::serve");
    });
    // `serve` returns only on a listener error.
    4
}

// ---------------------------------------------------------------------
// The workers, killed on every path
// ---------------------------------------------------------------------

/// The forked workers; each is SIGKILLed and reaped when dropped, so that
/// a failing assertion cannot leave one behind.
struct Workers(Vec<libc::pid_t>);

impl Workers {
    /// Fails if a worker already died (it must be serving until killed).
    fn assert_alive(&self) {
        for &pid in &self.0 {
            let mut status = 0;
            // SAFETY: our own child.
            let got = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            assert_eq!(got, 0, "worker {pid} died before it was killed: {}", describe_status(status));
        }
    }

    /// SIGKILLs `pid` and reaps it; fails unless the signal is what ended it.
    fn kill(&mut self, pid: libc::pid_t) {
        let at = self.0.iter().position(|&p| p == pid).expect("one of our workers");
        self.0.remove(at);
        // SAFETY: our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        let status = wait_timeout(pid, Duration::from_secs(5)).expect("a SIGKILLed worker is reaped");
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL, "{}", describe_status(status));
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: our own children, not yet reaped.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// The pid of the worker that answered.
fn pid_of(response: &Response) -> libc::pid_t {
    response.header(PID_HEADER).and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no {PID_HEADER}: {response:?}"))
}

// ---------------------------------------------------------------------
// What the client sent, and what an exposition must show
// ---------------------------------------------------------------------

/// A kind of request: (method, target for a number, status the client
/// must get, the `handler` and `method` it is counted under).
type Kind = (&'static str, fn(u64) -> String, u16, &'static str, &'static str);

const KINDS: [Kind; 11] = [
    ("GET", |n| format!("/m/users/{n}"), 200, "/m/users/{id}", "GET"),
    ("GET", |n| format!("/m/users/{}", n + 1), 200, "/m/users/{id}", "GET"),
    ("GET", |_| "/m/users/0".into(), 404, "/m/users/{id}", "GET"),
    ("HEAD", |n| format!("/m/users/{n}"), 200, "/m/users/{id}", "HEAD"),
    ("GET", |n| format!("/m/shop/{n}"), 200, "/m/shop/{id}", "GET"),
    ("GET", |_| "/m/shop/0".into(), 409, "/m/shop/{id}", "GET"),
    ("GET", |n| format!("/m/nowhere/{n:x}"), 404, UNMATCHED, "GET"),
    ("PROPFIND", |n| format!("/m/{n}"), 404, UNMATCHED, "other"),
    ("POST", |n| format!("/m/users/{n}"), 405, UNMATCHED, "POST"),
    ("POST", |_| "/m/login".into(), 200, "/m/login", "POST"),
    ("GET", |n| format!("/m/api/items/{n}"), 200, "/m/api/items/{id}", "GET"),
];

/// Counts a client saw answered: (handler, method, status) → requests.
#[derive(Clone, Default, Debug)]
struct Expected {
    counts: BTreeMap<(String, String, String), f64>,
    /// `http_requests_in_flight` values other than 0.
    in_flight: BTreeMap<String, f64>,
}

impl Expected {
    fn add(&mut self, handler: &str, method: &str, status: u16, n: f64) {
        *self.counts.entry((handler.to_owned(), method.to_owned(), status.to_string())).or_default() += n;
    }

    fn merge(&mut self, other: &Expected) {
        for ((h, m, s), n) in &other.counts {
            *self.counts.entry((h.clone(), m.clone(), s.clone())).or_default() += n;
        }
    }

    /// Checks every `http_*` sample of `text`: the counters exactly these
    /// (zeros aside), the latency counts their sums by handler and method,
    /// the in-flight gauges zero but for `in_flight`.
    fn check(&self, text: &str, what: &str) {
        let mut counts = BTreeMap::new();
        let mut latency = BTreeMap::new();
        let mut in_flight = BTreeMap::new();
        for sample in parse_samples(text) {
            let label = |name: &str| sample.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            let (handler, method) = (label("handler").unwrap_or_default(), label("method").unwrap_or_default());
            match sample.name.as_str() {
                "http_requests_total" if sample.value != 0.0 => {
                    counts.insert((handler, method, label("status").unwrap_or_default()), sample.value);
                }
                "http_request_duration_seconds_count" if sample.value != 0.0 => {
                    latency.insert((handler, method), sample.value);
                }
                "http_request_duration_seconds_bucket" if label("le").as_deref() == Some("+Inf") => {
                    let count = value_in(
                        text,
                        "http_request_duration_seconds_count",
                        &[("handler", &handler), ("method", &method)],
                    );
                    assert_eq!(count, Some(sample.value), "{what}: +Inf bucket of {handler} {method}");
                }
                "http_requests_in_flight" if sample.value != 0.0 => {
                    in_flight.insert(handler, sample.value);
                }
                _ => {}
            }
        }
        let expected: BTreeMap<_, _> =
            self.counts.iter().filter(|(_, n)| **n != 0.0).map(|(k, n)| (k.clone(), *n)).collect();
        if counts != expected {
            let diff: Vec<String> = expected
                .keys()
                .chain(counts.keys())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter(|k| counts.get(*k) != expected.get(*k))
                .map(|k| format!("{k:?}: exposed {:?}, sent {:?}", counts.get(k), expected.get(k)))
                .collect();
            panic!("{what}: http_requests_total is not what the clients saw answered:\n{}\n{text}", diff.join("\n"));
        }
        let mut sums: BTreeMap<(String, String), f64> = BTreeMap::new();
        for ((handler, method, _), n) in &expected {
            *sums.entry((handler.clone(), method.clone())).or_default() += n;
        }
        assert_eq!(latency, sums, "{what}: latency counts");
        assert_eq!(in_flight, self.in_flight, "{what}: in flight");
    }
}

/// Sends `per_thread` requests of every kind in turn from `threads`
/// threads at once; what was answered, and by which workers.
fn traffic(addr: SocketAddr, threads: usize, per_thread: usize, offset: u64) -> (Expected, BTreeSet<libc::pid_t>) {
    traffic_counted(addr, threads, per_thread, offset, &Progress::default())
}

/// Requests sent so far, and answered so far.
#[derive(Default)]
struct Progress {
    started: AtomicU64,
    answered: AtomicU64,
}

/// [`traffic`], counting each request in `progress` before it is sent
/// and after its answer is read.
fn traffic_counted(
    addr: SocketAddr,
    threads: usize,
    per_thread: usize,
    offset: u64,
    progress: &Progress,
) -> (Expected, BTreeSet<libc::pid_t>) {
    std::thread::scope(|scope| {
        let clients: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut expected = Expected::default();
                    let mut pids = BTreeSet::new();
                    for i in 0..per_thread {
                        let (method, target, status, handler, label) = KINDS[(i + t) % KINDS.len()];
                        let n = offset + (t * per_thread + i) as u64 + 1;
                        let target = target(n);
                        progress.started.fetch_add(1, Ordering::SeqCst);
                        let response = fetch(addr, method, &target, &[]);
                        progress.answered.fetch_add(1, Ordering::SeqCst);
                        assert_eq!(response.status, status, "{method} {target}: {response:?}");
                        pids.insert(pid_of(&response));
                        expected.add(handler, label, status, 1.0);
                    }
                    (expected, pids)
                })
            })
            .collect();
        let mut expected = Expected::default();
        let mut pids = BTreeSet::new();
        for client in clients {
            let (e, p) = client.join().expect("a client thread");
            expected.merge(&e);
            pids.extend(p);
        }
        (expected, pids)
    })
}

/// [`traffic`] with `/metrics` scraped over and over meanwhile: every
/// scrape shows at least the requests answered before it started and at
/// most those sent before it ended, and never fewer than the scrape
/// before. `before` is what was counted before the traffic. Returns
/// what was sent, scrapes included.
fn traffic_while_scraping(addr: SocketAddr, before: &Expected) -> Expected {
    let counted = |text: &str| -> f64 {
        let samples = parse_samples(text);
        let requests = samples.iter().filter(|s| s.name == "http_requests_total");
        requests.filter(|s| !s.labels.iter().any(|(k, v)| k == "handler" && v == "/metrics")).map(|s| s.value).sum()
    };
    let baseline: f64 = before.counts.iter().filter(|((h, _, _), _)| h != "/metrics").map(|(_, n)| n).sum();
    let progress = Progress::default();
    let done = AtomicBool::new(false);
    let scrapes = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let scraper = scope.spawn(|| {
            let mut last = baseline;
            while !done.load(Ordering::SeqCst) {
                let answered = progress.answered.load(Ordering::SeqCst) as f64;
                let (text, pid) = scrape(addr);
                let started = progress.started.load(Ordering::SeqCst) as f64;
                let scrapes = scrapes.fetch_add(1, Ordering::SeqCst) + 1;
                let now = counted(&text) - baseline;
                assert!(
                    answered <= now && now <= started && now + baseline >= last,
                    "scrape {scrapes} from worker {pid}: {now} requests counted, {answered} answered before it, \
                     {started} sent by its end, {} in the scrape before\n{text}",
                    last - baseline,
                );
                last = now + baseline;
            }
        });
        // Rounds of traffic until a few scrapes overlapped it.
        let started = Instant::now();
        let mut sent = Expected::default();
        for round in 0.. {
            if scrapes.load(Ordering::SeqCst) >= 8 || (round >= 2 && started.elapsed() > Duration::from_secs(5)) {
                break;
            }
            sent.merge(&traffic_counted(addr, CLIENT_THREADS, KINDS.len(), 20_000 + 1_000 * round, &progress).0);
        }
        done.store(true, Ordering::SeqCst);
        scraper.join().expect("the scraper");
        let scrapes = scrapes.load(Ordering::SeqCst);
        println!(
            "{scrapes} scrapes during {} requests in {:?}",
            progress.answered.load(Ordering::SeqCst),
            started.elapsed()
        );
        sent.add("/metrics", "GET", 200, scrapes as f64);
        sent
    })
}

/// `/metrics` over HTTP: its text, and the worker that answered.
fn scrape(addr: SocketAddr) -> (String, libc::pid_t) {
    let response = fetch(addr, "GET", "/metrics", &[]);
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    (String::from_utf8(response.body.clone()).expect("UTF-8"), pid_of(&response))
}

/// The `.promshard` files of `dir`: (live shards' pids, archives, others).
fn shards(dir: &Path) -> (BTreeSet<u32>, usize, Vec<promshard::multiprocess::ShardStatus>) {
    let all = promshard::multiprocess::inspect(dir).expect("inspect the directory");
    let live = all.iter().filter(|s| s.live).filter_map(|s| s.pid).collect();
    let archives = all.iter().filter(|s| s.archive).count();
    let others = all.into_iter().filter(|s| !s.live && !s.archive).collect();
    (live, archives, others)
}

/// What a worker's warm-up adds.
fn warmed_up(expected: &mut Expected) {
    for (method, _, handler) in WARM_UP {
        expected.add(handler, method, 200, 1.0);
    }
}

/// A merged exposition as parsers we did not write see it: promtool
/// lints the 0.0.4 `text`; Python's strict OpenMetrics parser reads one
/// more scrape (which counts as a request) asked for in OpenMetrics.
fn check_with_oracles(addr: SocketAddr, text: &str) {
    match support::promtool() {
        None => support::skip_or_fail(support::PROMTOOL_MISSING),
        Some(promtool) => {
            let args = [std::ffi::OsStr::new("check"), std::ffi::OsStr::new("metrics")];
            let output = support::run_with_stdin(&promtool, &args, text);
            let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
            assert!(
                output.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
                "promtool check metrics rejected or linted a merged /metrics ({}):\n{stdout}{stderr}\n{text}",
                output.status,
            );
        }
    }
    let mut stream = connect(addr);
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let response = parse_response(&raw, false).unwrap();
    assert_eq!(response.status, 200);
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("application/openmetrics-text; version=1.0.0"), "{content_type}");
    let openmetrics = String::from_utf8(response.body).unwrap();
    assert!(openmetrics.ends_with("# EOF\n") && openmetrics.matches("# EOF").count() == 1, "{openmetrics}");
    match support::python_with_prometheus_client() {
        None => support::skip_or_fail(support::PYTHON_MISSING),
        Some(python) => {
            let script = "import sys\n\
                from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
                families = list(parse(sys.stdin.read()))\n\
                print(sum(s.value for f in families for s in f.samples if s.name == 'http_requests_total'))\n";
            let total: f64 = support::run_python(&python, script, &openmetrics).trim().parse().unwrap();
            let expected: f64 =
                parse_samples(text).iter().filter(|s| s.name == "http_requests_total").map(|s| s.value).sum();
            // The 0.0.4 scrape, finished before this one started.
            assert_eq!(total, expected + 1.0, "Python's sum of http_requests_total:\n{openmetrics}");
        }
    }
}

/// How many of the [`held_requests`] their clients abandon.
const HUNG_UP: usize = 2;

/// A request its worker never answers.
struct Hold {
    target: String,
    handler: &'static str,
    stream: TcpStream,
    /// The worker holding it.
    worker: libc::pid_t,
}

/// Sends four requests that get no answer, one of each kind for the
/// first [`HUNG_UP`] and again for the rest, and waits until each is in
/// its handler.
fn held_requests(addr: SocketAddr, markers: &Path) -> Vec<Hold> {
    let kinds = [("/m/hang", "/m/hang/{id}"), ("/m/slow", "/m/slow/{id}")];
    let holds: Vec<(String, &str, TcpStream)> = (1..=4)
        .map(|id: u64| {
            let (prefix, handler) = kinds[(id as usize - 1) % kinds.len()];
            let target = format!("{prefix}/{id}");
            let mut stream = connect(addr);
            stream.write_all(&request_bytes(addr, "GET", &target, &[])).unwrap();
            (target, handler, stream)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    holds
        .into_iter()
        .enumerate()
        .map(|(i, (target, handler, stream))| {
            let marker = markers.join((i + 1).to_string());
            let worker = loop {
                if let Some(pid) = std::fs::read_to_string(&marker).ok().and_then(|p| p.parse().ok()) {
                    break pid;
                }
                assert!(Instant::now() < deadline, "{target} never reached its handler");
                std::thread::sleep(Duration::from_millis(5));
            };
            Hold { target, handler, stream, worker }
        })
        .collect()
}

/// Reads `dir` (without recording) until `done` holds, at most 10 s.
fn wait_for_dir(dir: &Path, what: &str, done: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = encode_dir_text(dir);
        if done(&text) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}:\n{text}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------

fn scenario(parent_records: bool) {
    let started = Instant::now();
    let dir = TempDir::new("layer");
    let markers = TempDir::new("layer-markers");
    MARKERS.set(markers.path().to_owned()).unwrap();
    promshard::multiprocess::init(dir.path()).expect("nothing recorded yet");
    let mut expected = Expected::default();
    if parent_records {
        assert_eq!(master_call(), StatusCode::OK);
        expected.add("/m/master", "GET", 200, 1.0);
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().unwrap();
    assert!(tokio::runtime::Handle::try_current().is_err(), "no tokio runtime in the parent before it forks");

    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let mut workers = Workers(Vec::new());
    for index in 0..WORKERS {
        workers.0.push(fork_child(|| worker(&listener, parent, index)));
        warmed_up(&mut expected);
    }
    // The recording parent keeps the listener to fork a replacement;
    // the other leaves it to the workers, so that once they are dead
    // connecting fails fast.
    let listener = parent_records.then_some(listener);
    println!("workers {:?} on {addr}", workers.0);

    // The known traffic, then more until both workers have answered.
    let (sent, mut pids) = traffic(addr, CLIENT_THREADS, REQUESTS_PER_THREAD, 0);
    expected.merge(&sent);
    let mut rounds = 0;
    while pids.len() < WORKERS {
        rounds += 1;
        workers.assert_alive();
        assert!(rounds <= 50, "after {rounds} rounds only workers {pids:?} of {:?} answered", workers.0);
        let (sent, more) = traffic(addr, CLIENT_THREADS, KINDS.len(), 10_000 * rounds);
        expected.merge(&sent);
        pids.extend(more);
    }
    assert_eq!(pids, workers.0.iter().copied().collect(), "only our workers answer");
    let sent = traffic_while_scraping(addr, &expected);
    expected.merge(&sent);
    workers.assert_alive();
    let sent_total: f64 = expected.counts.values().sum();
    println!("{sent_total} requests answered by {pids:?} ({rounds} extra rounds)");

    // Requests that get no answer: (id, target, handler), the first
    // `HUNG_UP` abandoned by their clients (499), the rest left in flight
    // until their worker dies.
    let mut hung_up = held_requests(addr, markers.path());
    let in_flight = hung_up.split_off(HUNG_UP);
    for hold in hung_up {
        expected.add(hold.handler, "GET", 499, 1.0);
        // Closes the connection.
        drop(hold.stream);
    }
    for hold in &in_flight {
        *expected.in_flight.entry(hold.handler.to_owned()).or_default() += 1.0;
    }
    let settled = |text: &str| {
        let value = |name, labels: &[(&str, &str)]| value_in(text, name, labels).unwrap_or(0.0);
        ["/m/hang/{id}", "/m/slow/{id}"].iter().all(|&handler| {
            value("http_requests_total", &[("handler", handler), ("method", "GET"), ("status", "499")]) == 1.0
                && value("http_requests_in_flight", &[("handler", handler)]) == 1.0
        })
    };
    wait_for_dir(dir.path(), "the abandoned requests counted as 499", settled);
    println!("held: {:?}", in_flight.iter().map(|h| (h.target.as_str(), h.worker)).collect::<Vec<_>>());

    // Every process of the directory: the workers, and the parent if it
    // recorded. No shard of a dead process yet.
    let (live, _, others) = shards(dir.path());
    let mut processes: BTreeSet<u32> = workers.0.iter().map(|&p| p as u32).collect();
    if parent_records {
        processes.insert(parent as u32);
    }
    assert_eq!(live, processes, "one live shard per recording process");
    assert!(others.is_empty(), "{others:?}");

    // Live: the parent's read of the directory, and `/metrics` from each
    // worker (a scrape is in flight in its own exposition, and counted
    // in the next).
    expected.check(&encode_dir_text(dir.path()), "the directory, workers live");
    let mut scraped_by = BTreeSet::new();
    let mut scrapes = 0.0;
    while scraped_by.len() < WORKERS {
        assert!(scrapes < 200.0, "only workers {scraped_by:?} answered /metrics in {scrapes} scrapes");
        let (text, pid) = scrape(addr);
        let mut now = expected.clone();
        now.add("/metrics", "GET", 200, scrapes);
        now.in_flight.insert("/metrics".into(), 1.0);
        now.check(&text, &format!("/metrics from worker {pid}, workers live"));
        if scrapes == 0.0 {
            check_with_oracles(addr, &text);
            scrapes += 1.0;
        }
        scraped_by.insert(pid);
        scrapes += 1.0;
    }
    expected.add("/metrics", "GET", 200, scrapes);
    expected.check(&encode_dir_text(dir.path()), "the directory after the scrapes");

    // One worker dies; the other's `/metrics` folds its shard into the
    // archive and keeps its counts, and only the requests the survivor
    // holds are still in flight.
    workers.assert_alive();
    let (other, holder) = (workers.0[0], workers.0[1]);
    workers.kill(other);
    expected.in_flight.clear();
    for hold in in_flight.iter().filter(|h| h.worker == holder) {
        *expected.in_flight.entry(hold.handler.to_owned()).or_default() += 1.0;
    }
    let (text, pid) = scrape(addr);
    assert_eq!(pid, holder, "the only worker left answers");
    let mut now = expected.clone();
    now.in_flight.insert("/metrics".into(), 1.0);
    now.check(&text, "/metrics from the surviving worker");
    expected.add("/metrics", "GET", 200, 1.0);
    let (live, archives, others) = shards(dir.path());
    assert!(!live.contains(&(other as u32)) && live.contains(&(holder as u32)), "{live:?}");
    assert_eq!((archives, others.len()), (1, 0), "the dead worker's shard folded into the archive: {others:?}");
    expected.check(&encode_dir_text(dir.path()), "the directory, one worker dead");

    // Then the other, with its requests still in flight: gone from the
    // gauge, never counted.
    workers.kill(holder);
    assert!(workers.0.is_empty());
    for hold in &in_flight {
        let mut rest = Vec::new();
        let closed = (&hold.stream).read_to_end(&mut rest);
        let rest = String::from_utf8_lossy(&rest);
        assert!(closed.is_err() || rest.is_empty(), "{}: an answer from a dead worker: {rest:?}", hold.target);
    }
    expected.in_flight.clear();
    if listener.is_none() {
        assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(), "nobody listens any more");
    }

    for round in ["dead workers' shards", "again"] {
        expected.check(&encode_dir_text(dir.path()), &format!("the directory, workers dead: {round}"));
    }
    if parent_records {
        // The parent's own scrape merges, and compacts what it met.
        for round in ["compacting", "after compaction"] {
            let own = String::from_utf8(promshard::encode(promshard::Format::Prometheus)).unwrap();
            expected.check(&own, &format!("the parent's own scrape, {round}"));
        }
    } else {
        promshard::multiprocess::compact_dir(dir.path());
    }
    let (live, archives, others) = shards(dir.path());
    let parent_only: BTreeSet<u32> = if parent_records { [parent as u32].into() } else { BTreeSet::new() };
    assert_eq!(live, parent_only);
    assert_eq!((archives, others.len()), (1, 0), "dead workers folded into the archive: {others:?}");
    for round in ["compacted", "again"] {
        expected.check(&encode_dir_text(dir.path()), &format!("the directory, compacted: {round}"));
    }

    if let Some(listener) = listener {
        // The run goes on while the parent lives: a replacement worker's
        // counts add to the archive's.
        let replacement = fork_child(|| worker(&listener, parent, WORKERS));
        workers.0.push(replacement);
        warmed_up(&mut expected);
        let (sent, pids) = traffic(addr, 2, KINDS.len(), 50_000);
        expected.merge(&sent);
        assert_eq!(pids, [replacement].into(), "only the replacement serves");
        let (text, pid) = scrape(addr);
        assert_eq!(pid, replacement);
        let mut now = expected.clone();
        now.in_flight.insert("/metrics".into(), 1.0);
        now.check(&text, "/metrics from the replacement");
        expected.add("/metrics", "GET", 200, 1.0);
        expected.check(&encode_dir_text(dir.path()), "the directory with the replacement");
        workers.kill(replacement);
        let own = String::from_utf8(promshard::encode(promshard::Format::Prometheus)).unwrap();
        expected.check(&own, "the parent's own scrape, the replacement dead");
        let (live, archives, others) = shards(dir.path());
        assert_eq!(live, parent_only);
        assert_eq!((archives, others.len()), (1, 0), "{others:?}");
        expected.check(&encode_dir_text(dir.path()), "the directory, the replacement compacted");
    }
    println!("scenario done in {:?}", started.elapsed());
}

#[test]
fn two_workers_behind_one_listener_merge_exactly() {
    let started = Instant::now();
    isolated("two_workers_behind_one_listener_merge_exactly", SCENARIO_TIMEOUT, || scenario(false));
    println!("in {:?}", started.elapsed());
}

#[test]
fn the_workers_of_a_recording_parent_merge_exactly() {
    let started = Instant::now();
    isolated("the_workers_of_a_recording_parent_merge_exactly", SCENARIO_TIMEOUT, || scenario(true));
    println!("in {:?}", started.elapsed());
}
