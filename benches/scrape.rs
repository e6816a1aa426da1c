//! Scrape cost in multiprocess mode: merging a directory of worker shards
//! (32 workers × 1,000 series), and the same directory after 2,000 dead
//! workers came and went (compacted into the archive), with Python
//! prometheus_client's MultiProcessCollector timed on an equivalent
//! directory of `.db` files when Python is available.
//!
//! `cargo bench --bench scrape`

mod support;

use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use promshard::{Counter, Format, metric};
use support::{Hundred, Ten, fresh_dir, workers};

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

fn python_collector_ms(series_per_worker: usize, workers: usize) -> Option<f64> {
    let dir = fresh_dir("python");
    std::fs::create_dir_all(&dir).ok()?;
    let script = format!(
        r#"
import os, sys, timeit
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
from prometheus_client import Counter, CollectorRegistry, generate_latest, multiprocess, values
c = Counter("requests", "Requests.", ["shard", "route"])
for w in range({workers}):
    values.ValueClass = values.MultiProcessValue(lambda w=w: 100000 + w)
    c = Counter("requests", "Requests.", ["shard", "route"], registry=None)
    for i in range({series_per_worker}):
        c.labels(str(i // 100), str(i % 100)).inc()
def scrape():
    r = CollectorRegistry()
    multiprocess.MultiProcessCollector(r)
    generate_latest(r)
best = min(timeit.repeat(scrape, number=1, repeat=5))
print(best * 1000)
"#
    );
    let out = Command::new("python3").arg("-c").arg(script).arg(&dir).output().ok()?;
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        eprintln!("python: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

fn bench_dir(c: &mut Criterion, name: &str, dir: &Path, series: u64) {
    let mut group = c.benchmark_group("scrape");
    group.throughput(Throughput::Elements(series)).sample_size(30).measurement_time(Duration::from_secs(4));
    group.bench_function(name, |b| b.iter(|| black_box(promshard::multiprocess::encode_dir(dir, Format::Prometheus))));
    group.finish();
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
