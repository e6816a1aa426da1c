//! more distinct route templates than the `handler` label keeps,
//! met concurrently from many threads. `TIGHT` fits 6 handlers, so the
//! label keeps 5 values: `<unmatched>` and 4 templates met at run time;
//! the rest are `other`.
//!
//! At 8a2e4ef each of the three families (counter, histogram, in flight)
//! numbered the templates it met on its own, one after the other for each
//! request: when threads raced for the last free values, a template could
//! be kept by one family and folded into `other` by another. f899d2f
//! enters a new template in the three tables together.

mod harness;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use harness::parse_samples;
use http::{Request, StatusCode};
use promshard::HandlerFamilies;
use tower::ServiceExt;

const TIGHT: HandlerFamilies = HandlerFamilies::http().max_series(6 * 220);

const THREADS: usize = 8;
const ROUTES: usize = 48;
const ROUNDS: usize = 5;

fn app() -> Router {
    let mut router = Router::new();
    for i in 0..ROUTES {
        router = router.route(&format!("/po/{i:02}/{{id}}"), get(|| async { "ok" }));
    }
    router.layer(promshard::http_layer!(TIGHT))
}

/// `handler` → (requests counted, latency observations).
fn by_handler() -> std::collections::BTreeMap<String, (f64, f64)> {
    let text = String::from_utf8(promshard::encode(promshard::Format::Prometheus)).unwrap();
    let mut out = std::collections::BTreeMap::<String, (f64, f64)>::new();
    for s in parse_samples(&text) {
        let handler = s.labels.iter().find(|(k, _)| k == "handler").map(|(_, v)| v.clone()).unwrap_or_default();
        match s.name.as_str() {
            "http_requests_total" => out.entry(handler).or_default().0 += s.value,
            "http_request_duration_seconds_count" => out.entry(handler).or_default().1 += s.value,
            _ => {}
        }
    }
    out
}

/// One process's run: every thread starts at once on routes of its own.
fn scenario() {
    let app = app();
    let start = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (app, start) = (app.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
                start.wait();
                runtime.block_on(async {
                    for round in 0..ROUNDS {
                        for k in 0..ROUTES / THREADS {
                            let route = (t + k * THREADS + round) % ROUTES;
                            let uri = format!("/po/{route:02}/{t}");
                            let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
                            assert_eq!(app.clone().oneshot(request).await.unwrap().status(), StatusCode::OK);
                        }
                    }
                });
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    println!("SCENARIO RAN");
    let sent = (THREADS * ROUNDS * (ROUTES / THREADS)) as f64;
    let counts = by_handler();
    let (requests, observations) = counts.values().fold((0.0, 0.0), |(a, b), (c, d)| (a + c, b + d));
    assert_eq!((requests, observations), (sent, sent), "every request counted once in each family: {counts:?}");
    let disagree: Vec<_> = counts.iter().filter(|(_, (c, h))| c != h).collect();
    if !disagree.is_empty() {
        println!("DISAGREE {disagree:?}");
    }
    assert!(disagree.is_empty(), "the counter and the histogram name the same requests: {disagree:?}");
}

/// Held within one process: sum over every `handler` value = requests
/// sent, in the counter and in the histogram.
#[test]
fn routes_past_the_label_from_many_threads_keep_exact_totals() {
    harness::isolated("routes_past_the_label_from_many_threads_keep_exact_totals", Duration::from_secs(60), || {
        let app = app();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).build().unwrap();
        runtime.block_on(async {
            let mut tasks = Vec::new();
            for i in 0..2000usize {
                let app = app.clone();
                tasks.push(tokio::spawn(async move {
                    let uri = format!("/po/{:02}/{i}", (i * 7) % ROUTES);
                    let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
                    app.oneshot(request).await.unwrap().status()
                }));
            }
            for task in tasks {
                assert_eq!(task.await.unwrap(), StatusCode::OK);
            }
        });
        let counts = by_handler();
        let (requests, observations) = counts.values().fold((0.0, 0.0), |(a, b), (c, d)| (a + c, b + d));
        assert_eq!((requests, observations), (2000.0, 2000.0), "{counts:?}");
        assert!(counts.contains_key("other"), "templates past the label are `other`: {counts:?}");
        let templates = counts.keys().filter(|k| k.starts_with("/po/")).count();
        assert!(templates <= 4, "the label keeps 4 templates: {counts:?}");
    });
}

/// Held at f899d2f (a finding at 8a2e4ef, where about 1 run in 100 kept
/// a template in the counter but folded it into `other` in the histogram,
/// or the reverse: `DISAGREE [("/po/04/{id}", (5.0, 0.0)), ("/po/24/{id}",
/// (0.0, 5.0))]`). 500 fresh processes, each racing 8 threads for the
/// last free values.
#[test]
fn the_counter_and_the_histogram_keep_the_same_templates() {
    const NAME: &str = "the_counter_and_the_histogram_keep_the_same_templates";
    if harness::is_child(NAME) {
        scenario();
        return;
    }
    if harness::in_any_child() {
        return;
    }
    let runs = 500;
    let mut failures = Vec::new();
    for run in 0..runs {
        // Not `harness::spawn_and_wait`: `--include-ignored` lets the
        // child run this test even when it is marked ignored.
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--nocapture", "--test-threads=1", "--include-ignored"])
            .env(harness::ROLE_ENV, NAME)
            .env_remove(promshard::multiprocess::DIR_ENV)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("SCENARIO RAN"), "the child ran the scenario: {stdout}");
        if !out.status.success() {
            let line = stdout.lines().find(|l| l.starts_with("DISAGREE")).map(str::to_owned);
            failures.push((run, line.unwrap_or_else(|| harness::panic_message(&String::from_utf8_lossy(&out.stderr)))));
        }
    }
    assert!(failures.is_empty(), "{} of {runs} runs disagreed; first: {:?}", failures.len(), failures.first());
}
