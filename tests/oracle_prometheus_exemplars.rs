//! A real Prometheus (2.42, `--enable-feature=exemplar-storage`) scrapes
//! our `/metrics` on loopback and returns our exemplars from
//! `/api/v1/query_exemplars`: once scraping OpenMetrics text (what it asks
//! for by default), once scraping protobuf (what it asks for first with
//! `native-histograms` on too).

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use promshard::{Counter, Histogram, metric};
use serde_json::Value;
use support::prometheus_server::{PrometheusServer, percent_encoded};

/// Checkouts, by shop.
#[metric(labels(shop = ["north", "south"]), exemplars)]
static ORACLE_EX_CHECKOUTS_TOTAL: Counter;

/// Checkout time.
#[metric(unit = "seconds", buckets = [0.1, 1.0], exemplars)]
static ORACLE_EX_CHECKOUT_SECONDS: Histogram;

/// Every exemplar Prometheus holds for `query`, as
/// `(series labels, exemplar labels, value, timestamp)`.
fn exemplars(server: &PrometheusServer, query: &str) -> Vec<(Value, Value, f64, f64)> {
    let path = format!("/api/v1/query_exemplars?query={}&start=0&end=9999999999", percent_encoded(query));
    let Some(body) = server.get(&path) else { return Vec::new() };
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
    let flag = format!("--enable-feature={features}");
    let server = PrometheusServer::start(binary, &format!("ex-{features}"), "promshard", &[target], &[&flag]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut counter = Vec::new();
    let mut buckets = Vec::new();
    while counter.is_empty() || buckets.len() < 2 {
        assert!(Instant::now() < deadline, "{features}: no exemplars stored: {counter:?} {buckets:?}");
        std::thread::sleep(Duration::from_millis(300));
        counter = exemplars(&server, "oracle_ex_checkouts_total");
        buckets = exemplars(&server, "oracle_ex_checkout_seconds_bucket");
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
