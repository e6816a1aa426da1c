//! Shared machinery for the adversarial multiprocess tests: running a
//! scenario in a fresh process with a deadline, forking workers driven
//! over pipes, unique temporary directories, reading an exposition back,
//! and capturing what promshard logs.
//!
//! # Why a fresh process per scenario
//!
//! The storage mode (memory or a shard directory) is chosen once per
//! process, at the first recording. So every scenario that needs its own
//! directory runs in this test binary re-executed with
//! `--exact NAME --nocapture --test-threads=1` and [`ROLE_ENV`] naming the
//! test: [`isolated`] is called by the test in both processes; in the
//! parent it spawns the child and waits for it with a deadline, in the
//! child it runs the scenario. The child is the leader of its own process
//! group, so that on a timeout (a deadlock is a failure, never a hang) the
//! parent kills it together with every worker it forked.

// Each test crate that includes this module uses a different subset.
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Names the test whose scenario a re-executed child runs.
pub const ROLE_ENV: &str = "PROMSHARD_ADVERSARIAL_ROLE";

/// Whether this process is the re-executed child running `name`.
pub fn is_child(name: &str) -> bool {
    std::env::var(ROLE_ENV).is_ok_and(|r| r == name)
}

/// Whether this process is a re-executed child of any test (then every
/// other test in the binary must do nothing).
pub fn in_any_child() -> bool {
    std::env::var_os(ROLE_ENV).is_some()
}

/// How a child is started: extra environment, working directory.
#[derive(Default)]
pub struct Setup {
    pub env: Vec<(String, OsString)>,
    pub cwd: Option<PathBuf>,
}

/// Runs `scenario` in a fresh process (see the module docs) and fails with
/// the child's panic message if it panics, dies, or outlives `timeout`.
/// `name` must be the test function's name.
pub fn isolated(name: &str, timeout: Duration, scenario: impl FnOnce()) {
    isolated_with(name, timeout, Setup::default(), scenario)
}

/// [`isolated`] with extra environment or a working directory.
pub fn isolated_with(name: &str, timeout: Duration, setup: Setup, scenario: impl FnOnce()) {
    if is_child(name) {
        scenario();
        return;
    }
    if in_any_child() {
        return;
    }
    let outcome = run_child(name, timeout, setup);
    if let Err(message) = outcome {
        panic!("{message}");
    }
}

/// What a finished child said: its exit and its output.
pub struct ChildOutput {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Spawns the child for `name`, waits up to `timeout`; `Err` with a
/// one-paragraph description when it did not end well.
fn run_child(name: &str, timeout: Duration, setup: Setup) -> Result<ChildOutput, String> {
    let out = spawn_and_wait(name, timeout, setup)?;
    if out.status.success() {
        return Ok(out);
    }
    use std::os::unix::process::ExitStatusExt;
    let why = match out.status.signal() {
        Some(signal) => format!("the scenario process was killed by signal {signal} ({})", signal_name(signal)),
        None => format!("the scenario failed ({})", out.status),
    };
    Err(format!("{why}: {}\n--- child stderr (tail) ---\n{}", panic_message(&out.stderr), tail(&out.stderr, 60)))
}

/// Spawns the re-executed child and collects its output; `Err` on timeout.
pub fn spawn_and_wait(name: &str, timeout: Duration, setup: Setup) -> Result<ChildOutput, String> {
    let exe = std::env::current_exe().expect("the test binary");
    let mut command = Command::new(exe);
    command
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, name)
        .env("RUST_BACKTRACE", "0")
        .env_remove(promshard::multiprocess::DIR_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (k, v) in &setup.env {
        command.env(k, v);
    }
    if let Some(cwd) = &setup.cwd {
        command.current_dir(cwd);
    }
    let mut child = command.spawn().expect("re-execute the test binary");
    let pgid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The child's workers are in its process group: end every one still
    // around (they hold the output pipes open), and only ours.
    // SAFETY: a process group this test created.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let status = match status {
        Some(status) => status,
        None => {
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&err_thread.join().unwrap_or_default()).into_owned();
            return Err(format!(
                "the scenario did not finish within {timeout:?} (deadlock or hang; killed it and its workers)\n\
                 --- child stderr (tail) ---\n{}",
                tail(&stderr, 60)
            ));
        }
    };
    let stdout = String::from_utf8_lossy(&out_thread.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_thread.join().unwrap_or_default()).into_owned();
    Ok(ChildOutput { status, stdout, stderr })
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGBUS => "SIGBUS",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGKILL => "SIGKILL",
        libc::SIGABRT => "SIGABRT",
        _ => "?",
    }
}

/// The last panic message in a child's stderr (the scenario's own
/// assertion, after any panics it caught on the way).
pub fn panic_message(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    let Some(at) = lines.iter().rposition(|l| l.contains("panicked at")) else {
        return "(no panic message)".to_owned();
    };
    let message: Vec<&str> = lines[at + 1..]
        .iter()
        .copied()
        .take_while(|l| !l.starts_with("note:") && !l.starts_with("stack backtrace:") && !l.is_empty())
        .collect();
    message.join("\n")
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------
// Directories
// ---------------------------------------------------------------------

/// A unique name: pid, time, counter.
pub fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("promshard-adv-{tag}-{}-{nanos}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A fresh directory under the system temp dir (0700), removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&dir).unwrap();
        set_mode(&dir, 0o700);
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Only the process that made it removes it (not a forked worker).
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `target` written relative to `from` (both absolute, no `..`), e.g.
/// `../b/c`.
pub fn relative_path(target: &Path, from: &Path) -> PathBuf {
    let t: Vec<Component> = target.components().collect();
    let f: Vec<Component> = from.components().collect();
    let common = t.iter().zip(&f).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// `dir` spelled with `..`: `dir/../<its name>`.
pub fn dotdot_spelling(dir: &Path) -> PathBuf {
    dir.join("..").join(dir.file_name().unwrap())
}

// ---------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------

/// Forks; the child runs `f` and `_exit`s with its return value (101 if
/// it panics). Returns the child's pid.
pub fn fork_child(f: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: the child runs `f` and leaves with `_exit`, never returning
    // into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: leave at once, without the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Waits for our child `pid` up to `timeout`; `None` (after SIGKILLing
/// it) when it did not end in time. Returns the raw wait status.
pub fn wait_timeout(pid: libc::pid_t, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: our own child.
        let got = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if got == pid {
            return Some(status);
        }
        if got < 0 {
            panic!("waitpid({pid}): {}", std::io::Error::last_os_error());
        }
        if Instant::now() > deadline {
            // SAFETY: our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Describes a wait status.
pub fn describe_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exit code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        let s = libc::WTERMSIG(status);
        format!("killed by signal {s} ({})", signal_name(s))
    } else {
        format!("status {status}")
    }
}

/// A pipe: (read end, write end), close-on-exec.
pub fn pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: a valid array for the two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0, "pipe");
    // SAFETY: fresh descriptors we own.
    unsafe { (std::fs::File::from(OwnedFd::from_raw_fd(fds[0])), std::fs::File::from(OwnedFd::from_raw_fd(fds[1]))) }
}

/// Reads one `\n`-terminated line from `file` within `timeout`; `None` on
/// timeout or end of file. Reads byte by byte, so nothing is buffered past
/// the line.
pub fn read_line_timeout(file: &mut std::fs::File, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let mut line = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let mut poll = libc::pollfd { fd: file.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut poll, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if ready < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return None;
        }
        if ready == 0 {
            continue;
        }
        let mut byte = [0u8; 1];
        match file.read(&mut byte) {
            Ok(0) | Err(_) => return None,
            Ok(_) if byte[0] == b'\n' => return Some(String::from_utf8_lossy(&line).into_owned()),
            Ok(_) => line.push(byte[0]),
        }
    }
}

/// Makes multi-line text fit one protocol line, and back.
pub fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

pub fn unescape(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A forked process that answers one-line commands over pipes.
pub struct Worker {
    pub pid: libc::pid_t,
    commands: Option<std::fs::File>,
    replies: std::fs::File,
    reaped: bool,
}

impl Worker {
    /// Forks a worker running `handle(command) -> reply` for each line it
    /// reads; it `_exit`s(0) when its command pipe closes, (101) if
    /// `handle` panics.
    pub fn spawn(handle: fn(&str) -> String) -> Worker {
        Worker::spawn_with(|| {}, handle, || {})
    }

    /// [`spawn`](Self::spawn), with `prelude` run in the child first and
    /// `epilogue` when its command pipe closes.
    pub fn spawn_with(prelude: fn(), handle: fn(&str) -> String, epilogue: fn()) -> Worker {
        let (cmd_r, cmd_w) = pipe();
        let (rep_r, rep_w) = pipe();
        // SAFETY: the child serves commands and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
        if pid == 0 {
            drop(cmd_w);
            drop(rep_r);
            let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                prelude();
                serve_commands(cmd_r, rep_w, handle);
                epilogue();
            }));
            // SAFETY: leave at once, without the parent's exit handlers.
            unsafe { libc::_exit(if served.is_ok() { 0 } else { 101 }) };
        }
        drop(cmd_r);
        drop(rep_w);
        Worker { pid, commands: Some(cmd_w), replies: rep_r, reaped: false }
    }

    /// In a forked copy of the process that owns this handle: closes the
    /// inherited pipe ends without touching the worker (it is not ours).
    pub fn forget(mut self) {
        self.reaped = true;
        self.commands = None;
    }

    /// Sends `command`, returns the reply; panics on timeout or death.
    pub fn ask(&mut self, command: &str, timeout: Duration) -> String {
        self.try_ask(command, timeout)
            .unwrap_or_else(|| panic!("worker {} gave no answer to {command:?} within {timeout:?}", self.pid))
    }

    pub fn try_ask(&mut self, command: &str, timeout: Duration) -> Option<String> {
        let commands = self.commands.as_mut()?;
        commands.write_all(format!("{command}\n").as_bytes()).ok()?;
        read_line_timeout(&mut self.replies, timeout)
    }

    /// Closes the command pipe (the worker exits) and waits; the wait
    /// status.
    pub fn exit(&mut self, timeout: Duration) -> Option<i32> {
        self.commands = None;
        self.reaped = true;
        wait_timeout(self.pid, timeout)
    }

    /// SIGKILLs the worker and reaps it.
    pub fn kill(&mut self) {
        self.commands = None;
        if !self.reaped {
            self.reaped = true;
            // SAFETY: our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The worker side of [`Worker`]: one reply line per command line.
pub fn serve_commands(mut commands: std::fs::File, mut replies: std::fs::File, handle: fn(&str) -> String) {
    loop {
        let Some(line) = read_line_timeout(&mut commands, Duration::from_secs(3600)) else { return };
        let reply = escape(&handle(&line));
        if replies.write_all(format!("{reply}\n").as_bytes()).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------
// Reading expositions
// ---------------------------------------------------------------------

/// One sample line of a 0.0.4 text exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses the sample lines of a Prometheus 0.0.4 (or OpenMetrics) text;
/// label values may hold `\"`, `\\` and `\n` escapes.
pub fn parse_samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (name_end, mut labels) = match line.find(['{', ' ']) {
            Some(i) if line.as_bytes()[i] == b'{' => (i, Vec::new()),
            Some(i) => (i, Vec::new()),
            None => continue,
        };
        let name = line[..name_end].to_owned();
        let mut rest = &line[name_end..];
        if rest.starts_with('{') {
            rest = &rest[1..];
            loop {
                if let Some(r) = rest.strip_prefix('}') {
                    rest = r;
                    break;
                }
                let rest2 = rest.trim_start_matches(',');
                let Some(eq) = rest2.find('=') else { break };
                let key = rest2[..eq].to_owned();
                let mut value = String::new();
                let mut chars = rest2[eq + 2..].char_indices();
                let mut end = 0;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, other)) => value.push(other),
                            None => {}
                        },
                        '"' => {
                            end = i;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                labels.push((key, value));
                rest = &rest2[eq + 2 + end + 1..];
            }
        }
        let value_text = rest.split_whitespace().next().unwrap_or("");
        let value = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => match v.parse() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        out.push(Sample { name, labels, value });
    }
    out
}

/// The value of sample `name` with exactly `labels` (any order) in `text`.
pub fn value_in(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    parse_samples(text)
        .into_iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
        })
        .map(|s| s.value)
}

/// The `.promshard` file names in `dir`, sorted.
pub fn shard_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".promshard"))
        .collect();
    names.sort();
    names
}

/// `promshard::multiprocess::encode_dir(dir)` as text (0.0.4).
pub fn encode_dir_text(dir: &Path) -> String {
    String::from_utf8(promshard::multiprocess::encode_dir(dir, promshard::Format::Prometheus)).expect("UTF-8")
}

/// This process's own scrape as 0.0.4 text.
/// A resource of this process (a pool's size): each worker of a
/// [`pool_worker`] pool sets its own.
pub static POOL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A worker's commands: `pool N` sets its [`POOL`], `pid` says its pid.
pub fn pool_worker(command: &str) -> String {
    let (verb, arg) = command.split_once(' ').unwrap_or((command, ""));
    match verb {
        "pool" => {
            POOL.store(arg.parse().unwrap(), std::sync::atomic::Ordering::SeqCst);
            "ok".to_owned()
        }
        "pid" => std::process::id().to_string(),
        other => panic!("unknown command {other:?}"),
    }
}

/// Forks `rounds` children one after another, each scraping itself three
/// times; fails if one hangs (3 s) or fails: what a pre-fork master does
/// while promshard's threads are busy.
pub fn forked_children_keep_scraping(rounds: u32) {
    for round in 0..rounds {
        let pid = fork_child(|| {
            for _ in 0..3 {
                own_text();
            }
            0
        });
        let status = wait_timeout(pid, Duration::from_secs(3))
            .unwrap_or_else(|| panic!("fork {round}: the child hung in its scrape"));
        assert_eq!(status, 0, "fork {round}: {}", describe_status(status));
    }
}

/// Scrapes this process until `check` holds of the text (10 s at most:
/// workers publish on an interval), and returns that text.
pub fn eventually(what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = own_text();
        if check(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what}: never held; last scrape:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn own_text() -> String {
    String::from_utf8(promshard::encode(promshard::Format::Prometheus)).expect("UTF-8")
}

/// The sum of every `promshard_shard_errors_total` sample in `text`.
pub fn shard_errors(text: &str) -> f64 {
    parse_samples(text).iter().filter(|s| s.name == "promshard_shard_errors_total").map(|s| s.value).sum()
}

// ---------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------

/// Every record logged in this process since [`capture_logs`].
pub static LOGS: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let text = record.args().to_string();
        let _ = writeln!(std::io::stderr(), "[log {}] {text}", record.level());
        LOGS.lock().unwrap_or_else(|e| e.into_inner()).push((record.level(), text));
    }
    fn flush(&self) {}
}

/// Installs a logger that keeps every record (and echoes it to stderr).
pub fn capture_logs() {
    let _ = log::set_boxed_logger(Box::new(Capture));
    log::set_max_level(log::LevelFilter::Trace);
}

/// Logged messages at warn level or worse.
pub fn warnings() -> Vec<String> {
    LOGS.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(l, _)| *l <= log::Level::Warn)
        .map(|(_, m)| m.clone())
        .collect()
}

// ---------------------------------------------------------------------
// Limits and mounts
// ---------------------------------------------------------------------

/// Sets the soft and hard limit of `resource`.
pub fn set_rlimit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) {
    let limit = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: a valid rlimit struct.
    assert_eq!(unsafe { libc::setrlimit(resource, &limit) }, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

pub fn get_rlimit(resource: libc::__rlimit_resource_t) -> (u64, u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a valid rlimit struct.
    assert_eq!(unsafe { libc::getrlimit(resource, &mut limit) }, 0);
    (limit.rlim_cur, limit.rlim_max)
}

/// A tmpfs mounted on a fresh directory; unmounted (lazily) and removed
/// on drop, even when the test panics.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "256k"); `Err` with the reason when
    /// `mount` is not permitted here.
    pub fn mount(size: &str) -> Result<Tmpfs, String> {
        let path = std::env::temp_dir().join(unique("tmpfs"));
        std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(&path)
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => Ok(Tmpfs { path }),
            Ok(o) => {
                let _ = std::fs::remove_dir(&path);
                Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&o.stderr).trim()))
            }
            Err(e) => {
                let _ = std::fs::remove_dir(&path);
                Err(format!("cannot run mount: {e}"))
            }
        }
    }

    /// Fills the file system with `filler` until it is full, then gives
    /// back `free_pages` pages.
    pub fn fill_leaving(&self, free_pages: u64) {
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0xabu8; 4096];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(_) => break,
            }
        }
        // Whole pages only, so what is given back is exactly pages.
        let keep = (written / 4096).saturating_sub(free_pages) * 4096;
        file.set_len(keep).unwrap();
        file.sync_all().unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).stdin(Stdio::null()).output();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Keeps the default panic message for every panic except those a test
/// causes on purpose, whose message starts with `expected:`.
pub fn quiet_expected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info.payload().downcast_ref::<&str>().copied().unwrap_or_default();
            if !message.starts_with("expected:") {
                default(info);
            }
        }));
    });
}
