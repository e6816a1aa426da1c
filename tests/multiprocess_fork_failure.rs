//! Attacks "`fork()` is safe: a child gets a fresh shard of its own" when
//! the child cannot create that shard (here: no file descriptor left, an
//! `RLIMIT_NOFILE` the parent lowered and filled before forking; as root,
//! permission bits would not stop the `open`). The child then records
//! into private memory that no scrape ever sees. That may be the best it
//! can do, but it must not be silent: it must be reported in the log and
//! in a self-metric of the parent's next scrape.
//!
//! Assumptions to adjust with the fix: the log record is any record at
//! warn level or worse, from the child or the parent, that mentions
//! "fork"; the self-metric is any sample whose name starts with
//! `promshard_` and contains `fork`, with a value of at least 1 (e.g.
//! `promshard_fork_shard_failures_total`). See [`fork_self_metric`].

mod harness;

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use harness::{TempDir, fork_child, isolated, own_text, parse_samples, wait_timeout};
use promshard::{Counter, metric};

/// Jobs done.
#[metric]
static ORPHAN_JOBS_TOTAL: Counter;

/// Where every process of the scenario appends its log records: opened
/// (O_APPEND) before the descriptors run out, so a child that has none
/// left can still log through the inherited one.
static LOG_FILE: OnceLock<std::fs::File> = OnceLock::new();

struct FileLogger;

impl log::Log for FileLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let line = format!("{} {} {}\n", std::process::id(), record.level(), record.args());
        let _ = std::io::stderr().write_all(line.as_bytes());
        if let Some(mut file) = LOG_FILE.get() {
            let _ = file.write_all(line.as_bytes());
        }
    }
    fn flush(&self) {}
}

/// The sum of `promshard_*fork*` samples.
fn fork_self_metric(text: &str) -> Option<f64> {
    let samples: Vec<_> = parse_samples(text)
        .into_iter()
        .filter(|s| s.name.starts_with("promshard_") && s.name.contains("fork"))
        .collect();
    (!samples.is_empty()).then(|| samples.iter().map(|s| s.value).sum())
}

fn scenario() {
    let base = TempDir::new("no-descriptors");
    let dir = base.path().join("shards");
    let log_path = base.path().join("log");
    LOG_FILE.set(std::fs::OpenOptions::new().append(true).create(true).open(&log_path).unwrap()).unwrap();
    log::set_boxed_logger(Box::new(FileLogger)).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    promshard::multiprocess::init(&dir).unwrap();
    ORPHAN_JOBS_TOTAL.inc();
    let _ = own_text();

    // No descriptor left: the child's open() of its new shard fails.
    let (soft, hard) = harness::get_rlimit(libc::RLIMIT_NOFILE);
    harness::set_rlimit(libc::RLIMIT_NOFILE, 64, hard);
    let mut filler = Vec::new();
    while let Ok(file) = std::fs::File::open("/dev/null") {
        filler.push(file);
    }
    let child = fork_child(|| {
        ORPHAN_JOBS_TOTAL.inc_by(100);
        let _ = own_text();
        0
    });
    drop(filler);
    harness::set_rlimit(libc::RLIMIT_NOFILE, soft, hard);
    let status = wait_timeout(child, Duration::from_secs(20));
    assert!(status.is_some_and(|s| libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0), "the child ran: {status:?}");

    let text = own_text();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let logged = log.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        (l.contains(" warn ") || l.contains(" error ")) && l.contains("fork")
    });
    let metric = fork_self_metric(&text);
    let jobs = harness::value_in(&text, "orphan_jobs_total", &[]);
    let mut wrong = Vec::new();
    if !logged {
        wrong.push(format!("nothing at warn level or worse mentions the fork in the log; it holds: {log:?}"));
    }
    if !metric.is_some_and(|v| v >= 1.0) {
        wrong.push(format!(
            "the parent's next scrape has no promshard_*fork* self-metric of at least 1 (found {metric:?})"
        ));
    }
    assert!(
        wrong.is_empty(),
        "a child whose shard could not be created after fork() recorded 100 jobs into private memory (the \
         parent's scrape shows orphan_jobs_total {jobs:?}), and nothing reports it:\n- {}",
        wrong.join("\n- ")
    );
}

#[test]
fn child_whose_shard_cannot_be_created_after_fork() {
    isolated("child_whose_shard_cannot_be_created_after_fork", Duration::from_secs(60), scenario);
}
