//! Probe: a histogram that observes a negative value (or both infinities)
//! makes the whole OpenMetrics exposition unparseable.
//!
//! OpenMetrics 1.0: a histogram's `_sum` is a counter, so it "MUST NOT be
//! NaN or negative"; a histogram with negative observations must leave
//! `_sum` out. promshard writes `_sum -0.5` (and `_sum NaN` after `+Inf`
//! and `-Inf` observations), and the strict Python OpenMetrics parser
//! refuses the exposition: one clock-skew sample (a duration computed from
//! wall-clock times that went backwards) costs every family of the scrape.

mod harness;
mod support;

use std::ffi::OsStr;
use std::time::Duration;

use promshard::{Counter, Histogram, metric};

/// Clock offset between request and response, in seconds.
#[metric(unit = "seconds", buckets = [0.001, 0.01, 0.1, 1.0])]
static PROBE_OFFSET_SECONDS: Histogram;

/// Transfer sizes.
#[metric(unit = "bytes", buckets = [1024.0])]
static PROBE_TRANSFER_BYTES: Histogram;

/// Requests served.
#[metric]
static PROBE_OM_REQUESTS_TOTAL: Counter;

const PARSE: &str = "
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families as p
try:
    n = sum(len(f.samples) for f in p(sys.stdin.read()))
    print('ok', n)
except Exception as e:
    print('REJECTED', e)
";

fn check(multiprocess: bool) {
    let Some(python) = support::python_with_prometheus_client() else {
        support::skip_or_fail(support::PYTHON_MISSING);
        return;
    };
    let dir = harness::TempDir::new("omhist");
    if multiprocess {
        promshard::multiprocess::init(dir.path()).unwrap();
    }
    PROBE_OM_REQUESTS_TOTAL.inc();
    PROBE_OFFSET_SECONDS.observe(0.004);
    PROBE_OFFSET_SECONDS.observe(-0.5); // the wall clock stepped back
    PROBE_TRANSFER_BYTES.observe(f64::INFINITY);
    PROBE_TRANSFER_BYTES.observe(f64::NEG_INFINITY);
    let text = String::from_utf8(promshard::encode(promshard::Format::OpenMetrics)).unwrap();
    let out = support::run_with_stdin(&python, &[OsStr::new("-c"), OsStr::new(PARSE)], &text);
    let verdict = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let sums: Vec<&str> = text.lines().filter(|l| l.starts_with("probe_") && l.contains("_sum")).collect();
    assert!(
        verdict.starts_with("ok"),
        "the Python OpenMetrics parser rejects the whole exposition ({verdict}) because of {sums:?}: a \
         histogram with negative (or NaN) sum must omit _sum in OpenMetrics (expose/plan.rs writes it \
         unconditionally)"
    );
}

#[test]
fn negative_observation_keeps_openmetrics_parseable_in_memory() {
    harness::isolated("negative_observation_keeps_openmetrics_parseable_in_memory", Duration::from_secs(60), || {
        check(false)
    });
}

#[test]
fn negative_observation_keeps_openmetrics_parseable_in_multiprocess_mode() {
    harness::isolated(
        "negative_observation_keeps_openmetrics_parseable_in_multiprocess_mode",
        Duration::from_secs(60),
        || check(true),
    );
}
