//! A real Prometheus server (2.42, `--enable-feature=native-histograms`)
//! scrapes our `/metrics` over protobuf, where native histograms are
//! exposed, and its `histogram_quantile` over the native series agrees
//! with the classic one over the same observations, and with the true
//! quantile, within one bucket of the native schema: from one process's
//! memory, and from a shard directory whose workers recorded a share of
//! the observations each and exited (their counts merged, then
//! compacted into the archive by the scrape).

mod harness;
mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use promshard::{Histogram, Opts};

/// The bucket growth of schema 3: `2^(1/8)`.
const FACTOR: f64 = 1.0905077326652577;

/// Classic buckets as fine as the native ones, over the values' range.
const CLASSIC_BOUNDS: [f64; 96] = promshard::exponential_buckets(0.0078125, FACTOR);

static NATIVE: Histogram =
    Histogram::new(Opts::new("oracle_native_seconds", "Native only.").unit("seconds").native(3, 160));
promshard::register!(NATIVE);

static CLASSIC: Histogram =
    Histogram::new(Opts::new("oracle_classic_seconds", "Classic only.").unit("seconds").buckets(&CLASSIC_BOUNDS));
promshard::register!(CLASSIC);

static BOTH: Histogram = Histogram::new(
    Opts::new("oracle_both_seconds", "Classic and native.").unit("seconds").buckets(&[0.1, 1.0]).native(3, 160),
);
promshard::register!(BOTH);

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

fn percent_encoded(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of an instant query that returns one sample, or `None`.
fn query(port: u16, query: &str) -> Option<f64> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!(
        "GET /api/v1/query?query={} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        percent_encoded(query)
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let body: serde_json::Value = serde_json::from_str(response.split_once("\r\n\r\n")?.1).ok()?;
    let result = body["data"]["result"].as_array()?;
    let [sample] = &result[..] else { return None };
    sample["value"][1].as_str()?.parse().ok()
}

/// 3000 values, log-uniform between 0.01 and 10, seeded.
fn values() -> Vec<f64> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..3000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let unit = (state >> 11) as f64 / (1u64 << 53) as f64;
            0.01 * 1000f64.powf(unit)
        })
        .collect()
}

fn record(values: &[f64]) {
    for v in values {
        NATIVE.observe(*v);
        CLASSIC.observe(*v);
        BOTH.observe(*v);
    }
}

/// Starts Prometheus on `target`, waits for it to store the native
/// histogram, and compares its quantiles with the classic ones and with
/// those of `values`.
fn check_in_prometheus(binary: &std::path::Path, target: std::net::SocketAddr, mut values: Vec<f64>) {
    values.sort_by(f64::total_cmp);
    let dir = std::env::temp_dir().join(format!("promshard-prometheus-native-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: native\n    \
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
            .arg("--enable-feature=native-histograms")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Native histograms are stored only from a protobuf scrape: their
    // count being there says the scrape was one.
    let deadline = Instant::now() + Duration::from_secs(60);
    while query(port, "histogram_count(oracle_native_seconds)").is_none()
        || query(port, "oracle_classic_seconds_count").is_none()
    {
        assert!(Instant::now() < deadline, "Prometheus never stored the native histogram");
        std::thread::sleep(Duration::from_millis(200));
    }
    let n = values.len() as f64;
    assert_eq!(query(port, "histogram_count(oracle_native_seconds)"), Some(n));
    assert_eq!(query(port, "histogram_count(oracle_both_seconds)"), Some(n));
    let sum: f64 = values.iter().sum();
    let native_sum = query(port, "histogram_sum(oracle_native_seconds)").unwrap();
    assert!((native_sum - sum).abs() <= sum * 1e-12, "{native_sum} vs {sum}");

    // Within one native bucket of the truth: the bucket's width relative
    // to its bound. The classic buckets here are the native ones, so the
    // two estimates must agree more closely: within half of that.
    let error = FACTOR - 1.0;
    for q in [0.1, 0.5, 0.9, 0.99] {
        let native = query(port, &format!("histogram_quantile({q}, oracle_native_seconds)")).unwrap();
        let both = query(port, &format!("histogram_quantile({q}, oracle_both_seconds)")).unwrap();
        let classic = query(port, &format!("histogram_quantile({q}, oracle_classic_seconds_bucket)")).unwrap();
        let truth = values[((q * n).ceil() as usize).clamp(1, values.len()) - 1];
        eprintln!("q{q}: native {native}, classic {classic}, observed {truth}");
        assert!((native - classic).abs() <= error / 2.0 * classic, "q{q}: native {native} vs classic {classic}");
        assert!((native - truth).abs() <= error * truth, "q{q}: native {native} vs observed {truth}");
        assert_eq!(native, both, "q{q}: the same native buckets, with classic ones alongside");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn native_quantiles_agree_with_classic_ones_in_prometheus() {
    if harness::in_any_child() {
        return;
    }
    let Some(binary) = support::prometheus() else {
        support::skip_or_fail(support::PROMETHEUS_MISSING);
        return;
    };
    let values = values();
    record(&values);
    let endpoint = promshard::serve("127.0.0.1:0").unwrap();
    check_in_prometheus(&binary, endpoint.local_addr(), values);
    endpoint.shutdown();
}

#[test]
fn merged_workers_native_quantiles_agree_in_prometheus() {
    let binary = support::prometheus();
    if !harness::in_any_child() && binary.is_none() {
        support::skip_or_fail(support::PROMETHEUS_MISSING);
        return;
    }
    harness::isolated("merged_workers_native_quantiles_agree_in_prometheus", Duration::from_secs(240), || {
        let binary = binary.expect("found by the parent");
        let dir = harness::TempDir::new("native-prometheus");
        promshard::multiprocess::init(dir.path()).unwrap();
        // This process joins the run before its workers come and go (a
        // run ends when its last process does).
        promshard::encode(promshard::Format::Prometheus);
        let values = values();
        // Three workers record a third of the values each and exit.
        for part in values.chunks(1000) {
            let part = part.to_vec();
            let pid = harness::fork_child(move || {
                record(&part);
                0
            });
            assert_eq!(harness::wait_timeout(pid, Duration::from_secs(20)), Some(0));
        }
        let endpoint = promshard::serve("127.0.0.1:0").unwrap();
        check_in_prometheus(&binary, endpoint.local_addr(), values);
        endpoint.shutdown();
        // The scrapes compacted the dead workers into the archive.
        assert_eq!(harness::shard_files(dir.path()).iter().filter(|f| f.starts_with('p')).count(), 1);
    });
}
