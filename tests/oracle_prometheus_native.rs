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

use std::time::{Duration, Instant};

use promshard::{Histogram, Opts};
use support::prometheus_server::PrometheusServer;

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

/// The value of an instant query that returns one sample, or `None`.
fn query(server: &PrometheusServer, query: &str) -> Option<f64> {
    server.query_one(query)?.parse().ok()
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
    let server =
        PrometheusServer::start(binary, "native", "native", &[target], &["--enable-feature=native-histograms"]);

    // Native histograms are stored only from a protobuf scrape: their
    // count being there says the scrape was one.
    let deadline = Instant::now() + Duration::from_secs(60);
    while query(&server, "histogram_count(oracle_native_seconds)").is_none()
        || query(&server, "oracle_classic_seconds_count").is_none()
    {
        assert!(Instant::now() < deadline, "Prometheus never stored the native histogram");
        std::thread::sleep(Duration::from_millis(200));
    }
    let n = values.len() as f64;
    assert_eq!(query(&server, "histogram_count(oracle_native_seconds)"), Some(n));
    assert_eq!(query(&server, "histogram_count(oracle_both_seconds)"), Some(n));
    let sum: f64 = values.iter().sum();
    let native_sum = query(&server, "histogram_sum(oracle_native_seconds)").unwrap();
    assert!((native_sum - sum).abs() <= sum * 1e-12, "{native_sum} vs {sum}");

    // Within one native bucket of the truth: the bucket's width relative
    // to its bound. The classic buckets here are the native ones, so the
    // two estimates must agree more closely: within half of that.
    let error = FACTOR - 1.0;
    for q in [0.1, 0.5, 0.9, 0.99] {
        let native = query(&server, &format!("histogram_quantile({q}, oracle_native_seconds)")).unwrap();
        let both = query(&server, &format!("histogram_quantile({q}, oracle_both_seconds)")).unwrap();
        let classic = query(&server, &format!("histogram_quantile({q}, oracle_classic_seconds_bucket)")).unwrap();
        let truth = values[((q * n).ceil() as usize).clamp(1, values.len()) - 1];
        eprintln!("q{q}: native {native}, classic {classic}, observed {truth}");
        assert!((native - classic).abs() <= error / 2.0 * classic, "q{q}: native {native} vs classic {classic}");
        assert!((native - truth).abs() <= error * truth, "q{q}: native {native} vs observed {truth}");
        assert_eq!(native, both, "q{q}: the same native buckets, with classic ones alongside");
    }
    drop(server);
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
