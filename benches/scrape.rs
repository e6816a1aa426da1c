//! Scrape cost in multiprocess mode: merging a directory of 1, 8, 32 and
//! 128 workers' shards of 1,004 series each, and the 32-worker directory
//! after 2,000 dead workers came and went (compacted into the archive),
//! with Python prometheus_client's `MultiProcessCollector` +
//! `generate_latest` timed on equivalent directories of `.db` files.
//!
//! `cargo bench --bench scrape` (Python: `$PROMSHARD_PYTHON`, else
//! `python3`, with prometheus_client installed)

mod results;
mod support;

use promshard::{Counter, LabelValue, metric};
use support::{Growth, Hundred, Ten, key};

/// Requests by two labels: 1,000 series.
#[metric(labels(shard: Ten, route: Hundred))]
static REQUESTS_TOTAL: Counter;

/// A small family, as many workers have.
#[metric(labels(kind = ["create", "read", "update", "delete"]))]
static EVENTS_TOTAL: Counter;

fn record(worker: usize) {
    for a in 0..10 {
        for b in 0..100 {
            REQUESTS_TOTAL.with((Ten(a), Hundred(b))).inc_by((worker + a + b) as u64);
        }
    }
    EVENTS_TOTAL.with(("create",)).inc();
}

/// The same series as Python's files hold them.
fn python_entries(worker: usize) -> Vec<(String, f64)> {
    let mut entries = Vec::with_capacity(1004);
    for a in 0..10 {
        for b in 0..100 {
            let labels = [("route", Hundred::VALUES[b]), ("shard", Ten::VALUES[a])];
            entries.push((key("requests", "requests_total", &labels, "Requests."), (worker + a + b) as f64));
        }
    }
    for (i, kind) in ["create", "read", "update", "delete"].into_iter().enumerate() {
        entries.push((key("events", "events_total", &[("kind", kind)], "Events."), (i == 0) as u8 as f64));
    }
    entries
}

fn main() {
    support::growth(Growth { size: "1k", series: 1004, record, python_entries, with_dead: true });
}
