//! A histogram that is native and keeps exemplars has its classic slots,
//! then its native ones, then its exemplars: recording an exemplar must
//! count the observation in the native buckets too, and writing one must
//! never touch the native counts. Checked by the outside oracles (Python's
//! protobuf decoder and its client_golang bucket rule for the counts,
//! Python's strict OpenMetrics parser for the exemplars), in this process
//! and across forked workers that exit and are folded into the archive.

mod harness;
mod support;

use std::time::Duration;

use harness::{TempDir, Worker, isolated};
use promshard::{Format, Histogram, metric};

/// Native only, with exemplars: the `+Inf` bucket carries them.
#[metric(native(schema = 2, max_buckets = 60), exemplars)]
static NX_NATIVE: Histogram;

/// Classic buckets, native ones and exemplars.
#[metric(buckets = [0.1, 1.0, 10.0], native(schema = 1, max_buckets = 40), exemplars)]
static NX_BOTH: Histogram;

/// Stream `stream`'s observations: every other one with an exemplar
/// naming its stream and index.
fn record(stream: u64) -> Vec<f64> {
    let values: Vec<f64> = (0..120).map(|i| (i as f64 + 1.0) * 0.0625 * (stream + 1) as f64).collect();
    for (i, v) in values.iter().enumerate() {
        if i % 2 == 0 {
            let id = format!("s{stream}-{i}");
            NX_NATIVE.observe_with_exemplar(*v, &[("trace_id", &id)]);
            NX_BOTH.observe_with_exemplar(*v, &[("trace_id", &id)]);
        } else {
            NX_NATIVE.observe(*v);
            NX_BOTH.observe(*v);
        }
    }
    values
}

/// The OpenMetrics exemplar ids on `family`'s bucket lines, by `le`.
fn exemplar_ids(text: &str, family: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}_bucket{{")))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?.to_owned();
            let id = l.split("trace_id=\"").nth(1)?.split('"').next()?.to_owned();
            Some((le, id))
        })
        .collect()
}

fn check(python: &std::path::Path, work: &std::path::Path, proto: &[u8], openmetrics: &str, all: &[f64], last: &str) {
    support::protobuf::check_native(python, work, proto, &[("nx_native", all.to_vec()), ("nx_both", all.to_vec())]);
    // Python's strict parser takes the text and returns its exemplars.
    let parsed = support::run_python(python, STRICT, openmetrics);
    assert!(parsed.contains(last), "Python's parser saw {parsed}");
    let native = exemplar_ids(openmetrics, "nx_native");
    assert_eq!(native, [("+Inf".to_owned(), last.to_owned())], "{openmetrics}");
    let both = exemplar_ids(openmetrics, "nx_both");
    assert!(both.iter().any(|(_, id)| id == last), "{both:?}\n{openmetrics}");
    assert!(both.iter().any(|(le, _)| le == "1.0"), "{both:?}");
    let decoded = support::protobuf::decode(python, work, proto, openmetrics);
    let text = decoded.exemplars.to_string();
    assert!(text.contains(last), "protobuf exemplars: {text}");
}

/// Prints the trace ids of every exemplar Python's strict OpenMetrics
/// parser finds in standard input.
const STRICT: &str = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
ids = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        if sample.exemplar is not None:
            ids.append(sample.exemplar.labels['trace_id'])
print(' '.join(sorted(ids)))
"#;

#[test]
fn native_histograms_keep_exemplars_in_memory() {
    if harness::in_any_child() {
        return;
    }
    let Some(python) = support::protobuf::python_or_skip() else { return };
    let work = TempDir::new("native-exemplars");
    let all = record(0);
    let proto = promshard::encode(Format::Protobuf);
    let openmetrics = String::from_utf8(promshard::encode(Format::OpenMetrics)).unwrap();
    check(&python, work.path(), &proto, &openmetrics, &all, "s0-118");
}

fn worker(command: &str) -> String {
    if command == "quit" {
        // Closing its command pipe would not end it: its siblings share it.
        std::process::exit(0);
    }
    let stream: u64 = command.strip_prefix("record ").unwrap().parse().unwrap();
    record(stream);
    "ok".into()
}

#[test]
fn native_histograms_keep_exemplars_across_processes_and_the_archive() {
    const NAME: &str = "native_histograms_keep_exemplars_across_processes_and_the_archive";
    let python =
        if harness::is_child(NAME) || !harness::in_any_child() { support::protobuf::python_or_skip() } else { None };
    let Some(python) = python else { return };
    isolated(NAME, Duration::from_secs(120), || {
        let dir = TempDir::new("native-exemplars-mp");
        let work = TempDir::new("native-exemplars-mp-work");
        promshard::multiprocess::init(dir.path()).unwrap();
        let mut all = Vec::new();
        let mut live = Vec::new();
        for stream in 1..=3 {
            let mut w = Worker::spawn(worker);
            assert_eq!(w.ask(&format!("record {stream}"), Duration::from_secs(20)), "ok");
            all.extend((0..120).map(|i| (i as f64 + 1.0) * 0.0625 * (stream + 1) as f64));
            live.push(w);
        }
        let scrape = |how| promshard::multiprocess::encode_dir(dir.path(), how);
        let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
        check(&python, work.path(), &scrape(Format::Protobuf), &text(scrape(Format::OpenMetrics)), &all, "s3-118");
        for mut w in live.drain(..2) {
            assert_eq!(w.try_ask("quit", Duration::from_millis(100)), None);
            assert_eq!(w.exit(Duration::from_secs(20)), Some(0));
        }
        promshard::multiprocess::compact_dir(dir.path());
        assert!(dir.path().join("archive.promshard").exists());
        check(&python, work.path(), &scrape(Format::Protobuf), &text(scrape(Format::OpenMetrics)), &all, "s3-118");
        live[0].kill();
        promshard::multiprocess::compact_dir(dir.path());
        assert_eq!(harness::shard_files(dir.path()), ["archive.promshard"]);
        check(&python, work.path(), &scrape(Format::Protobuf), &text(scrape(Format::OpenMetrics)), &all, "s3-118");
    });
}
