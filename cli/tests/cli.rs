//! The `promshard` binary against real shard directories. A worker (this
//! test binary re-executed with `PROMSHARD_CLI_TEST_WORKER` set to a
//! directory) records known values into its shard there; the CLI dumps,
//! checks and serves that directory. Every wait is bounded; the network is
//! loopback only.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use promshard::{Counter, Gauge, instrument_handler, metric};

// The workspace's helpers for HTTP responses and outside tools.
#[path = "../../tests/http_client/mod.rs"]
mod http_client;
#[path = "../../tests/support/mod.rs"]
mod support;

const BIN: &str = env!("CARGO_BIN_EXE_promshard");
const WORKER_ENV: &str = "PROMSHARD_CLI_TEST_WORKER";
const READY: &str = "PROMSHARD_CLI_TEST_WORKER_READY";
const TIMEOUT: Duration = Duration::from_secs(60);

/// Requests the worker handled.
#[metric(labels(status = ["ok", "err"]))]
static CLI_TEST_REQUESTS_TOTAL: Counter;

/// Orders the worker took, with the trace of the last one.
#[metric(exemplars)]
static CLI_TEST_ORDERS_TOTAL: Counter;

/// The worker's temperature.
#[metric(mode = sum)]
static CLI_TEST_TEMPERATURE: Gauge;

#[instrument_handler(route = "/cli/items", method = "GET")]
fn list_items() -> &'static str {
    "items"
}

/// Declared and never called: its own method's series show, at zero.
#[instrument_handler(route = "/cli/items", method = "POST")]
fn add_item() -> &'static str {
    "added"
}

/// The recorded values, as the text exposition shows them.
const EXPECTED: [&str; 3] = [
    "cli_test_requests_total{status=\"ok\"} 3",
    "cli_test_requests_total{status=\"err\"} 1",
    "cli_test_temperature 21.5",
];

/// Not a test of its own: the worker's body, which does nothing unless
/// this binary was started by [`Worker::start`].
#[test]
fn worker_entry() {
    let Some(dir) = std::env::var_os(WORKER_ENV) else { return };
    promshard::multiprocess::init(&dir).expect("init before recording");
    CLI_TEST_REQUESTS_TOTAL.with(("ok",)).inc_by(3);
    CLI_TEST_REQUESTS_TOTAL.with(("err",)).inc();
    CLI_TEST_TEMPERATURE.set(21.5);
    CLI_TEST_ORDERS_TOTAL.inc_with_exemplar(&[("trace_id", "cli-7")]);
    list_items();
    list_items();
    // The runtime falls back to process memory when the directory cannot
    // be used; that would make every test below meaningless.
    assert_eq!(promshard::multiprocess::shard_dir(), Some(PathBuf::from(&dir)), "the worker records in a shard");
    println!("\n{READY}");
    std::io::stdout().flush().unwrap();
    // Alive until the test closes our stdin (or dies, which closes it too).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

/// A worker process holding a live shard in a directory.
struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Worker {
    fn start(dir: &Path) -> Worker {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["worker_entry", "--exact", "--nocapture", "--test-threads=1"])
            .env(WORKER_ENV, dir)
            .env_remove(promshard::multiprocess::DIR_ENV)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the worker starts");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains(READY) {
                    let _ = tx.send(());
                }
            }
        });
        let mut worker = Worker { child, stdin };
        if rx.recv_timeout(TIMEOUT).is_err() {
            worker.kill();
            panic!("the worker did not report ready");
        }
        worker
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets the worker exit normally (its shard becomes a dead one).
    fn finish(mut self) {
        drop(self.stdin.take());
        let status = wait_bounded(&mut self.child, TIMEOUT).expect("the worker exits once its stdin closes");
        assert!(status.success(), "worker: {status}");
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill();
        }
    }
}

fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A scratch directory for one test, removed on drop: `shards/` is the
/// shard directory, the rest holds the CLI's captured output.
struct Scratch {
    root: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().subsec_nanos();
        let root = std::env::temp_dir().join(format!("promshard-cli-{name}-{}-{nanos}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("shards")).unwrap();
        Scratch { root }
    }

    fn shards(&self) -> PathBuf {
        self.root.join("shards")
    }

    /// Runs the CLI with `args` to completion (bounded), with output
    /// captured in files outside the shard directory.
    fn run(&self, args: &[&str], env: &[(&str, &Path)]) -> Run {
        let out = self.root.join("stdout");
        let err = self.root.join("stderr");
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env_remove(promshard::multiprocess::DIR_ENV)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let status = wait_bounded(&mut child, TIMEOUT).unwrap_or_else(|| panic!("promshard {args:?} did not finish"));
        Run { code: status.code(), stdout: fs::read_to_string(out).unwrap(), stderr: fs::read_to_string(err).unwrap() }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn assert_has_values(text: &str) {
    for line in EXPECTED {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
    }
}

/// The `check` line of `file`, split into columns.
fn check_row<'a>(stdout: &'a str, file: &str) -> Vec<&'a str> {
    let line = stdout.lines().find(|l| l.starts_with(file)).unwrap_or_else(|| panic!("no row for {file}:\n{stdout}"));
    line.split_whitespace().collect()
}

fn shard_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".promshard"))
        .collect();
    names.sort();
    names
}

/// Every entry of `dir`: name → (length, modification time).
fn listing(dir: &Path) -> BTreeMap<String, (u64, SystemTime)> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = fs::symlink_metadata(e.path()).unwrap();
            (e.file_name().into_string().unwrap(), (meta.len(), meta.modified().unwrap()))
        })
        .collect()
}

#[test]
fn dump_prints_the_recorded_values_in_both_formats() {
    let scratch = Scratch::new("dump");
    let dir = scratch.shards();
    let worker = Worker::start(&dir);
    let dump = |scratch: &Scratch| {
        let text = scratch.run(&["dump", path(&dir)], &[]);
        assert_eq!(text.code, Some(0), "{text:?}");
        assert_has_values(&text.stdout);
        assert!(text.stdout.contains("# TYPE cli_test_requests_total counter"), "{}", text.stdout);
        assert!(!text.stdout.contains("# EOF"), "{}", text.stdout);
        assert_eq!(text.stderr, "");

        let om = scratch.run(&["dump", path(&dir), "--openmetrics"], &[]);
        assert_eq!(om.code, Some(0), "{om:?}");
        assert!(om.stdout.ends_with("# EOF\n"), "{}", om.stdout);
        assert!(om.stdout.contains("# TYPE cli_test_requests counter"), "{}", om.stdout);
        assert!(om.stdout.lines().any(|l| l == "cli_test_requests_total{status=\"ok\"} 3"), "{}", om.stdout);
        assert!(om.stdout.lines().any(|l| l == "cli_test_temperature 21.5"), "{}", om.stdout);
    };
    dump(&scratch);
    // A dead worker's shard still counts.
    worker.finish();
    dump(&scratch);
}

/// The CLI has no handlers of its own: which zero series of a handler
/// family it shows comes from the shard files alone.
#[test]
fn dump_shows_each_handlers_own_method_at_zero_from_the_files() {
    let _ = add_item;
    let scratch = Scratch::new("sparse");
    let dir = scratch.shards();
    let worker = Worker::start(&dir);
    let dump = |scratch: &Scratch| {
        let text = scratch.run(&["dump", path(&dir)], &[]);
        assert_eq!(text.code, Some(0), "{text:?}");
        let lines: Vec<&str> = text.stdout.lines().collect();
        let has = |line: &str| lines.contains(&line);
        assert!(has("http_requests_total{handler=\"/cli/items\",method=\"GET\",status=\"200\"} 2"), "{}", text.stdout);
        assert!(has("http_requests_total{handler=\"/cli/items\",method=\"GET\",status=\"404\"} 0"), "{}", text.stdout);
        assert!(has("http_requests_total{handler=\"/cli/items\",method=\"POST\",status=\"201\"} 0"), "{}", text.stdout);
        assert!(
            has("http_request_duration_seconds_count{handler=\"/cli/items\",method=\"POST\"} 0"),
            "{}",
            text.stdout
        );
        let others = lines.iter().filter(|l| l.contains("method=\"PUT\"") || l.contains("method=\"other\""));
        assert_eq!(others.count(), 0, "methods no handler answers stay hidden: {}", text.stdout);
    };
    dump(&scratch);
    worker.finish();
    dump(&scratch);
}

#[test]
fn check_lists_the_worker_live_then_dead() {
    let scratch = Scratch::new("check");
    let dir = scratch.shards();
    let worker = Worker::start(&dir);
    let pid = worker.pid().to_string();
    let files = shard_files(&dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let file = &files[0];

    let live = scratch.run(&["check", path(&dir)], &[]);
    assert_eq!(live.code, Some(0), "{live:?}");
    let row = check_row(&live.stdout, file);
    assert_eq!(row[1], pid, "{}", live.stdout);
    assert_eq!(row[2], "live", "{}", live.stdout);
    assert!(row[3].parse::<usize>().unwrap() >= 3, "the two counter series and the gauge: {}", live.stdout);
    assert_eq!(row[4], "-", "{}", live.stdout);
    assert!(live.stdout.contains("1 shard file: 1 live, 0 dead, 0 archive, 0 with a problem"), "{}", live.stdout);

    worker.finish();
    let dead = scratch.run(&["check", path(&dir)], &[]);
    assert_eq!(dead.code, Some(0), "{dead:?}");
    let row = check_row(&dead.stdout, file);
    assert_eq!((row[1], row[2]), (pid.as_str(), "dead"), "{}", dead.stdout);
    assert!(dead.stdout.contains("1 shard file: 0 live, 1 dead, 0 archive, 0 with a problem"), "{}", dead.stdout);
    // Reading never compacts: the dead shard is still there, by name.
    assert_eq!(shard_files(&dir), files);
}

#[test]
fn bad_files_fail_check_but_not_dump() {
    let scratch = Scratch::new("bad");
    let dir = scratch.shards();
    // Started first: a process that starts recording in a directory with
    // no live shard clears what is there.
    let worker = Worker::start(&dir);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let random: Vec<u8> = (0..40)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    fs::write(dir.join("garbage.promshard"), &random).unwrap();
    let mut foreign = b"NOTASHARD".to_vec();
    foreign.resize(4096, 0);
    fs::write(dir.join("foreign.promshard"), &foreign).unwrap();
    // A bad Python file fails `check` too, and is skipped by `dump`.
    fs::write(dir.join("counter_123.db"), &random).unwrap();

    let check = scratch.run(&["check", path(&dir)], &[]);
    assert_eq!(check.code, Some(1), "{check:?}");
    for file in ["garbage.promshard", "foreign.promshard"] {
        let row = check_row(&check.stdout, file);
        assert_eq!(row[1..4], ["-", "-", "-"], "{}", check.stdout);
        assert!(row.len() > 4 && row[4] != "-", "a problem is named: {}", check.stdout);
    }
    assert!(
        check.stdout.contains("3 shard files: 1 live, 0 dead, 0 archive, 2 with a problem; 1 Python .db file"),
        "{}",
        check.stdout
    );

    let dump = scratch.run(&["dump", path(&dir)], &[]);
    assert_eq!(dump.code, Some(0), "{dump:?}");
    assert_has_values(&dump.stdout);
    assert!(dump.stderr.contains("garbage.promshard"), "skipped files are named: {}", dump.stderr);
    assert!(dump.stderr.contains("foreign.promshard"), "skipped files are named: {}", dump.stderr);
    assert!(dump.stderr.contains("counter_123.db"), "skipped files are named: {}", dump.stderr);
    drop(worker);
}

#[test]
fn unreadable_directories_fail() {
    let scratch = Scratch::new("missing");
    let missing = scratch.root.join("missing");
    for args in [["check", path(&missing)], ["dump", path(&missing)]] {
        let run = scratch.run(&args, &[]);
        assert_eq!(run.code, Some(1), "{run:?}");
        assert!(run.stderr.contains("cannot read"), "{run:?}");
    }
    assert!(!missing.exists(), "reading does not create the directory");
}

#[test]
fn usage() {
    let scratch = Scratch::new("usage");
    for args in [&[][..], &["--help"], &["dump", "--help"]] {
        let run = scratch.run(args, &[]);
        assert_eq!(run.code, Some(0), "{run:?}");
        assert!(run.stdout.contains("promshard dump DIR [--openmetrics]"), "{run:?}");
    }
    for args in
        [&["frobnicate"][..], &["dump", "d", "--bogus"], &["serve"], &["serve", "d", "--timeout", "0"], &["check"]]
    {
        let run = scratch.run(args, &[]);
        assert_eq!(run.code, Some(2), "{run:?}");
        assert_eq!(run.stdout, "", "{run:?}");
        assert!(run.stderr.contains("Usage:"), "{run:?}");
    }
}

/// A running `promshard serve`, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(dir: &Path) -> Server {
        Server::start_with(dir, &[])
    }

    /// `promshard serve DIR --listen 127.0.0.1:0 OPTIONS`.
    fn start_with(dir: &Path, options: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", path(dir), "--listen", "127.0.0.1:0"])
            .args(options)
            .env_remove(promshard::multiprocess::DIR_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split_once("http://").map(|(_, r)| r.to_owned()) {
                    let _ = tx.send(rest.trim_end_matches("/metrics").to_owned());
                }
            }
        });
        let addr = match rx.recv_timeout(TIMEOUT) {
            Ok(addr) => addr.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("promshard serve did not print its address");
            }
        };
        Server { child, addr }
    }

    /// One request over a fresh connection: (status line, headers in
    /// lower case, body).
    fn get(&self, method: &str, target: &str, accept: Option<&str>) -> (String, String, String) {
        let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
        self.send(method, target, &accept)
    }

    /// Like [`get`](Server::get), with `headers` (each line ending in CRLF).
    fn send(&self, method: &str, target: &str, headers: &str) -> (String, String, String) {
        let mut stream = self.connect();
        write!(stream, "{method} {target} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("a complete response");
        let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
        (status.to_owned(), headers.to_ascii_lowercase(), body.to_owned())
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(10)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        stream.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        stream
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Killed by pid: `serve` runs until then.
        let _ = self.child.kill();
        let _ = wait_bounded(&mut self.child, TIMEOUT);
    }
}

#[test]
fn serve_answers_metrics_requests() {
    let scratch = Scratch::new("serve");
    let dir = scratch.shards();
    let worker = Worker::start(&dir);
    let server = Server::start(&dir);

    let (status, headers, body) = server.get("GET", "/metrics", None);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(headers.contains("content-type: text/plain; version=0.0.4"), "{headers}");
    assert_has_values(&body);
    assert!(!body.contains("# EOF"), "{body}");

    let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
                      text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (status, headers, body) = server.get("GET", "/metrics?x=1", Some(prometheus));
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(headers.contains("content-type: application/openmetrics-text; version=1.0.0"), "{headers}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(body.lines().any(|l| l == "cli_test_temperature 21.5"), "{body}");
    let exemplar = "cli_test_orders_total 1 # {trace_id=\"cli-7\"} 1 ";
    assert!(body.lines().any(|l| l.starts_with(exemplar)), "the exemplar from the worker's shard: {body}");

    let (status, headers, body) = server.get("HEAD", "/metrics", None);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(headers.contains("content-type: text/plain; version=0.0.4"), "{headers}");
    assert_eq!(body, "", "HEAD has no body");
    let (status, _, _) = server.get("GET", "/", None);
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    let (status, headers, _) = server.get("POST", "/metrics", None);
    assert!(status.starts_with("HTTP/1.1 405"), "{status}");
    assert!(headers.contains("allow: get, head"), "{headers}");

    // Still serving what the dead worker counted.
    worker.finish();
    let (status, _, body) = server.get("GET", "/metrics", None);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_has_values(&body);
    assert!(body.lines().any(|l| l == "cli_test_orders_total 1"), "no exemplar in the text format: {body}");
    let (_, _, body) = server.get("GET", "/metrics", Some(prometheus));
    assert!(body.lines().any(|l| l.starts_with(exemplar)), "the dead worker's exemplar: {body}");

    let mut server = server;
    server.child.kill().unwrap();
    let status = wait_bounded(&mut server.child, TIMEOUT).expect("the server dies when killed");
    assert!(!status.success());
}

#[test]
fn serve_gzips_metrics_for_clients_that_accept_it() {
    let scratch = Scratch::new("serve-gzip");
    let dir = scratch.shards();
    // A dead worker's counts: every scrape has the same bytes.
    Worker::start(&dir).finish();
    let server = Server::start(&dir);
    let plain = |accept: &str| {
        let response = http_client::fetch(server.addr, "GET", "/metrics", &[("Accept", accept)]);
        assert_eq!(response.header("content-encoding"), None);
        response.body
    };
    let (text, openmetrics) = (plain("text/plain"), plain(support::gzip::PROMETHEUS_ACCEPT));
    assert_has_values(std::str::from_utf8(&text).unwrap());

    for (accept_encoding, gzip) in support::gzip::cases(4 * 1024) {
        let what = format!("Accept-Encoding {:.80?} ({} lines)", accept_encoding.first(), accept_encoding.len());
        let mut headers: Vec<(&str, &str)> = accept_encoding.iter().map(|v| ("Accept-Encoding", v.as_str())).collect();
        headers.push(("Accept", "text/plain"));
        let response = http_client::fetch(server.addr, "GET", "/metrics", &headers);
        assert_eq!(response.status, 200, "{what}");
        assert!(support::gzip::decode(&what, &response.headers, &response.body, gzip) == text, "{what}");
        let head = http_client::fetch(server.addr, "HEAD", "/metrics", &headers);
        assert_eq!(head.header("content-length"), response.header("content-length"), "HEAD, {what}");
        assert_eq!(head.header("content-encoding"), response.header("content-encoding"), "HEAD, {what}");
    }

    match support::python_with_prometheus_client() {
        None => support::skip_or_fail(support::PYTHON_MISSING),
        Some(python) => {
            for (accept, plain) in [(support::gzip::PROMETHEUS_ACCEPT, &openmetrics), ("text/plain", &text)] {
                let scrape = support::gzip::python_scrape(&python, server.addr, accept);
                assert!(scrape.body == *plain, "{accept}: Python's gunzip is not the exposition");
                assert!(scrape.samples >= EXPECTED.len(), "{accept}: {} samples", scrape.samples);
            }
        }
    }
    match support::gzip::curl() {
        None => support::skip_or_fail(support::gzip::CURL_MISSING),
        Some(curl) => {
            let (headers, body) = support::gzip::curl_scrape(&curl, server.addr, "text/plain");
            assert!(headers.iter().any(|(name, value)| name == "content-encoding" && value == "gzip"), "{headers:?}");
            assert!(body == text, "curl's decoding is not the exposition");
        }
    }
    // Protobuf, as Prometheus with native histograms asks for it: gzipped,
    // and every sample the text's.
    let headers = [("Accept", support::protobuf::PROMETHEUS_PROTOBUF_ACCEPT), ("Accept-Encoding", "gzip")];
    let response = http_client::fetch(server.addr, "GET", "/metrics", &headers);
    assert_eq!(response.header("content-type"), Some(support::protobuf::PROTOBUF_CONTENT_TYPE));
    let proto = support::gzip::decode("protobuf", &response.headers, &response.body, true);
    match support::protobuf::python_with_protobuf() {
        None => support::skip_or_fail(support::protobuf::PROTOBUF_MISSING),
        Some(python) => {
            let decoded =
                support::protobuf::decode(&python, &scratch.root, &proto, std::str::from_utf8(&text).unwrap());
            support::protobuf::assert_same("promshard serve", &decoded, &[]);
        }
    }
}

/// The `pid` labels of `name`'s samples in a text exposition; panics on
/// a sample without one.
fn process_pids(text: &str, name: &str) -> Vec<String> {
    let mut pids: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .map(|l| {
            let pid = l.strip_prefix(&format!("{name}{{pid=\"")).and_then(|r| r.split_once('"'));
            pid.unwrap_or_else(|| panic!("{name} without a pid label: {l}")).0.to_owned()
        })
        .collect();
    pids.sort();
    pids
}

#[test]
fn dump_and_serve_show_each_live_workers_process_metrics() {
    let scratch = Scratch::new("process");
    let dir = scratch.shards();
    let first = Worker::start(&dir);
    let second = Worker::start(&dir);
    let mut both = vec![first.pid().to_string(), second.pid().to_string()];
    both.sort();
    let server = Server::start(&dir);
    let families = ["process_cpu_seconds_total", "process_open_fds", "process_resident_memory_bytes"];
    let dumped = scratch.run(&["dump", path(&dir)], &[]).stdout;
    let (_, _, served) = server.get("GET", "/metrics", None);
    // The workers' own numbers, read by the CLI from /proc: not the
    // CLI's, which holds no shard and records nothing.
    for text in [&dumped, &served] {
        for family in families {
            assert_eq!(process_pids(text, family), both, "{family}:\n{text}");
        }
    }

    // A worker that exits drops out; its counts stay.
    first.finish();
    let dumped = scratch.run(&["dump", path(&dir)], &[]).stdout;
    let (_, _, served) = server.get("GET", "/metrics", None);
    for text in [&dumped, &served] {
        assert_eq!(process_pids(text, "process_start_time_seconds"), [second.pid().to_string()], "{text}");
        assert!(text.lines().any(|l| l == "cli_test_requests_total{status=\"ok\"} 6"), "{text}");
    }
}

#[test]
fn reading_creates_and_changes_nothing() {
    let scratch = Scratch::new("readonly");
    let dir = scratch.shards();
    Worker::start(&dir).finish();
    let before = listing(&dir);
    assert!(before.keys().any(|n| n.ends_with(".promshard")), "{before:?}");

    // With the directory in PROMSHARD_DIR too: the CLI must not become a
    // writer of it (a recording process would create its shard and clear
    // the finished run, the dead worker's shard).
    let env = [(promshard::multiprocess::DIR_ENV, dir.as_path())];
    for env in [&[][..], &env] {
        for args in [&["dump", path(&dir)][..], &["dump", path(&dir), "--openmetrics"], &["check", path(&dir)]] {
            let run = scratch.run(args, env);
            assert_eq!(run.code, Some(0), "{args:?}: {run:?}");
        }
        let server = Server::start_with(&dir, &["--no-compact"]);
        let (status, _, body) = server.get("GET", "/metrics", None);
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        assert_has_values(&body);
        drop(server);
    }

    assert_eq!(before, listing(&dir), "reading changed the directory");
}

/// The shard files of `dir` (not the archive), by name.
fn worker_shards(dir: &Path) -> Vec<String> {
    shard_files(dir).into_iter().filter(|n| n != "archive.promshard").collect()
}

/// A sidecar over a pool whose workers never scrape: each scrape that
/// meets dead workers' shards folds them into the archive, so the
/// directory keeps one file per live worker plus the archive however many
/// came and went, and every count is still served exactly once.
#[test]
fn serve_folds_dead_workers_shards_into_the_archive() {
    let scratch = Scratch::new("serve-compacts");
    let dir = scratch.shards();
    let ok = |body: &str| -> Option<f64> {
        body.lines().find_map(|l| l.strip_prefix("cli_test_requests_total{status=\"ok\"} ")).map(|v| v.parse().unwrap())
    };
    let server = Server::start(&dir);
    // One worker lives throughout: with none alive, the next to start
    // would begin a new run and clear the directory.
    let anchor = Worker::start(&dir);
    let mut dead = 0;
    for round in 0..4 {
        for _ in 0..=round {
            Worker::start(&dir).finish();
            dead += 1;
        }
        assert_eq!(worker_shards(&dir).len(), round + 2, "{:?}", shard_files(&dir));
        let (_, _, body) = server.get("GET", "/metrics", None);
        assert_eq!(ok(&body), Some(3.0 * (dead + 1) as f64), "round {round}: {body}");
        // Folded: only the live worker's shard is left beside the archive.
        assert_eq!(worker_shards(&dir).len(), 1, "round {round}: {:?}", shard_files(&dir));
        assert!(shard_files(&dir).contains(&"archive.promshard".to_owned()), "{:?}", shard_files(&dir));
        let (_, _, again) = server.get("GET", "/metrics", None);
        assert_eq!(ok(&again), ok(&body), "round {round}: the archive is read once: {again}");
    }
    anchor.finish();
    dead += 1;
    let (_, _, body) = server.get("GET", "/metrics", None);
    assert_eq!(ok(&body), Some(3.0 * dead as f64), "{body}");
    assert!(worker_shards(&dir).is_empty(), "{:?}", shard_files(&dir));
    // A reader that only reads (`dump`) agrees with the sidecar.
    let run = scratch.run(&["dump", path(&dir)], &[]);
    assert_eq!(ok(&run.stdout), Some(3.0 * dead as f64), "{run:?}");
}

/// Run as root over a directory of another user, the sidecar answers but
/// changes nothing: it trusts none of the files, and an archive it wrote
/// would be root's, unreadable to the workers.
#[test]
fn serve_leaves_another_users_directory_as_it_is() {
    // `/proc/self` belongs to the process's effective user.
    if std::os::unix::fs::MetadataExt::uid(&fs::metadata("/proc/self").unwrap()) != 0 {
        eprintln!("skipped: needs root to hand the directory to another user");
        return;
    }
    let scratch = Scratch::new("serve-other-user");
    let dir = scratch.shards();
    Worker::start(&dir).finish();
    Worker::start(&dir).finish();
    let nobody = 65534;
    for entry in fs::read_dir(&dir).unwrap() {
        std::os::unix::fs::chown(entry.unwrap().path(), Some(nobody), Some(nobody)).unwrap();
    }
    std::os::unix::fs::chown(&dir, Some(nobody), Some(nobody)).unwrap();
    let before = listing(&dir);
    let server = Server::start(&dir);
    let (status, _, body) = server.get("GET", "/metrics", None);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    // Another user's shards are not trusted (they could be planted).
    assert!(!body.contains("cli_test_requests_total{"), "{body}");
    drop(server);
    let after = listing(&dir);
    assert_eq!(after, before, "root's sidecar changed another user's directory");
}

#[test]
fn serve_listens_on_loopback_9100_by_default() {
    let scratch = Scratch::new("default-listen");
    let help = scratch.run(&["--help"], &[]);
    assert!(help.stdout.contains("--listen ADDR") && help.stdout.contains("default 127.0.0.1:9100"), "{help:?}");

    // The port may be taken on this machine: then the error names it,
    // which shows the default as well as a successful bind would.
    let mut child = Command::new(BIN)
        .args(["serve", path(&scratch.shards())])
        .env_remove(promshard::multiprocess::DIR_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(TIMEOUT);
    let _ = child.kill();
    let _ = wait_bounded(&mut child, TIMEOUT);
    let line = line.expect("promshard serve said nothing");
    assert!(
        line.ends_with("at http://127.0.0.1:9100/metrics") || line.contains("cannot serve on 127.0.0.1:9100"),
        "{line}"
    );
}

#[test]
fn serve_requires_the_configured_credentials() {
    let scratch = Scratch::new("serve-auth");
    let dir = scratch.shards();
    let worker = Worker::start(&dir);
    let token = scratch.root.join("token");
    // The newline an editor leaves is not part of the token.
    fs::write(&token, "tok-123\n").unwrap();
    let server = Server::start_with(&dir, &["--bearer-token-file", path(&token)]);
    let (status, _, body) = server.send("GET", "/metrics", "Authorization: Bearer tok-123\r\n");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_has_values(&body);
    for headers in ["", "Authorization: Bearer tok-12\r\n", "Authorization: Bearer tok-123\\n\r\n"] {
        let (status, response_headers, body) = server.send("GET", "/metrics", headers);
        assert!(status.starts_with("HTTP/1.1 401"), "{headers:?}: {status}");
        assert!(response_headers.contains("www-authenticate: bearer realm=\"metrics\""), "{response_headers}");
        assert!(!body.contains("cli_test"), "{body}");
    }
    drop(server);

    let pair = scratch.root.join("basic");
    fs::write(&pair, "prom:pw:x\r\n").unwrap();
    let server = Server::start_with(&dir, &["--basic-auth-file", path(&pair)]);
    // base64("prom:pw:x") and base64("prom:pw:y")
    let (status, _, body) = server.send("GET", "/metrics", "Authorization: Basic cHJvbTpwdzp4\r\n");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_has_values(&body);
    for headers in ["", "Authorization: Basic cHJvbTpwdzp5\r\n", "Authorization: Bearer prom:pw:x\r\n"] {
        let (status, response_headers, _) = server.send("GET", "/metrics", headers);
        assert!(status.starts_with("HTTP/1.1 401"), "{headers:?}: {status}");
        assert!(response_headers.contains("www-authenticate: basic realm=\"metrics\""), "{response_headers}");
    }
    drop(server);
    drop(worker);
}

#[test]
fn serve_refuses_bad_secret_files() {
    let scratch = Scratch::new("serve-bad-secret");
    let dir = scratch.shards();
    let missing = scratch.root.join("missing");
    let spaced = scratch.root.join("spaced");
    fs::write(&spaced, "two words\n").unwrap();
    let colonless = scratch.root.join("colonless");
    fs::write(&colonless, "prometheus\n").unwrap();
    for (flag, file, message) in [
        ("--bearer-token-file", &missing, "cannot read"),
        ("--bearer-token-file", &spaced, "bearer token"),
        ("--basic-auth-file", &colonless, "user:password"),
    ] {
        let run = scratch.run(&["serve", path(&dir), "--listen", "127.0.0.1:0", flag, path(file)], &[]);
        assert_eq!(run.code, Some(1), "{run:?}");
        assert!(run.stderr.contains(message), "{run:?}");
        assert!(!run.stderr.contains("serving"), "{run:?}");
    }
}

#[test]
fn serve_drops_silent_clients_after_its_timeout() {
    let scratch = Scratch::new("serve-timeout");
    let server = Server::start_with(&scratch.shards(), &["--timeout", "0.3"]);
    let start = Instant::now();
    let mut silent = server.connect();
    // Others are served meanwhile.
    let (status, _, _) = server.get("GET", "/metrics", None);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let mut rest = Vec::new();
    let read = silent.read_to_end(&mut rest);
    assert!(read.is_ok_and(|n| n == 0), "nothing is sent to a client that sent nothing: {rest:?}");
    let waited = start.elapsed();
    // Well under the 10 s default, and not before the 0.3 s asked for.
    assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(5), "closed after {waited:?}");
}

#[test]
fn serve_caps_connections() {
    let scratch = Scratch::new("serve-cap");
    let server = Server::start_with(&scratch.shards(), &["--max-connections", "2"]);
    // Two half-sent requests hold both places (for the default 10 s).
    let mut holders = [server.connect(), server.connect()];
    for holder in &mut holders {
        holder.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    }
    let start = Instant::now();
    let (status, _, _) = server.get("GET", "/metrics", None);
    assert!(status.starts_with("HTTP/1.1 503"), "{status}");
    assert!(start.elapsed() < Duration::from_secs(5), "turned away only after {:?}", start.elapsed());
    drop(holders);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, _) = server.get("GET", "/metrics", None);
        if status.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "still turned away: {status}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `--timeout` takes any positive number of seconds; one so large it
/// means "never" must still serve.
#[test]
fn serve_with_a_timeout_meaning_never_answers() {
    let scratch = Scratch::new("serve-huge-timeout");
    let server = Server::start_with(&scratch.shards(), &["--timeout", "1e19"]);
    let mut stream = server.connect();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = Vec::new();
    let read = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    assert!(read.is_ok() && response.starts_with("HTTP/1.1 200 "), "{read:?}: {response:.200}");
}

/// A prometheus_client `.db` file (`MmapedDict`'s layout) holding one
/// series of `metric` with `value`, preallocated to 64 KiB as Python's are.
fn python_db(path: &Path, metric: &str, sample: &str, value: f64) -> fs::File {
    let key = format!("[\"{metric}\", \"{sample}\", {{}}, \"Help.\"]");
    let mut bytes = vec![0u8; 8];
    bytes.extend_from_slice(&(key.len() as i32).to_ne_bytes());
    bytes.extend_from_slice(key.as_bytes());
    bytes.resize(bytes.len() + 8 - (key.len() + 4) % 8, b' ');
    bytes.extend_from_slice(&value.to_ne_bytes());
    bytes.extend_from_slice(&0f64.to_ne_bytes());
    let used = bytes.len() as i32;
    bytes[..4].copy_from_slice(&used.to_ne_bytes());
    fs::write(path, &bytes).unwrap();
    let file = fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    file.set_len(65536).unwrap();
    file
}

/// Python files of a live writer (this test process, holding them open as
/// prometheus_client does) and of a dead one (a pid no process can have):
/// `check` tells them apart with no hook; `serve --prune-python` removes
/// the dead writer's live-mode gauge (what `mark_process_dead` would have)
/// and nothing that still counts; plain `serve` removes nothing.
#[test]
fn python_files_are_checked_and_pruned_only_when_asked() {
    let scratch = Scratch::new("python");
    let dir = scratch.shards();
    fs::create_dir_all(&dir).unwrap();
    let me = std::process::id();
    // Above Linux's largest pid_max: no process has it.
    let gone = 4_194_400;
    let _held = [
        python_db(&dir.join(format!("counter_{me}.db")), "py_jobs", "py_jobs_total", 2.0),
        python_db(&dir.join(format!("gauge_livesum_{me}.db")), "py_inflight", "py_inflight", 3.0),
    ];
    drop(python_db(&dir.join(format!("counter_{gone}.db")), "py_jobs", "py_jobs_total", 5.0));
    drop(python_db(&dir.join(format!("gauge_livesum_{gone}.db")), "py_inflight", "py_inflight", 7.0));
    fs::write(dir.join(format!("histogram_{}.db", gone + 1)), [40, 0, 0, 0, 0, 0, 0, 0, 9]).unwrap();

    let check = scratch.run(&["check", path(&dir)], &[]);
    assert_eq!(check.code, Some(1), "a file with a problem fails check: {check:?}");
    assert!(check.stdout.contains("; 5 Python .db files: 2 live, 3 dead, 1 with a problem"), "{}", check.stdout);
    let row = check_row(&check.stdout, &format!("counter_{me}.db"));
    assert_eq!(row[1..3], [me.to_string().as_str(), "counter"], "{}", check.stdout);
    assert_eq!(row[3], "65536", "{}", check.stdout);
    assert_eq!(row[5..7], ["1", "live"], "{}", check.stdout);
    let row = check_row(&check.stdout, &format!("gauge_livesum_{gone}.db"));
    assert_eq!(row[2], "gauge_livesum", "{}", check.stdout);
    assert_eq!(row[6], "dead-live-gauge", "{}", check.stdout);
    assert_eq!(check_row(&check.stdout, &format!("counter_{gone}.db"))[6], "dead-folded", "{}", check.stdout);
    let row = check_row(&check.stdout, &format!("histogram_{}.db", gone + 1));
    assert_eq!(row[6], "dead-unreadable", "{}", check.stdout);
    assert!(row.len() > 7 && row[7] != "-", "the problem is named: {}", check.stdout);
    assert!(check.stdout.contains("Python files hold"), "{}", check.stdout);

    let names = || {
        let mut names: Vec<String> =
            fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    };
    let before = names();
    let plain = Server::start(&dir);
    let (_, _, body) = plain.get("GET", "/metrics", None);
    assert!(body.lines().any(|l| l == "py_jobs_total 7"), "the dead writer's counter counts: {body}");
    assert!(body.lines().any(|l| l == "py_inflight 3"), "its live-mode gauge does not: {body}");
    drop(plain);
    assert_eq!(names(), before, "plain serve removes nothing");

    let pruning = Server::start_with(&dir, &["--prune-python"]);
    let (_, _, body) = pruning.get("GET", "/metrics", None);
    assert!(body.lines().any(|l| l == "py_inflight 3"), "{body}");
    let after: Vec<String> = before.iter().filter(|n| **n != format!("gauge_livesum_{gone}.db")).cloned().collect();
    assert_eq!(names(), after, "only the dead writer's live-mode gauge is removed");
    let (_, _, again) = pruning.get("GET", "/metrics", None);
    assert!(again.lines().any(|l| l == "py_jobs_total 7") && again.lines().any(|l| l == "py_inflight 3"), "{again}");
    drop(pruning);
}

/// `serve --created-samples`: OpenMetrics scrapes carry `_created` samples,
/// the run's start, the same before and after the worker died; without the
/// option there are none. Text 0.0.4 never has them.
#[test]
fn serve_writes_created_samples_when_asked() {
    let scratch = Scratch::new("created");
    let dir = scratch.shards();
    let before = SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let worker = Worker::start(&dir);
    let openmetrics = Some("application/openmetrics-text;version=1.0.0");
    let created = |body: &str| -> Vec<f64> {
        body.lines()
            .filter(|l| l.starts_with("cli_test_requests_created{"))
            .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
            .collect()
    };

    let plain = Server::start(&dir);
    let (_, _, body) = plain.get("GET", "/metrics", openmetrics);
    assert!(!body.contains("_created"), "no _created samples unless asked for: {body}");
    drop(plain);

    let server = Server::start_with(&dir, &["--created-samples"]);
    let (_, _, body) = server.get("GET", "/metrics", openmetrics);
    let starts = created(&body);
    assert_eq!(starts.len(), 2, "one per series: {body}");
    assert!(starts[0] == starts[1] && starts[0] >= before - 1.0, "{starts:?} (began {before}): {body}");
    let (_, _, text) = server.get("GET", "/metrics", None);
    assert!(!text.contains("_created"), "text 0.0.4 has none: {text}");
    worker.finish();
    let (_, _, after) = server.get("GET", "/metrics", openmetrics);
    assert_eq!(created(&after), starts, "the dead worker's counts started when they did: {after}");
}

/// One run of a Python pool: a master that forks one worker, which
/// records `argv[1]` into a counter and a `livesum` gauge, prints its pid
/// and waits to be killed; the master exits when its worker is gone.
const PYTHON_RUN: &str = r#"
import os, signal, sys
pid = os.fork()
if pid == 0:
    from prometheus_client import Counter, Gauge
    Counter('runs_jobs', 'Jobs.').inc(float(sys.argv[1]))
    Gauge('runs_inflight', 'In flight.', multiprocess_mode='livesum').set(float(sys.argv[1]))
    print('READY', os.getpid(), flush=True)
    signal.pause()
    os._exit(0)
os.waitpid(pid, 0)
"#;

/// A Python run's master, and its worker's pid; both killed by pid on
/// drop.
struct PythonRun {
    master: Child,
    worker: u32,
}

impl PythonRun {
    fn start(python: &Path, dir: &Path, amount: u32) -> PythonRun {
        let mut master = Command::new(python)
            .args(["-c", PYTHON_RUN, &amount.to_string()])
            .env("PROMETHEUS_MULTIPROC_DIR", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(master.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let worker = line.strip_prefix("READY ").and_then(|p| p.trim().parse().ok()).expect("the worker's pid");
        PythonRun { master, worker }
    }

    /// Kills the worker (SIGKILL, no hook) and waits for the master.
    fn stop(mut self) {
        kill_pid(self.worker);
        wait_bounded(&mut self.master, TIMEOUT).expect("the master exits once its worker is gone");
    }
}

impl Drop for PythonRun {
    fn drop(&mut self) {
        kill_pid(self.worker);
        let _ = self.master.kill();
        let _ = self.master.wait();
    }
}

/// SIGKILLs `pid` (a worker a Python run of this test forked).
fn kill_pid(pid: u32) {
    let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).stderr(Stdio::null()).status();
}

/// What a scrape shows of the Python runs: `runs_jobs_total` and
/// `runs_inflight` (0 when not shown).
fn python_runs(body: &str) -> (f64, f64) {
    let value = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .map_or(0.0, |v| v.parse::<f64>().unwrap())
    };
    (value("runs_jobs_total"), value("runs_inflight"))
}

/// `promshard serve` answers every scrape with the same view when several
/// scrapers come at once, as they do when two Prometheus servers (an HA
/// pair) or Prometheus and a person with curl scrape one sidecar. A
/// previous run's files count for nothing and a dead worker's `livesum`
/// gauge stops counting: that is what the sidecar learnt in earlier
/// scrapes (the run's master, that writers can be proven dead), and a
/// scrape that overlaps another must not forget it, nor make the scrapes
/// after it forget it.
#[test]
fn serve_gives_concurrent_scrapers_the_same_python_view() {
    let Some(python) = support::python_with_prometheus_client() else {
        return support::skip_or_fail(support::PYTHON_MISSING);
    };
    let scratch = Scratch::new("python-runs");
    let dir = scratch.shards();
    // A previous run: 5 jobs, then gone.
    PythonRun::start(&python, &dir, 5).stop();
    std::thread::sleep(Duration::from_millis(300));
    // This run: 7 jobs and 7 in flight while its worker lives.
    let run = PythonRun::start(&python, &dir, 7);
    let server = Server::start(&dir);
    assert_eq!(python_runs(&server.get("GET", "/metrics", None).2), (7.0, 7.0), "this run only");
    // Its worker dies: its jobs still count, its in-flight gauge does not,
    // and the previous run's jobs still do not.
    run.stop();
    assert_eq!(python_runs(&server.get("GET", "/metrics", None).2), (7.0, 0.0), "the run's worker is dead");

    let server = &server;
    let wrong: Vec<String> = std::thread::scope(|s| {
        let scrapers: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(move || {
                    (0..8)
                        .map(|_| python_runs(&server.get("GET", "/metrics", None).2))
                        .filter(|seen| *seen != (7.0, 0.0))
                        .map(|seen| format!("{seen:?}"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        scrapers.into_iter().flat_map(|t| t.join().unwrap()).collect()
    });
    let after = python_runs(&server.get("GET", "/metrics", None).2);
    assert!(
        wrong.is_empty() && after == (7.0, 0.0),
        "{} of 128 concurrent scrapes were not (7, 0): {:?}; the next scrape alone: {after:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}

// The seeded model of a Python pool under `promshard serve`.
#[path = "../../tests/rng/mod.rs"]
mod rng;

/// A Python pool master as gunicorn runs one: it imports the app's metrics
/// (and with `preload`, records into an unlabelled counter before forking,
/// as a preloaded app that counts at import does), forks workers on
/// command, hands each its operations through a pipe, and exits or kills
/// them (calling `mark_process_dead` after a clean exit when told, as a
/// `child_exit` hook would).
const MODEL_POOL: &str = r#"
import json, os, signal, sys, traceback
from prometheus_client import Counter, Gauge, Histogram, Summary
from prometheus_client.multiprocess import mark_process_dead

MODES = ['all', 'liveall', 'min', 'livemin', 'max', 'livemax', 'sum', 'livesum', 'mostrecent', 'livemostrecent']
M = {
    'c': Counter('model_jobs', 'Jobs.', ['kind']),
    'h': Histogram('model_latency_seconds', 'Latency.', ['kind'], buckets=[0.1, 1.0, 10.0]),
    's': Summary('model_size_bytes', 'Size.', ['kind']),
}
for mode in MODES:
    M['g_' + mode] = Gauge('model_gauge_' + mode, 'Gauge of mode ' + mode, ['kind'], multiprocess_mode=mode)
if sys.argv[1] == 'preload':
    M['plain'] = Counter('model_plain', 'Unlabelled, made at import.')
    M['plain'].inc()

def apply(op):
    name, kind, method, amount = op
    child = M[name] if kind is None else M[name].labels(kind)
    getattr(child, method)(amount)

def worker(r):
    print('W', os.getpid(), flush=True)
    for line in os.fdopen(r):
        op = json.loads(line)
        if op[0] == 'exit':
            return
        apply(op)
        print('OK', os.getpid(), flush=True)

pipes = {}
for line in sys.stdin:
    cmd, _, rest = line.rstrip('\n').partition(' ')
    if cmd == 'spawn':
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(w)
            for p in pipes.values():
                p.close()
            try:
                worker(r)
            except BaseException:
                print('FAILED', repr(traceback.format_exc()), flush=True)
            finally:
                os._exit(0)
        os.close(r)
        pipes[pid] = os.fdopen(w, 'w')
    elif cmd == 'to':
        pid, _, op = rest.partition(' ')
        pipes[int(pid)].write(op + '\n')
        pipes[int(pid)].flush()
    elif cmd == 'master':
        apply(json.loads(rest))
        print('OK', os.getpid(), flush=True)
    elif cmd == 'kill':
        pid = int(rest)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pipes.pop(pid).close()
        print('KILLED', pid, flush=True)
    elif cmd == 'exit':
        pid, mark = rest.split()
        pid = int(pid)
        p = pipes.pop(pid)
        p.write('["exit"]\n')
        p.close()
        os.waitpid(pid, 0)
        if mark == '1':
            mark_process_dead(pid)
        print('EXITED', pid, flush=True)
"#;

/// A [`MODEL_POOL`] master; dropping it SIGKILLs it and its workers by pid.
struct ModelPool {
    master: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    workers: Vec<u32>,
}

impl ModelPool {
    fn start(python: &Path, dir: &Path, preload: bool) -> ModelPool {
        let mut master = Command::new(python)
            .args(["-c", MODEL_POOL, if preload { "preload" } else { "plain" }])
            .env("PROMETHEUS_MULTIPROC_DIR", dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = master.stdin.take().unwrap();
        let stdout = master.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ModelPool { master, stdin, lines, workers: Vec::new() }
    }

    fn pid(&self) -> u32 {
        self.master.id()
    }

    fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next line starting with `word`, within a minute.
    fn expect(&mut self, word: &str) -> Vec<String> {
        loop {
            let line = self.lines.recv_timeout(TIMEOUT).unwrap_or_else(|_| panic!("no {word} line from the pool"));
            assert!(!line.starts_with("FAILED"), "a Python worker failed: {line}");
            let fields: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
            if fields.first().map(String::as_str) == Some(word) {
                return fields;
            }
        }
    }

    fn spawn(&mut self) -> u32 {
        self.send("spawn");
        let pid = self.expect("W")[1].parse().unwrap();
        self.workers.push(pid);
        pid
    }

    /// Runs `op` (`[metric, label value or null, method, amount]`) in
    /// worker `pid`, or in the master when `pid` is its own.
    fn apply(&mut self, pid: u32, op: &serde_json::Value) {
        if pid == self.pid() {
            self.send(&format!("master {op}"));
        } else {
            self.send(&format!("to {pid} {op}"));
        }
        assert_eq!(self.expect("OK")[1], pid.to_string());
    }

    fn kill(&mut self, pid: u32) {
        self.send(&format!("kill {pid}"));
        self.expect("KILLED");
        self.workers.retain(|w| *w != pid);
    }

    fn exit(&mut self, pid: u32, mark: bool) {
        self.send(&format!("exit {pid} {}", u8::from(mark)));
        self.expect("EXITED");
        self.workers.retain(|w| *w != pid);
    }
}

impl Drop for ModelPool {
    fn drop(&mut self) {
        for pid in &self.workers {
            kill_pid(*pid);
        }
        let _ = self.master.kill();
        let _ = self.master.wait();
    }
}

/// Label values as a web app makes them: UTF-8, quotes, backslashes,
/// newlines, the empty string.
const MODEL_KINDS: [&str; 7] = ["a", "", "ü→日本", "q\"uote\"", "back\\slash", "new\nline", "tab\t{x=\"1\"}"];
const MODEL_MODES: [&str; 10] =
    ["all", "liveall", "min", "livemin", "max", "livemax", "sum", "livesum", "mostrecent", "livemostrecent"];

impl rng::Rng {
    /// One recording, as `[metric, label value, method, amount]`.
    fn model_op(&mut self, preload: bool) -> serde_json::Value {
        let kind = self.pick(&MODEL_KINDS);
        match self.below(if preload { 6 } else { 5 }) {
            0 => serde_json::json!(["c", kind, "inc", self.pick(&[1.0, 0.5, 2.25, 1e6, 0.0])]),
            1 => serde_json::json!(["h", kind, "observe", self.pick(&[0.05, 0.5, 5.0, 50.0, 1.0, -2.0])]),
            2 => serde_json::json!(["s", kind, "observe", self.pick(&[3.0, 0.25, 1e9])]),
            5 => serde_json::json!(["plain", null, "inc", self.pick(&[1.0, 3.0])]),
            _ => {
                let mode = self.pick(&MODEL_MODES);
                // Python allows only `set` in the `mostrecent` modes.
                let method =
                    if mode.ends_with("mostrecent") { "set" } else { self.pick(&["set", "set", "inc", "dec"]) };
                serde_json::json!([format!("g_{mode}"), kind, method, self.pick(&[-3.5, 0.0, 7.0, 1e10, 2.5])])
            }
        }
    }
}

/// The writer's pid in a prometheus_client file name (`counter_123.db`).
fn python_file_pid(name: &str) -> Option<u32> {
    name.strip_suffix(".db")?.rsplit('_').next()?.parse().ok()
}

/// What `promshard serve` shows of a Python directory, parsed by Python,
/// its own self-metrics left out.
fn served_samples(python: &Path, server: &Server) -> support::python::Samples {
    let (status, _, body) = server.get("GET", "/metrics", None);
    assert!(status.contains(" 200 "), "{status}: {body}");
    let text: String = body.lines().filter(|l| !l.contains("promshard_")).map(|l| format!("{l}\n")).collect();
    support::python::parse(python, &text)
}

/// A seeded model of a gunicorn-like Python pool under `promshard serve`:
/// workers forked by a Python master record every metric type and gauge
/// mode with odd label values, exit cleanly (with and without
/// `mark_process_dead`), are SIGKILLed and replaced, and the master is
/// restarted with and without wiping the directory. After every step the
/// sidecar's scrape must equal Python's own `MultiProcessCollector` over
/// the same directory, with only the differences the README documents:
/// dead workers' `live*` gauges count for nothing (the oracle calls
/// `mark_process_dead` for them) and a previous run's files count for
/// nothing (the oracle skips them). `PROMSHARD_SEED` replays a seed.
#[test]
fn serve_matches_pythons_collector_over_a_seeded_python_pool() {
    let Some(python) = support::python_with_prometheus_client() else {
        return support::skip_or_fail(support::PYTHON_MISSING);
    };
    let seed = std::env::var("PROMSHARD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64);
    eprintln!("seed {seed} (PROMSHARD_SEED={seed} replays it)");
    let mut rng = rng::Rng::new(seed);
    let scratch = Scratch::new("python-model");
    let dir = scratch.shards();
    fs::create_dir_all(&dir).unwrap();
    let server = Server::start(&dir);
    let started = Instant::now();

    let mut preload = rng.below(2) == 0;
    let mut pool = ModelPool::start(&python, &dir, preload);
    // Dead writers of this run (the oracle marks them dead), and the files
    // of previous runs (the oracle skips them) with their pids.
    let mut dead: Vec<u32> = Vec::new();
    let mut previous: Vec<String> = Vec::new();
    let mut log: Vec<String> = vec![format!("start master {} preload={preload}", pool.pid())];
    // Whether a live process of this run has written a file yet: until
    // then the last run is shown, as the README says, not compared.
    let mut established = preload;
    for _ in 0..2 {
        let pid = pool.spawn();
        log.push(format!("spawn {pid}"));
    }
    let mut step = 0;
    while step < 120 && started.elapsed() < Duration::from_secs(35) {
        step += 1;
        let roll = rng.below(100);
        let live = pool.workers.clone();
        if roll < 60 && !live.is_empty() {
            let pid = if preload && rng.below(8) == 0 { pool.pid() } else { rng.pick(&live) };
            for _ in 0..=rng.below(3) {
                let op = rng.model_op(preload);
                log.push(format!("{pid}: {op}"));
                pool.apply(pid, &op);
            }
            established = true;
        } else if roll < 70 && live.len() < 5 {
            let pid = pool.spawn();
            log.push(format!("spawn {pid}"));
        } else if roll < 80 && !live.is_empty() {
            let pid = rng.pick(&live);
            let mark = rng.below(2) == 0;
            pool.exit(pid, mark);
            dead.push(pid);
            log.push(format!("exit {pid} mark_process_dead={mark}"));
        } else if roll < 92 && !live.is_empty() {
            let pid = rng.pick(&live);
            pool.kill(pid);
            dead.push(pid);
            log.push(format!("SIGKILL {pid}"));
        } else {
            // The master restarted: a new run, with or without a wipe.
            let wipe = rng.below(2) == 0;
            drop(pool);
            if wipe {
                for entry in fs::read_dir(&dir).unwrap() {
                    fs::remove_file(entry.unwrap().path()).unwrap();
                }
                previous.clear();
            } else {
                previous = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            }
            dead.clear();
            // The old run's last change well before the new master starts.
            std::thread::sleep(Duration::from_millis(150));
            preload = rng.below(2) == 0;
            established = preload;
            pool = ModelPool::start(&python, &dir, preload);
            log.push(format!("restart wipe={wipe}: master {} preload={preload}", pool.pid()));
            for _ in 0..=rng.below(2) {
                let pid = pool.spawn();
                log.push(format!("spawn {pid}"));
            }
        }
        // A pid of this run that a previous run's file names is the
        // documented pid-reuse case: not compared.
        let previous_pids: Vec<u32> = previous.iter().filter_map(|f| python_file_pid(f)).collect();
        let this_run: Vec<u32> = pool.workers.iter().chain(&dead).copied().chain([pool.pid()]).collect();
        if this_run.iter().any(|p| previous_pids.contains(p)) {
            log.push("a pid of a previous run reused: not compared".to_owned());
            continue;
        }
        if !established {
            log.push("no live writer of this run yet: the last run is shown, not compared".to_owned());
            continue;
        }
        let ours = served_samples(&python, &server);
        let skip: Vec<&str> = previous.iter().map(String::as_str).collect();
        let theirs = support::python::oracle(&python, &dir, &dead, &skip);
        let diff = support::python::differences(&ours, &theirs);
        assert!(
            diff.is_empty(),
            "seed {seed}, step {step}: promshard serve differs from Python's collector:\n{diff}\nsteps:\n{}",
            log.join("\n")
        );
    }
    eprintln!("seed {seed}: {step} steps in {:?}", started.elapsed());
}

/// A pool whose master records (gunicorn's `preload_app` with a metric
/// counted at import) restarted without a wipe: when its only worker is
/// gone and not yet replaced (`workers = 1` recycling after
/// `max_requests`), the master is still the run's master. The previous
/// run's counts must not come back for that moment.
#[test]
fn serve_keeps_a_recording_masters_run_while_it_has_no_worker() {
    let Some(python) = support::python_with_prometheus_client() else {
        return support::skip_or_fail(support::PYTHON_MISSING);
    };
    let scratch = Scratch::new("python-lone-master");
    let dir = scratch.shards();
    fs::create_dir_all(&dir).unwrap();
    let server = Server::start(&dir);
    let jobs = |server: &Server| {
        let samples = served_samples(&python, server);
        samples.get("model_jobs_total{kind=61}").map_or(0.0, |v| v.parse::<f64>().unwrap())
    };
    let op = serde_json::json!(["c", "a", "inc", 5.0]);
    let mut pool = ModelPool::start(&python, &dir, true);
    let worker = pool.spawn();
    pool.apply(worker, &op);
    assert_eq!(jobs(&server), 5.0);
    drop(pool);
    std::thread::sleep(Duration::from_millis(300));

    let mut pool = ModelPool::start(&python, &dir, true);
    let op = serde_json::json!(["c", "a", "inc", 1.0]);
    let worker = pool.spawn();
    pool.apply(worker, &op);
    assert_eq!(jobs(&server), 1.0, "a new run starts from zero");
    pool.kill(worker);
    assert_eq!(jobs(&server), 1.0, "the master alone, between two workers");
    let worker = pool.spawn();
    pool.apply(worker, &op);
    assert_eq!(jobs(&server), 2.0, "the replacement");
}

/// Odd things named like prometheus_client's files in a Python directory
/// (a FIFO, a directory, a link to a character device) are bad files: a
/// `dump`, a `check` and a scrape skip them, within seconds, and still
/// show the good file beside them. A FIFO used to block every one of them
/// for ever in `open`, and the sidecar with it.
#[test]
fn odd_python_db_files_never_hang_a_reader() {
    let scratch = Scratch::new("python-odd");
    let dir = scratch.shards();
    fs::create_dir_all(&dir).unwrap();
    // Above Linux's largest pid_max: no process has these pids.
    let gone = 4_194_400;
    drop(python_db(&dir.join(format!("counter_{gone}.db")), "py_jobs", "py_jobs_total", 5.0));
    let fifo = dir.join(format!("counter_{}.db", gone + 1));
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    fs::create_dir(dir.join(format!("gauge_all_{}.db", gone + 2))).unwrap();
    std::os::unix::fs::symlink("/dev/urandom", dir.join(format!("histogram_{}.db", gone + 3))).unwrap();

    let bounded = |args: &[&str]| {
        let mut child = Command::new(BIN)
            .args(args)
            .env_remove(promshard::multiprocess::DIR_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut out = String::new();
            let _ = stdout.read_to_string(&mut out);
            out
        });
        let status = wait_bounded(&mut child, Duration::from_secs(10));
        if status.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        (status, reader.join().unwrap())
    };
    let (status, out) = bounded(&["dump", path(&dir)]);
    assert!(status.is_some(), "promshard dump hangs on an odd .db file");
    assert!(out.lines().any(|l| l == "py_jobs_total 5"), "{out}");
    let (status, out) = bounded(&["check", path(&dir)]);
    assert!(status.is_some(), "promshard check hangs on an odd .db file");
    assert_eq!(status.unwrap().code(), Some(1), "odd files are problems: {out}");

    let server = Server::start(&dir);
    let mut stream = server.connect();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    let read = stream.read_to_string(&mut response);
    assert!(read.is_ok(), "promshard serve hangs on an odd .db file: {read:?}");
    assert!(response.lines().any(|l| l == "py_jobs_total 5"), "{response}");
}
