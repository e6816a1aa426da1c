//! A real Prometheus (2.42, `--enable-feature=exemplar-storage`) scrapes
//! our `/metrics` on loopback and returns our exemplars from
//! `/api/v1/query_exemplars`: once scraping OpenMetrics text (what it asks
//! for by default), once scraping protobuf (what it asks for first with
//! `native-histograms` on too).

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use promshard::{Counter, Histogram, metric};
use serde_json::Value;

/// Checkouts, by shop.
#[metric(labels(shop = ["north", "south"]), exemplars)]
static ORACLE_EX_CHECKOUTS_TOTAL: Counter;

/// Checkout time.
#[metric(unit = "seconds", buckets = [0.1, 1.0], exemplars)]
static ORACLE_EX_CHECKOUT_SECONDS: Histogram;

/// Stops the server (by its pid) when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn encode_query(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The JSON body of `GET path` on the server, or `None`.
fn get(port: u16, path: &str) -> Option<Value> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    serde_json::from_str(response.split_once("\r\n\r\n")?.1).ok()
}

/// Every exemplar Prometheus holds for `query`, as
/// `(series labels, exemplar labels, value, timestamp)`.
fn exemplars(port: u16, query: &str) -> Vec<(Value, Value, f64, f64)> {
    let path = format!("/api/v1/query_exemplars?query={}&start=0&end=9999999999", encode_query(query));
    let Some(body) = get(port, &path) else { return Vec::new() };
    let mut out = Vec::new();
    for series in body["data"].as_array().into_iter().flatten() {
        for e in series["exemplars"].as_array().into_iter().flatten() {
            let value: f64 = e["value"].as_str().unwrap().parse().unwrap();
            out.push((series["seriesLabels"].clone(), e["labels"].clone(), value, e["timestamp"].as_f64().unwrap()));
        }
    }
    out
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Starts Prometheus with `features` scraping `target`, waits for its
/// first successful scrape, and checks the exemplars it stored.
fn check_with(binary: &std::path::Path, target: std::net::SocketAddr, features: &str, window: (f64, f64)) {
    let dir = std::env::temp_dir().join(format!("promshard-prometheus-ex-{}-{features}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: promshard\n    \
             static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let server = Server(
        Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--enable-feature={features}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut counter = Vec::new();
    let mut buckets = Vec::new();
    while counter.is_empty() || buckets.len() < 2 {
        assert!(Instant::now() < deadline, "{features}: no exemplars stored: {counter:?} {buckets:?}");
        std::thread::sleep(Duration::from_millis(300));
        counter = exemplars(port, "oracle_ex_checkouts_total");
        buckets = exemplars(port, "oracle_ex_checkout_seconds_bucket");
    }
    let (series, labels, value, stamp) = &counter[0];
    assert_eq!(counter.len(), 1, "{features}: {counter:?}");
    assert_eq!(series["shop"], "south", "{features}");
    assert_eq!(labels, &serde_json::json!({"trace_id": "b7ad6b7169203331"}), "{features}");
    assert_eq!(*value, 2.0, "{features}");
    // Prometheus keeps milliseconds.
    assert!(*stamp >= window.0 - 0.001 && *stamp <= window.1 + 0.001, "{features}: {stamp} not in {window:?}");
    let mut seen: Vec<(String, String, f64)> = buckets
        .iter()
        .map(|(series, labels, value, _)| {
            (series["le"].as_str().unwrap().to_owned(), labels["trace_id"].as_str().unwrap().to_owned(), *value)
        })
        .collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    let want = vec![("+Inf".to_owned(), "slow1".to_owned(), 4.0), ("0.1".to_owned(), "fast1".to_owned(), 0.02)];
    assert_eq!(seen, want, "{features}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn prometheus_stores_our_exemplars_from_openmetrics_and_protobuf() {
    let Some(binary) = support::prometheus() else {
        support::skip_or_fail(support::PROMETHEUS_MISSING);
        return;
    };
    let before = now();
    ORACLE_EX_CHECKOUTS_TOTAL.with(("north",)).inc();
    ORACLE_EX_CHECKOUTS_TOTAL.with(("south",)).inc_by_with_exemplar(2, &[("trace_id", "b7ad6b7169203331")]);
    ORACLE_EX_CHECKOUT_SECONDS.observe_with_exemplar(0.02, &[("trace_id", "fast1")]);
    ORACLE_EX_CHECKOUT_SECONDS.observe_with_exemplar(4.0, &[("trace_id", "slow1")]);
    let after = now();
    let endpoint = promshard::serve("127.0.0.1:0").unwrap();
    check_with(&binary, endpoint.local_addr(), "exemplar-storage", (before, after));
    check_with(&binary, endpoint.local_addr(), "exemplar-storage,native-histograms", (before, after));
    endpoint.shutdown();
}
