//! Running `examples/prefork_server.rs` as a user runs it, for the
//! end-to-end tests: a pool on a free loopback port with a shard directory
//! of its own, a plain HTTP client, killing a pool's workers by pid, and a
//! real Prometheus server queried through its HTTP API.
//!
//! Everything started here is stopped by pid (a pool: by its process
//! group, master and workers) when its guard drops, also when the test
//! panics. A test file using this module declares `mod harness;` (for
//! `parse_samples`) and `mod support;` beside it.

// Each test crate that includes this module uses a different subset.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::harness::{TempDir, parse_samples};

/// Held by each load test of a binary, so that two pools never share the
/// machine's (two, in CI) cores and timing-sensitive checks stay fair.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Seconds since the epoch, as Prometheus timestamps are.
pub fn unix_now() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// A running `prefork_server`: its master, and the directory it keeps
/// its shards in.
pub struct Pool {
    child: Child,
    pub addr: SocketAddr,
    /// The master's pid (from its banner: under the `cargo run` fallback
    /// the child is cargo, not the master).
    pub master: u32,
    pub dir: PathBuf,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    stopped: bool,
    _base: TempDir,
}

/// How a pool ended: exit status, and everything it printed.
pub struct Stopped {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Pool {
    /// Starts the example on `127.0.0.1:0` with a fresh shard directory
    /// and `args`; returns once it printed its banner (its workers are
    /// forked and the socket is listening).
    pub fn start(args: &[&str]) -> Pool {
        let base = TempDir::new("prefork");
        let dir = base.path().join("shards");
        let mut child = crate::support::example_command("prefork_server")
            .args(["--listen", "127.0.0.1:0", "--dir"])
            .arg(&dir)
            .args(args)
            .env_remove("PROMSHARD_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: the guard ends master and workers
            // together, whatever state the test left them in.
            .process_group(0)
            .spawn()
            .expect("cannot start the prefork_server example");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        let mut pool = Pool {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            master: 0,
            dir,
            stdout,
            stderr,
            stopped: false,
            _base: base,
        };
        // Long enough for the `cargo run` fallback to build the example.
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let banner = pool.stdout.lock().unwrap().clone();
            if banner.contains("worker pids:") {
                let first = banner.lines().next().unwrap();
                let master = first.split("master ").nth(1).and_then(|r| r.split(' ').next()).unwrap();
                let addr = first.split("http://").nth(1).and_then(|r| r.split(' ').next()).unwrap();
                pool.master = master.parse().unwrap();
                pool.addr = addr.parse().unwrap();
                return pool;
            }
            if let Ok(Some(status)) = pool.child.try_wait() {
                panic!("prefork_server exited at start ({status}):\n{}", pool.stderr.lock().unwrap());
            }
            assert!(Instant::now() < deadline, "prefork_server printed no banner:\n{banner}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The master's live children: its workers right now.
    pub fn workers(&self) -> Vec<u32> {
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.master)).unwrap_or_default();
        children.split_whitespace().map(|p| p.parse().unwrap()).collect()
    }

    /// SIGKILLs worker `pid` if it is still a child of this pool's master;
    /// whether the signal was sent. Race-free: the pid is pinned with a
    /// pidfd before its parent is checked, so a pid reused meanwhile by
    /// another process is never signalled.
    pub fn kill_worker(&self, pid: u32) -> bool {
        // SAFETY: pidfd_open has no memory preconditions.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) } as libc::c_int;
        if fd < 0 {
            return false;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Field 4, counted after the command name's closing parenthesis.
        let parent = stat.rfind(')').and_then(|at| stat[at + 1..].split_whitespace().nth(1)?.parse::<u32>().ok());
        let sent = parent == Some(self.master)
            // SAFETY: a pidfd we own; no siginfo.
            && unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd, libc::SIGKILL, std::ptr::null::<u8>(), 0) } == 0;
        // SAFETY: closing the pidfd we opened.
        unsafe { libc::close(fd) };
        sent
    }

    /// The `.promshard` files in the shard directory.
    pub fn shard_files(&self) -> Vec<String> {
        let names = std::fs::read_dir(&self.dir).map(|d| d.filter_map(|e| e.ok()).collect::<Vec<_>>());
        let mut names: Vec<String> = names
            .unwrap_or_default()
            .iter()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".promshard"))
            .collect();
        names.sort();
        names
    }

    /// Stops the pool as a user does (SIGTERM to the master) and waits
    /// for it to exit, up to 30 s.
    pub fn stop(mut self) -> Stopped {
        // SAFETY: signalling the master we started.
        unsafe { libc::kill(self.master as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "prefork_server did not stop within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        self.stopped = true;
        // The reader threads finish at end of file; give them a moment.
        std::thread::sleep(Duration::from_millis(50));
        let stdout = self.stdout.lock().unwrap().clone();
        let stderr = self.stderr.lock().unwrap().clone();
        Stopped { status, stdout, stderr }
    }

    /// What the pool printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if !self.stopped {
            // SAFETY: the process group we created (its id is our child's pid).
            unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

/// Reads `from` to its end on a thread, into the returned buffer.
fn collect(mut from: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let buffer = Arc::new(Mutex::new(String::new()));
    let into = Arc::clone(&buffer);
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = from.read(&mut chunk) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
    });
    buffer
}

/// A complete HTTP response.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The pid of the worker that answered (the example's `X-Worker-Pid`).
    pub fn worker(&self) -> u32 {
        self.header("x-worker-pid").and_then(|p| p.parse().ok()).expect("an X-Worker-Pid header")
    }
}

/// `GET target` on `addr`, one request per connection; `None` unless a
/// complete response came (its full `Content-Length`, or all its chunks).
pub fn get(addr: SocketAddr, target: &str) -> Option<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    write!(stream, "GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8(raw[..split].to_vec()).ok()?;
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let find = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    if find("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body)?;
    } else if let Some(length) = find("content-length") {
        if body.len() != length.parse::<usize>().ok()? {
            return None;
        }
    }
    Some(Response { status, headers, body: String::from_utf8(body).ok()? })
}

/// The body of a chunked transfer, if it is complete.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
}

/// A scrape of a pool: the worker that answered, and its samples by
/// name and sorted labels.
pub struct Scrape {
    pub worker: u32,
    pub text: String,
    pub samples: BTreeMap<(String, Vec<(String, String)>), f64>,
}

impl Scrape {
    /// The sum of every sample called `name`.
    pub fn sum(&self, name: &str) -> f64 {
        self.samples.iter().filter(|((n, _), _)| n == name).map(|(_, v)| v).sum()
    }

    /// The samples called `name`, by labels.
    pub fn series(&self, name: &str) -> BTreeMap<Vec<(String, String)>, f64> {
        self.samples.iter().filter(|((n, _), _)| n == name).map(|((_, l), v)| (l.clone(), *v)).collect()
    }

    /// The `pid` labels of the samples called `name`.
    pub fn pids(&self, name: &str) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .series(name)
            .keys()
            .map(|labels| match &labels[..] {
                [(key, pid)] if key == "pid" => pid.parse().unwrap(),
                other => panic!("{name} with labels {other:?}, not one pid"),
            })
            .collect();
        pids.sort_unstable();
        pids
    }
}

/// `GET /metrics` on the pool, parsed; `None` if no complete answer came.
pub fn scrape(addr: SocketAddr) -> Option<Scrape> {
    let response = get(addr, "/metrics")?;
    assert_eq!(response.status, 200, "{}", response.body);
    let samples = parse_samples(&response.body)
        .into_iter()
        .map(|s| {
            let mut labels = s.labels;
            labels.sort();
            ((s.name, labels), s.value)
        })
        .collect();
    Some(Scrape { worker: response.worker(), text: response.body, samples })
}

/// A Prometheus server on loopback, scraping every second and evaluating
/// the given rule files every second; killed by pid when dropped.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    dir: TempDir,
}

impl Prometheus {
    /// Starts `binary` scraping `targets` as job `prefork`, and waits until
    /// it is ready (30 s at most).
    pub fn start(binary: &Path, targets: &[SocketAddr], rule_files: &[PathBuf]) -> Prometheus {
        Prometheus::start_with(binary, targets, rule_files, &[])
    }

    /// [`start`](Self::start) with more command-line arguments
    /// (`--enable-feature=…`).
    pub fn start_with(binary: &Path, targets: &[SocketAddr], rule_files: &[PathBuf], args: &[&str]) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let rules: Vec<String> = rule_files.iter().map(|r| format!("  - '{}'\n", r.display())).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n{}scrape_configs:\n  - job_name: prefork\n    static_configs:\n      - targets: [{}]\n",
            rules.concat(),
            targets.join(", ")
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        // Taken back from the kernel just before Prometheus binds it: a
        // small window in which another process could take it, which the
        // readiness wait below would report.
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let child = std::process::Command::new(binary)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start prometheus");
        let server = Prometheus { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(addr, "/-/ready").is_none_or(|r| r.status != 200) {
            assert!(Instant::now() < deadline, "Prometheus never became ready:\n{}", server.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// What Prometheus logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<path>?<query>`'s `data`; panics unless its status is
    /// `success`.
    pub fn api(&self, path: &str, params: &[(&str, String)]) -> serde_json::Value {
        let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
        let target = format!("/api/v1/{path}?{}", query.join("&"));
        let response = get(self.addr, &target).unwrap_or_else(|| panic!("no answer from Prometheus to {target}"));
        let json: serde_json::Value = serde_json::from_str(&response.body)
            .unwrap_or_else(|e| panic!("{target}: not JSON ({e}): {}", response.body));
        assert_eq!(json["status"], "success", "{target}: {}", response.body);
        json["data"].clone()
    }

    /// An instant query at `time` (now if `None`): its result vector.
    pub fn query(&self, expr: &str, time: Option<f64>) -> Vec<serde_json::Value> {
        let mut params = vec![("query", expr.to_owned())];
        params.extend(time.map(|t| ("time", format!("{t:.3}"))));
        let data = self.api("query", &params);
        assert_eq!(data["resultType"], "vector", "{expr}: {data}");
        data["result"].as_array().unwrap().clone()
    }

    /// The value of an instant query that must return one series.
    pub fn value(&self, expr: &str, time: Option<f64>) -> f64 {
        let result = self.query(expr, time);
        assert_eq!(result.len(), 1, "{expr} at {time:?}: {result:?}");
        sample_value(&result[0])
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // By pid: the child we started.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of one `{"metric":…,"value":[t,"v"]}` result.
pub fn sample_value(series: &serde_json::Value) -> f64 {
    let text = series["value"][1].as_str().unwrap_or_else(|| panic!("no value in {series}"));
    match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().unwrap(),
    }
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The repository's `deploy/` directory.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}
