//! Scrape cost of a Python pool's `PROMETHEUS_MULTIPROC_DIR` after worker
//! churn: 4 live workers (each holding its 13 `.db` files open, as
//! prometheus_client's do: a Flask app's families under
//! prometheus_flask_exporter, every gauge mode), then the same with the
//! files of 3,000 dead workers' files beside them, then with 3,000 dead
//! workers (39,000 files). Issue 12's target: with 3,000 dead workers'
//! files, at most 1.2× the scrape with none. The ratios come from medians
//! of interleaved scrapes in this same run; Python's own
//! `MultiProcessCollector` is timed on the same directories with
//! `$PROMSHARD_PYTHON` (else `python3`) when it has prometheus_client.
//!
//! `cargo bench --bench scrape_python`

mod results;
mod support;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{Criterion, Throughput};
use promshard::Format;
use results::record;
use support::{GONE, db, key, median_scrapes, python_scrape_ms, write_db_files as write};

const MODES: [&str; 10] =
    ["all", "liveall", "sum", "livesum", "min", "livemin", "max", "livemax", "mostrecent", "livemostrecent"];
const BUCKETS: [&str; 15] = [
    "0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1.0", "2.5", "5.0", "7.5", "10.0", "+Inf",
];
/// A worker's files: name → bytes.
fn worker_files(pid: u32, n: f64) -> Vec<(String, Vec<u8>)> {
    let endpoints = ["index", "get_user", "work"];
    let mut counters = Vec::new();
    let mut histograms = Vec::new();
    for e in endpoints {
        let labels = [("endpoint", e), ("method", "GET"), ("status", "200")];
        counters.push((key("flask_http_request", "flask_http_request_total", &labels, "Requests."), n));
        for le in BUCKETS {
            let mut with_le = labels.to_vec();
            with_le.insert(1, ("le", le));
            histograms.push((
                key(
                    "flask_http_request_duration_seconds",
                    "flask_http_request_duration_seconds_bucket",
                    &with_le,
                    "Latency.",
                ),
                1.0,
            ));
        }
        histograms.push((
            key("flask_http_request_duration_seconds", "flask_http_request_duration_seconds_sum", &labels, "Latency."),
            n * 0.01,
        ));
    }
    for kind in ["plain", "gift", "bulk"] {
        counters.push((key("shop_orders", "shop_orders_total", &[("kind", kind)], "Orders."), n));
    }
    let mut files =
        vec![(format!("counter_{pid}.db"), db(&counters)), (format!("histogram_{pid}.db"), db(&histograms))];
    for mode in MODES {
        let g =
            [(key(&format!("shop_gauge_{mode}"), &format!("shop_gauge_{mode}"), &[("route", "/work")], "Gauge."), n)];
        files.push((format!("gauge_{mode}_{pid}.db"), db(&g)));
    }
    let summary = [
        (key("shop_payload_bytes", "shop_payload_bytes_count", &[], "Payload."), n),
        (key("shop_payload_bytes", "shop_payload_bytes_sum", &[], "Payload."), n * 100.0),
    ];
    files.push((format!("summary_{pid}.db"), db(&summary)));
    files
}

/// Live workers: forked children that write their files and hold them
/// open until killed (by pid, on drop).
struct Live(Vec<libc::pid_t>);

impl Live {
    fn start(dirs: &[&Path], count: usize) -> Live {
        let mut pids = Vec::new();
        for w in 0..count {
            // SAFETY: this process is still single-threaded (no Criterion
            // yet); the child only writes files, then sleeps until killed.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                let me = std::process::id();
                let held: Vec<_> = dirs.iter().flat_map(|d| write(d, &worker_files(me, w as f64 + 1.0))).collect();
                loop {
                    // SAFETY: waits for a signal; the parent kills us.
                    unsafe { libc::pause() };
                    black_box(&held);
                }
            }
            pids.push(pid);
        }
        // The children have written their files once each holds them.
        std::thread::sleep(Duration::from_millis(300));
        Live(pids)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        for pid in &self.0 {
            // SAFETY: kill(2) and waitpid(2) of our own children.
            unsafe {
                libc::kill(*pid, libc::SIGKILL);
                libc::waitpid(*pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("promshard-bench-python-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn main() {
    let none = fresh_dir("none");
    let files = fresh_dir("3000-files");
    let workers = fresh_dir("3000-workers");
    // 231 dead workers × 13 files = 3,003 files; and 3,000 dead workers.
    let mut held = Vec::new();
    for n in 0..231 {
        held.extend(write(&files, &worker_files(GONE + n, 1.0)));
        held.clear();
    }
    for n in 0..3000 {
        held.extend(write(&workers, &worker_files(GONE + n, 1.0)));
        held.clear();
    }
    let live = Live::start(&[&none, &files, &workers], 4);
    let count = |d: &Path| std::fs::read_dir(d).unwrap().count();
    let (n0, n1, n2) = (count(&none), count(&files), count(&workers));

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("scrape_python");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (name, dir) in [("4_live_workers", &none), ("3000_dead_files", &files), ("3000_dead_workers", &workers)] {
        group.bench_function(name, |b| {
            b.iter(|| black_box(promshard::multiprocess::encode_dir(dir, Format::Prometheus)))
        });
    }
    group.finish();

    let rounds = 300;
    let [t0, t1, t2] = median_scrapes([&none, &files, &workers], rounds);
    let pythons = [python_scrape_ms(&none, 5), python_scrape_ms(&files, 3), python_scrape_ms(&workers, 1)];
    for (((name, files), t), python) in [("4_live_workers", n0), ("3000_dead_files", n1), ("3000_dead_workers", n2)]
        .into_iter()
        .zip([t0, t1, t2])
        .zip(pythons)
    {
        let mut fields = vec![
            ("kind", "python_pool".into()),
            ("name", name.into()),
            ("files", files.into()),
            ("median_ns", (t.as_nanos() as f64).into()),
            ("rounds", rounds.into()),
        ];
        if let Some(ms) = python {
            fields.push(("python_ms", ms.into()));
        }
        record("scrape.jsonl", &fields);
    }
    c.final_summary();
    drop(live);
    for dir in [none, files, workers] {
        let _ = std::fs::remove_dir_all(dir);
    }
}
