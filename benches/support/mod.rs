//! Shared by the scrape benches: label values, and shard directories
//! filled by forked worker processes.

#![allow(dead_code)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use promshard::Format;

use promshard::LabelValue;

/// A label with 100 values: route-like strings declared in their numeric
/// order, which is not their sorted order ("/…/10" sorts before "/…/2"),
/// as real label lists are. Sorted values once hid a compaction that
/// reordered them and sent every family to the slow merge by label text.
#[derive(Clone, Copy)]
pub struct Hundred(pub usize);

impl LabelValue for Hundred {
    const VALUES: &'static [&'static str] = &[
        "/api/v1/resource/0",
        "/api/v1/resource/1",
        "/api/v1/resource/2",
        "/api/v1/resource/3",
        "/api/v1/resource/4",
        "/api/v1/resource/5",
        "/api/v1/resource/6",
        "/api/v1/resource/7",
        "/api/v1/resource/8",
        "/api/v1/resource/9",
        "/api/v1/resource/10",
        "/api/v1/resource/11",
        "/api/v1/resource/12",
        "/api/v1/resource/13",
        "/api/v1/resource/14",
        "/api/v1/resource/15",
        "/api/v1/resource/16",
        "/api/v1/resource/17",
        "/api/v1/resource/18",
        "/api/v1/resource/19",
        "/api/v1/resource/20",
        "/api/v1/resource/21",
        "/api/v1/resource/22",
        "/api/v1/resource/23",
        "/api/v1/resource/24",
        "/api/v1/resource/25",
        "/api/v1/resource/26",
        "/api/v1/resource/27",
        "/api/v1/resource/28",
        "/api/v1/resource/29",
        "/api/v1/resource/30",
        "/api/v1/resource/31",
        "/api/v1/resource/32",
        "/api/v1/resource/33",
        "/api/v1/resource/34",
        "/api/v1/resource/35",
        "/api/v1/resource/36",
        "/api/v1/resource/37",
        "/api/v1/resource/38",
        "/api/v1/resource/39",
        "/api/v1/resource/40",
        "/api/v1/resource/41",
        "/api/v1/resource/42",
        "/api/v1/resource/43",
        "/api/v1/resource/44",
        "/api/v1/resource/45",
        "/api/v1/resource/46",
        "/api/v1/resource/47",
        "/api/v1/resource/48",
        "/api/v1/resource/49",
        "/api/v1/resource/50",
        "/api/v1/resource/51",
        "/api/v1/resource/52",
        "/api/v1/resource/53",
        "/api/v1/resource/54",
        "/api/v1/resource/55",
        "/api/v1/resource/56",
        "/api/v1/resource/57",
        "/api/v1/resource/58",
        "/api/v1/resource/59",
        "/api/v1/resource/60",
        "/api/v1/resource/61",
        "/api/v1/resource/62",
        "/api/v1/resource/63",
        "/api/v1/resource/64",
        "/api/v1/resource/65",
        "/api/v1/resource/66",
        "/api/v1/resource/67",
        "/api/v1/resource/68",
        "/api/v1/resource/69",
        "/api/v1/resource/70",
        "/api/v1/resource/71",
        "/api/v1/resource/72",
        "/api/v1/resource/73",
        "/api/v1/resource/74",
        "/api/v1/resource/75",
        "/api/v1/resource/76",
        "/api/v1/resource/77",
        "/api/v1/resource/78",
        "/api/v1/resource/79",
        "/api/v1/resource/80",
        "/api/v1/resource/81",
        "/api/v1/resource/82",
        "/api/v1/resource/83",
        "/api/v1/resource/84",
        "/api/v1/resource/85",
        "/api/v1/resource/86",
        "/api/v1/resource/87",
        "/api/v1/resource/88",
        "/api/v1/resource/89",
        "/api/v1/resource/90",
        "/api/v1/resource/91",
        "/api/v1/resource/92",
        "/api/v1/resource/93",
        "/api/v1/resource/94",
        "/api/v1/resource/95",
        "/api/v1/resource/96",
        "/api/v1/resource/97",
        "/api/v1/resource/98",
        "/api/v1/resource/99",
    ];
    fn index(self) -> usize {
        self.0
    }
}

/// A label with 10 values, in no sorted order.
#[derive(Clone, Copy)]
pub struct Ten(pub usize);

impl LabelValue for Ten {
    const VALUES: &'static [&'static str] =
        &["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "other"];
    fn index(self) -> usize {
        self.0
    }
}

/// A fresh directory under the system's temp dir.
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("promshard-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Worker processes recording into a shard directory; the first `live`
/// of them stay alive (holding their shards' locks) until this is dropped.
pub struct Workers {
    /// Leads a process group of its own, so that dropping can stop every
    /// worker at once.
    leader: libc::pid_t,
}

impl Drop for Workers {
    fn drop(&mut self) {
        // SAFETY: signals our own process group of workers, then reaps.
        unsafe {
            libc::kill(-self.leader, libc::SIGKILL);
            libc::waitpid(self.leader, std::ptr::null_mut(), 0);
        }
    }
}

/// Forks `count` workers that each record with `record` into their own
/// shard in `dir`; all but the first `live` exit at once. Must run before
/// this process records or scrapes anything itself.
pub fn workers(dir: &Path, count: usize, live: usize, record: fn(usize)) -> Workers {
    let mut ready = [0; 2];
    // SAFETY: a valid array for the pipe's descriptors.
    unsafe { assert_eq!(libc::pipe(ready.as_mut_ptr()), 0) };
    // The leader starts the run and stays alive, so it is never cleared;
    // the others are its children. SAFETY (all forks below): children
    // only record, wait, and _exit.
    let leader = unsafe { libc::fork() };
    assert!(leader >= 0);
    if leader == 0 {
        unsafe { libc::setpgid(0, 0) };
        promshard::multiprocess::init(dir).unwrap();
        record(0);
        let children: Vec<_> = (1..count)
            .map(|i| {
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    record(i);
                    if i < live {
                        unsafe {
                            libc::write(ready[1], b"x".as_ptr().cast(), 1);
                            loop {
                                libc::pause();
                            }
                        }
                    }
                    unsafe { libc::_exit(0) };
                }
                pid
            })
            .collect();
        // Reap the workers that exit at once; the held ones are killed.
        for &pid in &children[live.saturating_sub(1).min(children.len())..] {
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        }
        unsafe {
            libc::write(ready[1], b"x".as_ptr().cast(), 1);
            loop {
                libc::pause();
            }
        }
    }
    // SAFETY: our ends of the pipe; one byte per held worker and the leader.
    unsafe {
        libc::setpgid(leader, leader);
        libc::close(ready[1]);
        let mut byte = [0u8; 1];
        for _ in 0..live.max(1) {
            libc::read(ready[0], byte.as_mut_ptr().cast(), 1);
        }
        libc::close(ready[0]);
    }
    Workers { leader }
}

/// Python prometheus_client's MultiProcessCollector + generate_latest on
/// `workers` processes' `.db` files of `series_per_worker` counter series
/// (labels `shard`, `route`), best of 5, in milliseconds; `None` without
/// Python.
pub fn python_collector_ms(series_per_worker: usize, workers: usize) -> Option<f64> {
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

/// Times `encode_dir` on `dir`, reported per merged series.
pub fn bench_dir(c: &mut Criterion, name: &str, dir: &Path, series: u64) {
    let mut group = c.benchmark_group("scrape");
    group.throughput(Throughput::Elements(series)).sample_size(30).measurement_time(Duration::from_secs(4));
    group.bench_function(name, |b| b.iter(|| black_box(promshard::multiprocess::encode_dir(dir, Format::Prometheus))));
    group.finish();
}
