//! Runs and files: a process that starts recording in a directory with no
//! live shard clears the previous run; one that finds a live shard joins
//! its run; Python files are never touched; files and the directory are
//! private and never reached through a symlink.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use promshard::{Counter, Format, metric};

/// Deployments.
#[metric]
static DEPLOYS_TOTAL: Counter;

const WORKER: &str = "PROMSHARD_TEST_WORKER";

/// Re-executed as a separate process: records `amount` in `dir`, prints
/// the merged exposition, then exits or (with "hold") waits for stdin to
/// close so it stays live.
#[test]
fn worker_entry() {
    let Ok(spec) = std::env::var(WORKER) else { return };
    let (dir, rest) = spec.split_once('|').unwrap();
    let (amount, hold) = rest.split_once('|').unwrap();
    promshard::multiprocess::init(dir).unwrap();
    DEPLOYS_TOTAL.inc_by(amount.parse().unwrap());
    let text = String::from_utf8(promshard::encode(Format::Prometheus)).unwrap();
    println!("WORKER-OUTPUT-START\n{text}WORKER-OUTPUT-END");
    if hold == "hold" {
        let _ = std::io::Read::read(&mut std::io::stdin(), &mut [0u8; 1]);
    }
}

fn spawn(dir: &Path, amount: u64, hold: bool) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "worker_entry", "--nocapture", "--test-threads=1"])
        .env(WORKER, format!("{}|{amount}|{}", dir.display(), if hold { "hold" } else { "exit" }))
        .env_remove("PROMSHARD_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a worker and returns its `deploys_total`.
fn finish(child: Child) -> f64 {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "worker failed: {}", String::from_utf8_lossy(&out.stderr));
    deploys(&String::from_utf8(out.stdout).unwrap())
}

fn deploys(text: &str) -> f64 {
    let line = text.lines().find(|l| l.starts_with("deploys_total ")).unwrap_or_else(|| panic!("{text}"));
    line["deploys_total ".len()..].parse().unwrap()
}

/// Reads a holding worker's output up to its end marker: by then its
/// shard exists and is locked.
fn read_output(child: &mut Child) -> f64 {
    use std::io::BufRead;
    let mut text = String::new();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line == "WORKER-OUTPUT-END" {
            break;
        }
        text.push_str(&line);
        text.push('\n');
    }
    // Keep draining, so the worker's later output never hits a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    deploys(&text)
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("promshard-runs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn promshard_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".promshard"))
        .collect();
    names.sort();
    names
}

#[test]
fn a_new_run_starts_from_zero_but_a_live_run_is_joined() {
    if std::env::var(WORKER).is_ok() {
        return;
    }
    let dir = fresh_dir("clear");
    assert_eq!(finish(spawn(&dir, 5, false)), 5.0);
    std::fs::write(dir.join("counter_4242.db"), b"").unwrap();
    // The first run's worker is dead: the next run clears it.
    assert_eq!(finish(spawn(&dir, 7, false)), 7.0, "a restarted deployment starts from zero");
    assert!(dir.join("counter_4242.db").exists(), "Python's files are never removed");

    // A live process keeps the run open: newcomers add to it.
    let mut holder = spawn(&dir, 100, true);
    assert_eq!(read_output(&mut holder), 100.0, "the holder started a run, clearing the dead one");
    assert_eq!(finish(spawn(&dir, 1, false)), 101.0, "joined the live run");
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());

    // Reading a directory never clears it.
    let before = promshard_files(&dir);
    let _ = promshard::multiprocess::encode_dir(&dir, Format::Prometheus);
    let _ = promshard::multiprocess::inspect(&dir).unwrap();
    assert_eq!(promshard_files(&dir), before);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether a live run is found must not depend on the run lock alone: a
/// run whose lock file was removed (or whose live processes are of an
/// older version, which takes none) is still joined, its live shard found
/// by asking each one; and once its processes are gone, the run after it
/// starts from zero.
#[test]
fn a_live_run_is_joined_even_when_its_run_lock_is_gone() {
    if std::env::var(WORKER).is_ok() {
        return;
    }
    let dir = fresh_dir("runlock");
    let mut holder = spawn(&dir, 100, true);
    assert_eq!(read_output(&mut holder), 100.0);
    assert_eq!(finish(spawn(&dir, 2, false)), 102.0, "joined through the run lock");
    std::fs::remove_file(dir.join(".run.lock")).unwrap();
    assert_eq!(finish(spawn(&dir, 3, false)), 105.0, "joined by asking the shards");
    assert!(dir.join(".run.lock").exists(), "the joiner made the run lock anew");
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
    assert_eq!(finish(spawn(&dir, 4, false)), 4.0, "with every process gone, a new run");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn files_are_private_and_symlinks_are_refused() {
    if std::env::var(WORKER).is_ok() {
        return;
    }
    let dir = fresh_dir("private").join("nested");
    assert_eq!(finish(spawn(&dir, 3, false)), 3.0);
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    for name in promshard_files(&dir) {
        let meta = std::fs::symlink_metadata(dir.join(&name)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
        // SAFETY: geteuid has no preconditions.
        assert_eq!(meta.uid(), unsafe { libc::geteuid() });
    }

    // A shard that is a symlink is not read.
    let target = dir.join(&promshard_files(&dir)[0]);
    std::os::unix::fs::symlink(&target, dir.join("evil.promshard")).unwrap();
    let text = String::from_utf8(promshard::multiprocess::encode_dir(&dir, Format::Prometheus)).unwrap();
    assert!(text.contains("deploys_total 3\n"), "counted once, not through the link: {text}");
    std::fs::remove_file(dir.join("evil.promshard")).unwrap();

    // A shard directory reached through a symlink is that directory,
    // resolved once: the worker's shard is made in the real directory,
    // with a real name, and its run follows the one before.
    let link = fresh_dir("link");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    assert_eq!(finish(spawn(&link, 4, false)), 4.0);
    let files = promshard_files(&dir);
    assert_eq!(files.len(), 1, "the finished run was cleared, the new worker's shard is in the real directory");
    assert!(std::fs::symlink_metadata(dir.join(&files[0])).unwrap().is_file());
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    let _ = std::fs::remove_file(&link);
}
