//! A pre-fork HTTP server, the deployment promshard exists for, to copy:
//! a master binds one socket and forks workers that accept on it (as
//! gunicorn does), replaces workers that die, retires them after
//! `--max-requests` (churn), and stops them cleanly on SIGINT or SIGTERM.
//! Every process records into its own shard in the shard directory, so
//! `/metrics`, whichever worker answers it, is the merge of all of them:
//! counters never go down between scrapes, dead workers' counts stay, and
//! each live process's `process_*` metrics carry its `pid`.
//!
//! ```sh
//! cargo run --release --example prefork_server                  # serve on 127.0.0.1:8000
//! cargo run --release --example prefork_server -- --help
//! cargo run --release --example prefork_server -- --self-check  # load, churn, kills, exact counts
//! ```
//!
//! The HTTP side is deliberately plain (one request per connection, no
//! keep-alive, like gunicorn's sync workers behind nginx): what matters
//! here is the process model and the metrics.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use promshard::testing::sample_value;
use promshard::{Counter, Format, Gauge, HandlerOutcome, Outcome, instrument_handler, metric};

const USAGE: &str = "\
prefork_server: a pre-fork HTTP server whose /metrics merges every worker

Usage: prefork_server [OPTIONS]

  --listen ADDR        Address to listen on (default 127.0.0.1:8000; port 0 picks one)
  --workers N          Worker processes (default 4)
  --threads N          Requests each worker serves at once (default 4)
  --max-requests N     Retire a worker after about N requests, like gunicorn's
                       max_requests (default 0: never)
  --dir DIR            Shard directory (default: $PROMSHARD_DIR, else a fresh
                       temporary directory, removed on exit)
  --self-check         Run a built-in load with churn and SIGKILLed workers, check
                       that the merged counts equal what the client saw, exit 0 if so
";

/// Workers alive right now: each counts itself, and a dead one drops out
/// of the sum (`livesum`) however it died.
#[metric(mode = livesum)]
static PREFORK_WORKERS: Gauge;

/// Workers the master started, replacements included.
#[metric]
static PREFORK_WORKER_STARTS_TOTAL: Counter;

/// Workers that ended: `retired` (max-requests or stop), `killed` by a
/// signal, or `failed` (a non-zero exit).
#[metric(labels(how = ["retired", "killed", "failed"]))]
static PREFORK_WORKER_EXITS_TOTAL: Counter;

/// An answer, and the status `#[instrument_handler]` counts it under.
struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    fn new(status: u16, body: impl Into<String>) -> Reply {
        Reply { status, body: body.into() }
    }
}

impl HandlerOutcome for Reply {
    fn outcome(&self) -> Outcome {
        Outcome::status(self.status)
    }
}

/// `GET /`: says which worker answered.
#[instrument_handler(route = "/", method = "GET")]
fn index() -> Reply {
    Reply::new(200, format!("hello from worker {}\n", std::process::id()))
}

/// `GET /users/{id}`: answers with the id it was given; 404 unless it is
/// a number.
#[instrument_handler(route = "/users/{id}", method = "GET")]
fn user(id: &str) -> Reply {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Reply::new(404, format!("no user {id:?}\n"));
    }
    Reply::new(200, format!("user {id}\n"))
}

/// `GET /error`: fails every time, as a route behind a broken dependency
/// does.
#[instrument_handler(route = "/error", method = "GET")]
fn error() -> Reply {
    Reply::new(500, "the database is unreachable\n")
}

/// `GET /slow?ms=N`: takes N milliseconds (250 by default, at most 5 s).
/// With `--self-check`, `crash=1` kills the worker mid-request instead,
/// as the OOM killer would: no cleanup, no hook.
#[instrument_handler(route = "/slow", method = "GET")]
fn slow(delay: Duration, crash: bool) -> Reply {
    if crash && SELF_CHECK.load(Ordering::Relaxed) {
        // SAFETY: raise has no preconditions.
        unsafe { libc::raise(libc::SIGKILL) };
    }
    std::thread::sleep(delay);
    Reply::new(200, format!("slept {} ms\n", delay.as_millis()))
}

/// Set by SIGINT or SIGTERM, in the master and in each worker (they
/// inherit the handler): stop accepting, finish what was accepted, exit.
static STOP: AtomicBool = AtomicBool::new(false);
/// Whether `/slow?crash=1` may kill its worker.
static SELF_CHECK: AtomicBool = AtomicBool::new(false);
/// Connections this worker accepted, for `--max-requests`.
static SERVED: AtomicU64 = AtomicU64::new(0);

#[derive(Clone)]
struct Config {
    listen: String,
    workers: usize,
    threads: usize,
    max_requests: u64,
    dir: Option<PathBuf>,
    self_check: bool,
}

fn main() -> ExitCode {
    let config = match parse_args(std::env::args().skip(1)) {
        Ok(Some(config)) => config,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("prefork_server: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&config) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("prefork_server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args(args: impl Iterator<Item = String>) -> Result<Option<Config>, String> {
    let mut config =
        Config { listen: String::new(), workers: 4, threads: 4, max_requests: 0, dir: None, self_check: false };
    let mut listen = None;
    let mut max_requests = None;
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let number =
            |name: &str, text: String| text.parse::<u64>().map_err(|_| format!("{name}: not a number: {text}"));
        match arg.as_str() {
            "--help" | "-h" => return Ok(None),
            "--listen" => listen = Some(value("--listen")?),
            "--workers" => config.workers = number("--workers", value("--workers")?)? as usize,
            "--threads" => config.threads = number("--threads", value("--threads")?)? as usize,
            "--max-requests" => max_requests = Some(number("--max-requests", value("--max-requests")?)?),
            "--dir" => config.dir = Some(PathBuf::from(value("--dir")?)),
            "--self-check" => config.self_check = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if config.workers == 0 || config.threads == 0 {
        return Err("--workers and --threads must be at least 1".into());
    }
    // The self-check picks a free port and churns workers unless told
    // otherwise.
    config.listen = listen.unwrap_or_else(|| if config.self_check { "127.0.0.1:0" } else { "127.0.0.1:8000" }.into());
    config.max_requests = max_requests.unwrap_or(if config.self_check { 60 } else { 0 });
    Ok(Some(config))
}

fn run(config: &Config) -> io::Result<ExitCode> {
    // The shard directory: given, from the environment, or made fresh
    // (0700, as promshard requires) and removed on exit.
    let given = config.dir.clone().or_else(|| std::env::var_os(promshard::multiprocess::DIR_ENV).map(PathBuf::from));
    let temporary = given.is_none();
    let dir = match given {
        Some(dir) => dir,
        None => fresh_dir()?,
    };
    // Before anything is recorded. The master records too (worker
    // starts), so it holds a shard for the whole run: workers come and go,
    // even all at once, without the directory being taken for a finished
    // run and cleared.
    promshard::multiprocess::init(&dir).map_err(io::Error::other)?;
    PREFORK_WORKER_STARTS_TOTAL.inc_by(0);
    let Some(dir) = promshard::multiprocess::shard_dir() else {
        // promshard logged why; serving per-worker counters is what this
        // example exists to avoid.
        return Err(io::Error::other(format!("cannot keep shards in {}", dir.display())));
    };

    let listener = TcpListener::bind(&config.listen)?;
    // Every worker polls the one socket; the first to accept a
    // connection gets it, the others see WouldBlock and poll again.
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    install_stop_handler();
    if config.self_check {
        SELF_CHECK.store(true, Ordering::Relaxed);
    }
    let pool = Arc::new(Mutex::new(Pool { pids: Vec::new() }));
    for _ in 0..config.workers {
        let pid = spawn_worker(&listener, config);
        pool.lock().unwrap().pids.push(pid);
    }

    let code = if config.self_check {
        self_check(&listener, addr, config, &pool)
    } else {
        announce(addr, &dir, temporary, &pool.lock().unwrap().pids);
        while !STOP.load(Ordering::Relaxed) {
            pool.lock().unwrap().replace_dead(&listener, config);
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("prefork_server: stopping: workers finish the requests they accepted");
        pool.lock().unwrap().stop(Duration::from_secs(10));
        print_totals();
        ExitCode::SUCCESS
    };
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(code)
}

/// A new 0700 directory under the system's temporary directory.
fn fresh_dir() -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    for attempt in 0u32.. {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let dir = base.join(format!("promshard-prefork-{}-{nanos:x}-{attempt}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns")
}

fn announce(addr: SocketAddr, dir: &Path, temporary: bool, pids: &[libc::pid_t]) {
    let pids: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
    let kept = if temporary { " (temporary, removed on exit)" } else { "" };
    println!("prefork_server: master {} serving http://{addr} with {} workers", std::process::id(), pids.len());
    println!("  shard directory: {}{kept}", dir.display());
    println!("  worker pids: {}", pids.join(" "));
    println!("Try:");
    println!("  curl http://{addr}/users/42");
    // Zero series left out: every handler × status exists from the start.
    println!(
        "  curl -s http://{addr}/metrics | grep -E '^(http_requests_total|process_start_time_seconds)' | grep -v ' 0$'"
    );
    println!("Stop with Ctrl-C (SIGINT) or SIGTERM.");
}

/// The master's final word: what every worker, dead or alive, counted.
fn print_totals() {
    let text = String::from_utf8(promshard::encode(Format::Prometheus)).unwrap_or_default();
    let lines: Vec<&str> =
        text.lines().filter(|l| l.starts_with("http_requests_total{") && !l.ends_with(" 0")).collect();
    println!("prefork_server: stopped; requests counted over the whole run:");
    for line in lines {
        println!("  {line}");
    }
}

extern "C" fn on_stop_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, Ordering::Relaxed);
}

/// SIGINT and SIGTERM set [`STOP`]. `SA_RESTART`, so that reads and
/// writes a signal interrupts carry on; `poll` does not restart, which is
/// how an idle worker notices the flag at once.
fn install_stop_handler() {
    // SAFETY: a zeroed sigaction is valid; the handler only stores an atomic.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
    }
}

/// The master's workers, by pid.
struct Pool {
    pids: Vec<libc::pid_t>,
}

impl Pool {
    /// Reaps workers that ended and starts one in place of each.
    fn replace_dead(&mut self, listener: &TcpListener, config: &Config) {
        loop {
            let mut status = 0;
            // SAFETY: reaping our own children.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            let Some(at) = self.pids.iter().position(|&p| p == pid) else { continue };
            let how = exit_kind(status);
            PREFORK_WORKER_EXITS_TOTAL.with((how,)).inc();
            let new = spawn_worker(listener, config);
            self.pids[at] = new;
            let why = match how {
                "retired" => "retired".to_owned(),
                "killed" => format!("was killed by signal {}", libc::WTERMSIG(status)),
                _ => format!("failed with exit status {}", libc::WEXITSTATUS(status)),
            };
            eprintln!("prefork_server: worker {pid} {why}; started worker {new}");
        }
    }

    /// Asks every worker to finish (SIGTERM) and waits up to `grace`,
    /// then kills those still running.
    fn stop(&mut self, grace: Duration) {
        for &pid in &self.pids {
            // SAFETY: signalling our own child (not yet reaped, so its pid
            // cannot belong to another process).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + grace;
        while !self.pids.is_empty() {
            let mut status = 0;
            // SAFETY: reaping our own children.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid > 0 {
                self.pids.retain(|&p| p != pid);
                PREFORK_WORKER_EXITS_TOTAL.with((exit_kind(status),)).inc();
            } else if pid < 0 {
                break;
            } else if Instant::now() > deadline {
                for &pid in &self.pids {
                    eprintln!("prefork_server: worker {pid} did not finish in {grace:?}; killing it");
                    // SAFETY: as above.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                // Reaped by the next turns of the loop.
                std::thread::sleep(Duration::from_millis(20));
            } else {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn exit_kind(status: libc::c_int) -> &'static str {
    if libc::WIFSIGNALED(status) {
        "killed"
    } else if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        "retired"
    } else {
        "failed"
    }
}

/// Forks a worker serving the shared listener; returns its pid.
fn spawn_worker(listener: &TcpListener, config: &Config) -> libc::pid_t {
    PREFORK_WORKER_STARTS_TOTAL.inc();
    let master = std::process::id() as libc::pid_t;
    // SAFETY: the child serves and leaves with `_exit`; it never returns
    // into the master's code. It only takes locks of its own (the master
    // forks from its main thread; in the self-check its other thread, the
    // client, takes no lock a worker needs).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        panic!("fork failed: {}", io::Error::last_os_error());
    }
    if pid > 0 {
        return pid;
    }
    // A worker whose master died (even by SIGKILL) drains and exits
    // instead of serving on alone.
    // SAFETY: prctl and getppid have no memory preconditions.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        if libc::getppid() != master {
            libc::_exit(0);
        }
    }
    PREFORK_WORKERS.inc();
    std::thread::scope(|scope| {
        for _ in 1..config.threads {
            scope.spawn(|| serve(listener, config.max_requests));
        }
        serve(listener, config.max_requests);
    });
    // Not needed for the count (a dead worker drops out of the sum), but
    // it makes it exact in the moment before this process is gone.
    PREFORK_WORKERS.dec();
    // SAFETY: leave without running the master's exit handlers.
    unsafe { libc::_exit(0) }
}

/// One worker thread: accept, answer, until told to stop or retired.
fn serve(listener: &TcpListener, max_requests: u64) {
    let retired = || max_requests > 0 && SERVED.load(Ordering::Relaxed) >= max_requests;
    while !STOP.load(Ordering::Relaxed) && !retired() {
        let mut ready = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // At most 100 ms between looks at the flags. A signal interrupts
        // the wait (-1, EINTR); either way, look again.
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut ready, 1, 100) } <= 0 {
            continue;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                SERVED.fetch_add(1, Ordering::Relaxed);
                // Accepted sockets do not inherit the listener's
                // O_NONBLOCK on Linux; this says so where it matters.
                let _ = stream.set_nonblocking(false);
                answer(stream);
            }
            // Another worker took it.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // Out of descriptors, or the client already gave up.
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Reads one request, answers it, closes the connection.
fn answer(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut chunk = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return respond(&mut stream, false, 431, "text/plain", b"request head too large\n");
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or("").split(' ');
    let (method, target) = (request_line.next().unwrap_or(""), request_line.next().unwrap_or(""));
    // A header sent several times is one list: its values joined
    // (Prometheus sends one of each, but proxies may split them).
    let header = |name: &str| {
        let values: Vec<&str> = lines
            .clone()
            .filter_map(|l| {
                let (key, value) = l.split_once(':')?;
                key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
            })
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let param = |name: &str| query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='));
    let head_only = method == "HEAD";

    if path == "/metrics" {
        if method != "GET" && !head_only {
            return respond(&mut stream, false, 405, "text/plain", b"use GET\n");
        }
        // The merged view: every shard in the directory, whichever worker
        // this is, gzip-compressed for Prometheus (which asks for it). Not
        // counted in the request families, so that a scrape does not
        // change what it reads.
        let exposition =
            promshard::MetricsResponse::render(header("accept").as_deref(), header("accept-encoding").as_deref());
        let (content_type, headers) = (exposition.content_type(), exposition.headers().collect::<Vec<_>>());
        return respond_with(&mut stream, head_only, 200, content_type, &headers, exposition.body());
    }
    if method != "GET" {
        return respond(&mut stream, false, 405, "text/plain", b"use GET\n");
    }
    let reply = match path {
        "/" => index(),
        "/error" => error(),
        "/slow" => {
            let ms = param("ms").and_then(|ms| ms.parse::<u64>().ok()).unwrap_or(250).min(5000);
            slow(Duration::from_millis(ms), param("crash") == Some("1"))
        }
        _ => match path.strip_prefix("/users/") {
            Some(id) if !id.contains('/') => user(id),
            _ => Reply::new(404, "not found\n"),
        },
    };
    respond(&mut stream, false, reply.status, "text/plain; charset=utf-8", reply.body.as_bytes());
}

fn respond(stream: &mut TcpStream, head_only: bool, status: u16, content_type: &str, body: &[u8]) {
    respond_with(stream, head_only, status, content_type, &[], body);
}

/// Sends a response with `headers` besides the usual ones; a `HEAD`
/// response (`head_only`) has the `Content-Length` of the body it omits.
fn respond_with(
    stream: &mut TcpStream,
    head_only: bool,
    status: u16,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "",
    };
    let extra: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}\
         X-Worker-Pid: {}\r\nConnection: close\r\n\r\n",
        body.len(),
        std::process::id()
    );
    // A client that went away is not an error worth reporting.
    let _ = stream.write_all(head.as_bytes()).and_then(|()| if head_only { Ok(()) } else { stream.write_all(body) });
}

// ---------------------------------------------------------------------
// --self-check
// ---------------------------------------------------------------------

/// What the self-check's client saw.
#[derive(Default)]
struct Seen {
    /// Answers by (route pattern, status).
    answered: std::collections::BTreeMap<(&'static str, u16), u64>,
    /// `/slow?crash=1` requests, which kill their worker unanswered.
    crashed: u64,
    /// Idle workers the client SIGKILLed between its requests.
    killed: u64,
}

const SELF_CHECK_REQUESTS: u64 = 600;

/// A sequential client drives the pool while the master replaces workers;
/// then the pool stops and the master's merged counts must equal what the
/// client saw, exactly. Exact because nothing is ever cut off after it was
/// counted: a retiring worker finishes what it accepted, a crashing
/// request dies before its handler returns (so it is in flight, never
/// counted), and the client kills workers only between its requests.
fn self_check(listener: &TcpListener, addr: SocketAddr, config: &Config, pool: &Arc<Mutex<Pool>>) -> ExitCode {
    let client_pool = Arc::clone(pool);
    let client = std::thread::spawn(move || drive(addr, &client_pool));
    while !client.is_finished() {
        pool.lock().unwrap().replace_dead(listener, config);
        std::thread::sleep(Duration::from_millis(5));
    }
    let seen = match client.join() {
        Ok(Ok(seen)) => seen,
        Ok(Err(e)) => {
            eprintln!("prefork_server: self-check: {e}");
            pool.lock().unwrap().stop(Duration::from_secs(10));
            return ExitCode::FAILURE;
        }
        Err(_) => std::process::abort(),
    };
    pool.lock().unwrap().stop(Duration::from_secs(10));

    let text = String::from_utf8(promshard::encode(Format::Prometheus)).unwrap_or_default();
    for line in text.lines().filter(|l| l.starts_with("http_requests_total{") && !l.ends_with(" 0")) {
        println!("{line}");
    }
    let mut ok = true;
    let mut answered = 0;
    for ((route, status), count) in &seen.answered {
        answered += count;
        let labels = [("handler", *route), ("method", "GET"), ("status", &status.to_string())];
        let merged = sample_value("http_requests_total", &labels).unwrap_or(0.0);
        if merged != *count as f64 {
            println!("MISMATCH {route} {status}: client saw {count} answers, merged count {merged}");
            ok = false;
        }
    }
    let counted = sum_of(&text, "http_requests_total");
    let in_flight = sum_of(&text, "http_requests_in_flight");
    let starts = sample_value("prefork_worker_starts_total", &[]).unwrap_or(0.0);
    let live = sample_value("prefork_workers", &[]).unwrap_or(f64::NAN);
    println!(
        "client: {answered} requests answered, {} crashed their worker, {} idle workers SIGKILLed; \
         merged: {counted} requests counted, {in_flight} in flight, {live} workers alive, {starts} started",
        seen.crashed, seen.killed
    );
    ok &= counted == answered as f64 && in_flight == 0.0 && live == 0.0;
    ok &= seen.crashed > 0 && seen.killed > 0 && starts > (config.workers as f64) + (seen.crashed + seen.killed) as f64;
    if ok {
        println!("every request counted exactly once, across worker churn, crashes and kills");
        ExitCode::SUCCESS
    } else {
        println!("self-check FAILED");
        ExitCode::FAILURE
    }
}

/// The sum of every sample of `name` in a Prometheus text exposition.
fn sum_of(text: &str, name: &str) -> f64 {
    let samples = text.lines().filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])));
    samples.filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok()).sum()
}

/// The self-check's load: a mix of every route, crashes and kills.
fn drive(addr: SocketAddr, pool: &Mutex<Pool>) -> Result<Seen, String> {
    let mut seen = Seen::default();
    let deadline = Instant::now() + Duration::from_secs(120);
    for i in 0..SELF_CHECK_REQUESTS {
        if i % 150 == 75 {
            // Killed mid-request: no answer, and never counted.
            if get(addr, "/slow?ms=1000&crash=1").is_some() {
                return Err("a crashing request was answered".into());
            }
            seen.crashed += 1;
        }
        if i % 100 == 50 {
            // Under the pool's lock, so the pid is a live or unreaped
            // child of the master: never another process's.
            let pool = pool.lock().unwrap();
            let victim = pool.pids[(i as usize / 100) % pool.pids.len()];
            // SAFETY: signalling the master's own child.
            unsafe { libc::kill(victim, libc::SIGKILL) };
            seen.killed += 1;
        }
        let (route, path) = match i % 10 {
            0 => ("/", "/".to_owned()),
            1 => ("/error", "/error".to_owned()),
            2 if i % 50 == 2 => ("/slow", "/slow?ms=5".to_owned()),
            3 => ("/users/{id}", format!("/users/x{i}")),
            _ => ("/users/{id}", format!("/users/{i}")),
        };
        // A worker retiring or killed between requests closes no
        // connection it accepted, so every request is answered; the loop
        // only covers a pool that has no worker for a moment.
        let status = loop {
            if let Some(status) = get(addr, &path) {
                break status;
            }
            if Instant::now() > deadline {
                return Err(format!("no answer to {path}"));
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        *seen.answered.entry((route, status)).or_default() += 1;
    }
    Ok(seen)
}

/// The status of `GET path`, or `None` when no complete answer came.
fn get(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: pool\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n")?;
    let length: usize = head.lines().find_map(|l| l.strip_prefix("Content-Length: "))?.parse().ok()?;
    (body.len() == length).then_some(())?;
    head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}
