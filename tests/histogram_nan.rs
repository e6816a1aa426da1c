//! Attacks "the exposition is valid OpenMetrics, always": one
//! `Histogram::observe(f64::NAN)` today makes `_sum` NaN forever, and
//! prometheus_client's strict OpenMetrics parser then rejects the whole
//! scrape (every metric of the process is lost, not just this one).
//!
//! Expected rule, as these tests assume it: a NaN observation is dropped
//! (it is in no bucket, not in `_count`, not in `_sum`) and counted in a
//! promshard self-metric. The self-metric's name is not fixed yet: the
//! tests look for any sample whose name starts with `promshard_` and whose
//! name or label values mention `nan` (for instance
//! `promshard_nan_observations_total` or
//! `promshard_observations_dropped_total{reason="nan"}`); adjust
//! [`nan_self_metric`] if the fix names it otherwise.
//!
//! Runs in memory mode and in multiprocess mode, each in a fresh process.
//! A missing python3/prometheus_client skips the parser check loudly (or
//! fails it under `PROMSHARD_ORACLES=require`).

mod harness;
mod support;

use std::ffi::OsStr;
use std::time::Duration;

use harness::{TempDir, isolated, own_text, parse_samples, value_in};
use promshard::{Format, Histogram, metric};

/// Request latency.
#[metric(unit = "seconds", buckets = [1.0, 5.0])]
static NAN_LATENCY_SECONDS: Histogram;

const PARSE: &str = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = list(text_string_to_metric_families(sys.stdin.read()))
print(len(families))
"#;

/// The sum of every `promshard_*` sample that mentions NaN.
fn nan_self_metric(text: &str) -> Option<f64> {
    let mentions = |s: &str| s.to_ascii_lowercase().contains("nan");
    let samples: Vec<_> = parse_samples(text)
        .into_iter()
        .filter(|s| {
            s.name.starts_with("promshard_") && (mentions(&s.name) || s.labels.iter().any(|(_, v)| mentions(v)))
        })
        .collect();
    (!samples.is_empty()).then(|| samples.iter().map(|s| s.value).sum())
}

fn nan_observation(multiprocess: bool) {
    let _dir = multiprocess.then(|| {
        let base = TempDir::new("nan");
        promshard::multiprocess::init(base.path().join("shards")).unwrap();
        base
    });
    let mode = if multiprocess { "multiprocess mode" } else { "memory mode" };
    NAN_LATENCY_SECONDS.observe(1.0);
    NAN_LATENCY_SECONDS.observe(f64::NAN);
    NAN_LATENCY_SECONDS.observe(2.0);

    let text = own_text();
    let mut wrong = Vec::new();
    let count = value_in(&text, "nan_latency_seconds_count", &[]);
    let sum = value_in(&text, "nan_latency_seconds_sum", &[]);
    let inf = value_in(&text, "nan_latency_seconds_bucket", &[("le", "+Inf")]);
    if count != Some(2.0) || sum != Some(3.0) || inf != Some(2.0) {
        wrong.push(format!(
            "observe(1.0), observe(NaN), observe(2.0) must give _count 2, _sum 3, +Inf bucket 2 (NaN dropped); got \
             _count {count:?}, _sum {sum:?}, +Inf {inf:?}"
        ));
    }
    match nan_self_metric(&text) {
        Some(1.0) => {}
        other => wrong.push(format!(
            "the dropped NaN must be counted in a promshard_* self-metric mentioning nan (value 1); found {other:?}"
        )),
    }
    let openmetrics = String::from_utf8(promshard::encode(Format::OpenMetrics)).unwrap();
    match support::python_with_prometheus_client() {
        None => support::skip_or_fail(support::PYTHON_MISSING),
        Some(python) => {
            let out = support::run_with_stdin(&python, &[OsStr::new("-c"), OsStr::new(PARSE)], &openmetrics);
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                wrong.push(format!(
                    "prometheus_client's OpenMetrics parser rejects the whole scrape: {}",
                    stderr.lines().last().unwrap_or("")
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{mode}, after one NaN observation:\n- {}", wrong.join("\n- "));
}

#[test]
fn nan_observation_in_memory_mode() {
    isolated("nan_observation_in_memory_mode", Duration::from_secs(60), || nan_observation(false));
}

#[test]
fn nan_observation_in_multiprocess_mode() {
    isolated("nan_observation_in_multiprocess_mode", Duration::from_secs(60), || nan_observation(true));
}
