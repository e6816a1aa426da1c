//! promshard's own counters in a pre-fork pool. Each forked worker
//! overflows a bounded label, records a value an inline list refuses,
//! observes NaN, has a collector panic in its scrapes and meets a bad
//! shard file; a thread meanwhile scrapes through one worker after
//! another and through the directory. Every `promshard_*_total` sample
//! must never go down from one scrape to the next, whoever answers, and
//! must equal the sum over the workers; after workers are SIGKILLed and
//! compaction folds their shards into the archive, the counts remain.
//!
//! Before the counts lived in the arena, each was the memory of the
//! process that answered: a scrape by another worker showed other
//! values (a counter going down), and a worker's overflow was invisible
//! unless that very worker answered.

mod harness;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::{TempDir, Worker, encode_dir_text, isolated, isolated_with, own_text, parse_samples, unescape};
use promshard::{Collector, Counter, Histogram, MetricWriter, metric};

/// Hits by route, two routes kept per process.
#[metric(labels(route = bounded(2)))]
static SELF_ROUTES_TOTAL: Counter;

/// Logins by method; any other method is refused.
#[metric(labels(method = ["password", "sso"]))]
static SELF_LOGINS_TOTAL: Counter;

/// Request latency.
#[metric(unit = "seconds", buckets = [0.1, 1.0])]
static SELF_LATENCY_SECONDS: Histogram;

const WORKERS: usize = 4;
const DEADLINE: Duration = Duration::from_secs(30);

/// In this process, whether the next scrape's collector panics.
static PANIC_NEXT: AtomicBool = AtomicBool::new(false);

/// A collector with a bug that shows when asked.
struct Flaky;

impl Collector for Flaky {
    fn collect(&self, out: &mut MetricWriter<'_>) {
        if PANIC_NEXT.swap(false, Ordering::SeqCst) {
            panic!("expected: a collector bug in one worker's scrape");
        }
        out.gauge("self_flaky_up", "The flaky collector answered.").sample(&[], 1.0);
    }
}

/// A worker's commands: `<action> <n>`, or `scrape` (its own scrape as
/// text).
fn handle(command: &str) -> String {
    let (action, n) = command.split_once(' ').unwrap_or((command, "0"));
    let n: usize = n.parse().unwrap();
    match action {
        "overflow" => {
            // Two routes fill the label; every other value overflows.
            SELF_ROUTES_TOTAL.with(("/kept-a",)).inc();
            SELF_ROUTES_TOTAL.with(("/kept-b",)).inc();
            for k in 0..n {
                SELF_ROUTES_TOTAL.with((format!("/spill-{}-{k}", std::process::id()).as_str(),)).inc();
            }
        }
        "refuse" => (0..n).for_each(|_| SELF_LOGINS_TOTAL.with(("magic-link",)).inc()),
        "nan" => (0..n).for_each(|_| SELF_LATENCY_SECONDS.observe(f64::NAN)),
        "panic" => {
            for _ in 0..n {
                PANIC_NEXT.store(true, Ordering::SeqCst);
                let text = own_text();
                assert!(!PANIC_NEXT.load(Ordering::SeqCst) && !text.contains("self_flaky_up"), "{text}");
            }
        }
        "scrape" => return own_text(),
        other => panic!("unknown command {other:?}"),
    }
    "ok".to_owned()
}

/// Every `promshard_*_total` sample of a scrape, by name and labels.
type Counts = BTreeMap<(String, Vec<(String, String)>), f64>;

fn self_counts(text: &str) -> Counts {
    parse_samples(text)
        .into_iter()
        .filter(|s| s.name.starts_with("promshard_") && s.name.ends_with("_total"))
        .map(|s| {
            let mut labels = s.labels;
            labels.sort();
            ((s.name, labels), s.value)
        })
        .collect()
}

fn key(name: &str, labels: &[(&str, &str)]) -> (String, Vec<(String, String)>) {
    let mut labels: Vec<(String, String)> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    labels.sort();
    (name.to_owned(), labels)
}

fn shard_errors(counts: &Counts) -> f64 {
    counts.iter().filter(|((name, _), _)| name == "promshard_shard_errors_total").map(|(_, v)| v).sum()
}

/// What every scrape must show once the workers did their part: each
/// count summed over the workers (`per_worker` is each one's share of
/// overflow, refusals, NaNs and panics), and the bad file met once by
/// each of `scrapers` processes.
fn check_totals(text: &str, per_worker: &[usize], scrapers: usize, when: &str) {
    let counts = self_counts(text);
    let sum = per_worker.iter().sum::<usize>() as f64;
    let expected = [
        (key("promshard_label_overflow_total", &[("metric", "self_routes"), ("label", "route")]), sum),
        (key("promshard_label_refused_total", &[("metric", "self_logins")]), sum),
        (key("promshard_observations_dropped_total", &[("metric", "self_latency_seconds")]), sum),
        (key("promshard_collector_panics_total", &[]), sum),
        (key("promshard_fork_fallbacks_total", &[]), 0.0),
    ];
    for (key, want) in expected {
        assert_eq!(counts.get(&key), Some(&want), "{when}: {key:?} must be the sum over the workers:\n{text}");
    }
    assert_eq!(shard_errors(&counts), scrapers as f64, "{when}: the bad file, once per scraping process:\n{text}");
}

/// A thread's scrapes, in order: who answered, and the counts.
struct Scrapes {
    taken: Vec<(String, Counts)>,
}

impl Scrapes {
    /// Every sample of every scrape is at least its value in the scrape
    /// before (a sample never disappears either).
    fn assert_never_decreasing(&self) {
        for pair in self.taken.windows(2) {
            let ((before_by, before), (after_by, after)) = (&pair[0], &pair[1]);
            for (key, old) in before {
                let new = after.get(key).copied().unwrap_or(f64::NAN);
                assert!(
                    new >= *old,
                    "{key:?} went from {old} (scrape by {before_by}) to {new} (scrape by {after_by}), over {} scrapes",
                    self.taken.len()
                );
            }
        }
    }
}

/// Scrapes through each live worker in turn, and through the directory,
/// until `stop`; counts them in `done`.
fn scrape_until(
    workers: Arc<Vec<Mutex<Option<Worker>>>>,
    dir: &Path,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicUsize>,
) -> Scrapes {
    let mut scrapes = Scrapes { taken: Vec::new() };
    let mut turn = 0;
    while !stop.load(Ordering::SeqCst) {
        turn += 1;
        let (by, text) = if turn % 3 == 0 {
            ("the directory".to_owned(), encode_dir_text(dir))
        } else {
            let mut worker = workers[turn % WORKERS].lock().unwrap();
            let Some(worker) = worker.as_mut() else { continue };
            (format!("worker {}", worker.pid), unescape(&worker.ask("scrape", DEADLINE)))
        };
        scrapes.taken.push((by, self_counts(&text)));
        done.fetch_add(1, Ordering::SeqCst);
    }
    scrapes
}

/// Waits until the scraping thread took `n` more scrapes (a worker each,
/// or the directory), so that scrapes fall between every two steps.
fn let_scrape(done: &AtomicUsize, n: usize) {
    let until = done.load(Ordering::SeqCst) + n;
    let deadline = std::time::Instant::now() + DEADLINE;
    while done.load(Ordering::SeqCst) < until {
        assert!(std::time::Instant::now() < deadline, "the scraping thread is stuck");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn pre_fork_pool() {
    harness::quiet_expected_panics();
    let base = TempDir::new("self-metrics");
    let dir = base.path().join("shards");
    promshard::multiprocess::init(&dir).unwrap();
    SELF_LATENCY_SECONDS.observe(0.5);
    promshard::register_collector(Flaky);
    let workers: Arc<Vec<Mutex<Option<Worker>>>> =
        Arc::new((0..WORKERS).map(|_| Mutex::new(Some(Worker::spawn(handle)))).collect());
    let ask = |i: usize, command: &str| {
        let mut worker = workers[i].lock().unwrap();
        unescape(&worker.as_mut().expect("alive").ask(command, DEADLINE))
    };

    // From the start: the overflow series of the bounded label at zero,
    // in every shard; no refused or dropped series while none counts.
    let text = ask(1, "scrape");
    let counts = self_counts(&text);
    assert_eq!(
        counts.get(&key("promshard_label_overflow_total", &[("metric", "self_routes"), ("label", "route")])),
        Some(&0.0),
        "{text}"
    );
    assert!(!counts.keys().any(|(name, _)| name.contains("refused") || name.contains("dropped")), "{text}");
    assert_eq!(counts.get(&key("promshard_collector_panics_total", &[])), Some(&0.0), "{text}");
    assert_eq!(shard_errors(&counts), 0.0, "{text}");

    // Planted once the workers exist: each process that scrapes meets it.
    std::fs::write(dir.join("planted.promshard"), b"not a shard, but not blank either: kept by compaction\n").unwrap();
    let (stop, done) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let scraper = {
        let (workers, dir, stop, done) = (workers.clone(), dir.clone(), stop.clone(), done.clone());
        std::thread::spawn(move || scrape_until(workers, &dir, stop, done))
    };

    // Worker i's share is i + 1 of each; interleaved with the scrapes.
    let per_worker: Vec<usize> = (1..=WORKERS).collect();
    for action in ["overflow", "refuse", "nan", "panic", "scrape"] {
        for (i, n) in per_worker.iter().enumerate() {
            ask(i, &format!("{action} {n}"));
            let_scrape(&done, 3);
        }
    }
    // The parent scraped through `encode_dir` by now, or does here.
    let scrapers = WORKERS + 1;
    check_totals(&own_text(), &per_worker, scrapers, "the parent's scrape");
    for i in 0..WORKERS {
        check_totals(&ask(i, "scrape"), &per_worker, scrapers, &format!("a scrape by worker {i}"));
    }
    check_totals(&encode_dir_text(&dir), &per_worker, scrapers, "the directory");

    // Two workers die without a word; a live worker's scrape folds their
    // shards into the archive.
    for i in 0..2 {
        workers[i].lock().unwrap().take().expect("alive").kill();
        let_scrape(&done, 3);
    }
    for i in 2..WORKERS {
        check_totals(&ask(i, "scrape"), &per_worker, scrapers, &format!("worker {i}, after two were killed"));
    }
    let files = harness::shard_files(&dir);
    assert!(files.contains(&"archive.promshard".to_owned()), "compacted: {files:?}");
    assert_eq!(files.len(), 1 + 1 + (WORKERS - 2) + 1, "archive, parent, live workers, planted: {files:?}");

    // Then the rest; the parent's scrape compacts them too.
    for i in 2..WORKERS {
        workers[i].lock().unwrap().take().expect("alive").kill();
        let_scrape(&done, 3);
    }
    stop.store(true, Ordering::SeqCst);
    let scrapes = scraper.join().expect("the scraping thread");
    check_totals(&own_text(), &per_worker, scrapers, "the parent, every worker dead");
    check_totals(&encode_dir_text(&dir), &per_worker, scrapers, "the directory, every worker dead");
    let files = harness::shard_files(&dir);
    assert_eq!(files.len(), 3, "archive, parent, planted: {files:?}");

    let by_workers = scrapes.taken.iter().filter(|(by, _)| by.starts_with("worker")).count();
    assert!(
        by_workers >= 20 && scrapes.taken.len() > by_workers,
        "{} scrapes, {by_workers} by workers",
        scrapes.taken.len()
    );
    scrapes.assert_never_decreasing();
    let last = &scrapes.taken.last().expect("scrapes").1;
    let sum = per_worker.iter().sum::<usize>() as f64;
    for (key, value) in last {
        assert!(*value <= sum.max(scrapers as f64), "{key:?} is {value}, more than was counted");
    }
}

#[test]
fn self_metrics_are_summed_over_workers_and_never_go_down() {
    isolated("self_metrics_are_summed_over_workers_and_never_go_down", Duration::from_secs(120), pre_fork_pool);
}

/// A process that only reads a directory (a sidecar, the CLI) and meets
/// a bad file there does not lay its registry out to count it: that
/// would start a shard of its own in `PROMSHARD_DIR`.
fn reader_records_nothing() {
    let own = std::env::var_os(promshard::multiprocess::DIR_ENV).expect("set by the test");
    let base = TempDir::new("self-metrics-read");
    let read = base.path().join("read");
    std::fs::create_dir(&read).unwrap();
    std::fs::set_permissions(&read, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::write(read.join("planted.promshard"), b"garbage").unwrap();
    for _ in 0..2 {
        let text = encode_dir_text(&read);
        assert!(!text.contains("promshard_shard_errors"), "nothing of the reader's own:\n{text}");
    }
    assert!(!Path::new(&own).exists(), "the reader started a shard in {}", Path::new(&own).display());
}

#[test]
fn reading_a_directory_with_a_bad_file_records_nothing() {
    let base = TempDir::new("self-metrics-reader-env");
    let setup = harness::Setup {
        env: vec![(promshard::multiprocess::DIR_ENV.to_owned(), base.path().join("own").into_os_string())],
        cwd: None,
    };
    isolated_with("reading_a_directory_with_a_bad_file_records_nothing", Duration::from_secs(60), setup, || {
        reader_records_nothing()
    });
}
