//! Probe: a rolling deploy that adds a label to a counter.
//!
//! Version 1 of a binary declares `deploy_requests_total{method}`, version
//! 2 adds `status`. During the rollout both versions' workers share the
//! shard directory; the scrape merges their families by label text, so
//! both are counted. Then workers of both versions die and a scrape
//! compacts them into the archive, which lays each family out densely with
//! the label names of its *first* series (`compact.rs` `Archived::new`):
//! series with the other label set are skipped when the slots are written,
//! and the shards they came from are deleted anyway. Counts vanish.
//!
//! The version-1 worker's shard is written here byte by byte from
//! `SHARD_FORMAT.md` (a test binary cannot declare one metric twice); it
//! is a dead worker's file like any other, placed while this process (the
//! version-2 master) lives.

mod harness;

use std::path::Path;
use std::time::Duration;

use promshard::{Counter, metric};

/// Requests, by method and status (version 2 of the binary).
#[metric(labels(method = ["get", "post"], status = ["2xx", "5xx"]))]
static DEPLOY_REQUESTS_TOTAL: Counter;

/// Jobs, by code and method (version 2 of the binary put `code` first).
#[metric(labels(code = ["ok", "err"], method = ["get", "post"]))]
static DEPLOY_JOBS_TOTAL: Counter;

fn fnv(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A dead version-1 worker's shard: `deploy_requests_total{method}` with
/// `get` = `gets`, `post` = 0.
fn v1_shard(family: &str, pid: u32, gets: u64) -> Vec<u8> {
    let mut schema = Vec::new();
    schema.extend_from_slice(&1u32.to_le_bytes());
    put_str(&mut schema, family);
    put_str(&mut schema, "Requests, by method (version 1 of the binary).");
    put_str(&mut schema, "");
    schema.extend_from_slice(&[0, 0, 0, 0]); // counter, mode all, reserved
    schema.extend_from_slice(&1u32.to_le_bytes());
    put_str(&mut schema, "method");
    schema.push(0);
    schema.extend_from_slice(&2u32.to_le_bytes());
    put_str(&mut schema, "get");
    put_str(&mut schema, "post");
    schema.extend_from_slice(&0u32.to_le_bytes()); // buckets
    schema.extend_from_slice(&0u32.to_le_bytes()); // states
    schema.extend_from_slice(&0u64.to_le_bytes()); // offset
    schema.extend_from_slice(&2u64.to_le_bytes()); // series
    schema.extend_from_slice(&2u32.to_le_bytes()); // width
    let slots_count = 3 * 2u64;
    let strings_offset = (128 + schema.len()).next_multiple_of(8);
    let strings_len = 8;
    let slots_offset = (strings_offset + strings_len).next_multiple_of(64);
    let mut h = vec![0u8; 128];
    h[..8].copy_from_slice(b"PSHARD\0\0");
    h[8..12].copy_from_slice(&2u32.to_le_bytes());
    h[12..16].copy_from_slice(&128u32.to_le_bytes());
    h[20..24].copy_from_slice(&pid.to_le_bytes());
    h[24..32].copy_from_slice(&1u64.to_le_bytes());
    h[32..40].copy_from_slice(&0x1234u64.to_le_bytes());
    h[40..48].copy_from_slice(&128u64.to_le_bytes());
    h[48..56].copy_from_slice(&(schema.len() as u64).to_le_bytes());
    h[56..64].copy_from_slice(&(strings_offset as u64).to_le_bytes());
    h[64..72].copy_from_slice(&(strings_len as u64).to_le_bytes());
    h[72..80].copy_from_slice(&(slots_offset as u64).to_le_bytes());
    h[80..88].copy_from_slice(&slots_count.to_le_bytes());
    h[88..96].copy_from_slice(&fnv(&schema).to_le_bytes());
    let sum = fnv(&h[..120]);
    h[120..128].copy_from_slice(&sum.to_le_bytes());
    let mut bytes = h;
    bytes.extend_from_slice(&schema);
    bytes.resize(slots_offset, 0);
    let mut slots = vec![0u64; slots_count as usize];
    slots[0] = gets; // series get: integer total
    bytes.extend(slots.iter().flat_map(|s| s.to_le_bytes()));
    bytes
}

fn place(dir: &Path, name: &str, bytes: &[u8]) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(dir.join(name)).unwrap();
    std::io::Write::write_all(&mut f, bytes).unwrap();
}

/// Scrapes once, turning a panic into its message.
fn scrape() -> Result<String, String> {
    std::panic::catch_unwind(harness::own_text).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

fn listing(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Version 2 appends a label: the archive takes version 1's label names
/// (its series sort first) and then indexes past them for version 2's
/// series: compaction panics, and so does every scrape of every
/// recording process from then on (each finds the dead shards again).
#[test]
fn compaction_survives_a_label_added_during_a_rolling_deploy() {
    harness::isolated("compaction_survives_a_label_added_during_a_rolling_deploy", Duration::from_secs(60), || {
        let dir = harness::TempDir::new("rolling");
        promshard::multiprocess::init(dir.path()).unwrap();
        // The version-2 master.
        DEPLOY_REQUESTS_TOTAL.with(("get", "2xx")).inc_by(10);
        // A version-2 worker serves 3 requests and retires.
        let pid = harness::fork_child(|| {
            DEPLOY_REQUESTS_TOTAL.with(("get", "2xx")).inc_by(3);
            0
        });
        harness::wait_timeout(pid, Duration::from_secs(20)).expect("the worker exits");
        // A version-1 worker that served 5 requests and retired.
        place(dir.path(), "p999999-0000000000001234.promshard", &v1_shard("deploy_requests", 999_999, 5));

        let before = harness::encode_dir_text(dir.path());
        assert_eq!(
            harness::value_in(&before, "deploy_requests_total", &[("method", "get"), ("status", "2xx")]),
            Some(13.0),
            "before compaction, version 2's counts:\n{before}"
        );
        assert_eq!(
            harness::value_in(&before, "deploy_requests_total", &[("method", "get")]),
            Some(5.0),
            "before compaction, version 1's counts:\n{before}"
        );

        // The master's scrapes compact the two dead workers.
        let outcomes: Vec<Result<String, String>> = (0..3).map(|_| scrape()).collect();
        let panics: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
        assert!(
            panics.is_empty(),
            "{} of 3 scrapes panicked in compaction ({:?}): compact.rs Archived::slots indexes \
             `values[position]` for every label of a series with more labels than the family's first \
             series. Directory: {:?}",
            panics.len(),
            panics.first(),
            listing(dir.path())
        );
        let after = outcomes.last().unwrap().as_ref().unwrap();
        let v2 = harness::value_in(after, "deploy_requests_total", &[("method", "get"), ("status", "2xx")]);
        let v1 = harness::value_in(after, "deploy_requests_total", &[("method", "get")]);
        assert!(v2 == Some(13.0) && v1 == Some(5.0), "compaction lost counts: v2 {v2:?} (want 13), v1 {v1:?} (want 5)");
    });
}

/// Version 2 puts a new label first: the archive takes version 2's label
/// names, skips version 1's series when it writes the slots, and deletes
/// version 1's shard anyway: its counts are gone for good.
#[test]
fn compaction_keeps_counts_of_both_label_sets_during_a_rolling_deploy() {
    harness::isolated(
        "compaction_keeps_counts_of_both_label_sets_during_a_rolling_deploy",
        Duration::from_secs(60),
        || {
            let dir = harness::TempDir::new("rolling");
            promshard::multiprocess::init(dir.path()).unwrap();
            DEPLOY_JOBS_TOTAL.with(("ok", "get")).inc_by(10);
            let pid = harness::fork_child(|| {
                DEPLOY_JOBS_TOTAL.with(("ok", "get")).inc_by(3);
                0
            });
            harness::wait_timeout(pid, Duration::from_secs(20)).expect("the worker exits");
            place(dir.path(), "p999999-0000000000001234.promshard", &v1_shard("deploy_jobs", 999_999, 5));

            let before = harness::encode_dir_text(dir.path());
            assert_eq!(
                harness::value_in(&before, "deploy_jobs_total", &[("method", "get")]),
                Some(5.0),
                "before compaction, version 1's counts:\n{before}"
            );
            let _ = scrape().expect("no panic");
            let after = scrape().expect("no panic");
            let v2 = harness::value_in(&after, "deploy_jobs_total", &[("code", "ok"), ("method", "get")]);
            let v1 = harness::value_in(&after, "deploy_jobs_total", &[("method", "get")]);
            assert!(
                v2 == Some(13.0) && v1 == Some(5.0),
                "compaction lost counts: version 2 code=ok,method=get = {v2:?} (want 13), version 1 method=get = \
                 {v1:?} (want 5); the archive lays the family out with the label names of its first series \
                 (compact.rs Archived::new), skips the others in Archived::slots, and deletes their shards \
                 anyway. Directory now: {:?}\n{after}",
                listing(dir.path())
            );
        },
    );
}
