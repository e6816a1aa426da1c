//! Bad input never fails a scrape: truncated, corrupt, foreign, future,
//! untrusted and Python-garbage files in a shard directory are skipped and
//! counted in `promshard_shard_errors_total{reason}`, and the good shards
//! beside them are still merged; an unusable directory makes a process
//! record in memory instead.
//!
//! # Where the good shard comes from
//!
//! A process never opens its own shard by name: POSIX record locks (our
//! liveness lock) are dropped when the process closes *any* descriptor of
//! the file, so even `std::fs::read` of our own shard would make it look
//! dead to every other reader. So the good shard is made by a *child*: this
//! test binary re-executed with `child_process` as the only test and
//! `PROMSHARD_BAD_FILES_CHILD` set, which records known values in a
//! directory of its own and exits. Its shard is then dead but valid, and
//! reading it (and copying its bytes into other directories) touches no
//! lock of ours. The crafted bad files are made from those bytes at test
//! time, so they follow the format as it is today; a few static fixtures
//! (`tests/fixtures/shards/`) do not depend on the format at all.
//!
//! # One `init` per process
//!
//! `bad_files_never_fail_a_scrape` is the one test here that calls
//! `multiprocess::init` (the mode is chosen once per process); it needs
//! this process's own registry in multiprocess mode to read the
//! `promshard_shard_errors_total` self-metric. The counters behind it are
//! process-wide and every scrape of any directory (`encode_dir` included)
//! adds to them, so the tests that scrape bad files hold [`SCRAPES`] and
//! compare counts before and after. The fallback test only starts children.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};

use promshard::multiprocess::{encode_dir, inspect};
use promshard::testing::sample_value;
use promshard::{Counter, Format, Histogram, metric};

/// Jobs done.
#[metric]
static BAD_FILES_JOBS_TOTAL: Counter;

/// Jobs by queue.
#[metric(labels(queue = ["fast", "slow"]))]
static BAD_FILES_QUEUED_TOTAL: Counter;

/// Job durations.
#[metric(unit = "seconds", buckets = [0.1, 1.0])]
static BAD_FILES_JOB_SECONDS: Histogram;

/// Hits by route: a bounded label, so the shard's string log is used.
#[metric(labels(route = bounded(4)))]
static BAD_FILES_ROUTE_HITS_TOTAL: Counter;

/// What a child records.
fn record_child_values() {
    BAD_FILES_JOBS_TOTAL.inc_by(7);
    BAD_FILES_QUEUED_TOTAL.with(("fast",)).inc_by(3);
    BAD_FILES_JOB_SECONDS.observe(0.5);
    BAD_FILES_ROUTE_HITS_TOTAL.with(("/child",)).inc_by(2);
}

/// Lines of the child's values, alone, in our 0.0.4 text.
const CHILD_LINES: [&str; 6] = [
    "bad_files_jobs_total 7",
    "bad_files_queued_total{queue=\"fast\"} 3",
    "bad_files_queued_total{queue=\"slow\"} 0",
    "bad_files_job_seconds_bucket{le=\"1.0\"} 1",
    "bad_files_job_seconds_count 1",
    "bad_files_route_hits_total{route=\"/child\"} 2",
];

// ---------------------------------------------------------------------
// The child process
// ---------------------------------------------------------------------

/// Set in a re-executed child: `record`, `record-unwritable` (drop the
/// capabilities that let root write anywhere first, and say whether the
/// directory is writable then) or `truncate-race` (see
/// [`shard_truncated_in_place_during_scrapes`]).
const CHILD_ENV: &str = "PROMSHARD_BAD_FILES_CHILD";
/// The directory the child passes to `multiprocess::init`.
const CHILD_DIR_ENV: &str = "PROMSHARD_BAD_FILES_CHILD_DIR";
/// Where the child writes its report.
const CHILD_OUT_ENV: &str = "PROMSHARD_BAD_FILES_CHILD_OUT";

/// A no-op unless this binary was re-executed as a child (see the module
/// docs): then `init`s the given directory, records, and writes a report:
/// `shard_dir=<dir or none>`, `writable=<yes|no|->`, then its scrape.
#[test]
fn child_process() {
    let Ok(mode) = std::env::var(CHILD_ENV) else { return };
    let dir = PathBuf::from(std::env::var_os(CHILD_DIR_ENV).expect("child dir"));
    let out = PathBuf::from(std::env::var_os(CHILD_OUT_ENV).expect("child out"));
    let writable = match mode.as_str() {
        "record" => "-",
        "truncate-race" => return truncate_race(&dir, &out),
        "record-unwritable" => {
            drop_dac_capabilities();
            let probe = dir.join(".writable-probe");
            let writable = std::fs::File::create(&probe).is_ok();
            let _ = std::fs::remove_file(&probe);
            if writable { "yes" } else { "no" }
        }
        other => panic!("unknown child mode {other:?}"),
    };
    promshard::multiprocess::init(&dir).expect("init before anything is recorded");
    record_child_values();
    let shard_dir = promshard::multiprocess::shard_dir().map_or("none".to_owned(), |d| d.display().to_string());
    let text = String::from_utf8(promshard::encode(Format::Prometheus)).expect("UTF-8");
    std::fs::write(out, format!("shard_dir={shard_dir}\nwritable={writable}\n{text}")).expect("write the report");
}

/// As root, drops CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER
/// from this thread's effective set, so that file modes apply to it: the
/// only way for root to meet an unwritable directory. The thread that
/// calls it is the one that records first, so the shard is started here.
fn drop_dac_capabilities() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header { version: VERSION_3, pid: 0 };
    let mut data = [Data::default(); 2];
    // SAFETY: a valid header and two data structs, as version 3 needs.
    let got = unsafe { libc::syscall(libc::SYS_capget, &mut header as *mut Header, data.as_mut_ptr()) };
    assert_eq!(got, 0, "capget: {}", std::io::Error::last_os_error());
    let (dac_override, dac_read_search, fowner) = (1u32, 2u32, 3u32);
    data[0].effective &= !((1 << dac_override) | (1 << dac_read_search) | (1 << fowner));
    // SAFETY: as above.
    let set = unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
    assert_eq!(set, 0, "capset: {}", std::io::Error::last_os_error());
}

/// What a child reported.
struct ChildReport {
    /// The shard directory it used, or `None` if it recorded in memory.
    shard_dir: Option<PathBuf>,
    /// For `record-unwritable`: whether it could still write the directory.
    writable: Option<bool>,
    text: String,
}

/// Re-executes this test binary as a child in `mode` with `dir`; returns
/// how it ended and the report it wrote, if any.
fn spawn_child(mode: &str, dir: &Path, scratch: &Path) -> (std::process::Output, Option<String>) {
    let out = scratch.join(format!("child-report-{}", unique()));
    let exe = std::env::current_exe().expect("test binary");
    let output = Command::new(exe)
        .args(["child_process", "--exact", "--test-threads=1", "--quiet"])
        .env(CHILD_ENV, mode)
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_OUT_ENV, &out)
        .env_remove(promshard::multiprocess::DIR_ENV)
        .stdin(Stdio::null())
        .output()
        .expect("re-execute the test binary");
    let report = std::fs::read_to_string(&out).ok();
    let _ = std::fs::remove_file(&out);
    (output, report)
}

/// [`spawn_child`], asserting it exited cleanly (no panic), and its report.
fn run_child(mode: &str, dir: &Path, scratch: &Path) -> ChildReport {
    let (output, report) = spawn_child(mode, dir, scratch);
    assert!(
        output.status.success(),
        "child ({mode}, {}) failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        dir.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    let report = report.expect("the child wrote no report; did `child_process` run?");
    let (shard_dir, rest) = report.split_once('\n').expect("shard_dir line");
    let (writable, text) = rest.split_once('\n').expect("writable line");
    let shard_dir = shard_dir.strip_prefix("shard_dir=").expect("shard_dir=");
    ChildReport {
        shard_dir: (shard_dir != "none").then(|| PathBuf::from(shard_dir)),
        writable: match writable.strip_prefix("writable=").expect("writable=") {
            "yes" => Some(true),
            "no" => Some(false),
            _ => None,
        },
        text: text.to_owned(),
    }
}

// ---------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------

/// Serialises the tests whose scrapes meet bad files: the error counters
/// are process-wide.
static SCRAPES: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SCRAPES.lock().unwrap_or_else(|e| e.into_inner())
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A directory under the system temp dir, removed when dropped (after
/// making everything in it writable again).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("promshard-{tag}-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Stops a helper thread when the scraping loop ends, even by a panic
/// (which would otherwise leave `thread::scope` waiting forever).
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A dead but valid shard written by a child, and its file name.
struct GoodShard {
    name: String,
    bytes: Vec<u8>,
}

/// The child's shard, made once per test process.
fn good_shard() -> &'static GoodShard {
    static GOOD: OnceLock<GoodShard> = OnceLock::new();
    GOOD.get_or_init(|| {
        let scratch = TempDir::new("bad-files-child");
        let dir = scratch.path().join("shards");
        let report = run_child("record", &dir, scratch.path());
        assert_eq!(report.shard_dir.as_deref(), Some(dir.as_path()), "the child must use its directory");
        for line in CHILD_LINES {
            assert!(has_line(&report.text, line), "child's own scrape lacks {line:?}:\n{}", report.text);
        }
        let shards = inspect(&dir).unwrap();
        assert_eq!(shards.len(), 1, "{shards:?}");
        let status = &shards[0];
        assert!(!status.live && !status.archive && status.problem.is_none(), "{status:?}");
        // Reading it is safe: it is the (dead) child's, never ours.
        let bytes = std::fs::read(dir.join(&status.file)).unwrap();
        GoodShard { name: status.file.clone(), bytes }
    })
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

/// The value of the sample line starting with `prefix ` in `text`.
fn line_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(prefix)?.strip_prefix(' ')?.parse().ok())
}

const REASONS: [&str; 8] = ["truncated", "foreign", "version", "checksum", "schema", "untrusted", "io", "python"];

/// `promshard_shard_errors_total` by reason, read with `sample_value`:
/// one scrape of this process's own directory per reason, so only use it
/// while that directory holds no bad file.
fn error_counts() -> BTreeMap<&'static str, u64> {
    REASONS
        .iter()
        .map(|r| {
            let value = sample_value("promshard_shard_errors_total", &[("reason", r)])
                .unwrap_or_else(|| panic!("no promshard_shard_errors_total{{reason={r:?}}}"));
            (*r, value as u64)
        })
        .collect()
}

/// `promshard_shard_errors_total` by reason, from a scrape's text.
fn error_counts_in(text: &str) -> BTreeMap<&'static str, u64> {
    REASONS
        .iter()
        .map(|r| {
            let prefix = format!("promshard_shard_errors_total{{reason=\"{r}\"}}");
            let value = line_value(text, &prefix).unwrap_or_else(|| panic!("no {prefix} in:\n{text}"));
            (*r, value as u64)
        })
        .collect()
}

fn delta(before: &BTreeMap<&'static str, u64>, after: &BTreeMap<&'static str, u64>) -> BTreeMap<&'static str, u64> {
    after.iter().map(|(r, n)| (*r, n - before[r])).filter(|(_, n)| *n > 0).collect()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn get_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// The regions of a shard, from its header (see
/// `runtime/src/shard/SHARD_FORMAT.md`).
struct Layout {
    schema: (usize, usize),
    strings: (usize, usize),
    slots: usize,
}

const HEADER_LEN: usize = 128;

fn layout(shard: &[u8]) -> Layout {
    assert_eq!(&shard[..8], b"PSHARD\0\0", "the shard format changed: update this test");
    let word = |i: usize| get_u64(shard, 24 + 8 * i) as usize;
    let layout = Layout { schema: (word(2), word(3)), strings: (word(4), word(5)), slots: word(6) };
    assert!(
        layout.schema.0 == HEADER_LEN
            && layout.schema.0 + layout.schema.1 <= layout.strings.0
            && layout.strings.1 >= 16
            && layout.strings.0 + layout.strings.1 <= layout.slots
            && layout.slots + 16 <= shard.len(),
        "the shard format changed: update this test"
    );
    layout
}

/// Recomputes the header checksum after an edit.
fn reseal_header(shard: &mut [u8]) {
    let sum = fnv1a(&shard[..HEADER_LEN - 8]);
    put_u64(shard, HEADER_LEN - 8, sum);
}

// ---------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shards")
}

/// The checked-in fixtures, which do not depend on the shard format: an
/// empty file, 40 pseudo-random bytes (xorshift64 from a fixed seed, so
/// re-running the generator gives the same file), the header of another
/// program's file (SQLite's) and garbage where a Python `.db` is expected.
fn static_fixtures() -> Vec<(&'static str, Vec<u8>)> {
    let mut state = 0x5eed_2024_u64;
    let random: Vec<u8> = (0..40)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    assert_ne!(random[0], b'P', "must not start like our magic");
    let mut sqlite = b"SQLite format 3\0".to_vec();
    // Page size 4096, format versions 1, no reserved bytes, payload
    // fractions 64/32/32, then zeros: a valid-looking database header.
    sqlite.extend_from_slice(&[0x10, 0x00, 1, 1, 0, 64, 32, 32]);
    sqlite.resize(256, 0);
    let python = b"GARBAGE: this is not a prometheus_client mmap file\n".to_vec();
    vec![
        ("empty.promshard", Vec::new()),
        ("random-40.promshard", random),
        ("sqlite-magic.promshard", sqlite),
        ("python-garbage.db", python),
    ]
}

/// Rewrites the checked-in fixtures:
/// `cargo test --test multiprocess_bad_files -- --ignored write_static_fixtures`.
#[test]
#[ignore = "writes tests/fixtures/shards; run by hand to regenerate them"]
fn write_static_fixtures() {
    std::fs::create_dir_all(fixtures_dir()).unwrap();
    for (name, bytes) in static_fixtures() {
        std::fs::write(fixtures_dir().join(name), bytes).unwrap();
    }
}

#[test]
fn static_fixtures_are_current() {
    for (name, bytes) in static_fixtures() {
        let path = fixtures_dir().join(name);
        let found = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(found, bytes, "{name} differs from its generator: run `write_static_fixtures` (ignored)");
    }
}

/// What to put in a directory.
enum Content {
    Bytes(Vec<u8>),
    /// A symlink to the good shard's name in the same directory.
    SymlinkToGood,
    Dir,
    Fifo,
    /// The bytes, chowned to `nobody` (only possible as root).
    OtherOwner(Vec<u8>),
}

struct Case {
    name: String,
    content: Content,
    /// The `reason` it is counted under, if it is an error at all.
    reason: Option<&'static str>,
}

fn case(name: &str, content: Content, reason: Option<&'static str>) -> Case {
    Case { name: name.to_owned(), content, reason }
}

/// Every bad file, made from the good shard's bytes and the fixtures.
fn bad_cases(good: &[u8]) -> Vec<Case> {
    let at = layout(good);
    let cut = |len: usize| Content::Bytes(good[..len].to_vec());
    let edited = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = good.to_vec();
        edit(&mut bytes);
        Content::Bytes(bytes)
    };
    let fixture = |name: &str| Content::Bytes(std::fs::read(fixtures_dir().join(name)).unwrap());
    // A Python `.db` with a sound header and entry framing whose key is
    // not JSON: `used`, then key length 8, key, 4 spaces, value, timestamp.
    let mut python_bad_key = Vec::new();
    python_bad_key.extend_from_slice(&40i32.to_ne_bytes());
    python_bad_key.extend_from_slice(&[0; 4]);
    python_bad_key.extend_from_slice(&8i32.to_ne_bytes());
    python_bad_key.extend_from_slice(b"not json    ");
    python_bad_key.extend_from_slice(&1.0f64.to_ne_bytes());
    python_bad_key.extend_from_slice(&0.0f64.to_ne_bytes());

    let mut cases = vec![
        case("static-empty.promshard", fixture("empty.promshard"), Some("truncated")),
        case("static-random-40.promshard", fixture("random-40.promshard"), Some("foreign")),
        case("static-sqlite.promshard", fixture("sqlite-magic.promshard"), Some("foreign")),
        case("counter_4242.db", fixture("python-garbage.db"), Some("python")),
        case("gauge_livesum_4243.db", Content::Bytes(python_bad_key), Some("python")),
        // Python creates a file before it writes its header: not an error.
        case("histogram_4244.db", Content::Bytes(Vec::new()), None),
        case("cut-in-magic.promshard", cut(5), Some("truncated")),
        case("cut-after-version.promshard", cut(16), Some("truncated")),
        case("cut-in-header.promshard", cut(100), Some("truncated")),
        case("cut-after-header.promshard", cut(HEADER_LEN), Some("truncated")),
        case("cut-in-schema.promshard", cut(at.schema.0 + at.schema.1 / 2), Some("truncated")),
        case("cut-in-strings.promshard", cut(at.strings.0 + 12), Some("truncated")),
        case("cut-in-slots.promshard", cut(at.slots + 8), Some("truncated")),
        case("cut-last-byte.promshard", cut(good.len() - 1), Some("truncated")),
        case("header-checksum.promshard", edited(&|b| b[HEADER_LEN - 3] ^= 0x40), Some("checksum")),
        case("header-pid-flipped.promshard", edited(&|b| b[20] ^= 0x01), Some("checksum")),
        case("schema-byte.promshard", edited(&|b| b[at.schema.0 + at.schema.1 / 2] ^= 0x20), Some("checksum")),
        case("foreign-magic.promshard", edited(&|b| b[..8].copy_from_slice(b"NOTSHARD")), Some("foreign")),
        case(
            "future-version.promshard",
            edited(&|b| {
                b[8..12].copy_from_slice(&99u32.to_le_bytes());
                reseal_header(b);
            }),
            Some("version"),
        ),
        case(
            "schema-before-header.promshard",
            edited(&|b| {
                put_u64(b, 24 + 8 * 2, 0);
                reseal_header(b);
            }),
            Some("schema"),
        ),
        case(
            "schema-bad-kind.promshard",
            edited(&|b| {
                // count, then the first metric's name, help and unit (each a
                // u32 length and bytes), then its kind byte.
                let mut p = at.schema.0 + 4;
                for _ in 0..3 {
                    p += 4 + u32::from_le_bytes(b[p..p + 4].try_into().unwrap()) as usize;
                }
                b[p] = 0xee;
                let sum = fnv1a(&b[at.schema.0..at.schema.0 + at.schema.1]);
                put_u64(b, 24 + 8 * 8, sum);
                reseal_header(b);
            }),
            Some("schema"),
        ),
        case("link.promshard", Content::SymlinkToGood, Some("untrusted")),
        case("x.promshard", Content::Dir, Some("untrusted")),
        case("fifo.promshard", Content::Fifo, Some("untrusted")),
    ];
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cases.push(case("other-user.promshard", Content::OtherOwner(good.to_vec()), Some("untrusted")));
    } else {
        let banner = "\n=== SKIPPED: not root, so no file owned by another user can be made ===\n";
        let _ = std::io::Write::write_all(&mut std::io::stderr(), banner.as_bytes());
    }
    cases
}

/// Creates `case` in `dir`, where the good shard is called `good_name`.
fn place(dir: &Path, case: &Case, good_name: &str) {
    let path = dir.join(&case.name);
    match &case.content {
        Content::Bytes(bytes) => std::fs::write(&path, bytes).unwrap(),
        Content::SymlinkToGood => std::os::unix::fs::symlink(dir.join(good_name), &path).unwrap(),
        Content::Dir => std::fs::create_dir(&path).unwrap(),
        Content::Fifo => {
            let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "{}", std::io::Error::last_os_error());
        }
        Content::OtherOwner(bytes) => {
            std::fs::write(&path, bytes).unwrap();
            std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
        }
    }
}

/// Removes a planted file; one compaction already removed (an empty
/// shard file, which no creator of ours leaves: they are renamed
/// complete) is fine.
fn remove(path: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return };
    if meta.is_dir() {
        std::fs::remove_dir(path).unwrap();
    } else {
        std::fs::remove_file(path).unwrap();
    }
}

// ---------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------

/// Each bad file beside a good dead shard: the scrape (`encode_dir`)
/// returns exactly what the good shard alone gives, the bad file is
/// counted once under its reason, and `inspect` names its problem. Then
/// all of them at once in this process's own directory, through its own
/// scrapes and `sample_value`, then deleted between scrapes.
#[test]
fn bad_files_never_fail_a_scrape() {
    let _serial = serial();
    let base = TempDir::new("bad-files");
    let own_dir = base.path().join("own");
    promshard::multiprocess::init(&own_dir).expect("the only test here that initialises");
    BAD_FILES_JOBS_TOTAL.inc_by(1000);
    BAD_FILES_QUEUED_TOTAL.with(("slow",)).inc_by(20);
    BAD_FILES_JOB_SECONDS.observe(0.05);
    BAD_FILES_ROUTE_HITS_TOTAL.with(("/parent",)).inc();
    assert_eq!(promshard::multiprocess::shard_dir().as_deref(), Some(own_dir.as_path()));

    let good = good_shard();
    let baseline_dir = base.path().join("baseline");
    std::fs::create_dir(&baseline_dir).unwrap();
    std::fs::write(baseline_dir.join(&good.name), &good.bytes).unwrap();
    let before = error_counts();
    let baseline = String::from_utf8(encode_dir(&baseline_dir, Format::Prometheus)).unwrap();
    assert_eq!(error_counts(), before, "a good shard is no error");
    for line in CHILD_LINES {
        assert!(has_line(&baseline, line), "{line:?} missing from the good shard's scrape:\n{baseline}");
    }

    // One bad file at a time, beside the good shard.
    let cases = bad_cases(&good.bytes);
    for (i, case) in cases.iter().enumerate() {
        let dir = base.path().join(format!("case-{i}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(&good.name), &good.bytes).unwrap();
        place(&dir, case, &good.name);
        let before = error_counts();
        let text = String::from_utf8(encode_dir(&dir, Format::Prometheus)).unwrap();
        let counted = delta(&before, &error_counts());
        assert_eq!(text, baseline, "{}: the scrape must be the good shard's alone", case.name);
        let want: BTreeMap<&str, u64> = case.reason.iter().map(|r| (*r, 1)).collect();
        assert_eq!(counted, want, "{}: counted reasons", case.name);
        if case.name.ends_with(".promshard") {
            let statuses = inspect(&dir).unwrap();
            // The problem text starts with the reason, then says what it means.
            let reason = |p: &Option<String>| p.as_ref().map(|p| p.split(':').next().unwrap_or("").to_owned());
            let problem = |file: &str| statuses.iter().find(|s| s.file == file).map(|s| reason(&s.problem));
            assert_eq!(problem(&case.name), Some(case.reason.map(str::to_owned)), "{}: {statuses:?}", case.name);
            assert_eq!(problem(&good.name), Some(None), "{}: {statuses:?}", case.name);
        }
    }

    // All of them at once, in this process's own directory.
    let own_name = promshard::multiprocess::inspect(&own_dir).unwrap();
    assert_eq!(own_name.len(), 1, "{own_name:?}");
    assert!(own_name[0].live && own_name[0].pid == Some(std::process::id()), "{own_name:?}");
    let mut per_scrape: BTreeMap<&str, u64> = BTreeMap::new();
    for case in &cases {
        if let Some(reason) = case.reason {
            *per_scrape.entry(reason).or_default() += 1;
        }
    }
    let mut counts = error_counts();
    std::fs::write(own_dir.join(&good.name), &good.bytes).unwrap();
    for case in &cases {
        place(&own_dir, case, &good.name);
    }
    let merged_lines = [
        "bad_files_jobs_total 1007",
        "bad_files_queued_total{queue=\"fast\"} 3",
        "bad_files_queued_total{queue=\"slow\"} 20",
        "bad_files_job_seconds_bucket{le=\"0.1\"} 1",
        "bad_files_job_seconds_bucket{le=\"1.0\"} 2",
        "bad_files_job_seconds_count 2",
        "bad_files_route_hits_total{route=\"/child\"} 2",
        "bad_files_route_hits_total{route=\"/parent\"} 1",
    ];
    // The first scrape reads the dead shard and folds it into the archive,
    // the second reads the archive.
    for scrape in 0..2 {
        let text = String::from_utf8(promshard::encode(Format::Prometheus)).unwrap();
        for line in merged_lines {
            assert!(has_line(&text, line), "scrape {scrape}: {line:?} missing:\n{text}");
        }
        let now = error_counts_in(&text);
        // Each bad file is counted once, by the first scrape that meets
        // it, however many scrapes skip it after that.
        let want = if scrape == 0 { per_scrape.clone() } else { BTreeMap::new() };
        assert_eq!(delta(&counts, &now), want, "scrape {scrape}: every bad file counted once");
        counts = now;
        let statuses = inspect(&own_dir).unwrap();
        assert!(statuses.iter().any(|s| s.archive && s.problem.is_none()), "{statuses:?}");
        assert!(!statuses.iter().any(|s| s.file == good.name), "absorbed: {statuses:?}");
        // An empty shard file held by no one is what a killed creator of
        // an older version left: the compaction removed it.
        assert!(!own_dir.join("static-empty.promshard").exists(), "scrape {scrape}: blank file kept");
    }
    // The same through `sample_value`; each call is a scrape of its own,
    // and none counts a file already counted.
    for reason in per_scrape.keys() {
        let got = sample_value("promshard_shard_errors_total", &[("reason", reason)]);
        assert_eq!(got, Some(counts[reason] as f64), "{reason}");
    }
    assert_eq!(sample_value("bad_files_jobs_total", &[]), Some(1007.0));
    counts = error_counts_in(&String::from_utf8(promshard::encode(Format::Prometheus)).unwrap());

    // Deleting files between scrapes: half the bad files, then the rest,
    // then the archive (the dead child's counts go with it).
    let first: Vec<&Case> = cases.iter().step_by(2).collect();
    let rest: Vec<&Case> = cases.iter().skip(1).step_by(2).collect();
    for (removed, remaining) in [(&first, &rest), (&rest, &Vec::new())] {
        for case in removed {
            remove(&own_dir.join(&case.name));
        }
        // The files left were counted already.
        let want: BTreeMap<&str, u64> = BTreeMap::new();
        let _ = remaining;
        let text = String::from_utf8(promshard::encode(Format::Prometheus)).unwrap();
        for line in merged_lines {
            assert!(has_line(&text, line), "after deleting: {line:?} missing:\n{text}");
        }
        let now = error_counts_in(&text);
        assert_eq!(delta(&counts, &now), want, "after deleting {} files", removed.len());
        counts = now;
    }
    std::fs::remove_file(own_dir.join("archive.promshard")).unwrap();
    let text = String::from_utf8(promshard::encode(Format::Prometheus)).unwrap();
    assert_eq!(line_value(&text, "bad_files_jobs_total"), Some(1000.0), "{text}");
    assert!(has_line(&text, "bad_files_route_hits_total{route=\"/parent\"} 1"), "{text}");
    assert!(!text.contains("/child"), "{text}");
    assert_eq!(delta(&counts, &error_counts_in(&text)), BTreeMap::new());
    let statuses = inspect(&own_dir).unwrap();
    assert_eq!(statuses.len(), 1, "only our own shard is left: {statuses:?}");

    // A corrupt archive is never overwritten (it holds dead workers'
    // counts): the dead shard beside it is not folded in and stays.
    let mut archive = good.bytes.clone();
    archive[HEADER_LEN - 1] ^= 1;
    std::fs::write(own_dir.join("archive.promshard"), &archive).unwrap();
    std::fs::write(own_dir.join(&good.name), &good.bytes).unwrap();
    for scrape in 0..2 {
        let text = String::from_utf8(promshard::encode(Format::Prometheus)).unwrap();
        for line in merged_lines {
            assert!(has_line(&text, line), "corrupt archive, scrape {scrape}: {line:?} missing:\n{text}");
        }
        assert_eq!(std::fs::read(own_dir.join("archive.promshard")).unwrap(), archive, "scrape {scrape}");
        assert!(own_dir.join(&good.name).exists(), "scrape {scrape}: the dead shard must stay");
        let now = error_counts_in(&text);
        let counted = delta(&counts, &now);
        // The merge skips the archive (counted once) and the compaction
        // that follows refuses it.
        if scrape == 0 {
            assert_eq!(counted, BTreeMap::from([("checksum", 1)]), "scrape {scrape}");
        } else {
            assert_eq!(counted, BTreeMap::new(), "scrape {scrape}: counted already");
        }
        counts = now;
    }
}

/// The string log has no checksum (it grows while the shard lives), so a
/// corrupt one is read as far as it makes sense: the shard's counts are
/// kept, nothing is counted as an error, and nothing panics. Each variant
/// gets its own directory so that a failure names it.
#[test]
fn corrupt_string_log_never_fails_a_scrape() {
    let _serial = serial();
    let good = good_shard();
    let at = layout(&good.bytes);
    let base = TempDir::new("bad-files-log");
    let used = |used: u64| {
        let mut bytes = good.bytes.clone();
        put_u64(&mut bytes, at.strings.0, used);
        bytes
    };
    let mut garbage = good.bytes.clone();
    garbage[at.strings.0 + 8..at.strings.0 + at.strings.1].fill(0xa5);
    let variants = [
        ("used = u64::MAX", used(u64::MAX)),
        ("used = u64::MAX - 7", used(u64::MAX - 7)),
        ("used = u64::MAX - 8", used(u64::MAX - 8)),
        ("used = 1 << 40", used(1 << 40)),
        ("used = the region's length", used(at.strings.1 as u64)),
        ("used = 3 (inside the first record)", used(3)),
        ("records overwritten with 0xa5", garbage),
    ];
    let mut failures = Vec::new();
    for (i, (what, bytes)) in variants.iter().enumerate() {
        let dir = base.path().join(format!("variant-{i}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("corrupt-log.promshard"), bytes).unwrap();
        let scrape = std::panic::catch_unwind(|| encode_dir(&dir, Format::Prometheus));
        match scrape {
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                failures.push(format!(
                    "{what}: encode_dir panicked ({message}); a copy of a valid dead shard with the 8-byte \
                     `used` word at the start of its string-log region (offset {}) set to that value",
                    at.strings.0
                ));
            }
            Ok(text) => {
                let text = String::from_utf8(text).unwrap();
                if line_value(&text, "bad_files_jobs_total") != Some(7.0) {
                    failures.push(format!("{what}: the shard's counts were lost:\n{text}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "a corrupt string log failed a scrape:\n{}", failures.join("\n"));
}

/// Files appear, are replaced and disappear while scrapes run: every scrape
/// returns the good shard's data (plus whichever copies it saw) and none
/// fails. Files are only ever created under a temporary name and renamed
/// into place, or unlinked: never truncated or rewritten in place, which
/// no writer of ours does either.
#[test]
fn files_churning_during_scrapes() {
    let _serial = serial();
    let good = good_shard();
    let base = TempDir::new("bad-files-churn");
    let dir = base.path().join("shards");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join(&good.name), &good.bytes).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut bad_checksum = good.bytes.clone();
    bad_checksum[HEADER_LEN - 1] ^= 1;
    let half = good.bytes[..good.bytes.len() / 2].to_vec();
    let variants = [good.bytes.clone(), half, Vec::new(), b"GARBAGE".repeat(20), bad_checksum];
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let tmp = dir.join(format!("tmp-{i}"));
                std::fs::write(&tmp, &variants[i % variants.len()]).unwrap();
                let name = dir.join(format!("churn-{}.promshard", i % 3));
                std::fs::rename(&tmp, &name).unwrap();
                if i % 4 == 0 {
                    let _ = std::fs::remove_file(dir.join(format!("churn-{}.promshard", (i + 1) % 3)));
                }
                let python = dir.join(format!("counter_{}.db", 5000 + i % 2));
                if i % 2 == 0 {
                    std::fs::write(&tmp, b"GARB").unwrap();
                    std::fs::rename(&tmp, &python).unwrap();
                } else {
                    let _ = std::fs::remove_file(&python);
                }
                i += 1;
            }
        });
        let _stop = StopOnDrop(&stop);
        for scrape in 0..300 {
            let text = String::from_utf8(encode_dir(&dir, Format::Prometheus)).unwrap();
            let jobs = line_value(&text, "bad_files_jobs_total").unwrap_or_else(|| panic!("scrape {scrape}:\n{text}"));
            assert!(jobs >= 7.0 && jobs % 7.0 == 0.0, "scrape {scrape}: {jobs}\n{text}");
            let routes = line_value(&text, "bad_files_route_hits_total{route=\"/child\"}");
            assert_eq!(routes, Some(jobs / 7.0 * 2.0), "scrape {scrape}:\n{text}");
        }
    });
}

/// A directory `init` cannot use makes the process record in memory (and
/// say so once), never panic; its scrape is its own values. A missing
/// directory that can be created is created and used.
#[test]
fn unusable_directories_fall_back_to_memory() {
    let base = TempDir::new("bad-files-dirs");
    let scratch = base.path();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;

    let created = scratch.join("missing/a/b");
    let report = run_child("record", &created, scratch);
    assert_eq!(report.shard_dir.as_deref(), Some(created.as_path()), "a missing directory is created");
    assert!(report.text.contains("promshard_shard_errors_total"), "in multiprocess mode:\n{}", report.text);
    let statuses = inspect(&created).unwrap();
    assert!(statuses.len() == 1 && !statuses[0].live, "{statuses:?}");
    for line in CHILD_LINES {
        assert!(has_line(&report.text, line), "created: {line:?} missing:\n{}", report.text);
    }

    let file = scratch.join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let real = scratch.join("real");
    std::fs::create_dir(&real).unwrap();
    let link = scratch.join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let unwritable = scratch.join("unwritable");
    std::fs::create_dir(&unwritable).unwrap();
    std::fs::set_permissions(&unwritable, std::fs::Permissions::from_mode(0o500)).unwrap();
    // Anyone who can write to the directory could plant files there: a
    // directory writable by group or others is refused, as ssh refuses a
    // group-writable ~/.ssh.
    let world = scratch.join("world-writable");
    std::fs::create_dir(&world).unwrap();
    std::fs::set_permissions(&world, std::fs::Permissions::from_mode(0o777)).unwrap();
    let group = scratch.join("group-writable");
    std::fs::create_dir(&group).unwrap();
    std::fs::set_permissions(&group, std::fs::Permissions::from_mode(0o770)).unwrap();
    let mut cases = vec![
        ("under a regular file", file.join("sub"), "record"),
        ("a regular file", file.clone(), "record"),
        ("unwritable", unwritable.clone(), "record-unwritable"),
        ("world-writable (0777)", world.clone(), "record"),
        ("group-writable (0770)", group.clone(), "record"),
    ];
    // A symlink to a directory of ours is that directory: used, under its
    // real name.
    let report = run_child("record", &link, scratch);
    assert_eq!(report.shard_dir, Some(std::fs::canonicalize(&real).unwrap()), "a symlinked directory is resolved");
    for line in CHILD_LINES {
        assert!(has_line(&report.text, line), "through a symlink: {line:?} missing:\n{}", report.text);
    }
    let foreign = scratch.join("foreign");
    if root {
        std::fs::create_dir(&foreign).unwrap();
        std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
        cases.push(("owned by another user", foreign.clone(), "record"));
    }
    for (what, dir, mode) in cases {
        let report = run_child(mode, &dir, scratch);
        if report.writable == Some(true) {
            // Root whose capabilities could not be dropped: nothing here is
            // unwritable to it. Say so rather than pass quietly.
            let banner = format!("\n=== SKIPPED: {what}: the child could still write {} ===\n", dir.display());
            let _ = std::io::Write::write_all(&mut std::io::stderr(), banner.as_bytes());
            continue;
        }
        assert_eq!(report.shard_dir, None, "{what}: must fall back to memory");
        for line in CHILD_LINES {
            assert!(has_line(&report.text, line), "{what}: {line:?} missing:\n{}", report.text);
        }
        assert!(!report.text.contains("promshard_shard_errors_total"), "{what}: memory mode:\n{}", report.text);
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
    assert_eq!(std::fs::read_dir(&world).unwrap().count(), 0, "nothing written in a world-writable directory");
    assert_eq!(std::fs::read_dir(&group).unwrap().count(), 0, "nothing written in a group-writable directory");
    assert_eq!(std::fs::read_dir(&unwritable).unwrap().count(), 0);
    std::fs::set_permissions(&unwritable, std::fs::Permissions::from_mode(0o700)).unwrap();
    if root {
        assert_eq!(std::fs::read_dir(&foreign).unwrap().count(), 0, "nothing written in another user's directory");
    }
}

/// In a child: scrapes `dir` (holding `good.bin`, a good shard's bytes)
/// over and over while a thread writes those bytes to `victim.promshard`
/// and truncates that file in place, for up to 2 seconds; reports how
/// many scrapes it survived.
fn truncate_race(dir: &Path, out: &Path) {
    let good = std::fs::read(dir.join("good.bin")).expect("good.bin");
    let victim = dir.join("victim.promshard");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let started = std::time::Instant::now();
    let mut scrapes = 0u64;
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::fs::write(&victim, &good).unwrap();
                std::fs::OpenOptions::new().write(true).open(&victim).unwrap().set_len(0).unwrap();
            }
        });
        let _stop = StopOnDrop(&stop);
        while scrapes < 20_000 && started.elapsed() < std::time::Duration::from_secs(2) {
            let _ = encode_dir(dir, Format::Prometheus);
            scrapes += 1;
        }
    });
    std::fs::write(out, format!("survived {scrapes} scrapes\n")).expect("write the report");
}

/// A shard file truncated in place (`: > file`, `truncate -s 0`) while a
/// scrape has it mapped must not kill the scraping process: touching a
/// mapped page past the new end of file raises SIGBUS. Run in a child so
/// that a crash is reported rather than taking this test binary down.
#[test]
fn shard_truncated_in_place_during_scrapes() {
    let good = good_shard();
    let base = TempDir::new("bad-files-truncate");
    let dir = base.path().join("shards");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("good.bin"), &good.bytes).unwrap();
    let (output, report) = spawn_child("truncate-race", &dir, base.path());
    use std::os::unix::process::ExitStatusExt;
    assert!(
        output.status.success(),
        "the scraping process died ({}{}) running encode_dir in a loop over a directory where \
         another thread kept writing a valid shard to victim.promshard and truncating it to 0 \
         bytes in place:\n--- stderr ---\n{}",
        output.status,
        if output.status.signal() == Some(libc::SIGBUS) { ": it touched a mapped page past end of file" } else { "" },
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(report.is_some_and(|r| r.starts_with("survived ")), "the child wrote no report");
}
