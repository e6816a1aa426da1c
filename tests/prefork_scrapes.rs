//! The pre-fork example served as a user runs it (`cargo run --example
//! prefork_server`), scraped over HTTP while clients load it: seed 000's
//! verification, automated, and the same under chaos.
//!
//! - Scrapes land on whichever worker accepts them, yet an application
//!   counter never goes down or bounces, always lies between what the
//!   clients had seen answered and what they had sent, and once the load
//!   stops every scrape agrees with the clients exactly.
//! - With workers SIGKILLed at random and retired by `--max-requests`,
//!   no counter decreases between scrapes; at the end the merged count
//!   holds every answered request, plus at most the unanswered ones (a
//!   request whose handler returned just before its worker was killed was
//!   counted, its answer never sent); in-flight returns to 0; and the
//!   shard directory holds the live processes and one archive, however
//!   many workers came and went.
//! - SIGINT lets accepted requests finish before everything exits 0; a
//!   SIGKILLed master leaves no worker serving on alone.
//! - Every worker gzips `/metrics` for clients that accept it, and only
//!   for them, whatever `Accept-Encoding` they send.

mod harness;
mod http_client;
mod prefork;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prefork::{Pool, Scrape, get, scrape, serial};

/// What the clients did: requests sent, and answered, as they happen.
#[derive(Default)]
struct Load {
    sent: AtomicU64,
    answered: AtomicU64,
    failed: AtomicU64,
    /// Answers by (handler label, status).
    by_series: Mutex<BTreeMap<(String, u16), u64>>,
    stop: AtomicBool,
}

/// The request a client sends `n`-th, and the handler label it counts
/// under; `slow` adds the slow route.
fn request(n: u64, slow: bool) -> (&'static str, String) {
    match n % 10 {
        0 => ("/", "/".to_owned()),
        1 => ("/error", "/error".to_owned()),
        2 => ("/users/{id}", format!("/users/not-a-number-{n}")),
        3 if slow => ("/slow", "/slow?ms=30".to_owned()),
        _ => ("/users/{id}", format!("/users/{n}")),
    }
}

/// A client: one request after another until told to stop.
fn client(pool: &Pool, load: &Load, id: u64, slow: bool) {
    let mut n = id * 1_000_000;
    while !load.stop.load(Ordering::Relaxed) {
        n += 1;
        let (handler, target) = request(n, slow);
        load.sent.fetch_add(1, Ordering::SeqCst);
        match get(pool.addr, &target) {
            Some(response) => {
                load.answered.fetch_add(1, Ordering::SeqCst);
                *load.by_series.lock().unwrap().entry((handler.to_owned(), response.status)).or_default() += 1;
            }
            None => {
                load.failed.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// A scrape taken between two readings of the clients' progress: the
/// merged count can be no less than `answered_before` and no more than
/// `sent_after`.
struct Bracketed {
    answered_before: u64,
    sent_after: u64,
    scrape: Scrape,
}

fn bracketed(pool: &Pool, load: &Load) -> Option<Bracketed> {
    let answered_before = load.answered.load(Ordering::SeqCst);
    let scrape = scrape(pool.addr)?;
    let sent_after = load.sent.load(Ordering::SeqCst);
    Some(Bracketed { answered_before, sent_after, scrape })
}

/// Scrapes until the load stops, checking each scrape against the
/// clients and every counter series against the previous scrape; returns
/// the scrapes taken and how many got no answer.
fn watch(pool: &Pool, load: &Load) -> (Vec<Bracketed>, u64) {
    let mut taken: Vec<Bracketed> = Vec::new();
    let mut unanswered = 0;
    while !load.stop.load(Ordering::Relaxed) {
        let Some(now) = bracketed(pool, load) else {
            unanswered += 1;
            continue;
        };
        let counted = now.scrape.sum("http_requests_total");
        assert!(
            (now.answered_before as f64..=now.sent_after as f64).contains(&counted),
            "scrape by worker {} counts {counted} requests, outside [{} answered before it, {} sent after it]",
            now.scrape.worker,
            now.answered_before,
            now.sent_after
        );
        if let Some(before) = taken.last() {
            never_decreasing(&before.scrape, &now.scrape);
        }
        taken.push(now);
        std::thread::sleep(Duration::from_millis(20));
    }
    (taken, unanswered)
}

/// Every counter sample (requests, durations' buckets and counts, worker
/// starts and exits) of `after` is at least its value in `before`.
fn never_decreasing(before: &Scrape, after: &Scrape) {
    let counters = |name: &str| {
        name.ends_with("_total")
            || name.starts_with("http_request_duration_seconds_")
            || name == "process_cpu_seconds_total"
    };
    for ((name, labels), old) in &before.samples {
        // A pid's series goes when its worker does. promshard's own
        // counters are merged like the others, whoever answers.
        if !counters(name) || labels.iter().any(|(k, _)| k == "pid") {
            continue;
        }
        let new = after.samples.get(&(name.clone(), labels.clone())).copied().unwrap_or(f64::NAN);
        assert!(
            new >= *old,
            "{name}{labels:?} went from {old} (scrape by worker {}) to {new} (scrape by worker {})",
            before.worker,
            after.worker
        );
    }
}

/// The `http_requests_total` series the clients' answers predict.
fn expected(load: &Load) -> BTreeMap<Vec<(String, String)>, f64> {
    let by_series = load.by_series.lock().unwrap();
    by_series
        .iter()
        .map(|((handler, status), count)| {
            let mut labels = vec![
                ("handler".to_owned(), handler.clone()),
                ("method".to_owned(), "GET".to_owned()),
                ("status".to_owned(), status.to_string()),
            ];
            labels.sort();
            (labels, *count as f64)
        })
        .collect()
}

/// The non-zero series of `http_requests_total` in `scrape`.
fn counted(scrape: &Scrape) -> BTreeMap<Vec<(String, String)>, f64> {
    scrape.series("http_requests_total").into_iter().filter(|(_, v)| *v != 0.0).collect()
}

/// A scrape after the load, retried while the pool replaces a worker.
fn settled_scrape(pool: &Pool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(scrape) = scrape(pool.addr) {
            return scrape;
        }
        assert!(Instant::now() < deadline, "the pool stopped answering scrapes");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn scrapes_agree_whichever_worker_answers() {
    let _serial = serial();
    let pool = Pool::start(&["--workers", "4", "--threads", "2"]);
    let load = Load::default();
    let started = Instant::now();
    let (scrapes, unanswered) = std::thread::scope(|s| {
        for id in 0..4 {
            let (pool, load) = (&pool, &load);
            s.spawn(move || client(pool, load, id, false));
        }
        let watcher = s.spawn(|| watch(&pool, &load));
        std::thread::sleep(Duration::from_secs(3));
        load.stop.store(true, Ordering::Relaxed);
        watcher.join().unwrap()
    });
    let answered = load.answered.load(Ordering::SeqCst);
    let workers: BTreeSet<u32> = scrapes.iter().map(|b| b.scrape.worker).collect();
    eprintln!(
        "{answered} requests in {:?}, {} scrapes answered by {} workers",
        started.elapsed(),
        scrapes.len(),
        workers.len()
    );
    assert_eq!(load.failed.load(Ordering::SeqCst), 0, "no worker died, so every request is answered");
    assert_eq!(unanswered, 0, "every scrape is answered");
    assert!(
        scrapes.len() >= 20 && answered >= 200,
        "too little happened: {} scrapes, {answered} requests",
        scrapes.len()
    );
    assert!(workers.len() >= 2, "scrapes must land on several workers to show anything: {workers:?}");

    // The load has stopped: every scrape, whoever answers it, says the same,
    // and it is what the clients saw, series by series.
    let expected = expected(&load);
    let mut answered_by = BTreeSet::new();
    for _ in 0..12 {
        let scrape = settled_scrape(&pool);
        answered_by.insert(scrape.worker);
        assert_eq!(counted(&scrape), expected, "scrape by worker {}:\n{}", scrape.worker, scrape.text);
        assert_eq!(scrape.sum("http_requests_total"), answered as f64);
        assert_eq!(scrape.sum("http_requests_in_flight"), 0.0);
        // Every live process, each under its own pid, and nothing else.
        let mut processes = pool.workers();
        processes.push(pool.master);
        processes.sort_unstable();
        for family in ["process_cpu_seconds_total", "process_resident_memory_bytes", "process_start_time_seconds"] {
            assert_eq!(scrape.pids(family), processes, "{family} in the scrape by {}", scrape.worker);
        }
    }
    eprintln!("final scrapes answered by workers {answered_by:?}");

    let stopped = pool.stop();
    assert!(stopped.status.success(), "{}\n{}", stopped.status, stopped.stderr);
    let totals: f64 = stopped
        .stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("http_requests_total{"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum();
    assert_eq!(totals, answered as f64, "the master's last word:\n{}", stopped.stdout);
}

#[test]
fn killed_and_retired_workers_lose_no_count() {
    let _serial = serial();
    const THREADS: u64 = 2;
    let pool = Pool::start(&["--workers", "4", "--threads", "2", "--max-requests", "40"]);
    let load = Load::default();
    let kills = AtomicU64::new(0);
    let (scrapes, unanswered) = std::thread::scope(|s| {
        for id in 0..4 {
            let (pool, load) = (&pool, &load);
            s.spawn(move || client(pool, load, id, true));
        }
        // SIGKILLs a random worker every 60 to 180 ms.
        s.spawn(|| {
            let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
            let mut random = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            while !load.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(60 + random() % 120));
                let workers = pool.workers();
                if workers.is_empty() {
                    continue;
                }
                if pool.kill_worker(workers[(random() % workers.len() as u64) as usize]) {
                    kills.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let watcher = s.spawn(|| watch(&pool, &load));
        // Longer runs on demand, for soaking: PROMSHARD_CHAOS_SECONDS=600.
        let seconds = std::env::var("PROMSHARD_CHAOS_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
        std::thread::sleep(Duration::from_secs(seconds));
        load.stop.store(true, Ordering::Relaxed);
        watcher.join().unwrap()
    });

    // The master replaces the last workers killed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while settled_scrape(&pool).sum("prefork_workers") != 4.0 {
        assert!(Instant::now() < deadline, "the master did not bring the pool back to 4 workers");
        std::thread::sleep(Duration::from_millis(20));
    }
    // That scrape folded the last dead shards into the archive.
    let final_scrape = settled_scrape(&pool);
    let again = settled_scrape(&pool);
    assert_eq!(counted(&final_scrape), counted(&again), "after the load, scrapes agree");
    never_decreasing(&scrapes.last().unwrap().scrape, &final_scrape);
    let answered = load.answered.load(Ordering::SeqCst);
    let failed = load.failed.load(Ordering::SeqCst);
    let kills = kills.load(Ordering::Relaxed);
    let merged = final_scrape.sum("http_requests_total") as u64;
    let starts = final_scrape.sum("prefork_worker_starts_total");
    let exits = final_scrape.series("prefork_worker_exits_total");
    let exits_by = |how: &str| exits.iter().find(|(l, _)| l[0].1 == how).map_or(0.0, |(_, v)| *v);
    let files = pool.shard_files();
    eprintln!(
        "{answered} requests answered, {failed} not (their worker was killed); merged count {merged}: \
         {} counted but unanswered, {} lost before counting. {kills} workers SIGKILLed, {} retired, {starts} \
         started; {} scrapes ({unanswered} unanswered: killed mid-scrape); {} shard files at the end: {files:?}",
        merged.saturating_sub(answered),
        failed.saturating_sub(merged.saturating_sub(answered)),
        exits_by("retired"),
        scrapes.len(),
        files.len(),
    );
    // Every answer was counted before it was sent; every count was a
    // request sent. The difference is requests whose worker died between
    // counting and answering.
    assert!(
        answered <= merged && merged <= answered + failed,
        "{answered} answered, {failed} failed, {merged} counted"
    );
    for (labels, count) in expected(&load) {
        let merged = final_scrape.series("http_requests_total").get(&labels).copied().unwrap_or(0.0);
        assert!(merged >= count, "{labels:?}: {count} answered but {merged} counted");
    }
    // A kill cuts off at most the connections its worker had accepted:
    // one per thread.
    assert!(failed <= kills * THREADS, "{failed} unanswered requests for {kills} kills");
    assert_eq!(final_scrape.sum("http_requests_in_flight"), 0.0, "{}", final_scrape.text);
    assert!(kills >= 10 && exits_by("retired") >= 1.0, "too little chaos: {kills} kills, exits {exits:?}");
    assert!(exits_by("killed") >= 1.0 && exits_by("killed") <= kills as f64, "exits {exits:?}, {kills} kills");
    assert!(starts >= 4.0 + kills as f64, "{starts} workers started for {kills} kills");
    // The live processes (4 workers and the master) and one archive,
    // however many workers came and went: the scrapes folded the rest.
    assert!(files.len() <= 6, "{files:?}");

    let stopped = pool.stop();
    assert!(stopped.status.success(), "{}\n{}", stopped.status, stopped.stderr);
}

/// Whether `pid` has exited (gone, or a zombie nobody reaped yet).
fn exited(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rfind(')').is_none_or(|at| stat[at + 1..].trim_start().starts_with(['Z', 'X']))
}

#[test]
fn a_stop_lets_requests_finish_and_a_dead_master_leaves_no_worker() {
    let _serial = serial();
    // SIGINT, as Ctrl-C: the slow request the pool had accepted is
    // answered, then every process is gone and the master says it is done.
    let pool = Pool::start(&["--workers", "2", "--threads", "2"]);
    let workers = pool.workers();
    assert_eq!(workers.len(), 2);
    let addr = pool.addr;
    let slow = std::thread::spawn(move || get(addr, "/slow?ms=1500"));
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling the master we started.
    unsafe { libc::kill(pool.master as libc::pid_t, libc::SIGINT) };
    let answer = slow.join().unwrap().expect("the accepted request is answered during the stop");
    assert_eq!((answer.status, answer.body.as_str()), (200, "slept 1500 ms\n"));
    let stopped = pool.stop();
    assert!(stopped.status.success(), "{}\n{}", stopped.status, stopped.stderr);
    assert!(stopped.stdout.contains("stopped; requests counted over the whole run"), "{}", stopped.stdout);
    assert!(stopped.stdout.contains("http_requests_total{handler=\"/slow\",method=\"GET\",status=\"200\"} 1"));
    assert!(workers.iter().all(|&pid| exited(pid)), "workers outlived their master: {workers:?}");
    assert!(std::net::TcpStream::connect(addr).is_err(), "nobody listens any more");

    // SIGKILL, as the OOM killer: no stop at all, yet the workers notice
    // their master is gone and exit rather than serve on alone.
    let pool = Pool::start(&["--workers", "2", "--threads", "2"]);
    let workers = pool.workers();
    // SAFETY: killing the master we started.
    unsafe { libc::kill(pool.master as libc::pid_t, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !workers.iter().all(|&pid| exited(pid)) {
        assert!(Instant::now() < deadline, "workers {workers:?} outlived their killed master");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(std::net::TcpStream::connect(pool.addr).is_err(), "nobody listens any more");
}

/// Each line of a text exposition that is a sample, without its value.
fn series(text: &[u8]) -> BTreeSet<String> {
    let text = std::str::from_utf8(text).expect("a UTF-8 exposition");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.rsplit_once(' ').map_or(l, |(series, _)| series).to_owned())
        .collect()
}

#[test]
fn workers_gzip_metrics_for_the_clients_that_accept_it() {
    let _serial = serial();
    let pool = Pool::start(&["--workers", "2", "--threads", "2"]);
    get(pool.addr, "/users/7").expect("an answer");
    let plain = series(scrape(pool.addr).expect("a scrape").text.as_bytes());
    // The example reads request heads of up to 16 KiB.
    for (accept_encoding, gzip) in support::gzip::cases(8 * 1024) {
        let what = format!("Accept-Encoding {:.80?} ({} lines)", accept_encoding.first(), accept_encoding.len());
        let mut headers: Vec<(&str, &str)> = accept_encoding.iter().map(|v| ("Accept-Encoding", v.as_str())).collect();
        headers.push(("Accept", "text/plain"));
        let response = http_client::fetch(pool.addr, "GET", "/metrics", &headers);
        assert_eq!(response.status, 200, "{what}");
        let decoded = support::gzip::decode(&what, &response.headers, &response.body, gzip);
        assert_eq!(series(&decoded), plain, "{what}");

        let head = http_client::fetch(pool.addr, "HEAD", "/metrics", &headers);
        assert_eq!(head.status, 200, "HEAD, {what}");
        assert_eq!(head.header("content-encoding"), response.header("content-encoding"), "HEAD, {what}");
        assert_eq!(head.header("vary"), response.header("vary"), "HEAD, {what}");
        // Not equal to the GET's: process metrics move between scrapes.
        assert!(head.header("content-length").is_some_and(|l| l != "0"), "HEAD, {what}");
    }
    match support::python_with_prometheus_client() {
        None => support::skip_or_fail(support::PYTHON_MISSING),
        Some(python) => {
            let scrape = support::gzip::python_scrape(&python, pool.addr, support::gzip::PROMETHEUS_ACCEPT);
            assert!(scrape.content_type.starts_with("application/openmetrics-text"), "{}", scrape.content_type);
            let text = String::from_utf8(scrape.body).unwrap();
            assert!(text.contains("http_requests_total{handler=\"/users/{id}\",method=\"GET\",status=\"200\"} 1"));
        }
    }
    let stopped = pool.stop();
    assert!(stopped.status.success(), "{}\n{}", stopped.status, stopped.stderr);
}
