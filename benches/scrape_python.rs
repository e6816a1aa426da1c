//! Scrape cost of a Python pool's `PROMETHEUS_MULTIPROC_DIR` after worker
//! churn: 4 live workers (each holding its 13 `.db` files open, as
//! prometheus_client's do: a Flask app's families under
//! prometheus_flask_exporter, every gauge mode), then the same with the
//! files of 3,000 dead workers' files beside them, then with 3,000 dead
//! workers (39,000 files). Issue 12's target: with 3,000 dead workers'
//! files, at most 1.2× the scrape with none. The ratios are printed from
//! timings taken in this same run; Python's own `MultiProcessCollector`
//! is timed on the same directories when python3 with prometheus_client
//! is on `PATH`.
//!
//! `cargo bench --bench scrape_python`

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use promshard::Format;

const MODES: [&str; 10] =
    ["all", "liveall", "sum", "livesum", "min", "livemin", "max", "livemax", "mostrecent", "livemostrecent"];
const BUCKETS: [&str; 15] = [
    "0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1.0", "2.5", "5.0", "7.5", "10.0", "+Inf",
];
/// Pids no process can have (above Linux's largest `pid_max`): dead.
const GONE: u32 = 4_194_400;

/// One `.db` file as prometheus_client's `MmapedDict` lays it out.
fn db(entries: &[(String, f64)]) -> Vec<u8> {
    let mut out = vec![0u8; 8];
    for (key, value) in entries {
        out.extend_from_slice(&(key.len() as i32).to_ne_bytes());
        out.extend_from_slice(key.as_bytes());
        out.resize(out.len() + 8 - (key.len() + 4) % 8, b' ');
        out.extend_from_slice(&value.to_ne_bytes());
        out.extend_from_slice(&1.8e9f64.to_ne_bytes());
    }
    let used = out.len() as i32;
    out[..4].copy_from_slice(&used.to_ne_bytes());
    out
}

fn key(metric: &str, sample: &str, labels: &[(&str, &str)], help: &str) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("\"{k}\": \"{v}\"")).collect();
    format!("[\"{metric}\", \"{sample}\", {{{}}}, \"{help}\"]", labels.join(", "))
}

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

fn write(dir: &Path, files: &[(String, Vec<u8>)]) -> Vec<std::fs::File> {
    files
        .iter()
        .map(|(name, bytes)| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            // Preallocated as Python's are (sparse: no disk used).
            let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
            file.set_len(65536).unwrap();
            file
        })
        .collect()
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

/// The medians of `rounds` scrapes of each of `dirs`, after one each
/// that folds; interleaved, so that a load on the machine that comes and
/// goes weighs on every directory alike.
fn median_scrapes<const N: usize>(dirs: [&Path; N], rounds: usize) -> [Duration; N] {
    for dir in dirs {
        black_box(promshard::multiprocess::encode_dir(dir, Format::Prometheus));
    }
    let mut times = [(); N].map(|()| Vec::with_capacity(rounds));
    for _ in 0..rounds {
        for (dir, times) in dirs.iter().zip(&mut times) {
            let t = Instant::now();
            black_box(promshard::multiprocess::encode_dir(dir, Format::Prometheus));
            times.push(t.elapsed());
        }
    }
    times.map(|mut t| {
        t.sort();
        t[rounds / 2]
    })
}

/// Python's `MultiProcessCollector` + `generate_latest` on `dir`, best of
/// `repeat`, in milliseconds.
fn python_ms(dir: &Path, repeat: usize) -> Option<f64> {
    let script = "import sys, timeit\n\
                  from prometheus_client import CollectorRegistry, generate_latest\n\
                  from prometheus_client.multiprocess import MultiProcessCollector\n\
                  def scrape():\n    r = CollectorRegistry()\n    MultiProcessCollector(r, path=sys.argv[1])\n    generate_latest(r)\n\
                  print(min(timeit.repeat(scrape, number=1, repeat=int(sys.argv[2]))) * 1000)\n";
    let out = Command::new("python3").args(["-c", script]).arg(dir).arg(repeat.to_string()).output().ok()?;
    out.status.success().then_some(())?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
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
    group.throughput(Throughput::Elements(1)).sample_size(30).measurement_time(Duration::from_secs(3));
    for (name, dir) in [
        (format!("4 live workers ({n0} files)"), &none),
        (format!("same + 3000 dead files ({n1} files)"), &files),
        (format!("same + 3000 dead workers ({n2} files)"), &workers),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| black_box(promshard::multiprocess::encode_dir(dir, Format::Prometheus)))
        });
    }
    group.finish();

    let [t0, t1, t2] = median_scrapes([&none, &files, &workers], 300);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("python pool scrape, medians of 300 interleaved scrapes in this run:");
    println!("  4 live workers, {n0} files:              {:8.1} µs", us(t0));
    println!(
        "  + 3,000 dead workers' files ({n1} files): {:8.1} µs  ratio {:.2}x (target <= 1.2x)",
        us(t1),
        us(t1) / us(t0)
    );
    println!("  + 3,000 dead workers ({n2} files):      {:8.1} µs  ratio {:.2}x", us(t2), us(t2) / us(t0));
    match (python_ms(&none, 5), python_ms(&files, 3), python_ms(&workers, 1)) {
        (Some(p0), Some(p1), Some(p2)) => {
            println!("python MultiProcessCollector + generate_latest, same directories (best of 5, 3, 1):");
            println!("  {p0:.2} ms, {p1:.2} ms ({:.1}x), {p2:.1} ms ({:.1}x)", p1 / p0, p2 / p0);
        }
        _ => println!("python3 with prometheus_client not available: no Python comparison"),
    }
    c.final_summary();
    drop(live);
    for dir in [none, files, workers] {
        let _ = std::fs::remove_dir_all(dir);
    }
}
