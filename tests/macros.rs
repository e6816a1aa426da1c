//! `#[metric]` and `#[derive(LabelValue)]` as users write them: every kind
//! of label, every visibility and place a static can be declared.

// Some label values are never recorded here, only exposed.
#![allow(dead_code)]

use promshard::testing::sample_value;
use promshard::{Counter, Enum, Gauge, Histogram, Info, LabelValue, metric};

mod declarations {
    use promshard::{Counter, Gauge, Histogram, LabelValue, metric};
    include!("expand/declarations.rs");

    #[test]
    fn the_documented_declarations_record() {
        ORDERS_PLACED_TOTAL.with(("physical",)).inc_by(2);
        ORDER_PROCESSING_SECONDS.with((Method::Other,)).observe(0.07);
        IN_FLIGHT_ORDERS.set(3.0);
        ROUTE_HITS_TOTAL.with(("/orders/{id}",)).inc();
        let value = |name, labels: &[(&str, &str)]| super::sample_value(name, labels);
        assert_eq!(value("orders_placed_total", &[("category", "physical")]), Some(2.0));
        assert_eq!(value("orders_placed_total", &[("category", "digital")]), Some(0.0));
        assert_eq!(value("order_processing_seconds_bucket", &[("method", "other"), ("le", "0.1")]), Some(1.0));
        assert_eq!(value("order_processing_seconds_bucket", &[("method", "other"), ("le", "0.05")]), Some(0.0));
        assert_eq!(value("in_flight_orders", &[]), Some(3.0));
        assert_eq!(value("route_hits_total", &[("route", "/orders/{id}")]), Some(1.0));
        assert_eq!(
            IN_FLIGHT_ORDERS.core().descriptor().mode,
            promshard::GaugeMode::LiveSum,
            "mode = livesum reaches the descriptor"
        );
    }
}

#[derive(Clone, Copy, Debug, LabelValue)]
enum Phase {
    Starting,
    Serving,
    ShuttingDown,
}

#[derive(Clone, Copy, LabelValue)]
enum Region {
    #[label(rename = "eu-west-1")]
    EuWest1,
    #[label(rename = "us-east-1")]
    UsEast1,
}

/// Payments by outcome.
///
/// Only this first paragraph is the HELP text.
#[metric(labels(outcome = ["ok", "declined"] else "other"))]
pub static PAYMENTS_TOTAL: Counter;

/// Logins by method.
#[metric(labels(method = ["password", "sso"]))]
pub(crate) static LOGINS_TOTAL: Counter;

/// Server phase, by region.
#[metric(labels(region: Region))]
static SERVER_PHASE: Enum<Phase>;

/// Build information.
#[metric]
static BUILD_INFO: Info;

/// Overridden.
#[metric(name = "cache_fill_ratio", help = "Fill ratio of the cache.")]
static CACHE: Gauge;

/// Shared bucket layout.
const SIZE_BUCKETS: [f64; 3] = [1024.0, 65536.0, 1048576.0];

/// Upload sizes.
#[metric(unit = "bytes", buckets = SIZE_BUCKETS, labels(retried: bool))]
static UPLOAD_SIZE_BYTES: Histogram;

mod nested {
    use promshard::{Counter, metric};

    /// Jobs, declared in a module.
    #[metric]
    pub static NESTED_JOBS_TOTAL: Counter;
}

/// Never compiled in.
#[cfg(any())]
#[metric(labels(x = ["a"]))]
static CONFIGURED_OUT_TOTAL: Counter;

#[test]
fn derive_names_values_in_snake_case_with_renames() {
    assert_eq!(Phase::VALUES, &["starting", "serving", "shutting_down"]);
    assert_eq!(Phase::ShuttingDown.index(), 2);
    assert_eq!(Region::VALUES, &["eu-west-1", "us-east-1"]);
}

#[test]
fn inline_lists_match_fold_or_refuse() {
    PAYMENTS_TOTAL.with(("ok",)).inc();
    PAYMENTS_TOTAL.with(("chargeback",)).inc();
    PAYMENTS_TOTAL.with(("other",)).inc();
    assert_eq!(sample_value("payments_total", &[("outcome", "ok")]), Some(1.0));
    assert_eq!(sample_value("payments_total", &[("outcome", "other")]), Some(2.0));

    LOGINS_TOTAL.with(("sso",)).inc();
    LOGINS_TOTAL.with(("magic-link",)).inc();
    assert_eq!(sample_value("logins_total", &[("method", "sso")]), Some(1.0));
    assert_eq!(sample_value("logins_total", &[("method", "password")]), Some(0.0));
    assert_eq!(sample_value("logins_total", &[("method", "magic-link")]), None);
    assert_eq!(sample_value("promshard_label_refused_total", &[("metric", "logins")]), Some(1.0));
}

#[test]
fn help_comes_from_the_first_doc_paragraph_or_the_argument() {
    let text = String::from_utf8(promshard::encode(promshard::Format::Prometheus)).unwrap();
    assert!(text.contains("# HELP payments_total Payments by outcome.\n"), "{text}");
    assert!(text.contains("# HELP cache_fill_ratio Fill ratio of the cache.\n"), "{text}");
    assert!(!text.contains("configured_out"), "{text}");
}

#[test]
fn enums_info_buckets_from_a_const_and_nested_statics() {
    SERVER_PHASE.with((Region::UsEast1,)).set(Phase::Serving);
    assert_eq!(sample_value("server_phase", &[("region", "us-east-1"), ("server_phase", "serving")]), Some(1.0));
    assert_eq!(sample_value("server_phase", &[("region", "eu-west-1"), ("server_phase", "starting")]), Some(1.0));

    BUILD_INFO.set(&[("version", "2.0")]);
    assert_eq!(sample_value("build_info", &[("version", "2.0")]), Some(1.0));

    CACHE.set(0.5);
    assert_eq!(sample_value("cache_fill_ratio", &[]), Some(0.5));

    UPLOAD_SIZE_BYTES.with((true,)).observe(2048.0);
    assert_eq!(sample_value("upload_size_bytes_bucket", &[("retried", "true"), ("le", "65536.0")]), Some(1.0));
    assert_eq!(sample_value("upload_size_bytes_count", &[("retried", "false")]), Some(0.0));

    nested::NESTED_JOBS_TOTAL.inc();
    assert_eq!(sample_value("nested_jobs_total", &[]), Some(1.0));
}

#[test]
fn statics_inside_functions() {
    /// Declared in a function body.
    #[metric(labels(kind = ["a", "b"]))]
    static LOCAL_EVENTS_TOTAL: Counter;

    LOCAL_EVENTS_TOTAL.with(("b",)).inc();
    assert_eq!(sample_value("local_events_total", &[("kind", "b")]), Some(1.0));
    promshard::check_registry().expect("no duplicate names");
}
