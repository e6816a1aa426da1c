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
