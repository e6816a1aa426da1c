//! `promshard::push` against the real Pushgateway (Debian's
//! `prometheus-pushgateway`), started on loopback by each test and stopped
//! by its pid: what the gateway serves back, read by Python's parser, is
//! what we pushed; `push` replaces the group, `push_add` keeps the
//! families it does not carry, `delete` removes the group; grouping values
//! with `/`, empty or non-ASCII arrive intact; basic auth; a forked pool
//! pushes its sum; a gateway that is down, silent or refusing is an error
//! value within the timeout, never a panic or a hang.
//!
//! Each scenario runs in a process of its own (`harness::isolated`), so
//! that its registry holds only its own metrics.

mod harness;
mod http_client;
mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use harness::{TempDir, Worker, isolated};
use promshard::push::{PushError, Pusher};
use promshard::{Collector, Counter, Format, Gauge, Histogram, LabelValue, MetricWriter, metric};

#[derive(Clone, Copy, LabelValue)]
enum Outcome {
    Exported,
    Skipped,
}

/// Rows the job handled.
#[metric(labels(outcome: Outcome))]
static PUSH_TEST_ROWS_TOTAL: Counter;

/// Seconds each batch took.
#[metric(buckets = [0.005, 1.0, 1e6])]
static PUSH_TEST_BATCH_SECONDS: Histogram;

/// When the job last succeeded.
#[metric]
static PUSH_TEST_LAST_SUCCESS: Gauge;

/// Families that come and go between pushes: `push_switch_first` while
/// the mode is 1, `push_switch_second` while it is 2.
static SWITCH: AtomicU8 = AtomicU8::new(0);

struct Switch;

impl Collector for Switch {
    fn collect(&self, out: &mut MetricWriter<'_>) {
        match SWITCH.load(Ordering::SeqCst) {
            1 => {
                out.gauge("push_switch_first", "Only in the first push.").sample(&[], 1.0);
            }
            2 => {
                out.gauge("push_switch_second", "Only in the second push.").sample(&[], 2.0);
            }
            _ => {}
        }
    }
}

const BCRYPT_OF_PUSH_SECRET: &str = "$2b$04$sEjiDQYKUANcZkWNC4A7feBWWT2Z/bCv8.UWwrOBIxEvimatUh/Be";

/// A Pushgateway on a free loopback port, killed when dropped.
struct Gateway {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
    log: PathBuf,
    auth: Option<String>,
}

impl Gateway {
    fn start(binary: &Path, basic_auth: bool) -> Gateway {
        let dir = TempDir::new("pushgateway");
        let log = dir.path().join("gateway.log");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut command = Command::new(binary);
        command.arg(format!("--web.listen-address={addr}"));
        let auth = basic_auth.then(|| {
            let config = dir.path().join("web.yml");
            std::fs::write(&config, format!("basic_auth_users:\n  jobs: '{BCRYPT_OF_PUSH_SECRET}'\n")).unwrap();
            command.arg(format!("--web.config.file={}", config.display()));
            "Basic am9iczpwdXNoLXNlY3JldA==".to_owned()
        });
        let out = std::fs::File::create(&log).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let gateway = Gateway { child, addr, _dir: dir, log, auth };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !gateway.ready() {
            assert!(Instant::now() < deadline, "the Pushgateway never got ready:\n{}", gateway.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        gateway
    }

    fn ready(&self) -> bool {
        let Ok(mut stream) = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)) else {
            return false;
        };
        let headers: Vec<(&str, &str)> = self.auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = stream.write_all(&http_client::request_bytes(self.addr, "GET", "/-/ready", &headers));
        let mut raw = Vec::new();
        let _ = stream.read_to_end(&mut raw);
        raw.starts_with(b"HTTP/1.1 200")
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the gateway serves at `/metrics`.
    fn metrics(&self) -> String {
        let headers: Vec<(&str, &str)> = self.auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let response = http_client::fetch(self.addr, "GET", "/metrics", &headers);
        assert_eq!(response.status, 200, "{}", response.text());
        response.text()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One sample as Python's parser reads it: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
prefix = sys.argv[1]
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        if s.name.startswith(prefix):
            print(json.dumps([s.name, s.labels, repr(float(s.value))]))
"#;

/// The samples of `text` whose name starts with `prefix`, by Python's
/// parser, sorted.
fn samples(python: &Path, text: &str, prefix: &str) -> Vec<Sample> {
    let output = support::run_with_stdin(
        python,
        &[std::ffi::OsStr::new("-c"), std::ffi::OsStr::new(PARSE), std::ffi::OsStr::new(prefix)],
        text,
    );
    assert!(output.status.success(), "Python's parser refused:\n{}\n{text}", String::from_utf8_lossy(&output.stderr));
    let mut out: Vec<Sample> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let (name, mut labels, value): (String, BTreeMap<String, String>, String) =
                serde_json::from_str(line).unwrap();
            // The gateway stores what it is pushed as numbers and renders
            // bucket bounds its own way (`1` for our `1.0`): compared as
            // numbers.
            if let Some(le) = labels.get_mut("le") {
                *le = le.replace("Inf", "inf").parse::<f64>().map_or_else(|_| le.clone(), |v| v.to_string());
            }
            (name, labels, value.parse().unwrap())
        })
        .collect();
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out
}

/// The gateway's samples of group `grouping` (its labels checked, then
/// taken off), to compare with what was pushed.
fn group_samples(python: &Path, gateway: &Gateway, prefix: &str, grouping: &[(&str, &str)]) -> Vec<Sample> {
    let mut out = Vec::new();
    for (name, mut labels, value) in samples(python, &gateway.metrics(), prefix) {
        let matches = grouping.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v));
        if !matches {
            continue;
        }
        for (k, _) in grouping {
            labels.remove(*k);
        }
        // The gateway adds an empty `instance` to a group without one.
        if !grouping.iter().any(|(k, _)| *k == "instance") && labels.get("instance").is_some_and(String::is_empty) {
            labels.remove("instance");
        }
        out.push((name, labels, value));
    }
    out
}

fn tools() -> Option<(PathBuf, PathBuf)> {
    let Some(gateway) = support::pushgateway() else {
        support::skip_or_fail(support::PUSHGATEWAY_MISSING);
        return None;
    };
    let Some(python) = support::python_with_prometheus_client() else {
        support::skip_or_fail(support::PYTHON_MISSING);
        return None;
    };
    Some((gateway, python))
}

fn record() {
    PUSH_TEST_ROWS_TOTAL.with((Outcome::Exported,)).inc_by(1200);
    PUSH_TEST_ROWS_TOTAL.with((Outcome::Skipped,)).inc_by(3);
    for v in [0.001, 0.5, 2.0, 3e6] {
        PUSH_TEST_BATCH_SECONDS.observe(v);
    }
    PUSH_TEST_LAST_SUCCESS.set(1.7e9);
}

#[test]
fn the_gateway_serves_back_what_was_pushed() {
    let Some((binary, python)) = tools() else { return };
    isolated("the_gateway_serves_back_what_was_pushed", Duration::from_secs(60), || {
        let gateway = Gateway::start(&binary, false);
        record();
        // Values that cannot travel as path segments as they are.
        let groups: [&[(&str, &str)]; 4] = [
            &[("job", "nightly")],
            &[("job", "nightly"), ("instance", "db/eu-1")],
            &[("job", "nightly/export"), ("shard", "")],
            &[("job", "nightly"), ("shard", "é ü ✓ %2F ..")],
        ];
        let ours = samples(&python, &String::from_utf8(promshard::encode(Format::Prometheus)).unwrap(), "push_test_");
        assert_eq!(ours.len(), 2 + 4 + 2 + 1, "{ours:?}");
        for group in groups {
            let mut pusher = Pusher::new(&gateway.url(), group[0].1);
            for (k, v) in &group[1..] {
                pusher = pusher.grouping(k, v);
            }
            pusher.push().unwrap_or_else(|e| panic!("{group:?}: {e}\n{}", gateway.log()));
            assert_eq!(group_samples(&python, &gateway, "push_test_", group), ours, "group {group:?}");
        }
        // Pushed again after more counts: the group shows the new values.
        PUSH_TEST_ROWS_TOTAL.with((Outcome::Exported,)).inc_by(5);
        let pusher = Pusher::new(&gateway.url(), "nightly");
        pusher.push().unwrap();
        let served = group_samples(&python, &gateway, "push_test_rows", &[("job", "nightly")]);
        let exported = served.iter().find(|(_, l, _)| l.get("outcome").map(String::as_str) == Some("exported"));
        assert_eq!(exported.map(|s| s.2), Some(1205.0));
    });
}

#[test]
fn push_replaces_push_add_adds_delete_removes() {
    let Some((binary, python)) = tools() else { return };
    isolated("push_replaces_push_add_adds_delete_removes", Duration::from_secs(60), || {
        let gateway = Gateway::start(&binary, false);
        promshard::register_collector(Switch);
        let group = [("job", "replace"), ("instance", "i")];
        let pusher = Pusher::new(&gateway.url(), "replace").grouping("instance", "i");
        let names = |gateway: &Gateway| -> Vec<String> {
            let mut names: Vec<String> =
                group_samples(&python, gateway, "push_switch_", &group).into_iter().map(|s| s.0).collect();
            names.dedup();
            names
        };
        // Another group, which none of this group's calls may touch.
        SWITCH.store(1, Ordering::SeqCst);
        Pusher::new(&gateway.url(), "bystander").push().unwrap();

        pusher.push().unwrap();
        assert_eq!(names(&gateway), ["push_switch_first"]);
        SWITCH.store(2, Ordering::SeqCst);
        pusher.push_add().unwrap();
        assert_eq!(
            names(&gateway),
            ["push_switch_first", "push_switch_second"],
            "push_add keeps what it does not carry"
        );
        pusher.push().unwrap();
        assert_eq!(names(&gateway), ["push_switch_second"], "push replaces the group");
        pusher.delete().unwrap();
        assert!(group_samples(&python, &gateway, "", &group).is_empty(), "delete removes the group");
        let bystander = group_samples(&python, &gateway, "push_switch_", &[("job", "bystander")]);
        assert_eq!(bystander.len(), 1, "the other group is untouched: {bystander:?}");
        // Deleting a group that is not there is no error (the gateway's
        // answer is 202 either way).
        pusher.delete().unwrap();
    });
}

#[test]
fn basic_auth_is_sent_and_a_wrong_password_is_an_error() {
    let Some((binary, python)) = tools() else { return };
    isolated("basic_auth_is_sent_and_a_wrong_password_is_an_error", Duration::from_secs(60), || {
        let gateway = Gateway::start(&binary, true);
        record();
        let refused = Pusher::new(&gateway.url(), "secured").basic_auth("jobs", "wrong").push();
        assert!(matches!(refused, Err(PushError::Status { status: 401, .. })), "{refused:?}");
        let refused = Pusher::new(&gateway.url(), "secured").push();
        assert!(matches!(refused, Err(PushError::Status { status: 401, .. })), "{refused:?}");
        Pusher::new(&gateway.url(), "secured").basic_auth("jobs", "push-secret").push().unwrap();
        assert_eq!(group_samples(&python, &gateway, "push_test_rows", &[("job", "secured")]).len(), 2);
    });
}

#[test]
fn on_exit_and_every_push_without_being_asked() {
    let Some((binary, python)) = tools() else { return };
    isolated("on_exit_and_every_push_without_being_asked", Duration::from_secs(60), || {
        let gateway = Gateway::start(&binary, false);
        {
            let _push = promshard::push::on_exit(Pusher::new(&gateway.url(), "at_exit"));
            record();
            assert!(group_samples(&python, &gateway, "push_test_", &[("job", "at_exit")]).is_empty());
        }
        assert_eq!(group_samples(&python, &gateway, "push_test_rows", &[("job", "at_exit")]).len(), 2);

        let periodic = promshard::push::every(Pusher::new(&gateway.url(), "periodic"), Duration::from_millis(100));
        let rows = |gateway: &Gateway| {
            group_samples(&python, gateway, "push_test_rows", &[("job", "periodic"), ("outcome", "skipped")])
                .first()
                .map(|s| s.2)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while rows(&gateway) != Some(3.0) {
            assert!(Instant::now() < deadline, "no periodic push arrived");
            std::thread::sleep(Duration::from_millis(50));
        }
        PUSH_TEST_ROWS_TOTAL.with((Outcome::Skipped,)).inc_by(4);
        while rows(&gateway) != Some(7.0) {
            assert!(Instant::now() < deadline, "the next periodic push did not carry the new count");
            std::thread::sleep(Duration::from_millis(50));
        }
        PUSH_TEST_ROWS_TOTAL.with((Outcome::Skipped,)).inc();
        // The last push, when stopped, carries the last count.
        periodic.finish().unwrap();
        assert_eq!(rows(&gateway), Some(8.0));
    });
}

fn pool_worker(command: &str) -> String {
    match command {
        "record" => {
            record();
            "ok".to_owned()
        }
        "push" => match Pusher::new(&std::env::var("GATEWAY").unwrap(), "pool").push() {
            Ok(()) => "ok".to_owned(),
            Err(e) => e.to_string(),
        },
        other => panic!("unknown command {other:?}"),
    }
}

#[test]
fn a_forked_pool_pushes_its_sum() {
    let Some((binary, python)) = tools() else { return };
    isolated("a_forked_pool_pushes_its_sum", Duration::from_secs(60), || {
        let gateway = Gateway::start(&binary, false);
        // SAFETY: set before any thread of this process reads the
        // environment; the workers inherit it through fork.
        unsafe { std::env::set_var("GATEWAY", gateway.url()) };
        let dir = TempDir::new("push-pool");
        promshard::multiprocess::init(dir.path().join("shards")).unwrap();
        let wait = Duration::from_secs(20);
        let mut workers: Vec<Worker> = (0..3).map(|_| Worker::spawn(pool_worker)).collect();
        for worker in &mut workers {
            assert_eq!(worker.ask("record", wait), "ok");
        }
        // Any worker's push carries every worker's counts.
        assert_eq!(workers[1].ask("push", wait), "ok");
        let rows = group_samples(&python, &gateway, "push_test_rows", &[("job", "pool"), ("outcome", "exported")]);
        assert_eq!(rows.first().map(|s| s.2), Some(3.0 * 1200.0), "{rows:?}");
        // So does a process that holds no shard, pushing the directory.
        for worker in workers.iter_mut().rev() {
            worker.exit(wait).expect("the worker exits");
        }
        Pusher::new(&gateway.url(), "pool").directory(dir.path().join("shards")).push().unwrap();
        let rows = group_samples(&python, &gateway, "push_test_rows", &[("job", "pool"), ("outcome", "exported")]);
        assert_eq!(rows.first().map(|s| s.2), Some(3.0 * 1200.0), "{rows:?}");
        // And the master, which called `init` before forking and records
        // only now, once every worker is gone: a plain push carries their
        // counts and its own (it used to start a new run and clear them).
        PUSH_TEST_ROWS_TOTAL.with((Outcome::Exported,)).inc();
        Pusher::new(&gateway.url(), "master").push().unwrap();
        let rows = group_samples(&python, &gateway, "push_test_rows", &[("job", "master"), ("outcome", "exported")]);
        assert_eq!(rows.first().map(|s| s.2), Some(3.0 * 1200.0 + 1.0), "{rows:?}");
    });
}

/// A listener that accepts and never answers; it goes when dropped.
fn silent_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

#[test]
fn a_gateway_down_silent_or_refusing_is_an_error_within_the_timeout() {
    isolated("a_gateway_down_silent_or_refusing_is_an_error_within_the_timeout", Duration::from_secs(60), || {
        record();
        let timeout = Duration::from_millis(300);
        // Nothing listening.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let started = Instant::now();
        let result = Pusher::new(&format!("http://{closed}"), "down").timeout(timeout).push();
        assert!(matches!(result, Err(PushError::Transport(_))), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

        // Accepts the connection (the kernel's backlog) and never answers.
        let (_listener, silent) = silent_listener();
        for call in ["push", "push_add", "delete"] {
            let pusher = Pusher::new(&format!("http://{silent}"), "silent").timeout(timeout);
            let started = Instant::now();
            let result = match call {
                "push" => pusher.push(),
                "push_add" => pusher.push_add(),
                _ => pusher.delete(),
            };
            assert!(matches!(result, Err(PushError::Transport(_))), "{call}: {result:?}");
            assert!(started.elapsed() < Duration::from_secs(3), "{call} took {:?}", started.elapsed());
        }

        // Answers with an error and says why.
        let refusing = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = refusing.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = refusing.accept().unwrap();
            let mut buf = [0u8; 65536];
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let _ = stream.read(&mut buf);
            let body = "pushed metrics are invalid or inconsistent with existing metrics";
            let _ = write!(stream, "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        });
        let result = Pusher::new(&format!("http://{addr}"), "refused").timeout(Duration::from_secs(5)).push();
        server.join().unwrap();
        match result {
            Err(PushError::Status { status: 400, body }) => assert!(body.contains("inconsistent"), "{body}"),
            other => panic!("{other:?}"),
        }

        // A group that cannot be named is refused before any connection.
        let result = Pusher::new(&format!("http://{closed}"), "").push();
        assert!(matches!(result, Err(PushError::Grouping(_))), "{result:?}");

        // The guards log instead of panicking.
        drop(promshard::push::on_exit(Pusher::new(&format!("http://{closed}"), "down").timeout(timeout)));
        let periodic = promshard::push::every(Pusher::new(&format!("http://{silent}"), "s").timeout(timeout), timeout);
        std::thread::sleep(Duration::from_millis(400));
        let started = Instant::now();
        assert!(periodic.finish().is_err());
        assert!(started.elapsed() < Duration::from_secs(3), "stopping took {:?}", started.elapsed());
    });
}

/// A job ends while its periodic push waits on a gateway that accepts and
/// never answers: dropping the guard (the end of `main`) is bounded by the
/// pusher's timeout, not twice it.
#[test]
fn dropping_a_periodic_push_waits_one_timeout_at_most() {
    isolated("dropping_a_periodic_push_waits_one_timeout_at_most", Duration::from_secs(60), || {
        record();
        let timeout = Duration::from_secs(1);
        let (_listener, silent) = silent_listener();
        for ending in ["drop", "finish"] {
            let periodic = promshard::push::every(
                Pusher::new(&format!("http://{silent}"), "stuck").timeout(timeout),
                Duration::from_millis(50),
            );
            // The first periodic push is under way, and hangs.
            std::thread::sleep(Duration::from_millis(300));
            let started = Instant::now();
            match ending {
                "drop" => drop(periodic),
                _ => assert!(matches!(periodic.finish(), Err(PushError::Transport(_)))),
            }
            let took = started.elapsed();
            assert!(took < timeout + Duration::from_millis(250), "{ending} took {took:?} for a {timeout:?} timeout");
        }
    });
}

/// A timeout meaning "never" (`Duration::MAX`) is a valid option: a push
/// to a gateway that answers succeeds, and so does the last push of a
/// periodic one, never a panic.
#[test]
fn a_timeout_meaning_never_still_pushes() {
    isolated("a_timeout_meaning_never_still_pushes", Duration::from_secs(60), || {
        record();
        let gateway = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = gateway.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in gateway.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
                let mut buf = [0u8; 65536];
                let mut got = Vec::new();
                // The head and a body of Content-Length bytes, or what came
                // before the client paused.
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    got.extend_from_slice(&buf[..n]);
                }
                let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        for timeout in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
            let result =
                std::panic::catch_unwind(|| Pusher::new(&format!("http://{addr}"), "never").timeout(timeout).push());
            assert!(matches!(result, Ok(Ok(()))), "timeout {timeout:?}: {result:?}");
        }
    });
}

/// Latencies, in native buckets only.
#[metric(native(schema = 3, max_buckets = 40))]
static PUSHED_NATIVE_SECONDS: Histogram;

/// What a protobuf scrape asks for.
const PROTOBUF_ACCEPT: &str =
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited";

/// A native histogram is pushed with its buckets: the gateway keeps what
/// it is given, and serves it back in protobuf, as Prometheus scrapes it.
/// The text format has no native buckets (only `+Inf`, `_count`, `_sum`).
#[test]
fn a_native_histogram_arrives_with_its_buckets() {
    let Some((binary, _)) = tools() else { return };
    let Some(python) = support::protobuf::python_or_skip() else { return };
    isolated("a_native_histogram_arrives_with_its_buckets", Duration::from_secs(60), || {
        let gateway = Gateway::start(&binary, false);
        let observed = [0.003, 0.02, 0.02, 0.5, 7.0, 7.5, 120.0];
        for v in observed {
            PUSHED_NATIVE_SECONDS.observe(v);
        }
        Pusher::new(&gateway.url(), "native").push().unwrap_or_else(|e| panic!("{e}\n{}", gateway.log()));
        let response = http_client::fetch(gateway.addr, "GET", "/metrics", &[("Accept", PROTOBUF_ACCEPT)]);
        assert_eq!(response.status, 200);
        let work = TempDir::new("push-native");
        support::protobuf::check_native(
            &python,
            work.path(),
            &response.body,
            &[("pushed_native_seconds", observed.to_vec())],
        );
    });
}

/// The gateway's explanation of a refusal is kept when the 4 KiB kept of
/// it ends inside a character (its messages quote label values, in any
/// language).
#[test]
fn a_refusal_cut_inside_a_character_keeps_its_explanation() {
    isolated("a_refusal_cut_inside_a_character_keeps_its_explanation", Duration::from_secs(60), || {
        let refusing = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = refusing.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = refusing.accept().unwrap();
            let mut buf = [0u8; 65536];
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let _ = stream.read(&mut buf);
            // 1 + 2 × 3000 bytes: byte 4096 is inside an `é`.
            let body = format!("pushed metrics are invalid: x{}", "é".repeat(3000));
            let _ = write!(stream, "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        });
        let result = Pusher::new(&format!("http://{addr}"), "refused").timeout(Duration::from_secs(5)).push();
        server.join().unwrap();
        match result {
            Err(PushError::Status { status: 400, body }) => {
                assert!(body.starts_with("pushed metrics are invalid: xé"), "{:?}", &body[..body.len().min(80)])
            }
            other => panic!("{other:?}"),
        }
    });
}

/// A job that panics with its exit guard in scope still pushes what it
/// counted (the guard is dropped while unwinding), and the process ends
/// with the panic, not an abort.
#[test]
fn a_panicking_job_still_pushes_from_its_guards() {
    let Some((binary, python)) = tools() else { return };
    isolated("a_panicking_job_still_pushes_from_its_guards", Duration::from_secs(60), || {
        let gateway = Gateway::start(&binary, false);
        let url = gateway.url();
        let unwound = std::panic::catch_unwind(move || {
            let _exit = promshard::push::on_exit(Pusher::new(&url, "panicked"));
            let _periodic = promshard::push::every(Pusher::new(&url, "panicked_periodic"), Duration::from_millis(50));
            record();
            std::thread::sleep(Duration::from_millis(200));
            panic!("the job failed");
        });
        assert!(unwound.is_err());
        for job in ["panicked", "panicked_periodic"] {
            let rows = group_samples(&python, &gateway, "push_test_rows", &[("job", job), ("outcome", "exported")]);
            assert_eq!(rows.first().map(|s| s.2), Some(1200.0), "{job}: {rows:?}");
        }
    });
}

/// A series that carries a label also in the group (`instance`, say, or
/// `job`): the gateway would overwrite its value with the group's (one
/// such series) or refuse the push (several that then collide). The Go
/// client refuses such a push before sending; so do we, and the gateway
/// is left as it was.
#[test]
fn a_series_carrying_a_grouping_label_is_refused_before_sending() {
    struct Clash;
    impl Collector for Clash {
        fn collect(&self, out: &mut MetricWriter<'_>) {
            out.gauge("push_clash_hosts", "Hosts seen.").sample(&[("instance", "host-a")], 1.0);
        }
    }
    let Some((binary, python)) = tools() else { return };
    isolated("a_series_carrying_a_grouping_label_is_refused_before_sending", Duration::from_secs(60), || {
        let gateway = Gateway::start(&binary, false);
        promshard::register_collector(Clash);
        let result = Pusher::new(&gateway.url(), "clash").grouping("instance", "host-b").push();
        assert!(matches!(result, Err(PushError::Grouping(_))), "{result:?}");
        let served = samples(&python, &gateway.metrics(), "push_clash_");
        assert!(served.is_empty(), "the gateway got {served:?}");
    });
}
