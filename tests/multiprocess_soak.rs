//! Attacks "churn costs nothing" over a long run: one long-lived master
//! records and scrapes while thousands of short-lived workers come and go,
//! each recording a `bounded` label value nobody used before. Every
//! compaction that meets a new value writes an archive with a new schema;
//! a long-lived scraper must keep reading the archive (no counter may ever
//! fall back, which Prometheus would read as a reset) and compaction must
//! keep folding dead workers in (the directory must not grow).
//!
//! Totals are checked exactly after every cycle. The run is bounded in
//! time: `PROMSHARD_SOAK_SECS` seconds of cycles (default 25, so the test
//! stays well under 40 s), and at most `PROMSHARD_SOAK_CYCLES` cycles
//! (default 100,000).

mod harness;

use std::time::{Duration, Instant};

use harness::{TempDir, fork_child, isolated, own_text, parse_samples, wait_timeout};
use promshard::{Counter, Histogram, metric};

/// Jobs done.
#[metric]
static SOAK_JOBS_TOTAL: Counter;

/// Hits by route; every worker brings a new route.
#[metric(labels(route = bounded(4)))]
static SOAK_ROUTE_HITS_TOTAL: Counter;

/// Job sizes.
#[metric(buckets = [1.0, 3.0])]
static SOAK_JOB_SIZE: Histogram;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn soak() {
    let secs = env_u64("PROMSHARD_SOAK_SECS", 25);
    let max_cycles = env_u64("PROMSHARD_SOAK_CYCLES", 100_000);
    let base = TempDir::new("soak");
    let dir = base.path().join("shards");
    promshard::multiprocess::init(&dir).unwrap();
    SOAK_JOBS_TOTAL.inc();
    SOAK_ROUTE_HITS_TOTAL.with(("/master",)).inc();
    let (mut jobs, mut hits, mut observations) = (1u64, 1u64, 0u64);

    let started = Instant::now();
    let mut cycle = 0u64;
    let mut last_jobs = 0.0;
    while cycle < max_cycles && started.elapsed() < Duration::from_secs(secs) {
        let amount = cycle % 5 + 1;
        let route = format!("/w{cycle}");
        let pid = fork_child(|| {
            SOAK_JOBS_TOTAL.inc_by(amount);
            SOAK_ROUTE_HITS_TOTAL.with((route.as_str(),)).inc_by(amount);
            SOAK_JOB_SIZE.observe(amount as f64);
            0
        });
        let status = wait_timeout(pid, Duration::from_secs(10));
        assert_eq!(
            status.map(harness::describe_status).as_deref(),
            Some("exit code 0"),
            "cycle {cycle}: worker {pid} did not exit cleanly"
        );
        jobs += amount;
        hits += amount;
        observations += 1;

        // The master's own scrape (which compacts the dead worker), then
        // an explicit compaction, as a sidecar would run.
        let text = own_text();
        promshard::multiprocess::compact_dir(&dir);
        let samples = parse_samples(&text);
        let total = |name: &str| -> f64 { samples.iter().filter(|s| s.name == name).map(|s| s.value).sum() };
        let seen_jobs = total("soak_jobs_total");
        let seen_hits = total("soak_route_hits_total");
        let seen_count = total("soak_job_size_count");
        let errors = harness::shard_errors(&text);
        let files = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".promshard")))
            .count();
        let context = || {
            format!(
                "cycle {cycle} ({} distinct routes so far, {:.1}s in): jobs {seen_jobs} (want {jobs}), route hits \
                 {seen_hits} (want {hits}), histogram count {seen_count} (want {observations}), shard errors \
                 {errors}, {files} .promshard files",
                cycle + 2,
                started.elapsed().as_secs_f64()
            )
        };
        assert!(seen_jobs >= last_jobs, "a counter went backwards (Prometheus reads a reset): {}", context());
        last_jobs = seen_jobs;
        assert!(
            seen_jobs == jobs as f64 && seen_hits == hits as f64 && seen_count == observations as f64,
            "totals are wrong: {}",
            context()
        );
        assert_eq!(errors, 0.0, "a scrape skipped a file: {}", context());
        // Nothing per schema outlives the files that use it: the decoded
        // schemas in use follow the files (the master's, the archive's, a
        // worker's or two), not the thousands of archives written so far.
        let schemas = promshard::__private::schemas_in_use();
        assert!(schemas <= 6, "{schemas} decoded schemas still held: {}", context());
        assert!(
            files <= 2,
            "dead workers are no longer compacted (only the master's shard and the archive should be left): {}",
            context()
        );
        cycle += 1;
    }
    let _ = writeln_stderr(&format!(
        "soak: {cycle} cycles in {:.1}s, totals exact every cycle",
        started.elapsed().as_secs_f64()
    ));
    assert!(
        cycle > 300,
        "only {cycle} cycles ran in {secs}s: too few to reach the 257th distinct archive schema; the machine is too \
         slow for this budget (raise PROMSHARD_SOAK_SECS)"
    );
}

fn writeln_stderr(line: &str) -> std::io::Result<()> {
    use std::io::Write;
    writeln!(std::io::stderr(), "{line}")
}

#[test]
fn thousands_of_workers_with_new_bounded_values() {
    let secs = env_u64("PROMSHARD_SOAK_SECS", 25);
    isolated("thousands_of_workers_with_new_bounded_values", Duration::from_secs(secs + 60), soak);
}
