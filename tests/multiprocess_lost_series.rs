//! Attacks "multiprocess mode exposes what memory mode exposes": series
//! that exist in a single process's scrape must not vanish when the same
//! program runs with `PROMSHARD_DIR`.
//!
//! - The `other` series of a full `bounded` label (values past its
//!   capacity are counted there, and in `promshard_label_overflow_total`).
//! - An `Info` whose label text is larger than 4 KB.
//! - An `Info` changed more than 8 times: it must keep showing the latest
//!   labels.
//!
//! Each scenario runs twice, in fresh processes: in memory mode (the
//! reference, which passes) and in multiprocess mode.

mod harness;

use std::time::Duration;

use harness::{TempDir, Worker, isolated, own_text, value_in};
use promshard::testing::sample_value;
use promshard::{Counter, Info, metric};

/// Hits by route, at most two distinct routes per process.
#[metric(labels(route = bounded(2)))]
static LOST_ROUTE_HITS_TOTAL: Counter;

/// Build information.
#[metric]
static LOST_BUILD: Info;

/// Deployment information, changed often.
#[metric]
static LOST_DEPLOY: Info;

const SCENARIO: Duration = Duration::from_secs(60);
const ASK: Duration = Duration::from_secs(20);

/// Memory mode, or multiprocess mode in a fresh directory (kept alive
/// until the returned guard drops).
fn storage(multiprocess: bool) -> Option<TempDir> {
    multiprocess.then(|| {
        let base = TempDir::new("lost");
        promshard::multiprocess::init(base.path().join("shards")).unwrap();
        base
    })
}

fn mode(multiprocess: bool) -> &'static str {
    if multiprocess { "multiprocess mode" } else { "memory mode" }
}

fn bounded_other(multiprocess: bool) {
    let _dir = storage(multiprocess);
    for route in ["/a", "/b", "/c", "/d", "/c"] {
        LOST_ROUTE_HITS_TOTAL.with((route,)).inc();
    }
    let mode = mode(multiprocess);
    let text = own_text();
    assert_eq!(value_in(&text, "lost_route_hits_total", &[("route", "/a")]), Some(1.0), "{mode}:\n{text}");
    assert_eq!(
        value_in(&text, "lost_route_hits_total", &[("route", "other")]),
        Some(3.0),
        "{mode}: the `other` series of a full bounded(2) label (3 recordings past capacity) must be exposed:\n{text}"
    );
    if !multiprocess {
        return;
    }
    // A worker forked now inherits the full table: all its new routes go
    // to `other`, in its own shard; alive, then dead and compacted.
    let mut worker = Worker::spawn(|command| {
        for _ in 0..command.parse::<u64>().unwrap() {
            LOST_ROUTE_HITS_TOTAL.with(("/from-worker",)).inc();
        }
        "ok".into()
    });
    assert_eq!(worker.ask("4", ASK), "ok");
    let live = sample_value("lost_route_hits_total", &[("route", "other")]);
    assert_eq!(live, Some(7.0), "{mode}: `other` summed over the master (3) and a live worker (4)");
    assert!(worker.exit(ASK).is_some());
    for scrape in 0..2 {
        let dead = sample_value("lost_route_hits_total", &[("route", "other")]);
        assert_eq!(dead, Some(7.0), "{mode}: `other` after the worker died (scrape {scrape}; the first compacts it)");
    }
}

#[test]
fn bounded_other_series_in_memory_mode() {
    isolated("bounded_other_series_in_memory_mode", SCENARIO, || bounded_other(false));
}

#[test]
fn bounded_other_series_in_multiprocess_mode() {
    isolated("bounded_other_series_in_multiprocess_mode", SCENARIO, || bounded_other(true));
}

fn large_info(multiprocess: bool) {
    let _dir = storage(multiprocess);
    let features = "feature-".repeat(640); // 5,120 bytes
    LOST_BUILD.set(&[("version", "1.2.3"), ("features", &features)]);
    let got = sample_value("lost_build_info", &[("version", "1.2.3"), ("features", &features)]);
    assert_eq!(
        got,
        Some(1.0),
        "{}: an Info whose label text is {} bytes must be exposed",
        mode(multiprocess),
        features.len()
    );
}

#[test]
fn info_larger_than_4kb_in_memory_mode() {
    isolated("info_larger_than_4kb_in_memory_mode", SCENARIO, || large_info(false));
}

#[test]
fn info_larger_than_4kb_in_multiprocess_mode() {
    isolated("info_larger_than_4kb_in_multiprocess_mode", SCENARIO, || large_info(true));
}

fn info_changed_often(multiprocess: bool) {
    let _dir = storage(multiprocess);
    for i in 1..=20 {
        let version = format!("v{i}");
        LOST_DEPLOY.set(&[("version", &version)]);
        let text = own_text();
        let shown: Vec<&str> = text.lines().filter(|l| l.starts_with("lost_deploy_info{")).collect();
        assert_eq!(
            shown,
            vec![format!("lost_deploy_info{{version=\"{version}\"}} 1").as_str()],
            "{}: after the Info was set {i} times, it must show exactly the latest labels",
            mode(multiprocess)
        );
    }
}

#[test]
fn info_set_many_times_in_memory_mode() {
    isolated("info_set_many_times_in_memory_mode", SCENARIO, || info_changed_often(false));
}

#[test]
fn info_set_many_times_in_multiprocess_mode() {
    isolated("info_set_many_times_in_multiprocess_mode", SCENARIO, || info_changed_often(true));
}

/// Information too large to keep, in the end.
#[metric]
static LOST_BIG: Info;

/// The size of a set of pairs as an `Info` stores it: a `u32` count, then
/// each name and value as a `u32` length and its UTF-8 bytes.
fn encoded_len(pairs: &[(&str, &str)]) -> usize {
    4 + pairs.iter().map(|(k, v)| 4 + k.len() + 4 + v.len()).sum::<usize>()
}

/// The lines of `lost_big_info` in `text`.
fn big_info_lines(text: &str) -> Vec<String> {
    text.lines().filter(|l| l.starts_with("lost_big_info{")).map(str::to_owned).collect()
}

/// `promshard_label_refused_total{metric="lost_big"}`, if exposed.
fn big_refused(text: &str) -> Option<f64> {
    value_in(text, "promshard_label_refused_total", &[("metric", "lost_big")])
}

/// An `Info` of exactly 8 KiB encoded is kept; one byte more, or 100 KB,
/// is refused: the previous pairs stay exposed and the refusal is counted
/// under the info's name. The value is made of two-byte characters, so
/// a limit counted in characters rather than bytes would let it through.
fn info_over_8_kib(multiprocess: bool) {
    harness::capture_logs();
    let _dir = storage(multiprocess);
    let mode = mode(multiprocess);
    LOST_BIG.set(&[("version", "v1")]);
    let text = own_text();
    assert_eq!(big_info_lines(&text), vec!["lost_big_info{version=\"v1\"} 1".to_owned()], "{mode}: a small Info");
    assert_eq!(big_refused(&text), None, "{mode}: nothing refused yet, so no sample:\n{text}");

    // Exactly 8,192 bytes encoded: 37 bytes of counts, lengths and names.
    let exact = format!("{}x", "é".repeat(4077));
    let pairs = [("version", "v2"), ("features", exact.as_str())];
    assert_eq!(encoded_len(&pairs), 8192);
    LOST_BIG.set(&pairs);
    let text = own_text();
    let got = value_in(&text, "lost_big_info", &[("version", "v2"), ("features", &exact)]);
    assert_eq!(
        got,
        Some(1.0),
        "{mode}: an Info of exactly 8 KiB encoded must be kept (lines {:?})",
        big_info_lines(&text).iter().map(|l| l.len()).collect::<Vec<_>>()
    );
    assert_eq!(big_info_lines(&text).len(), 1, "{mode}: one series");
    assert_eq!(big_refused(&text), None, "{mode}: 8 KiB exactly is not refused");

    // One byte more, then far more: both refused, v2 stays.
    let over = "é".repeat(4078);
    let over_pairs = [("version", "v3"), ("features", over.as_str())];
    assert_eq!(encoded_len(&over_pairs), 8193);
    let huge = "y".repeat(100_000);
    for (n, pairs) in [&over_pairs[..], &[("version", "v4"), ("features", huge.as_str())][..]].into_iter().enumerate() {
        LOST_BIG.set(pairs);
        let text = own_text();
        let lines = big_info_lines(&text);
        assert_eq!(lines.len(), 1, "{mode}: after a refused set, exactly the previous series stays");
        assert_eq!(
            value_in(&text, "lost_big_info", &[("version", "v2"), ("features", &exact)]),
            Some(1.0),
            "{mode}: after setting {} bytes, the previous (8 KiB) pairs must stay exposed; shown: {:?}",
            encoded_len(pairs),
            lines.iter().map(|l| l.chars().take(60).collect::<String>()).collect::<Vec<_>>()
        );
        assert_eq!(
            big_refused(&text),
            Some(n as f64 + 1.0),
            "{mode}: promshard_label_refused_total{{metric=\"lost_big\"}} after {} refusal(s):\n{}",
            n + 1,
            text.lines().filter(|l| l.contains("refused")).collect::<Vec<_>>().join("\n")
        );
    }
    let warnings = harness::warnings();
    assert!(
        warnings.iter().filter(|w| w.contains("lost_big") && w.contains("refused")).count() >= 2,
        "{mode}: each refusal is logged, naming the info: {warnings:?}"
    );

    // A small set again is taken; the count stays.
    LOST_BIG.set(&[("version", "v5")]);
    let text = own_text();
    assert_eq!(big_info_lines(&text), vec!["lost_big_info{version=\"v5\"} 1".to_owned()], "{mode}: set again");
    assert_eq!(big_refused(&text), Some(2.0), "{mode}: the count of refusals stays");
}

#[test]
fn info_over_8_kib_is_refused_in_memory_mode() {
    isolated("info_over_8_kib_is_refused_in_memory_mode", SCENARIO, || info_over_8_kib(false));
}

#[test]
fn info_over_8_kib_is_refused_in_multiprocess_mode() {
    isolated("info_over_8_kib_is_refused_in_multiprocess_mode", SCENARIO, || info_over_8_kib(true));
}
