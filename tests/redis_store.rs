//! `#[metric(store = redis)]` against a real `redis-server` (Debian's
//! package), started on loopback by each test and stopped by its pid:
//! exact values across forked workers and a second application, Redis
//! stopped (the scrape answers within its bound, the Redis families are
//! left out and the error counted, recordings kept) and restarted (the
//! kept recordings arrive, nothing lost), a Redis that accepts and never
//! answers, and one `MGET` per scrape (Redis's own command statistics).

mod harness;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::{TempDir, Worker, eventually, isolated, own_text, value_in};
use promshard::redis::Config;
use promshard::{Counter, Gauge, LabelValue, metric};

#[allow(dead_code)]
type Unused = Gauge;

#[derive(Clone, Copy, LabelValue)]
enum Plan {
    Free,
    Pro,
}

/// Signups, by plan, over every worker and host.
#[metric(store = redis, labels(plan: Plan))]
static SIGNUPS_TOTAL: Counter;

/// Subscribers right now, by region.
#[metric(store = redis, labels(region = ["eu", "us"]))]
static ACTIVE_SUBSCRIBERS: Gauge;

/// A local counter, beside them.
#[metric]
static LOCAL_REQUESTS_TOTAL: Counter;

/// A Redis server on a free loopback port, killed when dropped.
struct Redis {
    child: Option<Child>,
    binary: PathBuf,
    port: u16,
    dir: TempDir,
}

impl Redis {
    fn start(binary: &Path) -> Redis {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut redis = Redis { child: None, binary: binary.to_owned(), port, dir: TempDir::new("redis") };
        redis.restart();
        redis
    }

    fn restart(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("redis.log")).unwrap();
        let child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command("PING").as_deref() != Some("+PONG") {
            assert!(Instant::now() < deadline, "redis-server never answered PING");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// One command (arguments split at spaces), its reply as Redis wrote
    /// it.
    fn command(&self, command: &str) -> Option<String> {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let args: Vec<&str> = command.split(' ').collect();
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).ok()?;
        let mut reply = vec![0u8; 65536];
        let n = stream.read(&mut reply).ok()?;
        Some(String::from_utf8_lossy(&reply[..n]).trim_end().to_owned())
    }

    /// How many connections Redis has accepted so far (INFO stats; the
    /// one asking counts).
    fn connections(&self) -> u64 {
        let stats = self.command("INFO stats").unwrap_or_default();
        stats.lines().find_map(|l| l.strip_prefix("total_connections_received:")?.trim().parse().ok()).unwrap_or(0)
    }

    /// How many times Redis has run `command` (INFO commandstats).
    fn calls(&self, command: &str) -> u64 {
        let stats = self.command("INFO commandstats").unwrap_or_default();
        let key = format!("cmdstat_{command}:calls=");
        stats.lines().find_map(|l| l.strip_prefix(&key)?.split(',').next()?.parse().ok()).unwrap_or(0)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn redis_server() -> Option<PathBuf> {
    let found = std::env::var_os("PROMSHARD_REDIS_SERVER").map(PathBuf::from).or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join("redis-server")).find(|p| p.is_file())
    });
    match found {
        Some(path) if Command::new(&path).arg("--version").output().is_ok_and(|o| o.status.success()) => Some(path),
        _ => {
            support::skip_or_fail(
                "redis-server not found; install Debian's `redis-server` package or set PROMSHARD_REDIS_SERVER",
            );
            None
        }
    }
}

fn worker(command: &str) -> String {
    match command {
        "signup" => {
            for _ in 0..100 {
                SIGNUPS_TOTAL.with((Plan::Pro,)).inc();
            }
            SIGNUPS_TOTAL.with((Plan::Free,)).inc_by(7);
            ACTIVE_SUBSCRIBERS.with(("eu",)).add(2.0);
            LOCAL_REQUESTS_TOTAL.inc();
            "ok".to_owned()
        }
        "flush" => match promshard::redis::flush() {
            Ok(()) => "ok".to_owned(),
            Err(e) => e,
        },
        other => panic!("unknown command {other:?}"),
    }
}

fn pro(text: &str) -> Option<f64> {
    value_in(text, "signups_total", &[("plan", "pro")])
}

fn errors(text: &str) -> f64 {
    value_in(text, "promshard_collector_errors_total", &[("collector", "redis")]).unwrap_or(0.0)
}

fn across_processes_and_outages(binary: &Path) {
    let mut redis = Redis::start(binary);
    let dir = TempDir::new("redis-pool");
    promshard::multiprocess::init(dir.path()).unwrap();
    promshard::redis::configure(
        Config::new(&redis.url(), "shop").timeout(Duration::from_millis(200)).flush_interval(Duration::from_millis(50)),
    );
    let wait = Duration::from_secs(20);
    let mut workers: Vec<Worker> = (0..3).map(|_| Worker::spawn(worker)).collect();
    for w in &mut workers {
        assert_eq!(w.ask("signup", wait), "ok");
    }
    // Every worker's increments arrive by their own flushers; the parent
    // never recorded any.
    let text = eventually("three workers' signups", |t| pro(t) == Some(300.0));
    assert_eq!(value_in(&text, "signups_total", &[("plan", "free")]), Some(21.0));
    assert_eq!(value_in(&text, "active_subscribers", &[("region", "eu")]), Some(6.0));
    assert_eq!(value_in(&text, "active_subscribers", &[("region", "us")]), Some(0.0));
    // Stored under the application's namespace, one key per series.
    assert_eq!(redis.command("GET metrics:shop:signups_total{plan=\"pro\"}").as_deref(), Some("$3\r\n300"));

    // One MGET per scrape, never KEYS.
    let before = redis.calls("mget");
    for _ in 0..5 {
        own_text();
    }
    assert_eq!(redis.calls("mget") - before, 5);
    assert_eq!(redis.calls("keys"), 0);

    // Redis stops: scrapes answer within the bound, without the Redis
    // families, and count the error; the local metrics are unharmed.
    redis.stop();
    let errors_before = errors(&own_text());
    for w in &mut workers {
        assert_eq!(w.ask("signup", wait), "ok");
    }
    let started = Instant::now();
    let text = own_text();
    assert!(started.elapsed() < Duration::from_secs(2), "a scrape took {:?}", started.elapsed());
    assert_eq!(pro(&text), None, "Redis families are left out");
    assert!(errors(&text) > errors_before);
    assert_eq!(value_in(&text, "local_requests_total", &[]), Some(6.0));
    let failed = workers[0].ask("flush", wait);
    assert_ne!(failed, "ok", "a flush with Redis down is an error");

    // Redis is back (empty: it kept nothing): the workers' kept
    // recordings from the outage arrive, exactly once.
    redis.restart();
    eventually("the outage's signups arrive", |t| pro(t) == Some(300.0));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pro(&own_text()), Some(300.0), "and only once");

    // A worker's flusher keeps its connection: 20 rounds with something to
    // send open one (if any), not 20.
    let before = redis.connections();
    for _ in 0..20 {
        assert_eq!(workers[1].ask("signup", wait), "ok");
        std::thread::sleep(Duration::from_millis(70));
    }
    let opened = redis.connections() - before - 1;
    assert!(opened <= 2, "20 flushes opened {opened} connections");
    eventually("the steady signups arrive", |t| pro(t) == Some(2300.0));
    for w in &mut workers {
        assert_eq!(w.ask("flush", wait), "ok");
    }
    // Last first: a later worker holds copies of the earlier ones' pipes.
    for w in workers.iter_mut().rev() {
        w.exit(wait).expect("the worker exits");
    }
    assert_eq!(pro(&own_text()), Some(2300.0));
}

#[test]
fn redis_metrics_are_exact_across_processes_and_outages() {
    let Some(binary) = redis_server() else { return };
    isolated("redis_metrics_are_exact_across_processes_and_outages", Duration::from_secs(90), || {
        across_processes_and_outages(&binary)
    });
}

fn two_applications(binary: &Path) {
    let redis = Redis::start(binary);
    // Another service, writing its own keys in the same Redis.
    assert_eq!(redis.command("SET metrics:billing:signups_total{plan=\"pro\"} 5").as_deref(), Some("+OK"));
    promshard::redis::configure(Config::new(&redis.url(), "shop"));
    SIGNUPS_TOTAL.with((Plan::Pro,)).inc_by(2);
    ACTIVE_SUBSCRIBERS.with(("us",)).set(10.0);
    ACTIVE_SUBSCRIBERS.with(("us",)).add(0.5);
    // The scrape sends its own process's changes first.
    let text = own_text();
    assert_eq!(pro(&text), Some(2.0), "another application's keys are not ours");
    assert_eq!(value_in(&text, "active_subscribers", &[("region", "us")]), Some(10.5));
    ACTIVE_SUBSCRIBERS.with(("us",)).set(3.0);
    assert_eq!(value_in(&own_text(), "active_subscribers", &[("region", "us")]), Some(3.0));
}

#[test]
fn applications_sharing_a_redis_never_collide() {
    let Some(binary) = redis_server() else { return };
    isolated("applications_sharing_a_redis_never_collide", Duration::from_secs(60), || two_applications(&binary));
}

fn silent_redis() {
    // Accepts connections (the kernel's backlog) and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}/", listener.local_addr().unwrap());
    promshard::redis::configure(Config::new(&url, "shop").timeout(Duration::from_millis(200)));
    SIGNUPS_TOTAL.with((Plan::Free,)).inc();
    for _ in 0..3 {
        let started = Instant::now();
        let text = own_text();
        // A flush and a read, each bounded by the timeout per step.
        assert!(started.elapsed() < Duration::from_secs(3), "a scrape took {:?}", started.elapsed());
        assert!(value_in(&text, "signups_total", &[("plan", "free")]).is_none());
    }
    assert!(errors(&own_text()) >= 3.0);
    drop(listener);
}

#[test]
fn a_redis_that_never_answers_costs_a_bounded_time() {
    isolated("a_redis_that_never_answers_costs_a_bounded_time", Duration::from_secs(60), silent_redis);
}

fn host_name(binary: &Path) {
    let redis = Redis::start(binary);
    // `localhost` may give `::1` first, where nothing listens: the next
    // address is tried.
    let url = format!("redis://localhost:{}/", redis.port);
    promshard::redis::configure(Config::new(&url, "shop").timeout(Duration::from_secs(2)));
    SIGNUPS_TOTAL.with((Plan::Pro,)).inc_by(3);
    promshard::redis::flush().unwrap();
    assert_eq!(pro(&own_text()), Some(3.0));
    assert_eq!(redis.command("GET metrics:shop:signups_total{plan=\"pro\"}").as_deref(), Some("$1\r\n3"));
}

#[test]
fn a_redis_named_by_host_name_is_reached() {
    let Some(binary) = redis_server() else { return };
    isolated("a_redis_named_by_host_name_is_reached", Duration::from_secs(60), || host_name(&binary));
}

fn wrong_type_key(binary: &Path) {
    let redis = Redis::start(binary);
    // Someone stored a string where a series of ours lives.
    assert_eq!(redis.command("SET metrics:shop:signups_total{plan=\"free\"} oops").as_deref(), Some("+OK"));
    promshard::redis::configure(Config::new(&redis.url(), "shop").flush_interval(Duration::from_millis(20)));
    SIGNUPS_TOTAL.with((Plan::Pro,)).inc_by(5);
    SIGNUPS_TOTAL.with((Plan::Free,)).inc_by(1);
    ACTIVE_SUBSCRIBERS.with(("eu",)).add(2.0);
    // Many flushes: each met the refused key.
    std::thread::sleep(Duration::from_millis(500));
    let flush = promshard::redis::flush();
    assert!(flush.as_ref().is_err_and(|e| e.contains("signups_total{plan=\"free\"}")), "{flush:?}");
    let text = own_text();
    assert_eq!(pro(&text), Some(5.0), "the other series are counted once, not at every flush");
    assert_eq!(value_in(&text, "active_subscribers", &[("region", "eu")]), Some(2.0));
    // Its value is unknown: left out, not shown as a counter reset to 0.
    assert_eq!(value_in(&text, "signups_total", &[("plan", "free")]), None);
    // The key is cleared: the refused increment was kept, and arrives.
    assert_eq!(redis.command("DEL metrics:shop:signups_total{plan=\"free\"}").as_deref(), Some(":1"));
    promshard::redis::flush().unwrap();
    let text = own_text();
    assert_eq!(value_in(&text, "signups_total", &[("plan", "free")]), Some(1.0));
    assert_eq!(pro(&text), Some(5.0));
}

#[test]
fn a_key_of_the_wrong_type_costs_only_its_own_series() {
    let Some(binary) = redis_server() else { return };
    isolated("a_key_of_the_wrong_type_costs_only_its_own_series", Duration::from_secs(60), || wrong_type_key(&binary));
}

/// A TCP relay to Redis that holds every chunk `delay` before passing it
/// on, each way: a Redis a few milliseconds away.
fn slow_relay(to: u16, delay: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else { continue };
            for (mut from, mut into) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)] {
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n @ 1..) = from.read(&mut buf) {
                        std::thread::sleep(delay);
                        if into.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = into.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    url
}

fn flush_before_exit(binary: &Path) {
    let redis = Redis::start(binary);
    let url = slow_relay(redis.port, Duration::from_millis(5));
    promshard::redis::configure(
        Config::new(&url, "shop").timeout(Duration::from_secs(2)).flush_interval(Duration::from_millis(1)),
    );
    let children = 20;
    for _ in 0..children {
        let pid = harness::fork_child(|| {
            SIGNUPS_TOTAL.with((Plan::Pro,)).inc();
            // The worker's flusher is sending that one now.
            std::thread::sleep(Duration::from_millis(10));
            SIGNUPS_TOTAL.with((Plan::Free,)).inc();
            match promshard::redis::flush() {
                Ok(()) => 0,
                Err(_) => 1,
            }
        });
        let status = harness::wait_timeout(pid, Duration::from_secs(10)).expect("the child exits");
        assert_eq!(status, 0, "{}", harness::describe_status(status));
    }
    // Read past the relay: every increment of every child arrived.
    let got = |plan: &str| redis.command(&format!("GET metrics:shop:signups_total{{plan=\"{plan}\"}}"));
    assert_eq!(got("pro").as_deref(), Some("$2\r\n20"), "the increment the flusher was sending");
    assert_eq!(got("free").as_deref(), Some("$2\r\n20"), "the increment recorded while it was sending");
}

#[test]
fn flush_before_exit_sends_everything() {
    let Some(binary) = redis_server() else { return };
    isolated("flush_before_exit_sends_everything", Duration::from_secs(120), || flush_before_exit(&binary));
}

fn configured_after_fork(binary: &Path) {
    let redis = Redis::start(binary);
    // Recorded before Redis is configured (at start-up, say).
    SIGNUPS_TOTAL.with((Plan::Pro,)).inc_by(10);
    let url = redis.url();
    let mut pids = Vec::new();
    for _ in 0..3 {
        let url = url.clone();
        pids.push(harness::fork_child(move || {
            // Each worker configures Redis after the fork, as a post-fork
            // hook does.
            promshard::redis::configure(Config::new(&url, "shop"));
            SIGNUPS_TOTAL.with((Plan::Free,)).inc();
            if promshard::redis::flush().is_ok() { 0 } else { 1 }
        }));
    }
    for pid in pids {
        let status = harness::wait_timeout(pid, Duration::from_secs(10)).expect("the child exits");
        assert_eq!(status, 0, "{}", harness::describe_status(status));
    }
    promshard::redis::configure(Config::new(&url, "shop"));
    promshard::redis::flush().unwrap();
    let text = own_text();
    assert_eq!(value_in(&text, "signups_total", &[("plan", "free")]), Some(3.0));
    assert_eq!(pro(&text), Some(10.0), "the parent's increments are the parent's alone");
}

#[test]
fn workers_that_configure_redis_after_the_fork_send_only_their_own() {
    let Some(binary) = redis_server() else { return };
    isolated("workers_that_configure_redis_after_the_fork_send_only_their_own", Duration::from_secs(60), || {
        configured_after_fork(&binary)
    });
}

/// A gauge set and then added to, again and again, from one thread while
/// another flushes: every value Redis ever holds must be one the gauge
/// had (`1000·i`, or `1000·i + (i mod 7 + 1)` after its add), never a
/// set joined to the add of a later set.
fn gauge_set_then_add(binary: &Path) {
    let redis = Redis::start(binary);
    promshard::redis::configure(Config::new(&redis.url(), "shop").flush_interval(Duration::from_secs(3600)));
    let series = ACTIVE_SUBSCRIBERS.with(("us",));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                series.set(1000.0 * i as f64);
                series.add((i % 7 + 1) as f64);
                i += 1;
            }
            i
        })
    };
    let key = "GET metrics:shop:active_subscribers{region=\"us\"}";
    let mut bad = Vec::new();
    let started = Instant::now();
    let mut flushes = 0;
    while started.elapsed() < Duration::from_secs(8) && bad.is_empty() {
        promshard::redis::flush().unwrap();
        flushes += 1;
        let Some(reply) = redis.command(key) else { continue };
        let Some(v) = reply.lines().nth(1).and_then(|v| v.parse::<f64>().ok()) else { continue };
        let i = (v / 1000.0).floor();
        let added = v - 1000.0 * i;
        if added != 0.0 && added != (i as u64 % 7 + 1) as f64 {
            bad.push(v);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert!(bad.is_empty(), "values the gauge never had, in {flushes} flushes: {bad:?}");
}

#[test]
fn a_gauge_set_and_added_to_never_mixes_two_sets() {
    let Some(binary) = redis_server() else { return };
    isolated("a_gauge_set_and_added_to_never_mixes_two_sets", Duration::from_secs(60), || gauge_set_then_add(&binary));
}

/// Forks while three threads record and the flusher sends every
/// millisecond: each child sends its own increments, never a copy of its
/// parent's (pending or being sent at the fork), and grandchildren too.
fn forks_while_flushing(binary: &Path) {
    let redis = Redis::start(binary);
    promshard::redis::configure(Config::new(&redis.url(), "shop").flush_interval(Duration::from_millis(1)));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let recorders: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    SIGNUPS_TOTAL.with((Plan::Pro,)).inc();
                    ACTIVE_SUBSCRIBERS.with(("eu",)).add(1.0);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let forks = 30;
    for round in 0..forks {
        let pid = harness::fork_child(move || {
            SIGNUPS_TOTAL.with((Plan::Free,)).inc_by(10);
            if round % 3 == 0 {
                // A grandchild, forked from a child whose flusher runs.
                let grandchild = harness::fork_child(|| {
                    SIGNUPS_TOTAL.with((Plan::Free,)).inc_by(1000);
                    promshard::redis::flush().map_or(1, |()| 0)
                });
                if harness::wait_timeout(grandchild, Duration::from_secs(10)) != Some(0) {
                    return 2;
                }
            }
            promshard::redis::flush().map_or(1, |()| 0)
        });
        let status = harness::wait_timeout(pid, Duration::from_secs(20)).expect("the child exits");
        assert_eq!(status, 0, "round {round}: {}", harness::describe_status(status));
        std::thread::sleep(Duration::from_millis(3));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let recorded: u64 = recorders.into_iter().map(|t| t.join().unwrap()).sum();
    promshard::redis::flush().unwrap();
    let text = own_text();
    assert_eq!(value_in(&text, "signups_total", &[("plan", "free")]), Some((forks * 10 + 10 * 1000) as f64));
    assert_eq!(pro(&text), Some(recorded as f64), "the parent's own, once");
    assert_eq!(value_in(&text, "active_subscribers", &[("region", "eu")]), Some(recorded as f64));
}

#[test]
fn forks_while_the_flusher_sends_count_every_increment_once() {
    let Some(binary) = redis_server() else { return };
    isolated("forks_while_the_flusher_sends_count_every_increment_once", Duration::from_secs(120), || {
        forks_while_flushing(&binary)
    });
}

/// Redis out of memory refuses every write while queuing the transaction
/// (EXECABORT: nothing applied): all of it stays pending, and arrives
/// once when Redis accepts writes again.
fn out_of_memory(binary: &Path) {
    let redis = Redis::start(binary);
    promshard::redis::configure(Config::new(&redis.url(), "shop").flush_interval(Duration::from_secs(3600)));
    SIGNUPS_TOTAL.with((Plan::Pro,)).inc_by(5);
    ACTIVE_SUBSCRIBERS.with(("eu",)).set(4.0);
    promshard::redis::flush().unwrap();
    assert_eq!(redis.command("CONFIG SET maxmemory 1").as_deref(), Some("+OK"));
    SIGNUPS_TOTAL.with((Plan::Pro,)).inc_by(2);
    SIGNUPS_TOTAL.with((Plan::Free,)).inc_by(1);
    ACTIVE_SUBSCRIBERS.with(("eu",)).add(1.0);
    for _ in 0..3 {
        let refused = promshard::redis::flush();
        assert!(refused.is_err(), "{refused:?}");
    }
    assert_eq!(redis.command("CONFIG SET maxmemory 0").as_deref(), Some("+OK"));
    promshard::redis::flush().unwrap();
    let text = own_text();
    assert_eq!(pro(&text), Some(7.0));
    assert_eq!(value_in(&text, "signups_total", &[("plan", "free")]), Some(1.0));
    assert_eq!(value_in(&text, "active_subscribers", &[("region", "eu")]), Some(5.0));
}

#[test]
fn a_redis_out_of_memory_loses_and_doubles_nothing() {
    let Some(binary) = redis_server() else { return };
    isolated("a_redis_out_of_memory_loses_and_doubles_nothing", Duration::from_secs(60), || out_of_memory(&binary));
}

/// A timeout meaning "never" (`Duration::MAX`) is a valid option: with
/// Redis down, `flush()` says so (the deltas stay pending), never panics.
#[test]
fn a_timeout_meaning_never_still_flushes() {
    isolated("a_timeout_meaning_never_still_flushes", Duration::from_secs(60), || {
        let down = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        promshard::redis::configure(
            Config::new(&format!("redis://{down}/"), "never").timeout(Duration::MAX).flush_interval(Duration::MAX),
        );
        SIGNUPS_TOTAL.with((Plan::Pro,)).inc();
        let result = std::panic::catch_unwind(promshard::redis::flush);
        assert!(matches!(result, Ok(Err(_))), "{result:?}");
    });
}
