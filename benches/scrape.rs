//! Scrape cost in multiprocess mode: merging a directory of worker shards
//! (32 workers × 1,000 series), and the same directory after 2,000 dead
//! workers came and went (compacted into the archive), with Python
//! prometheus_client's MultiProcessCollector timed on an equivalent
//! directory of `.db` files when Python is available.
//!
//! `cargo bench --bench scrape`

mod support;

use criterion::Criterion;
use promshard::{Counter, metric};
use support::{Hundred, Ten, bench_dir, fresh_dir, python_collector_ms, workers};

/// Requests by two labels: 1,000 series.
#[metric(labels(shard: Ten, route: Hundred))]
static REQUESTS_TOTAL: Counter;

/// A small family, as many workers have.
#[metric(labels(kind = ["a", "b", "c", "d"]))]
static EVENTS_TOTAL: Counter;

fn record(worker: usize) {
    for a in 0..10 {
        for b in 0..100 {
            REQUESTS_TOTAL.with((Ten(a), Hundred(b))).inc_by((worker + a + b) as u64);
        }
    }
    EVENTS_TOTAL.with(("a",)).inc();
}

fn main() {
    // Directories first: workers are forked before this process records.
    let live = fresh_dir("live");
    let _live_workers = workers(&live, 32, 32, record);
    let churned = fresh_dir("churned");
    let _churned_workers = workers(&churned, 2032, 32, record);
    // 32 live workers and 2,000 dead ones: fold the dead, as a scrape would.
    promshard::multiprocess::compact_dir(&churned);
    let files = promshard::multiprocess::inspect(&churned).unwrap().len();
    let series = 32 * 1004;

    let mut c = Criterion::default().configure_from_args();
    bench_dir(&mut c, "32 workers x 1000 series", &live, series);
    bench_dir(&mut c, &format!("same after 2000 dead workers ({files} files)"), &churned, series);
    if let Some(ms) = python_collector_ms(1000, 32) {
        println!("python MultiProcessCollector + generate_latest, 32 workers x 1000 series: {ms:.2} ms (best of 5)");
    } else {
        println!("python prometheus_client not available: no Python comparison");
    }
    c.final_summary();
    drop((_live_workers, _churned_workers));
    let _ = std::fs::remove_dir_all(&live);
    let _ = std::fs::remove_dir_all(&churned);
}
