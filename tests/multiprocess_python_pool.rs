//! A Python worker pool's `PROMETHEUS_MULTIPROC_DIR`, read by
//! `multiprocess::encode_dir` with no `child_exit` hook wired: a Python
//! master forks workers that record every metric type and every gauge
//! mode, and the test kills, adds and restarts them while it compares our
//! merge with Python's own `MultiProcessCollector`, sample by sample
//! through Python's parser.
//!
//! The oracle is Python's collector over a copy of the directory in which
//! `mark_process_dead` was called for every dead worker, which is what the
//! hook would have done: our reading must equal it with no hook at all.
//! Python's collector over the directory itself (no hook) shows the dead
//! workers' `live*` gauges, and the test checks that it differs, so that
//! an oracle which could not tell the two apart cannot pass.
//!
//! One test, so that its scrapes are the only ones of this process: the
//! reading keeps what it learnt of dead files between scrapes, and the
//! test checks that too (a dead file is parsed once). Everything it starts
//! is killed by pid when a guard drops. A missing Python skips loudly, or
//! fails under `PROMSHARD_ORACLES=require`.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use promshard::Format;
use support::python::{TempDir, assert_same, oracle, ours, value};
use support::{PYTHON_MISSING, python_with_prometheus_client, skip_or_fail};

/// A pool master: forks workers on command, each recording known amounts
/// of every type and mode, then waiting for signals (SIGUSR1: record more;
/// SIGUSR2: write 3,000 new series flat out, growing its file while it is
/// read). `late` workers define their metrics (and so open their files)
/// only on SIGUSR2. The master records nothing.
const POOL: &str = r#"
import os, signal, sys, time

MODES = ['all', 'liveall', 'sum', 'livesum', 'min', 'livemin', 'max', 'livemax', 'mostrecent', 'livemostrecent']

def define():
    from prometheus_client import Counter, Gauge, Histogram, Summary
    m = {}
    m['c'] = Counter('pool_jobs', 'Jobs done.', ['kind'])
    m['h'] = Histogram('pool_latency_seconds', 'Latency.', ['op'], buckets=[2.5e-07, 0.001, 0.1, 1e6])
    m['s'] = Summary('pool_payload_bytes', 'Payload.')
    m['g'] = {mode: Gauge('pool_gauge_' + mode, 'Gauge of mode ' + mode, ['q'], multiprocess_mode=mode)
              for mode in MODES}
    return m

def record(m, i, k=1):
    m['c'].labels('a').inc(k * (i + 1))
    m['c'].labels('b\n"x"').inc(0.5)
    for x in (0.0005, 0.05, 0.5, 3e6)[: (i % 4) + 1]:
        m['h'].labels('read').observe(x)
    m['s'].observe(10 * (i + 1))
    for j, mode in enumerate(MODES):
        m['g'][mode].labels('q1').set(100 * i + j + k)

def worker(i, late):
    state = {'m': None if late else define()}
    if not late:
        record(state['m'], i)
    def more(signum, frame):
        if state['m'] is None:
            state['m'] = define()
            state['m']['c'].labels('a').inc(1000)
        else:
            record(state['m'], i, 2)
        print('DONE', os.getpid(), flush=True)
    def spin(signum, frame):
        if state['m'] is None:
            state['m'] = define()
        for n in range(3000):
            state['m']['c'].labels('spin-%d' % n).inc()
        print('DONE', os.getpid(), flush=True)
    signal.signal(signal.SIGUSR1, more)
    signal.signal(signal.SIGUSR2, spin)
    print('W', i, os.getpid(), flush=True)
    while True:
        signal.pause()

children = []
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] in ('spawn', 'late'):
        pid = os.fork()
        if pid == 0:
            try:
                worker(int(cmd[1]), cmd[0] == 'late')
            except BaseException:
                import traceback
                print('FAILED', repr(traceback.format_exc()), flush=True)
            finally:
                os._exit(0)
        children.append(pid)
    elif cmd[0] == 'kill':
        os.kill(int(cmd[1]), signal.SIGKILL)
        os.waitpid(int(cmd[1]), 0)
        print('KILLED', cmd[1], flush=True)
    elif cmd[0] == 'exit':
        break
for pid in children:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except OSError:
        pass
print('EXITED', flush=True)
"#;

/// A running pool master; dropping it kills it and its workers by pid.
struct Pool {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    workers: Vec<u32>,
}

impl Pool {
    fn start(python: &Path, dir: &Path) -> Pool {
        let mut child = Command::new(python)
            .args(["-c", POOL])
            .env("PROMETHEUS_MULTIPROC_DIR", dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the Python pool");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Pool { child, stdin, stdout, workers: Vec::new() }
    }

    fn master(&self) -> u32 {
        self.child.id()
    }

    fn line(&mut self, prefix: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "no {prefix} line from the pool");
            let mut line = String::new();
            assert!(self.stdout.read_line(&mut line).unwrap() > 0, "the pool exited");
            assert!(!line.starts_with("FAILED"), "a Python worker failed: {line}");
            let fields: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            if fields.first().map(String::as_str) == Some(prefix) {
                return fields;
            }
        }
    }

    fn command(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Forks worker `i` and waits until it has recorded; returns its pid.
    fn spawn(&mut self, i: usize, late: bool) -> u32 {
        self.command(&format!("{} {i}", if late { "late" } else { "spawn" }));
        let pid: u32 = self.line("W")[2].parse().unwrap();
        self.workers.push(pid);
        pid
    }

    fn kill(&mut self, pid: u32) {
        self.command(&format!("kill {pid}"));
        self.line("KILLED");
        self.workers.retain(|w| *w != pid);
    }

    /// Sends `signal` to worker `pid` and waits for its `DONE`.
    fn signal(&mut self, pid: u32, signal: i32) {
        // SAFETY: a plain kill(2) of our own child's child.
        assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
        loop {
            if self.line("DONE")[1] == pid.to_string() {
                return;
            }
        }
    }

    /// Spawns worker `i` (late) as pid `target`, by setting
    /// `ns_last_pid` (root only); `None` when that cannot be done.
    fn spawn_as(&mut self, i: usize, target: u32) -> Option<u32> {
        for _ in 0..20 {
            if std::fs::write("/proc/sys/kernel/ns_last_pid", (target - 1).to_string()).is_err() {
                return None;
            }
            let pid = self.spawn(i, true);
            if pid == target {
                return Some(pid);
            }
            // Another process took the pid first: try again.
            self.kill(pid);
        }
        None
    }

    fn exit(mut self) {
        self.command("exit");
        self.line("EXITED");
        let _ = self.child.wait();
        self.workers.clear();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for pid in &self.workers {
            // SAFETY: kill(2) by pid of a process this test started.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pool_jobs_total{kind="a"}` as Python's parse keys it.
const JOBS_A: &str = "pool_jobs_total{kind=61}";
const LIVESUM: &str = "pool_gauge_livesum{q=7131}";

/// Pids that no process can have: above Linux's largest `pid_max`.
const GONE_PID: u32 = 4_194_400;

/// Runs `f` with this process's descriptor limit at its lowest free
/// descriptor: nothing can be opened until it returns.
/// The writer's pid in a prometheus_client file name (`counter_123.db`).
fn file_pid(name: &str) -> Option<u32> {
    name.strip_suffix(".db")?.rsplit('_').next()?.parse().ok()
}

/// Makes the next pids come from a stretch of 2,000 that holds none of
/// `taken` (root only: elsewhere the kernel's order is kept).
fn steer_pids_clear_of(taken: &[u32]) {
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max").map_or(0, |t| t.trim().parse().unwrap_or(0));
    let next = taken.iter().max().copied().unwrap_or(0) + 100;
    let start = if next + 2_000 < pid_max {
        next
    } else {
        // Near the wrap: the lowest stretch clear of them.
        (1..pid_max / 2_000)
            .map(|k| k * 2_000)
            .find(|s| !taken.iter().any(|t| (*s..s + 2_000).contains(t)))
            .unwrap_or(next)
    };
    let _ = std::fs::write("/proc/sys/kernel/ns_last_pid", start.to_string());
}

fn with_no_descriptors_left<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: plain rlimit and descriptor calls on this process.
    unsafe {
        let mut old: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut old), 0);
        let lowest = libc::dup(0);
        assert!(lowest >= 0);
        libc::close(lowest);
        let low = libc::rlimit { rlim_cur: lowest as libc::rlim_t, rlim_max: old.rlim_max };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &low), 0);
        let out = f();
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &old), 0);
        out
    }
}

#[test]
fn a_python_pool_without_hooks() {
    let Some(python) = python_with_prometheus_client() else {
        return skip_or_fail(PYTHON_MISSING);
    };
    let started = Instant::now();
    let dir = TempDir::new("python-pool");
    let d = &dir.0;

    // 1. A pool of four live workers: nothing dead.
    let mut pool = Pool::start(&python, d);
    let workers: Vec<u32> = (0..4).map(|i| pool.spawn(i, false)).collect();
    assert_same("four live workers", &ours(&python, d), &oracle(&python, d, &[], &[]));
    // 1 + 2 + 3 + 4 jobs of kind a.
    assert_eq!(value(&ours(&python, d), JOBS_A), 10.0);

    // 2. Two workers crash (SIGKILL, no hook): their live-mode gauges stop
    // counting, their counters and histograms go on counting.
    pool.kill(workers[1]);
    pool.kill(workers[3]);
    let mut dead = vec![workers[1], workers[3]];
    let no_hook = oracle(&python, d, &[], &[]);
    let with_hook = oracle(&python, d, &dead, &[]);
    assert_ne!(no_hook.get(LIVESUM), with_hook.get(LIVESUM), "the oracle tells hook from no hook");
    assert_same("two workers killed", &ours(&python, d), &with_hook);
    assert_eq!(value(&ours(&python, d), JOBS_A), 10.0);

    // 3. Churn: replacements come, a live worker records more.
    pool.spawn(4, false);
    pool.signal(workers[0], libc::SIGUSR1);
    assert_same("after churn", &ours(&python, d), &oracle(&python, d, &dead, &[]));
    // 10 + worker 4's 5 + worker 0's second 2.
    assert_eq!(value(&ours(&python, d), JOBS_A), 17.0);

    // 4. A dead file is parsed once: spoil one in place (same inode) and
    // the merge does not change, because a dead writer's file never does.
    let before = ours(&python, d);
    let spoiled = d.join(format!("counter_{}.db", workers[1]));
    let original = std::fs::read(&spoiled).unwrap();
    std::fs::write(&spoiled, vec![0xffu8; original.len()]).unwrap();
    assert_eq!(ours(&python, d), before, "a folded dead file is not read again");
    std::fs::write(&spoiled, &original).unwrap();

    // 5. Two thousand dead workers' files (pids no process can have), and
    // corrupt and truncated ones: the good ones count as Python counts
    // them, the bad ones are skipped (Python's collector would fail).
    let templates: Vec<PathBuf> = std::fs::read_dir(d)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(&format!("_{}.db", workers[3])))
        .collect();
    assert!(templates.len() >= 12, "{templates:?}");
    let mut fake_dead = Vec::new();
    let mut made = 0;
    for n in 0..2000 / templates.len() as u32 + 1 {
        let pid = GONE_PID + n;
        fake_dead.push(pid);
        for template in &templates {
            let name =
                template.file_name().unwrap().to_string_lossy().replace(&workers[3].to_string(), &pid.to_string());
            std::fs::copy(template, d.join(name)).unwrap();
            made += 1;
        }
    }
    assert!(made >= 2000);
    let truncated = format!("counter_{}.db", GONE_PID - 1);
    std::fs::write(d.join(&truncated), &original[..original.len().min(20)]).unwrap();
    let mut corrupt = original.clone();
    corrupt[12..40].fill(b'{');
    let corrupt_name = format!("histogram_{}.db", GONE_PID - 2);
    std::fs::write(d.join(&corrupt_name), &corrupt).unwrap();
    dead.extend(&fake_dead);
    let skip = [truncated.as_str(), corrupt_name.as_str()];
    let with_many = oracle(&python, d, &dead, &skip);
    assert_same("2,000 dead files", &ours(&python, d), &with_many);
    // 17 + 4 per fake dead worker (worker 3's counts).
    assert_eq!(value(&ours(&python, d), JOBS_A), 17.0 + 4.0 * fake_dead.len() as f64);
    let listed = promshard::multiprocess::inspect_python(d).unwrap();
    let state = |name: &str| listed.iter().find(|f| f.file == name).map(|f| f.state).unwrap();
    assert_eq!(state(&truncated), "dead-unreadable");
    assert!(listed.iter().find(|f| f.file == corrupt_name).unwrap().problem.is_some());
    assert_eq!(state(&format!("counter_{}.db", workers[0])), "live");
    assert_eq!(state(&format!("counter_{}.db", workers[1])), "dead-folded");
    assert_eq!(state(&format!("gauge_livesum_{}.db", workers[1])), "dead-live-gauge");
    // Out of descriptors: no listing, no /proc, no file can be opened.
    // The scrape is the same: folded files need none, live ones count
    // what they held last, and no writer is taken for dead.
    let plain = |text: Vec<u8>| -> String {
        String::from_utf8(text).unwrap().lines().filter(|l| !l.contains("promshard_")).collect::<Vec<_>>().join("\n")
    };
    let before = plain(promshard::multiprocess::encode_dir(d, Format::Prometheus));
    let during = with_no_descriptors_left(|| promshard::multiprocess::encode_dir(d, Format::Prometheus));
    assert_eq!(plain(during), before, "a scrape out of descriptors");
    assert_eq!(plain(promshard::multiprocess::encode_dir(d, Format::Prometheus)), before);
    // Folded files removed (a cleanup by hand): made again without them.
    for pid in &fake_dead {
        for template in &templates {
            let name =
                template.file_name().unwrap().to_string_lossy().replace(&workers[3].to_string(), &pid.to_string());
            std::fs::remove_file(d.join(name)).unwrap();
        }
    }
    dead.retain(|pid| !fake_dead.contains(pid));
    assert_eq!(value(&ours(&python, d), JOBS_A), 17.0);
    assert_same("dead files removed", &ours(&python, d), &oracle(&python, d, &dead, &skip));

    // 6. A file written flat out while it is read (3,000 new series: the
    // file grows and is remapped), and its writer SIGKILLed midway: every
    // scrape succeeds and the counts never go down.
    let spinner = pool.spawn(5, false);
    // SAFETY: kill(2) of the worker just started.
    assert_eq!(unsafe { libc::kill(spinner as i32, libc::SIGUSR2) }, 0);
    let mut last = 0.0;
    let mut killed = false;
    for round in 0..200 {
        let text = String::from_utf8(promshard::multiprocess::encode_dir(d, Format::Prometheus)).unwrap();
        let spun: f64 = text
            .lines()
            .filter(|l| l.starts_with("pool_jobs_total{kind=\"spin-"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum();
        assert!(spun >= last, "round {round}: spun {spun} < {last}");
        last = spun;
        if !killed && spun >= 500.0 {
            pool.kill(spinner);
            dead.push(spinner);
            killed = true;
        }
        if killed && round > 50 {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if !killed {
        pool.kill(spinner);
        dead.push(spinner);
    }
    assert_same("a writer killed mid-write", &ours(&python, d), &oracle(&python, d, &dead, &skip));

    // 7. Pid reuse: a late worker's pid names an old dead writer's file
    // before the worker opens anything. It counts as a dead file; once the
    // worker opens it (prometheus_client appends to an existing file of
    // its pid) its new counts show.
    let late = pool.spawn(6, true);
    std::fs::copy(d.join(format!("counter_{}.db", workers[1])), d.join(format!("counter_{late}.db"))).unwrap();
    let reused = ours(&python, d);
    assert_same("a pid's old file, not held", &reused, &oracle(&python, d, &dead, &skip));
    let listed = promshard::multiprocess::inspect_python(d).unwrap();
    let row = listed.iter().find(|f| f.file == format!("counter_{late}.db")).unwrap();
    assert_eq!((row.live, row.state), (false, "dead-pid-reused"));
    pool.signal(late, libc::SIGUSR1);
    let revived = ours(&python, d);
    assert_eq!(value(&revived, JOBS_A), value(&reused, JOBS_A) + 1000.0);
    assert_same("the pid's new writer opened it", &revived, &oracle(&python, d, &dead, &skip));

    // 7b. A real pid reuse (as root: `ns_last_pid` picks the next pid):
    // a new worker is given the pid of worker 1, dead and folded long ago.
    // Until it records its old files count as a dead writer's; then it
    // reopens them (prometheus_client appends) and its counts show.
    match pool.spawn_as(7, workers[1]) {
        Some(pid) => {
            let before = ours(&python, d);
            assert_same("a dead writer's pid given to a new worker", &before, &oracle(&python, d, &dead, &skip));
            pool.signal(pid, libc::SIGUSR1);
            let after = ours(&python, d);
            assert_eq!(value(&after, JOBS_A), value(&before, JOBS_A) + 1000.0, "the new worker's counts show");
            assert_same("the new worker reopened its pid's file", &after, &oracle(&python, d, &dead, &skip));
        }
        None => eprintln!("not root, or the pid was always taken first: no real pid reuse checked"),
    }
    // Later steps meet no pid reuse they did not ask for: pids go on from
    // a stretch none of this test's processes had.
    let mut taken: Vec<u32> = pool.workers.iter().chain(&workers).chain(&dead).copied().collect();
    taken.push(pool.master());
    steer_pids_clear_of(&taken);

    // 8. The pool stops; its files stay (no wipe). A new pool in the same
    // directory starts from zero: the old run's files, all dead and last
    // changed before the new master started, count for nothing.
    let last_run = ours(&python, d);
    dead.extend(pool.workers.iter().copied());
    pool.exit();
    let stopped = oracle(&python, d, &dead, &skip);
    assert_same("pool stopped, last run shown", &ours(&python, d), &stopped);
    assert_eq!(value(&stopped, JOBS_A), value(&last_run, JOBS_A));
    std::thread::sleep(Duration::from_millis(200));
    let old_files: Vec<String> =
        std::fs::read_dir(d).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    let old_pids: Vec<u32> = old_files.iter().filter_map(|f| file_pid(f)).collect();
    let mut pool = Pool::start(&python, d);
    let fresh: Vec<u32> = (0..2).map(|i| pool.spawn(i, false)).collect();
    let new_run = ours(&python, d);
    let old: Vec<&str> = old_files.iter().map(String::as_str).collect();
    // A fresh worker given an old file's pid (pids wrapped, where they
    // could not be steered) goes on from that file's values, which
    // Python's collector cannot tell apart: only the total is checked.
    if fresh.iter().all(|p| !old_pids.contains(p)) {
        assert_same("a restarted pool", &new_run, &oracle(&python, d, &[], &old));
    }
    assert_eq!(value(&new_run, JOBS_A), 3.0, "1 + 2, nothing of the last run");
    let listed = promshard::multiprocess::inspect_python(d).unwrap();
    for f in &listed {
        let want = if old_files.contains(&f.file) { (false, "previous-run") } else { (true, "live") };
        assert_eq!((f.live, f.state), want, "{}", f.file);
    }
    assert_eq!(listed.len(), old_files.len() + listed.iter().filter(|f| f.live).count());
    assert!(fresh.iter().all(|w| pool.workers.contains(w)));

    // 9. A new master started while the old one lives (gunicorn's USR2
    // upgrade) continues the run: once the old one has gone, its files
    // still count.
    let mut successor = Pool::start(&python, d);
    successor.spawn(5, false);
    let overlap = ours(&python, d);
    assert_eq!(value(&overlap, JOBS_A), 9.0, "1 + 2 + 6");
    let mut gone = pool.workers.clone();
    gone.push(pool.master());
    pool.exit();
    let handed_over = ours(&python, d);
    assert_same("the old master gone", &handed_over, &oracle(&python, d, &gone, &old));
    assert_eq!(value(&handed_over, JOBS_A), 9.0, "nothing of this run is lost");
    // 10. A worker of the new run given the pid of a worker of the last
    // run (as root: `ns_last_pid`) reopens that worker's files and goes
    // on from their values, as prometheus_client does: only what it adds
    // counts for the new run.
    let last_run_pid = old_pids
        .iter()
        .copied()
        .find(|p| !fresh.contains(p) && std::path::Path::new(&format!("/proc/{p}")).metadata().is_err());
    match last_run_pid.and_then(|target| successor.spawn_as(8, target)) {
        Some(pid) => {
            let before = ours(&python, d);
            assert_eq!(value(&before, JOBS_A), 9.0, "a new worker with an old pid that has not recorded yet");
            successor.signal(pid, libc::SIGUSR1);
            let after = ours(&python, d);
            assert_eq!(value(&after, JOBS_A), 1009.0, "only the new worker's own 1000, none of its pid's last run");
            successor.kill(pid);
            assert_eq!(value(&ours(&python, d), JOBS_A), 1009.0, "the new worker dead: its own count stays");
        }
        None => eprintln!("not root, or the pid was always taken first: no pid reuse across runs checked"),
    }

    drop(successor);

    eprintln!("python pool test took {:?}", started.elapsed());
}
