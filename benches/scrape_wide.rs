//! Merging 1, 8, 32 and 128 live workers × 10,000 series each, with
//! Python's `MultiProcessCollector` on equivalent directories.
//!
//! `cargo bench --bench scrape_wide` (Python: `$PROMSHARD_PYTHON`, else
//! `python3`, with prometheus_client installed)

mod results;
mod support;

use promshard::{Counter, LabelValue, metric};
use support::{Growth, Hundred, key};

/// Requests by two labels: 10,000 series.
#[metric(labels(shard: Hundred, route: Hundred), max_series = 10000)]
static REQUESTS_TOTAL: Counter;

fn record(worker: usize) {
    for a in 0..100 {
        for b in 0..100 {
            REQUESTS_TOTAL.with((Hundred(a), Hundred(b))).inc_by((worker + a + b) as u64);
        }
    }
}

/// The same series as Python's files hold them.
fn python_entries(worker: usize) -> Vec<(String, f64)> {
    let mut entries = Vec::with_capacity(10_000);
    for a in 0..100 {
        for b in 0..100 {
            let labels = [("route", Hundred::VALUES[b]), ("shard", Hundred::VALUES[a])];
            entries.push((key("requests", "requests_total", &labels, "Requests."), (worker + a + b) as f64));
        }
    }
    entries
}

fn main() {
    support::growth(Growth { size: "10k", series: 10_000, record, python_entries, with_dead: false });
}
