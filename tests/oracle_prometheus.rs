//! A real Prometheus server scrapes our `/metrics` on loopback and stores
//! exactly what we recorded: the format it negotiates (OpenMetrics), every
//! instrument type, and the values, read back through its query API.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use promshard::{Counter, Enum, Gauge, Histogram, Info, LabelValue, metric};

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

/// The value of an instant query that returns one series, or `None`.
fn query(port: u16, query: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!(
        "GET /api/v1/query?query={} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        encode_query(query)
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let body = response.split_once("\r\n\r\n")?.1;
    // One series: {"metric":{…},"value":[<time>,"<value>"]}
    let value = body.split("\"value\":[").nth(1)?;
    let value = value.split_once(",\"")?.1;
    Some(value.split_once('"')?.0.to_owned())
}

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

    let dir = std::env::temp_dir().join(format!("promshard-prometheus-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: promshard\n    \
             static_configs:\n      - targets: ['{}']\n",
            endpoint.local_addr()
        ),
    )
    .unwrap();
    let port = free_port();
    let server = Server(
        Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // The first scrape happens within a scrape interval of the start.
    let deadline = Instant::now() + Duration::from_secs(30);
    while query(port, "up{job=\"promshard\"}").as_deref() != Some("1") {
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
        assert_eq!(query(port, series).as_deref(), Some(value), "{series}");
    }
    // Prometheus asks for OpenMetrics first; metadata tells what it parsed.
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(stream, "GET /api/v1/metadata?metric=oracle_phase HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut metadata = String::new();
    stream.read_to_string(&mut metadata).unwrap();
    assert!(metadata.contains("\"type\":\"stateset\""), "scraped as OpenMetrics: {metadata}");

    drop(server);
    endpoint.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
