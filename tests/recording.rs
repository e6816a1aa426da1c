//! What users do on the hot path: record from many threads, with labels,
//! through every instrument, and read the values back.

use std::thread;

use promshard::testing::sample_value;
use promshard::{Counter, Enum, Gauge, Histogram, Info, LabelValue, Opts, metric};

#[derive(Clone, Copy, Debug, LabelValue)]
enum Method {
    Get,
    Post,
    Put,
}

#[derive(Clone, Copy, Debug, LabelValue)]
enum Status {
    Ok,
    Error,
}

/// A hand-written impl that breaks the `index < CARDINALITY` contract.
#[derive(Clone, Copy)]
struct OutOfRange;

impl LabelValue for OutOfRange {
    const VALUES: &'static [&'static str] = &["only"];
    fn index(self) -> usize {
        5
    }
}

/// Requests.
#[metric(labels(method: Method, status: Status))]
static REQUESTS_TOTAL: Counter;

/// A gauge moved from many threads.
#[metric]
static BALANCE: Gauge;

/// Most recent.
#[metric(mode = mostrecent)]
static LATEST: Gauge;

/// Sizes.
#[metric(buckets = [1.0, 2.0, 4.0], labels(method: Method))]
static SIZES: Histogram;

/// Fractional.
#[metric(unit = "seconds")]
static PROGRESS_SECONDS_TOTAL: Counter;

/// Contract breaker.
#[metric(labels(x: OutOfRange))]
static STRICT_TOTAL: Counter;

/// An enum.
#[metric]
static PHASE: Enum<Method>;

/// Build.
#[metric]
static BUILD_INFO: Info;

// Declared through the const constructor and deliberately not registered.
static FORGOTTEN: Counter = Counter::new(Opts::new("forgotten_total", "Declared but never registered."));

const THREADS: usize = 8;
const PER_THREAD: u64 = 50_000;

#[test]
fn counters_sum_exactly_across_threads() {
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            thread::spawn(move || {
                let method = [Method::Get, Method::Post, Method::Put][t % 3];
                for i in 0..PER_THREAD {
                    let status = if i % 4 == 0 { Status::Error } else { Status::Ok };
                    REQUESTS_TOTAL.with((method, status)).inc();
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());

    let mut total = 0.0;
    for (m, threads) in [("get", 3.0), ("post", 3.0), ("put", 2.0)] {
        let errors = sample_value("requests_total", &[("method", m), ("status", "error")]).unwrap();
        let ok = sample_value("requests_total", &[("status", "ok"), ("method", m)]).unwrap();
        assert_eq!(errors, threads * (PER_THREAD / 4) as f64, "{m}");
        assert_eq!(ok, threads * (PER_THREAD * 3 / 4) as f64, "{m}");
        total += errors + ok;
    }
    assert_eq!(total, (THREADS as u64 * PER_THREAD) as f64);
}

#[test]
fn float_updates_from_many_threads_lose_nothing() {
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            thread::spawn(move || {
                for _ in 0..PER_THREAD {
                    BALANCE.add(0.5);
                    SIZES.with((Method::Post,)).observe(if t % 2 == 0 { 1.5 } else { 8.0 });
                }
                for _ in 0..PER_THREAD / 2 {
                    BALANCE.sub(0.5);
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());

    let n = (THREADS as u64 * PER_THREAD) as f64;
    assert_eq!(BALANCE.get(), n * 0.25);
    let post = |le| sample_value("sizes_bucket", &[("method", "post"), ("le", le)]).unwrap();
    assert_eq!(post("1.0"), 0.0);
    assert_eq!(post("2.0"), n / 2.0);
    assert_eq!(post("4.0"), n / 2.0);
    assert_eq!(post("+Inf"), n);
    assert_eq!(sample_value("sizes_count", &[("method", "post")]), Some(n));
    assert_eq!(sample_value("sizes_sum", &[("method", "post")]), Some(n / 2.0 * 1.5 + n / 2.0 * 8.0));
    assert_eq!(sample_value("sizes_count", &[("method", "get")]), Some(0.0));
}

#[test]
fn counters_refuse_to_go_down() {
    PROGRESS_SECONDS_TOTAL.inc_by_f64(0.25).unwrap();
    PROGRESS_SECONDS_TOTAL.inc_by(2);
    for bad in [-1.0, f64::NAN, f64::INFINITY] {
        let err = PROGRESS_SECONDS_TOTAL.inc_by_f64(bad).unwrap_err();
        assert!(err.to_string().contains("only increase"), "{err}");
    }
    assert_eq!(sample_value("progress_seconds_total", &[]), Some(2.25));
}

#[test]
fn gauge_operations() {
    LATEST.set(3.0);
    LATEST.inc();
    assert_eq!(LATEST.get(), 4.0);
    LATEST.set_to_current_time();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((LATEST.get() - now).abs() < 60.0);
    {
        let _a = LATEST.track_inprogress();
        let _b = LATEST.track_inprogress();
        assert_eq!(sample_value("latest", &[]), Some(LATEST.get()));
    }
}

#[test]
fn histogram_timer_observes_once() {
    /// Timed.
    #[metric(unit = "seconds")]
    static TIMED_SECONDS: Histogram;
    let elapsed = TIMED_SECONDS.start_timer().observe_duration();
    TIMED_SECONDS.start_timer().stop_and_discard();
    drop(TIMED_SECONDS.start_timer());
    TIMED_SECONDS.observe_duration(std::time::Duration::from_millis(1500));
    assert_eq!(sample_value("timed_seconds_count", &[]), Some(3.0));
    assert!(sample_value("timed_seconds_sum", &[]).unwrap() >= 1.5 + elapsed);
    assert_eq!(sample_value("timed_seconds_bucket", &[("le", "1.0")]), Some(2.0));
}

#[test]
fn out_of_range_label_index_is_discarded_not_exposed() {
    STRICT_TOTAL.with((OutOfRange,)).inc_by(7);
    assert_eq!(sample_value("strict_total", &[("x", "only")]), Some(0.0));
    let text = String::from_utf8(promshard::encode(promshard::Format::Prometheus)).unwrap();
    assert_eq!(text.matches("strict_total{").count(), 1, "{text}");
}

#[test]
fn enum_and_info() {
    assert_eq!(sample_value("phase", &[("phase", "get")]), Some(1.0));
    PHASE.set(Method::Put);
    assert_eq!(sample_value("phase", &[("phase", "get")]), Some(0.0));
    assert_eq!(sample_value("phase", &[("phase", "put")]), Some(1.0));

    assert_eq!(sample_value("build_info", &[]), None, "nothing exposed before set");
    // A control character, a reserved name, and a name that scrapers
    // without UTF-8 support read as an earlier one (`git_sha`): dropped.
    let pairs =
        [("version", "1.2.3"), ("bad\nname", "x"), ("__x", "y"), ("commit", "abc"), ("git.sha", "s"), ("git_sha", "t")];
    BUILD_INFO.set(&pairs);
    let kept = [("version", "1.2.3"), ("commit", "abc"), ("git.sha", "s")];
    assert_eq!(sample_value("build_info", &kept), Some(1.0));
}

#[test]
fn unregistered_metric_still_records_and_is_exposed() {
    FORGOTTEN.inc();
    FORGOTTEN.inc();
    assert_eq!(sample_value("forgotten_total", &[]), Some(2.0));
    promshard::check_registry().expect("an unregistered metric is not a registry error");
}

#[test]
fn bounded_labels_keep_first_values_and_count_overflow() {
    /// Hits by route.
    #[metric(labels(route = bounded(2), method: Method))]
    static ROUTE_HITS_TOTAL: Counter;

    // The overflow series exists from the start, at zero, like every
    // fixed combination (and as in multiprocess mode); no other route does.
    assert_eq!(sample_value("route_hits_total", &[("route", "other"), ("method", "get")]), Some(0.0));
    assert_eq!(sample_value("route_hits_total", &[("route", "/a"), ("method", "get")]), None);
    ROUTE_HITS_TOTAL.with(("/a", Method::Get)).inc();
    ROUTE_HITS_TOTAL.with(("/b", Method::Post)).inc_by(2);
    ROUTE_HITS_TOTAL.with(("/a", Method::Get)).inc();
    for route in ["/c", "/d", "/c"] {
        ROUTE_HITS_TOTAL.with((route, Method::Put)).inc();
    }
    let hits = |route, method| sample_value("route_hits_total", &[("route", route), ("method", method)]);
    assert_eq!(hits("/a", "get"), Some(2.0));
    assert_eq!(hits("/b", "post"), Some(2.0));
    assert_eq!(hits("/b", "get"), Some(0.0));
    assert_eq!(hits("other", "put"), Some(3.0));
    assert_eq!(hits("/c", "put"), None);
    let overflow = [("metric", "route_hits"), ("label", "route")];
    assert_eq!(sample_value("promshard_label_overflow_total", &overflow), Some(3.0));

    let text = String::from_utf8(promshard::encode(promshard::Format::Prometheus)).unwrap();
    assert!(text.contains("route_hits_total{route=\"/a\",method=\"get\"} 2\n"), "{text}");
    assert!(text.contains("route_hits_total{route=\"other\",method=\"put\"} 3\n"), "{text}");
}
