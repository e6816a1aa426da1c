//! Merging 32 live workers × 10,000 series each, with Python's
//! MultiProcessCollector on an equivalent directory when available.
//!
//! `cargo bench --bench scrape_wide`

mod support;

use criterion::Criterion;
use promshard::{Counter, metric};
use support::{Hundred, bench_dir, fresh_dir, python_collector_ms, workers};

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

fn main() {
    let dir = fresh_dir("wide");
    let live = workers(&dir, 32, 32, record);
    let mut c = Criterion::default().configure_from_args();
    bench_dir(&mut c, "32 workers x 10000 series", &dir, 32 * 10_000);
    match python_collector_ms(10_000, 32) {
        Some(ms) => println!("python MultiProcessCollector + generate_latest, 32 workers x 10000 series: {ms:.1} ms"),
        None => println!("python prometheus_client not available: no Python comparison"),
    }
    c.final_summary();
    drop(live);
    let _ = std::fs::remove_dir_all(&dir);
}
