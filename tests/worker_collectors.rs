//! `register_worker_collector`: a collector registered before the fork
//! reads each worker's own pool, and a scrape answered by one process
//! shows every live worker's families combined by the registered mode,
//! though the workers never scrape; dead workers drop out and leave no
//! file behind after churn; a collector that panics in one worker costs
//! only that worker's families.

mod harness;
mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use harness::{POOL, TempDir, Worker, eventually, isolated, own_text, pool_worker, value_in};
use promshard::{Collector, GaugeMode, MetricWriter};

struct PerWorker;

impl Collector for PerWorker {
    fn collect(&self, out: &mut MetricWriter<'_>) {
        let pool = POOL.load(Ordering::SeqCst) as f64;
        if pool == 13.0 {
            panic!("a collector bug in one worker");
        }
        out.gauge("wc_pool_size", "Connections of each worker's pool.").sample(&[("db", "main")], pool);
    }
}

struct Summed;

impl Collector for Summed {
    fn collect(&self, out: &mut MetricWriter<'_>) {
        let pool = POOL.load(Ordering::SeqCst) as f64;
        out.counter("wc_jobs", "Jobs over live workers.").sample(&[], pool * 2.0);
        out.histogram("wc_wait_seconds", "Waits over live workers.").histogram(&[], &[(0.5, 1), (2.0, 3)], pool);
    }
}

struct Largest;

impl Collector for Largest {
    fn collect(&self, out: &mut MetricWriter<'_>) {
        out.gauge("wc_queue_max", "The longest queue of any live worker.")
            .sample(&[], POOL.load(Ordering::SeqCst) as f64);
    }
}

/// Published files, and half-written ones of dead processes: a live
/// process's file being written (`.w.part`) is there only for a moment.
fn side_files(dir: &std::path::Path) -> usize {
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".collected-"))
        .collect();
    let published = names.iter().filter(|n| n.ends_with(".w")).count();
    let orphans = names
        .iter()
        .filter(|n| n.ends_with(".w.part") && !names.contains(&n.trim_end_matches(".part").to_owned()))
        .count();
    published + orphans
}

fn pool_scenario() {
    let dir = TempDir::new("worker-collectors");
    promshard::multiprocess::init(dir.path()).unwrap();
    promshard::set_callback_interval(Duration::from_millis(20));
    promshard::register_worker_collector(PerWorker, GaugeMode::LiveAll);
    promshard::register_worker_collector(Summed, GaugeMode::LiveSum);
    promshard::register_worker_collector(Largest, GaugeMode::LiveMax);
    POOL.store(1, Ordering::SeqCst);
    let wait = Duration::from_secs(20);
    let mut workers: Vec<Worker> = (0..3).map(|_| Worker::spawn(pool_worker)).collect();
    let pids: Vec<String> = workers.iter_mut().map(|w| w.ask("pid", wait)).collect();
    for (i, w) in workers.iter_mut().enumerate() {
        assert_eq!(w.ask(&format!("pool {}", 10 * (i + 1)), wait), "ok");
    }
    let me = std::process::id().to_string();
    let text = eventually("every live worker, by its mode", |t| {
        value_in(t, "wc_jobs_total", &[]) == Some(2.0 * (1.0 + 10.0 + 20.0 + 30.0))
            && value_in(t, "wc_queue_max", &[]) == Some(30.0)
            && pids.iter().enumerate().all(|(i, pid)| {
                value_in(t, "wc_pool_size", &[("db", "main"), ("pid", pid)]) == Some(10.0 * (i as f64 + 1.0))
            })
    });
    assert_eq!(value_in(&text, "wc_pool_size", &[("db", "main"), ("pid", &me)]), Some(1.0));
    assert_eq!(value_in(&text, "wc_wait_seconds_bucket", &[("le", "2.0")]), Some(12.0), "4 processes × 3");
    assert_eq!(value_in(&text, "wc_wait_seconds_sum", &[]), Some(61.0));

    // One worker's collector panics: only its families of that collector
    // are missing; the rest of the scrape holds.
    assert_eq!(workers[1].ask("pool 13", wait), "ok");
    eventually("a panicking worker's family is left out", |t| {
        value_in(t, "wc_pool_size", &[("db", "main"), ("pid", &pids[1])]).is_none()
            && value_in(t, "wc_jobs_total", &[]) == Some(2.0 * (1.0 + 10.0 + 13.0 + 30.0))
    });

    // A killed worker drops out, and its file goes.
    workers[2].kill();
    eventually("a dead worker drops out", |t| {
        value_in(t, "wc_queue_max", &[]) == Some(13.0)
            && value_in(t, "wc_pool_size", &[("db", "main"), ("pid", &pids[2])]).is_none()
    });
    assert!(side_files(dir.path()) <= 3, "{} side files for 3 live processes", side_files(dir.path()));

    // Churn: workers that come and go leave no files behind.
    for round in 0..20 {
        let mut w = Worker::spawn(pool_worker);
        assert_eq!(w.ask(&format!("pool {}", 100 + round), wait), "ok");
        eventually("a new worker shows", |t| value_in(t, "wc_queue_max", &[]) == Some(100.0 + round as f64));
        w.exit(wait).expect("the worker exits");
    }
    eventually("the churned workers are gone", |t| value_in(t, "wc_queue_max", &[]) == Some(13.0));
    assert!(side_files(dir.path()) <= 3, "{} side files after churn", side_files(dir.path()));
    workers.remove(2);
    for w in workers.iter_mut().rev() {
        w.exit(wait).expect("the worker exits");
    }
}

#[test]
fn a_pool_shows_every_live_workers_collectors() {
    isolated("a_pool_shows_every_live_workers_collectors", Duration::from_secs(120), pool_scenario);
}

#[test]
fn in_memory_mode_worker_collectors_run_at_the_scrape() {
    isolated("in_memory_mode_worker_collectors_run_at_the_scrape", Duration::from_secs(30), || {
        promshard::register_worker_collector(Largest, GaugeMode::LiveMax);
        POOL.store(5, Ordering::SeqCst);
        assert_eq!(value_in(&own_text(), "wc_queue_max", &[]), Some(5.0));
        POOL.store(6, Ordering::SeqCst);
        assert_eq!(value_in(&own_text(), "wc_queue_max", &[]), Some(6.0));
    });
}

/// Registered at start-up, before the pool's directory is chosen: the
/// workers forked after `multiprocess::init` publish all the same,
/// though no process has scraped yet.
fn registered_before_init() {
    promshard::set_callback_interval(Duration::from_millis(20));
    promshard::register_worker_collector(Largest, GaugeMode::LiveMax);
    let dir = TempDir::new("worker-collectors-init");
    promshard::multiprocess::init(dir.path()).unwrap();
    POOL.store(1, Ordering::SeqCst);
    let wait = Duration::from_secs(20);
    let mut workers: Vec<Worker> = (0..2).map(|_| Worker::spawn(pool_worker)).collect();
    assert_eq!(workers[0].ask("pool 40", wait), "ok");
    assert_eq!(workers[1].ask("pool 7", wait), "ok");
    eventually("the workers' collectors, though they never scraped", |t| {
        value_in(t, "wc_queue_max", &[]) == Some(40.0)
    });
    for w in workers.iter_mut().rev() {
        w.exit(wait).expect("the worker exits");
    }
}

#[test]
fn a_collector_registered_before_init_runs_in_every_worker() {
    isolated(
        "a_collector_registered_before_init_runs_in_every_worker",
        Duration::from_secs(60),
        registered_before_init,
    );
}

struct AlwaysPanics;

impl Collector for AlwaysPanics {
    fn collect(&self, out: &mut MetricWriter<'_>) {
        out.gauge("wc_never", "Never written: the collector panics first.").sample(&[], 1.0);
        panic!("the queue is gone");
    }
}

/// The master's publisher runs a panicking collector every millisecond
/// (the panic hook with it, RUST_BACKTRACE set) while the master forks:
/// every child answers its scrapes, which run the collector again.
fn forks_while_a_collector_panics() {
    let dir = TempDir::new("worker-collectors-panic-forks");
    promshard::multiprocess::init(dir.path()).unwrap();
    promshard::set_callback_interval(Duration::from_millis(1));
    promshard::register_worker_collector(AlwaysPanics, GaugeMode::LiveSum);
    harness::forked_children_keep_scraping(60);
    assert!(value_in(&own_text(), "wc_never", &[]).is_none());
}

#[test]
fn forks_while_a_collector_panics_leave_every_child_working() {
    let setup = harness::Setup { env: vec![("RUST_BACKTRACE".into(), "1".into())], cwd: None };
    harness::isolated_with(
        "forks_while_a_collector_panics_leave_every_child_working",
        Duration::from_secs(120),
        setup,
        forks_while_a_collector_panics,
    );
}

/// `multiprocess::encode_dir` (what `promshard serve`, `promshard dump`
/// and `Pusher::directory` render) shows the workers' collectors too, as
/// a worker's own scrape does, and removes nothing: a reader changes no
/// file of the directory.
fn read_by_a_sidecar() {
    let dir = TempDir::new("worker-collectors-sidecar");
    promshard::multiprocess::init(dir.path()).unwrap();
    promshard::set_callback_interval(Duration::from_millis(20));
    promshard::register_worker_collector(PerWorker, GaugeMode::LiveAll);
    promshard::register_worker_collector(Largest, GaugeMode::LiveMax);
    POOL.store(1, Ordering::SeqCst);
    let wait = Duration::from_secs(20);
    let mut workers: Vec<Worker> = (0..2).map(|_| Worker::spawn(pool_worker)).collect();
    let pids: Vec<String> = workers.iter_mut().map(|w| w.ask("pid", wait)).collect();
    assert_eq!(workers[0].ask("pool 40", wait), "ok");
    assert_eq!(workers[1].ask("pool 7", wait), "ok");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let me = std::process::id().to_string();
    loop {
        let text = harness::encode_dir_text(dir.path());
        let each = |pid: &str| value_in(&text, "wc_pool_size", &[("db", "main"), ("pid", pid)]);
        if value_in(&text, "wc_queue_max", &[]) == Some(40.0)
            && each(&pids[0]) == Some(40.0)
            && each(&pids[1]) == Some(7.0)
            && each(&me) == Some(1.0)
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "encode_dir never showed the workers' collectors:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A dead worker's file: left out by the reader, but not removed by it.
    workers[0].kill();
    let text = harness::encode_dir_text(dir.path());
    assert_eq!(value_in(&text, "wc_queue_max", &[]), Some(7.0));
    assert_eq!(side_files(dir.path()), 3, "a reader removes nothing");
    eventually("a scrape of a pool process removes it", |_| side_files(dir.path()) == 2);
    workers.remove(0);
    workers[0].exit(wait).expect("the worker exits");
}

#[test]
fn a_sidecar_reading_the_directory_shows_the_workers_collectors() {
    isolated(
        "a_sidecar_reading_the_directory_shows_the_workers_collectors",
        Duration::from_secs(60),
        read_by_a_sidecar,
    );
}

/// Descriptors the master holds so that its next child cannot make a
/// shard; the child lets go of its copies from inside its first
/// collection, before its publisher writes anything.
static FILLER: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
static MASTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

struct Pool;

impl Collector for Pool {
    fn collect(&self, out: &mut MetricWriter<'_>) {
        if std::process::id() != MASTER.load(Ordering::SeqCst) {
            FILLER.lock().unwrap().clear();
        }
        out.gauge("wc_fallback_pool", "Each worker's pool.").sample(&[], POOL.load(Ordering::SeqCst) as f64);
    }
}

fn observer(command: &str) -> String {
    match command.split_once(' ') {
        Some(("show", pid)) => format!("{:?}", value_in(&own_text(), "wc_fallback_pool", &[("pid", pid)])),
        _ => pool_worker(command),
    }
}

/// A child forked when no descriptor is left records into private memory
/// (its shard could not be made). Its publisher must not write its
/// families as its parent's: the shard name it still has is the parent's.
fn child_without_a_shard() {
    let dir = TempDir::new("worker-collectors-fallback");
    promshard::multiprocess::init(dir.path()).unwrap();
    MASTER.store(std::process::id(), Ordering::SeqCst);
    promshard::set_callback_interval(Duration::from_millis(20));
    promshard::register_worker_collector(Pool, GaugeMode::LiveAll);
    POOL.store(1, Ordering::SeqCst);
    let wait = Duration::from_secs(20);
    let mut watcher = Worker::spawn(observer);
    let master = std::process::id().to_string();
    let show = format!("show {master}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while watcher.ask(&show, wait) != "Some(1.0)" {
        assert!(std::time::Instant::now() < deadline, "the master's collector never showed");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The master publishes no more for a while: what its file says from
    // now on is whatever was last written there.
    promshard::set_callback_interval(Duration::from_secs(3600));
    std::thread::sleep(Duration::from_millis(200));

    let (soft, hard) = harness::get_rlimit(libc::RLIMIT_NOFILE);
    harness::set_rlimit(libc::RLIMIT_NOFILE, 64, hard);
    {
        let mut filler = FILLER.lock().unwrap();
        while let Ok(file) = std::fs::File::open("/dev/null") {
            filler.push(file);
        }
    }
    let child = harness::fork_child(|| {
        POOL.store(99, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        0
    });
    FILLER.lock().unwrap().clear();
    harness::set_rlimit(libc::RLIMIT_NOFILE, soft, hard);
    let status = harness::wait_timeout(child, wait).expect("the child exits");
    assert_eq!(status, 0, "{}", harness::describe_status(status));
    assert_eq!(watcher.ask(&show, wait), "Some(1.0)", "the master's families, as the master wrote them");
    watcher.exit(wait).expect("the watcher exits");
}

#[test]
fn a_child_without_a_shard_never_publishes_as_its_parent() {
    isolated("a_child_without_a_shard_never_publishes_as_its_parent", Duration::from_secs(60), child_without_a_shard);
}

/// The disk under the pool's directory fills up: each worker's publisher
/// fails at every interval, and says so once, not every interval for as
/// long as the disk stays full (a log that grows on a full disk); once
/// space is back it publishes again, and a new failure is said again.
fn disk_full_for_the_publisher() {
    let mount = std::path::PathBuf::from(std::env::var_os("PROMSHARD_ADV_TMPFS").expect("the tmpfs path"));
    harness::capture_logs();
    promshard::multiprocess::init(mount.join("shards")).unwrap();
    promshard::set_callback_interval(Duration::from_millis(5));
    promshard::register_worker_collector(Largest, GaugeMode::LiveMax);
    eventually("the first publication", |_| side_files(&mount.join("shards")) == 1);
    let fs = harness::Tmpfs { path: mount.clone() };
    let not_published = || harness::warnings().iter().filter(|w| w.contains("not published")).count();
    for round in 1..=2 {
        fs.fill_leaving(0);
        // A hundred intervals on a full disk.
        std::thread::sleep(Duration::from_millis(500));
        let said = not_published();
        assert_eq!(said, round, "round {round}: said {said} times; first: {:?}", harness::warnings().first());
        // Every failed publication takes its half-written file away. One
        // seen now may be the attempt under way (every 5 ms): left
        // behind means it stays.
        let part = || {
            std::fs::read_dir(mount.join("shards"))
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".part"))
        };
        eventually("no half-written file is left behind", |_| !part());
        std::fs::remove_file(mount.join("filler")).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    std::mem::forget(fs); // the parent test unmounts it
}

#[test]
fn a_full_disk_is_logged_once_not_every_interval() {
    let name = "a_full_disk_is_logged_once_not_every_interval";
    if harness::in_any_child() && !harness::is_child(name) {
        return;
    }
    let fs = if harness::in_any_child() {
        None
    } else {
        match harness::Tmpfs::mount("1m") {
            Ok(fs) => Some(fs),
            Err(why) => {
                support::skip_or_fail(&format!("cannot mount a tmpfs to fill ({why}); run as root"));
                return;
            }
        }
    };
    if let Some(fs) = &fs {
        std::fs::create_dir(fs.path.join("shards")).unwrap();
        harness::set_mode(&fs.path.join("shards"), 0o700);
    }
    let env = fs.iter().map(|fs| ("PROMSHARD_ADV_TMPFS".to_owned(), fs.path.clone().into())).collect();
    harness::isolated_with(
        name,
        Duration::from_secs(60),
        harness::Setup { env, cwd: None },
        disk_full_for_the_publisher,
    );
    drop(fs);
}
