//! a shard file planted in the directory with hostile contents, in
//! the sparse HTTP families' records and values: declared records with
//! huge counts, overlapping ranges, `u32::MAX` first, unknown metrics and
//! odd payload sizes; slots at `u64::MAX` (counts that overflow when
//! summed). The file is a real worker's shard, rewritten (header and
//! schema keep their checksums; the string log and the slots carry no
//! checksum), left dead in the directory.
//!
//! A reader of the directory (what `promshard dump` prints), the scrape
//! of a live process, and the compaction that scrape runs must never
//! panic and never fail.

mod harness;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use harness::{TempDir, encode_dir_text, fork_child, isolated, parse_samples, wait_timeout};
use http::Request;
use promshard::instrument_handler;
use tower::ServiceExt;

#[instrument_handler(route = "/ph/items", method = "GET")]
async fn items() -> &'static str {
    "items"
}

fn app() -> Router {
    Router::new()
        .route("/ph/items", get(items))
        .route("/ph/plain/{id}", get(|| async { "plain" }))
        .layer(promshard::http_layer!())
}

fn get_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn get_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// A dead worker's shard, after it served a few requests; the original
/// file is removed, so that only what the test plants is read.
fn worker_shard(dir: &std::path::Path) -> Vec<u8> {
    let before = harness::shard_files(dir);
    let pid = fork_child(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            for uri in ["/ph/items", "/ph/plain/1", "/ph/plain/2", "/nowhere"] {
                let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
                let _ = app().oneshot(request).await.unwrap();
            }
        });
        0
    });
    assert_eq!(wait_timeout(pid, Duration::from_secs(10)).map(|s| libc::WEXITSTATUS(s)), Some(0));
    let after = harness::shard_files(dir);
    let new: Vec<_> = after.iter().filter(|f| !before.contains(f)).collect();
    assert_eq!(new.len(), 1, "{before:?} → {after:?}");
    let path = dir.join(new[0]);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    bytes
}

/// Appends a string-log record to a shard image.
fn append_record(shard: &mut [u8], metric: u32, position: u16, index: u32, payload: &[u8]) -> bool {
    let (strings, strings_len) = (get_u64(shard, 56) as usize, get_u64(shard, 64) as usize);
    let used = get_u64(shard, strings) as usize;
    let size = (20 + payload.len()).next_multiple_of(8);
    let at = strings + 8 + used;
    if 8 + used + size > strings_len {
        return false;
    }
    let mut record = Vec::new();
    record.extend_from_slice(&(size as u32).to_le_bytes());
    record.extend_from_slice(&metric.to_le_bytes());
    record.extend_from_slice(&position.to_le_bytes());
    record.extend_from_slice(&[0, 0]);
    record.extend_from_slice(&index.to_le_bytes());
    record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    record.extend_from_slice(payload);
    record.resize(size, 0);
    shard[at..at + size].copy_from_slice(&record);
    shard[strings..strings + 8].copy_from_slice(&((used + size) as u64).to_le_bytes());
    true
}

const DECLARED: u16 = 0xFFFD;

/// [`isolated`] for an ignored test: the re-executed child must be told
/// to run ignored tests too (`harness::isolated` does not).
fn isolated_ignored(name: &str, timeout: Duration, scenario: impl FnOnce()) {
    if harness::is_child(name) {
        scenario();
        return;
    }
    if harness::in_any_child() {
        return;
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1", "--include-ignored"])
        .env(harness::ROLE_ENV, name)
        .env("RUST_BACKTRACE", "0")
        .env_remove(promshard::multiprocess::DIR_ENV)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("1 passed") || !out.status.success(), "the child ran the test: {stdout}");
    assert!(out.status.success(), "{}\n--- child stderr ---\n{stderr}", harness::panic_message(&stderr));
}

/// Declared records no writer makes, for every metric of the schema and
/// for metrics it does not have.
fn hostile_declarations(shard: &mut [u8]) {
    let metrics = get_u32(shard, get_u64(shard, 40) as usize);
    let ranges: [(u32, u32); 8] = [
        (0, u32::MAX),
        (u32::MAX, u32::MAX),
        (u32::MAX - 1, 5),
        (5, 3),
        (6, 10),
        (4, 0),
        (1 << 31, 1 << 31),
        (3, u32::MAX - 2),
    ];
    let mut written = 0;
    for metric in (0..metrics + 2).chain([u32::MAX, u32::MAX - 1]) {
        for (first, count) in ranges {
            written += append_record(shard, metric, DECLARED, first, &count.to_le_bytes()) as usize;
        }
        // Payloads of the wrong size.
        written += append_record(shard, metric, DECLARED, 0, &[0xff; 3]) as usize;
        written += append_record(shard, metric, DECLARED, 0, &[0xff; 8]) as usize;
    }
    assert!(written > 40, "room in the log for the planted records ({written})");
}

/// Every slot of the file at `value`.
fn fill_slots(shard: &mut [u8], value: u64) {
    let (slots, count) = (get_u64(shard, 72) as usize, get_u64(shard, 80) as usize);
    for i in 0..count {
        shard[slots + 8 * i..slots + 8 * i + 8].copy_from_slice(&value.to_le_bytes());
    }
}

/// Plants `shards` in a directory where this process records, then reads
/// it every way: reader, own scrape (which compacts), reader of the
/// archive. Returns the texts.
fn plant_and_read(dir: &std::path::Path, shards: &[Vec<u8>]) -> Vec<String> {
    for (i, shard) in shards.iter().enumerate() {
        // A name of the writers' shape, for a process that no longer exists.
        std::fs::write(dir.join(format!("p{}-{:016x}.promshard", 4_000_000 + i, 0xdead_0000 + i)), shard).unwrap();
    }
    let mut texts = vec![encode_dir_text(dir)];
    texts.push(String::from_utf8(promshard::encode(promshard::Format::Prometheus)).unwrap());
    texts.push(String::from_utf8(promshard::encode(promshard::Format::OpenMetrics)).unwrap());
    texts.push(encode_dir_text(dir));
    texts
}

fn scenario(mutate: fn(&mut [u8]), copies: usize) -> Vec<String> {
    let dir = TempDir::new("probe-hostile");
    promshard::multiprocess::init(dir.path()).expect("nothing recorded yet");
    let _ = promshard::encode(promshard::Format::Prometheus);
    let mut shard = worker_shard(dir.path());
    mutate(&mut shard);
    let texts = plant_and_read(dir.path(), &vec![shard; copies]);
    println!("files after: {:?}", harness::shard_files(dir.path()));
    texts
}

/// hostile declared records never panic a scrape or a compaction;
/// the real counts still read back.
#[test]
fn hostile_declared_records_never_fail_a_scrape() {
    isolated("hostile_declared_records_never_fail_a_scrape", Duration::from_secs(60), || {
        let texts = scenario(hostile_declarations, 1);
        for text in &texts {
            let samples = parse_samples(text);
            let items = samples.iter().find(|s| {
                s.name == "http_requests_total"
                    && s.labels.iter().any(|(k, v)| k == "handler" && v == "/ph/items")
                    && s.labels.iter().any(|(k, v)| k == "status" && v == "200")
                    && s.labels.iter().any(|(k, v)| k == "method" && v == "GET")
            });
            assert_eq!(items.map(|s| s.value), Some(1.0), "{text}");
            let zero = samples.iter().filter(|s| s.name == "http_requests_total" && s.value == 0.0).count();
            println!("{} samples, {zero} counter series at zero", samples.len());
        }
    });
}

/// Once broken: a planted (or corrupt) dead shard whose histogram bucket
/// counts are near `u64::MAX` panics the scrape with "attempt to add with
/// overflow" in builds with overflow checks (debug, or
/// `overflow-checks = true`): the cumulative bucket sum in the exposition
/// and the sum over shards are plain `+=`, where counters use
/// `wrapping_add`. Every scrape of the directory fails while the file is
/// there.
#[test]
fn a_shard_with_huge_counts_never_fails_a_scrape() {
    isolated_ignored("a_shard_with_huge_counts_never_fails_a_scrape", Duration::from_secs(60), || {
        let texts = scenario(|shard| fill_slots(shard, u64::MAX / 2 + 1), 1);
        assert!(texts.iter().all(|t| t.contains("http_requests_total")));
    });
}

/// The same, with counts that only overflow once two files are summed.
#[test]
fn two_shards_whose_counts_overflow_when_summed_never_fail_a_scrape() {
    isolated_ignored(
        "two_shards_whose_counts_overflow_when_summed_never_fail_a_scrape",
        Duration::from_secs(60),
        || {
            let texts = scenario(|shard| fill_slots(shard, 1 << 63), 2);
            assert!(texts.iter().all(|t| t.contains("http_requests_total")));
        },
    );
}
