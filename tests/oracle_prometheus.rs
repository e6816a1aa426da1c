//! A real Prometheus server scrapes our `/metrics` on loopback and stores
//! exactly what we recorded: the format it negotiates (OpenMetrics), every
//! instrument type, and the values, read back through its query API.

mod support;

use std::time::{Duration, Instant};

use promshard::{Counter, Enum, Gauge, Histogram, Info, LabelValue, metric};
use support::prometheus_server::PrometheusServer;

#[derive(Clone, Copy, LabelValue)]
enum Method {
    Get,
    Post,
}

/// Requests served.
#[metric(labels(method: Method, code = ["200", "500"]))]
static ORACLE_REQUESTS_TOTAL: Counter;

/// Request latency.
#[metric(unit = "seconds", buckets = [0.1, 1.0])]
static ORACLE_LATENCY_SECONDS: Histogram;

/// Items queued.
#[metric]
static ORACLE_QUEUE: Gauge;

/// Build information.
#[metric]
static ORACLE_BUILD_INFO: Info;

/// Serving phase.
#[metric]
static ORACLE_PHASE: Enum<Method>;

#[test]
fn a_prometheus_server_scrapes_what_we_recorded() {
    let Some(binary) = support::prometheus() else {
        support::skip_or_fail(support::PROMETHEUS_MISSING);
        return;
    };
    ORACLE_REQUESTS_TOTAL.with((Method::Get, "200")).inc_by(3);
    ORACLE_REQUESTS_TOTAL.with((Method::Post, "500")).inc();
    ORACLE_LATENCY_SECONDS.observe(0.05);
    ORACLE_LATENCY_SECONDS.observe(0.5);
    ORACLE_QUEUE.set(-2.5);
    ORACLE_BUILD_INFO.set(&[("version", "1.2.3")]);
    ORACLE_PHASE.set(Method::Post);
    let endpoint = promshard::serve("127.0.0.1:0").unwrap();

    let server = PrometheusServer::start(&binary, "oracle", "promshard", &[endpoint.local_addr()], &[]);

    // The first scrape happens within a scrape interval of the start.
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.query_one("up{job=\"promshard\"}").as_deref() != Some("1") {
        assert!(Instant::now() < deadline, "Prometheus never scraped us successfully");
        std::thread::sleep(Duration::from_millis(200));
    }
    let expect = [
        ("oracle_requests_total{method=\"get\",code=\"200\"}", "3"),
        ("oracle_requests_total{method=\"post\",code=\"500\"}", "1"),
        ("oracle_requests_total{method=\"post\",code=\"200\"}", "0"),
        ("oracle_latency_seconds_count", "2"),
        ("oracle_latency_seconds_bucket{le=\"0.1\"}", "1"),
        ("oracle_latency_seconds_sum", "0.55"),
        ("oracle_queue", "-2.5"),
        ("oracle_build_info{version=\"1.2.3\"}", "1"),
        ("oracle_phase{oracle_phase=\"post\"}", "1"),
        ("oracle_phase{oracle_phase=\"get\"}", "0"),
    ];
    for (series, value) in expect {
        assert_eq!(server.query_one(series).as_deref(), Some(value), "{series}");
    }
    // Prometheus asks for OpenMetrics first; metadata tells what it parsed.
    let metadata = server.get("/api/v1/metadata?metric=oracle_phase").expect("the metadata answer");
    assert_eq!(metadata["data"]["oracle_phase"][0]["type"], "stateset", "scraped as OpenMetrics: {metadata}");

    drop(server);
    endpoint.shutdown();
}
