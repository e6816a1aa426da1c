//! A real Flask app under real gunicorn, as the seeds' users run it:
//! prometheus_flask_exporter's `GunicornPrometheusMetrics` and app metrics
//! of every type and gauge mode (label values with quotes, a newline and
//! non-ASCII text), 4 workers recycled every 5 requests
//! (`max_requests`), `preload_app`, and no `child_exit` hook. A bounded
//! load on 127.0.0.1 drives it; `multiprocess::encode_dir` must then equal
//! Python's own collector sample by sample (through Python's parser),
//! where the oracle's directory had `mark_process_dead` called for every
//! dead worker, as the hook would have: before the churn, after 300
//! recycled workers, and after a restart of the pool without a wipe, which
//! must start from zero.
//!
//! Needs a Python with flask, gunicorn, prometheus_client and
//! prometheus_flask_exporter (`PROMSHARD_PYTHON`, as `.ci/run` installs
//! it); without it, skips loudly, or fails under `PROMSHARD_ORACLES=require`.
//! Everything it starts is killed by pid when a guard drops.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::python::{Samples, TempDir, assert_same, differences, oracle, ours, value};
use support::skip_or_fail;

const APP: &str = r#"
from flask import Flask
from prometheus_client import Counter, Gauge, Histogram, Summary
from prometheus_flask_exporter.multiprocess import GunicornPrometheusMetrics

MODES = ['all', 'liveall', 'sum', 'livesum', 'min', 'livemin', 'max', 'livemax', 'mostrecent', 'livemostrecent']

app = Flask(__name__)
metrics = GunicornPrometheusMetrics(app, group_by='endpoint')
ORDERS = Counter('shop_orders', 'Orders, "quoted" and caf\u00e9.', ['kind'])
WORK = Histogram('shop_work_seconds', 'Work.', ['route'], buckets=[2.5e-07, 0.001, 0.25, 1e6])
SIZE = Summary('shop_payload_bytes', 'Payload.')
GAUGES = {m: Gauge('shop_gauge_' + m, 'Gauge of mode ' + m, ['route'], multiprocess_mode=m) for m in MODES}
KINDS = ['plain', 'say "hi"\nnew line', 'caf\u00e9 \u4e2d']

@app.route('/work/<int:n>')
def work(n):
    ORDERS.labels(KINDS[n % 3]).inc()
    WORK.labels('/work').observe(n * 1e-4)
    SIZE.observe(n)
    for j, mode in enumerate(MODES):
        GAUGES[mode].labels('/work').set(n + j)
    return 'ok'
"#;

fn gunicorn_conf(port: u16) -> String {
    format!(
        "bind = '127.0.0.1:{port}'\nworkers = 4\nmax_requests = 5\nmax_requests_jitter = 0\n\
         preload_app = True\ngraceful_timeout = 5\nloglevel = 'warning'\ncontrol_socket_disable = True\n"
    )
}

/// A Python with everything the app needs, from `PROMSHARD_PYTHON` or
/// `python3`.
fn python() -> Option<PathBuf> {
    let candidate = std::env::var_os("PROMSHARD_PYTHON").filter(|v| !v.is_empty()).map(PathBuf::from);
    let candidate = candidate.unwrap_or_else(|| PathBuf::from("python3"));
    let imports = Command::new(&candidate)
        .args(["-c", "import flask, gunicorn, prometheus_client, prometheus_flask_exporter"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    imports.then_some(candidate)
}

/// A gunicorn master; dropping it kills its workers and it, by pid.
struct Gunicorn {
    child: Child,
    addr: SocketAddr,
}

impl Gunicorn {
    fn start(python: &Path, app_dir: &Path, dir: &Path) -> Gunicorn {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        std::fs::write(app_dir.join("gunicorn.conf.py"), gunicorn_conf(port)).unwrap();
        let child = Command::new(python)
            .args(["-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"])
            .current_dir(app_dir)
            .env("PROMETHEUS_MULTIPROC_DIR", dir)
            .stdin(Stdio::null())
            .spawn()
            .expect("start gunicorn");
        let gunicorn = Gunicorn { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(gunicorn.addr, "/work/0").is_none() {
            assert!(Instant::now() < deadline, "gunicorn did not answer on {}", gunicorn.addr);
            std::thread::sleep(Duration::from_millis(50));
        }
        gunicorn
    }

    /// Its live workers: the processes whose parent it is.
    fn workers(&self) -> Vec<u32> {
        let master = self.child.id();
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            let rest = &stat[stat.rfind(')').unwrap() + 1..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if fields[1] == master.to_string() && fields[0] != "Z" {
                out.push(pid);
            }
        }
        out
    }

    /// SIGTERM, then waits for the master (and so its workers) to exit.
    fn stop(mut self) {
        // SAFETY: kill(2) of the child this guard started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Gunicorn {
    fn drop(&mut self) {
        for pid in self.workers() {
            // SAFETY: kill(2) of this gunicorn's own workers.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.0 GET on loopback; the body, or `None` if it failed.
fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response
        .lines()
        .next()
        .is_some_and(|status| status.contains(" 200 "))
        .then(|| response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned())
}

/// `requests` GETs from 4 client threads; every one must be answered.
fn load(addr: SocketAddr, first: usize, requests: usize) {
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for n in (first + t..first + requests).step_by(4) {
                    let mut tries = 0;
                    // A worker retiring may close a connection it accepted.
                    while get(addr, &format!("/work/{n}")).is_none() {
                        tries += 1;
                        assert!(tries < 20, "request {n} never answered");
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

/// The pids that Python files in `dir` name, and which of them are alive.
fn pids(dir: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".db")?.rsplit('_').next()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Our merge against the oracle with the hook emulated for every pid
/// that has files but no process; retried, as a worker may retire
/// between the two readings.
fn compare(step: &str, python: &Path, dir: &Path, gunicorn: &Gunicorn, skip: &[&str]) -> Samples {
    let mut tries = 0;
    loop {
        let live = gunicorn.workers();
        let dead: Vec<u32> = pids(dir).into_iter().filter(|p| !live.contains(p) && *p != gunicorn.child.id()).collect();
        let (mine, theirs) = (ours(python, dir), oracle(python, dir, &dead, skip));
        if differences(&mine, &theirs).is_empty() || tries == 3 {
            assert_same(step, &mine, &theirs);
            return mine;
        }
        tries += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The sum of `flask_http_request_total` over its series.
fn requests_counted(samples: &Samples) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| k.starts_with("flask_http_request_total{"))
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

#[test]
fn flask_under_gunicorn_without_hooks() {
    let Some(python) = python() else {
        return skip_or_fail(
            "python3 with flask, gunicorn, prometheus_client and prometheus_flask_exporter not found \
             (set PROMSHARD_PYTHON; .ci/run installs them in a virtualenv)",
        );
    };
    let started = Instant::now();
    let app_dir = TempDir::new("gunicorn-app");
    let dir = TempDir::new("gunicorn-metrics");
    let d = &dir.0;
    std::fs::write(app_dir.0.join("app.py"), APP).unwrap();

    let gunicorn = Gunicorn::start(&python, &app_dir.0, d);
    // The readiness probe was one request.
    let mut sent = 1;
    load(gunicorn.addr, 1, 19);
    sent += 19;
    std::thread::sleep(Duration::from_millis(300));
    let before = compare("before churn", &python, d, &gunicorn, &[]);
    assert_eq!(requests_counted(&before), sent as f64);

    // 1,500 requests: 300 workers retire after their 5th.
    let workers_before = pids(d).len();
    load(gunicorn.addr, sent, 1500);
    sent += 1500;
    std::thread::sleep(Duration::from_millis(500));
    let after = compare("after 300 recycled workers", &python, d, &gunicorn, &[]);
    let recycled = pids(d).len() - workers_before;
    assert!(recycled >= 280, "only {recycled} workers came and went");
    assert_eq!(requests_counted(&after), sent as f64);
    // The live modes show the live workers only, with no hook wired.
    let live = gunicorn.workers();
    let liveall: Vec<u32> = after
        .keys()
        .filter_map(|k| k.strip_prefix("shop_gauge_liveall{pid="))
        .map(|rest| {
            let hex = rest.split(',').next().unwrap();
            let text: String =
                (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap() as char).collect();
            text.parse().unwrap()
        })
        .collect();
    assert!(liveall.iter().all(|pid| live.contains(pid)), "liveall {liveall:?}, live {live:?}");
    let check = promshard::multiprocess::inspect_python(d).unwrap();
    assert!(
        check.iter().filter(|f| f.live).all(|f| live.contains(&f.pid.unwrap()) || f.pid == Some(gunicorn.child.id()))
    );
    assert!(check.iter().filter(|f| f.state == "dead-folded").count() >= 280);

    // A restart without a wipe: the new pool starts from zero.
    gunicorn.stop();
    std::thread::sleep(Duration::from_millis(200));
    let old: Vec<String> =
        std::fs::read_dir(d).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    let old: Vec<&str> = old.iter().map(String::as_str).collect();
    let gunicorn = Gunicorn::start(&python, &app_dir.0, d);
    load(gunicorn.addr, 0, 9);
    std::thread::sleep(Duration::from_millis(300));
    let restarted = compare("after a restart without a wipe", &python, d, &gunicorn, &old);
    assert_eq!(requests_counted(&restarted), 10.0, "the readiness probe and 9, nothing of the last run");
    assert!(value(&restarted, "shop_payload_bytes_count{}") <= 10.0);
    drop(gunicorn);
    eprintln!("gunicorn test: {recycled} workers recycled, {:?}", started.elapsed());
}

/// `kill -HUP` of the master (a graceful reload: new workers, the old
/// ones finish their requests and leave) three times under load, with
/// workers also retiring after 5 requests, scraped throughout: the count
/// never goes down, and at the end equals the requests made and Python's
/// collector with the hook emulated, sample by sample.
#[test]
fn graceful_reloads_under_load_lose_no_count() {
    let Some(python) = python() else {
        return skip_or_fail("python3 with flask, gunicorn, prometheus_client and prometheus_flask_exporter not found");
    };
    let app_dir = TempDir::new("gunicorn-hup-app");
    let dir = TempDir::new("gunicorn-hup-metrics");
    let d = &dir.0;
    std::fs::write(app_dir.0.join("app.py"), APP).unwrap();
    let gunicorn = Gunicorn::start(&python, &app_dir.0, d);
    let addr = gunicorn.addr;
    let loader = std::thread::spawn(move || load(addr, 1, 300));
    let mut last = 0.0;
    let mut reloads = 0;
    let started = Instant::now();
    while !loader.is_finished() {
        let text = String::from_utf8(promshard::multiprocess::encode_dir(d, promshard::Format::Prometheus)).unwrap();
        let counted: f64 = text
            .lines()
            .filter(|l| l.starts_with("flask_http_request_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum();
        assert!(counted >= last, "the request count went down: {counted} < {last}");
        last = counted;
        if reloads < 3 && started.elapsed() > Duration::from_millis(400 * (reloads + 1)) {
            // SAFETY: kill(2) of the gunicorn master this test started.
            assert_eq!(unsafe { libc::kill(gunicorn.child.id() as i32, libc::SIGHUP) }, 0);
            reloads += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    loader.join().unwrap();
    assert!(reloads > 0, "the load ended before any reload");
    std::thread::sleep(Duration::from_millis(1500));
    let end = compare("after graceful reloads", &python, d, &gunicorn, &[]);
    assert_eq!(requests_counted(&end), 301.0, "the readiness probe and 300, after {reloads} reloads");
    drop(gunicorn);
}
