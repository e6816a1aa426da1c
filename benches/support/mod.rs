//! Shared by the scrape benches: label values, and shard directories
//! filled by forked worker processes.

#![allow(dead_code)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

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

/// A prometheus_client `.db` file, laid out as its `MmapedDict` writes
/// one: a used-bytes header, then per entry the key's length, the key
/// padded to 8 bytes, the value and a timestamp.
pub fn db(entries: &[(String, f64)]) -> Vec<u8> {
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

/// An entry's key as prometheus_client writes it: the JSON of
/// `(metric, sample, labels, help)`.
pub fn key(metric: &str, sample: &str, labels: &[(&str, &str)], help: &str) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("\"{k}\": \"{v}\"")).collect();
    format!("[\"{metric}\", \"{sample}\", {{{}}}, \"{help}\"]", labels.join(", "))
}

/// Writes `files` (name, bytes) into `dir`, each grown as Python grows its
/// files (64 KiB, doubled until the entries fit; sparse, so no disk is
/// used for the rest), and returns them open.
pub fn write_db_files(dir: &Path, files: &[(String, Vec<u8>)]) -> Vec<std::fs::File> {
    files
        .iter()
        .map(|(name, bytes)| {
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
            file.set_len((bytes.len() as u64).max(65536).next_power_of_two()).unwrap();
            file
        })
        .collect()
}

/// Pids no process can have (above Linux's largest `pid_max`).
pub const GONE: u32 = 4_194_400;

/// A directory of `workers` Python workers' counter files, each holding
/// the entries `entries(worker)` gives: the directory Python's collector
/// reads where promshard reads `workers` shards of the same series.
pub fn python_dir(name: &str, workers: usize, entries: impl Fn(usize) -> Vec<(String, f64)>) -> PathBuf {
    let dir = fresh_dir(&format!("python-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    for w in 0..workers {
        let file = (format!("counter_{}.db", GONE + w as u32), db(&entries(w)));
        drop(write_db_files(&dir, &[file]));
    }
    dir
}

/// Python prometheus_client's `MultiProcessCollector` + `generate_latest`
/// on `dir`, the median of `repeat` runs, in milliseconds (as criterion
/// gives promshard's median); `None` (and why, on
/// stderr) without a Python that has prometheus_client (see
/// [`results::python`](crate::results::python)).
pub fn python_scrape_ms(dir: &Path, repeat: usize) -> Option<f64> {
    let script = "import statistics, sys, timeit\n\
                  from prometheus_client import CollectorRegistry, generate_latest\n\
                  from prometheus_client.multiprocess import MultiProcessCollector\n\
                  def scrape():\n    r = CollectorRegistry()\n    MultiProcessCollector(r, path=sys.argv[1])\n    return generate_latest(r)\n\
                  print(statistics.median(timeit.repeat(scrape, number=1, repeat=int(sys.argv[2]))) * 1000)\n";
    let out = Command::new(crate::results::python())
        .args(["-c", script])
        .arg(dir)
        .arg(repeat.to_string())
        .output()
        .map_err(|e| eprintln!("python: {e}"))
        .ok()?;
    if !out.status.success() {
        eprintln!("python: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

/// How many times to time Python on `series` samples: a few for small
/// directories, once for those that take seconds.
pub fn python_repeats(series: usize) -> usize {
    (200_000 / series.max(1)).clamp(1, 5)
}

/// Times `encode_dir` on `dir` as `group`/`name`, reported per merged
/// series.
pub fn bench_dir(c: &mut Criterion, group: &str, name: &str, dir: &Path, series: u64) {
    let mut group = c.benchmark_group(group);
    group
        .throughput(Throughput::Elements(series))
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    group.bench_function(name, |b| b.iter(|| black_box(promshard::multiprocess::encode_dir(dir, Format::Prometheus))));
    group.finish();
}

/// The medians of `rounds` scrapes of each of `dirs`, after one each
/// (which folds what it can); interleaved, so that a load on the machine
/// that comes and goes weighs on every directory alike.
pub fn median_scrapes<const N: usize>(dirs: [&Path; N], rounds: usize) -> [Duration; N] {
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

/// The worker counts every directory scrape is measured at.
pub const WORKER_COUNTS: [usize; 4] = [1, 8, 32, 128];

/// What one scrape bench measures: directories of [`WORKER_COUNTS`]
/// workers that each record `series` series with `record`, optionally the
/// 32-worker one again after 2,000 dead workers, and Python's collector on
/// equivalent directories of `python_entries(worker)` counter files.
pub struct Growth {
    /// `1k`, `10k`: in group names (`scrape_<size>`) and results.
    pub size: &'static str,
    pub series: usize,
    pub record: fn(usize),
    pub python_entries: fn(usize) -> Vec<(String, f64)>,
    pub with_dead: bool,
}

/// Runs a [`Growth`]. Forks every worker first, so it must be called
/// before this process records or scrapes anything.
pub fn growth(g: Growth) {
    use crate::results::record;
    let group = format!("scrape_{}", g.size);
    let live: Vec<(usize, PathBuf, Workers)> = WORKER_COUNTS
        .iter()
        .map(|&w| {
            let dir = fresh_dir(&format!("{}-{w}", g.size));
            let held = workers(&dir, w, w, g.record);
            (w, dir, held)
        })
        .collect();
    // 32 live workers and 2,000 dead ones, folded as a scrape would.
    let churned = g.with_dead.then(|| {
        let dir = fresh_dir(&format!("{}-churned", g.size));
        let held = workers(&dir, 2032, 32, g.record);
        promshard::multiprocess::compact_dir(&dir);
        (dir, held)
    });

    let mut c = Criterion::default().configure_from_args();
    for (w, dir, _) in &live {
        bench_dir(&mut c, &group, &format!("{w}_workers"), dir, (w * g.series) as u64);
    }
    if let Some((dir, _)) = &churned {
        bench_dir(&mut c, &group, "32_workers_2000_dead", dir, (32 * g.series) as u64);
        // The ratio the target is about, from interleaved scrapes.
        let files = promshard::multiprocess::inspect(dir).unwrap().len();
        let [none, dead] = median_scrapes([&live[2].1, dir], 200);
        record(
            "scrape.jsonl",
            &[
                ("kind", "dead_ratio".into()),
                ("size", g.size.into()),
                ("files", files.into()),
                ("none_ns", (none.as_nanos() as f64).into()),
                ("dead_ns", (dead.as_nanos() as f64).into()),
                ("rounds", 200usize.into()),
            ],
        );
    }
    c.final_summary();
    if let Some((dir, held)) = churned {
        drop(held);
        let _ = std::fs::remove_dir_all(dir);
    }
    for (_, dir, held) in live {
        drop(held);
        let _ = std::fs::remove_dir_all(dir);
    }

    let python = |workers: usize, name: &str| {
        let dir = python_dir(&format!("{}-{name}", g.size), workers, g.python_entries);
        let repeat = python_repeats(workers * g.series);
        if let Some(ms) = python_scrape_ms(&dir, repeat) {
            record(
                "scrape.jsonl",
                &[
                    ("kind", "python".into()),
                    ("size", g.size.into()),
                    ("workers", workers.into()),
                    ("name", name.into()),
                    ("ms", ms.into()),
                    ("median_of", repeat.into()),
                ],
            );
        }
        let _ = std::fs::remove_dir_all(dir);
    };
    for w in WORKER_COUNTS {
        python(w, &format!("{w}_workers"));
    }
    if g.with_dead {
        python(2032, "32_workers_2000_dead");
    }
}
