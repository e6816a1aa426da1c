//! the sparse HTTP families across forked workers, compaction and
//! a worker started after it.
//!
//! A parent that holds a shard forks workers that each run the app (the
//! layer and instrumented handlers) in-process: two meet the run-time
//! route templates in opposite orders (so each numbers them its own way),
//! one is SIGKILLed with a request in flight. Then the parent's scrape
//! compacts the dead shards into the archive, and a new worker records
//! more. At every step, from the parent's scrape and from a reader of the
//! directory (what `promshard dump` prints):
//!
//! - counts are exact, and no sample ever goes down between reads;
//! - the series shown at zero are exactly the instrumented handlers' own
//!   method rows (declared), whether their shards are live, dead or
//!   archived, and no dead worker's other zero series appear;
//! - nothing of the killed worker stays in flight.

mod harness;

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Path as UrlPath;
use axum::routing::get;
use harness::{TempDir, encode_dir_text, fork_child, isolated, parse_samples, pipe, read_line_timeout, wait_timeout};
use http::{Request, StatusCode};
use promshard::instrument_handler;
use tower::ServiceExt;

#[instrument_handler(route = "/pm/items", method = "GET")]
async fn items() -> Result<&'static str, StatusCode> {
    Ok("items")
}

#[instrument_handler(route = "/pm/items", method = "POST")]
async fn add_item() -> StatusCode {
    StatusCode::CREATED
}

#[instrument_handler(route = "/pm/hang", method = "GET")]
async fn hang() -> &'static str {
    std::future::pending::<()>().await;
    "never"
}

async fn plain(UrlPath(id): UrlPath<u64>) -> Result<&'static str, StatusCode> {
    if id == 0 { Err(StatusCode::NOT_FOUND) } else { Ok("plain") }
}

fn app() -> Router {
    Router::new()
        .route("/pm/items", get(items).post(add_item))
        .route("/pm/hang", get(hang))
        .route("/pm/a/{id}", get(plain))
        .route("/pm/b/{id}", get(plain))
        .route("/pm/c/{id}", get(plain))
        .route("/pm/d/{id}", get(plain))
        .route("/pm/e/{id}", get(plain))
        .layer(promshard::http_layer!())
}

/// What a worker sends: (method, uri).
fn send_all(requests: &[(&str, String)]) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        for (method, uri) in requests {
            let request = Request::builder().method(*method).uri(uri.as_str()).body(Body::empty()).unwrap();
            let _ = app().oneshot(request).await.unwrap();
        }
    });
}

/// `(name, labels)` → value, for the HTTP families.
type Samples = BTreeMap<(String, Vec<(String, String)>), f64>;

fn http_samples(text: &str) -> Samples {
    parse_samples(text)
        .into_iter()
        .filter(|s| s.name.starts_with("http_"))
        .map(|s| {
            let mut labels = s.labels;
            labels.sort();
            ((s.name, labels), s.value)
        })
        .collect()
}

fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut key: Vec<(String, String)> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    key.sort();
    samples.get(&(name.to_owned(), key)).copied().unwrap_or(0.0)
}

/// The counter's zero series, as (handler, method).
fn zero_rows(samples: &Samples) -> std::collections::BTreeSet<(String, String)> {
    samples
        .iter()
        .filter(|((name, _), v)| name == "http_requests_total" && **v == 0.0)
        .map(|((_, labels), _)| {
            let get = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
            (get("handler"), get("method"))
        })
        .collect()
}

/// A read of the directory, named.
type Step = (&'static str, fn(&Path) -> String);

fn own_text() -> String {
    String::from_utf8(promshard::encode(promshard::Format::Prometheus)).unwrap()
}

fn check_step(step: &str, samples: &Samples, previous: &Samples, expected: &BTreeMap<(&str, &str, &str), f64>) {
    for ((name, labels), before) in previous {
        if name == "http_requests_in_flight" {
            continue;
        }
        let now = samples.get(&(name.clone(), labels.clone())).copied();
        assert!(now.is_some_and(|now| now >= *before), "{step}: {name}{labels:?} went from {before} to {now:?}");
    }
    for (&(handler, method, status), &count) in expected {
        let labels = [("handler", handler), ("method", method), ("status", status)];
        assert_eq!(value(samples, "http_requests_total", &labels), count, "{step}: {labels:?}");
    }
    let total: f64 = samples.iter().filter(|((n, _), _)| n == "http_requests_total").map(|(_, v)| v).sum();
    assert_eq!(total, expected.values().sum::<f64>(), "{step}: total over every series");
    let declared: std::collections::BTreeSet<(String, String)> =
        [("/pm/items", "GET"), ("/pm/items", "POST"), ("/pm/hang", "GET")]
            .iter()
            .map(|(h, m)| ((*h).to_owned(), (*m).to_owned()))
            .collect();
    let zeros = zero_rows(samples);
    assert_eq!(zeros, declared, "{step}: the rows shown at zero are the handlers' own");
    for handler in ["/pm/hang", "/pm/items"] {
        assert_eq!(value(samples, "http_requests_in_flight", &[("handler", handler)]), 0.0, "{step}: {handler}");
    }
}

fn scenario() {
    let dir = TempDir::new("probe-sparse");
    promshard::multiprocess::init(dir.path()).expect("nothing recorded yet");
    // The parent holds a shard (and lays the registry out) before it forks.
    let _ = own_text();

    let routes = |order: &[&str], id: u64| -> Vec<(&'static str, String)> {
        order.iter().map(|r| ("GET", format!("/pm/{r}/{id}"))).collect()
    };
    let mut expected: BTreeMap<(&str, &str, &str), f64> = BTreeMap::new();

    // Worker A: a, b, c, d; the handlers' own methods.
    let mut a = routes(&["a", "b", "c", "d"], 1);
    a.extend((0..3).map(|_| ("GET", "/pm/items".to_owned())));
    a.push(("POST", "/pm/items".to_owned()));
    // Worker B: the reverse order, and 404s from the handlers.
    let mut b = routes(&["d", "c", "b", "a"], 1);
    b.extend(routes(&["d", "a"], 0));
    for worker in [a, b] {
        let pid = fork_child(move || {
            send_all(&worker);
            0
        });
        assert_eq!(wait_timeout(pid, Duration::from_secs(10)).map(|s| libc::WEXITSTATUS(s)), Some(0));
    }
    for r in ["/pm/a/{id}", "/pm/b/{id}", "/pm/c/{id}", "/pm/d/{id}"] {
        *expected.entry((r, "GET", "200")).or_default() += 2.0;
    }
    *expected.entry(("/pm/d/{id}", "GET", "404")).or_default() += 1.0;
    *expected.entry(("/pm/a/{id}", "GET", "404")).or_default() += 1.0;
    expected.insert(("/pm/items", "GET", "200"), 3.0);
    expected.insert(("/pm/items", "POST", "201"), 1.0);

    // Worker C: one request answered, one left in flight, then SIGKILL.
    let (mut reader, mut writer) = pipe();
    let c = fork_child(move || {
        send_all(&[("GET", "/pm/e/5".to_owned())]);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let request = Request::builder().uri("/pm/hang").body(Body::empty()).unwrap();
        let mut future = Box::pin(app().oneshot(request));
        // Polled once inside the runtime (the handler needs none, but the
        // layer's request starts), then kept pending.
        runtime.block_on(async {
            std::future::poll_fn(|cx| {
                assert!(future.as_mut().poll(cx).is_pending());
                std::task::Poll::Ready(())
            })
            .await
        });
        writeln!(writer, "in flight").unwrap();
        std::thread::sleep(Duration::from_secs(30));
        0
    });
    assert_eq!(read_line_timeout(&mut reader, Duration::from_secs(10)).as_deref(), Some("in flight"));
    let live = http_samples(&encode_dir_text(dir.path()));
    assert_eq!(value(&live, "http_requests_in_flight", &[("handler", "/pm/hang")]), 1.0, "C's request in flight");
    // SAFETY: our own child.
    unsafe { libc::kill(c, libc::SIGKILL) };
    assert!(wait_timeout(c, Duration::from_secs(10)).is_some());
    expected.insert(("/pm/e/{id}", "GET", "200"), 1.0);

    // Read from the files, then the parent's scrape (which compacts),
    // then the archive, then the files again.
    let mut previous = Samples::new();
    let steps: [Step; 4] = [
        ("reader before compaction", |d| encode_dir_text(d)),
        ("parent scrape (compacts)", |_| own_text()),
        ("parent scrape of the archive", |_| own_text()),
        ("reader of the archive", |d| encode_dir_text(d)),
    ];
    for (step, read) in steps {
        let samples = http_samples(&read(dir.path()));
        check_step(step, &samples, &previous, &expected);
        previous = samples;
    }
    let files = harness::shard_files(dir.path());
    assert!(files.contains(&"archive.promshard".to_owned()), "compacted: {files:?}");
    assert_eq!(files.len(), 2, "the archive and the parent's shard: {files:?}");

    // Worker D, after compaction: e then a, and the handlers.
    let d = fork_child(|| {
        send_all(&[
            ("GET", "/pm/e/1".to_owned()),
            ("GET", "/pm/a/0".to_owned()),
            ("GET", "/pm/items".to_owned()),
            ("DELETE", "/pm/items".to_owned()),
        ]);
        0
    });
    assert_eq!(wait_timeout(d, Duration::from_secs(10)).map(|s| libc::WEXITSTATUS(s)), Some(0));
    *expected.entry(("/pm/e/{id}", "GET", "200")).or_default() += 1.0;
    *expected.entry(("/pm/a/{id}", "GET", "404")).or_default() += 1.0;
    *expected.entry(("/pm/items", "GET", "200")).or_default() += 1.0;
    // A method no handler of the route answers: the router's 405.
    *expected.entry(("<unmatched>", "DELETE", "405")).or_default() += 1.0;
    let steps: [Step; 3] = [
        ("reader with D dead", |d| encode_dir_text(d)),
        ("parent scrape (compacts D)", |_| own_text()),
        ("reader of the new archive", |d| encode_dir_text(d)),
    ];
    for (step, read) in steps {
        let samples = http_samples(&read(dir.path()));
        check_step(step, &samples, &previous, &expected);
        previous = samples;
    }
}

/// exact counts, monotonic samples, declared zero rows and nothing
/// in flight across dead, killed and archived workers.
#[test]
fn sparse_families_stay_exact_and_declared_through_compaction_and_a_new_worker() {
    isolated(
        "sparse_families_stay_exact_and_declared_through_compaction_and_a_new_worker",
        Duration::from_secs(60),
        scenario,
    );
}
