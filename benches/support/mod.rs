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

/// A label with 100 values.
#[derive(Clone, Copy)]
pub struct Hundred(pub usize);

impl LabelValue for Hundred {
    const VALUES: &'static [&'static str] = &[
        "v000", "v001", "v002", "v003", "v004", "v005", "v006", "v007", "v008", "v009", "v010", "v011", "v012", "v013",
        "v014", "v015", "v016", "v017", "v018", "v019", "v020", "v021", "v022", "v023", "v024", "v025", "v026", "v027",
        "v028", "v029", "v030", "v031", "v032", "v033", "v034", "v035", "v036", "v037", "v038", "v039", "v040", "v041",
        "v042", "v043", "v044", "v045", "v046", "v047", "v048", "v049", "v050", "v051", "v052", "v053", "v054", "v055",
        "v056", "v057", "v058", "v059", "v060", "v061", "v062", "v063", "v064", "v065", "v066", "v067", "v068", "v069",
        "v070", "v071", "v072", "v073", "v074", "v075", "v076", "v077", "v078", "v079", "v080", "v081", "v082", "v083",
        "v084", "v085", "v086", "v087", "v088", "v089", "v090", "v091", "v092", "v093", "v094", "v095", "v096", "v097",
        "v098", "v099",
    ];
    fn index(self) -> usize {
        self.0
    }
}

/// A label with 10 values.
#[derive(Clone, Copy)]
pub struct Ten(pub usize);

impl LabelValue for Ten {
    const VALUES: &'static [&'static str] = &["t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9"];
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
