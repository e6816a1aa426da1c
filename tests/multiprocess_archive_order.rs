//! The archive of dead workers keeps each family's label values in the
//! order they were declared, so that it merges slot by slot with the live
//! workers' shards. An archive that sorted them (as one once did) could
//! still be merged, by label text, at many times the cost: 22× the scrape
//! of the live workers alone after 2,000 dead ones (`benches/scrape.rs`).
//!
//! What a test can see of it: a family merged slot by slot is exposed in
//! its declared order, one merged by label text in sorted order.

mod harness;

use std::time::Duration;

use harness::{TempDir, fork_child, isolated, own_text, wait_timeout};
use promshard::{Counter, LabelValue, metric};

#[derive(Clone, Copy, LabelValue)]
enum Method {
    Get,
    Post,
    Delete,
}

/// Requests, with label values that are not in sorted order.
#[metric(labels(zone = ["zulu", "alpha", "mike"], method: Method))]
static ZONE_REQUESTS_TOTAL: Counter;

/// The `zone_requests_total` lines of an exposition, in order.
fn lines(text: &str) -> Vec<String> {
    text.lines().filter(|l| l.starts_with("zone_requests_total{")).map(str::to_owned).collect()
}

fn scenario() {
    let dir = TempDir::new("archive-order");
    promshard::multiprocess::init(dir.path()).unwrap();
    // The parent lives and records: the run stays open.
    ZONE_REQUESTS_TOTAL.with(("alpha", Method::Post)).inc();
    let declared_order: Vec<String> = ["zulu", "alpha", "mike"]
        .iter()
        .flat_map(|zone| ["get", "post", "delete"].map(|method| format!("zone=\"{zone}\",method=\"{method}\"")))
        .collect();
    for round in 1..=3u64 {
        for worker in 0..4u64 {
            let pid = fork_child(move || {
                ZONE_REQUESTS_TOTAL.with(("zulu", Method::Delete)).inc_by(worker + 1);
                ZONE_REQUESTS_TOTAL.with(("mike", Method::Get)).inc();
                0
            });
            assert!(wait_timeout(pid, Duration::from_secs(20)).is_some_and(|s| libc::WIFEXITED(s)));
        }
        // The first scrape folds the dead workers into the archive; the
        // second reads the archive beside the live shard.
        let _ = own_text();
        let text = own_text();
        let files = harness::shard_files(dir.path());
        assert!(files.contains(&"archive.promshard".to_owned()) && files.len() == 2, "round {round}: {files:?}");
        let exposed = lines(&text);
        let order: Vec<String> =
            exposed.iter().map(|l| l[l.find('{').unwrap() + 1..l.find('}').unwrap()].to_owned()).collect();
        assert_eq!(order, declared_order, "round {round}: the archive merges slot by slot, in declared order\n{text}");
        let value = |labels: &str| {
            exposed.iter().find(|l| l.contains(labels)).and_then(|l| l.rsplit(' ').next()).map(|v| v.to_owned())
        };
        assert_eq!(value("zone=\"zulu\",method=\"delete\"").as_deref(), Some((10 * round).to_string().as_str()));
        assert_eq!(value("zone=\"mike\",method=\"get\"").as_deref(), Some((4 * round).to_string().as_str()));
        assert_eq!(value("zone=\"alpha\",method=\"post\"").as_deref(), Some("1"));
    }
}

#[test]
fn the_archive_keeps_declared_label_order() {
    isolated("the_archive_keeps_declared_label_order", Duration::from_secs(120), scenario);
}
