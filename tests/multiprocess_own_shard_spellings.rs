//! Attacks the liveness guarantee "a process holds the lock on its shard
//! for its whole life": a recording process must never open its own shard
//! by name, however its directory is spelled, and its shard directory must
//! stay the same directory when the process changes its working directory.
//!
//! POSIX drops a process's record lock when it closes *any* descriptor of
//! the file. So a recording process that reaches its own directory through
//! another spelling (relative, through a symlink, with `..`) in
//! `multiprocess::encode_dir`, `inspect` or `compact_dir` must still
//! recognise its own shard. If it opens it like a stranger's and closes
//! the descriptor, it looks dead: `inspect` calls it dead, a live sibling's
//! scrape compacts and deletes the live shard (later counts are lost in
//! every view), and a process starting next finds no live shard and
//! clears the whole run.
//!
//! A relative `PROMSHARD_DIR` (or relative path given to `init`) followed
//! by `std::env::set_current_dir` must not make the process scrape, or
//! children forked later create their shards in, another directory.
//!
//! Every scenario runs in a fresh process (see `harness`).

mod harness;

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::{Setup, TempDir, Worker, isolated, isolated_with, own_text, value_in};
use promshard::multiprocess::{compact_dir, encode_dir, inspect};
use promshard::{Counter, Format, Gauge, metric};

/// Jobs done.
#[metric]
static SPELL_JOBS_TOTAL: Counter;

/// Live processes.
#[metric(mode = livesum)]
static SPELL_LIVE: Gauge;

const ASK: Duration = Duration::from_secs(20);
const SCENARIO: Duration = Duration::from_secs(60);

/// A sibling worker's commands: `inc N`, `live` (the live pids its
/// `inspect` of its shard directory finds), `jobs` (its scrape's total).
fn sibling(command: &str) -> String {
    let mut words = command.split_whitespace();
    match words.next() {
        Some("inc") => {
            SPELL_JOBS_TOTAL.inc_by(words.next().unwrap().parse().unwrap());
            "ok".into()
        }
        Some("live") => live_pids(&promshard::multiprocess::shard_dir().expect("the sibling records in a shard")),
        Some("jobs") => format!("{:?}", value_in(&own_text(), "spell_jobs_total", &[])),
        Some("text") => own_text(),
        other => panic!("unknown command {other:?}"),
    }
}

/// The pids `inspect(dir)` reports live, comma-separated, sorted.
fn live_pids(dir: &Path) -> String {
    let mut pids: Vec<u32> = inspect(dir).unwrap().iter().filter(|s| s.live).filter_map(|s| s.pid).collect();
    pids.sort();
    pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[derive(Clone, Copy, Debug)]
enum Api {
    EncodeDir,
    Inspect,
    CompactDir,
}

#[derive(Clone, Copy, Debug)]
enum Spelling {
    /// Relative to the working directory, after a `set_current_dir`.
    Relative,
    /// Through a symlink to the directory.
    Symlink,
    /// `<dir>/../<name>`.
    DotDot,
}

/// The scenario: a recording master and a live sibling; the master calls
/// `api` on its own directory spelled another way, and must still look
/// live, keep its counts, and keep the run alive.
fn own_shard_through(api: Api, spelling: Spelling) {
    let base = TempDir::new("spelling");
    let dir = base.path().join("shards");
    promshard::multiprocess::init(&dir).unwrap();
    SPELL_JOBS_TOTAL.inc_by(5);
    SPELL_LIVE.inc();
    let me = std::process::id();

    let mut sibling = Worker::spawn(sibling);
    assert_eq!(sibling.ask("inc 1", ASK), "ok");
    let expected_live = {
        let mut pids = [me, sibling.pid as u32];
        pids.sort();
        format!("{},{}", pids[0], pids[1])
    };
    assert_eq!(sibling.ask("live", ASK), expected_live, "before anything: both processes are live");

    let other: PathBuf = match spelling {
        Spelling::Relative => {
            std::env::set_current_dir(base.path()).unwrap();
            PathBuf::from("shards")
        }
        Spelling::Symlink => {
            let link = base.path().join("link");
            std::os::unix::fs::symlink(&dir, &link).unwrap();
            link
        }
        Spelling::DotDot => harness::dotdot_spelling(&dir),
    };
    let call = format!("multiprocess::{api:?}({})", other.display());
    match api {
        Api::EncodeDir => {
            let text = String::from_utf8(encode_dir(&other, Format::Prometheus)).unwrap();
            assert_eq!(value_in(&text, "spell_jobs_total", &[]), Some(6.0), "{call} renders the run:\n{text}");
        }
        Api::Inspect => {
            let statuses = inspect(&other).unwrap();
            let mine: Vec<_> = statuses.iter().filter(|s| s.pid == Some(me)).collect();
            assert!(
                mine.len() == 1 && mine[0].live,
                "{call} must show the running process (pid {me}) as live: {statuses:?}"
            );
        }
        Api::CompactDir => compact_dir(&other),
    }

    // The lock must have survived the call: a sibling still sees us live.
    assert_eq!(
        sibling.ask("live", ASK),
        expected_live,
        "after {call}, the recording process's own shard looks dead to a live sibling: it opened its own \
         shard by name through the other spelling and closing that descriptor dropped its fcntl lock"
    );
    // A sibling's scrape compacts dead shards; ours must not be one.
    let _ = sibling.ask("jobs", ASK);
    SPELL_JOBS_TOTAL.inc_by(10);
    assert_eq!(
        sibling.ask("jobs", ASK),
        "Some(16.0)",
        "after {call} and a sibling's scrape, counts the master recorded later must be visible to the sibling"
    );
    assert_eq!(
        value_in(&own_text(), "spell_jobs_total", &[]),
        Some(16.0),
        "after {call}, the master's own scrape must count every increment exactly once"
    );
    assert_eq!(sibling.exit(ASK).map(harness::describe_status).as_deref(), Some("exit code 0"));

    // A process starting now must join the live run, not clear it.
    let joined = run_joiner(&dir);
    assert_eq!(
        joined,
        Some(116.0),
        "after {call}, a new process starting in the directory must join the live run (5 + 1 + 10 + its 100), \
         not see no live shard and clear the run"
    );
}

const JOINER_DIR: &str = "PROMSHARD_ADV_JOINER_DIR";

/// Re-executed by [`run_joiner`]: records 100 in the directory and prints
/// its scrape's total.
#[test]
fn joiner_entry() {
    if !harness::is_child("joiner_entry") {
        return;
    }
    promshard::multiprocess::init(std::env::var_os(JOINER_DIR).unwrap()).unwrap();
    SPELL_JOBS_TOTAL.inc_by(100);
    println!("JOINER-TOTAL {:?}", value_in(&own_text(), "spell_jobs_total", &[]));
}

/// Starts a brand-new process in `dir` and returns what its scrape says.
fn run_joiner(dir: &Path) -> Option<f64> {
    let setup = Setup { env: vec![(JOINER_DIR.into(), dir.into())], cwd: None };
    let out = harness::spawn_and_wait("joiner_entry", Duration::from_secs(30), setup).unwrap();
    assert!(out.status.success(), "joiner failed: {}", out.stderr);
    let at = out.stdout.find("JOINER-TOTAL ").unwrap_or_else(|| panic!("the joiner printed no total:\n{}", out.stdout));
    let line = out.stdout[at + "JOINER-TOTAL ".len()..].lines().next().unwrap_or("");
    line.strip_prefix("Some(")?.strip_suffix(')')?.parse().ok()
}

#[test]
fn encode_dir_through_a_relative_path() {
    isolated("encode_dir_through_a_relative_path", SCENARIO, || own_shard_through(Api::EncodeDir, Spelling::Relative));
}

#[test]
fn encode_dir_through_a_symlink() {
    isolated("encode_dir_through_a_symlink", SCENARIO, || own_shard_through(Api::EncodeDir, Spelling::Symlink));
}

#[test]
fn encode_dir_through_dotdot() {
    isolated("encode_dir_through_dotdot", SCENARIO, || own_shard_through(Api::EncodeDir, Spelling::DotDot));
}

#[test]
fn inspect_through_a_relative_path() {
    isolated("inspect_through_a_relative_path", SCENARIO, || own_shard_through(Api::Inspect, Spelling::Relative));
}

#[test]
fn inspect_through_a_symlink() {
    isolated("inspect_through_a_symlink", SCENARIO, || own_shard_through(Api::Inspect, Spelling::Symlink));
}

#[test]
fn inspect_through_dotdot() {
    isolated("inspect_through_dotdot", SCENARIO, || own_shard_through(Api::Inspect, Spelling::DotDot));
}

#[test]
fn compact_dir_through_a_relative_path() {
    isolated("compact_dir_through_a_relative_path", SCENARIO, || {
        own_shard_through(Api::CompactDir, Spelling::Relative)
    });
}

#[test]
fn compact_dir_through_a_symlink() {
    isolated("compact_dir_through_a_symlink", SCENARIO, || own_shard_through(Api::CompactDir, Spelling::Symlink));
}

#[test]
fn compact_dir_through_dotdot() {
    isolated("compact_dir_through_dotdot", SCENARIO, || own_shard_through(Api::CompactDir, Spelling::DotDot));
}

/// A worker forked after the chdir: `inc N`, `jobs`.
fn late_worker(command: &str) -> String {
    sibling(command)
}

/// The process started in `base` with its shard directory given as the
/// relative `shards` (by `init` or by `PROMSHARD_DIR`); it records, a
/// worker records and exits, then the process changes directory and forks
/// a worker that records. Every view must count everything.
fn relative_dir_then_chdir(base: &Path, by_init: bool) {
    let dir = base.join("shards");
    if by_init {
        promshard::multiprocess::init("shards").unwrap();
    }
    SPELL_JOBS_TOTAL.inc_by(1);
    let mut early = Worker::spawn(late_worker);
    assert_eq!(early.ask("inc 10", ASK), "ok");
    assert_eq!(early.exit(ASK).map(harness::describe_status).as_deref(), Some("exit code 0"));
    assert_eq!(value_in(&own_text(), "spell_jobs_total", &[]), Some(11.0), "before the chdir");

    std::env::set_current_dir("/").unwrap();
    SPELL_JOBS_TOTAL.inc_by(1000);
    let how = if by_init { "multiprocess::init(\"shards\")" } else { "PROMSHARD_DIR=shards" };
    // Every view is checked; all the wrong ones are reported together.
    let mut wrong = Vec::new();
    let own = value_in(&own_text(), "spell_jobs_total", &[]);
    if own != Some(1011.0) {
        wrong.push(format!(
            "the process's own scrape says {own:?}, not 1011 (1 + the dead worker's 10 + 1000): it no longer reads \
             its shard directory"
        ));
    }
    let mut late = Worker::spawn(late_worker);
    assert_eq!(late.ask("inc 100", ASK), "ok");
    let in_dir = harness::encode_dir_text(&dir);
    let seen = value_in(&in_dir, "spell_jobs_total", &[]);
    if seen != Some(1111.0) {
        wrong.push(format!(
            "encode_dir({}) says {seen:?}, not 1111: the worker forked after the chdir did not record into a shard \
             in that directory",
            dir.display()
        ));
    }
    let late_view = late.ask("jobs", ASK);
    if late_view != "Some(1111.0)" {
        wrong.push(format!("the late worker's own scrape says {late_view}, not 1111"));
    }
    let own = value_in(&own_text(), "spell_jobs_total", &[]);
    if own != Some(1111.0) {
        wrong.push(format!("the process's own scrape with the late worker live says {own:?}, not 1111"));
    }
    assert!(wrong.is_empty(), "{how}, then set_current_dir(\"/\"):\n- {}", wrong.join("\n- "));
}

#[test]
fn relative_init_then_set_current_dir() {
    let base = TempDir::new("relative-init");
    let setup = Setup { env: Vec::new(), cwd: Some(base.path().to_owned()) };
    isolated_with("relative_init_then_set_current_dir", SCENARIO, setup, || {
        relative_dir_then_chdir(&std::env::current_dir().unwrap(), true)
    });
}

#[test]
fn relative_promshard_dir_then_set_current_dir() {
    let base = TempDir::new("relative-env");
    let setup = Setup {
        env: vec![(promshard::multiprocess::DIR_ENV.into(), "shards".into())],
        cwd: Some(base.path().to_owned()),
    };
    isolated_with("relative_promshard_dir_then_set_current_dir", SCENARIO, setup, || {
        relative_dir_then_chdir(&std::env::current_dir().unwrap(), false)
    });
}
