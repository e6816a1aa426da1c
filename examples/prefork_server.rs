//! A pre-fork HTTP server, the deployment promshard exists for: a master
//! process forks workers that share one listening socket; workers serve
//! requests and record metrics; workers retire after a number of requests
//! (churn) and some crash; the master replaces them. Every process records
//! into its own shard in `PROMSHARD_DIR`, and the master's scrape is the
//! exact merge of all of them, dead workers included.
//!
//! ```sh
//! cargo run --release --example prefork_server                  # run a load, check the totals, print them
//! cargo run --release --example prefork_server -- --serve 127.0.0.1:9100
//! ```
//!
//! Without `PROMSHARD_DIR` the example uses a fresh temporary directory.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use promshard::testing::sample_value;
use promshard::{Counter, Format, Gauge, Histogram, LabelValue, metric};

const WORKERS: usize = 4;
/// A worker retires after this many requests and the master replaces it.
const REQUESTS_PER_WORKER: u64 = 60;
const WORK_REQUESTS: u64 = 500;
const CRASH_REQUESTS: u64 = 3;

#[derive(Clone, Copy, LabelValue)]
enum Route {
    Work,
    Crash,
    NotFound,
}

/// HTTP requests served by the pool, by route.
#[metric(labels(route: Route))]
static HTTP_REQUESTS_TOTAL: Counter;

/// Time to handle a request.
#[metric(unit = "seconds", buckets = [0.0001, 0.001, 0.01, 0.1], labels(route: Route))]
static HTTP_REQUEST_DURATION_SECONDS: Histogram;

/// Requests being handled right now, over live workers.
#[metric(mode = livesum)]
static HTTP_REQUESTS_IN_FLIGHT: Gauge;

/// Workers alive right now.
#[metric(mode = livesum)]
static WORKERS_ALIVE: Gauge;

/// Workers the master started, replacements included.
#[metric]
static WORKERS_STARTED_TOTAL: Counter;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = std::env::var_os(promshard::multiprocess::DIR_ENV)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("promshard-prefork-{}", std::process::id())));
    // Before anything is recorded: the master holds the run open, so
    // workers come and go without clearing anything.
    promshard::multiprocess::init(&dir).expect("nothing was recorded yet");
    WORKERS_STARTED_TOTAL.inc_by(0);

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut workers: Vec<libc::pid_t> = (0..WORKERS).map(|_| spawn_worker(&listener)).collect();
    eprintln!("master {}: {WORKERS} workers on http://{addr}, shards in {}", std::process::id(), dir.display());

    if let Some(i) = args.iter().position(|a| a == "--serve") {
        let metrics = promshard::serve(args.get(i + 1).map_or("127.0.0.1:9100", String::as_str))?;
        eprintln!("merged metrics at http://{}/metrics; send work to http://{addr}/work", metrics.local_addr());
        loop {
            supervise(&listener, &mut workers, true);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // A client on another thread; the master keeps replacing workers.
    let client = std::thread::spawn(move || load(addr));
    while !client.is_finished() {
        supervise(&listener, &mut workers, false);
        std::thread::sleep(Duration::from_millis(5));
    }
    let (work, crashes) = client.join().expect("client");
    for pid in workers {
        // SAFETY: stopping and reaping our own children.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }

    let text = String::from_utf8(promshard::encode(Format::Prometheus)).expect("UTF-8");
    for line in text.lines().filter(|l| l.starts_with("http_requests_total") || l.starts_with("workers_")) {
        println!("{line}");
    }
    let served = sample_value("http_requests_total", &[("route", "work")]).unwrap_or(0.0);
    let crashed = sample_value("http_requests_total", &[("route", "crash")]).unwrap_or(0.0);
    let started = sample_value("workers_started_total", &[]).unwrap_or(0.0);
    println!(
        "client: {work} work requests answered, {crashes} crash requests sent; \
         merged: {served} work, {crashed} crash, over {started} workers"
    );
    let ok = served == work as f64 && crashed == crashes as f64 && sample_value("workers_alive", &[]) == Some(0.0);
    let _ = std::fs::remove_dir_all(&dir);
    if ok {
        println!("every request counted exactly once, across worker churn and crashes");
        Ok(())
    } else {
        Err(std::io::Error::other("merged totals differ from what the client saw"))
    }
}

/// Forks a worker serving requests from the shared listener.
fn spawn_worker(listener: &TcpListener) -> libc::pid_t {
    WORKERS_STARTED_TOTAL.inc();
    // SAFETY: the child serves, then leaves with _exit/abort; it never
    // returns into the master's code.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid != 0 {
        return pid;
    }
    WORKERS_ALIVE.inc();
    let listener = listener.try_clone().expect("listener");
    let server = tiny_http::Server::from_listener(listener, None).expect("server");
    for _ in 0..REQUESTS_PER_WORKER {
        let Ok(request) = server.recv() else { break };
        let _in_flight = HTTP_REQUESTS_IN_FLIGHT.track_inprogress();
        let route = match request.url() {
            "/work" => Route::Work,
            "/crash" => Route::Crash,
            _ => Route::NotFound,
        };
        let timer = HTTP_REQUEST_DURATION_SECONDS.with((route,)).start_timer();
        HTTP_REQUESTS_TOTAL.with((route,)).inc();
        if let Route::Crash = route {
            // A worker killed mid-request (as by the OOM killer): no
            // cleanup, no hook, no core file.
            // SAFETY: raise has no preconditions.
            unsafe { libc::raise(libc::SIGKILL) };
        }
        drop(timer);
        let status = if let Route::NotFound = route { 404 } else { 200 };
        let _ = request.respond(tiny_http::Response::from_string("ok\n").with_status_code(status));
    }
    WORKERS_ALIVE.dec();
    // SAFETY: leave without running the master's atexit handlers.
    unsafe { libc::_exit(0) }
}

/// Reaps exited workers and starts their replacements.
fn supervise(listener: &TcpListener, workers: &mut [libc::pid_t], quiet: bool) {
    for pid in workers.iter_mut() {
        let mut status = 0;
        // SAFETY: polling our own child.
        if unsafe { libc::waitpid(*pid, &mut status, libc::WNOHANG) } == *pid {
            if !quiet {
                let how = if libc::WIFSIGNALED(status) { "crashed" } else { "retired" };
                eprintln!("worker {} {how}; starting a new one", *pid);
            }
            *pid = spawn_worker(listener);
        }
    }
}

/// Sends the work requests (retrying a request whose connection a dying
/// worker dropped before handling it) and the crash requests; returns how
/// many of each were sent and answered.
fn load(addr: std::net::SocketAddr) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut answered = 0;
    let mut crashes = 0;
    for i in 0..WORK_REQUESTS {
        if i % (WORK_REQUESTS / CRASH_REQUESTS) == 7 && crashes < CRASH_REQUESTS {
            let _ = get(addr, "/crash");
            crashes += 1;
        }
        while get(addr, "/work").is_none() {
            assert!(Instant::now() < deadline, "the pool stopped answering");
            std::thread::sleep(Duration::from_millis(2));
        }
        answered += 1;
    }
    (answered, crashes)
}

fn get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: pool\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.starts_with("HTTP/1.1 200").then_some(response)
}
