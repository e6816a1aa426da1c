//! The pre-fork example judged by a real Prometheus server (Debian's
//! `prometheus` package) on loopback, scraping every second, with the
//! recording and alerting rules of `deploy/` loaded:
//!
//! - one pool under a known request rate, with worker churn: `rate()` is
//!   the rate the client drove (within 10%), no counter ever resets in
//!   Prometheus' eyes, `up` is 1, the latency quantiles are finite, every
//!   live process has its own `process_*` series, every rule evaluates
//!   without error and every expression of the Grafana dashboard returns
//!   data;
//! - two pools on two ports, each with its own directory, as two targets:
//!   `sum by (handler)` over both is the total of what their clients saw
//!   answered. Beyond one host the path is the same: more targets, and
//!   Prometheus' own federation or remote-write.
//! - through a recording proxy: Prometheus asks for gzip, the pool
//!   answers with it, and Prometheus reads what it got (Python's `gzip`
//!   and strict OpenMetrics parser read the same bytes).
//!
//! Without a `prometheus` binary the tests print SKIPPED, or fail under
//! `PROMSHARD_ORACLES=require`.

mod harness;
mod prefork;
mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prefork::{Pool, Prometheus, deploy_dir, get, serial, unix_now};

/// The request a client sends `n`-th, and its handler label.
fn request(n: u64) -> (&'static str, String) {
    match n % 20 {
        0 | 10 => ("/", "/".to_owned()),
        5 => ("/error", "/error".to_owned()),
        15 => ("/slow", "/slow?ms=120".to_owned()),
        _ => ("/users/{id}", format!("/users/{n}")),
    }
}

/// Answers seen by a client: completion time and handler of each.
type Answers = Mutex<Vec<(f64, &'static str)>>;

/// Sends `per_second` requests a second from each of `threads` threads
/// for `duration`, each at its own fixed schedule (a late request is sent
/// at once, so the average rate holds); every request must be answered.
fn paced(addr: SocketAddr, threads: u64, per_second: f64, duration: Duration) -> Vec<(f64, &'static str)> {
    let answers: Answers = Mutex::new(Vec::new());
    let start = Instant::now();
    std::thread::scope(|s| {
        for id in 0..threads {
            let answers = &answers;
            s.spawn(move || {
                // Threads start out of phase, so requests spread evenly.
                let offset = Duration::from_secs_f64(id as f64 / (threads as f64 * per_second));
                for k in 0u64.. {
                    let due = start + offset + Duration::from_secs_f64(k as f64 / per_second);
                    if due > start + duration {
                        break;
                    }
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    let (handler, target) = request(id * 1_000_000 + k);
                    let response = get(addr, &target).unwrap_or_else(|| panic!("no answer to {target}"));
                    assert!([200, 500].contains(&response.status), "{target}: {}", response.status);
                    answers.lock().unwrap().push((unix_now(), handler));
                }
            });
        }
    });
    answers.into_inner().unwrap()
}

/// Waits until Prometheus has scraped every target of job `prefork` at
/// or after `time` (so it holds every request answered before then).
fn scraped_since(prometheus: &Prometheus, time: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let last = prometheus.query("min(timestamp(up{job=\"prefork\"}))", None);
        if last.first().is_some_and(|s| prefork::sample_value(s) >= time) {
            return;
        }
        assert!(Instant::now() < deadline, "Prometheus stopped scraping:\n{}", prometheus.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `(label values…) → value` of an instant query's result.
fn by_labels(result: &[serde_json::Value], labels: &[&str]) -> BTreeMap<Vec<String>, f64> {
    result
        .iter()
        .map(|series| {
            let key = labels.iter().map(|l| series["metric"][l].as_str().unwrap_or("").to_owned()).collect();
            (key, prefork::sample_value(series))
        })
        .collect()
}

#[test]
fn prometheus_sees_the_rate_the_client_drove() {
    let Some(binary) = support::prometheus() else {
        support::skip_or_fail(support::PROMETHEUS_MISSING);
        return;
    };
    let _serial = serial();
    let pool = Pool::start(&["--workers", "4", "--threads", "4", "--max-requests", "100"]);
    let rules = [deploy_dir().join("rules.yml"), deploy_dir().join("alerts.yml")];
    let prometheus = Prometheus::start(&binary, &[pool.addr], &rules);
    let deadline = Instant::now() + Duration::from_secs(20);
    while prometheus.query("up{job=\"prefork\"} == 1", None).is_empty() {
        assert!(Instant::now() < deadline, "Prometheus never scraped the pool:\n{}", prometheus.log());
        std::thread::sleep(Duration::from_millis(100));
    }

    // 40 requests a second for 14 s; workers retire every 100 requests.
    const LOAD: f64 = 14.0;
    const RATE: f64 = 40.0;
    let started = unix_now();
    let answers = paced(pool.addr, 4, RATE / 4.0, Duration::from_secs_f64(LOAD));
    let ended = unix_now();
    scraped_since(&prometheus, ended);

    // An 8 s window well inside the load, after its first seconds.
    let at = started + 12.0;
    let client_rate = answers.iter().filter(|(t, _)| (at - 8.0..at).contains(t)).count() as f64 / 8.0;
    let rate = prometheus.value("sum(rate(http_requests_total{job=\"prefork\"}[8s]))", Some(at));
    eprintln!(
        "{} requests in {:.1} s; over [{:.1}, {:.1}] the client saw {client_rate}/s, Prometheus {rate}/s",
        answers.len(),
        ended - started,
        at - 8.0,
        at
    );
    assert!((rate - client_rate).abs() <= 0.1 * client_rate, "rate() {rate}/s, client {client_rate}/s");
    assert!((client_rate - RATE).abs() <= 0.2 * RATE, "the client could not hold {RATE}/s: {client_rate}/s");
    assert_eq!(prometheus.value("up{job=\"prefork\"}", Some(at)), 1.0);
    for q in ["0.5", "0.95", "0.99"] {
        let expr = format!(
            "histogram_quantile({q}, sum by (le) (rate(http_request_duration_seconds_bucket{{job=\"prefork\"}}[8s])))"
        );
        let value = prometheus.value(&expr, Some(at));
        assert!(value.is_finite() && value > 0.0, "{expr} = {value}");
    }

    // Workers were retired and replaced throughout, yet Prometheus saw no
    // counter go down: no reset, so no invented traffic.
    let whole = format!("[{}s]", (ended - started).ceil() as u64 + 2);
    let retired = prometheus.value("sum(prefork_worker_exits_total{job=\"prefork\",how=\"retired\"})", None);
    assert!(retired >= 3.0, "only {retired} workers retired");
    for counter in
        ["http_requests_total", "http_request_duration_seconds_count", "http_request_duration_seconds_bucket"]
    {
        let expr = format!("sum(resets({counter}{{job=\"prefork\"}}{whole}))");
        assert_eq!(prometheus.value(&expr, Some(ended)), 0.0, "{expr}");
    }
    // Every answer counted, and nothing else.
    let total = prometheus.value("sum(http_requests_total{job=\"prefork\"})", None);
    assert_eq!(total, answers.len() as f64);

    // One series per live process, under its pid: the workers of the
    // moment and the master. Scrapes count as requests, so a worker may
    // retire meanwhile: compared when the pool did not change around the
    // scrape.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let before = pool.workers();
        scraped_since(&prometheus, unix_now());
        let result = prometheus.query("process_resident_memory_bytes{job=\"prefork\"}", None);
        if pool.workers() == before {
            let mut processes: Vec<String> = before.iter().chain([&pool.master]).map(u32::to_string).collect();
            processes.sort();
            let pids: Vec<String> = by_labels(&result, &["pid"]).into_keys().map(|k| k[0].clone()).collect();
            assert_eq!(pids, processes, "{result:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the pool never held still");
    }

    // Every rule of deploy/ evaluates, and the recorded series exist.
    let groups = prometheus.api("rules", &[]);
    let rules: Vec<&serde_json::Value> =
        groups["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()).collect();
    assert_eq!(rules.len(), 11, "{groups}");
    for rule in rules {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    for record in [
        "job:http_requests:rate1m",
        "job:http_requests_errors:ratio_rate1m",
        "job:http_request_duration_seconds:p50",
        "job:http_request_duration_seconds:p95",
        "job:http_request_duration_seconds:p99",
    ] {
        let value = prometheus.value(&format!("{record}{{job=\"prefork\"}}"), None);
        assert!(value.is_finite() && value > 0.0, "{record} = {value}");
    }

    // Every expression of the dashboard, as Grafana would ask for it.
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy_dir().join("grafana/prefork.json")).unwrap()).unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap().replace("$job", "prefork").replace("$__rate_interval", "4s");
            let params = [
                ("query", expr.clone()),
                ("start", format!("{started:.3}")),
                ("end", format!("{ended:.3}")),
                ("step", "1".to_owned()),
            ];
            let data = prometheus.api("query_range", &params);
            let series = data["result"].as_array().unwrap();
            assert!(!series.is_empty(), "panel {:?}: {expr} returned nothing", panel["title"]);
            checked += 1;
        }
    }
    assert_eq!(checked, 12);

    drop(prometheus);
    let stopped = pool.stop();
    assert!(stopped.status.success(), "{}\n{}", stopped.status, stopped.stderr);
}

#[test]
fn two_pools_are_two_targets_of_one_prometheus() {
    let Some(binary) = support::prometheus() else {
        support::skip_or_fail(support::PROMETHEUS_MISSING);
        return;
    };
    let _serial = serial();
    let pools =
        [Pool::start(&["--workers", "3", "--threads", "2"]), Pool::start(&["--workers", "2", "--threads", "2"])];
    assert_ne!(pools[0].dir, pools[1].dir);
    let prometheus = Prometheus::start(&binary, &[pools[0].addr, pools[1].addr], &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while prometheus.query("up{job=\"prefork\"} == 1", None).len() < 2 {
        assert!(Instant::now() < deadline, "Prometheus never scraped both pools:\n{}", prometheus.log());
        std::thread::sleep(Duration::from_millis(100));
    }

    // Each pool gets its own traffic, in different amounts.
    let answers: Vec<Vec<(f64, &'static str)>> = std::thread::scope(|s| {
        let loads: Vec<_> = pools
            .iter()
            .zip([30.0, 12.0])
            .map(|(pool, rate)| s.spawn(move || paced(pool.addr, 2, rate, Duration::from_secs(3))))
            .collect();
        loads.into_iter().map(|l| l.join().unwrap()).collect()
    });
    scraped_since(&prometheus, unix_now());

    let tally = |answers: &[(f64, &'static str)]| {
        let mut by_handler: BTreeMap<Vec<String>, f64> = BTreeMap::new();
        for (_, handler) in answers {
            *by_handler.entry(vec![(*handler).to_owned()]).or_default() += 1.0;
        }
        by_handler
    };
    let nonzero = |map: BTreeMap<Vec<String>, f64>| map.into_iter().filter(|(_, v)| *v != 0.0).collect();
    let mut total = tally(&answers[0]);
    for (handler, count) in tally(&answers[1]) {
        *total.entry(handler).or_default() += count;
    }
    let both = prometheus.query("sum by (handler) (http_requests_total{job=\"prefork\"})", None);
    let both: BTreeMap<Vec<String>, f64> = nonzero(by_labels(&both, &["handler"]));
    eprintln!("pools answered {} and {} requests; Prometheus by handler: {both:?}", answers[0].len(), answers[1].len());
    assert_eq!(both, total);
    // Each target on its own is its own pool's count, and its own processes.
    for (pool, answers) in pools.iter().zip(&answers) {
        let instance = pool.addr.to_string();
        let expr = format!("sum by (handler) (http_requests_total{{job=\"prefork\",instance=\"{instance}\"}})");
        let own: BTreeMap<Vec<String>, f64> = nonzero(by_labels(&prometheus.query(&expr, None), &["handler"]));
        assert_eq!(own, tally(answers), "{instance}");
        let expr = format!("count(process_start_time_seconds{{job=\"prefork\",instance=\"{instance}\"}})");
        assert_eq!(prometheus.value(&expr, None), pool.workers().len() as f64 + 1.0, "{instance}");
    }

    drop(prometheus);
    for pool in pools {
        let stopped = pool.stop();
        assert!(stopped.status.success(), "{}\n{}", stopped.status, stopped.stderr);
    }
}

/// One exchange a [`Recorder`] relayed: the request's head, and the
/// response's head and body as they went over the wire.
struct Exchange {
    request: String,
    response_head: String,
    response_body: Vec<u8>,
}

/// A TCP proxy on loopback in front of one upstream, keeping every
/// exchange it relays (one per connection: the pool closes each after
/// its response). Stopped by pid-free means: a flag and a connection of
/// its own to wake the acceptor.
struct Recorder {
    addr: SocketAddr,
    exchanges: Arc<Mutex<Vec<Exchange>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl Recorder {
    fn start(upstream: SocketAddr) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let exchanges = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = std::thread::spawn({
            let (exchanges, stop) = (Arc::clone(&exchanges), Arc::clone(&stop));
            move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(client) = client else { continue };
                    let exchanges = Arc::clone(&exchanges);
                    std::thread::spawn(move || {
                        if let Some(exchange) = relay(client, upstream) {
                            exchanges.lock().unwrap().push(exchange);
                        }
                    });
                }
            }
        });
        Recorder { addr, exchanges, stop, acceptor: Some(acceptor) }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Relays one connection: the client's bytes up, the upstream's down
/// until it closes, then closes the client's side.
fn relay(mut client: TcpStream, upstream: SocketAddr) -> Option<Exchange> {
    let mut server = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)).ok()?;
    for stream in [&client, &server] {
        stream.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    }
    let (mut client_reader, mut server_writer) = (client.try_clone().ok()?, server.try_clone().ok()?);
    let up = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut chunk = [0u8; 8192];
        while let Ok(n @ 1..) = client_reader.read(&mut chunk) {
            seen.extend_from_slice(&chunk[..n]);
            if server_writer.write_all(&chunk[..n]).is_err() {
                break;
            }
        }
        seen
    });
    // Until the upstream closes, or its response is complete: a server
    // that keeps connections alive (the built-in one) does not close.
    let mut response = Vec::new();
    let mut chunk = [0u8; 8192];
    while let Ok(n @ 1..) = server.read(&mut chunk) {
        response.extend_from_slice(&chunk[..n]);
        let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&response[..end]).into_owned();
        if header_in(&head, "content-length")
            .and_then(|l| l.parse::<usize>().ok())
            .is_some_and(|l| response.len() >= end + 4 + l)
        {
            break;
        }
    }
    let _ = client.write_all(&response);
    let _ = client.shutdown(Shutdown::Both);
    let request = up.join().ok()?;
    let request_end = request.windows(4).position(|w| w == b"\r\n\r\n")?;
    let response_end = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some(Exchange {
        request: String::from_utf8_lossy(&request[..request_end]).into_owned(),
        response_head: String::from_utf8_lossy(&response[..response_end]).into_owned(),
        response_body: response[response_end + 4..].to_vec(),
    })
}

/// The value of header `name` in a head (status or request line first).
fn header_in<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[test]
fn prometheus_asks_for_gzip_and_reads_the_pools_gzipped_scrapes() {
    let Some(binary) = support::prometheus() else {
        support::skip_or_fail(support::PROMETHEUS_MISSING);
        return;
    };
    let _serial = serial();
    let pool = Pool::start(&["--workers", "2", "--threads", "2"]);
    for n in 0..5 {
        get(pool.addr, &format!("/users/{n}")).expect("an answer");
    }
    let recorder = Recorder::start(pool.addr);
    let prometheus = Prometheus::start(&binary, &[recorder.addr], &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while recorder.exchanges.lock().unwrap().len() < 3 || prometheus.query("up{job=\"prefork\"} == 1", None).is_empty()
    {
        assert!(Instant::now() < deadline, "Prometheus never scraped through the proxy:\n{}", prometheus.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // Prometheus read the gzipped bodies: the pool's own counts.
    let users = "sum(http_requests_total{job=\"prefork\",handler=\"/users/{id}\",status=\"200\"})";
    assert_eq!(prometheus.value(users, None), 5.0);
    assert_eq!(prometheus.value("sum(prefork_workers{job=\"prefork\"})", None), 2.0);

    let exchanges = std::mem::take(&mut *recorder.exchanges.lock().unwrap());
    for exchange in &exchanges {
        let (request, response) = (&exchange.request, &exchange.response_head);
        assert!(request.starts_with("GET /metrics "), "{request}");
        let accept_encoding = header_in(request, "accept-encoding").unwrap_or_default();
        assert_eq!(accept_encoding, "gzip", "Prometheus' request:\n{request}");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert_eq!(header_in(response, "content-encoding"), Some("gzip"), "the pool's answer:\n{response}");
        let vary = header_in(response, "vary").unwrap_or_default().to_ascii_lowercase();
        assert!(vary.contains("accept-encoding"), "{response}");
        let length: usize = header_in(response, "content-length").unwrap().parse().unwrap();
        assert_eq!(length, exchange.response_body.len(), "{response}");
    }
    eprintln!("{} scrapes relayed; Prometheus asked with:\n{}", exchanges.len(), exchanges[0].request);

    // The bytes Prometheus received, decoded by Python's gzip and read by
    // the strict OpenMetrics parser (Prometheus 2.42 asks for OpenMetrics).
    match support::python_with_prometheus_client() {
        None => support::skip_or_fail(support::PYTHON_MISSING),
        Some(python) => {
            let exchange = &exchanges[0];
            assert!(
                header_in(&exchange.response_head, "content-type").unwrap().starts_with("application/openmetrics-text")
            );
            let script = "import gzip, sys\n\
                from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
                text = gzip.decompress(sys.stdin.buffer.read()).decode('utf-8')\n\
                print(sum(len(f.samples) for f in parse(text)))\n";
            let output =
                support::run_with_stdin_bytes(&python, &["-c".as_ref(), script.as_ref()], &exchange.response_body);
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            let samples: usize = String::from_utf8(output.stdout).unwrap().trim().parse().unwrap();
            assert!(samples > 50, "{samples} samples");
        }
    }
    drop(prometheus);
    drop(recorder);
    let stopped = pool.stop();
    assert!(stopped.status.success(), "{}\n{}", stopped.status, stopped.stderr);
}

// ---------------------------------------------------------------------
// Protobuf: Prometheus 2.42 with native histograms on asks for it first.
// ---------------------------------------------------------------------

#[derive(Clone, Copy, promshard::LabelValue)]
enum Phase {
    Starting,
    Serving,
}

/// Jobs done, recorded in this test process (memory mode).
#[promshard::metric(labels(phase: Phase, code = ["200", "500"]))]
static PBX_JOBS_TOTAL: promshard::Counter;

/// Job latency, in memory mode.
#[promshard::metric(unit = "seconds", buckets = [0.005, 0.1, 1.0, 100000.0, 1e6])]
static PBX_LATENCY_SECONDS: promshard::Histogram;

/// A gauge below zero.
#[promshard::metric]
static PBX_BALANCE: promshard::Gauge;

/// Build information.
#[promshard::metric]
static PBX_BUILD_INFO: promshard::Info;

/// The phase, as a state set.
#[promshard::metric]
static PBX_PHASE: promshard::Enum<Phase>;

/// Python workers of the pool's directory: each records and exits, so
/// that its `.db` files are a dead process's.
const PY_POOL_WORKERS: &str = r#"
import os
from prometheus_client import Counter, Gauge, Histogram, Summary
jobs = Counter('pyx_jobs', 'Python jobs.', ['kind'])
queued = Gauge('pyx_queued_items', 'Items queued.', multiprocess_mode='sum')
latency = Histogram('pyx_latency_seconds', 'Python latency.', buckets=[0.01, 0.5, 1e6])
size = Summary('pyx_payload_bytes', 'Payload sizes.')
for worker in range(3):
    pid = os.fork()
    if pid == 0:
        jobs.labels('a' if worker else 'b').inc(worker + 0.5)
        queued.inc(worker + 1)
        for x in [0.001, 0.2, 3.0][: worker + 1]:
            latency.observe(x)
        size.observe(100 * (worker + 1))
        os._exit(0)
    os.waitpid(pid, 0)
"#;

/// Samples by (name, sorted labels).
type Keyed = BTreeMap<(String, Vec<(String, String)>), f64>;

/// Every sample of `text` but those named with one of `skip`'s prefixes
/// or labelled `/metrics`, by (name, sorted labels).
fn text_samples(text: &str, skip: &[&str]) -> Keyed {
    harness::parse_samples(text)
        .into_iter()
        .filter(|s| !skip.iter().any(|p| s.name.starts_with(p)) && !s.labels.iter().any(|(_, v)| v == "/metrics"))
        .map(|s| {
            let mut labels = s.labels;
            labels.sort();
            ((s.name, labels), s.value)
        })
        .collect()
}

/// What Prometheus holds now for `instance`, as [`text_samples`] keys it.
fn stored(prometheus: &Prometheus, instance: SocketAddr, skip: &[&str]) -> Keyed {
    let mut out = BTreeMap::new();
    for series in prometheus.query(&format!("{{instance=\"{instance}\"}}"), None) {
        let metric = series["metric"].as_object().unwrap();
        let name = metric["__name__"].as_str().unwrap().to_owned();
        if ["up", "scrape_"].iter().chain(skip).any(|p| name.starts_with(p)) {
            continue;
        }
        let mut labels: Vec<(String, String)> = metric
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "__name__" | "job" | "instance"))
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        if labels.iter().any(|(_, v)| v == "/metrics") {
            continue;
        }
        labels.sort();
        out.insert((name, labels), prefork::sample_value(&series));
    }
    out
}

/// What differs between the text's samples and what Prometheus stored,
/// or `None`.
fn stored_differently(what: &str, text: &Keyed, prom: &Keyed) -> Option<String> {
    let same = |a: f64, b: f64| a == b || (a.is_nan() && b.is_nan());
    let differ: Vec<_> = text.iter().filter(|(k, v)| !prom.get(*k).is_some_and(|p| same(**v, *p))).collect();
    let extra: Vec<_> = prom.keys().filter(|k| !text.contains_key(*k)).collect();
    (!differ.is_empty() || !extra.is_empty()).then(|| {
        format!(
            "{what}: text and Prometheus differ\n--- in text, not so in Prometheus ---\n{differ:#?}\n\
             --- only in Prometheus ---\n{extra:#?}"
        )
    })
}

#[test]
fn prometheus_reads_protobuf_from_memory_mode_and_a_pool_with_dead_workers_and_python_files() {
    let Some(binary) = support::prometheus() else {
        support::skip_or_fail(support::PROMETHEUS_MISSING);
        return;
    };
    let Some(python) = support::python_with_prometheus_client() else {
        support::skip_or_fail(support::PYTHON_MISSING);
        return;
    };
    let _serial = serial();
    // Memory mode: this process, through the built-in endpoint.
    PBX_JOBS_TOTAL.with((Phase::Serving, "200")).inc_by(41);
    PBX_JOBS_TOTAL.with((Phase::Starting, "500")).inc();
    for v in [0.001, 0.05, 0.05, 0.7, 5.0, 2e6] {
        PBX_LATENCY_SECONDS.observe(v);
    }
    PBX_BALANCE.set(-12.25);
    PBX_BUILD_INFO.set(&[("version", "1.2.3"), ("commit", "say \"hi\"")]);
    PBX_PHASE.set(Phase::Serving);
    let endpoint = promshard::serve("127.0.0.1:0").unwrap();

    // A pool whose workers retire after a few requests (their shards are
    // a dead worker's, then the archive's), and Python files of dead
    // Python workers in its directory.
    let pool = Pool::start(&["--workers", "2", "--threads", "1", "--max-requests", "8"]);
    for n in 0..60 {
        let target = if n % 10 == 3 { "/error".to_owned() } else { format!("/users/{n}") };
        get(pool.addr, &target).expect("an answer");
    }
    let status = std::process::Command::new(&python)
        .args(["-c", PY_POOL_WORKERS])
        .env("PROMETHEUS_MULTIPROC_DIR", &pool.dir)
        .status()
        .unwrap();
    assert!(status.success());
    // Workers retire as they pass their requests: wait until their number
    // holds still and every retired one is counted.
    let deadline = Instant::now() + Duration::from_secs(30);
    while prefork::scrape(pool.addr).is_none_or(|s| s.sum("prefork_worker_exits_total") < 4.0) {
        assert!(Instant::now() < deadline, "workers did not retire:\n{}", pool.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }

    let (memory, pooled) = (Recorder::start(endpoint.local_addr()), Recorder::start(pool.addr));
    let prometheus =
        Prometheus::start_with(&binary, &[memory.addr, pooled.addr], &[], &["--enable-feature=native-histograms"]);
    let scrapes = |r: &Recorder| r.exchanges.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while scrapes(&memory) < 2 || scrapes(&pooled) < 2 || prometheus.query("up{job=\"prefork\"} == 1", None).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped both targets:\n{}\n{}",
            prometheus.api("targets", &[]),
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The texts to compare with, then two more scrapes of each after them.
    let skip = ["process_", "promshard_"];
    let memory_text =
        text_samples(&String::from_utf8(promshard::encode(promshard::Format::Prometheus)).unwrap(), &skip);
    let pool_text = text_samples(&prefork::scrape(pool.addr).unwrap().text, &skip);
    let (seen_memory, seen_pool) = (scrapes(&memory), scrapes(&pooled));
    while scrapes(&memory) < seen_memory + 2 || scrapes(&pooled) < seen_pool + 2 {
        assert!(Instant::now() < deadline + Duration::from_secs(30), "scrapes stopped:\n{}", prometheus.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));

    // It was protobuf, asked for and answered, gzipped.
    for recorder in [&memory, &pooled] {
        for exchange in recorder.exchanges.lock().unwrap().iter() {
            let accept = header_in(&exchange.request, "accept").unwrap_or_default();
            assert!(
                accept.starts_with(
                    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"
                ),
                "Prometheus' request:\n{}",
                exchange.request
            );
            let content_type = header_in(&exchange.response_head, "content-type").unwrap_or_default();
            assert!(
                content_type.starts_with(
                    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
                ),
                "the answer:\n{}",
                exchange.response_head
            );
            assert_eq!(header_in(&exchange.response_head, "content-encoding"), Some("gzip"));
        }
    }

    // Prometheus stored exactly what the text shows.
    assert!(memory_text.len() >= 16 && memory_text.keys().any(|(n, _)| n == "pbx_phase"), "{memory_text:?}");
    for family in [
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "pyx_jobs_total",
        "pyx_payload_bytes_count",
        "pyx_latency_seconds_bucket",
        "prefork_worker_exits_total",
    ] {
        assert!(pool_text.keys().any(|(n, _)| n == family), "{family} missing from the pool's text");
    }
    // Asked again while a scrape failed (a 1 s timeout on a loaded
    // machine marks the series stale): the last good scrape decides. The
    // pool's own text is taken again each time: Prometheus' scrapes are
    // requests too, so its workers go on retiring (and a retired worker's
    // float sums may grow by an ulp as the archive folds them in).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut pool_text = pool_text;
    loop {
        let up = prometheus.query("up{job=\"prefork\"} == 1", None).len() == 2;
        let memory_stored = stored(&prometheus, memory.addr, &skip);
        let pool_stored = stored(&prometheus, pooled.addr, &skip);
        let differences = [
            stored_differently("memory mode", &memory_text, &memory_stored),
            stored_differently("the pool", &pool_text, &pool_stored),
        ];
        if up && differences.iter().all(Option::is_none) {
            break;
        }
        let why = differences.into_iter().flatten().collect::<Vec<_>>().join("\n");
        assert!(Instant::now() < deadline, "up for both: {up}\n{why}\n{}", prometheus.log());
        std::thread::sleep(Duration::from_millis(500));
        pool_text = text_samples(&prefork::scrape(pool.addr).unwrap().text, &skip);
    }
    // Histograms are classic ones Prometheus can take quantiles of.
    for (expr, instance) in [
        ("pbx_latency_seconds_bucket", memory.addr),
        ("http_request_duration_seconds_bucket{handler=\"/users/{id}\"}", pooled.addr),
        ("pyx_latency_seconds_bucket", pooled.addr),
    ] {
        let selector = expr
            .strip_suffix('}')
            .map_or(format!("{expr}{{instance=\"{instance}\"}}"), |open| format!("{open},instance=\"{instance}\"}}"));
        let q = prometheus.value(&format!("histogram_quantile(0.5, sum by (le) ({selector}))"), None);
        assert!(q.is_finite() && q > 0.0, "{selector}: {q}");
    }
    // Every live process of the pool has its own process metrics.
    let live = prometheus.query(&format!("process_start_time_seconds{{instance=\"{}\"}}", pooled.addr), None);
    assert!(live.len() >= 3, "master and two workers: {live:?}");
    eprintln!(
        "protobuf: {} + {} samples stored as the text shows, from {} + {} scrapes",
        memory_text.len(),
        pool_text.len(),
        scrapes(&memory),
        scrapes(&pooled)
    );
    drop(prometheus);
    drop((memory, pooled));
    endpoint.shutdown();
    let stopped = pool.stop();
    assert!(stopped.status.success(), "{}\n{}", stopped.status, stopped.stderr);
}
